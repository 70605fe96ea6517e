"""Batching: tokens of many sequences fed through one explicit ``llama_batch`` per decode.

Each row carries a sequence id, a position and a token, in plain sight; positions come from
``Sequence.tokens`` and nowhere else. A decode's outputs (logits, and hidden states where the
context makes them) are copied out to the sequences whose last fed token they follow.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, NamedTuple

import llama_cpp as llama
import numpy as np

from ..errors import Cancelled, ContextFullError, SpecsError
from ..interrupts import deferred
from .accounting import Usage, evaluated_tokens
from .scoring import record_scored
from .sequences import Sequence

if TYPE_CHECKING:
    from .capture import ActivationCapture


class Feed(NamedTuple):
    """One sequence's part of an evaluation: its pending tokens, then the appended ones."""

    seq: Sequence
    tokens: list[int]
    n_pending: int


class Decoder:
    """One context's batch, the decodes through it, and the outputs read back."""

    def __init__(self, ctx, *, name: str, n_ctx: int, n_batch: int, n_vocab: int, n_embd: int, embeddings: bool,
                 capture: ActivationCapture | None) -> None:
        self._ctx = ctx
        self._name = name
        self._n_ctx = n_ctx
        self._n_batch = n_batch
        self._n_vocab = n_vocab
        self._n_embd = n_embd
        self._embeddings = embeddings
        self._capture = capture
        self._batch = llama.llama_batch_init(n_batch, 0, 1)
        # Which of llama.cpp's two perf counters (single-row, multi-row decodes) has real counts.
        self._seen_single = self._seen_multi = False

    def close(self) -> None:
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None

    def run(self, feeds: list[Feed], rows_wanted: list[range], logprob_out: list[np.ndarray], score: bool, *,
            live_cells: int, usage: Usage, cancel_event: threading.Event | None) -> None:
        """Feed every token of ``feeds``, chunked to n_batch rows per llama_decode. ``live_cells``
        counts the cells alive before these tokens."""
        entries = []  # (item, index in its tokens, wants output)
        for item, feed in enumerate(feeds):
            entries.extend((item, i, i in rows_wanted[item]) for i in range(len(feed.tokens)))
        for start in range(0, len(entries), self._n_batch):
            chunk = entries[start : start + self._n_batch]
            self._fill([(feeds[item].seq.seq_id, len(feeds[item].seq.tokens) + i, feeds[item].tokens[i], out)
                        for item, i, out in chunk])
            # The feeds' cells are committed once all of them succeed; until then count them here.
            self._decode(live_cells + start + len(chunk), usage, cancel_event)
            outputs = [(item, i) for item, i, out in chunk if out]
            if outputs:
                at = [r for r, (_, _, out) in enumerate(chunk) if out]  # where each output sits in the batch
                self._collect(feeds, outputs, logprob_out, score, at, len(chunk))

    def _fill(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """One explicit batch: (sequence id, position, token, wants logits) per row."""
        b = self._batch
        b.n_tokens = len(rows)
        if len(rows) == 1:
            self._seen_single = True
        else:
            self._seen_multi = True
        for r, (seq_id, pos, token, output) in enumerate(rows):
            b.token[r] = token
            b.pos[r] = pos
            b.n_seq_id[r] = 1
            b.seq_id[r][0] = seq_id
            b.logits[r] = output

    def _decode(self, live_cells: int, usage: Usage, cancel_event: threading.Event | None) -> None:
        if cancel_event is not None and cancel_event.is_set():
            raise Cancelled(f"{self._name}: cancelled")
        if self._capture is not None:
            self._capture.clear()
        # llama.cpp calls back into Python (capture, logging), and ctypes drops a KeyboardInterrupt
        # raised there: hold a Ctrl-C until this decode has run and been counted.
        with deferred():
            t0 = time.perf_counter()
            status = llama.llama_decode(self._ctx, self._batch)
            llama.llama_synchronize(self._ctx)
            usage.decode_seconds += time.perf_counter() - t0
            usage.decode_calls += 1
            usage.add_decode(self._batch.n_tokens, live_cells)
        if status == 1:
            raise ContextFullError(f"{self._name}: the KV cache is full (n_ctx={self._n_ctx}); raise --ctx")
        if status != 0:
            raise SpecsError(f"{self._name}: llama_decode failed with status {status}")

    def _collect(self, feeds: list[Feed], outputs, logprob_out, score: bool, at: list[int], n_rows: int) -> None:
        """``outputs``: (item, index) of each output row; ``at``: where each sits among the decode's ``n_rows``."""
        if self._embeddings:  # llama.cpp then outputs every row of the batch, flagged or not
            rows, hidden = self._logit_rows(n_rows)[at], self._hidden_rows(n_rows)[at]
        else:
            rows, hidden = self._logit_rows(len(outputs)), self._captured_hidden(at, n_rows)
        if score:
            record_scored(rows, outputs, feeds, logprob_out)
        for r, (item, i) in enumerate(outputs):
            if i == len(feeds[item].tokens) - 1:
                feeds[item].seq.logits = np.array(rows[r])  # a copy: the next decode reuses the buffer
                if hidden is not None:
                    feeds[item].seq.hidden = np.array(hidden[r])

    def _logit_rows(self, n: int) -> np.ndarray:
        """The logits of the last decode as an (n, n_vocab) view, no copy."""
        ptr = llama.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n, self._n_vocab))

    def _hidden_rows(self, n: int) -> np.ndarray:
        """Final-norm hidden states of the last decode's output rows (embeddings mode, pooling none)."""
        ptr = llama.llama_get_embeddings(self._ctx)
        if not ptr:
            raise SpecsError(f"{self._name}: no embeddings were produced")
        return np.ctypeslib.as_array(ptr, shape=(n, self._n_embd))

    def _captured_hidden(self, at: list[int], n_rows: int) -> np.ndarray | None:
        """The captured nodes at the output rows, side by side. A node of a
        middle layer holds every row of the batch; the last layer's output and
        the final norm only the output rows."""
        if self._capture is None:
            return None
        captured = self._capture.take(self._name)
        parts = []
        for name in self._capture.names:
            values = captured[name]
            parts.append(values[at] if len(values) == n_rows and len(values) != len(at) else values)
            if len(parts[-1]) != len(at):
                raise SpecsError(f"{self._name}: node {name} has {len(values)} rows for {len(at)} outputs")
        return np.concatenate(parts, axis=1)

    def evaluated_tokens(self) -> int:
        return evaluated_tokens(self._ctx, self._seen_single, self._seen_multi)

    def reset_counters(self) -> None:
        llama.llama_perf_context_reset(self._ctx)
        self._seen_single = self._seen_multi = False
