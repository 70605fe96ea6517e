"""The outcome value head (probe): the logistic fit against independent
references, balancing and calibration, grouped CV, ranking metrics against
brute force, the head file, and a timing bound at a realistic size."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from specs_local.errors import SpecsError
from specs_local.probe import (
    DEFAULT_L2_GRID,
    ProbeHead,
    balanced_weights,
    brier,
    check_provenance,
    choose_l2,
    fit_logistic,
    fit_logistic_path,
    fit_platt,
    grouped_folds,
    log_loss,
    pairwise_accuracy,
    reliability_table,
    roc_auc,
    train_head,
)


def blobs(n, d, sep, seed, frac_pos=0.5):
    """Two Gaussian blobs `sep` apart along a random unit direction."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < frac_pos).astype(int)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    X = rng.standard_normal((n, d)) + np.outer(y - 0.5, u) * sep
    return X, y


def objective_grad(X, t, s, w, b, l2):
    """Gradient of sum(s * logloss)/sum(s) + l2/2 |w|^2, written independently of the module."""
    s = s / s.sum()
    p = 1.0 / (1.0 + np.exp(-(X @ w + b)))
    r = s * (p - t)
    return X.T @ r + l2 * w, r.sum()


def gd_reference(X, t, s, l2, iters):
    """Plain gradient descent with step 1/L, L the objective's smoothness bound."""
    A = np.c_[X, np.ones(len(X))]
    sn = s / s.sum()
    L = 0.25 * np.linalg.eigvalsh(A.T @ (A * sn[:, None])).max() + l2
    w, b = np.zeros(X.shape[1]), 0.0
    for _ in range(iters):
        gw, gb = objective_grad(X, t, s, w, b, l2)
        w, b = w - gw / L, b - gb / L
    return w, b


# -- the fit --------------------------------------------------------------------


@pytest.mark.parametrize("d", [20, 500])
def test_separable_blobs_are_separated(d):
    X, y = blobs(1000, d, sep=8.0, seed=d)
    w, b = fit_logistic(X, y, 1e-3, balanced_weights(y))
    z = X @ w + b
    assert np.mean((z > 0) == (y == 1)) >= 0.99
    groups = np.arange(len(y)) // 10
    acc, n_pairs = pairwise_accuracy(z, y, groups)
    assert n_pairs > 1000 and acc > 0.95


def test_fit_matches_gradient_descent_reference_and_has_zero_gradient():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 5)) * [1.0, 2.0, 0.5, 1.0, 3.0] + [0.0, 1.0, -2.0, 0.0, 0.5]
    y = (X @ [1.0, -0.5, 0.3, 0.0, 0.2] + rng.standard_normal(200) > 0.3).astype(int)
    s = rng.uniform(0.5, 2.0, 200)
    l2 = 0.05
    w, b = fit_logistic(X, y, l2, s)
    gw, gb = objective_grad(X, y, s, w, b, l2)
    assert max(np.abs(gw).max(), abs(gb)) < 1e-6
    w_ref, b_ref = gd_reference(X, y, s, l2, iters=20000)
    np.testing.assert_allclose(w, w_ref, atol=1e-5)
    assert b == pytest.approx(b_ref, abs=1e-5)


def test_soft_targets_are_fitted():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 3))
    t = 1.0 / (1.0 + np.exp(-(X @ [2.0, -1.0, 0.0] + 0.5)))  # exact probabilities as targets
    w, b = fit_logistic(X, t, 0.0, tol=1e-10)
    np.testing.assert_allclose(w, [2.0, -1.0, 0.0], atol=1e-5)
    assert b == pytest.approx(0.5, abs=1e-5)


def test_high_dimensional_path_reaches_the_optimum():
    """d > the Nystrom rank and a small l2, so the explicit-Hessian fallback runs too."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((600, 300)) @ (np.eye(300) + 0.3 * rng.standard_normal((300, 300)) / 17)
    y = (X[:, :5].sum(1) + rng.standard_normal(600) > 0).astype(int)
    grid = [1.0, 1e-2, 1e-4]
    stats = {}
    fits = fit_logistic_path(X, y, grid, None, stats=stats)
    assert stats.get("explicit", 0) >= 1
    for l2, (w, b) in zip(grid, fits):
        gw, gb = objective_grad(X, y, np.ones(600), w, b, l2)
        assert max(np.abs(gw).max(), abs(gb)) < 1e-6, l2
    # the path equals fitting each l2 on its own
    w1, b1 = fit_logistic(X, y, 1e-2)
    np.testing.assert_allclose(fits[1][0], w1, atol=1e-4)  # both within gradient 1e-6 of the optimum


def test_float32_features_converge_to_float64_solution():
    X, y = blobs(800, 50, sep=1.0, seed=4)
    w64, b64 = fit_logistic(X, y, 1e-2)
    w32, b32 = fit_logistic(X.astype(np.float32), y, 1e-2, tol=1e-5)
    np.testing.assert_allclose(w32, w64, atol=1e-3)


# -- balancing and calibration -------------------------------------------------------


def balanced_accuracy(z, y):
    return 0.5 * (np.mean(z[y == 1] > 0) + np.mean(z[y == 0] <= 0))


def test_balancing_centres_the_threshold_and_calibration_restores_the_base_rate():
    X, y = blobs(3000, 10, sep=2.0, seed=5, frac_pos=0.1)
    base = y.mean()
    assert 0.08 < base < 0.12
    s = balanced_weights(y)
    assert s[y == 1].sum() == pytest.approx(s[y == 0].sum())
    assert s.mean() == pytest.approx(1.0)
    wb, bb = fit_logistic(X, y, 1e-3, s)
    wu, bu = fit_logistic(X, y, 1e-3)
    bal, unbal = balanced_accuracy(X @ wb + bb, y), balanced_accuracy(X @ wu + bu, y)
    assert bal > 0.8 and bal > unbal + 0.02  # unweighted, the threshold drifts into the rare class
    head, report = train_head(X, y, np.arange(3000) // 6, feature_names=[f"f{i}" for i in range(10)])
    assert abs(head.predict(X).mean() - base) < 0.05
    assert abs(report["cv_mean_predicted"] - base) < 0.05
    assert balanced_accuracy(head.decision(X), y) > 0.8


def test_platt_recovers_a_known_calibration():
    rng = np.random.default_rng(6)
    z = rng.standard_normal(20000) * 2
    y = (rng.random(20000) < 1.0 / (1.0 + np.exp(-(0.5 * z - 1.0)))).astype(int)
    a, c = fit_platt(z, y)
    assert a == pytest.approx(0.5, abs=0.05) and c == pytest.approx(-1.0, abs=0.05)
    a, c = fit_platt([0.0, 1.0, 2.0, 3.0], [0, 0, 1, 1])  # separable: finite thanks to smoothed targets
    assert np.isfinite([a, c]).all() and a > 0


# -- folds and l2 choice ----------------------------------------------------------------


def test_grouped_folds_never_split_a_group_and_cover_every_row():
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(40), rng.integers(1, 15, 40))
    groups = rng.permutation(groups).astype(str)  # ids need not be ints or sorted
    folds = grouped_folds(groups, 5, seed=3)
    assert folds.shape == groups.shape and set(folds) == set(range(5))
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    parts = np.concatenate([np.flatnonzero(folds == f) for f in range(5)])
    np.testing.assert_array_equal(np.sort(parts), np.arange(len(groups)))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 15  # greedy placement keeps folds near-equal
    assert not np.array_equal(folds, grouped_folds(groups, 5, seed=4))
    np.testing.assert_array_equal(folds, grouped_folds(groups, 5, seed=3))
    with pytest.raises(SpecsError):
        grouped_folds(np.arange(3), 5)


def test_choose_l2_prefers_more_regularisation_on_noisy_few_rows():
    grid = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    Xc, yc = blobs(2000, 30, sep=3.0, seed=8)
    l2_clean, table = choose_l2(Xc, yc, np.arange(2000) // 10, grid, k=5)
    Xn, yn = blobs(120, 30, sep=0.5, seed=9)
    l2_noisy, table_n = choose_l2(Xn, yn, np.arange(120) // 6, grid, k=5)
    assert l2_clean in grid and l2_noisy in grid
    assert [r["l2"] for r in table] == grid and len(table_n) == len(grid)
    assert {"pairwise_accuracy", "n_pairs", "balanced_log_loss", "auc"} <= set(table[0])
    assert l2_noisy > l2_clean


def test_choose_l2_without_pairs_falls_back_to_log_loss():
    X, y = blobs(200, 5, sep=2.0, seed=10)
    l2, table = choose_l2(X, y, np.arange(200), [1e-3, 1e-1, 10.0], k=4)  # one row per group: no pairs
    assert all(r["n_pairs"] == 0 for r in table)
    assert l2 == min(table, key=lambda r: r["balanced_log_loss"])["l2"]


# -- metrics against brute force -----------------------------------------------------------


def test_pairwise_accuracy_matches_a_double_loop_with_ties():
    rng = np.random.default_rng(11)
    n = 300
    scores = rng.integers(0, 5, n).astype(float)  # many ties
    labels = rng.integers(0, 2, n)
    groups = rng.integers(0, 25, n)
    wins = pairs = 0.0
    for i, j in itertools.product(range(n), range(n)):
        if groups[i] == groups[j] and labels[i] == 1 and labels[j] == 0:
            pairs += 1
            wins += 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
    acc, n_pairs = pairwise_accuracy(scores, labels, groups)
    assert n_pairs == pairs and acc == pytest.approx(wins / pairs, abs=1e-12)
    assert np.isnan(pairwise_accuracy([1.0, 2.0], [1, 1], [0, 0])[0])


def test_roc_auc_matches_brute_force_with_ties():
    rng = np.random.default_rng(12)
    scores = np.round(rng.standard_normal(400), 1)
    labels = rng.integers(0, 2, 400)
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    ref = np.mean((diff > 0) + 0.5 * (diff == 0))
    assert roc_auc(scores, labels) == pytest.approx(ref, abs=1e-12)
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_brier_log_loss_and_reliability():
    p = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    y = np.array([0, 0, 1, 1, 1])
    assert brier(p, y) == pytest.approx(np.mean((p - y) ** 2))
    ref = -np.mean([np.log(0.95), np.log(0.85), np.log(0.15), np.log(0.95), np.log(1 - 1e-12)])
    assert log_loss(p, y) == pytest.approx(ref)
    table = reliability_table(p, y)
    assert len(table) == 10 and sum(r["n"] for r in table) == 5
    assert table[1]["n"] == 2 and table[1]["mean_predicted"] == pytest.approx(0.15)
    assert table[1]["observed"] == pytest.approx(0.5) and table[9]["n"] == 2
    assert table[5]["mean_predicted"] is None


# -- the head file -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    X, y = blobs(600, 12, sep=1.5, seed=13)
    head, report = train_head(X, y, np.arange(600) // 5, feature_names=[f"layer20.h{i}" for i in range(12)],
                              provenance={"target_sha256": "ab" * 32, "target_vocab": "v1:151936:deadbeef"})
    return X, y, head, report


def test_train_head_report(trained):
    X, y, head, report = trained
    assert report["n_rows"] == 600 and report["n_groups"] == 120 and report["l2"] in DEFAULT_L2_GRID
    assert len(report["cv"]) == len(DEFAULT_L2_GRID)
    assert 0.7 < report["cv_pairwise_accuracy"] <= 1 and 0.7 < report["cv_auc"] <= 1
    assert 0 < report["cv_brier"] < 0.25
    assert head.provenance["metrics"]["cv_auc"] == report["cv_auc"]
    p = head.predict(X)
    assert ((p >= 0) & (p <= 1)).all()
    assert head(X[3]) == pytest.approx(p[3])
    with pytest.raises(SpecsError, match="expects 12 features"):
        head.decision(X[:, :5])


def test_save_load_round_trip(trained, tmp_path):
    X, _, head, _ = trained
    path = head.save(tmp_path / "probe.npz")
    loaded = ProbeHead.load(path)
    np.testing.assert_array_equal(loaded.predict(X), head.predict(X))
    assert loaded.provenance == head.provenance and loaded.feature_names == head.feature_names
    assert loaded.source == str(path)
    with np.load(path, allow_pickle=False) as data:  # a plain npz: no pickled objects inside
        assert set(data.files) == {"mean", "scale", "w", "params", "scalar_weights", "meta"}


def test_a_scalar_that_ranks_within_problems_joins_the_head_and_noise_does_not(tmp_path):
    """A figure such as the solution's mean log-prob, added to the hidden
    state's decision when it raises the cross-validated within-problem ranking."""
    rng = np.random.default_rng(5)
    X, y = blobs(600, 12, sep=0.6, seed=21)  # a weak hidden-state signal
    groups = np.arange(600) // 6
    informative = 0.3 * (y - 0.5) + 0.05 * rng.standard_normal(600)  # clear within each problem
    noise = rng.standard_normal(600)
    head, report = train_head(X, y, groups, feature_names=[f"h{i}" for i in range(12)],
                              scalars=np.c_[noise, informative], scalar_names=("noise", "solution_logprob"))
    assert head.scalar_names == ["solution_logprob"] and list(report["scalars"]) == ["solution_logprob"]
    assert report["cv_pairwise_accuracy"] > report["cv_pairwise_hidden_only"] + 0.1
    S = informative[:, None]
    p = head.predict(X, S)
    assert ((p > 0) & (p < 1)).all()
    assert pairwise_accuracy(p, y, groups)[0] > pairwise_accuracy(head.decision(X, 0 * S), y, groups)[0]
    with pytest.raises(SpecsError, match="also reads solution_logprob"):
        head.predict(X)
    loaded = ProbeHead.load(head.save(tmp_path / "probe.npz"))
    assert loaded.scalar_names == ["solution_logprob"]
    np.testing.assert_array_equal(loaded.predict(X, S), p)


def test_a_head_file_from_before_scalars_still_loads(trained, tmp_path):
    X, _, head, _ = trained
    path = tmp_path / "old.npz"
    with np.load(head.save(tmp_path / "new.npz"), allow_pickle=False) as data:
        np.savez(path, **{k: data[k] for k in ("mean", "scale", "w", "params", "meta")})
    old = ProbeHead.load(path)
    assert old.scalar_names == []
    np.testing.assert_array_equal(old.predict(X), head.predict(X))


def test_load_refuses_missing_and_corrupt_files(tmp_path):
    with pytest.raises(SpecsError, match="not found"):
        ProbeHead.load(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(SpecsError, match="not a probe head file"):
        ProbeHead.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, w=np.zeros(3))
    with pytest.raises(SpecsError):
        ProbeHead.load(other)
    for p in (bad, other):
        try:
            ProbeHead.load(p)
        except SpecsError as e:
            assert "\n" not in str(e)


def test_provenance_mismatch_names_the_field(trained):
    _, _, head, _ = trained
    head.require("target_vocab", "v1:151936:deadbeef")
    check_provenance(head, target_vocab="v1:151936:deadbeef", target_sha256="ab" * 32)
    with pytest.raises(SpecsError, match=r"different target \(target_vocab v1:151936:deadbeef != v1:32000:0") as e:
        head.require("target_vocab", "v1:32000:0")
    assert "\n" not in str(e.value)
    with pytest.raises(SpecsError, match="target_sha256"):
        check_provenance(head, target_sha256="cd" * 32)
    with pytest.raises(SpecsError, match="records no layer"):
        head.require("layer", 20)


def test_unjsonable_provenance_is_refused(tmp_path):
    head = ProbeHead(np.zeros(2), np.ones(2), np.ones(2), 0.0, provenance={"x": object()})
    with pytest.raises(SpecsError, match="JSON"):
        head.save(tmp_path / "h.npz")


# -- timing --------------------------------------------------------------------------------


def test_train_head_finds_a_weak_signal_in_many_features():
    """Hidden-state-like data: many features, a weak linear signal. (Its speed at
    real sizes is measured by scripts/bench_probe_training.py, not here.)"""
    rng = np.random.default_rng(14)
    n, d = 2000, 256
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X @ (rng.standard_normal(d) / np.sqrt(d)) + rng.standard_normal(n) > 0.8).astype(int)
    head, report = train_head(X, y, np.arange(n) // 8, feature_names=[f"h{i}" for i in range(d)])
    assert report["cv_pairwise_accuracy"] > 0.65  # the signal is real
