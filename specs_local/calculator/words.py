"""Words: raw tokens classified as operators, units, currencies or variables, with descriptive phrases absorbed."""
from __future__ import annotations

from .lexer import CLOSE, Tok, dollars_are_math, lex
from .limits import MAX_DIGITS, check_deadline
from .numerals import numeral_value

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
UNIT_DIMENSION = {unit: dim for dim, units in _UNIT_DIMENSIONS.items() for unit in units}
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
RISKY_BEFORE = {"than", "times", "plus", "minus", "over", "per", "twice", "thrice", "half",
                 "double", "triple", "quadruple", "squared", "cubed", "average", "mean", "avg",
                 "median", "sqrt", "root", "from", "into", "between"}
# "<quantity> of <side>": the side is what the quantity is taken of ("a third of 60 + 3").
QUANTITY_BEFORE_OF = {"half", "halves", "third", "thirds", "quarter", "quarters", "twice",
                       "double", "triple", "percent", "square", "cube", "root", "product",
                       "quotient", "average", "mean", "fraction", "portion", "ratio", "multiple",
                       "remainder", "factor", "reciprocal", "inverse", "power", "one", "two",
                       "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                       "twelve", "twenty", "hundred", "thousand", "squares", "cubes"}
SCALING_VERBS = {"multiply", "multiplied", "multiplying", "divide", "divided", "dividing", "times"}
# Words between a number and an operator describe the number ("90 bees that left - 15 bees"),
# unless they carry arithmetic of their own.
_PHRASE_BLOCKERS = {"times", "more", "less", "fewer", "than", "twice", "half", "double", "triple",
                    "thrice", "percent", "minus", "plus", "divided", "multiplied", "over", "equals",
                    "equal", "is", "are", "was", "were"}
MAX_PHRASE_WORDS = 8
FRACTION_WORDS_AFTER_AND = {"a", "an", "one", "half", "quarter", "third", "thirds", "quarters"}


def tokenize(text: str, deadline: float) -> list[Tok]:
    """Classified tokens of a step: numbers, operators, units, variables, prose, separators."""
    math_mode = dollars_are_math(text)
    return _absorb_phrases(_classify(lex(text, math_mode, deadline), math_mode, deadline))


def _unit_name(word: str) -> str:
    word = _IRREGULAR_PLURALS.get(word, word)
    if word.endswith("es") and word[:-2] in UNIT_DIMENSION:
        return word[:-2]
    if word.endswith("s") and word[:-1] in UNIT_DIMENSION:
        return word[:-1]
    return word


def ends_operand(tok: Tok | None) -> bool:
    return tok is not None and (tok.kind in ("num", "rp", "unit") or (tok.kind == "op" and tok.text == "%"))


def _starts_operand(toks: list[Tok], i: int) -> bool:
    if i >= len(toks):
        return False
    tok = toks[i]
    if tok.kind in ("num", "lp", "cur", "frac", "sqrt"):
        return True
    return tok.kind == "op" and tok.text == "-" and i + 1 < len(toks) and toks[i + 1].kind == "num" \
        and not toks[i + 1].space


def _is_fraction_end(out: list[Tok]) -> bool:
    """The output ends with `a/b` (so a following "of" means times: "1/3 of 60")."""
    return len(out) >= 3 and out[-1].kind == "num" and out[-2].kind == "op" and out[-2].text == "/" \
        and out[-3].kind == "num"


def _classify(raw: list[Tok], math_mode: bool, deadline: float) -> list[Tok]:
    """Turn words into operators, units, variables or prose, looking at their neighbours."""
    out: list[Tok] = []
    i = 0
    while i < len(raw):
        if i % 256 == 0:
            check_deadline(deadline)
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
        elif tok.kind == "op" and tok.text == "/" and ends_operand(prev) and i + 1 < len(raw) \
                and _is_per_unit(raw[i + 1], prev):
            _add_rate(out, raw[i + 1])  # "$50/hour", "3 books/person": a rate, not a division
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _add_rate(out: list[Tok], per: Tok) -> None:
    if out[-1].kind == "unit":
        out[-1].text += "/" + per.text
    else:
        out.append(Tok("unit", "/" + per.text, per.start, per.end, False))


def _classify_number(tok: Tok, prev: Tok | None) -> None:
    digits = sum(c.isdigit() for c in tok.text)
    glued_to_word = prev is not None and prev.kind in ("word", "var") and not tok.space
    if digits > MAX_DIGITS or glued_to_word:
        tok.kind = "var"  # x2, CO2, or a number too long to be ordinary arithmetic
        return
    tok.value = numeral_value(tok.text)
    tok.decimals = len(tok.text.partition(".")[2])


def _is_per_unit(nxt: Tok, prev: Tok) -> bool:
    if nxt.kind != "word" or nxt.space or nxt.text in _NOT_UNITS or nxt.text in _MATH_WORDS:
        return False
    return prev.kind == "unit" or len(nxt.text) >= 3


def _is_power(raw: list[Tok], i: int, prev: Tok | None) -> bool:
    """`**` glued between operands is a power (2**3); anywhere else it is markdown bold."""
    if not (ends_operand(prev) and _starts_operand(raw, i + 1)):
        return False
    if raw[i].space or raw[i + 1].space:
        return False
    raw[i].text = "^"
    return True


def _classify_word(raw: list[Tok], i: int, out: list[Tok], math_mode: bool) -> int:
    """Append the classified word (if it yields a token) and return the next index."""
    tok = raw[i]
    word = tok.text
    prev = out[-1] if out else None
    nxt = raw[i + 1] if i + 1 < len(raw) else None
    after_operand = ends_operand(prev)
    spaced_times = tok.space and nxt is not None and nxt.space \
        and (after_operand or (prev is not None and prev.kind == "word"))
    if word == "x" and _starts_operand(raw, i + 1) and (
            spaced_times or (after_operand and not tok.space and not nxt.space and nxt.kind == "num")):
        out.append(_retype(tok, "op", "*"))  # "3 x 4" or "3x4", not "2x + 1" or "4x-13"
        return i + 1
    if prev is not None and prev.kind in ("num", "rp") and not tok.space:
        if word in _SHORT_UNITS or _unit_name(word) in UNIT_DIMENSION:
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


def _absorb_phrases(toks: list[Tok]) -> list[Tok]:
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
            describes = ends_operand(before) and after is not None and not share_of \
                and (after.kind in ("eq", "approx") or (after.kind == "op" and after.text in "+-*/"))
            filler = before is not None and before.kind == "op" and before.text == "+" \
                and len(run) <= 3 and _starts_operand(toks, j)
            if (describes or filler) and len(run) <= MAX_PHRASE_WORDS \
                    and not any(t.text in _PHRASE_BLOCKERS for t in run):
                named = describes and before.kind != "unit"  # the first word names the unit
                for k, tok in enumerate(run):
                    _retype(tok, "unit", _unit_name(tok.text) if named and k == 0 else "")
        elif toks[i].kind == "lp" and ends_operand(toks[i - 1] if i else None):
            _absorb_parenthetical(toks, i)
        i = max(j, i + 1)
    return toks


def _absorb_parenthetical(toks: list[Tok], i: int) -> None:
    """ "93 (average) * 5 (tests)", "$22 (taking costs into account)": words in brackets after a
    number describe it."""
    j = i + 1
    while j < len(toks) and toks[j].kind == "word" and j - i <= MAX_PHRASE_WORDS:
        j += 1
    if j > i + 1 and j < len(toks) and toks[j].kind == "rp" and toks[j].text == CLOSE.get(toks[i].text):
        for tok in toks[i:j + 1]:
            _retype(tok, "unit", "")


def _retype(tok: Tok, kind: str, text: str) -> Tok:
    tok.kind, tok.text = kind, text
    return tok
