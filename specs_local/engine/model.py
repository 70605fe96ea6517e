"""The model: one GGUF file, one context, many sequences, evaluated in shared batches."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable

import llama_cpp as llama
import numpy as np

from ..errors import ContextFullError, SpecsError
from ..interrupts import deferred
from ..sampling import SamplerParams
from . import generation, scoring
from .accounting import KINDS, Usage
from .batching import Decoder, Feed
from .loading import ModelConfig, load_model, model_chat_template, new_context
from .sequences import Generation, Sequence, SequenceTable
from .vocab import Vocabulary


class Model:
    """A loaded GGUF model with one context holding many sequences."""

    def __init__(self, path: str | os.PathLike, config: ModelConfig = ModelConfig()):
        self.path = Path(path)
        self.config = config
        self.name = self.path.name
        # The MiB of weights in each buffer type, as llama.cpp's load reported them ("CPU_REPACK": ...).
        self._model, self.weight_buffers = load_model(self.path, config)
        self._ctx = self._decoder = None
        try:
            self.vocab = Vocabulary(self._model)
            self.n_vocab = self.vocab.n_tokens
            # The capture is held here as long as the context: C keeps only a pointer to its callback.
            self._ctx, self._capture = new_context(self._model, self.path, config)
            self.n_ctx = llama.llama_n_ctx(self._ctx)
            self.n_batch = llama.llama_n_batch(self._ctx)
            self.n_embd = llama.llama_model_n_embd(self._model)
            self.n_layer = llama.llama_model_n_layer(self._model)
            self._decoder = Decoder(self._ctx, name=self.name, n_ctx=self.n_ctx, n_batch=self.n_batch,
                                    n_vocab=self.n_vocab, n_embd=self.n_embd, embeddings=config.embeddings,
                                    capture=self._capture)
        except BaseException:
            self.close()
            raise
        self.sequences = SequenceTable(self._ctx, config.n_seq_max, self.name, config.workload)
        self.usage = Usage()
        # Set from any thread to stop the work in progress at its next decode (see Solver.cancel).
        self.cancel_event: threading.Event | None = None

    def close(self) -> None:
        if getattr(self, "_decoder", None) is not None:
            self._decoder.close()
            self._decoder = None
        if getattr(self, "_ctx", None):
            llama.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            llama.llama_model_free(self._model)
            self._model = None

    def __del__(self):  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

    # -- text ---------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        return model_chat_template(self._model)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The model's own chat template (Jinja, from the GGUF metadata), in a bounded sandbox."""
        from ..chat import render_template

        template = self.chat_template
        if not template:
            raise SpecsError(f"{self.name} has no chat template in its metadata; pass a model with one")
        vocab = self.vocab
        return render_template(
            template, name=self.name, messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=vocab.token_text(vocab.bos_token) if vocab.bos_token >= 0 else "",
            eos_token=vocab.token_text(vocab.eos_token) if vocab.eos_token >= 0 else "",
        )

    def tokenize(self, text: str | bytes, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return self.vocab.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Iterable[int], *, special: bool = True) -> str:
        return self.vocab.detokenize(tokens, special=special)

    @property
    def vocab_fingerprint(self) -> str:
        return self.vocab.fingerprint

    # -- sequences ----------------------------------------------------------

    @property
    def free_sequences(self) -> int:
        return len(self.sequences.free_ids)

    @property
    def live_sequences(self) -> list[Sequence]:
        return self.sequences.live

    @property
    def live_cells(self) -> int:
        """KV cells held by any live sequence (shared cells once)."""
        return self.sequences.cells.live

    def new_sequence(self, tokens: list[int] = (), kind: str = "prompt") -> Sequence:
        """A fresh sequence holding ``tokens``, evaluated with next-token logits."""
        seq = self.sequences.allocate()
        if tokens:
            try:
                self.extend([(seq, list(tokens))], kind=kind)
            except BaseException:
                self.release(seq)
                raise
        return seq

    def fork(self, seq: Sequence, n: int) -> list[Sequence]:
        """n copies of a sequence that share its KV cells: nothing is recomputed.

        Pending tokens are evaluated once in the parent first, so that the
        children do not each evaluate them."""
        self.flush([seq])
        if n > self.free_sequences:
            raise self.sequences.exhausted(f"{n} forks asked, {self.free_sequences} sequences free")
        children: list[Sequence] = []
        try:
            for _ in range(n):
                children.append(self.sequences.copy(seq))
        except BaseException:  # an interrupt half-way: the copies made so far go back
            self.release_all(children)
            raise
        return children

    def truncate(self, seq: Sequence, length: int, logits: np.ndarray | None = None,
                 hidden: np.ndarray | None = None) -> None:
        """Cut a sequence back to its first ``length`` tokens (pending ones included);
        ``logits`` and ``hidden`` are what it had at that length."""
        seq.logprobs = {pos: lp for pos, lp in seq.logprobs.items() if pos < length}
        seq.confidence = {pos: c for pos, c in seq.confidence.items() if pos < length}
        if length >= len(seq.tokens):
            seq.pending = seq.pending[: length - len(seq.tokens)]
            return
        self.sequences.cut(seq, length, logits, hidden)

    def append_lazily(self, seq: Sequence, tokens: list[int], kind: str = "prompt") -> None:
        """Add tokens without evaluating them yet: the next evaluation of this
        sequence (a fork, a generation, an extend) feeds them. A sequence that
        is released first never pays for them."""
        if seq.pending and seq.pending_kind != kind:
            self.extend([(seq, [])], kind=seq.pending_kind)
        seq.pending = seq.pending + list(tokens)
        seq.pending_kind = kind

    def flush(self, seqs: list[Sequence]) -> None:
        """Evaluate the pending tokens of several sequences in one batch."""
        stale = [s for s in seqs if s.pending]
        for kind in {s.pending_kind for s in stale}:
            self.extend([(s, []) for s in stale if s.pending_kind == kind], kind=kind)

    def release(self, seq: Sequence) -> None:
        """Free a sequence's KV cells and its id (a no-op for one already released)."""
        self.sequences.release(seq)

    def release_all(self, seqs: Iterable[Sequence], keep: Sequence | None = None) -> None:
        for seq in seqs:
            if seq is not keep:
                self.release(seq)

    def owns(self, seq: Sequence) -> bool:
        """True when ``seq`` is a live sequence of this model's context."""
        return self.sequences.owns(seq)

    def cells_used(self, seq: Sequence) -> int:
        """Positions this sequence holds in the KV cache (0 when none)."""
        return self.sequences.cells_used(seq)

    def positions_in_memory(self) -> dict[int, int]:
        """Positions llama.cpp itself holds, per sequence id that holds any."""
        return self.sequences.positions_in_memory()

    # -- evaluation ---------------------------------------------------------

    def extend(self, work: list[tuple[Sequence, list[int]]], *, kind: str, score: bool = False) -> list[np.ndarray]:
        """Append tokens to several sequences and evaluate them in shared batches.

        Each sequence's pending tokens are fed first. Afterwards every sequence
        has fresh next-token logits. With ``score=True`` it returns, for each
        work item, the log-probabilities of the appended tokens (the first one
        read from the logits the sequence already had), and each sequence keeps
        them, with their rows' confidence, by position."""
        assert kind in KINDS
        feeds = []
        for seq, new in work:
            fed = seq.pending + list(new)
            if not fed:
                raise ValueError("nothing to evaluate")
            feeds.append(Feed(seq, fed, len(seq.pending)))
        self._check_room(feeds)
        rows_wanted = [range(len(f.tokens)) if score else range(len(f.tokens) - 1, len(f.tokens)) for f in feeds]
        # per appended token: log-prob, self-certainty, token confidence (sampling.token_scores)
        logprob_out = [np.empty((len(f.tokens) - f.n_pending, 3)) for f in feeds]
        if score:
            scoring.record_first(feeds, logprob_out)
        outputs_before = [(f.seq.logits, f.seq.hidden) for f in feeds]
        try:
            self._decoder.run(feeds, rows_wanted, logprob_out, score, live_cells=self.live_cells,
                              usage=self.usage, cancel_event=self.cancel_event)
        except BaseException:
            # Nothing is committed yet: take out the positions the decode wrote.
            with deferred():
                for feed, (logits, hidden) in zip(feeds, outputs_before):
                    self.sequences.forget_uncommitted(feed.seq)
                    feed.seq.logits, feed.seq.hidden = logits, hidden
            raise
        with deferred():
            n_fed = 0
            for feed, logprobs in zip(feeds, logprob_out):
                seq = feed.seq
                if score:  # appended tokens start after the pending ones
                    at = len(seq.tokens) + feed.n_pending
                    seq.logprobs.update(zip(range(at, at + len(logprobs)), logprobs[:, 0].tolist()))
                    seq.confidence.update(zip(range(at, at + len(logprobs)), map(tuple, logprobs[:, 1:].tolist())))
                self.sequences.commit(seq, feed.tokens)
                seq.pending = []
                self.usage.add(seq.pending_kind, feed.n_pending)
                seq.pending_kind = "generated"
                n_fed += len(feed.tokens) - feed.n_pending
            self.usage.add(kind, n_fed)
        return [scored[:, 0] for scored in logprob_out]

    def _check_room(self, feeds: list[Feed]) -> None:
        for feed in feeds:
            if len(feed.seq.tokens) + len(feed.tokens) > self.n_ctx:
                raise ContextFullError(
                    f"{self.name}: {len(feed.seq.tokens) + len(feed.tokens)} tokens do not fit the context of {self.n_ctx}"
                )

    def score(self, prefix: Sequence, continuations: list[list[int]]) -> tuple[list[Sequence], list[np.ndarray]]:
        """Per-token log-probs of continuations of ``prefix``, in one prefill over its forks
        (:func:`scoring.score`); the forks are returned, ready to continue or release."""
        return scoring.score(self, [prefix], [continuations])

    def score_many(self, prefixes: list[Sequence], continuations: list[list[list[int]]]
                   ) -> tuple[list[Sequence], list[np.ndarray]]:
        """``score`` for several prefixes at once, all their continuations in one prefill."""
        return scoring.score(self, prefixes, continuations)

    def generate(self, seqs: list[Sequence], params: SamplerParams | list[SamplerParams],
                 rng: np.random.Generator | list[np.random.Generator],
                 *, max_tokens: int, stop_at_delimiter: bool = True,
                 stop_below: tuple[float, int] | None = None) -> list[Generation]:
        """One step in each sequence, one batch per decode, up to the delimiter, an end of
        generation or ``max_tokens``; with ``stop_below`` (bar, window), early stopping by
        confidence (:func:`generation.generate`)."""
        return generation.generate(self, seqs, params, rng, max_tokens=max_tokens,
                                   stop_at_delimiter=stop_at_delimiter, stop_below=stop_below)

    # -- accounting ---------------------------------------------------------

    def evaluated_tokens(self) -> int:
        """Tokens evaluated, as llama.cpp's perf counters report them."""
        return self._decoder.evaluated_tokens()

    def reset_usage(self) -> None:
        self._decoder.reset_counters()
        self.usage = Usage()
