"""The calculator in front of another reward: checked arithmetic first, the model where nothing is checkable."""
from __future__ import annotations

import time

import numpy as np

from ..calculator import NEUTRAL, REWARD_FALSE, check_step
from ..engine import Sequence
from .prompted import RewardStats


class CalculatorReward:
    """Calculator-checked steps first; the model reward only where nothing is checkable.

    A step with a false arithmetic equality gets a low reward and one whose
    equalities all hold a high one, without running any model; the rest are
    scored by ``fallback`` (or get a neutral 0.5) in one batched call. With
    ``veto``, the calculator only condemns: every step goes to the fallback,
    since true arithmetic says nothing of the reasoning, and a false equality
    caps the reward at the low value. A cap, not a replacement: a fallback that
    rates a step below it (a probe reading unlikely text) must not be raised by
    finding an error in it."""

    def __init__(self, fallback=None, veto: bool = False):
        self.fallback = fallback
        self.veto = veto
        self.name = "calculator" + (f"+{fallback.name}" if fallback is not None else "")
        self.stats = RewardStats()
        self.model = getattr(fallback, "model", None)

    def score(self, problem: str, steps: list[str], candidates: list[str],
              contexts: list[Sequence] | None = None) -> np.ndarray:
        t0 = time.perf_counter()
        verdicts = [check_step(c) for c in candidates]
        vetoed = [i for i, v in enumerate(verdicts) if v == REWARD_FALSE]
        if self.veto:
            verdicts = [None] * len(candidates)
        rewards = np.array([NEUTRAL if v is None else v for v in verdicts], dtype=float)
        open_ = [i for i, v in enumerate(verdicts) if v is None]
        if open_ and self.fallback is not None:
            sub_contexts = [contexts[i] for i in open_] if contexts is not None else None
            asked = self.fallback.stats.query_tokens
            rewards[open_] = self.fallback.score(problem, steps, [candidates[i] for i in open_], sub_contexts)
            self.stats.query_tokens += self.fallback.stats.query_tokens - asked
        if self.veto:
            rewards[vetoed] = np.minimum(rewards[vetoed], REWARD_FALSE)
        self.stats.calls += 1
        self.stats.candidates += len(candidates)
        self.stats.checked += len(vetoed) if self.veto else len(candidates) - len(open_)
        self.stats.seconds += time.perf_counter() - t0
        return rewards

    def identity(self) -> dict:
        inner = self.fallback.identity() if self.fallback is not None else {}
        return {**inner, "reward": self.name}

    @property
    def wants_contexts(self) -> bool:
        return bool(getattr(self.fallback, "wants_contexts", False))

    def reset(self) -> None:
        if self.fallback is not None:
            self.fallback.reset()
