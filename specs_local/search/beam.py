"""Beam search with search-and-learn semantics, on the target or the draft.

n candidates per step in total; the n / M best prefixes by reward survive, and
each expands into M candidates at the next step (M = ``beam_width``). A beam
that ends its turn is complete; the search stops when n / M beams are complete.
``beam-target`` is the baseline SPECS must beat on latency at equal accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine import Sequence
from ..errors import ContextFullError
from .common import Models, SearchConfig, SearchGenerator, Step, Tracker, propose_many, start, texts


@dataclass
class Beam:
    seq: Sequence | None
    steps: list[Step]

    @property
    def last_reward(self) -> float:
        return self.steps[-1].reward if self.steps else float("-inf")


def expansion_counts(n: int, n_beams: int) -> list[int]:
    """Spread n candidates over the live beams as evenly as possible."""
    base, extra = divmod(n, n_beams)
    return [base + (1 if i < extra else 0) for i in range(n_beams)]


def beam_search(problem: str, models: Models, config: SearchConfig, role: str = "target") -> SearchGenerator:
    model = models.require_draft() if role == "draft" else models.target
    reward = models.reward
    tracker = Tracker(f"beam-{role}", models, config)
    rng = np.random.default_rng(config.seed)
    keep = max(1, config.n // max(1, config.beam_width))
    beams: list[Beam] = []
    completed: list[Beam] = []
    stop_reason = "max_steps"
    try:
        beams = [Beam(start(model, problem), [])]
        for index in range(config.max_steps):
            last = index == config.max_steps - 1
            counts = expansion_counts(config.n, len(beams))
            kids, gens = propose_many(model, [b.seq for b in beams], counts, config, rng, last)
            parents = [b for b, c in zip(beams, counts) for _ in range(c)]
            rewards = _score_by_parent(problem, reward, parents, kids, gens)
            order = np.argsort(-rewards, kind="stable")[:keep]
            survivors = []
            for i in order:
                g = gens[i]
                step = Step(text=g.text, source=role, reward=float(rewards[i]), candidates=len(gens),
                            tokens=len(g.tokens), ends_turn=g.finish == "eog",
                            **{f"{role}_logprob": g.mean_logprob})
                beam = Beam(kids[i], parents[i].steps + [step])
                (completed if step.ends_turn else survivors).append(beam)
            for i, kid in enumerate(kids):
                if i not in order or gens[i].finish == "eog":
                    model.release(kid)
            for b in beams:
                model.release(b.seq)
            beams = survivors
            if len(completed) >= keep or not beams:
                stop_reason = "eos"
                break
    except ContextFullError:
        stop_reason = "context_full"
    finally:
        for b in beams:
            model.release(b.seq)
        reward.reset()
    pool = completed or beams
    best = max(pool, key=lambda b: b.last_reward, default=Beam(None, []))
    if not completed and stop_reason == "eos":
        stop_reason = "max_steps"
    for step in best.steps:
        yield step
    return tracker.result(best.steps, stop_reason, extra={"completed_beams": len(completed)})


def _score_by_parent(problem, reward, parents: list[Beam], kids, gens) -> np.ndarray:
    """Rewards for all candidates, one reward call per parent beam (they share a prefix)."""
    rewards = np.empty(len(gens))
    start_at = 0
    while start_at < len(gens):
        parent = parents[start_at]
        end = start_at
        while end < len(gens) and parents[end] is parent:
            end += 1
        rewards[start_at:end] = reward.score(problem, texts(parent.steps), [g.text for g in gens[start_at:end]],
                                             contexts=kids[start_at:end])
        start_at = end
    return rewards


def beam_target(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    return (yield from beam_search(problem, models, config, "target"))


def beam_draft(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    return (yield from beam_search(problem, models, config, "draft"))
