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

import math
import re
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any


REWARD_HOLDS = 0.95  # every checkable equality in the step holds
REWARD_FALSE = 0.05  # at least one equality is false
NEUTRAL = 0.5  # nothing checkable and no fallback reward

CHECK_SECONDS = 0.25  # deadline for checking one step
MAX_STEP_CHARS = 8_000  # longer steps are not checked at all (a cut could split a number)
MAX_DIGITS = 100  # digits in one written number
MAX_BITS = 10_000  # bits in numerator + denominator of any intermediate result
MAX_DEPTH = 32  # nesting of brackets / signs / exponents / roots
MAX_SIDE_TOKENS = 256  # tokens in one side of an equality

_ANNOTATION = re.compile(r"<<[^<>]*>>")

Number = Fraction | float


class _NotCheckable(Exception):
    """Internal: this side or claim cannot be checked (parse failure, bound, deadline)."""


# --------------------------------------------------------------------------------------------
# Public results


@dataclass(frozen=True)
class Claim:
    """One asserted equality `left = right`, both sides rendered as plain arithmetic."""

    left: str
    right: str
    approx: bool = False  # written with ≈ / \approx
    left_tree: Any = field(default=None, compare=False, repr=False)
    right_tree: Any = field(default=None, compare=False, repr=False)
    # Character span of the right side's number when that side is one bare number, indexing
    # `strip_annotations(step)`; lets a caller rewrite the claimed result.
    right_span: tuple[int, int] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    holds: bool | None  # None: extracted but not computable (too big, division by zero, ...)
    left_value: float | None = None
    right_value: float | None = None


# A written number: thousands separated by `,` `{,}` `,\!` or `\,` (LaTeX), decimals, `.5`.
_NUMERAL_PATTERN = r"\d{1,3}(?:(?:,|\{,\}|,\\!|\\,)\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
NUMERAL = re.compile(_NUMERAL_PATTERN)
_THOUSANDS = re.compile(r"\{,\}|,\\!|\\,|,")


def numeral_value(numeral: str) -> Fraction:
    """Value of a written number: `130,000`, `1{,}000`, `24,\\!000`, `.6`, `3.14`."""
    return Fraction(_THOUSANDS.sub("", numeral))


def thousands_separator(numeral: str) -> str | None:
    """The separator a written number uses (`,`, `{,}`, `,\\!`), or None."""
    found = _THOUSANDS.search(numeral)
    return found.group() if found else None


def strip_annotations(text: str) -> str:
    """The step as a model would write it: GSM8K calculator annotations `<<48/2=24>>` removed."""
    return _ANNOTATION.sub("", text)


# --------------------------------------------------------------------------------------------
# Lexer: text -> raw tokens


@dataclass(slots=True)
class _Tok:
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
  | (?P<num>{_NUMERAL_PATTERN})
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


def _dollars_are_math(text: str) -> bool:
    """`$` delimits LaTeX math (MATH style) rather than marking dollars (GSM8K style)."""
    if re.search(r"\\[A-Za-z(\[]", text):
        return True
    return any(not re.match(r" ?\.?\d", text[m.end():m.end() + 3]) for m in re.finditer(r"\$", text))


def _lex(text: str, math_mode: bool, deadline: float) -> list[_Tok]:
    """Raw tokens of a step; LaTeX commands are mapped to the same kinds as plain symbols."""
    toks: list[_Tok] = []
    braces: list[str] = []  # "group" for a real `{`, "text" for the group of \text{...}
    pending_text = False
    space = True
    # Inside LaTeX math ($...$, \[...\], environments) letters are variables, not prose.
    in_dollars = in_display = False
    environments = 0
    pos, n = 0, len(text)
    while pos < n:
        if len(toks) % 256 == 0:
            _check_deadline(deadline)
        m = _LEX.match(text, pos)
        kind, lexeme = m.lastgroup, m.group()
        pos = m.end()
        before = len(toks)

        def add(kind_: str, text_: str, start=m.start(), end=m.end(), space_=space) -> None:
            toks.append(_Tok(kind_, text_, start, end, space_))

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


# --------------------------------------------------------------------------------------------
# Words: operators, units, variables


_UNIT_DIMENSIONS = {
    "time": {"second", "sec", "minute", "min", "hour", "hr", "day", "week", "month", "year", "yr",
             "decade", "century"},
    "length": {"mm", "millimeter", "cm", "centimeter", "meter", "metre", "km", "kilometer", "inch",
               "foot", "ft", "yard", "yd", "mile", "mi"},
    "mass": {"mg", "gram", "kg", "kilogram", "pound", "lb", "ounce", "oz", "ton", "tonne"},
    "volume": {"ml", "milliliter", "liter", "litre", "gallon", "gal", "quart", "qt", "pint", "cup",
               "tablespoon", "tbsp", "teaspoon", "tsp"},
    "money": {"dollar", "cent", "penny", "nickel", "dime", "quarter", "euro", "pound-sterling",
              "yen", "rupee", "buck"},
}
_UNIT_DIMENSION = {unit: dim for dim, units in _UNIT_DIMENSIONS.items() for unit in units}
_IRREGULAR_PLURALS = {"feet": "foot", "pennies": "penny", "inches": "inch", "centuries": "century",
                      "lbs": "lb", "hrs": "hr", "mins": "min", "secs": "sec", "yrs": "yr"}
_SHORT_UNITS = {"mm", "cm", "km", "kg", "mg", "ml", "ft", "lb", "lbs", "oz", "hr", "hrs", "yd",
                "mi", "mph", "kph", "qt", "gal", "tsp", "tbsp", "sec", "min", "yr", "yrs", "ms",
                "gb", "mb", "kb", "tb"}
# Words that make a side uncheckable: the arithmetic they imply is not written out.
_MATH_WORDS = {"squared", "cubed", "square", "cube", "root", "roots", "sqrt", "factorial", "log",
               "ln", "exp", "sin", "cos", "tan", "mod", "modulo", "choose", "pi", "power",
               "inverse", "reciprocal", "remainder", "floor", "ceil", "ceiling", "abs", "gcd",
               "lcm", "dozen", "dozens", "hundred", "hundreds", "thousand", "thousands",
               "million", "millions", "billion", "billions", "trillion", "am", "pm"}
# Prose words that may follow a number without being its unit.
_NOT_UNITS = {"and", "or", "is", "are", "was", "were", "to", "for", "each", "more", "less",
              "fewer", "than", "times", "of", "per", "as", "in", "on", "at", "by", "from", "so",
              "the", "a", "an", "with", "which", "that", "then", "plus", "minus", "equals",
              "equal", "divided", "multiplied", "over", "into", "if", "but", "because", "since",
              "when", "while", "will", "would", "can", "could", "should", "has", "have", "had",
              "he", "she", "it", "they", "we", "you", "i", "this", "these", "those", "there",
              "here", "also", "only", "now", "after", "before", "every", "all", "other", "percent",
              "not", "no", "out", "up", "down", "left", "total", "altogether", "together", "x",
              "respectively", "both", "r"}
_ORDINALS = {"st", "nd", "rd", "th"}
_WORD_OPS = {"plus": "+", "minus": "-", "times": "*"}
# A side right after one of these words is probably an operand of a longer verbal expression
# ("twice 12 + 3", "3 more than 4 + 2"), so its value is not what the equality is about.
_RISKY_BEFORE = {"than", "times", "plus", "minus", "over", "per", "twice", "thrice", "half",
                 "double", "triple", "quadruple", "squared", "cubed", "average", "mean", "avg",
                 "median", "sqrt", "root", "from", "into", "between"}
# "<quantity> of <side>": the side is what the quantity is taken of ("a third of 60 + 3").
_QUANTITY_BEFORE_OF = {"half", "halves", "third", "thirds", "quarter", "quarters", "twice",
                       "double", "triple", "percent", "square", "cube", "root", "product",
                       "quotient", "average", "mean", "fraction", "portion", "ratio", "multiple",
                       "remainder", "factor", "reciprocal", "inverse", "power", "one", "two",
                       "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                       "twelve", "twenty", "hundred", "thousand", "squares", "cubes"}
_SCALING_VERBS = {"multiply", "multiplied", "multiplying", "divide", "divided", "dividing", "times"}
# Words between a number and an operator describe the number ("90 bees that left - 15 bees"),
# unless they carry arithmetic of their own.
_PHRASE_BLOCKERS = {"times", "more", "less", "fewer", "than", "twice", "half", "double", "triple",
                    "thrice", "percent", "minus", "plus", "divided", "multiplied", "over", "equals",
                    "equal", "is", "are", "was", "were"}
MAX_PHRASE_WORDS = 8
_FRACTION_WORDS_AFTER_AND = {"a", "an", "one", "half", "quarter", "third", "thirds", "quarters"}


def _tokens(text: str, deadline: float) -> list[_Tok]:
    """Classified tokens of a step: numbers, operators, units, variables, prose, separators."""
    math_mode = _dollars_are_math(text)
    return _absorb_phrases(_classify(_lex(text, math_mode, deadline), math_mode, deadline))


def _unit_name(word: str) -> str:
    word = _IRREGULAR_PLURALS.get(word, word)
    if word.endswith("es") and word[:-2] in _UNIT_DIMENSION:
        return word[:-2]
    if word.endswith("s") and word[:-1] in _UNIT_DIMENSION:
        return word[:-1]
    return word


def _ends_operand(tok: _Tok | None) -> bool:
    return tok is not None and (tok.kind in ("num", "rp", "unit") or (tok.kind == "op" and tok.text == "%"))


def _starts_operand(toks: list[_Tok], i: int) -> bool:
    if i >= len(toks):
        return False
    tok = toks[i]
    if tok.kind in ("num", "lp", "cur", "frac", "sqrt"):
        return True
    return tok.kind == "op" and tok.text == "-" and i + 1 < len(toks) and toks[i + 1].kind == "num" \
        and not toks[i + 1].space


def _is_fraction_end(out: list[_Tok]) -> bool:
    """The output ends with `a/b` (so a following "of" means times: "1/3 of 60")."""
    return len(out) >= 3 and out[-1].kind == "num" and out[-2].kind == "op" and out[-2].text == "/" \
        and out[-3].kind == "num"


def _classify(raw: list[_Tok], math_mode: bool, deadline: float) -> list[_Tok]:
    """Turn words into operators, units, variables or prose, looking at their neighbours."""
    out: list[_Tok] = []
    i = 0
    while i < len(raw):
        if i % 256 == 0:
            _check_deadline(deadline)
        tok = raw[i]
        prev = out[-1] if out else None
        if tok.kind == "word":
            i = _classify_word(raw, i, out, math_mode)
            continue
        if tok.kind == "num":
            _classify_number(tok, prev)
        elif tok.kind == "op" and tok.text == "**" and not _is_power(raw, i, prev):
            i += 1  # markdown bold: markup, not arithmetic
            if i < len(raw):
                raw[i].space = raw[i].space or tok.space
            continue
        elif tok.kind == "op" and tok.text in "-*+" and (prev is None or prev.text == "\n") \
                and i + 1 < len(raw) and raw[i + 1].space:
            tok.kind = "sep"  # a list bullet at the start of a line
        elif tok.kind == "op" and tok.text == "/" and _ends_operand(prev) and i + 1 < len(raw) \
                and _is_per_unit(raw[i + 1], prev):
            _add_rate(out, raw[i + 1])  # "$50/hour", "3 books/person": a rate, not a division
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _add_rate(out: list[_Tok], per: _Tok) -> None:
    if out[-1].kind == "unit":
        out[-1].text += "/" + per.text
    else:
        out.append(_Tok("unit", "/" + per.text, per.start, per.end, False))


def _classify_number(tok: _Tok, prev: _Tok | None) -> None:
    digits = sum(c.isdigit() for c in tok.text)
    glued_to_word = prev is not None and prev.kind in ("word", "var") and not tok.space
    if digits > MAX_DIGITS or glued_to_word:
        tok.kind = "var"  # x2, CO2, or a number too long to be ordinary arithmetic
        return
    tok.value = numeral_value(tok.text)
    tok.decimals = len(tok.text.partition(".")[2])


def _is_per_unit(nxt: _Tok, prev: _Tok) -> bool:
    if nxt.kind != "word" or nxt.space or nxt.text in _NOT_UNITS or nxt.text in _MATH_WORDS:
        return False
    return prev.kind == "unit" or len(nxt.text) >= 3


def _is_power(raw: list[_Tok], i: int, prev: _Tok | None) -> bool:
    """`**` glued between operands is a power (2**3); anywhere else it is markdown bold."""
    if not (_ends_operand(prev) and _starts_operand(raw, i + 1)):
        return False
    if raw[i].space or raw[i + 1].space:
        return False
    raw[i].text = "^"
    return True


def _classify_word(raw: list[_Tok], i: int, out: list[_Tok], math_mode: bool) -> int:
    """Append the classified word (if it yields a token) and return the next index."""
    tok = raw[i]
    word = tok.text
    prev = out[-1] if out else None
    nxt = raw[i + 1] if i + 1 < len(raw) else None
    after_operand = _ends_operand(prev)
    spaced_times = tok.space and nxt is not None and nxt.space \
        and (after_operand or (prev is not None and prev.kind == "word"))
    if word == "x" and _starts_operand(raw, i + 1) and (
            spaced_times or (after_operand and not tok.space and not nxt.space and nxt.kind == "num")):
        out.append(_retype(tok, "op", "*"))  # "3 x 4" or "3x4", not "2x + 1" or "4x-13"
        return i + 1
    if prev is not None and prev.kind in ("num", "rp") and not tok.space:
        if word in _SHORT_UNITS or _unit_name(word) in _UNIT_DIMENSION:
            out.append(_retype(tok, "unit", _unit_name(word)))
        elif word in _ORDINALS and prev.kind == "num":
            out.append(tok)  # 3rd, 21st: prose
        else:
            out.append(_retype(tok, "var", word))  # 2x, 3ab, 1e6, 5pm
        return i + 1
    if word == "sqrt" and nxt is not None and nxt.kind == "lp" and not nxt.space:
        out.append(_retype(tok, "sqrt", word))
        return i + 1
    if word in _MATH_WORDS:
        out.append(_retype(tok, "var", word))
        return i + 1
    if word == "percent" and after_operand:
        out.append(_retype(tok, "op", "%"))
        return i + 1
    if word in _WORD_OPS and after_operand and _starts_operand(raw, i + 1):
        out.append(_retype(tok, "op", _WORD_OPS[word]))
        return i + 1
    if word in ("divided", "multiplied") and after_operand and nxt is not None and nxt.text == "by" \
            and _starts_operand(raw, i + 2):
        out.append(_retype(tok, "op", "/" if word == "divided" else "*"))
        return i + 2
    if word in ("equals", "equal"):
        if prev is not None and prev.kind == "word" and prev.text in ("is", "are", "was", "were", "be"):
            out.pop()  # "is equal to": the "is" must not cut the left side off
        out.append(_retype(tok, "eq", "equals"))
        return i + 2 if nxt is not None and nxt.text == "to" else i + 1
    if word == "of" and (prev is not None and (prev.text == "%" or prev.kind == "rp")
                         or _is_fraction_end(out)) and _starts_operand(raw, i + 1):
        out.append(_retype(tok, "op", "*"))  # "25% of 80", "1/3 of 60"
        return i + 1
    if word == "per" and prev is not None and (after_operand or prev.kind == "unit") \
            and nxt is not None and nxt.kind == "word":
        _add_rate(out, nxt)  # "5 miles per hour"
        return i + 2
    if after_operand and prev.kind != "unit" and word not in _NOT_UNITS \
            and (len(word) >= 3 or word in _SHORT_UNITS):
        out.append(_retype(tok, "unit", _unit_name(word)))
        return i + 1
    if len(word) == 1 and (math_mode or word not in ("a", "i")):
        out.append(_retype(tok, "var", word))  # a single letter is a variable
        return i + 1
    out.append(tok)
    return i + 1


def _absorb_phrases(toks: list[_Tok]) -> list[_Tok]:
    """Mark descriptive word runs inside an expression as units (dropped from the arithmetic):
    "90 bees that left the hive - 15 bees that returned", "25 classmates + his 1 teacher"."""
    i = 0
    while i < len(toks):
        j = i
        while j < len(toks) and toks[j].kind == "word":
            j += 1
        if j > i:
            run, before = toks[i:j], toks[i - 1] if i else None
            after = toks[j] if j < len(toks) else None
            # "20% of the total * 3" takes a share of something unwritten; "2 bottles of bleach" does not
            share_of = run[0].text == "of" and before is not None and before.kind != "unit"
            describes = _ends_operand(before) and after is not None and not share_of \
                and (after.kind in ("eq", "approx") or (after.kind == "op" and after.text in "+-*/"))
            filler = before is not None and before.kind == "op" and before.text == "+" \
                and len(run) <= 3 and _starts_operand(toks, j)
            if (describes or filler) and len(run) <= MAX_PHRASE_WORDS \
                    and not any(t.text in _PHRASE_BLOCKERS for t in run):
                named = describes and before.kind != "unit"  # the first word names the unit
                for k, tok in enumerate(run):
                    _retype(tok, "unit", _unit_name(tok.text) if named and k == 0 else "")
        elif toks[i].kind == "lp" and _ends_operand(toks[i - 1] if i else None):
            _absorb_parenthetical(toks, i)
        i = max(j, i + 1)
    return toks


def _absorb_parenthetical(toks: list[_Tok], i: int) -> None:
    """ "93 (average) * 5 (tests)", "$22 (taking costs into account)": words in brackets after a
    number describe it."""
    j = i + 1
    while j < len(toks) and toks[j].kind == "word" and j - i <= MAX_PHRASE_WORDS:
        j += 1
    if j > i + 1 and j < len(toks) and toks[j].kind == "rp" and toks[j].text == _CLOSE.get(toks[i].text):
        for tok in toks[i:j + 1]:
            _retype(tok, "unit", "")


def _retype(tok: _Tok, kind: str, text: str) -> _Tok:
    tok.kind, tok.text = kind, text
    return tok


# --------------------------------------------------------------------------------------------
# Sides of an equality

_SIDE_KINDS = {"num", "op", "lp", "rp", "frac", "sqrt", "var", "unit", "cur"}


@dataclass(frozen=True)
class _Side:
    tree: Any  # numbers carry the unit written with them: ("num", value, decimals, unit)
    bare: bool  # one number, maybe signed / with units: nothing computed
    number_span: tuple[int, int] | None


def _parse_side(toks: list[_Tok], deadline: float) -> _Side | None:
    if not toks or len(toks) > MAX_SIDE_TOKENS or any(t.kind == "var" for t in toks):
        return None
    core, units = _without_units(toks)
    try:
        tree = _Parser(core, units, deadline).parse()
    except _NotCheckable:
        return None
    number = _bare_number(tree)
    nums = [t for t in core if t.kind == "num"]
    span = (nums[0].start, nums[0].end) if number is not None and len(nums) == 1 else None
    return _Side(tree, number is not None, span)


def _without_units(toks: list[_Tok]) -> tuple[list[_Tok], dict[int, str]]:
    """The arithmetic of a side (units, currency and unit powers like cm^2 removed) and the
    unit written with each number, keyed by id of its token."""
    core: list[_Tok] = []
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


def _side_bound(toks: list[_Tok], i: int, step: int) -> int:
    """Index of the token that ends the side next to the relation at i (step -1: left, +1: right).

    A unit followed by another operand ends the side: in "His next 2 buy 2 * 2", "buy" is prose."""
    j = i + step
    while 0 <= j < len(toks) and toks[j].kind in _SIDE_KINDS:
        tok = toks[j]
        if tok.kind == "unit" and tok.text and 0 < j < len(toks) - 1 and toks[j - 1].kind != "op" \
                and toks[j + 1].kind in ("num", "lp", "cur", "frac", "sqrt"):
            return j if step < 0 else j + 1
        j += step
    return j


def _left_context_ok(toks: list[_Tok], lo: int, side: _Side, relation: _Tok) -> bool:
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
    if side.bare or stop.text in _RISKY_BEFORE:
        return False  # "half of 80 = 40", "dividing 40 by 5 = 8", "twice 12 + 3 = 27"
    if before is not None and before.kind == "op":
        return False  # an operator before the words: the expression began earlier
    if stop.text == "by" and before is not None and before.text in _SCALING_VERBS:
        return False  # "the total divided by 2 * 3 = 6"
    if stop.text == "and" and _ends_operand(before):
        return False  # "the sum of 3 and 4 + 5 = 12"
    if stop.text == "of" and before is not None and (
            before.kind != "word" or before.text in _QUANTITY_BEFORE_OF or re.search(r"ths?$", before.text)):
        return False  # "a third of 60 + 3", "50% of 80 - 20"
    return True


def _right_context_ok(toks: list[_Tok], hi: int) -> bool:
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
        if nxt.text in _FRACTION_WORDS_AFTER_AND:
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
    dim = _UNIT_DIMENSION.get(a)
    return dim is not None and a != b and _UNIT_DIMENSION.get(b) == dim


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
        dim = _UNIT_DIMENSION.get(unit)
        related = {u for u in _leaf_units(other.tree) if _UNIT_DIMENSION.get(u) == dim}
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
        percentages = _only_percentages(share.tree) and amount.bare and not _uses_percent(amount.tree)
        if percentages or _is_proper_fraction(share.tree):
            try:
                if _evaluate(amount.tree, True, deadline) > 1:
                    return True
            except _NotCheckable:
                return True
    return False


def _claims_in_tokens(toks: list[_Tok], deadline: float) -> list[Claim]:
    claims: list[Claim] = []
    sides: dict[tuple[int, int], _Side | None] = {}

    def side_at(a: int, b: int) -> _Side | None:
        if (a, b) not in sides:
            sides[(a, b)] = _parse_side(toks[a:b], deadline)
        return sides[(a, b)]

    for i, tok in enumerate(toks):
        if tok.kind not in ("eq", "approx"):
            continue
        _check_deadline(deadline)
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
        claims.append(Claim(_render(left.tree), _render(right.tree), tok.kind == "approx",
                            left.tree, right.tree, right.number_span))
    return claims


# --------------------------------------------------------------------------------------------
# Parser: tokens -> tree of ("num", value, decimals, unit) / ("neg", a) / ("pct", a) / ("sqrt", a) /
# ("add"|"sub"|"mul"|"div"|"pow", a, b)

_BINARY = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
_CLOSE = {"(": ")", "[": "]", "{": "}"}


class _Parser:
    def __init__(self, toks: list[_Tok], units: dict[int, str], deadline: float):
        self.toks = toks
        self.units = units
        self.i = 0
        self.deadline = deadline

    def parse(self):
        tree = self.expr(0)
        if self.i != len(self.toks):
            raise _NotCheckable("trailing tokens")
        return tree

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise _NotCheckable("unexpected end")
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
        _check_deadline(self.deadline)
        tok = self.take()
        if tok.kind == "num":
            nxt = self.peek()
            if nxt is not None and nxt.kind == "frac" and not nxt.space:
                raise _NotCheckable("2\\frac12 may be a mixed number")
            return ("num", tok.value, tok.decimals, self.units.get(id(tok)))
        if tok.kind == "lp":
            return self.group_rest(tok, depth)
        if tok.kind == "frac":
            return ("div", self.group(depth), self.group(depth))
        if tok.kind == "sqrt":
            nxt = self.peek()
            if nxt is not None and nxt.kind == "lp" and nxt.text == "[":
                raise _NotCheckable("n-th root")
            if nxt is not None and nxt.kind == "lp":
                return ("sqrt", self.group(depth))
            return ("sqrt", self.postfix(self.deeper(depth)))  # √16
        raise _NotCheckable(f"unexpected {tok.kind}")

    def group(self, depth: int):
        tok = self.take()
        if tok.kind != "lp":
            raise _NotCheckable("expected a group")
        return self.group_rest(tok, depth)

    def group_rest(self, opening: _Tok, depth: int):
        inner = self.expr(self.deeper(depth))
        closing = self.take()
        if closing.kind != "rp" or closing.text != _CLOSE[opening.text]:
            raise _NotCheckable("unbalanced brackets")
        return inner

    @staticmethod
    def deeper(depth: int) -> int:
        if depth >= MAX_DEPTH:
            raise _NotCheckable("nested too deeply")
        return depth + 1


_PRECEDENCE = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3, "pow": 4, "pct": 5, "sqrt": 6, "num": 6}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "^"}


def _render(tree) -> str:
    """Plain arithmetic text of a tree, with only the brackets precedence needs."""
    kind = tree[0]
    if kind == "num":
        return _format_number(tree[1], tree[2])
    if kind == "sqrt":
        return f"sqrt({_render(tree[1])})"
    if kind == "neg":
        return "-" + _wrap(tree[1], 3, strict=True)
    if kind == "pct":
        return _wrap(tree[1], 5, strict=True) + "%"
    prec = _PRECEDENCE[kind]
    if kind == "pow":
        return _wrap(tree[1], prec, strict=True) + "^" + _wrap(tree[2], prec, strict=False)
    right = f"({_render(tree[2])})" if tree[2][0] == "neg" else _wrap(tree[2], prec, strict=kind in ("sub", "div"))
    return _wrap(tree[1], prec, strict=False) + _SYMBOL[kind] + right


def _wrap(tree, prec: int, *, strict: bool) -> str:
    inner = _PRECEDENCE[tree[0]]
    text = _render(tree)
    return f"({text})" if inner < prec or (strict and inner == prec) else text


def _format_number(value: Fraction, decimals: int) -> str:
    if decimals == 0:
        return str(value.numerator)
    digits = str((value * 10**decimals).numerator).rjust(decimals + 1, "0")
    return f"{digits[:-decimals]}.{digits[-decimals:]}"


# --------------------------------------------------------------------------------------------
# Evaluation


def _check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise _NotCheckable("time limit")


def _bounded(value: Number) -> Number:
    if isinstance(value, Fraction):
        if value.numerator.bit_length() + value.denominator.bit_length() > MAX_BITS:
            raise _NotCheckable("number too large")
    elif not math.isfinite(value):
        raise _NotCheckable("not finite")
    return value


def _evaluate(tree, ratio_percent: bool, deadline: float) -> Number:
    _check_deadline(deadline)
    kind = tree[0]
    if kind == "num":
        return tree[1]
    a = _evaluate(tree[1], ratio_percent, deadline)
    if kind == "neg":
        return -a
    if kind == "pct":
        return a / 100 if ratio_percent else a
    if kind == "sqrt":
        return _bounded(_sqrt(a))
    b = _evaluate(tree[2], ratio_percent, deadline)
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
        raise _NotCheckable(str(exc)) from None


def _as_float(value: Number) -> float:
    try:
        return float(value)
    except OverflowError:
        raise _NotCheckable("too large for a float") from None


def _sqrt(value: Number) -> Number:
    if value < 0:
        raise _NotCheckable("square root of a negative number")
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
        raise _NotCheckable("power undefined in the reals")
    if b > 0 and abs(e * math.log(b)) > 700:
        raise _NotCheckable("power too large")
    return b**e


def _integer_power(base: Fraction, exponent: int) -> Fraction:
    if base == 0 and exponent <= 0:
        raise _NotCheckable("0 to a non-positive power")
    if exponent == 0:
        return Fraction(1)
    if base in (0, 1):
        return base
    if base == -1:
        return Fraction(-1 if exponent % 2 else 1)
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if abs(exponent) * size > MAX_BITS:
        raise _NotCheckable("power too large")
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
    written = _evaluate(written_tree, ratio_percent, math.inf) / unit
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


def _uses_percent(tree) -> bool:
    return tree[0] == "pct" or any(isinstance(part, tuple) and _uses_percent(part) for part in tree[1:])


def _check_claim(claim: Claim, deadline: float) -> ClaimResult:
    # "1/5 = 20%" and "0.25 * 100 = 25%" are both written: a claim holds if either reading of %
    # does, and is false only if every reading that can be judged is false.
    uses_percent = _uses_percent(claim.left_tree) or _uses_percent(claim.right_tree)
    best = ClaimResult(claim, None)
    for ratio_percent in (True, False) if uses_percent else (True,):
        try:
            left = _evaluate(claim.left_tree, ratio_percent, deadline)
            right = _evaluate(claim.right_tree, ratio_percent, deadline)
            holds = _holds(claim, left, right, ratio_percent)
        except _NotCheckable:
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


# --------------------------------------------------------------------------------------------
# Public API


def _extract(step: str, deadline: float) -> list[Claim]:
    if not isinstance(step, str) or len(step) > MAX_STEP_CHARS:
        return []
    claims: list[Claim] = []
    try:
        claims.extend(_claims_in_tokens(_tokens(strip_annotations(step), deadline), deadline))
        for note in _ANNOTATION.finditer(step):
            # annotation claims index no visible text, so they carry no span
            found = _claims_in_tokens(_tokens(note.group()[2:-2], deadline), deadline)
            claims.extend(replace(c, right_span=None) for c in found if c not in claims)
    except _NotCheckable:
        pass  # deadline: keep what was found in time
    return claims


def extract_claims(step: str) -> list[Claim]:
    """Every checkable arithmetic equality the step asserts (visible text, then `<<...>>` notes)."""
    return _extract(step, time.monotonic() + CHECK_SECONDS)


def check_claims(step: str) -> list[ClaimResult]:
    """Each extracted claim with its verdict, all within one deadline for the step."""
    deadline = time.monotonic() + CHECK_SECONDS
    return [_check_claim(claim, deadline) for claim in _extract(step, deadline)]


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
        toks = _tokens(expression, deadline)
        side = _parse_side(toks, deadline) if all(t.kind in _SIDE_KINDS for t in toks) else None
        return None if side is None else _evaluate(side.tree, percent_as_ratio, deadline)
    except _NotCheckable:
        return None
