"""The bench report: per-method accuracy and latency with their uncertainty,
the cost model's predictions beside the measurements, and whether SPECS met
its targets against beam-target.

``summarize_methods`` turns per-problem records (as ``batch.solve_record``
writes them) into one summary dict; ``write_report`` writes it as
``report.json``, ``report.md`` and, where matplotlib is installed (the
``plot`` extra), ``accuracy_vs_latency.png``.
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import SpecsError

SPECS = "specs"
LATENCY_RATIO_TARGET = 0.81  # the paper's best: 19.1% less latency than beam search
COST_MODEL_TARGET = 0.15  # predicted latency within 15% of measured
PLOT_FILE = "accuracy_vs_latency.png"


def git_revision(root: Path | None = None) -> str:
    """The revision a results file names: the short commit of the code that ran, marked
    "+dirty" when tracked files differ from it (the numbers then come from code that no
    commit holds); "unknown" outside a git checkout. Prose does not count: writing up one
    run's results (docs/, Markdown) while another runs leaves its code as committed."""
    root = root or Path(__file__).resolve().parents[1]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "--short", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs", ":(exclude,glob)**/*.md")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0 or not head.stdout.strip():
        return "unknown"
    return head.stdout.strip() + ("+dirty" if status.returncode == 0 and status.stdout.strip() else "")


def _grouped(records_by_method: dict[str, list[dict]], value_of) -> str:
    """One value where every record agrees, else each value with the methods that ran with it
    (records whose value is None are passed over)."""
    methods_by_value: dict[str, list[str]] = {}
    for method, records in records_by_method.items():
        for value in dict.fromkeys(value_of(r) for r in records):
            if value is not None:
                methods_by_value.setdefault(value, []).append(method)
    if len(methods_by_value) <= 1:
        return next(iter(methods_by_value), "none (no records)")
    return "; ".join(f"{value} ({', '.join(methods)})" for value, methods in methods_by_value.items())


def revisions_that_ran(records_by_method: dict[str, list[dict]]) -> str:
    """The revision(s) the records were made with, as the bench stamped them: one revision
    where all agree, else each with the methods it ran ("unrecorded" for records from
    before the stamp)."""
    return _grouped(records_by_method, lambda r: r.get("revision", "unrecorded"))


def settings_that_ran(records_by_method: dict[str, list[dict]]) -> str:
    """The search settings the records were made with, as each record's stats name them
    (seed, n, temperature, thresholds, greedy candidate ...), grouped like the revisions;
    "unrecorded" for records from before they were kept. Error records have none."""
    def settings(record: dict) -> str | None:
        if "error" in record:
            return None
        values = record.get("stats", {}).get("settings")
        if not values:
            return "unrecorded"
        return ", ".join(f"{k} {json.dumps(v)}" for k, v in values.items() if v is not None)

    return _grouped(records_by_method, settings)


# ---------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test over paired problems: the chance of a split of the discordant
    ones (right under one side only) at least this uneven if each side wins one at 1/2."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def bootstrap_median_ratio(ratios: Sequence[float], *, seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """The median of ``ratios`` and its 95% percentile-bootstrap interval."""
    values = np.asarray(ratios, dtype=float)
    if values.size == 0:
        raise SpecsError("no ratios to bootstrap")
    rng = np.random.default_rng(seed)
    medians = np.median(values[rng.integers(0, values.size, size=(resamples, values.size))], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(np.median(values)), float(low), float(high)


def paired_values(a: dict, b: dict) -> list[tuple[float, float]]:
    """(a[id], b[id]) for every id in both, b positive, in a's order."""
    return [(a[key], b[key]) for key in a if key in b and b[key] > 0]


# ---------------------------------------------------------------- the summary


def finished_records(records: list[dict]) -> list[dict]:
    """The records of problems that ran to an answer (they carry stats)."""
    return [r for r in records if "error" not in r and isinstance(r.get("stats"), dict)]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def grade(record: dict) -> bool | None:
    """Whether a record solved its problem; None where it was not graded (no gold answer).
    An error record with a gold answer is graded wrong (batch.error_record), so failures never raise accuracy."""
    return record["correct"] is True if "correct" in record else None


def pooled_records(folders: Sequence[Path], methods: Sequence[str] | None = None
                   ) -> tuple[dict[str, dict[str, dict]], dict[str, dict[str, Path]]]:
    """The graded records of several bench folders by method and problem id, a later folder's
    record replacing an earlier one's whatever it holds (an error too), and the folder each
    came from. A record without a gold answer counts for nothing, and drops what it replaces."""
    from .output_log import read_log

    records: dict[str, dict[str, dict]] = {}
    origin: dict[str, dict[str, Path]] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.jsonl")):
            method = path.stem
            if methods is not None and method not in methods:
                continue
            for r in read_log(path).values():
                if grade(r) is None:
                    records.get(method, {}).pop(r["id"], None)
                    origin.get(method, {}).pop(r["id"], None)
                    continue
                records.setdefault(method, {})[r["id"]] = r
                origin.setdefault(method, {})[r["id"]] = Path(folder)
    return records, origin


def _accuracy(records: list[dict]) -> dict:
    graded = [g for g in map(grade, records) if g is not None]
    correct = sum(graded)
    return {
        "graded": len(graded),
        "correct": correct,
        "accuracy": correct / len(graded) if graded else None,
        "accuracy_interval": list(wilson_interval(correct, len(graded))) if graded else None,
    }


def _latency(done: list[dict]) -> dict:
    walls = [r["stats"]["wall_seconds"] for r in done]
    q1, median, q3 = np.percentile(walls, [25, 50, 75]).tolist() if walls else (None, None, None)
    return {"mean_latency_s": _mean(walls), "median_latency_s": median, "latency_q1_s": q1, "latency_q3_s": q3}


def _latency_ratio(done: list[dict], baseline_done: list[dict] | None) -> dict:
    """Median of per-problem latency ratios against the baseline, matched by id, with a bootstrap interval."""
    empty = {"latency_ratio": None, "latency_ratio_interval": None, "ratio_pairs": 0}
    if baseline_done is None:
        return empty
    walls = {r["id"]: r["stats"]["wall_seconds"] for r in done}
    base = {r["id"]: r["stats"]["wall_seconds"] for r in baseline_done}
    pairs = paired_values(walls, base)
    if not pairs:
        return empty
    median, low, high = bootstrap_median_ratio([a / b for a, b in pairs])
    return {"latency_ratio": median, "latency_ratio_interval": [low, high], "ratio_pairs": len(pairs)}


def _steps(done: list[dict]) -> dict:
    stats = [r["stats"] for r in done]
    steps = sum(s.get("steps", 0) for s in stats)
    deferrals = sum(s.get("deferrals", 0) for s in stats)
    acceptance = [s["acceptance_rate"] for s in stats if s.get("acceptance_rate") is not None]
    return {
        "mean_steps": _mean([s.get("steps", 0) for s in stats]),
        "mean_step_tokens": _mean([s.get("step_tokens", 0) for s in stats]),
        "draft_step_share": sum(s.get("steps_draft", 0) for s in stats) / steps if steps else None,
        "deferrals": deferrals,
        "deferrals_per_problem": deferrals / len(stats) if stats else None,
        "mean_acceptance_rate": _mean(acceptance),
    }


def _models(done: list[dict]) -> dict:
    """Mean tokens evaluated per model role, and the mean seconds spent in model decodes."""
    by_role: dict[str, list[int]] = {}
    for r in done:
        for role, usage in r["stats"].get("models", {}).items():
            by_role.setdefault(role, []).append(usage.get("evaluated", 0))
    model_seconds = [sum(u.get("decode_seconds", 0.0) for u in r["stats"].get("models", {}).values()) for r in done]
    return {
        "mean_evaluated_tokens": {role: statistics.fmean(values) for role, values in by_role.items()},
        "mean_model_seconds": _mean(model_seconds),
    }


def _prediction(measured: float | None, predicted: float | None) -> dict:
    ratio = predicted / measured if predicted is not None and measured else None
    return {"predicted_latency_s": predicted, "predicted_over_measured": ratio}


def summarize_method(records: list[dict], baseline_records: list[dict] | None, predicted: float | None = None) -> dict:
    """Every report field of one method's records."""
    done = finished_records(records)
    baseline_done = None if baseline_records is None else finished_records(baseline_records)
    latency = _latency(done)
    return {
        "n": len(records),
        "finished": len(done),
        "errors": len(records) - len(done),
        **_accuracy(records),
        **latency,
        **_latency_ratio(done, baseline_done),
        **_steps(done),
        **_models(done),
        **_prediction(latency["mean_latency_s"], predicted),
    }


def summarize_methods(records_by_method: dict[str, list[dict]], *, baseline: str = "beam-target",
                      predictions: dict | None = None) -> dict:
    """The summary of a bench run: ``{"baseline": name, "methods": {method: fields}}``.

    ``predictions`` maps a method to the cost model's predicted mean seconds.
    Latency ratios are None when the baseline did not run."""
    predictions = predictions or {}
    baseline_records = records_by_method.get(baseline)
    return {
        "baseline": baseline,
        "methods": {
            method: summarize_method(records, baseline_records, predictions.get(method))
            for method, records in records_by_method.items()
        },
    }


# ---------------------------------------------------------------- targets


def _accuracy_target(specs: dict, base: dict) -> dict:
    """SPECS's accuracy no lower than the baseline's, within the baseline's interval."""
    if specs["accuracy"] is None or base["accuracy"] is None:
        return {"met": None}
    return {"met": specs["accuracy"] >= base["accuracy_interval"][0],
            "specs": specs["accuracy"], "baseline": base["accuracy"], "baseline_interval": base["accuracy_interval"]}


def _latency_target(specs: dict) -> dict:
    if specs["latency_ratio"] is None:
        return {"met": None, "target": LATENCY_RATIO_TARGET}
    return {"met": specs["latency_ratio"] <= LATENCY_RATIO_TARGET, "target": LATENCY_RATIO_TARGET,
            "ratio": specs["latency_ratio"], "interval": specs["latency_ratio_interval"]}


def _cost_model_target(methods: dict) -> dict:
    """Signed relative error of the predicted latency per method; met within the target either way."""
    errors = {m: f["predicted_over_measured"] - 1 for m, f in methods.items()
              if f["predicted_over_measured"] is not None}
    return {"target": COST_MODEL_TARGET,
            "methods": {m: {"error": e, "met": abs(e) <= COST_MODEL_TARGET} for m, e in errors.items()},
            "met": all(abs(e) <= COST_MODEL_TARGET for e in errors.values()) if errors else None}


def assess_targets(summary: dict) -> dict:
    """Whether SPECS met the issue's targets against the baseline, and the cost model its own."""
    methods = summary["methods"]
    specs, base = methods.get(SPECS), methods.get(summary["baseline"])
    both = specs is not None and base is not None
    return {
        "accuracy": _accuracy_target(specs, base) if both else {"met": None},
        "latency": _latency_target(specs) if both else {"met": None, "target": LATENCY_RATIO_TARGET},
        "cost_model": _cost_model_target(methods),
    }


# ---------------------------------------------------------------- markdown


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(values: list[float] | None, fmt=_num) -> str:
    return "" if values is None else f" [{fmt(values[0])}, {fmt(values[1])}]"


def _tokens(per_role: dict) -> str:
    return ", ".join(f"{role} {value:.0f}" for role, value in per_role.items()) or "–"


COLUMNS = (
    ("method", lambda m, f: m),
    ("problems", lambda m, f: str(f["n"])),
    ("errors", lambda m, f: str(f["errors"])),
    ("correct", lambda m, f: f"{f['correct']}/{f['graded']}"),
    ("accuracy [95% Wilson]", lambda m, f: _pct(f["accuracy"]) + _interval(f["accuracy_interval"], _pct)),
    ("mean latency s", lambda m, f: _num(f["mean_latency_s"], 1)),
    ("median latency s", lambda m, f: _num(f["median_latency_s"], 1)),
    ("latency ratio [95% bootstrap]", lambda m, f: _num(f["latency_ratio"]) + _interval(f["latency_ratio_interval"])),
    ("steps/problem", lambda m, f: _num(f["mean_steps"], 1)),
    ("draft step share", lambda m, f: _pct(f["draft_step_share"])),
    ("deferrals (per problem)", lambda m, f: f"{f['deferrals']} ({_num(f['deferrals_per_problem'])})"),
    ("acceptance", lambda m, f: _pct(f["mean_acceptance_rate"])),
    ("tokens evaluated/problem", lambda m, f: _tokens(f["mean_evaluated_tokens"])),
    ("model decode s", lambda m, f: _num(f["mean_model_seconds"], 1)),
    ("predicted s", lambda m, f: _num(f["predicted_latency_s"], 1)),
    ("predicted/measured", lambda m, f: _num(f["predicted_over_measured"])),
)


def markdown_table(summary: dict) -> str:
    """One row per method, one column per report field."""
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for method, fields in summary["methods"].items():
        lines.append("| " + " | ".join(cell(method, fields) for _, cell in COLUMNS) + " |")
    return "\n".join(lines)


def _met(flag: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[flag]


def latency_verdict(ratio: float, interval: list[float] | None) -> str:
    """How SPECS compares in speed: only an interval clear of 1 says faster or slower."""
    if interval is None:
        return "faster than" if ratio < 1 else "not faster than"
    if interval[1] < 1:
        return "faster than"
    if interval[0] > 1:
        return "slower than"
    return "not shown faster or slower (the interval spans 1) than"


def accuracy_comparison(accuracy: dict, baseline: str) -> str:
    """What the accuracy target compared, in words: SPECS's accuracy against the
    baseline's and, when lower, against the baseline's 95% interval (the target)."""
    interval = _interval(accuracy["baseline_interval"], _pct).strip()
    specs, base = f"SPECS {_pct(accuracy['specs'])}", f"{baseline}'s {_pct(accuracy['baseline'])}"
    if accuracy["specs"] >= accuracy["baseline"]:
        return f"{specs} is not lower than {base} {interval}"
    if accuracy["met"]:
        return f"{specs} is below {base} but inside its 95% interval {interval}"
    return f"{specs} is below the 95% interval of {base} {interval}"


def specs_paragraph(summary: dict, targets: dict) -> str:
    """Plain words: did SPECS reach beam-target's accuracy at 0.81 of its latency?"""
    baseline = summary["baseline"]
    missing = [m for m in (SPECS, baseline) if m not in summary["methods"]]
    if missing:
        why = " and no ".join(f"`{m}` arm" for m in missing)
        if SPECS in missing and any(m.startswith(f"{SPECS}@") for m in summary["methods"]):
            why += f" (these targets are for `{SPECS}` as the preset sets it; its other arms are in the table above)"
        return f"Not measured: this run has no {why}."
    accuracy, latency = targets["accuracy"], targets["latency"]
    parts = []
    if accuracy["met"] is None:
        parts.append("Accuracy: not measured (no graded problems).")
    else:
        parts.append(f"Accuracy target {_met(accuracy['met'])}: {accuracy_comparison(accuracy, baseline)}.")
    if latency["met"] is None:
        parts.append("Latency: not measured (no problem finished by both).")
    else:
        verdict = latency_verdict(latency["ratio"], latency["interval"])
        parts.append(f"Latency target {_met(latency['met'])}: SPECS takes {_num(latency['ratio'])} of {baseline}'s "
                     f"latency (median per-problem ratio, 95% interval "
                     f"{_interval(latency['interval']).strip()}; target <= {latency['target']}), so it is "
                     f"{verdict} {baseline} here.")
    return " ".join(parts)


def cost_model_paragraph(targets: dict) -> str:
    cost = targets["cost_model"]
    if not cost["methods"]:
        return "No cost-model prediction: no hardware profile of these models on this machine (`specs-local profile`)."
    rows = "; ".join(f"{m} {e['error']:+.0%} ({_met(e['met'])})" for m, e in cost["methods"].items())
    return (f"Predicted vs measured latency, error per method (target within {cost['target']:.0%}): {rows}. "
            "Predictions count model time only, not sampling or other Python time: every decode at the "
            "profile's throughput for its rows, plus what its rows pay for the KV cells they read, by the "
            "profile's depth tables (records written before the engine recorded decode shapes: generation "
            "batches and prefill tokens only).")


# ---------------------------------------------------------------- the plot


def plot_accuracy_vs_latency(summary: dict, path: Path) -> str | None:
    """Draw one point per method with Wilson and IQR error bars; the reason if nothing was drawn."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib is not installed (pip install 'specs-local[plot]')"
    points = {m: f for m, f in summary["methods"].items()
              if f["accuracy"] is not None and f["median_latency_s"] is not None}
    if not points:
        return "no method has both a graded answer and a measured latency"
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot()
    for method, f in points.items():
        x, y = f["median_latency_s"], f["accuracy"]
        low, high = f["accuracy_interval"]
        axes.errorbar([x], [y], xerr=[[x - f["latency_q1_s"]], [f["latency_q3_s"] - x]],
                      yerr=[[y - low], [high - y]], fmt="o", capsize=4, label=method)
        axes.annotate(method, (x, y), textcoords="offset points", xytext=(6, 6))
    axes.set_xlabel("median latency per problem (s); bars: interquartile range")
    axes.set_ylabel("accuracy; bars: 95% Wilson interval")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return None


# ---------------------------------------------------------------- writing


def write_report(summary: dict, out_dir: Path, *, command: str, machine: str, revision: str, date: str,
                 settings: str | None = None, notes: Sequence[str] = ()) -> None:
    """Write report.json, report.md and (where matplotlib imports) accuracy_vs_latency.png.

    ``notes`` are extra paragraphs for report.md and report.json, e.g. the cost
    model's explanation (``costmodel.speculation_note``) or a prediction for
    other hardware (``costmodel.predict_ratio_on``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = assess_targets(summary)
    no_plot = plot_accuracy_vs_latency(summary, out_dir / PLOT_FILE)
    if no_plot is not None:
        (out_dir / PLOT_FILE).unlink(missing_ok=True)  # never leave a stale plot beside a new report
    metadata = {"command": command, "revision": revision, "settings": settings, "machine": machine, "date": date}
    document = {**metadata, **summary, "targets": targets, "notes": list(notes),
                "plot": PLOT_FILE if no_plot is None else None, "plot_missing_reason": no_plot}
    (out_dir / "report.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    plot_line = f"![accuracy vs latency]({PLOT_FILE})" if no_plot is None else f"No plot: {no_plot}."
    sections = [
        "# specs-local bench report",
        "\n".join([f"- command: `{command}`", f"- git revision: {revision}",
                   *([f"- search settings: {settings}"] if settings else []), f"- machine: {machine}",
                   f"- date: {date}"]),
        (f"Latency ratio: each method's latency over {summary['baseline']}'s on the same problem; "
         "the median of those ratios, with a 95% bootstrap interval."),
        markdown_table(summary),
        f"## SPECS vs {summary['baseline']}",
        specs_paragraph(summary, targets),
        "## Cost model",
        cost_model_paragraph(targets),
        *notes,
        plot_line,
    ]
    (out_dir / "report.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")
