"""Calculator-checked steps: find the arithmetic equalities a step asserts and check them exactly.

A step is untrusted model text, so nothing here uses `eval`. The text is split into tokens, each
side of an equality is parsed by a small recursive-descent parser into a whitelisted tree, and the
tree is computed with Fractions (floats only where a root is irrational). Every size is bounded
(input length, digits per number, bits per intermediate result, nesting depth, tokens per side)
and a deadline is checked as the work proceeds; anything over a bound or unparseable is "not
checkable", never an exception.

Extraction is conservative: flagging a correct step as wrong is worse than missing a claim, so a
side that touches a variable, an unknown command or an ambiguous word is skipped, not guessed.
"""
from __future__ import annotations

import time
from dataclasses import replace

from .checking import check_claim, evaluate_tree
from .claims import SIDE_KINDS, claims_in_tokens, parse_side
from .limits import CHECK_SECONDS, MAX_STEP_CHARS, NotCheckable
from .numerals import ANNOTATION, NUMERAL, Number, numeral_value, strip_annotations, thousands_separator
from .results import Claim, ClaimResult
from .words import tokenize

__all__ = ["NEUTRAL", "NUMERAL", "REWARD_FALSE", "REWARD_HOLDS", "Claim", "ClaimResult", "Number", "check_claims",
           "check_step", "evaluate", "extract_claims", "numeral_value", "strip_annotations", "thousands_separator"]

REWARD_HOLDS = 0.95  # every checkable equality in the step holds
REWARD_FALSE = 0.05  # at least one equality is false
NEUTRAL = 0.5  # nothing checkable and no fallback reward

# --------------------------------------------------------------------------------------------
# Public API


def _extract(step: str, deadline: float) -> list[Claim]:
    if not isinstance(step, str) or len(step) > MAX_STEP_CHARS:
        return []
    claims: list[Claim] = []
    try:
        claims.extend(claims_in_tokens(tokenize(strip_annotations(step), deadline), deadline))
        for note in ANNOTATION.finditer(step):
            # annotation claims index no visible text, so they carry no span
            found = claims_in_tokens(tokenize(note.group()[2:-2], deadline), deadline)
            claims.extend(replace(c, right_span=None) for c in found if c not in claims)
    except NotCheckable:
        pass  # deadline: keep what was found in time
    return claims


def extract_claims(step: str) -> list[Claim]:
    """Every checkable arithmetic equality the step asserts (visible text, then `<<...>>` notes)."""
    return _extract(step, time.monotonic() + CHECK_SECONDS)


def check_claims(step: str) -> list[ClaimResult]:
    """Each extracted claim with its verdict, all within one deadline for the step."""
    deadline = time.monotonic() + CHECK_SECONDS
    return [check_claim(claim, deadline) for claim in _extract(step, deadline)]


def check_step(step: str) -> float | None:
    """REWARD_FALSE if an equality is false, REWARD_HOLDS if all hold, None if none is checkable."""
    verdicts = [r.holds for r in check_claims(step) if r.holds is not None]
    if not verdicts:
        return None
    return REWARD_HOLDS if all(verdicts) else REWARD_FALSE


def evaluate(expression: str, *, percent_as_ratio: bool = True) -> Number | None:
    """Value of one arithmetic expression (plain or LaTeX), or None when it is not checkable."""
    if not isinstance(expression, str) or len(expression) > MAX_STEP_CHARS:
        return None
    deadline = time.monotonic() + CHECK_SECONDS
    try:
        toks = tokenize(expression, deadline)
        side = parse_side(toks, deadline) if all(t.kind in SIDE_KINDS for t in toks) else None
        return None if side is None else evaluate_tree(side.tree, percent_as_ratio, deadline)
    except NotCheckable:
        return None
