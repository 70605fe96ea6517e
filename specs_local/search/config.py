"""A search's settings (``SearchConfig``) and their bounds, checked once for every front end."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Callable

from ..errors import SettingError
from ..selection import RULES


# How beam search picks its answer among completed beams; "select": by the rule ``select`` (selection.py).
BEAM_ANSWERS = ("best", "weighted", "majority", "select")


# The bounds of the search settings, checked here once for every front end (CLI, Python API,
# server). Past them a search overflows (1/T in float32 sampling, beta * reward in SPECS'
# score), cannot sample, or asks for more sequences or tokens than a context can hold.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 2.0  # or 0, greedy; OpenAI's API stops at 2 too
MAX_BETA = 1000.0  # in magnitude: the rewards are probabilities, the tuned betas 2 to 20
WHOLE_NUMBERS = {"n": (1, 64), "consensus": (0, 64), "beam_width": (1, 64), "k": (1, 64), "window": (1, 1 << 20),
                 "max_steps": (1, 100_000), "max_step_tokens": (1, 1 << 20), "final_step_tokens": (1, 1 << 20),
                 "seed": (0, None)}
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
