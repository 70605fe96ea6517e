"""SPECS' score, soft verification and deferral, on hand-computed numbers."""
from __future__ import annotations

import numpy as np
import pytest

from specs_local.search.specs import Mode, next_mode, select_candidate, soft_scores, survivor_probabilities


def test_score_is_log_ratio_plus_beta_reward():
    got = soft_scores([-0.5, -1.0], [-0.7, -0.2], [0.9, 0.1], beta=10)
    np.testing.assert_allclose(got, [-0.5 + 0.7 + 9.0, -1.0 + 0.2 + 1.0])


def test_threshold_is_strict_and_everything_rejected_gives_none():
    rng = np.random.default_rng(0)
    assert select_candidate(["a", "b"], [7.0, 6.5], tau_reject=7.0, temperature=1.0, rng=rng) is None
    assert select_candidate(["a", "b"], [7.0, 7.01], tau_reject=7.0, temperature=1.0, rng=rng) == 1
    assert select_candidate(["a"], [float("nan")], tau_reject=-np.inf, temperature=1.0, rng=rng) is None


def test_selection_probabilities_are_softmax_of_score_over_t():
    rng = np.random.default_rng(1)
    scores = [8.0, 8.0 + np.log(3.0), 0.0]  # the last is rejected at tau 5
    picks = [select_candidate(["a", "b", "c"], scores, 5.0, 1.0, rng) for _ in range(8000)]
    freq = np.bincount(picks, minlength=3) / len(picks)
    np.testing.assert_allclose(freq, [0.25, 0.75, 0.0], atol=0.02)
    # T = 0.5 doubles the log-odds: 1 : 9
    picks = [select_candidate(["a", "b"], scores[:2], 5.0, 0.5, rng) for _ in range(8000)]
    assert abs(np.mean(picks) - 0.9) < 0.02
    assert select_candidate(["a", "b"], scores[:2], 5.0, 0.0, rng) == 1  # T = 0: the best


def test_duplicates_are_merged_but_keep_their_weight():
    rng = np.random.default_rng(2)
    texts = ["x", "y", "x", "x"]
    picks = [select_candidate(texts, [1.0] * 4, -np.inf, 1.0, rng) for _ in range(8000)]
    assert set(picks) == {0, 1}  # the later copies of "x" are never returned
    assert abs(np.mean(np.array(picks) == 0) - 0.75) < 0.02


def test_duplicates_with_different_scores_pool_their_weights():
    """The same text tokenized two ways has two scores: the text weighs exp(s1/T) + exp(s2/T)."""
    texts, scores = ["x", "y", "x", "z"], [1.0, 0.0, 2.0, -5.0]  # "z" is rejected at tau -1
    weights = {"x": np.exp(1.0 / 0.5) + np.exp(2.0 / 0.5), "y": np.exp(0.0 / 0.5)}
    total = sum(weights.values())
    got = survivor_probabilities(texts, scores, -1.0, 0.5)
    assert list(got) == [0, 1]  # each text at its first copy
    assert got == pytest.approx({0: weights["x"] / total, 1: weights["y"] / total})
    rng = np.random.default_rng(5)
    picks = [select_candidate(texts, scores, -1.0, 0.5, rng) for _ in range(8000)]
    assert abs(np.mean(np.array(picks) == 0) - weights["x"] / total) < 0.01  # 0.984, not 2e^2 / (2e^2 + 1) = 0.937
    # T = 0: the text of the best score, at its first copy.
    assert survivor_probabilities(texts, scores, -1.0, 0.0) == {0: 1.0}
    assert select_candidate(["x", "y", "x"], [1.0, 2.0, 3.0], -1.0, 0.0, rng) == 0
    assert survivor_probabilities(texts, scores, 9.0, 1.0) == {}


def test_deferral_state_machine():
    """DRAFT stays DRAFT while drafts pass; a rejected step goes to the target,
    which keeps control until one of its steps is rewarded above tau_switch."""
    tau_switch = 0.7
    mode = Mode.TARGET  # SPECS starts with the target
    trace = []
    # (draft accepted?, best target reward) per step; None where that part does not run
    script = [(None, 0.9), (True, None), (False, 0.5), (None, 0.6), (None, 0.71), (True, None)]
    for accepted, target_reward in script:
        accepted = bool(mode is Mode.DRAFT and accepted)
        trace.append("draft" if accepted else "deferred" if mode is Mode.DRAFT else "target")
        mode = next_mode(accepted, None if accepted else target_reward, tau_switch)
    assert trace == ["target", "draft", "deferred", "target", "target", "draft"]
    assert next_mode(False, 0.7, 0.7) is Mode.TARGET  # strictly above


def _optimum(p_target, rewards, beta):
    w = p_target * np.exp(beta * rewards)
    return w / w.sum()


def _choice_frequencies(select, q, p, r, beta, n, trials, rng):
    counts = np.zeros(len(q))
    texts = [str(k) for k in range(len(q))]
    for _ in range(trials):
        drawn = rng.choice(len(q), size=n, p=q)
        scores = soft_scores(np.log(p[drawn]), np.log(q[drawn]), r[drawn], beta)
        chosen = select([texts[k] for k in drawn], scores, drawn, rng)
        counts[drawn[chosen]] += 1
    return counts / trials


def test_soft_verification_converges_to_the_kl_regularised_optimum():
    """tau = -inf, T = 1: choices approach p_target * exp(beta * r) as n grows."""
    rng = np.random.default_rng(3)
    q = np.array([0.55, 0.25, 0.15, 0.05])  # draft
    p = np.array([0.2, 0.4, 0.3, 0.1])  # target
    r = np.array([0.2, 0.5, 0.9, 0.1])  # reward
    beta = 2.0
    optimum = _optimum(p, r, beta)

    def soft(texts, scores, drawn, rng):
        return select_candidate(texts, scores, -np.inf, 1.0, rng)

    def tv(n):
        return 0.5 * np.abs(_choice_frequencies(soft, q, p, r, beta, n, 6000, rng) - optimum).sum()

    small, large = tv(1), tv(64)
    assert large < 0.03
    assert small > 2 * large

    def argmax_reward(texts, scores, drawn, rng):
        return int(np.argmax(r[drawn]))

    greedy = _choice_frequencies(argmax_reward, q, p, r, beta, 64, 2000, rng)
    assert 0.5 * np.abs(greedy - optimum).sum() > 0.2


@pytest.mark.parametrize("n", [4, 16])
def test_selection_never_returns_a_rejected_candidate(n):
    rng = np.random.default_rng(n)
    for _ in range(200):
        scores = rng.normal(5, 3, size=n)
        texts = [str(t) for t in rng.integers(0, 3, size=n)]
        chosen = select_candidate(texts, scores, 5.0, 0.7, rng)
        if chosen is None:
            assert (scores <= 5.0).all()
        else:
            assert scores[chosen] > 5.0
