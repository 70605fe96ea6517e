"""Claim finding: the two sides of each equality a step asserts.

The context checks around a side keep extraction conservative: a side that may be an operand of
a longer verbal expression, or whose units do not match, is skipped rather than guessed."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .checking import contains_percent, evaluate_tree
from .lexer import Tok
from .limits import MAX_SIDE_TOKENS, NotCheckable, check_deadline
from .parser import Parser, render
from .results import Claim
from .words import (FRACTION_WORDS_AFTER_AND, QUANTITY_BEFORE_OF, RISKY_BEFORE, SCALING_VERBS, UNIT_DIMENSION,
                    ends_operand)

SIDE_KINDS = {"num", "op", "lp", "rp", "frac", "sqrt", "var", "unit", "cur"}


@dataclass(frozen=True)
class _Side:
    tree: Any  # numbers carry the unit written with them: ("num", value, decimals, unit)
    bare: bool  # one number, maybe signed / with units: nothing computed
    number_span: tuple[int, int] | None


def parse_side(toks: list[Tok], deadline: float) -> _Side | None:
    if not toks or len(toks) > MAX_SIDE_TOKENS or any(t.kind == "var" for t in toks):
        return None
    core, units = _without_units(toks)
    try:
        tree = Parser(core, units, deadline).parse()
    except NotCheckable:
        return None
    number = _bare_number(tree)
    nums = [t for t in core if t.kind == "num"]
    span = (nums[0].start, nums[0].end) if number is not None and len(nums) == 1 else None
    return _Side(tree, number is not None, span)


def _without_units(toks: list[Tok]) -> tuple[list[Tok], dict[int, str]]:
    """The arithmetic of a side (units, currency and unit powers like cm^2 removed) and the
    unit written with each number, keyed by id of its token."""
    core: list[Tok] = []
    units: dict[int, str] = {}
    currency = None
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.kind in ("unit", "cur"):
            if tok.kind == "cur":
                currency = tok.text
            elif tok.text and core and core[-1].kind == "num":
                units.setdefault(id(core[-1]), tok.text)
            powered = i + 2 < len(toks) and toks[i + 1].text == "^" and toks[i + 2].kind == "num"
            i += 3 if powered else 1
            continue
        if tok.kind == "num" and currency is not None:
            units[id(tok)] = currency
        currency = None if tok.kind == "num" else currency
        core.append(tok)
        i += 1
    return core, units


def _bare_number(tree) -> tuple | None:
    while tree[0] in ("neg", "pct"):
        tree = tree[1]
    return tree if tree[0] == "num" else None


def _side_bound(toks: list[Tok], i: int, step: int) -> int:
    """Index of the token that ends the side next to the relation at i (step -1: left, +1: right).

    A unit followed by another operand ends the side: in "His next 2 buy 2 * 2", "buy" is prose."""
    j = i + step
    while 0 <= j < len(toks) and toks[j].kind in SIDE_KINDS:
        tok = toks[j]
        if tok.kind == "unit" and tok.text and 0 < j < len(toks) - 1 and toks[j - 1].kind != "op" \
                and toks[j + 1].kind in ("num", "lp", "cur", "frac", "sqrt"):
            return j if step < 0 else j + 1
        j += step
    return j


def _left_context_ok(toks: list[Tok], lo: int, side: _Side, relation: Tok) -> bool:
    """Is the left side a whole operand, not the tail of a verbal expression?"""
    stop = toks[lo] if lo >= 0 else None
    first = toks[lo + 1]
    if first.kind == "op":
        if first.text not in "+-":
            return False
        glued_to_operand = lo + 2 < len(toks) and not toks[lo + 2].space
        separated = first.space or stop is None or stop.kind in ("sep", "eq", "approx")
        if not (glued_to_operand and separated):
            return False  # "a - 3 + 4": the minus is binary and its left operand was cut off
    if side.bare and (_unit_of(side.tree) or relation.text == "equals"):
        return False  # "15 minutes = 15/60 hours", "66 cookies are equal to 66/12": conversions
    if stop is None or stop.kind not in ("word", "unit"):
        return True
    before = toks[lo - 1] if lo >= 1 else None
    if side.bare or stop.text in RISKY_BEFORE:
        return False  # "half of 80 = 40", "dividing 40 by 5 = 8", "twice 12 + 3 = 27"
    if before is not None and before.kind == "op":
        return False  # an operator before the words: the expression began earlier
    if stop.text == "by" and before is not None and before.text in SCALING_VERBS:
        return False  # "the total divided by 2 * 3 = 6"
    if stop.text == "and" and ends_operand(before):
        return False  # "the sum of 3 and 4 + 5 = 12"
    if stop.text == "of" and before is not None and (
            before.kind != "word" or before.text in QUANTITY_BEFORE_OF or re.search(r"ths?$", before.text)):
        return False  # "a third of 60 + 3", "50% of 80 - 20"
    return True


def _right_context_ok(toks: list[Tok], hi: int) -> bool:
    """Reject a right side that continues in words: "= 1 and a half", "= 3 point 5"."""
    last = toks[hi - 1]
    if last.kind == "op" and last.text != "%":
        return False
    if hi < len(toks) and toks[hi].text == "?":
        return False  # "3 + 4 = 8? No, ..." asks rather than asserts
    if hi >= len(toks) or toks[hi].kind != "word":
        return True
    word = toks[hi].text
    if word == "point":
        return False
    if word == "and" and hi + 1 < len(toks):
        nxt = toks[hi + 1]
        if nxt.text in FRACTION_WORDS_AFTER_AND:
            return False
        if nxt.kind == "num" and hi + 2 < len(toks) and toks[hi + 2].text == "/":
            return False
    return True


def _unit_of(tree) -> str | None:
    """The unit a (sub)expression is counted in, as far as its written numbers tell."""
    kind = tree[0]
    if kind == "num":
        return tree[3]
    if kind in ("neg", "pct", "sqrt"):
        return _unit_of(tree[1])
    if kind == "pow":
        return None
    return _unit_of(tree[1]) or _unit_of(tree[2])


def _leaf_units(tree) -> set[str]:
    if tree[0] == "num":
        return {tree[3]} if tree[3] else set()
    return set().union(*(_leaf_units(t) for t in tree[1:] if isinstance(t, tuple)))


def _same_dimension_clash(a: str | None, b: str | None) -> bool:
    dim = UNIT_DIMENSION.get(a)
    return dim is not None and a != b and UNIT_DIMENSION.get(b) == dim


def _adds_different_units(tree) -> bool:
    """ "2 hours + 30 minutes": a sum of amounts in different units of one dimension."""
    if tree[0] in ("add", "sub") and _same_dimension_clash(_unit_of(tree[1]), _unit_of(tree[2])):
        return True
    return any(_adds_different_units(t) for t in tree[1:] if isinstance(t, tuple))


def _units_conflict(left: _Side, right: _Side) -> bool:
    """Unit conversions hide a factor ("50 cents * 4 = $2"): such claims are not compared."""
    if _adds_different_units(left.tree) or _adds_different_units(right.tree):
        return True
    for bare, other in ((left, right), (right, left)):
        unit = _unit_of(bare.tree) if bare.bare else None
        dim = UNIT_DIMENSION.get(unit)
        related = {u for u in _leaf_units(other.tree) if UNIT_DIMENSION.get(u) == dim}
        if dim is not None and related and unit not in related:
            return True
    return False


def _is_proper_fraction(tree) -> bool:
    return tree[0] == "div" and tree[1][0] == "num" and tree[2][0] == "num" \
        and tree[1][2] == tree[2][2] == 0 and 0 < tree[1][1] < tree[2][1]


def _only_percentages(tree) -> bool:
    if tree[0] == "pct":
        return True
    return tree[0] in ("add", "sub", "neg") and all(_only_percentages(t) for t in tree[1:])


def _part_of_whole(left: _Side, right: _Side, deadline: float) -> bool:
    """ "2/5 = 12.8 hectares" or "48 = 120%" state what a share of some whole amounts to: a share
    (a proper fraction, or only percentages) said to equal an amount above 1."""
    for share, amount in ((left, right), (right, left)):
        percentages = _only_percentages(share.tree) and amount.bare and not contains_percent(amount.tree)
        if percentages or _is_proper_fraction(share.tree):
            try:
                if evaluate_tree(amount.tree, True, deadline) > 1:
                    return True
            except NotCheckable:
                return True
    return False


def claims_in_tokens(toks: list[Tok], deadline: float) -> list[Claim]:
    claims: list[Claim] = []
    sides: dict[tuple[int, int], _Side | None] = {}

    def side_at(a: int, b: int) -> _Side | None:
        if (a, b) not in sides:
            sides[(a, b)] = parse_side(toks[a:b], deadline)
        return sides[(a, b)]

    for i, tok in enumerate(toks):
        if tok.kind not in ("eq", "approx"):
            continue
        check_deadline(deadline)
        lo, hi = _side_bound(toks, i, -1), _side_bound(toks, i, +1)
        if lo + 1 >= i or hi <= i + 1:
            continue
        left, right = side_at(lo + 1, i), side_at(i + 1, hi)
        if left is None or right is None or (left.bare and right.bare):
            continue
        if not _left_context_ok(toks, lo, left, tok) or not _right_context_ok(toks, hi):
            continue
        if _units_conflict(left, right) or _part_of_whole(left, right, deadline):
            continue
        claims.append(Claim(render(left.tree), render(right.tree), tok.kind == "approx",
                            left.tree, right.tree, right.number_span))
    return claims
