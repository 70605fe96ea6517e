"""Bounds on the work of checking one step, and the exception that marks a side or claim uncheckable."""
from __future__ import annotations

import time

CHECK_SECONDS = 0.25  # deadline for checking one step
MAX_STEP_CHARS = 8_000  # longer steps are not checked at all (a cut could split a number)
MAX_DIGITS = 100  # digits in one written number
MAX_BITS = 10_000  # bits in numerator + denominator of any intermediate result
MAX_DEPTH = 32  # nesting of brackets / signs / exponents / roots
MAX_SIDE_TOKENS = 256  # tokens in one side of an equality


class NotCheckable(Exception):
    """Internal: this side or claim cannot be checked (parse failure, bound, deadline)."""


def check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise NotCheckable("time limit")
