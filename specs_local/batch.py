"""Batch solving: read a problem file, solve each problem, append one durable JSONL record each.

The pieces are separate so that other front ends (`bench`) can reuse them:
`read_problems` (input, in `problems`), `OutputLog` (durable, resumable output, in
`output_log`), `solve_record`
(one problem -> one record), `Progress` (the progress line) and `summarize` /
`format_summary` (the closing report). `write_records` is the loop around them
that alone writes the output, fed by any producer of records (this process, or a
Ray cluster: `specs_local.cluster`); `run_batch` feeds it from a
`solve(problem_text) -> result dict` callable, so it never needs a model itself.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from specs_local.answers import grade
from specs_local.errors import SpecsError
from specs_local.output_log import OutputLog, Record, record_id
from specs_local.problems import Problem
from specs_local.run_markers import TERMINATED, terminating
from specs_local.selection import selection_summary

Solve = Callable[[str], Record]
Note = Callable[[str], None]  # prints one line of its own beside the progress line


# ---------------------------------------------------------------- records


def error_record(problem: Problem, method: str, message: str) -> Record:
    """The record of a problem that has no answer: bad input or a failed solve.

    It counts as wrong where a gold answer exists, so failures never raise accuracy.
    """
    record: Record = {"id": problem.id, "problem": problem.text, "answer": None, "gold": problem.gold}
    if problem.gold is not None:
        record["correct"] = False
    record.update(method=method, error=message)
    return record


def result_record(problem: Problem, result: Record, method: str, trace: bool) -> Record:
    """The record of a solved problem, graded where a gold answer exists."""
    record: Record = {"id": problem.id, "problem": problem.text, "answer": result["answer"], "gold": problem.gold}
    if problem.gold is not None:
        record["correct"] = grade(result["answer"], problem.gold)
    record.update(method=method, stats=result["stats"])
    if chosen := selection_summary(result.get("extra") or {}):
        record["selection"] = chosen  # every candidate's answer and scores: each rule can be recomputed
    if trace:
        record["trace"] = {"steps": result["steps"], "text": result["text"],
                           **({"extra": result["extra"]} if result.get("extra") else {})}
    return record


def solve_record(problem: Problem, solve: Solve, *, method: str, trace: bool = False) -> Record:
    """Solve one problem and make its record. A SpecsError becomes an error record."""
    if problem.error is not None:
        return error_record(problem, method, problem.error)
    try:
        result = solve(problem.text)
    except SpecsError as error:
        if terminating():  # the kill's doing, not the problem's: no record, so a rerun solves it
            raise SystemExit(TERMINATED) from None
        return error_record(problem, method, str(error))
    return result_record(problem, result, method, trace)


# ---------------------------------------------------------------- progress and summary


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _record_status(record: Record) -> str:
    if "error" in record:
        return "error"
    if "correct" in record:
        return "correct" if record["correct"] else "wrong"
    return "done"


class Progress:
    """The progress line: done/total, rate, ETA, running accuracy.

    On a terminal it is one line redrawn with `\\r`; otherwise one plain line per
    problem, so logs stay readable. `prior` holds the records already done before
    this run (resume): they count towards done and accuracy, not towards the rate.
    """

    def __init__(
        self, total: int, *, out: TextIO | None = None, enabled: bool = True, prior: Iterable[Record] = (),
        detail: Callable[[], str] | None = None,
    ):
        prior = list(prior)
        self.detail = detail  # more to show before the record's status (a cluster's live workers)
        self.total = total
        # Looked up per call, not at import: click's test runner swaps sys.stderr.
        self.out = out or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.out.isatty()
        self.done = len(prior)
        self.done_now = 0
        self.graded = sum("correct" in r for r in prior)
        self.correct = sum(r.get("correct") is True for r in prior)
        self.started = time.monotonic()
        self._width = 0  # length of the last line drawn on a terminal

    def line(self, record: Record) -> str:
        """The progress text after `record` was done."""
        parts = [f"{self.done}/{self.total}"]
        elapsed = time.monotonic() - self.started
        if self.done_now and elapsed > 0:
            per_second = self.done_now / elapsed
            parts.append(f"{per_second * 60:.1f}/min")
            parts.append(f"ETA {_format_duration((self.total - self.done) / per_second)}")
        if self.graded:
            parts.append(f"acc {self.correct / self.graded:.1%} ({self.correct}/{self.graded})")
        if self.detail is not None and (detail := self.detail()):
            parts.append(detail)
        parts.append(f"{record['id']}: {_record_status(record)}")
        return " | ".join(parts)

    def advance(self, record: Record) -> None:
        self.done += 1
        self.done_now += 1
        if "correct" in record:
            self.graded += 1
            self.correct += record["correct"] is True
        if not self.enabled:
            return
        text = self.line(record)
        if self.tty:
            text = text[: shutil.get_terminal_size().columns - 1]  # a wrapped line cannot be redrawn
            self.out.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        """End a terminal line so that what follows starts on its own line."""
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()
            self._width = 0

    def note(self, text: str) -> None:
        """A line of its own (a worker lost), shown even without progress: it is news, not progress."""
        if self.tty and self._width:  # wipe the progress line; the next problem redraws it
            self.out.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.out.write(text + "\n")
        self.out.flush()


@dataclass(frozen=True)
class Summary:
    total: int  # problems in the input
    done_now: int  # solved (or failed) in this run
    skipped: int  # already in the output when the run started
    errors: int  # records with an error, over the whole input
    graded: int  # records with a gold answer
    correct: int
    mean_latency_s: float | None  # over records with stats.wall_seconds
    median_latency_s: float | None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


def _wall_seconds(record: Record) -> float | None:
    seconds = (record.get("stats") or {}).get("wall_seconds")
    return float(seconds) if isinstance(seconds, (int, float)) else None


def summarize(records: Sequence[Record], *, total: int, done_now: int, skipped: int) -> Summary:
    """The summary of the records of one input (those of this run and those resumed)."""
    latencies = [s for s in map(_wall_seconds, records) if s is not None]
    return Summary(
        total=total,
        done_now=done_now,
        skipped=skipped,
        errors=sum("error" in r for r in records),
        graded=sum("correct" in r for r in records),
        correct=sum(r.get("correct") is True for r in records),
        mean_latency_s=statistics.fmean(latencies) if latencies else None,
        median_latency_s=statistics.median(latencies) if latencies else None,
    )


def format_summary(summary: Summary) -> str:
    """A few lines for a person: counts, accuracy, latency."""
    counts = (
        f"{summary.total} problems: {summary.done_now} solved now, "
        f"{summary.skipped} already done, {summary.errors} errors"
    )
    if summary.accuracy is None:
        accuracy = "accuracy: no gold answers"
    else:
        accuracy = f"accuracy {summary.accuracy:.1%} ({summary.correct}/{summary.graded} graded)"
    if summary.mean_latency_s is None:
        latency = "latency: none measured"
    else:
        latency = f"latency mean {summary.mean_latency_s:.2f} s, median {summary.median_latency_s:.2f} s"
    return "\n".join([counts, accuracy, latency])


# ---------------------------------------------------------------- the batch


Produce = Callable[[list[Problem], Note], Iterable[Record]]


def write_records(
    problems: Sequence[Problem],
    output_path: str | os.PathLike,
    produce: Produce,
    *,
    progress: bool = True,
    out: TextIO | None = None,
    detail: Callable[[], str] | None = None,
    retry_errors: bool = False,
) -> Summary:
    """Append a record for every problem not yet in `output_path`, as `produce` yields them.

    `produce(todo, note)` gets the problems still to do and yields their records, in
    any order. Only this loop writes: each record is appended and fsynced as it
    arrives, and one whose id is already on disk is dropped, so no id is done twice.
    With `retry_errors`, problems whose record is an error are done again.
    """
    with OutputLog(output_path, retry_errors=retry_errors) as log:
        todo = [problem for problem in problems if problem.id not in log]
        prior = [log.records[problem.id] for problem in problems if problem.id in log]
        bar = Progress(len(problems), out=out, enabled=progress, prior=prior, detail=detail)
        try:
            for record in produce(todo, bar.note):
                if record_id(record) in log:
                    continue
                log.append(record)
                bar.advance(record)
        finally:
            bar.close()
        records = [log.records[problem.id] for problem in problems if problem.id in log]
    return summarize(records, total=len(problems), done_now=bar.done_now, skipped=len(prior))


def run_batch(
    problems: Sequence[Problem],
    output_path: str | os.PathLike,
    solve: Solve,
    *,
    method: str,
    trace: bool = False,
    progress: bool = True,
    out: TextIO | None = None,
    retry_errors: bool = False,
) -> Summary:
    """Solve every problem not yet in `output_path`, appending one record each.

    `solve(problem_text)` returns a result dict (`answer`, `text`, `steps`, `stats`
    with `wall_seconds`); a SpecsError from it becomes an error record and the batch
    goes on. Each record is on disk before the next problem starts, so a
    KeyboardInterrupt (or a kill) loses only the problem in progress; rerunning resumes.
    Progress goes to `out` (default: sys.stderr).
    """

    def solve_each(todo: list[Problem], note: Note) -> Iterable[Record]:
        return (solve_record(problem, solve, method=method, trace=trace) for problem in todo)

    return write_records(problems, output_path, solve_each, progress=progress, out=out, retry_errors=retry_errors)
