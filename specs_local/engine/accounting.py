"""Accounting: what each model evaluated, by kind, and the shape of every decode.

Each evaluated token belongs to one of three kinds, counted per model, and llama.cpp's own perf
counters report the total evaluated (``evaluated_tokens``), against which the kinds are checked:
- ``prompt``: text handed to the model (prompts, questions, other models' steps);
- ``generated``: tokens this model sampled, fed back to continue;
- ``scored``: candidate tokens evaluated to score them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import llama_cpp as llama

from ..errors import SpecsError

KINDS = ("prompt", "generated", "scored")


@dataclass
class Usage:
    prompt: int = 0
    generated: int = 0
    scored: int = 0
    decode_seconds: float = 0.0
    decode_calls: int = 0
    generation_rows: int = 0  # rows fed by generation decodes (for the mean batch size)
    generation_calls: int = 0
    generation_seconds: float = 0.0
    # The shape of every decode, for the cost model: {batch size class: [calls, rows,
    # cells read]}, a row reading every KV cell alive when it was decoded.
    decode_batches: dict[str, list[int]] = field(default_factory=dict)

    def add(self, kind: str, n: int) -> None:
        setattr(self, kind, getattr(self, kind) + n)

    def add_decode(self, rows: int, live_cells: int) -> None:
        tally = self.decode_batches.setdefault(batch_class(rows), [0, 0, 0])
        tally[0] += 1
        tally[1] += rows
        tally[2] += rows * live_cells

    @property
    def attended_cells(self) -> int:
        return sum(cells for _, _, cells in self.decode_batches.values())

    @property
    def counted(self) -> int:
        return self.prompt + self.generated + self.scored


def batch_class(rows: int) -> str:
    """Decode sizes up to 16 (one row per sequence) are kept exact; larger
    ones (prefills) go to the next power of two."""
    return str(rows if rows <= 16 else 1 << (rows - 1).bit_length())


class KVCells:
    """The KV cells alive in a unified cache, counted as llama.cpp holds them:
    a fork shares its parent's cells, and a cell lives while any sequence
    holds it. Attention reads every live cell of a unified cache, so a
    decode's cost grows with this count, not only with the sequence's length.

    Each operation either happens whole or raises having changed nothing, so
    a sequence's ``cells`` always lists exactly the cells counted for it."""

    def __init__(self) -> None:
        self._holders: dict[int, int] = {}
        self._next_id = 0

    @property
    def live(self) -> int:
        return len(self._holders)

    def new(self, n: int) -> list[int]:
        ids = list(range(self._next_id, self._next_id + n))
        self._next_id += n
        self._holders.update((i, 1) for i in ids)
        return ids

    def share(self, cells: list[int]) -> None:
        self._require_live(cells)
        for cell in cells:
            self._holders[cell] += 1

    def drop(self, cells: list[int]) -> None:
        self._require_live(cells)
        for cell in cells:
            holders = self._holders[cell] - 1
            if holders:
                self._holders[cell] = holders
            else:
                del self._holders[cell]

    def _require_live(self, cells: list[int]) -> None:
        if not self._holders.keys() >= set(cells):
            raise SpecsError("internal: KV bookkeeping names cells that are not alive")


def evaluated_tokens(ctx, seen_single: bool, seen_multi: bool) -> int:
    """Tokens a context evaluated, as llama.cpp's perf counters report them.

    llama.cpp counts single-token decodes in n_eval and larger ones in n_p_eval, and reports each
    as max(1, n): a counter whose kind of decode never happened is really 0."""
    data = llama.llama_perf_context(ctx)
    multi = int(data.n_p_eval) if seen_multi else 0
    single = int(data.n_eval) if seen_single else 0
    return multi + single
