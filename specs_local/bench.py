"""The bench runner: several methods on the same problems, models loaded once.

Per problem the methods run one after another in an order rotated from
problem to problem, so that machine drift hits all methods alike. Each method
appends to its own durable JSONL (``<out>/<method>.jsonl``), so a rerun of the
same command resumes where it stopped. The report is rebuilt from those files.
`run_bench_tasks` is the same writer fed by another producer (a Ray cluster).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, TextIO

from .batch import solve_record
from .errors import SpecsError
from .output_log import OutputLog, read_log
from .problems import Problem


def parse_arm(label: str) -> tuple[str, dict]:
    """An arm of a bench: ``METHOD`` or ``METHOD@key=value@key=value`` (search settings of
    that arm alone, SearchConfig's names), e.g. ``specs@greedy_candidate=false`` or
    ``best-of-n@n=8@select=vote-logprob``. Arms of one method run interleaved like methods.
    Returns the method and the settings, typed as SearchConfig declares them."""
    from dataclasses import fields

    from .search import ALIASES, STRATEGIES, SearchConfig

    method, *pairs = label.split("@")
    method = ALIASES.get(method.strip(), method.strip())
    if method not in STRATEGIES:
        raise SpecsError(f"unknown method {method!r} in {label!r}; choose from {', '.join(sorted(STRATEGIES))}")
    types = {f.name: f.type for f in fields(SearchConfig)}
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            raise SpecsError(f"{label!r}: {pair!r} is not KEY=VALUE with a search setting "
                             f"({', '.join(sorted(types))})")
        changes[key] = _typed(text.strip(), types[key], label)
    SearchConfig().with_(**changes)  # a bad value is refused before anything runs
    return method, changes


def _typed(text: str, declared: str, label: str):
    kind = str(declared)
    try:
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0", "on", "off"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "on")
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise SpecsError(f"{label!r}: {text!r} is not a {kind.split(' ')[0]}") from None
    return text


def arm_label(label: str) -> str:
    """The arm's name as records and files carry it: the method's full name, and keys spelled
    as SearchConfig spells them (``beam@greedy-candidate=true`` is ``beam-target@greedy_candidate=true``)."""
    from .search import ALIASES

    method, *pairs = label.split("@")
    method = ALIASES.get(method.strip(), method.strip())
    keys = [pair.partition("=") for pair in pairs]
    return "@".join([method] + [f"{key.strip().replace('-', '_')}={value.strip()}" for key, _, value in keys])


def solve_arm(solver, text: str, label: str) -> dict:
    """One problem solved by one arm (its method, with its settings over the solver's)."""
    method, changes = parse_arm(label)
    return solver.solve(text, method=method, **changes).to_dict()


def rotated(methods: list[str], index: int) -> list[str]:
    """The run order for problem ``index``: the method list rotated by one per problem."""
    k = index % len(methods)
    return methods[k:] + methods[:k]


@dataclass
class BenchProgress:
    """One status line: problems done, the method running, running accuracy per method."""

    total: int
    methods: list[str]
    out: TextIO = sys.stderr
    correct: dict = field(default_factory=dict)
    graded: dict = field(default_factory=dict)
    done: int = 0

    def count(self, record: dict) -> None:
        m = record["method"]
        if "correct" in record:
            self.graded[m] = self.graded.get(m, 0) + 1
            self.correct[m] = self.correct.get(m, 0) + bool(record["correct"])

    def count_logs(self, logs: dict[str, OutputLog]) -> None:
        """Count the records already on disk (resume)."""
        for log in logs.values():
            for record in log.records.values():
                self.count(record)

    def show(self, current: str | None = None) -> None:
        accs = " ".join(f"{m} {self.correct.get(m, 0)}/{self.graded.get(m, 0)}" for m in self.methods)
        now = f" | running {current}" if current else ""
        end = "\r" if self.out.isatty() and current else "\n"
        self.out.write(f"[{self.done}/{self.total} problems{now}] correct: {accs}{end}")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line of its own (a worker lost), below a status line left open on a terminal."""
        self.out.write(("\n" if self.out.isatty() else "") + text + "\n")
        self.out.flush()


@contextmanager
def _open_logs(out_dir: Path, methods: list[str], problems: list[Problem], out: TextIO,
               retry_errors: bool = False) -> Iterator[tuple[dict[str, OutputLog], BenchProgress]]:
    """Each method's log, locked, and a progress bar that has counted what they hold; closed on exit."""
    if not methods:
        raise SpecsError("no methods to bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    logs: dict[str, OutputLog] = {}
    try:  # one log refused (another run's, or not ours) lets go of those already locked
        for m in methods:
            logs[m] = OutputLog(out_dir / f"{m}.jsonl", retry_errors=retry_errors)
        bar = BenchProgress(len(problems), methods, out)
        bar.count_logs(logs)
        yield logs, bar
    finally:
        for log in logs.values():
            log.close()


def _stamped(record: dict, revision: str | None) -> dict:
    """The record with the revision of the code that made it (the report names it, not
    whatever the checkout holds when the report is rebuilt)."""
    return record if revision is None else {**record, "revision": revision}


def _by_method(logs: dict[str, OutputLog], problems: list[Problem]) -> dict[str, list[dict]]:
    return {m: [log.records[p.id] for p in problems if p.id in log] for m, log in logs.items()}


def run_bench(problems: list[Problem], methods: list[str], out_dir: Path, solve, *, progress: bool = True,
              trace: bool = False, out: TextIO = sys.stderr, retry_errors: bool = False,
              revision: str | None = None) -> dict[str, list[dict]]:
    """Run every (problem, method) pair not yet on disk; return the records by method.

    ``solve(text, method) -> result dict``; ``trace`` keeps every step in the records;
    ``retry_errors`` runs again the pairs whose record is an error; ``revision`` (the
    code's, read before the first problem) is written into each new record."""
    with _open_logs(out_dir, methods, problems, out, retry_errors) as (logs, bar):
        for index, problem in enumerate(problems):
            for method in rotated(methods, index):
                if problem.id in logs[method]:
                    continue
                if progress:
                    bar.show(f"{problem.id}: {method}")
                record = solve_record(problem, lambda text, m=method: solve(text, m), method=method, trace=trace)
                record = _stamped(record, revision)
                logs[method].append(record)
                bar.count(record)
            bar.done = index + 1
            if progress:
                bar.show()
        return _by_method(logs, problems)


def bench_tasks(problems: list[Problem], methods: list[str], logs: dict[str, OutputLog]) -> list[tuple[Problem, str]]:
    """The (problem, method) pairs not yet on disk, in the order ``run_bench`` runs them."""
    return [(p, m) for index, p in enumerate(problems) for m in rotated(methods, index) if p.id not in logs[m]]


def run_bench_tasks(problems: list[Problem], methods: list[str], out_dir: Path, produce, *, progress: bool = True,
                    out: TextIO = sys.stderr, detail=None, retry_errors: bool = False,
                    revision: str | None = None) -> dict[str, list[dict]]:
    """``run_bench`` with the solving handed to ``produce(tasks, note) -> records`` (a Ray cluster).

    The records come back in any order; only this loop writes them, each to its
    method's file, and one already on disk is dropped. ``detail()`` adds to the status."""
    with _open_logs(out_dir, methods, problems, out, retry_errors) as (logs, bar):
        for record in produce(bench_tasks(problems, methods, logs), bar.note):
            log = logs[record["method"]]
            if record["id"] in log:
                continue
            record = _stamped(record, revision)
            log.append(record)
            bar.count(record)
            bar.done = sum(all(p.id in logs[m] for m in methods) for p in problems)
            if progress:
                bar.show(detail() if detail else None)
        if progress:
            bar.show()
        return _by_method(logs, problems)


def read_records(out_dir: Path, methods: list[str], problems: list[Problem]) -> dict[str, list[dict]]:
    """The records already on disk, by method, in problem order."""
    records = {}
    for m in methods:
        done = read_log(out_dir / f"{m}.jsonl")
        records[m] = [done[p.id] for p in problems if p.id in done]
    return records


def default_baseline(methods: list[str]) -> str:
    """What latencies are compared with: beam-target where it ran, else greedy-target, else the first."""
    return next((m for m in ("beam-target", "greedy-target") if m in methods), methods[0])


def report(records_by_method: dict[str, list[dict]], out_dir: Path, *, command: str, profile: dict | None,
           other_profiles: list[dict] = (), model_map: dict | None = None, baseline: str | None = None) -> dict:
    """Write report.md / report.json (and the plot, where matplotlib exists).

    ``profile`` (this machine's) sets predicted beside measured latency;
    ``other_profiles`` (measured elsewhere, e.g. on a GPU) add the ratios against
    ``baseline`` (default_baseline) the cost model predicts there from these runs' steps."""
    from .costmodel import predict_latencies, predict_ratio_on, priced_by_shape
    from .machine import machine_name
    from .report import (finished_records, git_revision, revisions_that_ran, settings_that_ran, summarize_methods,
                         write_report)

    predictions = predict_latencies(records_by_method, profile) if profile is not None else None
    baseline = baseline or default_baseline(list(records_by_method))
    summary = summarize_methods(records_by_method, baseline=baseline, predictions=predictions)
    notes = []
    for name, prof in [("this machine", profile)] + [("elsewhere", p) for p in other_profiles]:
        if prof is None:
            continue
        if paragraph := _speculation_paragraph(prof, records_by_method, model_map):
            notes.append(paragraph)
        predicted = predict_ratio_on(prof, records_by_method, baseline=baseline, model_map=model_map)
        if name == "elsewhere":
            ratios = ", ".join(f"{m} {r:.2f}" for m, r in predicted["ratios"].items() if r is not None)
            notes.append(f"Cost model on {predicted['machine']}: predicted latency ratio against {baseline}, "
                         f"replaying these runs' step statistics: {ratios}.")
        else:
            # Machine drift moves every method alike, so the predicted ratio is the figure that
            # travels to other hardware; set it beside the measured one.
            measured = {m: f["latency_ratio"] for m, f in summary["methods"].items()}
            ratios = ", ".join(f"{m} {r:.2f} (measured {measured[m]:.2f})" for m, r in predicted["ratios"].items()
                               if r is not None and measured.get(m) is not None and m != baseline)
            if ratios:
                notes.append(f"Latency ratio against {baseline} (median per problem), predicted by the cost "
                             f"model: {ratios}.")
    if profile is not None:
        done = [r for recs in records_by_method.values() for r in finished_records(recs)]
        shaped = sum(priced_by_shape(r) for r in done)
        notes.append(f"Cost-model basis: {shaped} of {len(done)} finished records carry each decode's shape and the "
                     "KV cells it read; the others predate that accounting and are predicted from generation "
                     "batches and prefill tokens alone.")
    summary["notes"] = notes
    ran, now = revisions_that_ran(records_by_method), git_revision()
    revision = ran if ran == now else f"{ran} (report written at {now})"
    write_report(summary, out_dir, command=command, machine=machine_name(), revision=revision,
                 settings=settings_that_ran(records_by_method),
                 date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), notes=notes)
    return summary


def _speculation_paragraph(profile, records_by_method, model_map) -> str | None:
    """Whether drafting + scoring is cheaper than a target step on a profile's hardware (None
    for a run with no SPECS arm, which has nothing to say of it)."""
    arms = [label for label in records_by_method if parse_arm(label)[0] == "specs"]  # "specs", "specs@k=2", ...
    if not arms:
        return None
    files = {}
    for label in arms:  # every SPECS arm names the pair
        for record in records_by_method[label]:
            for role, usage in record.get("stats", {}).get("models", {}).items():
                files[role] = usage["file"]
    if "draft" not in files or "target" not in files:
        return f"Speculation on {profile['machine']}: no SPECS records to name the draft and target."
    from .costmodel import profile_name, speculation_ratio

    draft, target = (profile_name(profile, files[role], model_map) for role in ("draft", "target"))
    ratios = {n: speculation_ratio(profile, draft, target, n) for n in (1, 2, 4, 8, 16)}
    shown = ", ".join(f"n={n}: {r:.2f}" for n, r in ratios.items())
    verdict = "cannot pay" if ratios[4] >= 1 else "can pay"
    return (f"Speculation on {profile['machine']}: a SPECS step (draft generates, target scores) costs this "
            f"fraction of a target step even at 100% acceptance ({shown}); at n=4 speculation {verdict} here.")

