"""Greedy decoding, step by step, on the target alone or the draft alone: the floor every search must beat."""
from __future__ import annotations

import numpy as np

from ..errors import ContextFullError
from .common import Models, SearchConfig, SearchGenerator, Step, Tracker, adopt, propose, start


def greedy(problem: str, models: Models, config: SearchConfig, role: str = "target") -> SearchGenerator:
    model = models.require_draft() if role == "draft" else models.target
    tracker = Tracker(f"greedy-{role}", models, config)
    rng = np.random.default_rng(config.seed)
    steps: list[Step] = []
    stop_reason = "max_steps"
    head = None
    try:
        head = start(model, problem)
        for index in range(config.max_steps):
            kids, [g] = propose(model, head, 1, config, rng, last=index == config.max_steps - 1, temperature=0.0)
            head = adopt(model, head, kids, 0)
            step = Step(text=g.text, source=role, target_logprob=g.mean_logprob if role == "target" else None,
                        draft_logprob=g.mean_logprob if role == "draft" else None, tokens=len(g.tokens), ends_turn=g.finish == "eog")
            steps.append(step)
            yield step
            if step.ends_turn:
                stop_reason = "eos"
                break
    except ContextFullError:
        stop_reason = "context_full"
    finally:
        if head is not None:
            model.release(head)
    return tracker.result(steps, stop_reason)


def greedy_target(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    return (yield from greedy(problem, models, config, "target"))


def greedy_draft(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    return (yield from greedy(problem, models, config, "draft"))
