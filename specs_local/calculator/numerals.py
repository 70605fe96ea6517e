"""Written numbers (thousands separators, decimals) and GSM8K's `<<48/2=24>>` calculator annotations."""
from __future__ import annotations

import re
from fractions import Fraction

Number = Fraction | float

ANNOTATION = re.compile(r"<<[^<>]*>>")

# A written number: thousands separated by `,` `{,}` `,\!` or `\,` (LaTeX), decimals, `.5`.
NUMERAL_PATTERN = r"\d{1,3}(?:(?:,|\{,\}|,\\!|\\,)\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
NUMERAL = re.compile(NUMERAL_PATTERN)
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
    return ANNOTATION.sub("", text)
