"""Parser: one side's tokens to a tree of ("num", value, decimals, unit) / ("neg", a) / ("pct", a) /
("sqrt", a) / ("add"|"sub"|"mul"|"div"|"pow", a, b), and a tree rendered back as plain arithmetic."""
from __future__ import annotations

from fractions import Fraction

from .lexer import CLOSE, Tok
from .limits import MAX_DEPTH, NotCheckable, check_deadline

_BINARY = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


class Parser:
    def __init__(self, toks: list[Tok], units: dict[int, str], deadline: float):
        self.toks = toks
        self.units = units
        self.i = 0
        self.deadline = deadline

    def parse(self):
        tree = self.expr(0)
        if self.i != len(self.toks):
            raise NotCheckable("trailing tokens")
        return tree

    def peek(self) -> Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Tok:
        tok = self.peek()
        if tok is None:
            raise NotCheckable("unexpected end")
        self.i += 1
        return tok

    def is_op(self, symbols: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "op" and tok.text in symbols

    def expr(self, depth: int):
        tree = self.term(depth)
        while self.is_op("+-"):
            op = _BINARY[self.take().text]
            tree = (op, tree, self.term(depth))
        return tree

    def term(self, depth: int):
        tree = self.unary(depth)
        while True:
            tok = self.peek()
            if self.is_op("*/"):
                op = _BINARY[self.take().text]
                tree = (op, tree, self.unary(depth))
            elif tok is not None and tok.kind in ("lp", "sqrt") and not tok.space \
                    and self.toks[self.i - 1].kind in ("num", "rp"):
                tree = ("mul", tree, self.power(depth))  # 2(3+4), (2)(3), 2\sqrt{3}
            else:
                return tree

    def unary(self, depth: int):
        if self.is_op("+-"):
            sign = self.take().text
            inner = self.unary(self.deeper(depth))
            return ("neg", inner) if sign == "-" else inner
        return self.power(depth)

    def power(self, depth: int):
        base = self.postfix(depth)
        if self.is_op("^"):
            self.take()
            return ("pow", base, self.unary(self.deeper(depth)))
        return base

    def postfix(self, depth: int):
        tree = self.atom(depth)
        while self.is_op("%"):
            self.take()
            tree = ("pct", tree)
        return tree

    def atom(self, depth: int):
        check_deadline(self.deadline)
        tok = self.take()
        if tok.kind == "num":
            nxt = self.peek()
            if nxt is not None and nxt.kind == "frac" and not nxt.space:
                raise NotCheckable("2\\frac12 may be a mixed number")
            return ("num", tok.value, tok.decimals, self.units.get(id(tok)))
        if tok.kind == "lp":
            return self.group_rest(tok, depth)
        if tok.kind == "frac":
            return ("div", self.group(depth), self.group(depth))
        if tok.kind == "sqrt":
            nxt = self.peek()
            if nxt is not None and nxt.kind == "lp" and nxt.text == "[":
                raise NotCheckable("n-th root")
            if nxt is not None and nxt.kind == "lp":
                return ("sqrt", self.group(depth))
            return ("sqrt", self.postfix(self.deeper(depth)))  # √16
        raise NotCheckable(f"unexpected {tok.kind}")

    def group(self, depth: int):
        tok = self.take()
        if tok.kind != "lp":
            raise NotCheckable("expected a group")
        return self.group_rest(tok, depth)

    def group_rest(self, opening: Tok, depth: int):
        inner = self.expr(self.deeper(depth))
        closing = self.take()
        if closing.kind != "rp" or closing.text != CLOSE[opening.text]:
            raise NotCheckable("unbalanced brackets")
        return inner

    @staticmethod
    def deeper(depth: int) -> int:
        if depth >= MAX_DEPTH:
            raise NotCheckable("nested too deeply")
        return depth + 1


_PRECEDENCE = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3, "pow": 4, "pct": 5, "sqrt": 6, "num": 6}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "^"}


def render(tree) -> str:
    """Plain arithmetic text of a tree, with only the brackets precedence needs."""
    kind = tree[0]
    if kind == "num":
        return _format_number(tree[1], tree[2])
    if kind == "sqrt":
        return f"sqrt({render(tree[1])})"
    if kind == "neg":
        return "-" + _wrap(tree[1], 3, strict=True)
    if kind == "pct":
        return _wrap(tree[1], 5, strict=True) + "%"
    prec = _PRECEDENCE[kind]
    if kind == "pow":
        return _wrap(tree[1], prec, strict=True) + "^" + _wrap(tree[2], prec, strict=False)
    right = f"({render(tree[2])})" if tree[2][0] == "neg" else _wrap(tree[2], prec, strict=kind in ("sub", "div"))
    return _wrap(tree[1], prec, strict=False) + _SYMBOL[kind] + right


def _wrap(tree, prec: int, *, strict: bool) -> str:
    inner = _PRECEDENCE[tree[0]]
    text = render(tree)
    return f"({text})" if inner < prec or (strict and inner == prec) else text


def _format_number(value: Fraction, decimals: int) -> str:
    if decimals == 0:
        return str(value.numerator)
    digits = str((value * 10**decimals).numerator).rjust(decimals + 1, "0")
    return f"{digits[:-decimals]}.{digits[-decimals:]}"
