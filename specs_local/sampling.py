"""Sampling on CPU-side logits, kept apart from the model call.

Every function takes raw logits (a float32 row over the vocabulary) and returns
tokens with their log-probability under the model's *untempered* distribution,
which is what SPECS' log-ratio scores need. Nothing here sorts the whole
vocabulary: candidates are found with ``argpartition``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplerParams:
    temperature: float = 0.7  # 0 means greedy
    top_k: int = 0  # 0 means no top-k cut
    top_p: float = 1.0


def logsumexp(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    peak = np.max(logits, axis=axis, keepdims=True)
    return (peak + np.log(np.sum(np.exp(logits - peak), axis=axis, keepdims=True))).squeeze(axis)


# DeepConf's token confidence (arXiv 2508.15260): minus the mean log-prob of the k likeliest tokens.
CONFIDENCE_TOP_K = 20


def token_confidence(rows: np.ndarray, block: int = 64) -> np.ndarray:
    """How sure each logits row is of its next token, as two figures per row:

    - self-certainty (arXiv 2502.18581): KL(uniform || p), ``logsumexp - mean(logits) - log V``;
      0 for a uniform row, larger the more the row concentrates;
    - DeepConf's token confidence: ``-(1/k) sum log p`` over the row's k likeliest tokens; larger
      when the top token takes the mass (the other k-1 are then unlikely).

    Returns an (n, 2) array. Rows go in blocks, as in `token_logprobs`."""
    rows = np.atleast_2d(rows)
    out = np.empty((len(rows), 2), dtype=np.float64)
    k = min(CONFIDENCE_TOP_K, rows.shape[-1])
    for start in range(0, len(rows), block):
        part = rows[start : start + block].astype(np.float32, copy=False)
        lse = logsumexp(part)
        out[start : start + block, 0] = lse - part.mean(axis=-1, dtype=np.float64) - np.log(part.shape[-1])
        top = np.partition(part, -k, axis=-1)[:, -k:]
        out[start : start + block, 1] = lse - top.mean(axis=-1, dtype=np.float64)
    return out


def token_logprobs(rows: np.ndarray, tokens: np.ndarray, block: int = 64) -> np.ndarray:
    """Log-softmax of each row, read at one token per row.

    Rows are processed in blocks so that a long prefill's logits never need a
    second full-size temporary."""
    rows = np.atleast_2d(rows)
    tokens = np.asarray(tokens, dtype=np.int64)
    out = np.empty(len(tokens), dtype=np.float64)
    for start in range(0, len(tokens), block):
        part = rows[start : start + block]
        picked = part[np.arange(len(part)), tokens[start : start + block]]
        out[start : start + block] = picked - logsumexp(part.astype(np.float32, copy=False))
    return out


def _top_candidates(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest logits, unordered, without a full sort."""
    if k >= logits.shape[-1]:
        return np.arange(logits.shape[-1])
    return np.argpartition(logits, -k)[-k:]


def _nucleus(ids: np.ndarray, probs: np.ndarray, top_p: float, total: float | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Keep the smallest prefix of candidates (by probability) whose mass reaches top_p of `total`.

    `total` is the mass of the whole distribution, which the candidates may be only
    part of; None means the candidates' own mass (top-p applied after a top-k cut)."""
    order = np.argsort(-probs)
    cumulative = np.cumsum(probs[order], dtype=np.float64)
    total = cumulative[-1] if total is None else total
    keep = int(np.searchsorted(cumulative, top_p * total)) + 1
    chosen = order[:keep]
    return ids[chosen], probs[chosen]


def sample_token(logits: np.ndarray, params: SamplerParams, rng: np.random.Generator) -> tuple[int, float]:
    """Sample one token; return it with its untempered log-probability."""
    logits = np.asarray(logits, dtype=np.float32)
    if params.temperature <= 0:
        token = int(np.argmax(logits))
    else:
        token = int(_sample_tempered(logits, params, rng))
    return token, float(logits[token] - logsumexp(logits))


def _sample_tempered(logits: np.ndarray, params: SamplerParams, rng: np.random.Generator) -> int:
    # Inverse-CDF sampling on unnormalised weights: two passes over the
    # vocabulary (exp, cumsum) and no validation pass, unlike rng.choice(p=...).
    scaled = (logits - logits.max()) * np.float32(1.0 / params.temperature)
    ids, weights = _candidates(scaled, params)
    pick = inverse_cdf(weights, rng.random())
    return int(ids[pick]) if ids is not None else pick


def _candidates(scaled: np.ndarray, params: SamplerParams) -> tuple[np.ndarray | None, np.ndarray]:
    """The tokens sampling may return (None: the whole vocabulary) and their unnormalised weights.

    Overwrites `scaled` when it keeps the whole vocabulary."""
    ids, total = None, None
    if params.top_k > 0:
        ids = _top_candidates(scaled, params.top_k)
    elif params.top_p < 1.0:
        ids, total = _nucleus_support(scaled, params.top_p)
    weights = np.exp(scaled[ids]) if ids is not None else np.exp(scaled, out=scaled)
    if params.top_p < 1.0:
        ids, weights = _nucleus(ids if ids is not None else np.arange(len(weights)), weights, params.top_p, total)
    return ids, weights


def inverse_cdf(weights: np.ndarray, u: float, block: int = 1024) -> int:
    """Index i with cumsum(weights)[i-1] <= u * total < cumsum(weights)[i].

    A plain cumsum over 152k entries is slow in numpy; summing blocks first
    and taking the cumsum inside one block gives the same index."""
    starts = np.arange(0, len(weights), block)
    block_cdf = np.cumsum(np.add.reduceat(weights, starts), dtype=np.float64)
    target = u * block_cdf[-1]
    b = min(int(np.searchsorted(block_cdf, target, side="right")), len(starts) - 1)
    inner = np.cumsum(weights[starts[b] : starts[b] + block], dtype=np.float64)
    offset = target - (block_cdf[b - 1] if b else 0.0)
    return int(starts[b]) + min(int(np.searchsorted(inner, offset, side="right")), len(inner) - 1)


def _nucleus_support(scaled: np.ndarray, top_p: float) -> tuple[np.ndarray, float]:
    """A candidate set sure to contain the top-p nucleus, and the whole vocabulary's
    mass (weights exp(scaled), `scaled` peaking at 0), which the nucleus is a share of.

    Grows a top-k window until its mass reaches top_p. Steps of reasoning models put
    nearly all mass on a few tokens, so the first window almost always suffices."""
    total = float(np.exp(scaled).sum(dtype=np.float64))
    k = 64
    while True:
        ids = _top_candidates(scaled, k)
        # The same sum as _nucleus's cumulative mass, so the two agree on where top_p is reached.
        if np.exp(scaled[ids]).sum(dtype=np.float64) >= top_p * total or k >= scaled.shape[-1]:
            return ids, total
        k *= 8


def token_scores(rows: np.ndarray, tokens) -> np.ndarray:
    """Per row: the log-prob of its token, then the row's `token_confidence` figures; (n, 3)."""
    return np.column_stack([token_logprobs(rows, tokens), token_confidence(rows)])


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - np.max(x))
    return e / e.sum()
