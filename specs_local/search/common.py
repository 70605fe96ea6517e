"""What every search strategy shares: the models it runs on, and the few engine moves they
all make (a prompt, a batch of proposals, adopting one, the step-wise loop).

A strategy is a generator function ``strategy(problem, models, config)`` that yields each
``Step`` as soon as it is final and returns a ``SearchResult`` (results.py); its settings are a
``SearchConfig`` (config.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..chat import solution_prompt
from ..engine import Generation, Model, Sequence
from ..errors import ContextFullError, PromptTooLongError, SpecsError
from ..sampling import SamplerParams
from .config import SearchConfig
from .results import SearchGenerator, SearchResult, Step, Tracker


@dataclass
class Models:
    target: Model
    reward: object  # a reward model (see specs_local/rewards/)
    draft: Model | None = None

    def distinct(self) -> dict[str, Model]:
        """Each loaded model once, by role (the reward's model may be the target)."""
        roles = {"target": self.target}
        if self.draft is not None:
            roles["draft"] = self.draft
        reward_model = getattr(self.reward, "model", None)
        if reward_model is not None and all(reward_model is not m for m in roles.values()):
            roles["reward"] = reward_model
        return roles

    def require_draft(self) -> Model:
        if self.draft is None:
            raise SpecsError("this method needs a draft model (--draft)")
        if self.draft.vocab_fingerprint != self.target.vocab_fingerprint:
            raise SpecsError(
                f"draft {self.draft.name} and target {self.target.name} have different vocabularies "
                "(tokenizer fingerprints differ); pick a draft from the target's model family"
            )
        return self.draft


def sampler(config: SearchConfig, temperature: float | None = None) -> SamplerParams:
    t = config.temperature if temperature is None else temperature
    return SamplerParams(temperature=t, top_p=config.top_p)


def start(model: Model, problem: str, config: SearchConfig) -> Sequence:
    """A sequence holding the problem's chat prompt, evaluated once."""
    text = solution_prompt(model, problem, config.system_prompt)
    tokens = model.tokenize(text, add_special=True, parse_special=True)
    if len(tokens) >= model.n_ctx:
        raise PromptTooLongError(f"the prompt has {len(tokens)} tokens; the context holds {model.n_ctx} (raise --ctx)")
    return model.new_sequence(tokens)


def no_room_for_a_step(error: ContextFullError) -> PromptTooLongError:
    """A context that filled up before a search's first step: the prompt left no room for
    one. An error, where a full context later stops the search with the steps it has: an
    empty answer would pass for a solution cut short."""
    return PromptTooLongError(f"the prompt leaves no room for a step: {error}")


def step_budget(model: Model, head: Sequence, n: int, config: SearchConfig, last: bool, used: int = 0) -> int:
    """Tokens each of n candidates may generate (after ``used`` tokens of the solution, under
    ``max_tokens``); ContextFullError if not even a short step fits."""
    wanted = config.final_step_tokens if last else config.max_step_tokens
    if config.max_tokens is not None:
        wanted = max(1, min(wanted, config.max_tokens - used))
    room = (model.n_ctx - head.length) // max(n, 1) - 64  # 64: room for a verifier question
    if room < min(wanted, 16):
        raise ContextFullError(f"{model.name}: the context ({model.n_ctx} tokens) is full after {head.length}")
    return min(wanted, room)


Rngs = np.random.Generator | list[np.random.Generator]  # one for all rows, or one per row


def propose(model: Model, head: Sequence, n: int, config: SearchConfig, rng: Rngs,
            last: bool, temperature: float | None = None, greedy_first: bool = False,
            stop_below: tuple[float, int] | None = None, used: int = 0) -> tuple[list[Sequence], list[Generation]]:
    """n candidate steps from one prefix, generated in one batch (the first one greedily
    if ``greedy_first``, the others sampled)."""
    return propose_many(model, [head], [n], config, rng, last, temperature, greedy_first, stop_below, [used])


def propose_many(model: Model, heads: list[Sequence], counts: list[int], config: SearchConfig,
                 rng: Rngs, last: bool, temperature: float | None = None,
                 greedy_first: bool = False, stop_below: tuple[float, int] | None = None,
                 used: list[int] | None = None) -> tuple[list[Sequence], list[Generation]]:
    """counts[i] candidate steps from each of several prefixes, all in one batch per decode
    (with ``greedy_first``, each prefix's first candidate at temperature 0; with ``stop_below``,
    early stopping by confidence, see engine/generation.py). ``used[i]``: the tokens the
    solution of prefix i holds already, for ``max_tokens``."""
    total = sum(counts)
    budget = min(step_budget(model, h, total, config, last, u) for h, u in zip(heads, used or [0] * len(heads)))
    sampled, greedy = sampler(config, temperature), sampler(config, 0.0)
    params = [greedy if greedy_first and i == 0 else sampled for count in counts for i in range(count)]
    kids: list[Sequence] = []
    model.flush(heads)  # the heads' pending tokens in one batch, not one decode per fork
    try:
        for head, count in zip(heads, counts):
            kids += model.fork(head, count)
        gens = model.generate(kids, params, rng, max_tokens=budget, stop_at_delimiter=not last, stop_below=stop_below)
    except BaseException:
        model.release_all(kids)
        raise
    return kids, gens


def sample_rngs(seed: int, count: int) -> list[np.random.Generator]:
    """Independent random streams for ``count`` samples or chains. The first is the one a
    single search of this seed uses, so that one sample or chain reproduces it."""
    return [np.random.default_rng(seed if i == 0 else [seed, i]) for i in range(count)]


def stopping(config: SearchConfig) -> tuple[float, int] | None:
    """Early stopping's (bar, window), or None."""
    return None if config.stop_confidence is None else (config.stop_confidence, config.window)


def adopt(model: Model, old_head: Sequence, kids: list[Sequence], chosen: int) -> Sequence:
    """Keep the chosen child as the new head; free the old head and the rest."""
    model.release(old_head)
    model.release_all(kids, keep=kids[chosen])
    return kids[chosen]


def texts(steps: list[Step]) -> list[str]:
    return [s.text for s in steps]


def step_by_step(tracker: Tracker, problem: str, roles: dict[str, Model], config: SearchConfig,
                 next_step: Callable[[dict[str, Sequence], list[Step], bool], Step]) -> SearchGenerator:
    """The loop of the step-wise strategies.

    Each model in ``roles`` starts a sequence with the problem's prompt (its
    "head"); ``next_step(heads, steps, last)`` makes one step and moves the
    heads on. The loop stops at the end of the turn, at ``max_steps``, at
    ``max_tokens``, or cleanly when the context is full, and frees every head."""
    steps: list[Step] = []
    heads: dict[str, Sequence] = {}
    stop_reason = "max_steps"
    try:
        for role, model in roles.items():
            heads[role] = start(model, problem, config)
        for index in range(config.max_steps):
            step = next_step(heads, steps, index == config.max_steps - 1)
            steps.append(step)
            yield step
            if step.ends_turn:
                stop_reason = "eos"
                break
            if reached_max_tokens(steps, config):
                stop_reason = "max_tokens"
                break
    except ContextFullError as error:
        if not steps:
            raise no_room_for_a_step(error) from None
        stop_reason = "context_full"
    finally:
        for role, seq in heads.items():
            roles[role].release(seq)
        tracker.models.reward.reset()
    return tracker.result(steps, stop_reason)


def solution_tokens(steps: list[Step]) -> int:
    return sum(s.tokens for s in steps)


def reached_max_tokens(steps: list[Step], config: SearchConfig) -> bool:
    return config.max_tokens is not None and solution_tokens(steps) >= config.max_tokens


def run(strategy: SearchGenerator, on_step: Callable[[Step], None] | None = None) -> SearchResult:
    """Drain a strategy, showing each step to ``on_step``; return its result."""
    while True:
        try:
            step = next(strategy)
        except StopIteration as done:
            return done.value
        if on_step is not None:
            on_step(step)
