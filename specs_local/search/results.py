"""What a search yields and returns: its steps, its result, and the stats a ``Tracker`` gathers
from the models it ran on (tokens by kind, decode calls and shapes, the settings that ran)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Generator

from ..answers import extract_boxed

if TYPE_CHECKING:
    from ..engine import Model
    from .common import Models
    from .config import SearchConfig


@dataclass
class Step:
    text: str
    source: str  # "draft" | "target"
    reward: float | None = None
    draft_logprob: float | None = None  # mean per token, untempered
    target_logprob: float | None = None
    score: float | None = None  # SPECS: target - draft log-ratio + beta * reward
    accepted: bool = False  # a draft step that passed verification
    deferred: bool = False  # the draft's candidates were rejected and the target wrote this step
    candidates: int = 1
    tokens: int = 0  # tokens in this step
    ends_turn: bool = False


@dataclass
class SearchResult:
    method: str
    text: str
    answer: str | None
    steps: list[Step]
    stats: dict
    # "eos" | "max_steps" | "max_tokens" | "context_full" | "interrupted" | "low_confidence"
    stop_reason: str
    extra: dict = field(default_factory=dict)  # strategy-specific (e.g. votes)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "answer": self.answer,
            "text": self.text,
            "stop_reason": self.stop_reason,
            "steps": [asdict(s) for s in self.steps],
            "stats": self.stats,
            **({"extra": self.extra} if self.extra else {}),
        }


SearchGenerator = Generator[Step, None, SearchResult]


class Tracker:
    """Times a search and gathers its stats from the models it used."""

    def __init__(self, method: str, models: Models, config: SearchConfig):
        self.method = method
        self.models = models
        self.config = config
        self.t0 = time.perf_counter()
        for m in models.distinct().values():
            m.reset_usage()
        reward_stats = getattr(models.reward, "stats", None)
        self._reward_before = asdict(reward_stats) if reward_stats is not None else None

    def result(self, steps: list[Step], stop_reason: str, extra: dict | None = None) -> SearchResult:
        text = "".join(s.text for s in steps)
        return SearchResult(
            method=self.method,
            text=text,
            answer=extract_boxed(text),
            steps=steps,
            stats=self.stats(steps),
            stop_reason=stop_reason,
            extra=extra or {},
        )

    def stats(self, steps: list[Step]) -> dict:
        stats = search_stats(steps, self.models.distinct(), self.config.n, time.perf_counter() - self.t0)
        # A record names the settings that made it: the search's, the reward (kind, model file,
        # head) and the target's context.
        identity = getattr(self.models.reward, "identity", None)
        stats["settings"] = {**asdict(self.config), **(identity() if identity else {}),
                             "ctx": self.models.target.n_ctx}
        reward_stats = getattr(self.models.reward, "stats", None)
        if reward_stats is not None and self._reward_before is not None:
            now = asdict(reward_stats)
            stats["reward"] = {"name": getattr(self.models.reward, "name", "reward"),
                               **{k: round(now[k] - self._reward_before[k], 4) for k in now}}
        return stats


def model_usage(model: Model) -> dict:
    """What one model did during a search: tokens by kind, decode calls and their shapes."""
    u = model.usage
    return {
        "file": model.name,
        "prompt": u.prompt,
        "generated": u.generated,
        "scored": u.scored,
        "evaluated": model.evaluated_tokens(),
        "decode_seconds": round(u.decode_seconds, 4),
        "decode_calls": u.decode_calls,
        "generation_seconds": round(u.generation_seconds, 4),
        "generation_calls": u.generation_calls,
        "mean_generation_batch": round(u.generation_rows / u.generation_calls, 3) if u.generation_calls else 0.0,
        "decode_batches": {size: list(tally) for size, tally in u.decode_batches.items()},
        "attended_cells": u.attended_cells,
    }


def search_stats(steps: list[Step], models: dict[str, Model], n: int, wall_seconds: float) -> dict:
    """A search's stats from its steps and its models' counters (since they were last reset)."""
    drafted = [s for s in steps if s.source == "draft"]
    draft_attempts = len(drafted) + sum(1 for s in steps if s.deferred)
    return {
        "wall_seconds": round(wall_seconds, 4),
        "n": n,
        "steps": len(steps),
        "step_tokens": sum(s.tokens for s in steps),
        "steps_draft": len(drafted),
        "steps_target": len(steps) - len(drafted),
        "deferrals": sum(1 for s in steps if s.deferred),
        "acceptance_rate": round(len(drafted) / draft_attempts, 4) if draft_attempts else None,
        "models": {role: model_usage(m) for role, m in models.items()},
    }
