"""The batch writer: input parsing, durable records, resume, torn-line repair, progress, summary.

`solve` here is a small pure-Python arithmetic solver returning the same result dict
as the real solver: this tests the writer, not the models.
"""

import fcntl
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specs_local.answers import extract_boxed
from specs_local.batch import Progress, format_summary, run_batch
from specs_local.errors import SpecsError
from specs_local.output_log import OutputLog, read_log
from specs_local.problems import read_problems

REPO = Path(__file__).resolve().parents[1]


def arithmetic_solve(text: str) -> dict:
    """Solve "What is A op B?" the way a model would: a boxed answer in a one-step trace."""
    match = re.search(r"(-?\d+)\s*([-+*])\s*(-?\d+)", text)
    if match is None:
        raise SpecsError("no arithmetic in this problem")
    a, op, b = int(match[1]), match[2], int(match[3])
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    solution = f"{a} {op} {b} = {value}, so the answer is $\\boxed{{{value}}}$."
    step = {"text": solution, "source": "target", "reward": 1.0}
    return {"answer": extract_boxed(solution), "text": solution, "steps": [step], "stats": {"wall_seconds": a / 10}}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def read_records(path: Path) -> list[dict]:
    data = path.read_text(encoding="utf-8")
    assert data == "" or data.endswith("\n"), "torn last line"
    return [json.loads(line) for line in data.splitlines()]


def batch(problems, output, solve=arithmetic_solve, **options):
    options.setdefault("progress", False)
    return run_batch(problems, output, solve, method="greedy", **options)


# ---------------------------------------------------------------- input


def test_jsonl_input_is_solved_graded_and_recorded(tmp_path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "problem": "What is 2 + 3?", "answer": "5"},
            {"id": "b", "problem": "What is 6 * 7?", "answer": "41"},  # wrong gold: graded wrong
            {"id": "c", "problem": "What is 9 - 4?"},
        ],
    )
    output = tmp_path / "out.jsonl"
    summary = batch(read_problems(source), output)

    a, b, c = read_records(output)
    assert a == {
        "id": "a",
        "problem": "What is 2 + 3?",
        "answer": "5",
        "gold": "5",
        "correct": True,
        "method": "greedy",
        "stats": {"wall_seconds": 0.2},
    }
    assert (b["answer"], b["correct"]) == ("42", False)
    assert c["gold"] is None and "correct" not in c  # no gold, no grade
    assert "trace" not in a
    assert (summary.total, summary.done_now, summary.skipped, summary.errors) == (3, 3, 0, 0)
    assert (summary.graded, summary.correct, summary.accuracy) == (2, 1, 0.5)
    assert summary.mean_latency_s == pytest.approx((0.2 + 0.6 + 0.9) / 3)
    assert summary.median_latency_s == pytest.approx(0.6)


def test_trace_keeps_steps_and_text(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "problem": "What is 1 + 1?", "answer": 2}])
    batch(read_problems(source), tmp_path / "out.jsonl", trace=True)
    (record,) = read_records(tmp_path / "out.jsonl")
    assert record["id"] == "1" and record["gold"] == "2" and record["correct"] is True  # ids and golds become text
    assert record["trace"]["steps"][0]["source"] == "target"
    assert record["trace"]["text"].endswith(r"$\boxed{2}$.")


def test_plain_text_input_takes_line_numbers_as_ids(tmp_path):
    source = tmp_path / "problems.txt"
    source.write_text("What is 2 + 2?\n\n  What is 3 * 3?  \n")
    problems = read_problems(source)
    assert [(p.id, p.text, p.gold) for p in problems] == [("1", "What is 2 + 2?", None), ("3", "What is 3 * 3?", None)]
    summary = batch(problems, tmp_path / "out.jsonl")
    assert [r["answer"] for r in read_records(tmp_path / "out.jsonl")] == ["4", "9"]
    assert summary.accuracy is None


def test_jsonl_is_recognised_by_its_first_line_whatever_the_extension(tmp_path):
    source = write_jsonl(tmp_path / "in.txt", [{"id": "x", "problem": "What is 1 + 2?", "answer": "3"}])
    (problem,) = read_problems(source)
    assert (problem.id, problem.text, problem.gold) == ("x", "What is 1 + 2?", "3")


def test_malformed_line_gives_an_error_record_and_the_batch_goes_on(tmp_path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "problem": "What is 2 + 3?", "answer": "5"},
            '{"id": "b", "problem": "What is',
            {"id": "c", "problem": "What is 4 + 4?", "answer": "8"},
        ],
    )
    summary = batch(read_problems(source), tmp_path / "out.jsonl")
    a, broken, c = read_records(tmp_path / "out.jsonl")
    assert broken["id"] == "2"  # unreadable line: its line number is its id
    assert broken["error"].startswith("line 2: malformed JSON")
    assert broken["answer"] is None
    assert a["correct"] is True and c["correct"] is True
    assert (summary.errors, summary.done_now) == (1, 3)


def test_record_without_problem_gives_an_error_record_naming_its_line(tmp_path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "problem": "What is 2 + 3?"},
            {"id": "b", "question": "What is 1 + 1?", "answer": "2"},
            ["not", "an", "object"],
        ],
    )
    batch(read_problems(source), tmp_path / "out.jsonl")
    a, b, listed = read_records(tmp_path / "out.jsonl")
    assert a["answer"] == "5"
    assert (b["id"], b["error"]) == ("b", 'line 2: no "problem" text')
    assert b["correct"] is False  # a gold answer that got no answer counts against accuracy
    assert listed["error"] == "line 3: not a JSON object"


def test_solve_error_becomes_an_error_record_and_the_batch_goes_on(tmp_path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "problem": "Prove Fermat.", "answer": "1"},
            {"id": "b", "problem": "What is 1 + 1?", "answer": "2"},
        ],
    )
    summary = batch(read_problems(source), tmp_path / "out.jsonl")
    a, b = read_records(tmp_path / "out.jsonl")
    assert a["error"] == "no arithmetic in this problem" and a["correct"] is False
    assert b["correct"] is True
    assert (summary.errors, summary.graded, summary.correct) == (1, 2, 1)


def test_an_error_while_a_polite_kill_lands_is_the_kills_and_leaves_no_record(tmp_path, monkeypatch):
    """A SIGTERM's SystemExit can be swallowed inside a llama.cpp callback and come out as a
    SpecsError (a killed bench once wrote "no graph node" as a problem's result); a rerun must solve it."""
    from specs_local import run_markers

    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "b", "problem": "What is 1 + 1?", "answer": "2"},
                                                 {"id": "a", "problem": "Prove Fermat.", "answer": "1"}])
    monkeypatch.setattr(run_markers, "_terminating", True)
    with pytest.raises(SystemExit) as stopped:
        batch(read_problems(source), tmp_path / "out.jsonl")
    assert stopped.value.code == 143
    assert [r["id"] for r in read_records(tmp_path / "out.jsonl")] == ["b"]  # done work kept, no error record


def test_duplicate_ids_are_refused_up_front(tmp_path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "a", "problem": "1 + 1"}, {"id": "b", "problem": "2 + 2"}, {"id": "a", "problem": "3 + 3"}],
    )
    with pytest.raises(SpecsError) as refused:
        read_problems(source)
    assert str(refused.value) == 'duplicate id "a" on lines 1 and 3'


def test_a_default_line_id_clashing_with_an_explicit_id_is_refused(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"problem": "1 + 1"}, {"id": 1, "problem": "2 + 2"}])
    with pytest.raises(SpecsError, match='duplicate id "1" on lines 1 and 2'):
        read_problems(source)


@pytest.mark.parametrize("make", ["missing", "directory", "binary", "empty"])
def test_unreadable_input_is_a_one_line_error(tmp_path, make):
    path = tmp_path / "in.jsonl"
    if make == "directory":
        path.mkdir()
    elif make == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage\x81")
    elif make == "empty":
        path.write_text("\n\n")
    with pytest.raises(SpecsError) as refused:
        read_problems(path)
    message = str(refused.value)
    assert str(path) in message and "\n" not in message


# ---------------------------------------------------------------- durable output and resume


def counting(solve):
    calls = []

    def wrapped(text):
        calls.append(text)
        return solve(text)

    return wrapped, calls


def five_problems(tmp_path) -> Path:
    rows = [{"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(1, 6)]
    return write_jsonl(tmp_path / "in.jsonl", rows)


def test_resume_skips_ids_already_done(tmp_path):
    problems = read_problems(five_problems(tmp_path))
    output = tmp_path / "out.jsonl"
    batch(problems[:2], output)

    solve, calls = counting(arithmetic_solve)
    summary = batch(problems, output, solve)
    assert calls == ["What is 3 + 3?", "What is 4 + 4?", "What is 5 + 5?"]
    assert [r["id"] for r in read_records(output)] == ["p1", "p2", "p3", "p4", "p5"]
    # The summary covers the whole input, resumed records included.
    assert (summary.total, summary.done_now, summary.skipped, summary.graded, summary.correct) == (5, 3, 2, 5, 5)

    solve, calls = counting(arithmetic_solve)
    summary = batch(problems, output, solve)
    assert calls == [] and (summary.done_now, summary.skipped) == (0, 5)


def test_retry_errors_solves_again_only_the_problems_whose_record_is_an_error(tmp_path):
    problems = read_problems(five_problems(tmp_path))[:3]
    output = tmp_path / "out.jsonl"

    def failing_on_p2(text):
        if "2 + 2" in text:
            raise SpecsError("out of memory")
        return arithmetic_solve(text)

    batch(problems, output, failing_on_p2)
    solve, calls = counting(arithmetic_solve)
    assert batch(problems, output, solve).errors == 1 and calls == []  # an error record counts as done

    summary = batch(problems, output, solve, retry_errors=True)
    assert calls == ["What is 2 + 2?"]
    assert (summary.errors, summary.correct, summary.done_now, summary.skipped) == (0, 3, 1, 2)
    # The error stays on disk as history; the new record comes after it and is the one read back.
    assert [(r["id"], "error" in r) for r in read_records(output)] == [
        ("p1", False), ("p2", True), ("p3", False), ("p2", False)]
    with OutputLog(output) as log:
        assert "error" not in log.records["p2"] and log.records["p2"]["correct"] is True
    solve, calls = counting(arithmetic_solve)
    assert batch(problems, output, solve, retry_errors=True).done_now == 0 and calls == []


@pytest.mark.parametrize("torn", ['{"id": "p3", "problem": "What is 3', '{"id": "p3", "probl\n', "\x00\x00\x00"])
def test_torn_last_line_is_repaired_before_resuming(tmp_path, torn):
    problems = read_problems(five_problems(tmp_path))
    output = tmp_path / "out.jsonl"
    batch(problems[:2], output)
    with open(output, "a", encoding="utf-8") as file:
        file.write(torn)  # what a crash mid-write (or power loss) would leave

    with OutputLog(output) as log:
        assert log.repaired
        assert set(log.records) == {"p1", "p2"}
    assert [r["id"] for r in read_records(output)] == ["p1", "p2"]

    batch(problems, output)
    assert [r["id"] for r in read_records(output)] == ["p1", "p2", "p3", "p4", "p5"]


def test_an_intact_output_is_not_touched(tmp_path):
    problems = read_problems(five_problems(tmp_path))
    output = tmp_path / "out.jsonl"
    batch(problems[:2], output)
    before = output.read_bytes()
    with OutputLog(output) as log:
        assert not log.repaired
    assert output.read_bytes() == before


@pytest.mark.parametrize(
    "content, bad_line",
    [
        ("my notes\nmore notes\n", 1),
        ('{"id": "a", "method": "greedy"}\nmore notes\n', 2),
        ('{"id": "a", "method": "greedy"}\nlast note', 2),
        ("one note", 1),
        ('{"id": "a"}\n{"id": "b", "method": "greedy"}\n', 1),  # no "method": not one of ours
    ],
)
def test_an_output_that_is_not_a_record_file_is_refused_untouched(tmp_path, content, bad_line):
    output = tmp_path / "notes.jsonl"
    output.write_text(content)
    with pytest.raises(SpecsError, match=f"line {bad_line} is not a specs-local record"):
        OutputLog(output)
    assert output.read_text() == content


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"id": 7, "name": "config"}).encode(),  # what json.dump writes: one object, no final newline
        json.dumps({"model": "x", "n": 4}).encode(),
        json.dumps({"id": 7, "name": "config"}, indent=2).encode(),
        b"id,problem,answer\n1,What is 2+2?,4\n",
        b"id,problem,answer\n1,What is 2+2?,4",
        random.Random(0).randbytes(4096),
        random.Random(1).randbytes(4096).replace(b"\n", b""),  # one line of binary
        b"\x00" * 4096,
        b'{"broken',  # the start of a JSON object, but nothing says it is ours
    ],
)
def test_a_file_that_is_not_ours_is_refused_byte_identical(tmp_path, content):
    output = tmp_path / "data.json"
    output.write_bytes(content)
    with pytest.raises(SpecsError, match=r"line \d+ is not a specs-local record; choose another output file$"):
        OutputLog(output)
    assert output.read_bytes() == content


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
    problems = read_problems(five_problems(tmp_path))
    output = tmp_path / "out.jsonl"
    batch(problems[:1], output)
    output.write_bytes(output.read_bytes().rstrip(b"\n"))  # as json.dump or an editor would leave it
    before = output.read_bytes()
    with OutputLog(output) as log:
        assert not log.repaired and set(log.records) == {"p1"}
    assert output.read_bytes() == before
    batch(problems[:2], output)
    assert [r["id"] for r in read_records(output)] == ["p1", "p2"]  # the next record starts on its own line


def test_a_torn_first_record_is_repaired(tmp_path):
    output = tmp_path / "out.jsonl"
    output.write_bytes(b'{"id": "p1", "problem": "What is 1')  # a crash during the very first write
    with OutputLog(output) as log:
        assert log.repaired and log.records == {}
    assert output.read_bytes() == b""


def test_reading_a_log_changes_nothing_even_while_another_run_writes_it(tmp_path):
    """Training or a report reads a log that a collection or bench may still be
    writing: the records before a torn line, without the lock, the cut or a new file."""
    problems = read_problems(five_problems(tmp_path))
    output = tmp_path / "out.jsonl"
    batch(problems[:2], output)
    with open(output, "a", encoding="utf-8") as file:
        file.write('{"id": "p3", "problem": "What is 3')  # the writer is mid-line
    before = output.read_bytes()
    held = os.open(output, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the writing run holds it
        assert list(read_log(output)) == ["p1", "p2"]
    finally:
        os.close(held)
    assert output.read_bytes() == before
    assert read_log(tmp_path / "none.jsonl") == {} and not (tmp_path / "none.jsonl").exists()
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes\n")
    with pytest.raises(SpecsError, match="line 1 is not a specs-local record"):
        read_log(notes)


def test_two_runs_cannot_append_to_one_output(tmp_path):
    output = tmp_path / "out.jsonl"
    with OutputLog(output):
        with pytest.raises(SpecsError, match="being written by another run"):
            OutputLog(output)
    OutputLog(output).close()  # free again once the first run closed it


def test_keyboard_interrupt_keeps_finished_records_and_resumes(tmp_path):
    problems = read_problems(five_problems(tmp_path))
    output = tmp_path / "out.jsonl"

    def interrupted_at_third(text):
        if "3 + 3" in text:
            raise KeyboardInterrupt
        return arithmetic_solve(text)

    with pytest.raises(KeyboardInterrupt):
        batch(problems, output, interrupted_at_third)
    assert [r["id"] for r in read_records(output)] == ["p1", "p2"]

    summary = batch(problems, output)
    assert [r["id"] for r in read_records(output)] == ["p1", "p2", "p3", "p4", "p5"]
    assert summary.correct == 5


KILLED_BATCH = """
import sys, time
from specs_local.batch import run_batch
from specs_local.problems import read_problems

def solve(text):
    time.sleep(0.01)
    answer = str(sum(int(word) for word in text.split() if word.isdigit()))
    return {"answer": answer, "text": answer, "steps": [], "stats": {"wall_seconds": 0.01}}

run_batch(read_problems(sys.argv[1]), sys.argv[2], solve, method="sum", progress=False)
"""


def test_sigkill_mid_batch_leaves_whole_lines_and_a_rerun_completes(tmp_path):
    # No gold answers: grading is not under test here and would only slow it down.
    rows = [{"id": f"q{i}", "problem": f"Add {i} and 1"} for i in range(200)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-c", KILLED_BATCH, str(source), str(output)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    process = subprocess.Popen(command, cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not output.exists() or output.read_bytes().count(b"\n") < 30):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()

    killed = read_records(output)  # every line whole and valid JSON
    assert 30 <= len(killed) < 200, "the kill must land mid-batch"
    assert [r["id"] for r in killed] == [f"q{i}" for i in range(len(killed))]

    subprocess.run(command, cwd=REPO, env=env, check=True, timeout=120)
    records = read_records(output)
    assert sorted(r["id"] for r in records) == sorted(row["id"] for row in rows)  # exactly one record per id
    assert all(r["answer"] == str(int(r["id"][1:]) + 1) for r in records)


# ---------------------------------------------------------------- progress and summary


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_pipe_prints_one_plain_line_per_problem(tmp_path):
    problems = read_problems(five_problems(tmp_path))
    out = io.StringIO()
    batch(problems, tmp_path / "out.jsonl", progress=True, out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and "\r" not in out.getvalue()
    assert lines[0].startswith("1/5 | ") and lines[-1].startswith("5/5 | ")
    assert re.search(r"\| [\d.]+/min \| ETA \d+s \| acc 100\.0% \(5/5\) \| p5: correct$", lines[-1])


def test_progress_on_a_terminal_redraws_one_line(tmp_path):
    problems = read_problems(five_problems(tmp_path))
    out = Terminal()
    batch(problems, tmp_path / "out.jsonl", progress=True, out=out)
    text = out.getvalue()
    assert text.count("\r") == 5 and text.endswith("\n") and text.count("\n") == 1
    assert text.rstrip().rsplit("\r", 1)[-1].startswith("5/5 | ")


def test_progress_counts_resumed_records_toward_done_and_accuracy(tmp_path):
    problems = read_problems(five_problems(tmp_path))
    output = tmp_path / "out.jsonl"
    batch(problems[:3], output)
    out = io.StringIO()
    batch(problems, output, progress=True, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("4/5 | ") and "acc 100.0% (4/4)" in lines[0]


def test_progress_can_be_silenced(tmp_path):
    out = io.StringIO()
    batch(read_problems(five_problems(tmp_path)), tmp_path / "out.jsonl", progress=False, out=out)
    assert out.getvalue() == ""


def test_progress_line_without_gold_answers_has_no_accuracy():
    bar = Progress(10, out=io.StringIO())
    bar.advance({"id": "x", "answer": "1"})
    assert "acc" not in bar.line({"id": "x"}) and bar.line({"id": "x"}).startswith("1/10 | ")


def test_format_summary_reports_counts_accuracy_and_latency(tmp_path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "problem": "What is 2 + 3?", "answer": "5"},
            {"id": "b", "problem": "What is 4 * 2?", "answer": "9"},
            {"id": "c", "problem": "Prove it."},
            "{oops",
        ],
    )
    text = format_summary(batch(read_problems(source), tmp_path / "out.jsonl"))
    assert text.splitlines() == [
        "4 problems: 4 solved now, 0 already done, 2 errors",
        "accuracy 50.0% (1/2 graded)",
        "latency mean 0.30 s, median 0.30 s",
    ]


def test_progress_goes_to_the_current_stderr_by_default(tmp_path, capsys):
    run_batch(read_problems(five_problems(tmp_path)), tmp_path / "out.jsonl", arithmetic_solve, method="greedy")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines()[-1].startswith("5/5 | ")
