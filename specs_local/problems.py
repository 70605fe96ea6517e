"""The input side of every run over many problems: a problem file read into Problems.

Below the front ends (batch, bench, value collect, the Ray workers), which all read
problems, so that none of them imports another to do it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from specs_local.errors import SpecsError


@dataclass(frozen=True)
class Problem:
    """One input problem. `error` is set when its input line could not be used."""

    id: str
    text: str | None
    gold: str | None = None
    line: int = 0
    error: str | None = None


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecsError(f"cannot read {path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise SpecsError(f"cannot read {path}: {error.strerror or error}") from None
    # Not splitlines(): it also splits on U+2028 and friends, which JSON strings may hold raw.
    return [line.rstrip("\r") for line in text.split("\n")]


def _is_jsonl(path: Path, lines: Sequence[str]) -> bool:
    if path.suffix.lower() in (".jsonl", ".json"):
        return True
    first = next((line.strip() for line in lines if line.strip()), "")
    return first.startswith("{")


def _jsonl_problem(line_no: int, line: str) -> Problem:
    """A JSONL line as a Problem; the id defaults to the line number."""
    default_id = str(line_no)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return Problem(default_id, None, line=line_no, error=f"line {line_no}: malformed JSON ({error.msg})")
    if not isinstance(record, dict):
        return Problem(default_id, None, line=line_no, error=f"line {line_no}: not a JSON object")
    problem_id = default_id if record.get("id") is None else str(record["id"])
    gold = record.get("answer")
    gold = None if gold is None or str(gold).strip() == "" else str(gold)
    text = record.get("problem")
    if not isinstance(text, str) or not text.strip():
        return Problem(problem_id, None, gold, line_no, f'line {line_no}: no "problem" text')
    return Problem(problem_id, text, gold, line_no)


def _refuse_duplicate_ids(problems: Iterable[Problem]) -> None:
    first_line: dict[str, int] = {}
    for problem in problems:
        if problem.id in first_line:
            raise SpecsError(f'duplicate id "{problem.id}" on lines {first_line[problem.id]} and {problem.line}')
        first_line[problem.id] = problem.line


def read_problems(path: str | os.PathLike) -> list[Problem]:
    """The problems in a JSONL file (`id`, `problem`, optional `answer`) or a plain text file.

    JSONL is chosen by the extension (.jsonl/.json) or a first non-blank line starting
    with `{`; otherwise each non-blank line is a problem. Ids default to the line
    number. Unusable JSONL lines come back as Problems with `error` set. Raises
    SpecsError for an unreadable or empty file, or duplicate ids.
    """
    path = Path(path)
    lines = _read_lines(path)
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if _is_jsonl(path, lines):
        problems = [_jsonl_problem(number, line) for number, line in numbered]
    else:
        problems = [Problem(str(number), line.strip(), line=number) for number, line in numbered]
    if not problems:
        raise SpecsError(f"{path} holds no problems")
    _refuse_duplicate_ids(problems)
    return problems
