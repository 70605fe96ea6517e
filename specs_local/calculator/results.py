"""What the calculator reports: a claim it found in a step, and the claim's verdict."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
