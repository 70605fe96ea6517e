"""The llama.cpp engine: one GGUF model, one context, many sequences.

All sequences of a model live in one KV cache (``kv_unified``), so a shared
prefix is evaluated once and forked with ``llama_memory_seq_cp``. Every decode
is one explicit ``llama_batch`` whose rows carry a sequence id and a position;
positions come from ``Sequence.tokens`` and nowhere else.

Token accounting: each evaluated token belongs to one of three kinds, counted
per model, and llama.cpp's own perf counters report the total evaluated:
- ``prompt``: text handed to the model (prompts, questions, other models' steps);
- ``generated``: tokens this model sampled, fed back to continue;
- ``scored``: candidate tokens evaluated to score them.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import Cancelled, ContextFullError, ModelLoadError, OutOfSequencesError, SpecsError
from .interrupts import deferred
from .sampling import SamplerParams, sample_token, token_logprobs

import llama_cpp as llama  # noqa: E402  (the low-level ctypes bindings)

STEP_DELIMITER = b"\n\n"
KINDS = ("prompt", "generated", "scored")

# ---------------------------------------------------------------------------
# Backend and logging
# ---------------------------------------------------------------------------

_LOG_TAIL: deque[str] = deque(maxlen=20)
_backend_ready = False


@llama.llama_log_callback
def _log_to_tail(level, text, _user_data):  # pragma: no cover - called from C
    # Keep llama.cpp quiet; remember recent messages so that load errors can say why.
    message = text.decode("utf-8", errors="replace").strip() if text else ""
    if message:
        _LOG_TAIL.append(message)
    if os.environ.get("SPECS_LOCAL_LLAMA_LOG"):
        print(message, flush=True)


def _ensure_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        llama.llama_log_set(_log_to_tail, ctypes.c_void_p(0))
        llama.llama_backend_init()
        _backend_ready = True


def supports_gpu_offload() -> bool:
    _ensure_backend()
    return bool(llama.llama_supports_gpu_offload())


# ---------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    n_ctx: int = 8192
    n_batch: int = 512
    n_seq_max: int = 16
    kv_unified: bool = True
    n_gpu_layers: int = 0  # -1: all layers
    main_gpu: int = 0
    flash_attn: bool | None = None  # None: llama.cpp decides
    n_threads: int | None = None  # None: all cores
    embeddings: bool = False  # per-token hidden states (value-head PRMs)
    # Graph nodes copied out of each decode (see capture.py), e.g. ("l_out-13",):
    # a sequence's ``hidden`` is then their values at its last token, concatenated.
    capture: tuple[str, ...] = ()


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


@dataclass
class Generation:
    """One generated step: its tokens, their untempered log-probs, its text."""

    seq: Sequence
    tokens: list[int]
    logprobs: list[float]
    text: str
    finish: str  # "delimiter" | "eog" | "length"

    @property
    def mean_logprob(self) -> float:
        return float(np.mean(self.logprobs)) if self.logprobs else 0.0


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


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


def check_gguf_file(path: Path) -> None:
    """Fail with one line for a missing file or a file that is not GGUF."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"not a GGUF file: {path}")


class Model:
    """A loaded GGUF model with one context holding many sequences."""

    def __init__(self, path: str | os.PathLike, config: ModelConfig = ModelConfig()):
        _ensure_backend()
        self.path = Path(path)
        self.config = config
        check_gguf_file(self.path)
        self._model = self._load_model()
        self._ctx = None
        try:
            self._vocab = llama.llama_model_get_vocab(self._model)
            self.n_vocab = llama.llama_vocab_n_tokens(self._vocab)
            self._ctx = self._new_context()
            self._memory = llama.llama_get_memory(self._ctx)
        except BaseException:
            self.close()
            raise
        self.n_ctx = llama.llama_n_ctx(self._ctx)
        self.n_batch = llama.llama_n_batch(self._ctx)
        self.n_embd = llama.llama_model_n_embd(self._model)
        self.n_layer = llama.llama_model_n_layer(self._model)
        self._batch = llama.llama_batch_init(self.n_batch, 0, 1)
        self._free_ids = list(range(config.n_seq_max - 1, -1, -1))
        self._live: dict[int, Sequence] = {}
        self._cells = KVCells()
        self._pieces: dict[int, bytes] = {}
        self.usage = Usage()
        self._seen_single = self._seen_multi = False
        self._fingerprint: str | None = None
        self.name = self.path.name
        # Set from any thread to stop the work in progress at its next decode (see Solver.cancel).
        self.cancel_event: threading.Event | None = None

    # -- loading ------------------------------------------------------------

    def _load_model(self):
        params = llama.llama_model_default_params()
        params.n_gpu_layers = self.config.n_gpu_layers if self.config.n_gpu_layers >= 0 else 999
        params.main_gpu = self.config.main_gpu
        _LOG_TAIL.clear()
        model = llama.llama_model_load_from_file(str(self.path).encode(), params)
        if not model:
            reason = next((m for m in reversed(_LOG_TAIL) if "error" in m.lower() or "fail" in m.lower()), "")
            detail = f": {reason}" if reason else ""
            raise ModelLoadError(f"could not load GGUF model {self.path} (truncated or corrupt?){detail}")
        return model

    def _new_context(self):
        cfg = self.config
        params = llama.llama_context_default_params()
        params.n_ctx = cfg.n_ctx
        params.n_batch = cfg.n_batch
        params.n_ubatch = cfg.n_batch
        params.n_seq_max = cfg.n_seq_max
        params.kv_unified = cfg.kv_unified
        threads = cfg.n_threads or os.cpu_count() or 1
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = False  # the token counters are the accounting's ground truth
        params.flash_attn_type = {
            None: llama.LLAMA_FLASH_ATTN_TYPE_AUTO,
            True: llama.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            False: llama.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[cfg.flash_attn]
        if cfg.embeddings:
            params.embeddings = True
            params.pooling_type = llama.LLAMA_POOLING_TYPE_NONE
        self._capture = None
        if cfg.capture:
            if cfg.embeddings:
                raise SpecsError("a model reads hidden states by embeddings or by capture, not both")
            from .capture import ActivationCapture

            self._capture = ActivationCapture(cfg.capture)  # held here: C keeps only a pointer to its callback
            params.cb_eval = self._capture.callback
            params.cb_eval_user_data = None
        ctx = llama.llama_init_from_model(self._model, params)
        if not ctx:
            raise ModelLoadError(f"could not create a context for {self.path} (n_ctx={cfg.n_ctx}: out of memory?)")
        return ctx

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None
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

    # -- metadata -----------------------------------------------------------

    def metadata(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = llama.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    @property
    def chat_template(self) -> str | None:
        raw = llama.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def token_text(self, token: int) -> str:
        return llama.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")

    @property
    def eos_token(self) -> int:
        return llama.llama_vocab_eos(self._vocab)

    @property
    def eot_token(self) -> int:
        return llama.llama_vocab_eot(self._vocab)

    @property
    def bos_token(self) -> int:
        return llama.llama_vocab_bos(self._vocab)

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama.llama_vocab_is_eog(self._vocab, token))

    @property
    def vocab_fingerprint(self) -> str:
        """sha256 of the token list: equal fingerprints mean one tokenizer."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for token in range(self.n_vocab):
                h.update(llama.llama_vocab_get_text(self._vocab, token))
                h.update(b"\x00")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The model's own chat template (Jinja, from the GGUF metadata), in a bounded sandbox."""
        from .chat import render_template

        template = self.chat_template
        if not template:
            raise SpecsError(f"{self.name} has no chat template in its metadata; pass a model with one")
        return render_template(
            template, name=self.name, messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.token_text(self.bos_token) if self.bos_token >= 0 else "",
            eos_token=self.token_text(self.eos_token) if self.eos_token >= 0 else "",
        )

    # -- text <-> tokens ----------------------------------------------------

    def tokenize(self, text: str | bytes, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else text
        capacity = len(data) + 8
        buf = (llama.llama_token * capacity)()
        n = llama.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:  # the buffer was too small: -n tokens are needed
            capacity = -n
            buf = (llama.llama_token * capacity)()
            n = llama.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def token_piece(self, token: int) -> bytes:
        """The bytes a token stands for; control tokens give b""."""
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = llama.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def detokenize(self, tokens: Iterable[int], *, special: bool = True) -> str:
        tokens = list(tokens)
        if not tokens:
            return ""
        arr = (llama.llama_token * len(tokens))(*tokens)
        capacity = len(tokens) * 16 + 16
        buf = ctypes.create_string_buffer(capacity)
        n = llama.llama_detokenize(self._vocab, arr, len(tokens), buf, capacity, False, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama.llama_detokenize(self._vocab, arr, len(tokens), buf, -n, False, special)
        return buf.raw[:n].decode("utf-8", errors="replace")

    # -- sequences ----------------------------------------------------------

    @property
    def free_sequences(self) -> int:
        return len(self._free_ids)

    def _allocate(self) -> Sequence:
        if not self._free_ids:
            raise OutOfSequencesError(
                f"{self.name}: all {self.config.n_seq_max} parallel sequences are in use (raise n_seq_max)"
            )
        with deferred():  # an id is either free or live, never neither
            seq = Sequence(self._free_ids.pop())
            self._live[seq.seq_id] = seq
        return seq

    def new_sequence(self, tokens: list[int] = (), kind: str = "prompt") -> Sequence:
        """A fresh sequence holding ``tokens``, evaluated with next-token logits."""
        seq = self._allocate()
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
            raise OutOfSequencesError(
                f"{self.name}: {n} forks asked, {self.free_sequences} sequences free (raise n_seq_max)"
            )
        children: list[Sequence] = []
        try:
            for _ in range(n):
                children.append(self._copy(seq))
        except BaseException:  # an interrupt half-way: the copies made so far go back
            self.release_all(children)
            raise
        return children

    def _copy(self, seq: Sequence) -> Sequence:
        """One fork. A child holds cells only once they are counted as shared."""
        child = self._allocate()
        try:
            with deferred():
                llama.llama_memory_seq_cp(self._memory, seq.seq_id, child.seq_id, -1, -1)
                self._cells.share(seq.cells)
                child.cells = list(seq.cells)
                child.tokens = list(seq.tokens)
                child.logits, child.hidden = seq.logits, seq.hidden
                child.logprobs = dict(seq.logprobs)
        except BaseException:
            self.release(child)
            raise
        return child

    def truncate(self, seq: Sequence, length: int, logits: np.ndarray | None = None,
                 hidden: np.ndarray | None = None) -> None:
        """Cut a sequence back to its first ``length`` tokens (pending ones included);
        ``logits`` and ``hidden`` are what it had at that length."""
        seq.logprobs = {pos: lp for pos, lp in seq.logprobs.items() if pos < length}
        if length >= len(seq.tokens):
            seq.pending = seq.pending[: length - len(seq.tokens)]
            return
        with deferred():
            # Cells first: if the cut fails after this, release still frees the
            # sequence whole (it removes all its positions from llama.cpp).
            self._cells.drop(seq.cells[length:])
            del seq.cells[length:]
            llama.llama_memory_seq_rm(self._memory, seq.seq_id, length, -1)
            seq.tokens = seq.tokens[:length]
            seq.pending = []
            seq.logits, seq.hidden = logits, hidden

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
        """Free a sequence's KV cells and its id (a no-op for one already released).

        Each part is idempotent and the id goes back last, so a release that is
        interrupted can simply be done again."""
        if not self.owns(seq):
            return
        with deferred():
            llama.llama_memory_seq_rm(self._memory, seq.seq_id, -1, -1)
            self._cells.drop(seq.cells)
            seq.cells = []
            seq.tokens, seq.pending, seq.logits, seq.hidden = [], [], None, None
            seq.logprobs = {}
            del self._live[seq.seq_id]
            self._free_ids.append(seq.seq_id)

    def release_all(self, seqs: Iterable[Sequence], keep: Sequence | None = None) -> None:
        for seq in seqs:
            if seq is not keep:
                self.release(seq)

    def owns(self, seq: Sequence) -> bool:
        """True when ``seq`` is a live sequence of this model's context."""
        return self._live.get(seq.seq_id) is seq

    def cells_used(self, seq: Sequence) -> int:
        """Positions this sequence holds in the KV cache (0 when none)."""
        top = llama.llama_memory_seq_pos_max(self._memory, seq.seq_id)
        return top + 1 if top >= 0 else 0

    def positions_in_memory(self) -> dict[int, int]:
        """Positions llama.cpp itself holds, per sequence id that holds any:
        the ground truth the bookkeeping above must agree with."""
        held = {}
        for seq_id in range(self.config.n_seq_max):
            top = llama.llama_memory_seq_pos_max(self._memory, seq_id)
            if top >= 0:
                held[seq_id] = top - llama.llama_memory_seq_pos_min(self._memory, seq_id) + 1
        return held

    @property
    def live_cells(self) -> int:
        """KV cells held by any live sequence (shared cells once)."""
        return self._cells.live

    @property
    def live_sequences(self) -> list[Sequence]:
        return list(self._live.values())

    # -- evaluation ---------------------------------------------------------

    def extend(self, work: list[tuple[Sequence, list[int]]], *, kind: str, score: bool = False) -> list[np.ndarray]:
        """Append tokens to several sequences and evaluate them in shared batches.

        Each sequence's pending tokens are fed first. Afterwards every sequence
        has fresh next-token logits. With ``score=True`` it returns, for each
        work item, the log-probabilities of the appended tokens (the first one
        read from the logits the sequence already had)."""
        assert kind in KINDS
        plan = []  # per item: the tokens fed and where the appended ones start
        for seq, new in work:
            fed = seq.pending + list(new)
            if not fed:
                raise ValueError("nothing to evaluate")
            plan.append((seq, fed, len(seq.pending)))
        self._check_room(plan)
        rows_wanted = [range(len(fed)) if score else range(len(fed) - 1, len(fed)) for _, fed, _ in plan]
        logprob_out = [np.empty(len(fed) - start) for _, fed, start in plan]
        if score:
            for (seq, fed, start), out in zip(plan, logprob_out):
                if start == 0 and len(fed) > 0:
                    if seq.logits is None:
                        raise SpecsError("internal: scoring a sequence without logits")
                    out[0] = token_logprobs(seq.logits, [fed[0]])[0]
        outputs_before = [(seq.logits, seq.hidden) for seq, _, _ in plan]
        try:
            self._decode_plan(plan, rows_wanted, logprob_out, score)
        except BaseException:
            # Nothing is committed yet: take out the positions the decode wrote.
            with deferred():
                for (seq, _, _), (logits, hidden) in zip(plan, outputs_before):
                    llama.llama_memory_seq_rm(self._memory, seq.seq_id, len(seq.tokens), -1)
                    seq.logits, seq.hidden = logits, hidden
            raise
        with deferred():
            n_fed = 0
            for (seq, fed, n_pending), logprobs in zip(plan, logprob_out):
                if score:  # appended tokens start after the pending ones
                    at = len(seq.tokens) + n_pending
                    seq.logprobs.update(zip(range(at, at + len(logprobs)), logprobs.tolist()))
                seq.cells.extend(self._cells.new(len(fed)))
                seq.tokens.extend(fed)
                seq.pending = []
                self.usage.add(seq.pending_kind, n_pending)
                seq.pending_kind = "generated"
                n_fed += len(fed) - n_pending
            self.usage.add(kind, n_fed)
        return logprob_out

    def _check_room(self, plan) -> None:
        for seq, fed, _ in plan:
            if len(seq.tokens) + len(fed) > self.n_ctx:
                raise ContextFullError(
                    f"{self.name}: {len(seq.tokens) + len(fed)} tokens do not fit the context of {self.n_ctx}"
                )

    def _decode_plan(self, plan, rows_wanted, logprob_out, score: bool) -> None:
        """Feed every planned token, chunked to n_batch rows per llama_decode."""
        entries = []  # (item, index in fed, wants output)
        for item, (seq, fed, _) in enumerate(plan):
            wanted = rows_wanted[item]
            for i in range(len(fed)):
                entries.append((item, i, i in wanted))
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start : start + self.n_batch]
            self._fill_batch(
                [
                    (plan[item][0].seq_id, len(plan[item][0].tokens) + i, plan[item][1][i], out)
                    for item, i, out in chunk
                ]
            )
            # Cells of this plan are committed after it succeeds; until then count them here.
            self._decode_batch(live_cells=self._cells.live + start + len(chunk))
            outputs = [(item, i) for item, i, out in chunk if out]
            if outputs:
                at = [r for r, (_, _, out) in enumerate(chunk) if out]  # where each output sits in the batch
                self._collect(plan, outputs, logprob_out, score, at, len(chunk))

    def _fill_batch(self, rows: list[tuple[int, int, int, bool]]) -> None:
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

    def _decode_batch(self, live_cells: int) -> None:
        if self.cancel_event is not None and self.cancel_event.is_set():
            raise Cancelled(f"{self.name}: cancelled")
        if self._capture is not None:
            self._capture.clear()
        t0 = time.perf_counter()
        status = llama.llama_decode(self._ctx, self._batch)
        llama.llama_synchronize(self._ctx)
        self.usage.decode_seconds += time.perf_counter() - t0
        self.usage.decode_calls += 1
        self.usage.add_decode(self._batch.n_tokens, live_cells)
        if status == 1:
            raise ContextFullError(f"{self.name}: the KV cache is full (n_ctx={self.n_ctx}); raise --ctx")
        if status != 0:
            raise SpecsError(f"{self.name}: llama_decode failed with status {status}")

    def _output_rows(self, n: int) -> np.ndarray:
        """The logits of the last decode as an (n, n_vocab) view, no copy."""
        ptr = llama.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n, self.n_vocab))

    def _collect(self, plan, outputs, logprob_out, score: bool, at: list[int], n_rows: int) -> None:
        """``at``: where each output sits among the decode's ``n_rows`` rows."""
        if self.config.embeddings:  # llama.cpp then outputs every row of the batch, flagged or not
            rows, hidden = self._output_rows(n_rows)[at], self._output_hidden(n_rows)[at]
        else:
            rows, hidden = self._output_rows(len(outputs)), self._captured_hidden(at, n_rows)
        if score:
            # Row for fed[i] predicts fed[i+1]; it scores an appended token when i+1 >= start.
            picks = [
                (r, item, i + 1 - plan[item][2])
                for r, (item, i) in enumerate(outputs)
                if i + 1 < len(plan[item][1]) and i + 1 >= plan[item][2]
            ]
            if picks:
                idx = np.array([r for r, _, _ in picks])
                next_tokens = [plan[item][1][i + plan[item][2]] for _, item, i in picks]
                values = token_logprobs(rows[idx], next_tokens)
                for (_, item, slot), value in zip(picks, values):
                    logprob_out[item][slot] = value
        for r, (item, i) in enumerate(outputs):
            if i == len(plan[item][1]) - 1:
                plan[item][0].logits = np.array(rows[r])  # a copy: the next decode reuses the buffer
                if hidden is not None:
                    plan[item][0].hidden = np.array(hidden[r])

    def _captured_hidden(self, at: list[int], n_rows: int) -> np.ndarray | None:
        """The captured nodes at the output rows, side by side. A node of a
        middle layer holds every row of the batch; the last layer's output and
        the final norm only the output rows."""
        if self._capture is None:
            return None
        captured = self._capture.take(self.name)
        parts = []
        for name in self._capture.names:
            values = captured[name]
            parts.append(values[at] if len(values) == n_rows and len(values) != len(at) else values)
            if len(parts[-1]) != len(at):
                raise SpecsError(f"{self.name}: node {name} has {len(values)} rows for {len(at)} outputs")
        return np.concatenate(parts, axis=1)

    def _output_hidden(self, n: int) -> np.ndarray:
        """Final-norm hidden states of the last decode's output rows (pooling none)."""
        ptr = llama.llama_get_embeddings(self._ctx)
        if not ptr:
            raise SpecsError(f"{self.name}: no embeddings were produced")
        return np.ctypeslib.as_array(ptr, shape=(n, self.n_embd))

    # -- higher-level operations -------------------------------------------

    def score(self, prefix: Sequence, continuations: list[list[int]]) -> tuple[list[Sequence], list[np.ndarray]]:
        """Per-token log-probs of several continuations of one prefix, in one
        batched prefill over forks of the prefix (which is not re-evaluated).

        Returns the forked sequences (each holding prefix + continuation, ready
        to continue or to be released) and the log-prob arrays."""
        children = self.fork(prefix, len(continuations))
        try:
            logprobs = self.extend(list(zip(children, continuations)), kind="scored", score=True)
        except BaseException:
            self.release_all(children)
            raise
        return children, logprobs

    def generate(
        self,
        seqs: list[Sequence],
        params: SamplerParams | list[SamplerParams],
        rng: np.random.Generator,
        *,
        max_tokens: int,
        stop_at_delimiter: bool = True,
    ) -> list[Generation]:
        """Generate one step in each sequence, all in one batch per decode.

        A step ends when its text contains the delimiter (kept in the step;
        detected on text, since tokens merge it with neighbours), at an
        end-of-generation token, or at ``max_tokens``. Finished sequences stop
        taking batch rows. The last sampled token stays pending. ``params`` is one
        sampler for all, or one per sequence."""
        per_seq = params if isinstance(params, list) else [params] * len(seqs)
        if len(per_seq) != len(seqs):
            raise SpecsError(f"internal: {len(per_seq)} samplers for {len(seqs)} sequences")
        if any(s.logits is None and not s.pending for s in seqs):
            raise SpecsError("internal: generate() needs sequences with logits or pending tokens")
        self.flush(seqs)
        starts = [len(s.tokens) for s in seqs]
        gens = [Generation(s, [], [], "", "") for s in seqs]
        texts = [bytearray() for _ in seqs]
        active = list(range(len(seqs)))
        while active:
            feed = []
            for i in active:
                gen, seq = gens[i], seqs[i]
                token, logprob = sample_token(seq.logits, per_seq[i], rng)
                gen.tokens.append(token)
                gen.logprobs.append(logprob)
                gen.finish = self._step_finish(gen, texts[i], token, max_tokens, stop_at_delimiter)
                if not gen.finish:
                    feed.append(i)
            if feed:
                before = self.usage.decode_seconds
                self.extend([(seqs[i], [gens[i].tokens[-1]]) for i in feed], kind="generated")
                self.usage.generation_seconds += self.usage.decode_seconds - before
                self.usage.generation_rows += len(feed)
                self.usage.generation_calls += 1
            active = feed
        for gen, text, at in zip(gens, texts, starts):
            gen.text = text.decode("utf-8", errors="replace")
            gen.seq.logprobs.update(zip(range(at, at + len(gen.tokens)), gen.logprobs))
        return gens

    def _step_finish(self, gen: Generation, text: bytearray, token: int, max_tokens: int, stop: bool) -> str:
        """Why this step ends after ``token`` ("" if it goes on). A finished
        step leaves its last token pending in its sequence."""
        if self.is_end_of_generation(token):
            finish = "eog"
        else:
            before = len(text)
            text += self.token_piece(token)
            cut = _delimiter_end(text, max(0, before - len(STEP_DELIMITER) + 1)) if stop else None
            if cut is not None and cut < len(text):
                self._split_overshoot(gen, text, before, cut)
                return "delimiter"
            finish = "delimiter" if cut is not None else "length" if len(gen.tokens) >= max_tokens else ""
        if finish:
            gen.seq.pending = [token]
        return finish

    def _split_overshoot(self, gen: Generation, text: bytearray, before: int, cut: int) -> None:
        """The last token ran past the delimiter: end the step exactly at it.

        The token is replaced by the tokens of its text up to the delimiter.
        The first replacement's log-prob comes from the same logits row; any
        further ones are evaluated to get theirs. The last stays pending."""
        seq = gen.seq
        replacement = self.tokenize(bytes(text[before:cut]), parse_special=False)
        del text[cut:]
        gen.tokens.pop()
        gen.logprobs.pop()
        gen.tokens.extend(replacement)
        gen.logprobs.append(float(token_logprobs(seq.logits, [replacement[0]])[0]))
        if len(replacement) > 1:
            logprobs = self.extend([(seq, replacement[:-1])], kind="generated", score=True)[0]
            gen.logprobs.extend(logprobs[1:].tolist())
            gen.logprobs.append(float(token_logprobs(seq.logits, [replacement[-1]])[0]))
        seq.pending = [replacement[-1]]

    # -- accounting ---------------------------------------------------------

    def evaluated_tokens(self) -> int:
        """Tokens evaluated, as llama.cpp's perf counters report them.

        llama.cpp counts single-token decodes in n_eval and larger ones in
        n_p_eval, and reports each as max(1, n): a counter whose kind of decode
        never happened is really 0."""
        data = llama.llama_perf_context(self._ctx)
        multi = int(data.n_p_eval) if self._seen_multi else 0
        single = int(data.n_eval) if self._seen_single else 0
        return multi + single

    def reset_usage(self) -> None:
        llama.llama_perf_context_reset(self._ctx)
        self.usage = Usage()
        self._seen_single = self._seen_multi = False


def _delimiter_end(text: bytearray, search_from: int) -> int | None:
    """End offset of the first delimiter that follows some non-blank text."""
    at = text.find(STEP_DELIMITER, search_from)
    while at != -1:
        if text[:at].strip():
            return at + len(STEP_DELIMITER)
        at = text.find(STEP_DELIMITER, at + 1)
    return None
