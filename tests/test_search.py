"""Every strategy end to end on tiny GGUF models: real llama.cpp, real rewards."""
from __future__ import annotations

import math
import re

import pytest

from specs_local.errors import SpecsError
from specs_local.search import STRATEGIES, SearchConfig
from specs_local.solver import EngineOptions, Solver

PROBLEM = "What is 12 times 7?"
CONFIG = SearchConfig(n=3, beam_width=1, max_steps=4, max_step_tokens=12, final_step_tokens=16, seed=5)
ENGINE = EngineOptions(threads=1, ctx=2048)


@pytest.fixture(scope="module")
def solver(tiny_models):
    s = Solver.from_paths(tiny_models["target"], tiny_models["draft"], reward_kind="calculator+self",
                          config=CONFIG, engine=ENGINE)
    yield s
    s.close()


def assert_accounting(result, solver):
    """Per model: llama.cpp's evaluated tokens = prompted + generated + scored."""
    for role, m in result.stats["models"].items():
        assert m["evaluated"] == m["prompt"] + m["generated"] + m["scored"], (role, m)
    for model in solver.models.distinct().values():
        assert model.live_sequences == []  # nothing left behind in the KV caches


@pytest.mark.parametrize("method", sorted(STRATEGIES))
def test_each_strategy_runs_and_its_stats_add_up(solver, method):
    result = solver.solve(PROBLEM, method=method)
    assert result.method == method
    assert result.steps and result.text == "".join(s.text for s in result.steps)
    assert result.stop_reason in {"eos", "max_steps", "context_full"}
    assert result.stats["steps"] == len(result.steps)
    assert result.stats["step_tokens"] == sum(s.tokens for s in result.steps)
    assert_accounting(result, solver)
    d = result.to_dict()
    assert set(d) >= {"answer", "text", "steps", "stats", "method", "stop_reason"}


def test_greedy_evaluates_exactly_the_minimum(solver):
    result = solver.solve(PROBLEM, method="greedy-target")
    target = result.stats["models"]["target"]
    prompt = len(solver.models.target.tokenize(
        solver.models.target.render_chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBLEM}]),
        add_special=True))
    # prompt once; each generated token once, except the very last, which is never fed back
    assert target["evaluated"] == prompt + result.stats["step_tokens"] - 1
    assert target["scored"] == 0


SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def test_same_seed_same_result(solver):
    a = solver.solve(PROBLEM, method="specs", seed=11).to_dict()
    b = solver.solve(PROBLEM, method="specs", seed=11).to_dict()
    assert [s["text"] for s in a["steps"]] == [s["text"] for s in b["steps"]]
    assert [s["source"] for s in a["steps"]] == [s["source"] for s in b["steps"]]
    assert a["answer"] == b["answer"]


def test_specs_draft_scores_are_recorded_and_consistent(solver):
    result = solver.solve(PROBLEM, method="specs", tau_reject=-math.inf, tau_switch=-1.0, max_steps=4)
    sources = [s.source for s in result.steps]
    assert sources[0] == "target"  # SPECS starts in target mode
    assert all(src == "draft" for src in sources[1:])  # every draft passes at tau_reject = -inf
    for s in result.steps[1:]:
        assert s.accepted and not s.deferred
        assert s.score == pytest.approx(s.target_logprob - s.draft_logprob + CONFIG.beta * s.reward)
    if len(result.steps) > 1:
        assert result.stats["acceptance_rate"] == 1.0
        assert result.stats["models"]["target"]["scored"] > 0


def test_specs_defers_every_step_when_no_draft_can_pass(solver):
    result = solver.solve(PROBLEM, method="specs", tau_reject=math.inf, tau_switch=-1.0, max_steps=4)
    assert [s.source for s in result.steps] == ["target"] * len(result.steps)
    assert all(s.deferred for s in result.steps[1:])
    assert not result.steps[0].deferred
    if len(result.steps) > 1:
        assert result.stats["deferrals"] == len(result.steps) - 1
        assert result.stats["acceptance_rate"] == 0.0


def test_specs_target_mode_can_offer_the_targets_greedy_step(solver):
    """With one candidate per step and every draft rejected, SPECS' target mode writes
    exactly greedy decoding's text when the greedy candidate is on, and samples when off."""
    greedy = solver.solve(PROBLEM, method="greedy-target")
    on = solver.solve(PROBLEM, method="specs", n=1, tau_reject=math.inf, greedy_candidate=True)
    off = solver.solve(PROBLEM, method="specs", n=1, tau_reject=math.inf, greedy_candidate=False)
    assert [s.text for s in on.steps] == [s.text for s in greedy.steps]
    assert [s.text for s in off.steps] != [s.text for s in greedy.steps]
    assert_accounting(on, solver)


def test_a_draft_with_another_vocabulary_is_refused(tiny_models):
    s = Solver.from_paths(tiny_models["target"], tiny_models["other"], reward_kind="calculator",
                          config=CONFIG, engine=ENGINE)
    try:
        with pytest.raises(SpecsError, match="different vocabularies"):
            s.solve(PROBLEM, method="specs")
    finally:
        s.close()


def test_a_full_context_stops_cleanly(tiny_models):
    """Steps that never end the turn fill the context: the search stops with the steps it has."""
    s = Solver.from_paths(tiny_models["arith"], tiny_models["arith-draft"], reward_kind="calculator",
                          config=SearchConfig(n=4, max_steps=50, max_step_tokens=60, seed=1),
                          engine=EngineOptions(threads=1, ctx=512))
    try:
        result = s.solve(PROBLEM, method="specs", tau_reject=-math.inf)
    finally:
        s.close()
    assert result.stop_reason == "context_full" and result.steps
    assert not any(step.ends_turn for step in result.steps)


@pytest.mark.parametrize("kind", ["verifier", "self", "token-prm", "calculator"])
def test_reward_kinds_give_probabilities(tiny_models, kind):
    s = Solver.from_paths(tiny_models["target"], tiny_models["draft"], reward=tiny_models["draft"],
                          reward_kind=kind, config=CONFIG, engine=ENGINE)
    try:
        result = s.solve(PROBLEM, method="beam-target")
    finally:
        s.close()
    assert all(0.0 <= step.reward <= 1.0 for step in result.steps)
    assert_accounting(result, s)


def test_beam_keeps_finished_candidates_out_of_the_live_beams():
    from specs_local.search.beam import keep_best

    # The two best finished: they go to the completed pool, and the next two best stay live.
    assert keep_best([0.9, 0.8, 0.7, 0.6], [True, True, False, False], 2) == [2, 3]
    assert keep_best([0.1, 0.9, 0.5], [False, False, False], 2) == [1, 2]
    assert keep_best([0.5, 0.5], [True, True], 2) == []


def test_beam_runs_until_no_beam_is_live_and_answers_from_the_completed_pool(tiny_models):
    """search-and-learn's beam search: finished candidates never take a live slot,
    the search goes on until none is live, and the best completed one answers."""
    config = SearchConfig(n=4, beam_width=2, max_steps=12, max_step_tokens=12, final_step_tokens=16)
    s = Solver.from_paths(tiny_models["target"], tiny_models["draft"], reward_kind="calculator+self",
                          config=config, engine=ENGINE)
    try:
        results = [s.solve(PROBLEM, method="beam-target", seed=seed) for seed in range(6)]
    finally:
        s.close()
    for r in results:
        completed, live = r.extra["completed_beams"], r.extra["live_beams"]
        # A finished candidate never takes a live slot: every step of the answer but its last ended at the delimiter.
        assert all(step.text.endswith("\n\n") and step.text.strip() and not step.ends_turn for step in r.steps[:-1])
        assert len(r.extra["pool_rewards"]) == (completed or live)  # the live beams answer only if none completed
        pool = r.extra["pool_rewards"] if completed else []
        if r.stop_reason == "eos":
            assert r.extra["live_beams"] == 0 and pool
        else:
            assert r.stop_reason == "max_steps" and len(r.steps) == config.max_steps
        if pool:  # the best that ended its turn; a beam cut at the step limit only if none did
            ended = [reward for reward, end in zip(pool, r.extra["pool_ended"]) if end]
            assert r.steps[-1].reward == max(ended or pool)
            assert r.steps[-1].ends_turn == bool(ended)
    # More beams complete than the n / M = 2 live slots (the old search stopped there).
    assert max(r.extra["completed_beams"] for r in results) > 2


def test_beam_answers_by_best_last_reward_or_by_the_reward_weighted_vote():
    from specs_local.search.beam import choose_answer

    rewards = [0.9, 0.6, 0.5, 0.95, 0.1, 0.1, 0.1]
    ended = [True, True, True, False, True, True, True]
    # The best ended beam says 9; 7 gathers the most reward (1.1); 5 is said most often.
    # A beam cut at the step limit (0.95) is best only when none ended.
    assert choose_answer(["9", "7", "7.0", None, "5", "5", "5"], rewards, ended) == {
        "best": 0, "weighted": 1, "majority": 4}
    assert choose_answer([None] * 7, rewards, ended) == {"best": 0, "weighted": 0, "majority": 0}  # nothing to vote on
    assert choose_answer(["1"], [0.2], [False]) == {"best": 0, "weighted": 0, "majority": 0}
    assert choose_answer([], [], []) == {}


def test_an_unknown_beam_answer_rule_is_refused_before_any_search():
    with pytest.raises(SpecsError, match="unknown beam answer rule 'vote'; choose one of best, weighted, majority"):
        CONFIG.with_(beam_answer="vote")


def test_the_weighted_beam_answer_is_the_answer_with_most_reward(tiny_models):
    """On boxed-digit solutions (real llama.cpp): the answer given is the one whose
    completed beams' rewards sum highest (here the rewards tie, so it is the most
    frequent answer), while the default keeps the best beam."""
    config = SearchConfig(n=4, beam_width=2, max_steps=8, max_step_tokens=12, final_step_tokens=16)
    s = Solver.from_paths(tiny_models["boxed"], None, reward_kind="calculator+self", config=config, engine=ENGINE)
    try:
        voted = [s.solve(PROBLEM, method="beam-target", seed=seed, beam_answer="weighted") for seed in range(6)]
        default = [s.solve(PROBLEM, method="beam-target", seed=seed) for seed in range(6)]
    finally:
        s.close()
    from specs_local.answers import normalize_answer

    disagree = 0
    for v, d in zip(voted, default):
        assert v.extra["pool_answers"] == d.extra["pool_answers"]  # the same search; only the pick differs
        assert v.answer == v.extra["answer_weighted"] and d.answer == d.extra["answer_best"]
        sums = {}
        for answer, reward in zip(v.extra["pool_answers"], v.extra["pool_rewards"]):
            if answer is not None:
                sums[normalize_answer(answer)] = sums.get(normalize_answer(answer), 0.0) + reward
        assert sums and sums[normalize_answer(v.answer)] == max(sums.values())
        disagree += v.answer != d.answer
    assert disagree  # the vote is not the best beam in disguise


def test_a_beam_that_never_ends_stops_at_the_step_limit(tiny_models):
    """A model that never ends its turn and ends its steps at the delimiter (the arithmetic
    bigram): the beams stay live step after step, and the answer is max_steps steps long."""
    config = SearchConfig(n=4, beam_width=2, max_steps=10, max_step_tokens=12, final_step_tokens=16)
    s = Solver.from_paths(tiny_models["arith"], tiny_models["arith-draft"], reward_kind="calculator", config=config,
                          engine=ENGINE)
    try:
        result = s.solve(PROBLEM, method="beam-target")
    finally:
        s.close()
    assert len(result.steps) == config.max_steps and not any(step.ends_turn for step in result.steps)
    assert all(step.text.endswith("\n\n") for step in result.steps[:-1])  # each went on from a live beam
    assert_accounting(result, s)


def test_a_system_prompt_replaces_the_policy_one(solver):
    default = solver.solve(PROBLEM, method="greedy-target")
    custom = solver.solve(PROBLEM, method="greedy-target", system_prompt="Be brief.")
    target = solver.models.target
    prompt = lambda system: len(target.tokenize(target.render_chat(  # noqa: E731
        [{"role": "system", "content": system}, {"role": "user", "content": PROBLEM}]), add_special=True))
    assert default.stats["models"]["target"]["prompt"] == prompt(SYSTEM)
    assert custom.stats["models"]["target"]["prompt"] == prompt("Be brief.")


@pytest.mark.parametrize("method", ["specs", "beam-target", "best-of-n", "rsd", "greedy"])
@pytest.mark.parametrize("problem, says", [
    ("add one " * 400, r"the prompt has \d+ tokens; the context holds 256"),
    # 229 tokens: it fits in 256, but no step fits after it
    ("x" * 130, r"the prompt leaves no room for a step: .*the context \(256 tokens\) is full after 229"),
], ids=["over-the-context", "no-room-for-a-step"])
def test_a_prompt_that_fills_the_context_is_an_error_not_an_empty_answer(tiny_models, method, problem, says):
    from specs_local.errors import PromptTooLongError

    s = Solver.from_paths(tiny_models["target"], tiny_models["draft"], reward_kind="calculator",
                          config=SearchConfig(n=2, max_steps=2, max_step_tokens=8), engine=EngineOptions(threads=1, ctx=256))
    try:
        with pytest.raises(PromptTooLongError, match=says):
            s.solve(problem, method=method)
        assert all(not m.live_sequences for m in s.models.distinct().values())
    finally:
        s.close()


@pytest.mark.parametrize("field, value, says", [
    ("temperature", 1e-300, "temperature: must be 0 (greedy) or from 0.01 to 2, not 1e-300"),
    ("temperature", -0.5, "temperature: must be"),
    ("temperature", 2.5, "temperature: must be"),
    ("temperature", math.nan, "temperature: must be"),
    ("top_p", 0.0, "top_p: must be above 0 and at most 1, not 0.0"),
    ("top_p", 1.5, "top_p: must be"),
    ("beta", 1.7e308, "beta: must be from -1000 to 1000, not 1.7e+308"),
    ("beta", math.inf, "beta: must be"),
    ("beta", math.nan, "beta: must be"),
    ("tau_reject", math.nan, "tau_reject: must be a number (-inf or inf: always or never), not nan"),
    ("tau_switch", math.nan, "tau_switch: must be a number"),
    ("rsd_delta", math.nan, "rsd_delta: must be a number"),
    ("n", 0, "n: must be a whole number from 1 to 64, not 0"),
    ("n", 65, "n: must be a whole number from 1 to 64"),
    ("n", 2.5, "n: must be a whole number"),
    ("beam_width", 0, "beam_width: must be a whole number from 1 to 64"),
    ("max_steps", 0, "max_steps: must be a whole number from 1 to 100000"),
    ("max_step_tokens", 0, "max_step_tokens: must be a whole number from 1 to 1048576"),
    ("final_step_tokens", 1 << 21, "final_step_tokens: must be a whole number from 1 to 1048576"),
    ("seed", -1, "seed: must be a whole number of at least 0, not -1"),
    ("greedy_candidate", "yes", "greedy_candidate: must be true or false"),
])
def test_search_settings_out_of_bounds_are_refused_in_one_line(field, value, says):
    from specs_local.errors import SettingError

    with pytest.raises(SettingError, match=re.escape(says)) as refused:
        CONFIG.with_(**{field: value})
    assert refused.value.field == field and "\n" not in str(refused.value)


def test_the_bounds_keep_their_edges_and_the_thresholds_their_infinities():
    for changes in ({"temperature": 0}, {"temperature": 0.01}, {"temperature": 2}, {"top_p": 1.0},
                    {"beta": -1000}, {"beta": 1000}, {"n": 64}, {"seed": 2**40},
                    {"tau_reject": math.inf}, {"tau_reject": -math.inf}, {"tau_switch": -1e12}):
        assert CONFIG.with_(**changes)  # -inf: every draft passes; inf: none does


@pytest.mark.parametrize("method", sorted(STRATEGIES))
def test_a_token_budget_caps_every_strategys_solution(solver, method):
    """SearchConfig.max_tokens (the server's max_tokens): no step passes it, and the search stops
    at the first step that reaches it, saying so."""
    result = solver.solve(PROBLEM, method=method, max_tokens=7)
    tokens = sum(s.tokens for s in result.steps)
    assert tokens <= 7
    assert result.stop_reason == "eos" or (result.stop_reason == "max_tokens" and tokens == 7)
    assert result.stats["settings"]["max_tokens"] == 7
    assert_accounting(result, solver)


def test_records_name_the_reward_the_head_and_the_context(solver):
    settings = solver.solve(PROBLEM, method="greedy-target").stats["settings"]
    assert settings["reward"] == "calculator+self" and settings["reward_model"] == "target.gguf"
    assert settings["ctx"] == 2048
