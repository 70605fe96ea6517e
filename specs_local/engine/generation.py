"""Generation: one reasoning step in each of several sequences, sampled on CPU-side logits.

A step ends at the delimiter ``"\\n\\n"`` (kept in the step; detected on text, since tokens merge
it with their neighbours), at an end-of-generation token, or at a token budget. All sequences
share one batch per decode, and a finished one stops taking rows.

Early stopping (DeepConf's online mode, arXiv 2508.15260): with a bar, a sequence whose mean token
confidence over its last ``window`` tokens falls below it stops ("low_confidence") and is released
at once, so that neither its rows nor its KV cells cost the others anything more.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import SpecsError
from ..sampling import SamplerParams, sample_token, token_confidence, token_logprobs
from .sequences import Generation, Sequence

if TYPE_CHECKING:
    from .model import Model

STEP_DELIMITER = b"\n\n"


def generate(model: Model, seqs: list[Sequence], params: SamplerParams | list[SamplerParams],
             rng: np.random.Generator | list[np.random.Generator], *, max_tokens: int, stop_at_delimiter: bool = True,
             stop_below: tuple[float, int] | None = None) -> list[Generation]:
    """Generate one step in each sequence, all in one batch per decode. The last sampled token
    stays pending. ``params`` and ``rng`` are one for all, or one per sequence (independent
    samples: one sequence's draws do not move another's). ``stop_below``: (bar, window) of
    early stopping; a stopped sequence is released (see the module's doc)."""
    per_seq = params if isinstance(params, list) else [params] * len(seqs)
    rngs = rng if isinstance(rng, list) else [rng] * len(seqs)
    if len(per_seq) != len(seqs):
        raise SpecsError(f"internal: {len(per_seq)} samplers for {len(seqs)} sequences")
    if len(rngs) != len(seqs):
        raise SpecsError(f"internal: {len(rngs)} random generators for {len(seqs)} sequences")
    if any(s.logits is None and not s.pending for s in seqs):
        raise SpecsError("internal: generate() needs sequences with logits or pending tokens")
    model.flush(seqs)
    starts = [len(s.tokens) for s in seqs]
    gens = [Generation(s, [], [], "", "") for s in seqs]
    texts = [bytearray() for _ in seqs]
    active = list(range(len(seqs)))
    while active:
        feed = []
        for i in active:
            gen, seq = gens[i], seqs[i]
            token, logprob = sample_token(seq.logits, per_seq[i], rngs[i])
            gen.tokens.append(token)
            gen.logprobs.append(logprob)
            gen.confidence.append(tuple(token_confidence(seq.logits)[0]))
            gen.finish = _step_finish(model, gen, texts[i], token, max_tokens, stop_at_delimiter)
            if not gen.finish and stop_below is not None and window_confidence(gen.confidence, stop_below[1]) < stop_below[0]:
                gen.finish = "low_confidence"
                model.release(seq)
            if not gen.finish:
                feed.append(i)
        if feed:
            before = model.usage.decode_seconds
            model.extend([(seqs[i], [gens[i].tokens[-1]]) for i in feed], kind="generated")
            model.usage.generation_seconds += model.usage.decode_seconds - before
            model.usage.generation_rows += len(feed)
            model.usage.generation_calls += 1
        active = feed
    for gen, text, at in zip(gens, texts, starts):
        gen.text = text.decode("utf-8", errors="replace")
        if gen.finish == "low_confidence":
            continue  # released
        gen.seq.logprobs.update(zip(range(at, at + len(gen.tokens)), gen.logprobs))
        gen.seq.confidence.update(zip(range(at, at + len(gen.tokens)), gen.confidence))
    return gens


def window_confidence(confidence: list[tuple[float, float]], window: int) -> float:
    """The mean token confidence of the last ``window`` tokens (inf until there are that many)."""
    if len(confidence) < window:
        return float("inf")
    return float(np.mean([c for _, c in confidence[-window:]]))


def _step_finish(model: Model, gen: Generation, text: bytearray, token: int, max_tokens: int, stop: bool) -> str:
    """Why this step ends after ``token`` ("" if it goes on). A finished
    step leaves its last token pending in its sequence."""
    if model.vocab.is_end_of_generation(token):
        finish = "eog"
    else:
        before = len(text)
        text += model.vocab.token_piece(token)
        cut = _delimiter_end(text, max(0, before - len(STEP_DELIMITER) + 1)) if stop else None
        if cut is not None and cut < len(text):
            _split_overshoot(model, gen, text, before, cut)
            return "delimiter"
        finish = "delimiter" if cut is not None else "length" if len(gen.tokens) >= max_tokens else ""
    if finish:
        gen.seq.pending = [token]
    return finish


def _split_overshoot(model: Model, gen: Generation, text: bytearray, before: int, cut: int) -> None:
    """The last token ran past the delimiter: end the step exactly at it.

    The token is replaced by the tokens of its text up to the delimiter.
    The first replacement's log-prob comes from the same logits row; any
    further ones are evaluated to get theirs. The last stays pending."""
    seq = gen.seq
    replacement = model.vocab.tokenize(bytes(text[before:cut]), parse_special=False)
    del text[cut:]
    gen.tokens.pop()
    gen.logprobs.pop()  # its confidence stays: the first replacement is read from the same row
    at = len(seq.tokens) + len(seq.pending)
    gen.tokens.extend(replacement)
    gen.logprobs.append(float(token_logprobs(seq.logits, [replacement[0]])[0]))
    if len(replacement) > 1:
        logprobs = model.extend([(seq, replacement[:-1])], kind="generated", score=True)[0]
        gen.logprobs.extend(logprobs[1:].tolist())
        gen.confidence.extend(seq.confidence[p] for p in range(at + 1, at + len(replacement) - 1))
        gen.logprobs.append(float(token_logprobs(seq.logits, [replacement[-1]])[0]))
        gen.confidence.append(tuple(token_confidence(seq.logits)[0]))
    seq.pending = [replacement[-1]]


def _delimiter_end(text: bytearray, search_from: int) -> int | None:
    """End offset of the first delimiter that follows some non-blank text."""
    at = text.find(STEP_DELIMITER, search_from)
    while at != -1:
        if text[:at].strip():
            return at + len(STEP_DELIMITER)
        at = text.find(STEP_DELIMITER, at + 1)
    return None
