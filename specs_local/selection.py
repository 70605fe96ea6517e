"""Choosing one of several finished solutions by the target's own confidence.

A candidate is a finished solution (a best-of-n sample, a completed beam, a SPECS chain) with its
answer and what the target made of each of its tokens (``Sequence.token_scores``). Its scores,
each larger for a more confident solution:

- ``logprob``: the target's mean log-prob per token over the whole solution;
- ``certainty``: self-certainty, the mean KL of the target's token distribution from uniform
  (arXiv 2502.18581);
- ``window``: the lowest mean token confidence over a sliding window of tokens, DeepConf's
  "lowest group confidence" (arXiv 2508.15260);
- ``reward``: the reward of the last step (the probe at the solution's end, on the small preset).

Agreement (:func:`agreed`) lets best-of-n stop drawing samples once its answer is settled
(``SearchConfig.consensus``, DeepConf's adaptive sampling).

A calculator veto (a step asserting a false equality) and an unfinished solution (cut at a token
limit, or stopped for low confidence) take a candidate out of the choice, unless nothing is left.

Rules (``SearchConfig.select``): a score's name takes the candidate of the highest score;
``majority`` the most frequent answer; ``vote-<score>`` the answer whose candidates weigh most,
each weighing ``exp((score - best) / T)`` with T from :data:`VOTE_TEMPERATURE` (CISC,
arXiv 2502.06233). Records keep every candidate's answer and scores (:func:`candidate_record`),
so every rule can be recomputed from one run (scripts/selection_rules.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .answers import normalize_answer

SCORES = ("logprob", "certainty", "window", "reward")
RULES = ("majority", *SCORES, *(f"vote-{score}" for score in SCORES))
WINDOW_TOKENS = 32  # DeepConf groups 2,048 tokens of long traces; a GSM8K solution has ~150-300
# The spread of a score that counts as decisive in a vote: exp(10 x mean log-prob) for the
# log-prob (the table); the others in units of their own typical spread between
# samples of one problem.
VOTE_TEMPERATURE = {"logprob": 0.1, "certainty": 0.1, "window": 0.5, "reward": 0.1}


@dataclass
class Candidate:
    """One finished solution, as the selector sees it."""
    answer: str | None
    scores: dict[str, float]
    ended: bool = True  # ended its turn (not cut at a token limit, not stopped early)
    vetoed: bool = False  # a step asserts a false equality
    tokens: int = 0
    confidence: list[float] = field(default_factory=list)  # per token, kept in traced records only
    text: str = ""  # the solution (the server returns it as a choice), kept in traced records only


def lowest_window(confidence: np.ndarray, window: int = WINDOW_TOKENS) -> float:
    """The lowest mean of ``window`` consecutive token confidences (the mean of all, when fewer)."""
    confidence = np.asarray(confidence, dtype=float)
    if len(confidence) == 0:
        return float("nan")
    if len(confidence) <= window:
        return float(confidence.mean())
    sums = np.convolve(confidence, np.ones(window), mode="valid")
    return float(sums.min() / window)


def solution_scores(token_scores: np.ndarray, reward: float | None = None, window: int = WINDOW_TOKENS
                    ) -> dict[str, float]:
    """The scores of one solution from its tokens' (log-prob, self-certainty, confidence) rows."""
    rows = np.asarray(token_scores, dtype=float).reshape(-1, 3)
    empty = len(rows) == 0
    return {"logprob": float("nan") if empty else float(rows[:, 0].mean()),
            "certainty": float("nan") if empty else float(rows[:, 1].mean()),
            "window": lowest_window(rows[:, 2], window),
            "reward": float("nan") if reward is None else float(reward)}


def is_vetoed(steps: list[str]) -> bool:
    """Whether any step asserts an arithmetic equality the calculator finds false."""
    from .calculator import REWARD_FALSE, check_step

    return any(check_step(step) == REWARD_FALSE for step in steps)


def _counting(veto: bool) -> tuple:
    """What makes a candidate count, in the order ``eligible`` gives it up: it ended, it is not
    vetoed, it has an answer."""
    return (lambda c: c.ended, lambda c: not (veto and c.vetoed), lambda c: c.answer is not None)


def eligible(candidates: list[Candidate], veto: bool = True) -> list[int]:
    """The candidates a rule may choose: those that count; each condition dropped in turn (the
    answer last) when it would leave none."""
    pool = list(range(len(candidates)))
    for keep in _counting(veto):
        narrowed = [i for i in pool if keep(candidates[i])]
        pool = narrowed or pool
    return pool


def agreed(candidates: list[Candidate], votes: int, veto: bool = True) -> bool:
    """Whether ``votes`` candidates that count (ended, not vetoed, with an answer) give one answer."""
    counting, counts = _counting(veto), {}
    for c in candidates:
        if all(keep(c) for keep in counting):
            key = normalize_answer(c.answer)
            counts[key] = counts.get(key, 0) + 1
    return max(counts.values(), default=0) >= votes


def _score(candidate: Candidate, name: str) -> float:
    value = candidate.scores.get(name, float("nan"))
    return float("-inf") if value is None or np.isnan(value) else float(value)


def choose(candidates: list[Candidate], rule: str, *, veto: bool = True) -> int:
    """The index of the candidate ``rule`` chooses. Ties go to the earlier candidate."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; one of {', '.join(RULES)}")
    if not candidates:
        raise ValueError("no candidates to choose from")
    pool = eligible(candidates, veto)
    if rule in SCORES:
        return max(pool, key=lambda i: (_score(candidates[i], rule), -i))
    score = rule.removeprefix("vote-") if rule != "majority" else "logprob"
    keys = {i: normalize_answer(candidates[i].answer) for i in pool}
    values = np.array([_score(candidates[i], score) for i in pool])
    finite = values[np.isfinite(values)]
    best = finite.max() if len(finite) else 0.0
    weights = {i: 1.0 if rule == "majority" else float(np.exp((v - best) / VOTE_TEMPERATURE[score]))
               if np.isfinite(v) else 0.0 for i, v in zip(pool, values)}
    totals: dict[str, float] = {}
    for i in pool:
        if keys[i] is not None:
            totals[keys[i]] = totals.get(keys[i], 0.0) + weights[i]
    if not totals:
        return max(pool, key=lambda i: (_score(candidates[i], "logprob"), -i))
    # The heaviest answer; between equal weights, the one whose best candidate scores higher.
    winner = max(totals, key=lambda key: (totals[key], max(_score(candidates[i], score) for i in pool
                                                           if keys[i] == key)))
    return max((i for i in pool if keys[i] == winner), key=lambda i: (_score(candidates[i], score), -i))


def candidate_record(candidate: Candidate) -> dict:
    """What a result keeps of a candidate: enough to recompute every rule (and, in
    ``confidence``, its tokens' confidence, which only traced records keep: early stopping)."""
    record = {"answer": candidate.answer, "ended": candidate.ended, "vetoed": candidate.vetoed,
              "tokens": candidate.tokens,
              # unrounded: a rule recomputed from the record must see the ties and orders the search saw
              "scores": {k: None if v is None or np.isnan(v) else float(v) for k, v in candidate.scores.items()}}
    if candidate.confidence:
        record["confidence"] = [round(float(c), 3) for c in candidate.confidence]
    if candidate.text:
        record["text"] = candidate.text
    return record


def from_record(record: dict) -> Candidate:
    scores = {k: float("nan") if v is None else v for k, v in record["scores"].items()}
    return Candidate(record["answer"], scores, record.get("ended", True), record.get("vetoed", False),
                     record.get("tokens", 0), record.get("confidence", []), record.get("text", ""))


def selection_extra(candidates: list[Candidate], rule: str, chosen: int, veto: bool) -> dict:
    """The ``extra`` a result carries about its choice: the rule, the choice, every candidate."""
    return {"select": rule, "veto": veto, "chosen": chosen, "candidates": [candidate_record(c) for c in candidates]}


def selection_summary(extra: dict) -> dict | None:
    """A result's choice without the texts and per-token confidence: what every record keeps."""
    if "candidates" not in extra:
        return None
    return {"select": extra["select"], "veto": extra["veto"], "chosen": extra["chosen"],
            "candidates": [{k: v for k, v in c.items() if k not in ("confidence", "text")} for c in extra["candidates"]]}
