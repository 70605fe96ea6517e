"""Reward models on a tiny GGUF model: the calculator in front of a real
verifier, self-verification inside the policy's own sequences, and the
verifier's prefix cache across steps, checked by llama.cpp's token counters."""
from __future__ import annotations

import numpy as np
import pytest

from specs_local.calculator import REWARD_FALSE, REWARD_HOLDS, check_step
from specs_local.chat import question_suffix, solution_prompt
from specs_local.engine import Model, ModelConfig
from specs_local.rewards import VERIFIER_QUESTION, CalculatorReward, PromptedReward, make_reward
from specs_local.sampling import softmax

PROBLEM = "What is 12 times 7?"
HOLDS = "12 * 7 = 84.\n\n"
FALSE = "7 * 8 = 54.\n\n"
OPEN = ["We multiply the numbers.\n\n", "Let me think about it.\n\n", "The answer is near.\n\n"]


@pytest.fixture(scope="module")
def target(open_tiny):
    return open_tiny("target", ModelConfig(n_ctx=1024, n_batch=128, n_seq_max=16, n_threads=1))


def test_the_candidates_are_what_the_tests_say():
    assert [check_step(c) for c in (HOLDS, FALSE, *OPEN)] == [REWARD_HOLDS, REWARD_FALSE, None, None, None]


def query_tokens(model: Model) -> list[int]:
    return model.tokenize(question_suffix(model, PROBLEM, VERIFIER_QUESTION), parse_special=True)


def fresh_verdict(model: Model, reward: PromptedReward, tokens: list[int]) -> float:
    """P(Yes) / (P(Yes) + P(No)) read from a new sequence over the whole text."""
    seq = model.new_sequence(tokens)
    try:
        return float(softmax([seq.logits[reward.good], seq.logits[reward.bad]])[0])
    finally:
        model.release(seq)


class Counters:
    """Tokens evaluated since the last look, by llama.cpp and by the engine's own accounting."""

    def __init__(self, model: Model):
        self.model = model
        self.evaluated, self.counted = model.evaluated_tokens(), model.usage.counted

    def delta(self) -> int:
        evaluated = self.model.evaluated_tokens() - self.evaluated
        assert self.model.usage.counted - self.counted == evaluated  # nothing evaluated off the books
        self.evaluated, self.counted = self.model.evaluated_tokens(), self.model.usage.counted
        return evaluated


def test_calculator_decides_what_it_can_and_the_verifier_the_rest(target):
    reward = make_reward("calculator+verifier", target=target)
    assert isinstance(reward, CalculatorReward) and isinstance(reward.fallback, PromptedReward)
    candidates = [HOLDS, OPEN[0], FALSE, OPEN[1]]
    got = reward.score(PROBLEM, [], candidates)
    assert got[0] == REWARD_HOLDS and got[2] == REWARD_FALSE
    assert reward.fallback.stats.candidates == 2  # only the two it could not check
    assert (reward.stats.candidates, reward.stats.checked) == (4, 2)
    assert np.all((got[[1, 3]] > 0) & (got[[1, 3]] < 1))
    alone = make_reward("verifier", target=target)
    np.testing.assert_allclose(got[[1, 3]], alone.score(PROBLEM, [], [OPEN[0], OPEN[1]]), atol=1e-3)

    counters = Counters(target)
    again = reward.score(PROBLEM, [], [FALSE, HOLDS])
    assert list(again) == [REWARD_FALSE, REWARD_HOLDS]
    assert reward.fallback.stats.candidates == 2 and counters.delta() == 0  # no model work at all


def test_self_verification_evaluates_only_the_question_in_the_policy_sequences(target):
    reward = make_reward("calculator+self", target=target)
    assert reward.wants_contexts
    head = target.new_sequence(target.tokenize(solution_prompt(target, PROBLEM), add_special=True))
    candidates = [OPEN[0], HOLDS, OPEN[1]]
    contexts, _ = target.score(head, [target.tokenize(c) for c in candidates])
    before = [(list(s.tokens), s.logits.copy(), target.cells_used(s)) for s in contexts]
    query = query_tokens(target)

    counters = Counters(target)
    got = reward.score(PROBLEM, [], candidates, contexts=contexts)
    assert counters.delta() == 2 * len(query)  # the question, in the two sequences the calculator left open
    assert reward.stats.query_tokens == 2 * len(query)
    assert got[1] == REWARD_HOLDS
    for s, (tokens, logits, cells) in zip(contexts, before):
        assert s.tokens == tokens and not s.pending and target.cells_used(s) == cells == len(tokens)
        np.testing.assert_array_equal(s.logits, logits)
    for i in (0, 2):
        assert got[i] == pytest.approx(fresh_verdict(target, reward.fallback, contexts[i].tokens + query), abs=1e-3)

    # The question left nothing behind in the KV cache: the candidate continues as if never asked.
    token = target.tokenize(" So")[0]
    target.extend([(contexts[0], [token])], kind="prompt")
    fresh = target.new_sequence(before[0][0] + [token])
    np.testing.assert_allclose(contexts[0].logits, fresh.logits, atol=1e-3)


def test_verifier_prefix_cache_evaluates_only_new_steps(target):
    reward = make_reward("calculator+verifier", target=target)
    prompt = target.tokenize(solution_prompt(target, PROBLEM), add_special=True)
    query = query_tokens(target)
    n = lambda text: len(target.tokenize(text))  # noqa: E731

    counters = Counters(target)
    first = reward.score(PROBLEM, [], [OPEN[0], OPEN[1]])
    assert counters.delta() == len(prompt) + n(OPEN[0]) + n(OPEN[1]) + 2 * len(query)

    # Next step after an accepted step the verifier scored: its KV is reused,
    # only the new candidate (the calculator settles the other) and the question run.
    second = reward.score(PROBLEM, [OPEN[0]], [OPEN[2], HOLDS])
    assert counters.delta() == n(OPEN[2]) + len(query)
    assert second[1] == REWARD_HOLDS
    whole = prompt + target.tokenize(OPEN[0]) + target.tokenize(OPEN[2]) + query
    assert second[0] == pytest.approx(fresh_verdict(target, reward.fallback, whole), abs=1e-3)
    counters.delta()

    # After a step only the calculator judged, the verifier catches up on that step once.
    third = reward.score(PROBLEM, [OPEN[0], HOLDS], [OPEN[1]])
    assert counters.delta() == n(HOLDS) + n(OPEN[1]) + len(query)
    whole = prompt + target.tokenize(OPEN[0]) + target.tokenize(HOLDS) + target.tokenize(OPEN[1]) + query
    assert third[0] == pytest.approx(fresh_verdict(target, reward.fallback, whole), abs=1e-3)
    assert 0 < first[0] < 1


def test_calculator_decided_steps_never_exhaust_the_prefix_cache(target):
    """Steps accepted on the calculator's verdict alone are not in the verifier's
    cache; 30 of them in a row, 4 candidates each, must fit the 16 slots."""
    reward = make_reward("calculator+verifier", target=target)
    steps = []
    try:
        for i in range(30):
            got = reward.score(PROBLEM, steps, [f"{i} + 1 = {i + 1}.\n\n", OPEN[i % 3], f"{i} * 2 = 1.\n\n", OPEN[0]])
            assert got[0] == REWARD_HOLDS and 0 < got[1] < 1
            steps.append(f"{i} + 1 = {i + 1}.\n\n")  # the calculator's pick, never scored by the verifier
    finally:
        reward.reset()
    assert target.live_sequences == []


@pytest.fixture(scope="module")
def embedding_target(open_tiny):
    return open_tiny("target", ModelConfig(n_ctx=1024, n_batch=128, n_seq_max=16, n_threads=1, embeddings=True))


def test_value_prm_scores_an_empty_step(embedding_target, tmp_path):
    """A candidate that is only an end of turn has no tokens: its value is the prefix's."""
    from specs_local.rewards import ValueHead, make_value_prm

    model = embedding_target
    head = ValueHead([(np.random.default_rng(0).standard_normal((1, model.n_embd)), np.zeros(1))])
    reward = make_value_prm(model, head)
    try:
        got = reward.score(PROBLEM, ["12 * 7 = 84.\n\n"], ["", "So 84.\n\n", ""])
        assert np.all((got > 0) & (got < 1)) and got[0] == got[2]
        prefix = model.new_sequence(model.tokenize(f"{PROBLEM}\n", add_special=True) + model.tokenize("12 * 7 = 84.\n\n"))
        assert got[0] == pytest.approx(head(prefix.hidden), abs=1e-5)
    finally:
        reward.reset()


@pytest.mark.parametrize("role", ["no-template", "no-system"])
def test_prm_prefixes_need_no_chat_template(open_tiny, tmp_path, role):
    """token-prm and value-prm lay out "{problem} " themselves: a PRM file without a
    chat template, or with one that refuses a system turn, must score."""
    from specs_local.rewards import ValueHead, make_value_prm

    plain = open_tiny(role, ModelConfig(n_ctx=512, n_batch=64, n_seq_max=12, n_threads=1))
    prm = make_reward("token-prm", target=plain)
    got = prm.score(PROBLEM, ["We multiply.\n\n"], OPEN)
    assert got.shape == (3,) and np.all((got > 0) & (got < 1))
    prm.reset()
    embedded = open_tiny(role, ModelConfig(n_ctx=512, n_batch=64, n_seq_max=12, n_threads=1, embeddings=True))
    value = make_value_prm(embedded, ValueHead([(np.ones((1, embedded.n_embd)), None)]))
    assert value.score(PROBLEM, [], OPEN).shape == (3,)
    value.reset()


def test_a_prompt_that_needs_the_chat_template_still_says_so(open_tiny):
    plain = open_tiny("no-template", ModelConfig(n_ctx=512, n_batch=64, n_seq_max=12, n_threads=1))
    from specs_local.errors import SpecsError

    with pytest.raises(SpecsError, match="no chat template"):
        make_reward("verifier", target=plain).score(PROBLEM, [], OPEN)


def test_template_settings_reach_the_reward(target):
    """A preset's [reward.template]: swapping good and bad turns r into 1 - r."""
    from specs_local.errors import SpecsError

    plain = make_reward("token-prm", target=target).score(PROBLEM, [], OPEN)
    swapped = make_reward("token-prm", target=target, template={"good": "-", "bad": "+"}).score(PROBLEM, [], OPEN)
    np.testing.assert_allclose(swapped, 1 - plain, atol=1e-6)
    asked = make_reward("calculator+self", target=target, template={"question": "Right? Yes or No."})
    assert asked.fallback.question == "Right? Yes or No."
    with pytest.raises(SpecsError, match="no template setting 'step_template'"):
        make_reward("self", target=target, template={"step_template": "{step}"})
