"""Scoring: the log-probabilities a model gives to tokens it is fed, read from the same decode.

A decode's row for a sequence's i-th fed token predicts the token after it, so scoring a
continuation costs no decode beyond evaluating it; its first token is read from the logits the
sequence already had.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import SpecsError
from ..sampling import token_scores

if TYPE_CHECKING:
    from .batching import Feed
    from .model import Model
    from .sequences import Sequence


def score(model: Model, prefixes: list[Sequence], continuations: list[list[list[int]]]
          ) -> tuple[list[Sequence], list[np.ndarray]]:
    """Per-token log-probs of continuations of several prefixes (``continuations[i]`` those of
    ``prefixes[i]``), in one batched prefill over forks of the prefixes (which are not
    re-evaluated).

    Returns the forked sequences in order (each holding prefix + continuation, ready to
    continue or to be released) and the log-prob arrays."""
    model.flush(prefixes)  # their pending tokens in one batch, before the forks
    children: list[Sequence] = []
    try:
        for prefix, conts in zip(prefixes, continuations):
            children += model.fork(prefix, len(conts))
        flat = [tokens for conts in continuations for tokens in conts]
        logprobs = model.extend(list(zip(children, flat)), kind="scored", score=True)
    except BaseException:
        model.release_all(children)
        raise
    return children, logprobs


def record_first(feeds: list[Feed], logprob_out: list[np.ndarray]) -> None:
    """Each appended first token that follows no pending token is scored by the sequence's logits.
    ``logprob_out`` holds one (n, 3) array per feed: `token_scores` of each appended token."""
    for feed, out in zip(feeds, logprob_out):
        if feed.n_pending == 0 and feed.tokens:
            if feed.seq.logits is None:
                raise SpecsError("internal: scoring a sequence without logits")
            out[0] = token_scores(feed.seq.logits, [feed.tokens[0]])[0]


def record_scored(rows: np.ndarray, outputs: list[tuple[int, int]], feeds: list[Feed],
                  logprob_out: list[np.ndarray]) -> None:
    """Log-probs of appended tokens from one decode's output ``rows``; ``outputs`` gives the
    (item, index in its fed tokens) of each row."""
    # The row for tokens[i] predicts tokens[i+1]; it scores an appended token when i+1 >= n_pending.
    picks = [
        (r, item, i + 1 - feeds[item].n_pending)
        for r, (item, i) in enumerate(outputs)
        if i + 1 < len(feeds[item].tokens) and i + 1 >= feeds[item].n_pending
    ]
    if picks:
        idx = np.array([r for r, _, _ in picks])
        next_tokens = [feeds[item].tokens[slot + feeds[item].n_pending] for _, item, slot in picks]
        values = token_scores(rows[idx], next_tokens)
        for (_, item, slot), value in zip(picks, values):
            logprob_out[item][slot] = value
