"""Greedy decoding, step by step, on the target alone or the draft alone: the floor every search must beat."""
from __future__ import annotations

import numpy as np

from .common import Models, adopt, propose, solution_tokens, step_by_step
from .config import SearchConfig
from .results import SearchGenerator, Step, Tracker


def greedy(problem: str, models: Models, config: SearchConfig, role: str = "target") -> SearchGenerator:
    model = models.require_draft() if role == "draft" else models.target
    rng = np.random.default_rng(config.seed)

    def next_step(heads, steps, last):
        kids, [g] = propose(model, heads[role], 1, config, rng, last, temperature=0.0, used=solution_tokens(steps))
        heads[role] = adopt(model, heads[role], kids, 0)
        return Step(text=g.text, source=role, **{f"{role}_logprob": g.mean_logprob}, tokens=len(g.tokens),
                    ends_turn=g.finish == "eog")

    tracker = Tracker(f"greedy-{role}", models, config)
    return (yield from step_by_step(tracker, problem, {role: model}, config, next_step))


def greedy_target(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    return (yield from greedy(problem, models, config, "target"))


def greedy_draft(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    return (yield from greedy(problem, models, config, "draft"))
