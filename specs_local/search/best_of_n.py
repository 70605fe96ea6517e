"""Best-of-N: N whole solutions sampled in one batch, one chosen by reward or by vote.

Three choices are reported: the single best by reward, the majority answer,
and the reward-weighted vote; the answer given is the reward-weighted vote.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..answers import extract_boxed
from ..errors import ContextFullError
from .common import Models, SearchConfig, SearchGenerator, Step, Tracker, propose, start


def normalize_answer(answer: str | None) -> str | None:
    """A light canonical form so that votes group equal answers written differently."""
    if answer is None:
        return None
    a = answer.strip().strip("$").replace(" ", "").replace("\\left", "").replace("\\right", "")
    a = a.replace("\\!", "").replace("dfrac", "frac").rstrip(".")
    if a.replace(",", "").replace(".", "", 1).lstrip("-").isdigit():
        a = a.replace(",", "")
        if "." in a:
            a = a.rstrip("0").rstrip(".")
    return a


def votes(answers: list[str | None], rewards) -> dict:
    """Indices chosen by best reward, by majority and by reward-weighted vote."""
    rewards = np.asarray(rewards, dtype=float)
    keys = [normalize_answer(a) for a in answers]
    count: dict[str, int] = defaultdict(int)
    weight: dict[str, float] = defaultdict(float)
    for k, r in zip(keys, rewards):
        if k is not None:
            count[k] += 1
            weight[k] += r

    def best_with(key):  # the highest-reward solution giving this answer
        return max((i for i, k in enumerate(keys) if k == key), key=lambda i: rewards[i])

    best = int(np.argmax(rewards))
    if not count:
        return {"best": best, "majority": best, "weighted": best}
    majority = max(count, key=lambda k: (count[k], weight[k]))
    weighted = max(weight, key=lambda k: (weight[k], count[k]))
    return {"best": best, "majority": best_with(majority), "weighted": best_with(weighted)}


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
    except ContextFullError:
        return tracker.result([], "context_full")
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
