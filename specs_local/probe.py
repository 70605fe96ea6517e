"""Outcome-supervised value head ("probe") on a target model's hidden states.

A linear probe reads the hidden state at the end of a reasoning step and
predicts the probability that the solution ends correct (OVM, arXiv
2311.09724). This module holds the maths only: the logistic fit, grouped
cross-validation, Platt calibration, metrics and the head file. Collecting
features from models happens elsewhere.

Conventions:

* ``fit_logistic`` minimises the *weighted mean* log-loss plus
  ``l2/2 * ||w||^2`` (intercept unpenalised), so an ``l2`` value means the same
  thing at any number of rows.
* Labels are 1 = the solution ended correct, 0 = wrong; ``groups`` is the
  problem id of each row. Pairs for ranking metrics are only formed inside a
  group: a search compares candidate steps of one problem, never across.
"""
from __future__ import annotations

import json
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import HeadMismatchError, SpecsError

DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# weights of a scalar feature beside the hidden state's decision (log-odds units
# per unit of the scalar; a mean log-prob spans about 0.5)
DEFAULT_SCALAR_GRID = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
FORMAT = "specs-probe-1"
# the scalar a head may read beside the hidden state: the target's mean log-prob
# per token over the solution so far (its steps, not the prompt)
SOLUTION_LOGPROB = "solution_logprob"
_F32_ABOVE = 2_000_000  # X.size above which training runs in float32 (memory-bound products run ~3x faster)


# -- small helpers -------------------------------------------------------------


def sigmoid(z) -> np.ndarray:
    # exp(-log(1+e^-z)) has no overflow in either tail
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


def _as_labels(y, n: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or (n is not None and len(y) != n):
        raise SpecsError(f"labels must be a 1-D array of {n} values, got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise SpecsError("labels must be 0 (wrong) or 1 (correct)")
    return y.astype(np.int8)


def balanced_weights(y) -> np.ndarray:
    """Per-row weights giving both classes the same total weight (mean weight 1).

    Why: outcome labels are often 80/20 or worse; unweighted, the fit spends its
    capacity on the base rate. With one class absent, all weights are 1."""
    y = np.asarray(y)
    n, n1 = len(y), int(np.sum(y == 1))
    if n1 == 0 or n1 == n:
        return np.ones(n)
    return np.where(y == 1, n / (2.0 * n1), n / (2.0 * (n - n1)))


def fit_standardizer(X, floor_ratio: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) per feature. The scale is floored at ``floor_ratio`` times
    the mean std so a (near-)constant feature is not blown up at predict time;
    all-constant data gets scale 1."""
    X = np.asarray(X)
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    floor = floor_ratio * float(std.mean()) if std.size and std.mean() > 0 else 1.0
    return mean, np.maximum(std, floor)


def standardize(X, mean, scale, dtype=np.float64) -> np.ndarray:
    return ((np.asarray(X, dtype=np.float64) - mean) / scale).astype(dtype, copy=False)


# -- logistic regression: preconditioned Newton-CG ------------------------------
#
# Why this method: an explicit Newton step builds X^T D X (n*d^2) and factors
# it every iteration: ~0.25 s + 0.15 s at 4000 x 1536 on 2 cores, and a CV run
# over 5 folds x 5 l2 values takes ~100 steps. Newton-CG needs only
# Hessian-vector products (2*n*d each, ~2-5 ms there in float32). Features are
# correlated even after standardising, so CG is preconditioned with a
# randomized Nystrom approximation of the weighted feature covariance
# (Frangella, Tropp & Udell, arXiv 2110.02820): rank <= NYSTROM_RANK, built
# once per fit, applied in O(d * rank), rescaled each step by the mean
# curvature. Near separation (small l2) curvature varies wildly between rows
# and CG stalls; then one explicit Hessian is built and inverted and serves as
# a lagged preconditioner for the following steps. Measured on 5000 x 1536,
# this hybrid ran train_head ~2x faster than either method alone. The
# intercept is fitted on implicitly centred features so it decouples from w.

NYSTROM_RANK = 200


def _orthonormal(a):
    """Orthonormal basis of a's columns by CholeskyQR2 (LAPACK's QR ran ~100x slower here)."""
    for _ in range(2):
        gram = a.T @ a
        chol = np.linalg.cholesky(gram + 1e-12 * np.trace(gram) / len(gram) * np.eye(len(gram)))
        a = np.linalg.solve(chol, a.T).T  # a chol^{-T}
    return a


def _nystrom(apply_cov, d: int, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(U, lam): cov ~= U diag(lam) U^T from ``rank`` products with the PSD cov."""
    omega = _orthonormal(np.random.default_rng(seed).standard_normal((d, rank)))
    y = apply_cov(omega)
    shift = np.finfo(np.float32).eps * max(float(np.linalg.norm(y)), 1e-30)  # keeps the Cholesky PD
    y += shift * omega
    core = omega.T @ y
    core = 0.5 * (core + core.T)
    try:
        chol = np.linalg.cholesky(core)
    except np.linalg.LinAlgError:
        e, v = np.linalg.eigh(core)
        chol = v * np.sqrt(np.maximum(e, shift))
    b = np.linalg.solve(chol, y.T).T  # y chol^{-T}; cov ~= b b^T
    e, v = np.linalg.eigh(b.T @ b)  # thin SVD of b through its small Gram
    keep = e > 1e-12 * max(float(e.max(initial=0.0)), 1e-300)
    u = (b @ v[:, keep]) / np.sqrt(e[keep])
    return u, np.maximum(e[keep] - shift, 0.0)


def _make_preconditioner(u, lam, d):
    """solve(r, c, l2) ~= (c * cov + l2 I, c)^{-1} r with the Nystrom cov; c > 0."""
    full = u.shape[1] >= d  # a full eigenbasis: no complement

    def solve(r, c, l2):
        out = np.empty_like(r)
        rw = r[:d]
        coef = u.T @ rw
        tiny = 1e-12 * max(c * float(lam.max(initial=0.0)) + l2, 1e-300)
        out[:d] = u @ (coef / np.maximum(c * lam + l2, tiny))
        if not full:  # the complement gets the smallest kept eigenvalue (the Nystrom rule)
            out[:d] += (rw - u @ coef) / max(c * float(lam.min(initial=0.0)) + l2, tiny)
        out[d] = r[d] / c
        return out

    return solve


def _newton_cg(X, t, s, l2, xm, precond, theta, tol, max_iter, stats, mode):
    """Minimise sum s*logloss(Xc w + c) + l2/2 |w|^2 over theta = (w, c); Xc = X - xm.

    When CG needs more products in one step than building the Hessian costs
    (small l2 near separation, where curvature varies wildly between rows),
    the step is taken with the explicit Hessian, and its inverse becomes the
    preconditioner for later steps, here and at the next l2 of the path
    (``mode`` carries it): a lagged Hessian keeps CG to a few products."""
    d = X.shape[1]
    dt = X.dtype
    cg_cap = max(10, d // 24)  # tuned on 5000 x 1536: past this many products per step, building H is cheaper

    def margins(v):  # Xc v_w + v_c
        return (X @ v[:d].astype(dt)).astype(np.float64) - xm @ v[:d] + v[d]

    def back(q):  # Xc^T q and sum q
        return np.concatenate([(X.T @ q.astype(dt)).astype(np.float64) - xm * q.sum(), [q.sum()]])

    def objective(z, w):
        return float(s @ (np.logaddexp(0.0, z) - t * z)) + 0.5 * l2 * float(w @ w)

    z = margins(theta)
    f = objective(z, theta[:d])
    for _ in range(max_iter):
        p = sigmoid(z)
        g = back(s * (p - t))
        g[:d] += l2 * theta[:d]
        gnorm = float(np.max(np.abs(g)))
        if gnorm <= tol:
            break
        sh = s * p * (1.0 - p)
        c = max(float(sh.sum()), 1e-12)  # mean curvature: scales the covariance preconditioner
        hinv = mode.get("hinv")
        solve_p = (lambda r: hinv @ r) if hinv is not None else (lambda r: precond(r, c, l2))

        def hv(v):
            out = back(sh * margins(v))
            out[:d] += l2 * v[:d]
            return out

        step, done = _pcg(hv, g, solve_p, min(0.5, math.sqrt(gnorm)), cg_cap, stats)
        if not done and d > cg_cap:
            mode["hinv"] = _inverse(_hessian(X, xm, sh, l2))
            step = -(mode["hinv"] @ g)
            stats["explicit"] = stats.get("explicit", 0) + 1
        slope = float(g @ step)
        if slope >= 0:  # not a descent direction (numerical trouble): preconditioned gradient instead
            step = -precond(g, c, l2)
            slope = float(g @ step)
        zstep = margins(step)
        alpha, accepted = 1.0, False
        for _ in range(40):  # Armijo backtracking; each trial is O(n) since z moves along zstep
            z_new = z + alpha * zstep
            w_new = theta[:d] + alpha * step[:d]
            f_new = objective(z_new, w_new)
            if f_new <= f + 1e-4 * alpha * slope:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:  # at the floating-point floor of the objective: as good as it gets
            break
        theta = theta + alpha * step
        z, f = z_new, f_new
        stats["newton"] += 1
    return theta


def _hessian(X, xm, sh, l2):
    """H = [Xc 1]^T diag(sh) [Xc 1] + l2 (on w), built in full, float64."""
    d = X.shape[1]
    xs = (X.T @ sh.astype(X.dtype)).astype(np.float64)  # X^T sh
    hs = float(sh.sum())
    H = np.empty((d + 1, d + 1))
    H[:d, :d] = (X.T @ (X * sh[:, None].astype(X.dtype))).astype(np.float64)
    H[:d, :d] -= np.outer(xm, xs) + np.outer(xs, xm) - hs * np.outer(xm, xm)  # centre
    H[np.arange(d), np.arange(d)] += l2
    H[:d, d] = H[d, :d] = xs - hs * xm
    H[d, d] = hs
    return H


def _inverse(H):
    try:
        return np.linalg.inv(H)
    except np.linalg.LinAlgError:  # singular only with l2 = 0 on degenerate data
        return np.linalg.pinv(H)


def _pcg(hv, g, solve_p, eta, maxiter, stats):
    """Approximately solve H x = -g by preconditioned CG to |r| <= eta*|g|.
    Returns (x, converged)."""
    x = np.zeros_like(g)
    r = -g
    target = eta * float(np.linalg.norm(g))
    zr = solve_p(r)
    p = zr
    rz = float(r @ zr)
    done = False
    for _ in range(maxiter):
        if float(np.linalg.norm(r)) <= target:
            done = True
            break
        hp = hv(p)
        stats["hv"] += 1
        php = float(p @ hp)
        if php <= 0:  # flat direction (l2 = 0): keep what we have
            done = True
            break
        a = rz / php
        x += a * p
        r -= a * hp
        zr = solve_p(r)
        rz_new = float(r @ zr)
        p = zr + (rz_new / rz) * p
        rz = rz_new
    else:
        done = float(np.linalg.norm(r)) <= target
    if not x.any():
        x = zr
    return x, done


def _prepare(X, y, sample_weight):
    X = np.asarray(X)
    if X.ndim != 2:
        raise SpecsError(f"features must be a 2-D array, got shape {X.shape}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    t = np.asarray(y, dtype=np.float64)
    if t.shape != (len(X),):
        raise SpecsError(f"{len(X)} rows but {t.size} labels")
    if t.size and (t.min() < 0 or t.max() > 1):
        raise SpecsError("labels must lie in [0, 1]")
    s = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if s.shape != t.shape or (s < 0).any() or s.sum() <= 0:
        raise SpecsError("sample_weight must be one non-negative weight per row, not all zero")
    return X, t, s / s.sum()


def fit_logistic_path(X, y, l2s, sample_weight=None, *, tol=1e-6, max_iter=100,
                      rank=NYSTROM_RANK, stats=None) -> list[tuple[np.ndarray, float]]:
    """``fit_logistic`` for several l2 values, warm-started from large l2 to
    small and sharing one preconditioner. Returns (w, b) per l2 in the order given."""
    X, t, s = _prepare(X, y, sample_weight)
    if any(l < 0 for l in l2s):
        raise SpecsError("l2 must be >= 0")
    n, d = X.shape
    dt = X.dtype
    xm = (X.T @ s.astype(dt)).astype(np.float64)  # weighted feature mean

    def apply_cov(v):  # Xc^T S Xc v for a block of vectors
        xv = (X @ v.astype(dt)).astype(np.float64) - xm @ v
        return (X.T @ (xv * s[:, None]).astype(dt)).astype(np.float64) - np.outer(xm, s @ xv)

    precond = _make_preconditioner(*_nystrom(apply_cov, d, min(d, rank)), d)
    stats = stats if stats is not None else {}
    stats.setdefault("newton", 0)
    stats.setdefault("hv", 0)
    theta = np.zeros(d + 1)
    base = float(s @ t)  # start the intercept at the weighted base rate's log-odds
    theta[d] = math.log(max(base, 1e-12) / max(1 - base, 1e-12))
    out, mode = {}, {}
    for l2 in sorted(set(float(v) for v in l2s), reverse=True):
        theta = _newton_cg(X, t, s, l2, xm, precond, theta, tol, max_iter, stats, mode)
        w = theta[:d].copy()
        out[l2] = (w, float(theta[d] - xm @ w))  # back from centred coordinates
    return [out[float(v)] for v in l2s]


def fit_logistic(X, y, l2, sample_weight=None, *, tol=1e-6, max_iter=100) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression: argmin over (w, b) of
    ``sum_i s_i * logloss(y_i, x_i.w + b) / sum_i s_i + l2/2 * |w|^2``.

    ``y`` may be soft targets in [0, 1]. Converges to max |gradient| <= tol
    (or to the floating-point floor; float32 X computes its products in float32)."""
    return fit_logistic_path(X, y, [l2], sample_weight, tol=tol, max_iter=max_iter)[0]


def logistic_gradient(X, y, w, b, l2, sample_weight=None) -> np.ndarray:
    """Gradient of ``fit_logistic``'s objective, (d+1,) with the intercept last (for checks)."""
    X, t, s = _prepare(np.asarray(X, dtype=np.float64), y, sample_weight)
    r = s * (sigmoid(X @ w + b) - t)
    return np.concatenate([X.T @ r + l2 * np.asarray(w), [r.sum()]])


# -- calibration ------------------------------------------------------------------


def fit_platt(z, y) -> tuple[float, float]:
    """(a, c) so that sigmoid(a*z + c) is calibrated, fitted unweighted on
    held-out decision values so it carries the real base rate. Platt's smoothed
    targets keep (a, c) finite when z separates the labels."""
    z = np.asarray(z, dtype=np.float64).reshape(-1, 1)
    y = _as_labels(y, len(z))
    n1 = int(y.sum())
    n0 = len(y) - n1
    t = np.where(y == 1, (n1 + 1.0) / (n1 + 2.0), 1.0 / (n0 + 2.0))
    w, c = fit_logistic(z, t, 0.0, tol=1e-10)
    return float(w[0]), float(c)


# -- folds and metrics ----------------------------------------------------------------


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
    y = _as_labels(labels, len(s))
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
    y = _as_labels(labels, len(s))
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def brier(p, labels) -> float:
    p = np.asarray(p, dtype=np.float64)
    return float(np.mean((p - _as_labels(labels, len(p))) ** 2))


def log_loss(p, labels, sample_weight=None, eps: float = 1e-12) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = _as_labels(labels, len(p))
    ll = -np.where(y == 1, np.log(p), np.log1p(-p))
    return float(np.average(ll, weights=sample_weight))


def balanced_log_loss(p, labels) -> float:
    """Log-loss with both classes weighing equally (for balanced-trained scores)."""
    return log_loss(p, labels, balanced_weights(_as_labels(labels, len(np.asarray(p)))))


def reliability_table(p, labels, bins: int = 10) -> list[dict]:
    """Equal-width bins on [0, 1]: row count, mean predicted, observed rate (None when empty)."""
    p = np.asarray(p, dtype=np.float64)
    y = _as_labels(labels, len(p))
    which = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        rows.append({"lo": b / bins, "hi": (b + 1) / bins, "n": n,
                     "mean_predicted": float(p[m].mean()) if n else None,
                     "observed": float(y[m].mean()) if n else None})
    return rows


# -- cross-validation ------------------------------------------------------------------


def _cv_path(Xs, y, folds, grid, *, balance=True, tol=1e-6, stats=None) -> np.ndarray:
    """Out-of-fold decision values, shape (len(grid), n): per fold, one
    warm-started path over the grid, class-balanced within the training part."""
    oof = np.zeros((len(grid), len(y)))
    for f in range(int(folds.max()) + 1):
        test = folds == f
        ytr = y[~test]
        s = balanced_weights(ytr) if balance else None
        fits = fit_logistic_path(Xs[~test], ytr, grid, s, tol=tol, stats=stats)
        Xte = Xs[test]
        for j, (w, b) in enumerate(fits):
            oof[j, test] = (Xte @ w.astype(Xs.dtype)).astype(np.float64) + b
    return oof


def _pick(table, tie_tol):
    defined = [r for r in table if r["n_pairs"] > 0 and not math.isnan(r["pairwise_accuracy"])]
    if defined:
        best = max(r["pairwise_accuracy"] for r in defined)
        cands = [r for r in defined if r["pairwise_accuracy"] >= best - tie_tol]
    else:
        cands = list(table)
    # among ties the lowest balanced log-loss, then the larger l2 (simpler model)
    return min(cands, key=lambda r: (r["balanced_log_loss"], -r["l2"]))["l2"]


def _cv_table(oof, y, groups, grid):
    table = []
    for j, l2 in enumerate(grid):
        acc, n_pairs = pairwise_accuracy(oof[j], y, groups)
        table.append({"l2": float(l2), "pairwise_accuracy": acc, "n_pairs": n_pairs,
                      "balanced_log_loss": balanced_log_loss(sigmoid(oof[j]), y),
                      "auc": roc_auc(oof[j], y)})
    return table


def choose_l2(X, y, groups, grid=DEFAULT_L2_GRID, k: int = 5, *, seed: int = 0, balance: bool = True,
              tie_tol: float = 2e-3, tol: float = 1e-6) -> tuple[float, list[dict]]:
    """Pick l2 by grouped k-fold CV on out-of-fold predictions.

    Criterion: pooled within-problem pairwise accuracy; values within
    ``tie_tol`` of the best count as tied (smaller gaps are noise at any
    realistic pair count), and ties, or no pairs at all, go to the lowest
    balanced log-loss. Returns (l2, table: one dict per grid value)."""
    X = np.asarray(X)
    y = _as_labels(y, len(X))
    folds = grouped_folds(groups, k, seed)
    oof = _cv_path(X if X.dtype in (np.float32, np.float64) else X.astype(np.float64), y, folds,
                   list(grid), balance=balance, tol=tol)
    table = _cv_table(oof, y, groups, list(grid))
    return _pick(table, tie_tol), table


# -- the head ---------------------------------------------------------------------


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


@dataclass(eq=False)
class ProbeHead:
    """p(correct | hidden, scalars) =
    sigmoid(calib_a * (((x - mean) / scale) . w + b + scalars . scalar_weights) + calib_c).

    ``scalar_names`` are cheap per-step figures that join the hidden state after
    the fit (a second stage, see ``train_head``); a head without them reads the
    hidden state alone."""

    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: float
    calib_a: float = 1.0
    calib_c: float = 0.0
    feature_names: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    source: str = "(unsaved value head)"  # where it was loaded from, for messages
    scalar_names: list[str] = field(default_factory=list)
    scalar_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_features(self) -> int:
        return len(self.w)

    def decision(self, X, scalars=None) -> np.ndarray:
        """Uncalibrated scores (log-odds under balanced classes); ranks like predict.
        ``scalars``: one row of ``scalar_names`` values per row of X."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[-1] != self.n_features:
            raise SpecsError(f"value head {self.source} expects {self.n_features} features, got {X.shape[-1]}")
        z = ((X - self.mean) / self.scale) @ self.w + self.b
        if self.scalar_names:
            if scalars is None:
                raise SpecsError(f"value head {self.source} also reads {', '.join(self.scalar_names)}")
            z = z + np.asarray(scalars, dtype=np.float64).reshape(len(z), -1) @ self.scalar_weights
        return z

    def predict(self, X, scalars=None) -> np.ndarray:
        return sigmoid(self.calib_a * self.decision(np.atleast_2d(X), scalars) + self.calib_c)

    def __call__(self, x, scalars=None) -> float:
        x = np.asarray(x).reshape(-1)
        return float(self.predict(x[None, :], None if scalars is None else np.atleast_2d(scalars))[0])

    def save(self, path) -> Path:
        """One .npz: arrays plus a JSON string (feature names, provenance); written atomically."""
        path = Path(path)
        try:
            meta = json.dumps({"format": FORMAT, "feature_names": list(self.feature_names),
                               "scalar_names": list(self.scalar_names),
                               "provenance": _jsonable(self.provenance)}, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise SpecsError(f"value head provenance is not JSON-able: {e}") from None
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, mean=np.asarray(self.mean, np.float64), scale=np.asarray(self.scale, np.float64),
                     w=np.asarray(self.w, np.float64),
                     params=np.array([self.b, self.calib_a, self.calib_c], np.float64),
                     scalar_weights=np.asarray(self.scalar_weights, np.float64), meta=np.array(meta))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "ProbeHead":
        path = Path(path)
        if not path.is_file():
            raise SpecsError(f"value head not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"][()]))
                arrays = {k: np.asarray(data[k], np.float64) for k in ("mean", "scale", "w", "params")}
                # heads written before scalar features existed have none
                scalar_weights = np.asarray(data["scalar_weights"], np.float64) if "scalar_weights" in data \
                    else np.zeros(0)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise SpecsError(f"value head {path} is not a probe head file ({type(e).__name__})") from None
        d = arrays["w"].shape
        scalar_names = meta.get("scalar_names", []) if isinstance(meta, dict) else None
        if (not isinstance(meta, dict) or meta.get("format") != FORMAT or len(d) != 1
                or arrays["mean"].shape != d or arrays["scale"].shape != d or arrays["params"].shape != (3,)
                or len(meta.get("feature_names", [])) not in (0, d[0])
                or not isinstance(scalar_names, list) or scalar_weights.shape != (len(scalar_names),)):
            raise SpecsError(f"value head {path} is corrupt (format or array shapes do not match)")
        b, a, c = (float(v) for v in arrays["params"])
        return cls(arrays["mean"], arrays["scale"], arrays["w"], b, a, c,
                   list(meta.get("feature_names", [])), dict(meta.get("provenance") or {}), str(path),
                   [str(n) for n in scalar_names], scalar_weights)

    def require(self, key: str, value, what: str = "target") -> None:
        """Raise a one-line SpecsError unless provenance[key] == value."""
        if key not in self.provenance:
            raise SpecsError(f"value head {self.source} records no {key}; cannot check it matches the {what}")
        have = self.provenance[key]
        if have != value:
            raise HeadMismatchError(f"value head {self.source} was trained for a different {what} ({key} {have} != {value})")


def check_provenance(head: ProbeHead, what: str = "target", **expected) -> None:
    """head.require(key, value, what) for each keyword."""
    for key, value in expected.items():
        head.require(key, value, what)


# -- training --------------------------------------------------------------------------


def train_head(X, y, groups, *, feature_names, l2_grid=DEFAULT_L2_GRID, k: int = 5, seed: int = 0,
               provenance: dict | None = None, tie_tol: float = 2e-3, scalars=None,
               scalar_names=(), scalar_grid=DEFAULT_SCALAR_GRID) -> tuple[ProbeHead, dict]:
    """Standardise, balance classes, choose l2 by grouped CV, refit on all rows,
    Platt-calibrate on the out-of-fold decision values. Returns (head, report).

    ``scalars`` (rows x ``scalar_names``) may join the hidden state as a second
    stage: decision + scalars . r, each r picked from ``scalar_grid`` for the
    best out-of-fold pairwise accuracy within problems. They are added to the
    out-of-fold decision rather than to X because among thousands of L2-shrunk
    hidden features one strong figure would be shrunk like the rest. A scalar
    whose best r is 0 is dropped.

    The report's cv_* metrics are out-of-fold; cv_brier/cv_log_loss use the
    calibration fitted on those same values (two parameters, little optimism)."""
    t0 = time.perf_counter()
    X = np.asarray(X)
    if X.ndim != 2 or not len(X):
        raise SpecsError(f"features must be a non-empty 2-D array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise SpecsError("features contain NaN or infinity")
    y = _as_labels(y, len(X))
    groups = np.asarray(groups)
    if groups.shape != (len(X),):
        raise SpecsError(f"{len(X)} rows but {groups.size} group ids")
    names = [str(n) for n in feature_names]
    if len(names) != X.shape[1]:
        raise SpecsError(f"{len(names)} feature names for {X.shape[1]} features")
    if y.min() == y.max():
        raise SpecsError("training data needs both correct and wrong outcomes")
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise SpecsError("training data needs at least 2 problems (groups) for cross-validation")
    k = min(k, n_groups)
    grid = [float(v) for v in l2_grid]

    mean, scale = fit_standardizer(X)
    Xs = standardize(X, mean, scale, np.float32 if X.size > _F32_ABOVE else np.float64)
    tol = 1e-6 if Xs.dtype == np.float64 else 1e-5  # float32 products cannot resolve much finer
    folds = grouped_folds(groups, k, seed)
    stats = {"newton": 0, "hv": 0}
    # held-out scores only need ranking precision: measured, 10x looser moves CV accuracy < 1e-3
    oof = _cv_path(Xs, y, folds, grid, tol=10 * tol, stats=stats)
    table = _cv_table(oof, y, groups, grid)
    l2 = _pick(table, tie_tol)
    z = oof[grid.index(l2)]

    (w, b), = fit_logistic_path(Xs, y, [l2], balanced_weights(y), tol=tol, stats=stats)
    cv_hidden_only = pairwise_accuracy(z, y, groups)[0]
    kept, weights, added = [], [], 0.0  # added: what the kept scalars add to each row's decision
    if scalar_names:
        S = np.asarray(scalars, dtype=np.float64).reshape(len(y), len(scalar_names))
        if not np.isfinite(S).all():
            raise SpecsError("scalar features contain NaN or infinity")
        for j, name in enumerate(scalar_names):
            r = _pick_scalar_weight(z + added, S[:, j], y, groups, scalar_grid, tie_tol)
            if r:
                kept.append(str(name))
                weights.append(r)
                added = added + r * S[:, j]
    z = z + added
    a, c = fit_platt(z, y)
    p_oof = sigmoid(a * z + c)
    cv_acc, cv_pairs = pairwise_accuracy(z, y, groups)
    train_z = (Xs @ w.astype(Xs.dtype)).astype(np.float64) + b + added
    report = _jsonable({
        "n_rows": len(y), "n_groups": n_groups, "n_features": X.shape[1], "n_positive": int(y.sum()),
        "base_rate": float(y.mean()), "k": k, "seed": seed, "l2": l2, "cv": table,
        "cv_pairwise_accuracy": cv_acc, "cv_pairs": cv_pairs, "cv_auc": roc_auc(z, y),
        "cv_pairwise_hidden_only": cv_hidden_only, "scalars": dict(zip(kept, weights)),
        "cv_brier": brier(p_oof, y), "cv_log_loss": log_loss(p_oof, y),
        "cv_mean_predicted": float(p_oof.mean()), "cv_reliability": reliability_table(p_oof, y),
        "train_pairwise_accuracy": pairwise_accuracy(train_z, y, groups)[0], "train_auc": roc_auc(train_z, y),
        "calib_a": a, "calib_c": c, "newton_steps": stats["newton"], "hessian_products": stats["hv"],
        "explicit_hessians": stats.get("explicit", 0),
        "seconds": time.perf_counter() - t0,
    })
    prov = dict(provenance or {})
    prov.setdefault("trained_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    prov["metrics"] = {key: report[key] for key in ("n_rows", "n_groups", "base_rate", "l2", "cv_pairwise_accuracy",
                                                    "cv_pairs", "cv_auc", "cv_brier")}
    head = ProbeHead(mean, scale, w, b, a, c, names, prov, scalar_names=kept, scalar_weights=np.array(weights))
    return head, report


def _pick_scalar_weight(z, s, y, groups, grid, tie_tol: float) -> float:
    """The r in ``grid`` for which z + r*s ranks best within problems (the smallest within tie_tol)."""
    accs = [pairwise_accuracy(z + r * s, y, groups)[0] for r in grid]
    best = max(accs)
    return float(min(r for r, acc in zip(grid, accs) if acc >= best - tie_tol))
