"""Sequences: what a sequence holds, and the table of one context's sequence ids and KV cells.

All sequences of a model live in one KV cache, so a fork shares its parent's cells through
``llama_memory_seq_cp`` and nothing is evaluated twice. The table keeps its ids and cells in step
with llama.cpp's memory: each operation happens whole, or is interrupted in a state that releasing
the sequence cleans up.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import llama_cpp as llama
import numpy as np

from ..errors import OutOfSequencesError
from ..interrupts import deferred
from .accounting import KVCells


@dataclass
class Sequence:
    """One sequence in a model's KV cache.

    ``tokens`` are in the cache at positions 0..len-1. ``pending`` tokens are
    part of the text but not evaluated yet (the last sampled token of a
    generation); the next evaluation of this sequence feeds them first.
    ``logits`` are the raw next-token logits after ``tokens[-1]``, valid only
    while ``pending`` is empty."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    pending_kind: str = "generated"  # how pending tokens count once evaluated
    logits: np.ndarray | None = None
    hidden: np.ndarray | None = None  # last token's hidden state (embeddings mode, or captured nodes)
    cells: list[int] = field(default_factory=list)  # KV cell ids of ``tokens``, shared with forks
    # position -> untempered log-prob of the token there, where this model computed
    # one (sampled it, or scored it); prompts and questions have none
    logprobs: dict[int, float] = field(default_factory=dict)
    # position -> (self-certainty, token confidence) of the logits row that predicted the token
    # there, where ``logprobs`` has one (sampling.token_confidence)
    confidence: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.tokens) + len(self.pending)

    @property
    def all_tokens(self) -> list[int]:
        return self.tokens + self.pending

    @property
    def mean_logprob(self) -> float:
        """Mean log-prob per token over the tokens this model sampled or scored
        (a solution's steps, not its prompt); nan if none."""
        return float(np.mean(list(self.logprobs.values()))) if self.logprobs else float("nan")

    def token_scores(self) -> np.ndarray:
        """(n, 3): log-prob, self-certainty and token confidence of each token this model sampled
        or scored, in position order (a solution's, not its prompt's)."""
        positions = sorted(pos for pos in self.logprobs if pos in self.confidence)
        return np.array([(self.logprobs[p], *self.confidence[p]) for p in positions], dtype=float).reshape(-1, 3)


@dataclass
class Generation:
    """One generated step: its tokens, their untempered log-probs, its text."""

    seq: Sequence
    tokens: list[int]
    logprobs: list[float]
    text: str
    finish: str  # "delimiter" | "eog" | "length" | "low_confidence" (stopped early, see generation)
    confidence: list[tuple[float, float]] = field(default_factory=list)  # per token, as Sequence.confidence

    @property
    def mean_logprob(self) -> float:
        return float(np.mean(self.logprobs)) if self.logprobs else 0.0

    def token_scores(self) -> np.ndarray:
        """(n, 3): log-prob, self-certainty and token confidence of each generated token."""
        return np.array([(lp, *c) for lp, c in zip(self.logprobs, self.confidence)], dtype=float).reshape(-1, 3)


class SequenceTable:
    """The sequence ids of one context (free or live) and the KV cells the live ones hold."""

    def __init__(self, ctx, n_seq_max: int, name: str, workload: str = "") -> None:
        self._memory = llama.llama_get_memory(ctx)
        self._n_seq_max = n_seq_max
        self._name = name
        self._workload = workload
        self.free_ids = list(range(n_seq_max - 1, -1, -1))
        self._live: dict[int, Sequence] = {}
        self.cells = KVCells()

    def exhausted(self, what: str) -> OutOfSequencesError:
        """The error for running out, naming the workload the sequences were sized for."""
        sized = f"{self._n_seq_max} sized for {self._workload}; " if self._workload else ""
        return OutOfSequencesError(f"{self._name}: {what} ({sized}raise n_seq_max)")

    @property
    def live(self) -> list[Sequence]:
        return list(self._live.values())

    def allocate(self) -> Sequence:
        if not self.free_ids:
            raise self.exhausted(f"all {self._n_seq_max} parallel sequences are in use")
        with deferred():  # an id is either free or live, never neither
            seq = Sequence(self.free_ids.pop())
            self._live[seq.seq_id] = seq
        return seq

    def copy(self, seq: Sequence) -> Sequence:
        """One fork of an evaluated sequence. A child holds cells only once they are counted as shared."""
        child = self.allocate()
        try:
            with deferred():
                llama.llama_memory_seq_cp(self._memory, seq.seq_id, child.seq_id, -1, -1)
                self.cells.share(seq.cells)
                child.cells = list(seq.cells)
                child.tokens = list(seq.tokens)
                child.logits, child.hidden = seq.logits, seq.hidden
                child.logprobs = dict(seq.logprobs)
                child.confidence = dict(seq.confidence)
        except BaseException:
            self.release(child)
            raise
        return child

    def cut(self, seq: Sequence, length: int, logits: np.ndarray | None, hidden: np.ndarray | None) -> None:
        """Drop a sequence's tokens from position ``length`` on (pending ones too); ``logits``
        and ``hidden`` are what it had at that length."""
        with deferred():
            # Cells first: if the cut fails after this, release still frees the
            # sequence whole (it removes all its positions from llama.cpp).
            self.cells.drop(seq.cells[length:])
            del seq.cells[length:]
            llama.llama_memory_seq_rm(self._memory, seq.seq_id, length, -1)
            seq.tokens = seq.tokens[:length]
            seq.pending = []
            seq.logits, seq.hidden = logits, hidden

    def forget_uncommitted(self, seq: Sequence) -> None:
        """Take out the positions a failed decode wrote past the sequence's committed tokens."""
        llama.llama_memory_seq_rm(self._memory, seq.seq_id, len(seq.tokens), -1)

    def commit(self, seq: Sequence, fed: list[int]) -> None:
        """Tokens a decode evaluated become the sequence's, each on a new cell."""
        seq.cells.extend(self.cells.new(len(fed)))
        seq.tokens.extend(fed)

    def release(self, seq: Sequence) -> None:
        """Free a sequence's KV cells and its id (a no-op for one already released).

        Each part is idempotent and the id goes back last, so a release that is
        interrupted can simply be done again."""
        if not self.owns(seq):
            return
        with deferred():
            llama.llama_memory_seq_rm(self._memory, seq.seq_id, -1, -1)
            self.cells.drop(seq.cells)
            seq.cells = []
            seq.tokens, seq.pending, seq.logits, seq.hidden = [], [], None, None
            seq.logprobs, seq.confidence = {}, {}
            del self._live[seq.seq_id]
            self.free_ids.append(seq.seq_id)

    def owns(self, seq: Sequence) -> bool:
        return self._live.get(seq.seq_id) is seq

    def cells_used(self, seq: Sequence) -> int:
        """Positions this sequence holds in llama.cpp's memory (0 when none)."""
        top = llama.llama_memory_seq_pos_max(self._memory, seq.seq_id)
        return top + 1 if top >= 0 else 0

    def positions_in_memory(self) -> dict[int, int]:
        """Positions llama.cpp itself holds, per sequence id that holds any:
        the ground truth the bookkeeping here must agree with."""
        held = {}
        for seq_id in range(self._n_seq_max):
            top = llama.llama_memory_seq_pos_max(self._memory, seq_id)
            if top >= 0:
                held[seq_id] = top - llama.llama_memory_seq_pos_min(self._memory, seq_id) + 1
        return held
