"""Reward models: score the last step of a partial solution, for many candidates at once.

One interface for every kind::

    reward.score(problem, steps, candidates, contexts=None) -> np.ndarray in [0, 1]

``steps`` are the accepted steps so far, ``candidates`` the texts of possible
next steps. ``contexts`` are optional policy-model sequences that already hold
``prompt + steps + candidate``: a self-verifier on the same model reuses their
KV cache and evaluates only its question.

Model-based rewards keep their own prefix in the KV cache across steps (a cache
of sequences keyed by the accepted steps), so each step evaluates only its new
tokens.

One module a job:

- :mod:`.prompted`: :class:`PromptedReward`, a reward read from next-token logits
  (verifier, self-verification, token PRMs), with its prefix cache;
- :mod:`.value_head`: a PRM's value head on the backbone's hidden state;
- :mod:`.probe`: the probe reward on the target's own hidden states, and its head file;
- :mod:`.calculator`: checked arithmetic in front of another reward;
- here: the constructor of each kind the CLI and the presets name, and :func:`make_reward`.

The policy's prompt, which rewards render too, is :mod:`specs_local.chat`'s.
"""
from __future__ import annotations

from pathlib import Path

from ..engine import Model
from ..errors import SpecsError
from ..presets import REWARD_KINDS
from ..probe import ProbeHead
from .calculator import CalculatorReward
from .probe import ProbeReward, load_probe_head, probe_head
from .prompted import Layout, PromptedReward, RewardStats
from .value_head import ValueHead, ValueHeadReward

VERIFIER_QUESTION = "Is the last step correct? Answer Yes or No."


# -- constructors for the kinds the CLI names ---------------------------------


def make_verifier(model: Model, *, self_verify: bool, question: str = VERIFIER_QUESTION, good: str = "Yes",
                  bad: str = "No", name: str | None = None) -> PromptedReward:
    return PromptedReward(model, good=good, bad=bad, layout=Layout(), question=question,
                          name=name or ("self" if self_verify else "verifier"), self_verify=self_verify)


def make_token_prm(model: Model, *, good: str = "+", bad: str = "-", step_template: str = "{step} ки",
                   label: str = "\n", prefix: str = "{problem} ") -> PromptedReward:
    return PromptedReward(model, good=good, bad=bad, layout=Layout(step=step_template, label=label),
                          prefix=prefix, name="token-prm")


def make_value_prm(model: Model, head: "ValueHead", *, prefix: str = "{problem}\n",
                   step_template: str = "{step}") -> ValueHeadReward:
    return ValueHeadReward(model, head, layout=Layout(step=step_template), prefix=prefix)


def make_probe(target: Model, head) -> ProbeReward:
    return ProbeReward(target, head)


def make_reward(kind: str, *, target: Model, reward_model: Model | None = None,
                value_head: str | Path | ProbeHead | None = None, template: dict | None = None):
    """Build a reward of ``kind`` on the given models (reward_model defaults to the target).

    ``template`` holds prompt settings (a preset's ``[reward.template]``), passed
    to the constructor of the kind as keyword arguments."""
    model = reward_model or target
    base = kind.split("+", 1)[-1] if kind.startswith("calculator+") else kind
    settings = dict(template or {})
    if kind == "calculator":
        inner = None
    elif base == "self":
        inner = _build(make_verifier, kind, settings, target, self_verify=True)
    elif base == "verifier":
        # On the target itself the verifier asks inside the target's own forks, as
        # self-verification does, rather than evaluating the solution again.
        inner = _build(make_verifier, kind, settings, model, self_verify=model is target, name="verifier")
    elif base == "token-prm":
        inner = _build(make_token_prm, kind, settings, model)
    elif base == "probe":
        if value_head is None:
            raise SpecsError(f"--reward-kind {kind} needs a value head trained for the target (--value-head HEAD.npz)")
        inner = _build(make_probe, kind, settings, target, load_probe_head(value_head, target))
    elif base == "value-prm":
        if value_head is None:
            raise SpecsError("--reward-kind value-prm needs a value head (.npz) beside the PRM; see scripts/convert_value_head.py")
        inner = _build(make_value_prm, kind, settings, model, ValueHead.load(value_head))
    else:
        raise SpecsError(f"unknown reward kind {kind!r}; choose one of {', '.join(REWARD_KINDS)}")
    if kind == "calculator" and settings:
        raise SpecsError(f"reward kind calculator takes no template settings (got {', '.join(sorted(settings))})")
    if not kind.startswith("calculator"):
        return inner
    return CalculatorReward(inner, veto=base == "probe")  # the head judges reasoning; arithmetic can only veto


def _build(make, kind: str, settings: dict, *args, **fixed):
    """``make(*args, **fixed, **settings)``, refusing settings the kind does not take."""
    import inspect

    accepted = {name for name, p in inspect.signature(make).parameters.items()
                if p.kind is p.KEYWORD_ONLY and name not in fixed}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise SpecsError(f"reward kind {kind} has no template setting {unknown[0]!r} "
                         f"(it takes {', '.join(sorted(accepted))})")
    return make(*args, **fixed, **settings)


__all__ = ["VERIFIER_QUESTION", "CalculatorReward", "Layout", "ProbeReward", "PromptedReward", "RewardStats",
           "ValueHead", "ValueHeadReward", "load_probe_head", "make_probe", "make_reward", "make_token_prm",
           "make_value_prm", "make_verifier", "probe_head"]
