"""`specs-local bench` end to end on tiny models: 3 problems, 2 methods, every report field."""
from __future__ import annotations

import json

from click.testing import CliRunner

from specs_local.bench import rotated
from specs_local.cli import main
from specs_local.costmodel import store_profile

FIELDS = {"accuracy", "accuracy_interval", "correct", "deferrals", "deferrals_per_problem", "draft_step_share",
          "errors", "finished", "graded", "latency_q1_s", "latency_q3_s", "latency_ratio", "latency_ratio_interval",
          "mean_acceptance_rate", "mean_evaluated_tokens", "mean_latency_s", "mean_model_seconds", "mean_step_tokens",
          "mean_steps", "median_latency_s", "n", "predicted_latency_s", "predicted_over_measured", "ratio_pairs"}


def test_methods_rotate_from_problem_to_problem():
    methods = ["specs", "beam-target", "greedy-target"]
    orders = [rotated(methods, i) for i in range(4)]
    assert orders[0] == methods and orders[1][0] == "beam-target" and orders[3] == methods
    assert all(sorted(o) == sorted(methods) for o in orders)


def test_bench_on_tiny_models_writes_every_report_field(tiny_models, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path / "home"))
    # A stored profile of these two files on this machine turns on the cost-model columns.
    from specs_local.machine import machine_name

    figures = {"prefill_tps": 2000.0, "decode_tps": {"1": 400.0, "2": 700.0, "4": 1000.0, "8": 1200.0, "16": 1300.0}}
    store_profile({"machine": machine_name(), "threads": 1, "n_gpu_layers": 0,
                   "models": {"draft.gguf": figures, "target.gguf": figures}})
    out = tmp_path / "run"
    args = ["bench", str(data_dir / "gsm8k.jsonl"), "--limit", "3", "--methods", "specs,beam-target", "--out", str(out),
            "--draft", str(tiny_models["draft"]), "--target", str(tiny_models["target"]), "--reward-kind", "calculator+self", "--n", "2",
            "--max-steps", "3", "--max-step-tokens", "8", "--threads", "1", "--no-progress", "--trace"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for method in ("specs", "beam-target"):
        records = [json.loads(line) for line in (out / f"{method}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in records] == ["gsm8k/test/0", "gsm8k/test/1", "gsm8k/test/2"]
        assert all(r["gold"] and "correct" in r and r["method"] == method for r in records)
        # --trace keeps the steps; every record carries the decode shapes the cost model prices.
        assert all(r["trace"]["steps"] and "".join(s["text"] for s in r["trace"]["steps"]) == r["trace"]["text"]
                   for r in records)
        usage = records[0]["stats"]["models"]["target"]
        assert sum(rows for _, rows, _ in usage["decode_batches"].values()) == usage["evaluated"]
        assert usage["attended_cells"] >= usage["evaluated"]
    # ... and beam's whole pool, so that another way of picking its answer can be read off one run.
    beams = [json.loads(line)["trace"]["extra"] for line in (out / "beam-target.jsonl").read_text().splitlines()]
    assert all(len(b["pool_answers"]) == (b["completed_beams"] or b["live_beams"]) for b in beams)
    report = json.loads((out / "report.json").read_text())
    assert {"command", "revision", "machine", "date", "methods", "targets"} <= set(report)
    for method in ("specs", "beam-target"):
        assert FIELDS <= set(report["methods"][method]), FIELDS - set(report["methods"][method])
        assert report["methods"][method]["n"] == 3
        assert report["methods"][method]["predicted_latency_s"] is not None
    assert report["methods"]["beam-target"]["latency_ratio"] == 1.0
    md = (out / "report.md").read_text()
    assert "| specs |" in md and "| beam-target |" in md and "SPECS vs beam-target" in md
    assert any("Speculation on" in note for note in report["notes"])
    assert "Cost-model basis: 6 of 6 finished records carry each decode's shape" in "".join(report["notes"])
    # The predicted latency ratio stands beside the measured one.
    ratio_note = next(note for note in report["notes"] if note.startswith("Latency ratio against beam-target"))
    assert f"(measured {report['methods']['specs']['latency_ratio']:.2f})" in ratio_note
    assert "beam-target 1.00" not in ratio_note
    # Rerunning resumes: nothing new is solved, the records stay one per problem.
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0
    assert len((out / "specs.jsonl").read_text().splitlines()) == 3


def test_profile_measures_prefill_decode_and_cost_by_depth_and_stores_them(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path / "home"))
    out = tmp_path / "profile.json"
    args = ["profile", "--model", str(tiny_models["draft"]), "--batches", "1,2", "--repeats", "1",
            "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "extra ms per row by cells read" in result.output
    assert f"stored: {tmp_path / 'home' / 'profiles'}" in result.output and "PosixPath" not in result.output
    from specs_local.costmodel import find_profile

    profile = json.loads(out.read_text())
    figures = profile["models"]["draft.gguf"]
    assert set(figures["decode_tps"]) == {"1", "2"}
    assert set(figures["prefill_tps_by_batch"]) == {"32", "64", "128", "256", "512"}
    assert figures["prefill_tps"] == figures["prefill_tps_by_batch"]["256"]
    assert all(v > 0 for v in [*figures["decode_tps"].values(), *figures["prefill_tps_by_batch"].values()])
    for kind in ("decode", "prefill"):
        # The shallow baseline at 0 s, then one entry per depth, deeper rows reading more cells.
        table = figures[f"{kind}_row_seconds_by_depth"]
        depths = sorted(int(d) for d in table)
        assert len(depths) == 5 and table[str(depths[0])] == 0.0
        assert depths[0] < 256 <= depths[1] and depths[-1] >= 2048
        assert all(s >= 0 for s in table.values())
    assert figures["prefill_tps_by_batch"]["512"] < 1e6  # a rate, not a division by ~0
    assert find_profile([tiny_models["draft"]], threads=1, n_gpu_layers=0) == profile


def _greedy_bench_args(tiny_models, data_dir, out) -> list[str]:
    """A quick bench: greedy decoding of the tiny target on the first two GSM8K problems."""
    return ["bench", str(data_dir / "gsm8k.jsonl"), "--limit", "2", "--methods", "greedy-target", "--out", str(out),
            "--target", str(tiny_models["target"]), "--reward-kind", "calculator", "--max-steps", "2",
            "--max-step-tokens", "6", "--threads", "1", "--no-progress"]


def test_retry_errors_runs_again_the_pairs_whose_record_is_an_error(tiny_models, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    args = _greedy_bench_args(tiny_models, data_dir, out)
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    log = out / "greedy-target.jsonl"
    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    # a record as a run stopped by the old Ctrl-C defect left it
    lost = {key: second[key] for key in ("id", "problem", "gold", "method")} | {
        "answer": None, "correct": False, "error": "target.gguf has no graph node 'l_out-18'"}
    log.write_text(json.dumps(first) + "\n" + json.dumps(lost) + "\n")

    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    assert len(log.read_text().splitlines()) == 2  # without the flag the error counts as done
    assert json.loads((out / "report.json").read_text())["methods"]["greedy-target"]["errors"] == 1

    assert CliRunner().invoke(main, args + ["--retry-errors"], catch_exceptions=False).exit_code == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["id"], "error" in r) for r in records] == [
        (first["id"], False), (second["id"], True), (second["id"], False)]
    assert records[-1]["answer"] == second["answer"]  # greedy decoding: the same record again
    assert json.loads((out / "report.json").read_text())["methods"]["greedy-target"]["errors"] == 0



def test_a_rebuilt_report_names_the_code_that_made_the_records(tiny_models, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path / "home"))
    from specs_local.report import git_revision

    out = tmp_path / "run"
    args = _greedy_bench_args(tiny_models, data_dir, out)
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    log = out / "greedy-target.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    now = git_revision()
    assert [r["revision"] for r in records] == [now, now]
    assert f"- git revision: {now}\n" in (out / "report.md").read_text()
    # The same records as an older commit made them, the report rebuilt from the checkout of today.
    log.write_text("".join(json.dumps({**r, "revision": "abc1234"}) + "\n" for r in records))
    assert CliRunner().invoke(main, args + ["--report-only"], catch_exceptions=False).exit_code == 0
    assert f"- git revision: abc1234 (report written at {now})\n" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["revision"] == f"abc1234 (report written at {now})"


def test_records_and_report_name_the_search_settings_they_ran_with(tiny_models, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    args = _greedy_bench_args(tiny_models, data_dir, out) + ["--seed", "3"]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    records = [json.loads(line) for line in (out / "greedy-target.jsonl").read_text().splitlines()]
    settings = records[0]["stats"]["settings"]
    assert (settings["max_steps"], settings["max_step_tokens"], settings["seed"]) == (2, 6, 3)
    assert settings["greedy_candidate"] is True  # the small preset's default reaches the search
    line = next(x for x in (out / "report.md").read_text().splitlines() if x.startswith("- search settings: "))
    assert "max_steps 2, max_step_tokens 6" in line and "seed 3" in line and "greedy_candidate true" in line
    assert json.loads((out / "report.json").read_text())["settings"] == line.removeprefix("- search settings: ")


def test_arms_of_one_method_run_interleaved_with_their_own_settings(tiny_models, data_dir, tmp_path, monkeypatch):
    """Both arms of a decision in one run, one machine, one revision, interleaved: each arm's
    records carry the settings that made them, and a larger k or n of one arm has its slots."""
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path / "home"))
    from specs_local.machine import machine_name

    figures = {"prefill_tps": 2000.0, "decode_tps": {"1": 400.0, "2": 700.0, "4": 1000.0}}
    store_profile({"machine": machine_name(), "threads": 1, "n_gpu_layers": 0,
                   "models": {"draft.gguf": figures, "target.gguf": figures}})
    out = tmp_path / "arms"
    arms = "specs@greedy_candidate=false,specs@greedy-candidate=true@k=3,best-of-n@n=3@select=majority"
    args = ["bench", str(data_dir / "gsm8k.jsonl"), "--limit", "2", "--methods", arms, "--out", str(out),
            "--draft", str(tiny_models["draft"]), "--target", str(tiny_models["target"]), "--reward-kind", "calculator",
            "--n", "2", "--max-steps", "2", "--max-step-tokens", "6", "--threads", "1", "--no-progress"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    expected = {"specs@greedy_candidate=false": {"greedy_candidate": False, "k": 1, "n": 2},
                "specs@greedy_candidate=true@k=3": {"greedy_candidate": True, "k": 3, "n": 2},
                "best-of-n@n=3@select=majority": {"n": 3, "select": "majority"}}
    for arm, settings in expected.items():
        records = [json.loads(line) for line in (out / f"{arm}.jsonl").read_text().splitlines()]
        assert len(records) == 2 and all(r["method"] == arm for r in records)
        for record in records:
            assert settings.items() <= record["stats"]["settings"].items()
            assert len(record["selection"]["candidates"]) == settings.get("k", settings.get("n"))
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == set(expected)
    # SPECS arms with settings name the draft and target the cost of speculation is priced for.
    assert any(note.startswith("Speculation on") and "a SPECS step" in note for note in report["notes"]), report["notes"]
    bad = CliRunner().invoke(main, args[:4] + ["--methods", "specs@k=zero"] + args[6:])
    assert bad.exit_code == 2 and "'zero' is not a int" in bad.output
    bad = CliRunner().invoke(main, args[:4] + ["--methods", "specs@kk=2"] + args[6:])
    assert bad.exit_code == 2 and "'kk=2' is not KEY=VALUE with a search setting" in bad.output
