"""The bench report: interval statistics, the per-method summary, and the files
written (report.json, report.md, the plot where matplotlib exists)."""

import json
import subprocess
import sys

import pytest

from specs_local.errors import SpecsError
from specs_local.report import (
    COLUMNS,
    PLOT_FILE,
    accuracy_comparison,
    bootstrap_median_ratio,
    git_revision,
    latency_verdict,
    revisions_that_ran,
    settings_that_ran,
    sign_test,
    summarize_methods,
    wilson_interval,
    write_report,
)

METADATA = {"command": "specs-local bench gsm8k.jsonl --limit 3", "machine": "vm x86_64 2 cores",
            "revision": "abc1234", "date": "2026-11-28 21:00 UTC"}


# ---------------------------------------------------------------- statistics


def test_wilson_interval_known_values():
    assert wilson_interval(8, 10) == pytest.approx((0.490, 0.943), abs=5e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.278, abs=5e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_sign_test_known_values():
    assert sign_test(10, 3) == pytest.approx(2 * (1 + 13 + 78 + 286) / 2 ** 13)  # 0.092
    assert sign_test(3, 10) == sign_test(10, 3)
    assert sign_test(6, 0) == pytest.approx(2 / 64)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0


def test_bootstrap_is_deterministic_and_brackets_the_median():
    ratios = [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.3]
    first = bootstrap_median_ratio(ratios, seed=3)
    assert first == bootstrap_median_ratio(ratios, seed=3)
    median, low, high = first
    assert median == 0.9
    assert 0.6 <= low <= median <= high <= 1.3
    assert bootstrap_median_ratio([2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(SpecsError, match="no ratios"):
        bootstrap_median_ratio([])


# ---------------------------------------------------------------- the summary


def stats(wall, *, steps=4, draft=0, deferrals=0, acceptance=None, target=1000, draft_tokens=None):
    models = {"target": {"file": "t.gguf", "evaluated": target, "decode_seconds": wall * 0.9}}
    if draft_tokens is not None:
        models["draft"] = {"file": "d.gguf", "evaluated": draft_tokens, "decode_seconds": wall * 0.05}
    return {"wall_seconds": wall, "n": 4, "steps": steps, "step_tokens": 10 * steps, "steps_draft": draft,
            "steps_target": steps - draft, "deferrals": deferrals, "acceptance_rate": acceptance, "models": models}


def solved(problem_id, method, correct, st):
    return {"id": problem_id, "problem": f"problem {problem_id}", "answer": "1", "gold": "1", "correct": correct,
            "method": method, "stats": st}


def hand_made_records():
    """2 methods, 3 problems; SPECS fails problem 3 with an error."""
    beam = [solved("1", "beam-target", True, stats(10.0, target=1200)),
            solved("2", "beam-target", True, stats(20.0, target=1400)),
            solved("3", "beam-target", False, stats(40.0, target=1600))]
    specs = [solved("1", "specs", True, stats(5.0, steps=4, draft=3, deferrals=1, acceptance=0.75,
                                              target=800, draft_tokens=600)),
             solved("2", "specs", False, stats(30.0, steps=6, draft=6, acceptance=1.0, target=1000,
                                               draft_tokens=900)),
             {"id": "3", "problem": "problem 3", "answer": None, "gold": "1", "correct": False, "method": "specs",
              "error": "the context is full"}]
    return {"specs": specs, "beam-target": beam}


def test_summarize_methods_on_hand_made_records():
    summary = summarize_methods(hand_made_records(), predictions={"specs": 21.0, "beam-target": 14.0})
    assert summary["baseline"] == "beam-target"
    specs, beam = summary["methods"]["specs"], summary["methods"]["beam-target"]

    assert (specs["n"], specs["finished"], specs["errors"]) == (3, 2, 1)
    assert (specs["graded"], specs["correct"]) == (3, 1)  # the error counts as wrong
    assert specs["accuracy"] == pytest.approx(1 / 3)
    assert specs["accuracy_interval"] == pytest.approx(list(wilson_interval(1, 3)))
    assert beam["accuracy"] == pytest.approx(2 / 3)

    assert specs["mean_latency_s"] == pytest.approx(17.5)
    assert specs["median_latency_s"] == pytest.approx(17.5)
    assert beam["median_latency_s"] == 20.0
    assert (beam["latency_q1_s"], beam["latency_q3_s"]) == (15.0, 30.0)

    # per-problem ratios 5/10 and 30/20, problem 3 unmatched: median 1.0
    assert specs["ratio_pairs"] == 2
    assert specs["latency_ratio"] == pytest.approx(1.0)
    low, high = specs["latency_ratio_interval"]
    assert 0.5 <= low <= 1.0 <= high <= 1.5
    assert beam["latency_ratio"] == 1.0 and beam["latency_ratio_interval"] == [1.0, 1.0]

    assert specs["mean_steps"] == 5.0 and specs["mean_step_tokens"] == 50.0
    assert specs["draft_step_share"] == pytest.approx(9 / 10)
    assert beam["draft_step_share"] == 0.0
    assert (specs["deferrals"], specs["deferrals_per_problem"]) == (1, 0.5)
    assert specs["mean_acceptance_rate"] == pytest.approx(0.875)
    assert beam["mean_acceptance_rate"] is None
    assert specs["mean_evaluated_tokens"] == {"target": 900.0, "draft": 750.0}
    assert beam["mean_evaluated_tokens"] == {"target": 1400.0}
    assert specs["mean_model_seconds"] == pytest.approx(17.5 * 0.95)

    assert specs["predicted_latency_s"] == 21.0
    assert specs["predicted_over_measured"] == pytest.approx(21.0 / 17.5)
    assert beam["predicted_over_measured"] == pytest.approx(14.0 / (70 / 3))


def test_summary_without_baseline_or_predictions():
    summary = summarize_methods({"specs": hand_made_records()["specs"]})
    specs = summary["methods"]["specs"]
    assert specs["latency_ratio"] is None and specs["ratio_pairs"] == 0
    assert specs["predicted_latency_s"] is None and specs["predicted_over_measured"] is None


# ---------------------------------------------------------------- the files

SUMMARY_FIELDS = {
    "n", "finished", "errors", "graded", "correct", "accuracy", "accuracy_interval", "mean_latency_s",
    "median_latency_s", "latency_q1_s", "latency_q3_s", "latency_ratio", "latency_ratio_interval", "ratio_pairs",
    "mean_steps", "mean_step_tokens", "draft_step_share", "deferrals", "deferrals_per_problem",
    "mean_acceptance_rate", "mean_evaluated_tokens", "mean_model_seconds", "predicted_latency_s",
    "predicted_over_measured",
}


def written_report(tmp_path, records=None, predictions=None, notes=()):
    summary = summarize_methods(records or hand_made_records(), predictions=predictions)
    write_report(summary, tmp_path, notes=notes, **METADATA)
    return json.loads((tmp_path / "report.json").read_text()), (tmp_path / "report.md").read_text()


def test_report_json_holds_metadata_and_every_field(tmp_path):
    document, _ = written_report(tmp_path, predictions={"specs": 17.0, "beam-target": 30.0})
    assert {k: document[k] for k in METADATA} == METADATA
    assert document["baseline"] == "beam-target"
    for method in ("specs", "beam-target"):
        assert set(document["methods"][method]) == SUMMARY_FIELDS
    targets = document["targets"]
    assert targets["accuracy"]["met"] is True  # 1/3 is lower than 2/3, but inside its interval [20.8%, 93.9%]
    assert targets["latency"] == {"met": False, "target": 0.81, "ratio": pytest.approx(1.0),
                                  "interval": document["methods"]["specs"]["latency_ratio_interval"]}
    assert targets["cost_model"]["methods"]["specs"] == {"error": pytest.approx(-0.5 / 17.5), "met": True}
    assert targets["cost_model"]["methods"]["beam-target"]["met"] is False  # 30 vs 23.3 measured
    assert targets["cost_model"]["met"] is False


def test_report_md_has_the_heading_table_and_verdicts(tmp_path):
    _, md = written_report(tmp_path, predictions={"specs": 17.0, "beam-target": 30.0},
                           notes=["speculation cannot pay here: drafting+scoring costs 1.04x a target step"])
    for value in METADATA.values():
        assert value in md
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == [name for name, _ in COLUMNS]
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "33.3% [6.1%, 79.2%]" in rows["specs"]  # accuracy with its Wilson interval
    assert "| 1 |" in rows["specs"]  # one error
    assert "target 900, draft 750" in rows["specs"]
    assert "## SPECS vs beam-target" in md
    assert ("Accuracy target met: SPECS 33.3% is below beam-target's 66.7% but inside its 95% interval "
            "[20.8%, 93.9%].") in md
    assert "Latency target NOT met: SPECS takes 1.00 of beam-target's latency" in md
    assert "(target within 15%): specs -3% (met); beam-target +29% (NOT met)" in md
    assert "speculation cannot pay here" in md


def test_report_says_when_targets_are_met(tmp_path):
    records = hand_made_records()
    records["specs"] = [solved(r["id"], "specs", True, stats(5.0 * (i + 1), draft=3, acceptance=1.0))
                        for i, r in enumerate(records["beam-target"])]
    document, md = written_report(tmp_path, records)
    assert document["targets"]["accuracy"]["met"] and document["targets"]["latency"]["met"]
    assert "Accuracy target met: SPECS 100.0% is not lower than" in md
    assert "Latency target met: SPECS takes 0.50 of beam-target's latency" in md
    assert "No cost-model prediction" in md


@pytest.mark.parametrize("ratio, interval, verdict", [
    (0.7, [0.6, 0.9], "faster than"),
    (1.2, [1.1, 1.3], "slower than"),
    # A median below 1 whose interval spans 1 (MATH500-20: 0.88 [0.66, 1.16]) is not "faster".
    (0.88, [0.66, 1.16], "not shown faster or slower (the interval spans 1) than"),
    (0.9, None, "faster than"),
])
def test_latency_verdict_rests_on_the_interval(ratio, interval, verdict):
    assert latency_verdict(ratio, interval) == verdict


@pytest.mark.parametrize("specs, met, wording", [
    (0.5, True, "SPECS 50.0% is not lower than beam-target's 40.0% [16.8%, 68.7%]"),
    (0.4, True, "SPECS 40.0% is not lower than beam-target's 40.0% [16.8%, 68.7%]"),
    (0.3, True, "SPECS 30.0% is below beam-target's 40.0% but inside its 95% interval [16.8%, 68.7%]"),
    (0.1, False, "SPECS 10.0% is below the 95% interval of beam-target's 40.0% [16.8%, 68.7%]"),
])
def test_accuracy_comparison_says_what_was_compared_and_which_way(specs, met, wording):
    accuracy = {"met": met, "specs": specs, "baseline": 0.4, "baseline_interval": [0.168, 0.687]}
    assert accuracy_comparison(accuracy, "beam-target") == wording


def test_report_says_plainly_when_accuracy_falls_below_the_interval(tmp_path):
    records = hand_made_records()
    records["specs"] = [{**r, "correct": False} for r in records["specs"]]
    document, md = written_report(tmp_path, records)
    assert document["targets"]["accuracy"]["met"] is False
    assert "Accuracy target NOT met: SPECS 0.0% is below the 95% interval of beam-target's 66.7% [20.8%, 93.9%]." in md


def test_report_without_specs_says_not_measured(tmp_path):
    document, md = written_report(tmp_path, {"beam-target": hand_made_records()["beam-target"]})
    assert document["targets"]["accuracy"]["met"] is None
    assert "Not measured: this run has no `specs` arm." in md
    records = hand_made_records()
    _, md = written_report(tmp_path, {"specs@k=2": records["specs"], "greedy-target": records["beam-target"]})
    assert ("Not measured: this run has no `specs` arm and no `beam-target` arm (these targets are for `specs` as "
            "the preset sets it; its other arms are in the table above).") in md


def test_no_plot_without_matplotlib(tmp_path, monkeypatch):
    (tmp_path / PLOT_FILE).write_bytes(b"stale")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    document, md = written_report(tmp_path)
    assert not (tmp_path / PLOT_FILE).exists()
    assert document["plot"] is None
    assert "No plot: matplotlib is not installed (pip install 'specs-local[plot]')." in md


def test_plot_is_drawn_exactly_where_matplotlib_imports(tmp_path):
    try:
        import matplotlib.figure  # noqa: F401
        available = True
    except ImportError:
        available = False
    document, md = written_report(tmp_path)
    assert (tmp_path / PLOT_FILE).exists() == available
    if available:
        assert (tmp_path / PLOT_FILE).read_bytes().startswith(b"\x89PNG")
        assert document["plot"] == PLOT_FILE and f"]({PLOT_FILE})" in md
    else:
        assert document["plot"] is None and "No plot: matplotlib is not installed" in md


def test_the_revision_says_when_the_code_that_ran_is_not_committed(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    assert git_revision(tmp_path) == "unknown"  # not a checkout
    subprocess.run(git + ["init", "-q"], check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run(git + ["add", "code.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (tmp_path / "results.jsonl").write_text("{}\n")  # untracked output: still the committed code
    assert git_revision(tmp_path) == head
    (tmp_path / "docs").mkdir()
    for prose in ("README.md", "docs/results.jsonl"):  # a write-up in progress: still the committed code
        (tmp_path / prose).write_text("before\n")
        subprocess.run(git + ["add", prose], check=True)
    subprocess.run(git + ["commit", "-qm", "prose"], check=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    for prose in ("README.md", "docs/results.jsonl"):
        (tmp_path / prose).write_text("after\n")
    assert git_revision(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_revision(tmp_path) == head + "+dirty"


def test_the_report_names_the_revision_each_method_ran_with():
    made = {"specs": [{"revision": "120a41f"}, {"revision": "120a41f"}],
            "beam-target": [{"revision": "4ce8234"}], "greedy-target": [{"revision": "4ce8234"}, {}]}
    assert revisions_that_ran({"specs": made["specs"], "beam-target": [{"revision": "120a41f"}]}) == "120a41f"
    assert revisions_that_ran(made) == ("120a41f (specs); 4ce8234 (beam-target, greedy-target); "
                                        "unrecorded (greedy-target)")


def test_the_report_names_the_search_settings_each_method_ran_with():
    on = {"stats": {"settings": {"n": 4, "greedy_candidate": True, "system_prompt": None}}}
    off = {"stats": {"settings": {"n": 4, "greedy_candidate": False, "system_prompt": None}}}
    error = {"error": "boom"}  # an error record ran no search: it names no settings
    assert settings_that_ran({"specs": [on, error], "beam-target": [on]}) == "n 4, greedy_candidate true"
    assert settings_that_ran({"specs": [on], "beam-target": [off, {"stats": {}}]}) == (
        "n 4, greedy_candidate true (specs); n 4, greedy_candidate false (beam-target); unrecorded (beam-target)")
