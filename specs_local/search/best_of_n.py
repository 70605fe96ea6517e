"""Best-of-N: N whole solutions sampled in one batch, one chosen by reward or by vote.

Three choices are reported: the single best by reward, the majority answer,
and the reward-weighted vote; the answer given is the reward-weighted vote.
"""
from __future__ import annotations

import numpy as np

from ..answers import extract_boxed, votes
from ..errors import ContextFullError
from .common import Models, SearchConfig, SearchGenerator, Step, Tracker, no_room_for_a_step, propose, start


def best_of_n(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    model, reward = models.target, models.reward
    tracker = Tracker("best-of-n", models, config)
    rng = np.random.default_rng(config.seed)
    head = None
    try:
        head = start(model, problem, config)
        kids, gens = propose(model, head, config.n, config, rng, last=True)
        rewards = reward.score(problem, [], [g.text for g in gens], contexts=kids)
        model.release_all(kids)
    except ContextFullError as error:  # its one step is its first
        raise no_room_for_a_step(error) from None
    finally:
        if head is not None:
            model.release(head)
        reward.reset()
    answers = [extract_boxed(g.text) for g in gens]
    chosen = votes(answers, rewards)
    g = gens[chosen["weighted"]]
    step = Step(text=g.text, source="target", reward=float(rewards[chosen["weighted"]]),
                target_logprob=g.mean_logprob, candidates=len(gens), tokens=len(g.tokens), ends_turn=g.finish == "eog")
    yield step
    extra = {f"answer_{how}": answers[i] for how, i in chosen.items()}
    extra["answers"] = answers
    extra["rewards"] = [float(r) for r in rewards]
    return tracker.result([step], "eos" if step.ends_turn else "max_steps", extra=extra)
