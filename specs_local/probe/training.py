"""Training a head: the L2 strength by grouped cross-validation, the scalar's weight by within-problem
pairwise accuracy, and calibration on out-of-fold scores."""
from __future__ import annotations

import math
import time

import numpy as np

from ..errors import SpecsError
from .head import ProbeHead, jsonable
from .logistic import as_labels, balanced_weights, fit_logistic_path, fit_platt, fit_standardizer, sigmoid, standardize
from .metrics import balanced_log_loss, brier, grouped_folds, log_loss, pairwise_accuracy, reliability_table, roc_auc

DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# weights of a scalar feature beside the hidden state's decision (log-odds units
# per unit of the scalar; a mean log-prob spans about 0.5)
DEFAULT_SCALAR_GRID = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
_F32_ABOVE = 2_000_000  # X.size above which training runs in float32 (memory-bound products run ~3x faster)


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
    y = as_labels(y, len(X))
    folds = grouped_folds(groups, k, seed)
    oof = _cv_path(X if X.dtype in (np.float32, np.float64) else X.astype(np.float64), y, folds,
                   list(grid), balance=balance, tol=tol)
    table = _cv_table(oof, y, groups, list(grid))
    return _pick(table, tie_tol), table


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
    y = as_labels(y, len(X))
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
    report = jsonable({
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
