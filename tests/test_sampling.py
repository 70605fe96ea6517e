import time

import numpy as np
import pytest

from specs_local.sampling import (SamplerParams, _candidates, inverse_cdf, logsumexp, sample_token, softmax,
                                  token_logprobs)


def test_logprob_is_untempered_log_softmax():
    logits = np.array([2.0, 1.0, 0.5, -1.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    for params in (SamplerParams(0.0), SamplerParams(0.3), SamplerParams(2.0, top_k=2), SamplerParams(1.0, top_p=0.5)):
        token, lp = sample_token(logits, params, rng)
        assert abs(lp - (logits[token] - np.log(np.exp(logits).sum()))) < 1e-5


def test_greedy_top_k_top_p_and_seed():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    assert sample_token(logits, SamplerParams(0.0), np.random.default_rng(0))[0] == 0
    draws = lambda p, seed=0: [sample_token(logits, p, rng)[0] for rng in [np.random.default_rng(seed)] for _ in range(2000)]
    assert set(draws(SamplerParams(1.0, top_k=2))) == {0, 1}
    assert set(draws(SamplerParams(1.0, top_p=0.75))) == {0, 1}  # 0.5 + 0.3 reaches 0.75
    counts = np.bincount(draws(SamplerParams(1.0)), minlength=4) / 2000
    assert np.abs(counts - [0.5, 0.3, 0.15, 0.05]).max() < 0.04
    assert draws(SamplerParams(1.0), seed=5) == draws(SamplerParams(1.0), seed=5)
    assert draws(SamplerParams(1.0), seed=5) != draws(SamplerParams(1.0), seed=6)


def test_fast_on_a_qwen_sized_vocabulary():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(151936).astype(np.float32) * 3
    params = SamplerParams(0.7, top_p=0.9)
    sample_token(logits, params, rng)
    t0 = time.perf_counter()
    for _ in range(50):
        sample_token(logits, params, rng)
    assert (time.perf_counter() - t0) / 50 < 0.02  # a full argsort alone takes longer


def test_token_logprobs_and_softmax():
    rows = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    got = token_logprobs(rows, [2, 1])
    np.testing.assert_allclose(got, [3 - logsumexp(rows[0]), -np.log(3)], rtol=1e-6)
    np.testing.assert_allclose(softmax([0.0, np.log(3.0)]), [0.25, 0.75])


def test_inverse_cdf_matches_a_plain_cumsum():
    rng = np.random.default_rng(4)
    weights = rng.random(5000).astype(np.float32) ** 8
    cdf = np.cumsum(weights, dtype=np.float64)
    for u in list(rng.random(300)) + [0.0, 0.999999]:
        want = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(cdf) - 1)
        assert inverse_cdf(weights, u, block=64) == want


def _full_sort_nucleus(scaled: np.ndarray, top_p: float) -> set[int]:
    """The top-p nucleus by the definition: sort everything, keep the smallest head whose mass reaches top_p."""
    probs = np.exp(scaled.astype(np.float64))
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    return set(order[: int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1].tolist())


@pytest.mark.parametrize("vocab", [1000, 151936])
@pytest.mark.parametrize("spread", [0.5, 2.0, 4.0, 8.0])  # flat ... peaked
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_p_keeps_the_nucleus_of_the_whole_distribution(vocab, spread, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(vocab) * spread).astype(np.float32)
    for temperature, top_p in ((1.0, 0.9), (0.7, 0.5), (1.3, 0.95)):
        params = SamplerParams(temperature, top_p=top_p)
        scaled = (logits - logits.max()) * np.float32(1.0 / temperature)  # as sample_token tempers
        want = _full_sort_nucleus(scaled, top_p)
        ids, _ = _candidates(scaled.copy(), params)
        assert set(ids.tolist()) == want, (temperature, top_p, len(ids), len(want))
        if vocab == 1000:
            assert {sample_token(logits, params, rng)[0] for _ in range(300)} <= want
