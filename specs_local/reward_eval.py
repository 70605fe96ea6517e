"""Labelled steps for measuring reward quality, and the measurements.

Every gold solution step is a correct example. Its wrong twin changes one computed result (and
the later uses of that number within the step), so the error is the only difference. GSM8K
solutions mark their computed results with calculator annotations `<<48/2=24>>24`; MATH500
solutions are searched for a checkable equality whose right side is one number.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .calculator import (NUMERAL, check_claims, evaluate, numeral_value, strip_annotations,
                         thousands_separator)
from .errors import SpecsError

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


class RewardEvalError(SpecsError):
    """Bad input to the reward evaluation (missing data file, no pairs)."""


@dataclass(frozen=True)
class StepPair:
    id: str  # "<record id>#<step index>"
    source: str  # "gsm8k" or "math500"
    problem: str
    prefix_steps: list[str]  # the earlier gold steps, as the reward sees them
    correct: str
    wrong: str


# --------------------------------------------------------------------------------------------
# Wrong results


def _wrong_numeral(written: str, rng: random.Random, min_change: Fraction) -> str:
    """A plausible wrong value written like `written`: same decimals and separators."""
    decimals = len(written.partition(".")[2])
    ulp = Fraction(1, 10**decimals)
    value = numeral_value(written)
    for _ in range(50):
        candidate = _perturb(value, decimals, ulp, rng)
        if candidate >= 0 and abs(candidate - value) >= min_change:
            return _write_like(candidate, written, decimals)
    return _write_like(value + max(min_change, ulp) * 3, written, decimals)


def _perturb(value: Fraction, decimals: int, ulp: Fraction, rng: random.Random) -> Fraction:
    kind = rng.choice(("offset", "relative", "digit"))
    if kind == "offset":
        return value + rng.choice((-1, 1)) * rng.randint(1, 9) * ulp
    if kind == "relative":
        factor = Fraction(rng.choice((50, 75, 80, 90, 110, 120, 125, 150, 200)), 100)
        return Fraction(round(value * factor / ulp)) * ulp
    digits = list(str(int(value / ulp)))
    position = rng.randrange(len(digits))
    leading = position == 0 and len(digits) > 1
    digits[position] = rng.choice([d for d in "0123456789" if d != digits[position] and not (leading and d == "0")])
    return Fraction(int("".join(digits))) * ulp


def _write_like(value: Fraction, written: str, decimals: int) -> str:
    whole, fraction = divmod(int(value * 10**decimals), 10**decimals)
    separator = thousands_separator(written)
    text = f"{whole:,}".replace(",", separator) if separator else str(whole)
    if decimals:
        text += "." + str(fraction).rjust(decimals, "0")
        if written.startswith(".") and text.startswith("0."):
            text = text[1:]
    return text


def _same_numeral(written: str) -> re.Pattern:
    """`written` as a whole number: not part of a longer one (24 in 24, not in 124 or 2.45)."""
    return re.compile(rf"(?<![\d.,]){re.escape(written)}(?![\d]|[.,]\d)")


def _replace_result(step: str, start: int, end: int, wrong: str) -> str:
    """Write `wrong` over the numeral at [start, end) and over its later uses in the step."""
    later = _same_numeral(step[start:end]).sub(wrong, step[end:])
    return step[:start] + wrong + later


def _min_change(written: str, *, exact: bool, approx: bool = False) -> Fraction:
    """How far a wrong value must move so that no rounding can excuse it: the calculator lets a
    rounded result (10/3 = 3.33) be one unit off in its last place, an approximate one (≈) two."""
    ulp = Fraction(1, 10 ** len(written.partition(".")[2]))
    return ulp * (1 if exact else 3 if approx else 2)


# --------------------------------------------------------------------------------------------
# GSM8K


def _gsm8k_steps(solution: str) -> list[str]:
    return [line for line in solution.split("\n") if line.strip() and not line.startswith("####")]


def _gsm8k_twin(raw_step: str, rng: random.Random) -> tuple[str, str] | None:
    """(correct, wrong) visible texts for a step with a computed result, else None."""
    notes = [m for m in _ANNOTATION.finditer(raw_step) if re.search(r"\d\s*[-+*/]", m.group(1))]
    if not notes:
        return None
    note = rng.choice(notes)
    visible = strip_annotations(raw_step[:note.start()]) + strip_annotations(raw_step[note.end():])
    at = len(strip_annotations(raw_step[:note.start()]))
    numeral = NUMERAL.match(visible, at)
    if numeral is None:
        return None
    written = numeral.group()
    result = evaluate(note.group(2))
    if result is None or result != numeral_value(written):
        return None
    exact = evaluate(note.group(1)) == result
    wrong = _wrong_numeral(written, rng, _min_change(written, exact=exact))
    return visible, _replace_result(visible, numeral.start(), numeral.end(), wrong)


def _gsm8k_pairs(record: dict, seed: int) -> Iterator[StepPair]:
    rng = random.Random(f"{seed}:{record['id']}")
    raw_steps = _gsm8k_steps(record["solution"])
    visible_steps = [strip_annotations(s) for s in raw_steps]
    for index, raw_step in enumerate(raw_steps):
        twin = _gsm8k_twin(raw_step, rng)
        if twin is not None:
            yield StepPair(f"{record['id']}#{index}", "gsm8k", record["problem"],
                           visible_steps[:index], *twin)


# --------------------------------------------------------------------------------------------
# MATH500

_ASY = re.compile(r"\[asy\].*?\[/asy\]", re.DOTALL)
_MATH_OPEN = {"$$": "$$", "$": "$", "\\[": "\\]", "\\(": "\\)"}


def _math_steps(solution: str) -> list[str]:
    """Paragraphs split into sentences, never inside math ($...$, \\[...\\], environments)."""
    steps = []
    for paragraph in re.split(r"\n\s*\n", _ASY.sub("", solution)):
        steps.extend(s.strip() for s in _sentences(paragraph) if s.strip())
    return steps


def _sentences(paragraph: str) -> list[str]:
    pieces, start, i, closing, env_depth = [], 0, 0, None, 0
    while i < len(paragraph):
        if paragraph.startswith("\\begin{", i):
            env_depth += 1
        elif paragraph.startswith("\\end{", i):
            env_depth = max(0, env_depth - 1)
        if closing is not None:
            if paragraph.startswith(closing, i) and paragraph[i - 1] != "\\":
                ends_sentence = paragraph[:i].rstrip().endswith(".")  # "$r = 3.$  Also ..."
                i += len(closing)
                closing = None
                if ends_sentence and env_depth == 0 and _starts_sentence(paragraph, i):
                    pieces.append(paragraph[start:i])
                    start = i
                continue
        elif env_depth == 0:
            opener = next((o for o in _MATH_OPEN if paragraph.startswith(o, i)), None)
            if opener is not None and (i == 0 or paragraph[i - 1] != "\\"):
                closing = _MATH_OPEN[opener]
                i += len(opener)
                continue
            if paragraph[i] in ".?!" and _starts_sentence(paragraph, i + 1):
                pieces.append(paragraph[start:i + 1])
                start = i + 1
        i += 1
    pieces.append(paragraph[start:])
    return pieces


def _starts_sentence(text: str, at: int) -> bool:
    return re.match(r"\s+[A-Z$\\]", text[at:at + 12]) is not None


def _math_twin(step: str, rng: random.Random) -> str | None:
    """The step with one checkable numeric result changed, or None if it has none."""
    step = strip_annotations(step)  # claim spans index the visible text
    candidates = []
    for result in check_claims(step):
        span = result.claim.right_span
        if not result.holds or span is None:
            continue
        written = step[span[0]:span[1]]
        later = step[span[1]:]
        if _same_numeral(written).search(later):
            continue  # a later occurrence might be a use or a coincidence: skip the ambiguity
        exact = result.left_value == result.right_value
        candidates.append((span, written, _min_change(written, exact=exact, approx=result.claim.approx)))
    if not candidates:
        return None
    (start, end), written, min_change = rng.choice(candidates)
    wrong = _wrong_numeral(written, rng, min_change)
    return step[:start] + wrong + step[end:]


def _math500_pairs(record: dict, seed: int) -> Iterator[StepPair]:
    rng = random.Random(f"{seed}:{record['id']}")
    steps = _math_steps(record["solution"])
    for index, step in enumerate(steps):
        wrong = _math_twin(step, rng)
        if wrong is not None:
            yield StepPair(f"{record['id']}#{index}", "math500", record["problem"], steps[:index], step, wrong)


# --------------------------------------------------------------------------------------------
# Building the set


def _records(path: str | Path) -> Iterator[dict]:
    path = Path(path)
    if not path.is_file():
        raise RewardEvalError(f"data file not found: {path}")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise RewardEvalError(f"{path}:{number}: not a JSON line") from None
                if not {"id", "problem", "solution"} <= record.keys():
                    raise RewardEvalError(f"{path}:{number}: record needs id, problem and solution")
                yield record


def _take(pairs: Iterator[StepPair], limit: int | None) -> list[StepPair]:
    out = []
    for pair in pairs:
        if limit is not None and len(out) >= limit:
            break
        out.append(pair)
    return out


def build_pairs(gsm8k_path: str | Path | None, math500_path: str | Path | None = None, *, seed: int = 0,
                limit: int | None = None) -> list[StepPair]:
    """Correct/wrong step pairs in file order, GSM8K first; `limit` caps the pairs per source.
    A source whose path is None is left out.

    The seed picks the wrong values; each record draws from its own generator, so a pair does not
    depend on `limit` or on the other records.
    """
    pairs = []
    if gsm8k_path is not None:
        pairs += _take((p for r in _records(gsm8k_path) for p in _gsm8k_pairs(r, seed)), limit)
    if math500_path is not None:
        pairs += _take((p for r in _records(math500_path) for p in _math500_pairs(r, seed)), limit)
    return pairs


# --------------------------------------------------------------------------------------------
# Measuring a reward


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks start..end-1 (0-based) -> mean, 1-based
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """Probability that a positive outscores a negative (ties count half): Mann-Whitney U."""
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if len(pos) == 0 or len(neg) == 0:
        raise RewardEvalError("ROC AUC needs at least one example of each class")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def pairwise_accuracy(correct: list[float], wrong: list[float]) -> float:
    """Share of pairs where the correct twin scores strictly higher; ties count half."""
    c, w = np.asarray(correct, dtype=float), np.asarray(wrong, dtype=float)
    return float(np.mean((c > w) + 0.5 * (c == w)))


def evaluate_reward(reward, pairs: list[StepPair], *, batch: bool = True) -> dict:
    """ROC AUC, pairwise accuracy, mean reward per class and seconds per scored step."""
    if not pairs:
        raise RewardEvalError("no step pairs to evaluate")
    correct, wrong = [], []
    started = time.perf_counter()
    for pair in pairs:
        if batch:
            c, w = reward.score(pair.problem, pair.prefix_steps, [pair.correct, pair.wrong])
        else:
            (c,) = reward.score(pair.problem, pair.prefix_steps, [pair.correct])
            (w,) = reward.score(pair.problem, pair.prefix_steps, [pair.wrong])
        correct.append(float(c))
        wrong.append(float(w))
    elapsed = time.perf_counter() - started
    return {
        "reward": getattr(reward, "name", type(reward).__name__),
        "n_pairs": len(pairs),
        "auc": roc_auc(correct, wrong),
        "pairwise_accuracy": pairwise_accuracy(correct, wrong),
        "mean_correct": float(np.mean(correct)),
        "mean_wrong": float(np.mean(wrong)),
        "seconds_per_step": elapsed / (2 * len(pairs)),
    }


_COLUMNS = (("reward", "reward", "{}"), ("n_pairs", "pairs", "{}"), ("auc", "ROC AUC", "{:.3f}"),
            ("pairwise_accuracy", "pairwise acc.", "{:.3f}"), ("mean_correct", "mean (correct)", "{:.3f}"),
            ("mean_wrong", "mean (wrong)", "{:.3f}"), ("seconds_per_step", "s / step", "{:.4f}"))


def format_table(rows: list[dict]) -> str:
    """Markdown table, one row per reward kind (rows as returned by evaluate_reward)."""
    header = "| " + " | ".join(title for _, title, _ in _COLUMNS) + " |"
    rule = "|" + "|".join("---" if key == "reward" else "---:" for key, _, _ in _COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        cells = [fmt.format(row[key]) if key in row else "" for key, _, fmt in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
