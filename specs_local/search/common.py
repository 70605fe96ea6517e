"""What every search strategy shares: its configuration, the step and result
records, the models it runs on, and the few engine moves they all make.

A strategy is a generator function ``strategy(problem, models, config)`` that
yields each ``Step`` as soon as it is final and returns a ``SearchResult``.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Generator

import numpy as np

from ..answers import extract_boxed
from ..chat import solution_prompt
from ..engine import Generation, Model, Sequence
from ..errors import ContextFullError, PromptTooLongError, SettingError, SpecsError
from ..sampling import SamplerParams
from ..selection import RULES


# How beam search picks its answer among completed beams; "select": by the rule ``select`` (selection.py).
BEAM_ANSWERS = ("best", "weighted", "majority", "select")


# The bounds of the search settings, checked here once for every front end (CLI, Python API,
# server). Past them a search overflows (1/T in float32 sampling, beta * reward in SPECS'
# score), cannot sample, or asks for more sequences or tokens than a context can hold.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 2.0  # or 0, greedy; OpenAI's API stops at 2 too
MAX_BETA = 1000.0  # in magnitude: the rewards are probabilities, the tuned betas 2 to 20
WHOLE_NUMBERS = {"n": (1, 64), "consensus": (0, 64), "beam_width": (1, 64), "k": (1, 64), "window": (1, 1 << 20), "max_steps": (1, 100_000),
                 "max_step_tokens": (1, 1 << 20), "final_step_tokens": (1, 1 << 20), "seed": (0, None)}
THRESHOLDS = ("tau_reject", "tau_switch", "rsd_delta")  # only compared: -inf or inf mean always or never


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def whole_number(low: int, high: int | None) -> tuple[Callable[[object], bool], str]:
    """The test and the wording of a whole-number bound (high None: none above)."""
    def within(value) -> bool:
        return (isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= value
                and (high is None or value <= high))

    return within, f"a whole number from {low} to {high}" if high is not None else f"a whole number of at least {low}"


SETTING_BOUNDS: dict[str, tuple[Callable[[object], bool], str]] = {  # field: (test, what it must be)
    **{name: whole_number(low, high) for name, (low, high) in WHOLE_NUMBERS.items()},
    "temperature": (lambda t: is_number(t) and (t == 0 or MIN_TEMPERATURE <= t <= MAX_TEMPERATURE),
                    f"0 (greedy) or from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}"),
    "top_p": (lambda p: is_number(p) and 0 < p <= 1, "above 0 and at most 1"),
    "beta": (lambda b: is_number(b) and -MAX_BETA <= b <= MAX_BETA, f"from {-MAX_BETA:g} to {MAX_BETA:g}"),
    **{name: (lambda x: is_number(x) and not math.isnan(x), "a number (-inf or inf: always or never)")
       for name in THRESHOLDS},
    "greedy_candidate": (lambda g: isinstance(g, bool), "true or false"),
    "veto": (lambda v: isinstance(v, bool), "true or false"),
    "stop_confidence": (lambda c: c is None or (is_number(c) and math.isfinite(c)), "a number, or none (never stop)"),
    "max_tokens": (lambda m: m is None or whole_number(1, None)[0](m), "a whole number of at least 1, or none"),
}


@dataclass(frozen=True)
class SearchConfig:
    n: int = 4  # candidates per step (beam: in total)
    beam_width: int = 2  # beam search: candidates per kept prefix
    # beam search's answer: the completed beam with the best last reward ("best"), the
    # answer with the most reward summed over completed beams ("weighted"), or the most frequent
    beam_answer: str = "best"
    temperature: float = 0.7  # generation and selection temperature
    top_p: float = 1.0
    beta: float = 10.0  # weight of the reward in the SPECS score
    tau_reject: float = 7.0  # drafts scoring at or below are dropped
    tau_switch: float = 0.7  # a target step rewarded above this hands back to the draft
    rsd_delta: float = 0.7  # RSD: a draft step is kept when its reward reaches this
    max_steps: int = 32
    max_step_tokens: int = 256
    final_step_tokens: int = 1024  # the last allowed step generates to the end of the turn
    seed: int = 0
    # SPECS' target mode: the first of its n candidates is the target's greedy step, so
    # a reward that cannot tell the samples apart falls back on the target's own best guess
    greedy_candidate: bool = False
    system_prompt: str | None = None  # replaces the policy's system prompt (rewards keep their own)
    # Whole solutions and the choice among them (selection.py): SPECS runs k chains together
    # (best-of-n samples n); ``select`` is the rule that picks the answer among finished
    # solutions (best-of-n, beam's completed pool, SPECS' chains), ``veto`` lets the
    # calculator take a solution with a false equality out of the choice.
    k: int = 1
    select: str = "logprob"
    veto: bool = True
    # Early stopping (DeepConf's online mode): a sample or chain whose mean token confidence
    # over its last ``window`` tokens falls below ``stop_confidence`` stops; None: never.
    stop_confidence: float | None = None
    window: int = 32
    # Best-of-n's consensus stop (DeepConf's adaptive sampling): draw the first ``consensus``
    # samples together, then one at a time, and stop drawing once ``consensus`` finished
    # samples give one answer. 0: draw all n at once.
    consensus: int = 0
    # A cap on the solution's tokens (the server's max_tokens): a search stops at the first
    # step that reaches it ("max_tokens"), and no step may pass it. None: no cap.
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        # checked here, not where a search uses them: a bad value must not cost a whole search
        for name, (within, bound) in SETTING_BOUNDS.items():
            value = getattr(self, name)
            if not within(value):
                raise SettingError(name, f"must be {bound}, not {value!r}")
        if self.beam_answer not in BEAM_ANSWERS:
            raise SettingError("beam_answer", f"unknown beam answer rule {self.beam_answer!r}; choose one of "
                                              f"{', '.join(BEAM_ANSWERS)}")
        if self.select not in RULES:
            raise SettingError("select", f"unknown selection rule {self.select!r}; choose one of {', '.join(RULES)}")

    def with_(self, **changes) -> "SearchConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


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


def step_by_step(tracker: "Tracker", problem: str, roles: dict[str, Model], config: SearchConfig,
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
