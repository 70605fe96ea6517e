"""Lexer: step text to raw tokens (numbers, operators, brackets, words, LaTeX commands)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from .limits import check_deadline
from .numerals import NUMERAL_PATTERN

CLOSE = {"(": ")", "[": "]", "{": "}"}


@dataclass(slots=True)
class Tok:
    kind: str  # num op lp rp eq approx cur unit word var sep frac sqrt
    text: str
    start: int
    end: int
    space: bool  # whitespace right before it
    value: Fraction | None = None
    decimals: int = 0

_LEX = re.compile(
    rf"""
    (?P<compound>\d+-[A-Za-z]{{2,}}(?:-[A-Za-z]+)*)
  | (?P<num>{NUMERAL_PATTERN})
  | (?P<cmd>\\(?:[A-Za-z]+|.))
  | (?P<word>[A-Za-z]+(?:['’-][A-Za-z]+)*['’]?)
  | (?P<space>\s+)
  | (?P<stars>\*\*)
  | (?P<char>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_CHAR_OPS = {"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "·": "*", "⋅": "*", "∙": "*",
             "/": "/", "÷": "/", "^": "^", "%": "%"}
_CURRENCY = {"€": "euro", "£": "pound-sterling", "¥": "yen", "₹": "rupee", "¢": "cent"}
# Punctuation that only separates; any other symbol (@, |, _, π, ...) may be an operator we
# do not know, so it makes its side uncheckable.
_SEPARATOR_CHARS = set(",.;:?!\"'<>≤≥≠→⇒—…‘’“”«»#&")

_CMD_OPS = {"times": "*", "cdot": "*", "ast": "*", "div": "/", "%": "%"}
_CMD_IGNORE = {"left", "right", "bigl", "bigr", "big", "Big", "Bigl", "Bigr", "bigg", "Bigg",
               "biggl", "biggr", "Biggl", "Biggr", "displaystyle", "textstyle", "boxed", "limits", "!"}
_CMD_SPACES = {",", ";", ":", " ", "&"}
_CMD_TEXT = {"text", "textbf", "textit", "textrm", "textnormal", "mbox", "hbox", "mathrm",
             "mathbf", "mathit", "mathsf", "operatorname", "emph"}
_CMD_SKIP_GROUP = {"begin", "end", "label", "tag"}
_CMD_SEP = {"quad", "qquad", "le", "leq", "ge", "geq", "lt", "gt", "ne", "neq", "leqslant",
            "geqslant", "implies", "iff", "Rightarrow", "Longrightarrow", "rightarrow",
            "Leftarrow", "Leftrightarrow", "to", "therefore", "because", "newline", "hline",
            "(", ")", "[", "]", "colon", "mid"}
_CMD_FRAC = {"frac", "dfrac", "tfrac", "cfrac"}


def dollars_are_math(text: str) -> bool:
    """`$` delimits LaTeX math (MATH style) rather than marking dollars (GSM8K style)."""
    if re.search(r"\\[A-Za-z(\[]", text):
        return True
    return any(not re.match(r" ?\.?\d", text[m.end():m.end() + 3]) for m in re.finditer(r"\$", text))


def lex(text: str, math_mode: bool, deadline: float) -> list[Tok]:
    """Raw tokens of a step; LaTeX commands are mapped to the same kinds as plain symbols."""
    toks: list[Tok] = []
    braces: list[str] = []  # "group" for a real `{`, "text" for the group of \text{...}
    pending_text = False
    space = True
    # Inside LaTeX math ($...$, \[...\], environments) letters are variables, not prose.
    in_dollars = in_display = False
    environments = 0
    pos, n = 0, len(text)
    while pos < n:
        if len(toks) % 256 == 0:
            check_deadline(deadline)
        m = _LEX.match(text, pos)
        kind, lexeme = m.lastgroup, m.group()
        pos = m.end()
        before = len(toks)

        def add(kind_: str, text_: str, start=m.start(), end=m.end(), space_=space) -> None:
            toks.append(Tok(kind_, text_, start, end, space_))

        if kind == "space":
            # a newline ends a line of plain text; in LaTeX only a blank line ends a paragraph
            if "\n" in lexeme and (not math_mode or lexeme.count("\n") > 1):
                add("sep", "\n")
            space = True
            continue
        if pending_text and lexeme != "{":
            pending_text = False
        if kind == "num":
            add("num", lexeme)
        elif kind in ("word", "compound"):
            in_math = (in_dollars or in_display or environments > 0) and "text" not in braces
            add("var" if in_math else "word", lexeme.lower().replace("’", "'"))
        elif kind == "stars":
            add("op", "**")
        elif kind == "cmd":
            name = lexeme[1:]
            in_display = {"[": True, "(": True, "]": False, ")": False}.get(name, in_display)
            environments += {"begin": 1, "end": -1 if environments else 0}.get(name, 0)
            pos, pending_text = _lex_command(name, text, pos, add, pending_text)
        elif lexeme == "$" and math_mode:
            in_dollars = not in_dollars
            pos += text.startswith("$", pos)  # $$ opens or closes display math once
            add("sep", "$")
        elif lexeme == "{" and pending_text:
            braces.append("text")
            pending_text = False
        elif lexeme == "{":
            braces.append("group")
            add("lp", "{")
        elif lexeme == "}" and braces and braces[-1] == "text":
            braces.pop()
        elif lexeme == "}":
            if braces:
                braces.pop()
            add("rp", "}")
        else:
            _lex_char(lexeme, text, m.start(), add, math_mode)
        # Markup with no token of its own (\left, \text{) keeps the spacing seen before it;
        # thin spaces, alignment marks and text groups separate like whitespace.
        if len(toks) > before:
            space = False
        elif (kind == "cmd" and lexeme[1:] in _CMD_SPACES) or lexeme in ("{", "}", "&", "~"):
            space = True
    return toks


def _lex_command(name: str, text: str, pos: int, add, pending_text: bool) -> tuple[int, bool]:
    """Emit the token for one LaTeX command; returns the new position and the \\text flag."""
    if name in _CMD_OPS:
        add("op", _CMD_OPS[name])
    elif name in _CMD_IGNORE or name in _CMD_SPACES:
        pass
    elif name in _CMD_TEXT:
        return pos, True
    elif name in _CMD_SKIP_GROUP:
        close = text.find("}", pos) if text.startswith("{", pos) else -1
        add("sep", name)
        return (close + 1 if close >= 0 else pos), pending_text
    elif name == "\\":
        # `a &= b \\ &= c` continues the chain across the line break of an align block
        rest = text[pos:pos + 40].lstrip().lstrip("&").lstrip()
        if not rest.startswith("="):
            add("sep", name)
    elif name in _CMD_SEP:
        add("sep", name)
    elif name in _CMD_FRAC:
        add("frac", name)
    elif name == "sqrt":
        add("sqrt", name)
    elif name == "approx":
        add("approx", name)
    elif name == "$":
        add("cur", "dollar")
    else:
        add("var", name)  # \pi, \sum, \{, \dots, ...: makes its side uncheckable
    return pos, pending_text


def _lex_char(ch: str, text: str, at: int, add, math_mode: bool) -> None:
    before = text[at - 1] if at else " "
    after = text[at + 1] if at + 1 < len(text) else " "
    if ch in _CHAR_OPS:
        add("op", _CHAR_OPS[ch])
    elif ch in "([":
        add("lp", ch)
    elif ch in ")]":
        add("rp", ch)
    elif ch == "=":
        add("eq", ch)
    elif ch == "≈":
        add("approx", ch)
    elif ch == "$":
        add("sep" if math_mode else "cur", "dollar")
    elif ch in _CURRENCY:
        add("cur", _CURRENCY[ch])
    elif ch == "√":
        add("sqrt", ch)
    elif ch in "²³":
        add("op", "^")
        add("num", "2" if ch == "²" else "3")
    elif ch in ",:" and before.isdigit() and after.isdigit():
        add("var", ch)  # 10:30, 3,5 or (1,2): a clock, decimal comma or pair, not arithmetic
    elif ch in "!'\"" and (before.isdigit() or before == ")"):
        add("var", ch)  # factorial, feet, inches
    elif ch == "." and before.isdigit() and after == "\\":
        add("var", ch)  # 0.\overline{3}: a repeating decimal
    elif ch == "–":
        # "120 – 80": a minus typed as an en dash; "5–10" glued is a range
        spaced = before.isspace() and after.isspace()
        add("op" if spaced else "var", "-")
    elif ch in "&~" and math_mode:
        pass
    elif ch.isalpha():
        add("word", ch.lower())
    elif ch in _SEPARATOR_CHARS or ch.isspace():
        add("sep", ch)
    else:
        add("var", ch)
