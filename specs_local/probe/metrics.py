"""Folds and metrics for a value head. Labels are 1 = the solution ended correct, 0 = wrong; ``groups``
is the problem id of each row, and ranking pairs are formed only inside a group: a search compares
candidate steps of one problem, never across.
"""
from __future__ import annotations

import numpy as np

from ..errors import SpecsError
from .logistic import as_labels, balanced_weights


def grouped_folds(groups, k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per row; all rows of a group share a fold.

    Groups are shuffled by ``seed`` then placed largest first into the fold
    with the fewest rows, so folds have near-equal row counts."""
    groups = np.asarray(groups)
    uniq, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if k < 2:
        raise SpecsError(f"need k >= 2 folds, got {k}")
    if len(uniq) < k:
        raise SpecsError(f"{len(uniq)} problems (groups) cannot fill {k} folds")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]  # largest first, random among equals
    load = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(len(uniq), dtype=np.int64)
    for gi in order:
        f = int(np.argmin(load))
        fold_of_group[gi] = f
        load[f] += counts[gi]
    return fold_of_group[inv.reshape(-1)]


def pairwise_accuracy(scores, labels, groups) -> tuple[float, int]:
    """Over all same-group pairs (one label 1, one label 0): the fraction where
    the correct item scores higher, ties counting 1/2. Returns (accuracy,
    n_pairs); accuracy is nan when there are no pairs."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = as_labels(labels, len(s))
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    g = g.reshape(-1)
    if len(g) != len(s):
        raise SpecsError(f"{len(s)} scores but {len(g)} group ids")
    n = len(s)
    if n == 0:
        return float("nan"), 0
    order = np.lexsort((s, g))
    gs, ss, neg = g[order], s[order], (y[order] == 0).astype(np.int64)
    idx = np.arange(n)
    new_group = np.r_[True, gs[1:] != gs[:-1]]
    new_block = new_group | np.r_[True, ss[1:] != ss[:-1]]  # a block = equal scores in one group
    gstart = np.maximum.accumulate(np.where(new_group, idx, 0))
    bstart = np.maximum.accumulate(np.where(new_block, idx, 0))
    before = np.r_[0, np.cumsum(neg)]  # negatives strictly before each position
    block_neg = np.add.reduceat(neg, np.flatnonzero(new_block))[np.cumsum(new_block) - 1]
    pos = neg == 0
    wins = float(np.sum((before[bstart] - before[gstart])[pos]) + 0.5 * np.sum(block_neg[pos]))
    n_neg = np.bincount(gs, weights=neg)
    n_pos = np.bincount(gs, weights=1 - neg)
    n_pairs = int(round(float(n_neg @ n_pos)))
    return (wins / n_pairs if n_pairs else float("nan")), n_pairs


def _average_ranks(x) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    start = np.r_[True, xs[1:] != xs[:-1]]
    bid = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    last = np.r_[first[1:], len(x)] - 1
    ranks = np.empty(len(x))
    ranks[order] = (first[bid] + last[bid]) / 2.0 + 1.0
    return ranks


def roc_auc(scores, labels) -> float:
    """Mann-Whitney AUC from average ranks (ties count 1/2); nan with one class."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = as_labels(labels, len(s))
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def brier(p, labels) -> float:
    p = np.asarray(p, dtype=np.float64)
    return float(np.mean((p - as_labels(labels, len(p))) ** 2))


def log_loss(p, labels, sample_weight=None, eps: float = 1e-12) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = as_labels(labels, len(p))
    ll = -np.where(y == 1, np.log(p), np.log1p(-p))
    return float(np.average(ll, weights=sample_weight))


def balanced_log_loss(p, labels) -> float:
    """Log-loss with both classes weighing equally (for balanced-trained scores)."""
    return log_loss(p, labels, balanced_weights(as_labels(labels, len(np.asarray(p)))))


def reliability_table(p, labels, bins: int = 10) -> list[dict]:
    """Equal-width bins on [0, 1]: row count, mean predicted, observed rate (None when empty)."""
    p = np.asarray(p, dtype=np.float64)
    y = as_labels(labels, len(p))
    which = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        rows.append({"lo": b / bins, "hi": (b + 1) / bins, "n": n,
                     "mean_predicted": float(p[m].mean()) if n else None,
                     "observed": float(y[m].mean()) if n else None})
    return rows
