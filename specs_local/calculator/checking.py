"""Checking: a claim's trees computed exactly under bounds, and its sides compared allowing for rounding."""
from __future__ import annotations

import math
from fractions import Fraction

from .limits import MAX_BITS, NotCheckable, check_deadline
from .numerals import Number
from .results import Claim, ClaimResult


def _bounded(value: Number) -> Number:
    if isinstance(value, Fraction):
        if value.numerator.bit_length() + value.denominator.bit_length() > MAX_BITS:
            raise NotCheckable("number too large")
    elif not math.isfinite(value):
        raise NotCheckable("not finite")
    return value


def evaluate_tree(tree, ratio_percent: bool, deadline: float) -> Number:
    check_deadline(deadline)
    kind = tree[0]
    if kind == "num":
        return tree[1]
    a = evaluate_tree(tree[1], ratio_percent, deadline)
    if kind == "neg":
        return -a
    if kind == "pct":
        return a / 100 if ratio_percent else a
    if kind == "sqrt":
        return _bounded(_sqrt(a))
    b = evaluate_tree(tree[2], ratio_percent, deadline)
    try:
        if kind == "add":
            return _bounded(a + b)
        if kind == "sub":
            return _bounded(a - b)
        if kind == "mul":
            return _bounded(a * b)
        if kind == "div":
            return _bounded(a / b)
        return _bounded(_power(a, b))
    except (ZeroDivisionError, OverflowError, ValueError) as exc:
        raise NotCheckable(str(exc)) from None


def _as_float(value: Number) -> float:
    try:
        return float(value)
    except OverflowError:
        raise NotCheckable("too large for a float") from None


def _sqrt(value: Number) -> Number:
    if value < 0:
        raise NotCheckable("square root of a negative number")
    if isinstance(value, Fraction):
        num, den = math.isqrt(value.numerator), math.isqrt(value.denominator)
        if num * num == value.numerator and den * den == value.denominator:
            return Fraction(num, den)
    return math.sqrt(_as_float(value))


def _integer_root(value: int, n: int) -> int | None:
    if n == 2:
        root = math.isqrt(value)
        return root if root * root == value else None
    if value.bit_length() > 150:
        return None
    guess = round(value ** (1.0 / n))
    return next((c for c in (guess - 1, guess, guess + 1) if c >= 0 and c**n == value), None)


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, Fraction) and isinstance(exponent, Fraction):
        if exponent.denominator == 1:
            return _integer_power(base, exponent.numerator)
        if base >= 0 and exponent.denominator <= 12:
            num = _integer_root(base.numerator, exponent.denominator)
            den = _integer_root(base.denominator, exponent.denominator)
            if num is not None and den is not None:
                return _integer_power(Fraction(num, den), exponent.numerator)
    b, e = _as_float(base), _as_float(exponent)
    if b < 0 or (b == 0 and e <= 0):
        raise NotCheckable("power undefined in the reals")
    if b > 0 and abs(e * math.log(b)) > 700:
        raise NotCheckable("power too large")
    return b**e


def _integer_power(base: Fraction, exponent: int) -> Fraction:
    if base == 0 and exponent <= 0:
        raise NotCheckable("0 to a non-positive power")
    if exponent == 0:
        return Fraction(1)
    if base in (0, 1):
        return base
    if base == -1:
        return Fraction(-1 if exponent % 2 else 1)
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if abs(exponent) * size > MAX_BITS:
        raise NotCheckable("power too large")
    return base**exponent

# --------------------------------------------------------------------------------------------
# Comparison


def _equal(a: Number, b: Number) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    return math.isclose(_as_float(a), _as_float(b), rel_tol=1e-9, abs_tol=1e-12)


def _rounding(computed: Number, written_tree, ratio_percent: bool, slack: int = 1) -> bool | None:
    """Is `written_tree` one written number that `computed` was rounded to?

    True: the nearest value at the written precision or the truncated one (22/7 = 3.14,
    2/3 = 0.66), or, for an approximation (slack 2), anything less than 2 units off in the last
    place. None: a whole number within one of a fractional value (7/2 = 4 buses may round up on
    purpose), so the claim cannot be judged. False: anything else.
    """
    scale = Fraction(1)
    tree = written_tree
    while tree[0] in ("neg", "pct"):
        if tree[0] == "pct" and ratio_percent:
            scale /= 100
        tree = tree[1]
    if tree[0] != "num":
        return False
    unit = scale / 10 ** tree[2]  # one unit in the last written place
    target = computed / unit if isinstance(computed, Fraction) else _as_float(computed) / _as_float(unit)
    if isinstance(target, Fraction) and target.denominator == 1:
        return False  # exactly expressible at this precision: no rounding to excuse
    written = evaluate_tree(written_tree, ratio_percent, math.inf) / unit
    if slack > 1:
        return abs(target - written) < slack
    truncated = math.floor(target) if target >= 0 else math.ceil(target)
    if written in (math.floor(target + Fraction(1, 2)), math.ceil(target - Fraction(1, 2)), truncated):
        return None if tree[2] == 0 else True
    return None if tree[2] == 0 and abs(target - written) < 1 else False


def _leading_operand(tree):
    """The first number of a written computation: 13 in `13 - 4` (for run-on chains)."""
    if tree[0] not in ("add", "sub", "mul", "div"):
        return None
    while tree[0] in ("add", "sub", "mul", "div"):
        tree = tree[1]
    return tree if tree[0] == "num" else None


def _holds(claim: Claim, left: Number, right: Number, ratio_percent: bool) -> bool | None:
    """True if the claim holds, False if it is false, None if it cannot be judged."""
    if _equal(left, right):
        return True
    slack = 2 if claim.approx else 1
    verdicts = {_rounding(left, claim.right_tree, ratio_percent, slack),
                _rounding(right, claim.left_tree, ratio_percent, slack)}
    # A run-on chain "16 - 3 = 13 - 4 = 9" states 16 - 3 = 13 and then keeps computing.
    lead = _leading_operand(claim.right_tree)
    if lead is not None and (_equal(left, lead[1]) or (lead[2] > 0 and _rounding(left, lead, ratio_percent))):
        return True
    if True in verdicts:
        return True
    return None if None in verdicts else False


def contains_percent(tree) -> bool:
    return tree[0] == "pct" or any(isinstance(part, tuple) and contains_percent(part) for part in tree[1:])


def check_claim(claim: Claim, deadline: float) -> ClaimResult:
    # "1/5 = 20%" and "0.25 * 100 = 25%" are both written: a claim holds if either reading of %
    # does, and is false only if every reading that can be judged is false.
    uses_percent = contains_percent(claim.left_tree) or contains_percent(claim.right_tree)
    best = ClaimResult(claim, None)
    for ratio_percent in (True, False) if uses_percent else (True,):
        try:
            left = evaluate_tree(claim.left_tree, ratio_percent, deadline)
            right = evaluate_tree(claim.right_tree, ratio_percent, deadline)
            holds = _holds(claim, left, right, ratio_percent)
        except NotCheckable:
            continue
        result = ClaimResult(claim, holds, _safe_float(left), _safe_float(right))
        if holds:
            return result
        if best.left_value is None or holds is None:
            best = result
    return best


def _safe_float(value: Number) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
