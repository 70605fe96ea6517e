"""Final answers: pull the boxed answer out of a solution, grade it against a gold
answer, and vote among several solutions' answers.

Grading uses math-verify, which times out with SIGALRM: call `grade` from the main
thread, or through `grade_many`, which uses worker processes (never threads).
"""

from __future__ import annotations

import multiprocessing
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence

# `\boxed` or `\fbox`, but not a longer command such as `\boxedfoo`.
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# `\boxed 5`: the argument is the next run of characters up to whitespace or `$`.
_BARE_ARGUMENT = re.compile(r"\s+([^\s$]+)")

# Below this many pairs, starting worker processes (each imports sympy, ~2 s) costs
# more than grading in place (~30 ms a pair).
POOL_THRESHOLD = 200


def _braced_argument(text: str, start: int) -> tuple[str, int] | None:
    """The content of the `{...}` group opening at text[start], and the index after it.

    None when the group never closes.
    """
    depth = 0
    for index in range(start, len(text)):
        # Escaped braces `\{ \}` count too: in a well-formed answer they come in pairs.
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : index], index + 1
    return None


def _box_argument(text: str, after_command: int) -> tuple[str, int] | None:
    """The argument of a box command ending at `after_command`, and the index after it."""
    rest = text[after_command:].lstrip(" ")
    start = len(text) - len(rest)
    if rest.startswith("{"):
        return _braced_argument(text, start)
    bare = _BARE_ARGUMENT.match(text, after_command)
    if bare:
        return bare.group(1), bare.end()
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\boxed x`, `\\fbox{...}`) in `text`.

    Boxes nested inside a box belong to it: the last outermost box wins. None when
    there is no box, or when the last one never closes (a truncated generation).
    """
    answer = None
    position = 0
    while (command := _BOX_COMMAND.search(text, position)) is not None:
        argument = _box_argument(text, command.end())
        if argument is None:
            return None
        answer, position = argument
    return answer.strip() if answer is not None else None


def _parse_first(candidates: Sequence[str], timeout_s: int) -> list:
    """The parse of the first candidate string that math-verify can read; [] if none."""
    from math_verify import parse  # imported here: it pulls in sympy (~1.5 s), which `solve` never needs

    for candidate in candidates:
        parsed = parse(candidate, parsing_timeout=timeout_s)
        if parsed:
            return parsed
    return []


def grade(pred: str | None, gold: str, timeout_s: int = 5) -> bool:
    """Whether `pred` is mathematically equal to `gold` (math-verify).

    `timeout_s` is whole seconds, per parse and for the comparison. Any failure
    (unparsable input, timeout, sympy error) grades as False. Raises RuntimeError
    only when called off the main thread, where SIGALRM timeouts cannot work.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("grade() uses SIGALRM: call it from the main thread or use grade_many")
    if pred is None or not str(pred).strip():
        return False
    pred, gold = str(pred), str(gold)
    from math_verify import verify  # lazy like parse; outside the try so a missing package is loud

    try:
        gold_parsed = _parse_first([f"${gold}$", f"\\boxed{{{gold}}}"], timeout_s)
        pred_parsed = _parse_first([f"\\boxed{{{pred}}}", f"${pred}$"], timeout_s)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))
    except Exception:  # math-verify and sympy raise many types; a grade is only ever True/False
        return False


def _grade_pair(pair: tuple[str | None, str]) -> bool:
    return grade(*pair)


def grade_many(pairs: Iterable[tuple[str | None, str]], processes: int | None = None) -> list[bool]:
    """Grade (pred, gold) pairs, in order.

    Few pairs are graded here (main thread); many go to a process pool of `processes`
    workers (default: one per CPU). The pool uses `spawn` so that workers never
    inherit a loaded model or its threads.
    """
    pairs = list(pairs)
    if len(pairs) < POOL_THRESHOLD or processes == 1:
        return [_grade_pair(pair) for pair in pairs]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        return pool.map(_grade_pair, pairs, chunksize=8)


def normalize_answer(answer: str | None) -> str | None:
    """A light canonical form so that votes group equal answers written differently."""
    if answer is None:
        return None
    a = answer.strip().strip("$").replace(" ", "").replace("\\left", "").replace("\\right", "")
    a = a.replace("\\!", "").replace("dfrac", "frac").rstrip(".")
    if a.replace(",", "").replace(".", "", 1).lstrip("-").isdigit():
        a = a.replace(",", "")
        if "." in a:
            a = a.rstrip("0").rstrip(".")
    return a


def votes(answers: list[str | None], rewards: Sequence[float]) -> dict[str, int]:
    """Indices chosen by best reward, by majority and by reward-weighted vote.
    Equal rewards go to the earlier index; a tie in count is broken by reward
    summed, a tie in reward summed by count."""
    rewards = [float(r) for r in rewards]
    keys = [normalize_answer(a) for a in answers]
    count: dict[str, int] = defaultdict(int)
    weight: dict[str, float] = defaultdict(float)
    for k, r in zip(keys, rewards):
        if k is not None:
            count[k] += 1
            weight[k] += r

    def best_with(key):  # the highest-reward solution giving this answer
        return max((i for i, k in enumerate(keys) if k == key), key=lambda i: rewards[i])

    best = max(range(len(rewards)), key=rewards.__getitem__)
    if not count:
        return {"best": best, "majority": best, "weighted": best}
    majority = max(count, key=lambda k: (count[k], weight[k]))
    weighted = max(weight, key=lambda k: (weight[k], count[k]))
    return {"best": best, "majority": best_with(majority), "weighted": best_with(weighted)}
