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
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .calculator import NEUTRAL, REWARD_FALSE, check_step
from .chat import question_suffix, solution_prompt
from .engine import Model, Sequence
from .errors import SpecsError
from .presets import REWARD_KINDS
from .probe import SOLUTION_LOGPROB, ProbeHead
from .sampling import softmax

VERIFIER_QUESTION = "Is the last step correct? Answer Yes or No."


@dataclass(frozen=True)
class Layout:
    """How a reward model sees a solution.

    ``step`` renders an accepted or candidate step; ``query`` is appended after
    a candidate to ask for its reward and removed afterwards; ``label`` is
    appended after a step once it is accepted (e.g. RLHFlow's "+")."""

    step: str = "{step}"
    query: str = ""
    label: str = ""


@dataclass
class RewardStats:
    calls: int = 0
    candidates: int = 0
    seconds: float = 0.0
    query_tokens: int = 0  # verifier/PRM question tokens evaluated
    checked: int = 0  # candidates decided by the calculator


class PromptedReward:
    """A reward read from a model's next-token logits after a prompt.

    reward = softmax(logit[good], logit[bad])[0] at the end of the query.
    Covers the verifier prompt (Yes/No), self-verification (the verifier on
    the target's own sequences) and token-logit PRMs (Math-Shepherd's " ки"
    tag with +/-, RLHFlow's +/- assistant turn)."""

    def __init__(self, model: Model, *, good: str, bad: str, layout: Layout, prefix: str | None = None,
                 question: str | None = None, name: str = "verifier", self_verify: bool = False):
        self.model = model
        self.layout = layout
        self.question = question  # asked as a new user turn after the solution (chat models)
        self.prefix_template = prefix  # None: the model's own solution prompt
        self.name = name
        self.self_verify = self_verify
        self.good = self._single_token(good)
        self.bad = self._single_token(bad)
        self.stats = RewardStats()
        self._problem: str | None = None
        self._cache: OrderedDict[tuple[str, ...], Sequence] = OrderedDict()  # least recently used first

    @property
    def wants_contexts(self) -> bool:
        """True when the search should pass the target's candidate sequences."""
        return self.self_verify

    @property
    def scores_tokens(self) -> bool:
        """Whether rebuilding a solution in the cache must score its tokens (log-probs, not just KV)."""
        return False

    def _single_token(self, text: str) -> int:
        tokens = self.model.tokenize(text, parse_special=True)
        if not tokens:
            raise SpecsError(f"reward token {text!r} is empty in {self.model.name}")
        return tokens[0]

    # -- the interface ------------------------------------------------------

    def score(self, problem: str, steps: list[str], candidates: list[str],
              contexts: list[Sequence] | None = None) -> np.ndarray:
        t0 = time.perf_counter()
        if problem != self._problem:
            self.reset()
            self._problem = problem
        # Contexts from another model (a draft's candidates) cannot be reused here.
        if self.self_verify and contexts and all(self.model.owns(s) for s in contexts):
            rewards = self._score_in_contexts(problem, contexts)
        else:
            rewards = self._score_cached(problem, steps, candidates)
        self.stats.calls += 1
        self.stats.candidates += len(candidates)
        self.stats.seconds += time.perf_counter() - t0
        return rewards

    def reset(self) -> None:
        """Forget the cached prefixes (a new problem)."""
        self.model.release_all(self._cache.values())
        self._cache.clear()
        self._problem = None

    # -- scoring ------------------------------------------------------------

    def _query_tokens(self, problem: str) -> list[int]:
        if self.question is not None:
            query = question_suffix(self.model, problem, self.question)
        else:
            query = self.layout.query.format(problem=problem)
        return self.model.tokenize(query, parse_special=True) if query else []

    def _read(self, seqs: list[Sequence]) -> np.ndarray:
        return np.array([softmax([s.logits[self.good], s.logits[self.bad]])[0] for s in seqs])

    def _score_in_contexts(self, problem: str, contexts: list[Sequence]) -> np.ndarray:
        """Self-verification: ask the question inside the policy's own
        sequences, then cut it off again; their KV cache is reused as is."""
        self.model.flush(contexts)  # so that each candidate's own logits survive the question
        return self._ask(problem, contexts)

    def _ask(self, problem: str, seqs: list[Sequence]) -> np.ndarray:
        """Append the query to each sequence, read the reward, and cut the query
        off again, restoring what each sequence's last token output."""
        model = self.model
        ends = [(len(s.tokens), s.logits, s.hidden) for s in seqs]
        query = self._query_tokens(problem)
        if query:
            model.extend([(s, query) for s in seqs], kind="prompt")
            self.stats.query_tokens += len(query) * len(seqs)
        rewards = self._read(seqs)
        for s, (length, logits, hidden) in zip(seqs, ends):
            model.truncate(s, length, logits, hidden)
        return rewards

    def _head(self, problem: str, steps: list[str], forks: int) -> Sequence:
        """The cached sequence for ``steps``, built from the longest cached prefix,
        with room left for ``forks`` more sequences."""
        key = tuple(steps)
        if key in self._cache:
            self._cache.move_to_end(key)
            self._make_room(forks, keep=self._cache[key])
            return self._cache[key]
        k = max((len(p) for p in self._cache if key[: len(p)] == p), default=None)
        if k is None:
            self._make_room(forks + 1, keep=None)
            seq = self.model.new_sequence(self.model.tokenize(self._prefix_text(problem), add_special=True))
            self._cache[()] = seq
            k = 0
            if not key:
                return seq
        base = self._cache[key[:k]]
        self._cache.move_to_end(key[:k])
        self._make_room(forks + 1, keep=base)
        [seq] = self.model.fork(base, 1)
        self._cache[key] = seq  # cached before it is extended, so an interrupt cannot orphan it
        rest = self.model.tokenize("".join(self._accepted_text(s) for s in key[k:]), parse_special=True)
        if rest:  # accepted steps can be empty (only an end of turn)
            self.model.extend([(seq, rest)], kind="prompt", score=self.scores_tokens)
        return seq

    def _prefix_text(self, problem: str) -> str:
        """What precedes the solution. The chat template is rendered only when
        the layout asks for it: a PRM may have none, or refuse a system turn."""
        if self.prefix_template is None:
            return solution_prompt(self.model, problem)
        if "{prompt}" in self.prefix_template:
            return self.prefix_template.format(prompt=solution_prompt(self.model, problem), problem=problem)
        return self.prefix_template.format(problem=problem)

    def _accepted_text(self, step: str) -> str:
        return self.layout.step.format(step=step) + self.layout.label

    def _score_cached(self, problem: str, steps: list[str], candidates: list[str]) -> np.ndarray:
        model = self.model
        head = self._head(problem, steps, forks=len(candidates))
        bodies = [model.tokenize(self.layout.step.format(step=c), parse_special=True) for c in candidates]
        forks = model.fork(head, len(candidates))
        try:
            rewards = self._score_forks(problem, forks, bodies)
        except BaseException:
            model.release_all(forks)
            raise
        # Keep each candidate's KV (without the query) as the prefix of the next step.
        for s, c in zip(forks, candidates):
            key = tuple(steps) + (c,)
            if key in self._cache:
                model.release(s)
                continue
            if self.layout.label:
                model.append_lazily(s, model.tokenize(self.layout.label, parse_special=True))
            self._cache[key] = s
        # The model may be the search's own: leave it the sequences this call used.
        self._make_room(len(candidates) + 1, keep=None)
        return rewards

    def _score_forks(self, problem: str, forks: list[Sequence], bodies: list[list[int]]) -> np.ndarray:
        work = [(s, b) for s, b in zip(forks, bodies) if b]  # an empty step (just end-of-turn) adds nothing
        if work:
            self.model.extend(work, kind="scored", score=self.scores_tokens)
        return self._ask(problem, forks)

    def _make_room(self, n: int, keep: Sequence | None) -> None:
        """Free sequences for n forks by dropping the least recently used
        cached prefixes (never the one being extended)."""
        for key in list(self._cache):
            if self.model.free_sequences >= n:
                return
            if self._cache[key] is not keep:
                self.model.release(self._cache.pop(key))


class ValueHeadReward(PromptedReward):
    """A PRM with a value head on the backbone's last hidden state.

    Skywork-o1-Open-PRM: a scalar head, sigmoid, at the step end.
    Qwen2.5-Math-PRM: a 2-class head (Linear-ReLU-Linear) at ``<extra_0>``,
    reward = softmax(...)[1]. The head runs in numpy."""

    def __init__(self, model: Model, head: "ValueHead", *, layout: Layout, name: str = "value-prm", **kw):
        self.head = head
        super().__init__(model, good=" ", bad=" ", layout=layout, name=name, **kw)

    def _read(self, seqs: list[Sequence]) -> np.ndarray:
        if any(s.hidden is None for s in seqs):
            raise SpecsError(f"{self.model.name}: load the PRM backbone with embeddings=True")
        return np.array([self.head(s.hidden) for s in seqs])


class ProbeReward(PromptedReward):
    """An outcome-supervised value head (a "probe") on the target's own hidden
    state at the candidate's last token, read from the decode that evaluated
    the candidate: the target's scoring prefill of a draft step, or the decode
    that feeds a target step's last token (which the next step feeds anyway).
    With the target's forks as contexts it runs no decode of its own."""

    def __init__(self, target: Model, head, *, name: str = "probe"):
        self.head = head
        super().__init__(target, good=" ", bad=" ", layout=Layout(), name=name, self_verify=True)

    @property
    def scores_tokens(self) -> bool:
        return bool(self.head.scalar_names)  # the solution's log-prob is read from the tokens' scores

    def _read(self, seqs: list[Sequence]) -> np.ndarray:
        if any(s.hidden is None for s in seqs):
            raise SpecsError(f"{self.model.name}: load the target with the probe's capture (ModelConfig.capture)")
        names = self.head.scalar_names
        scalars = np.array([[_sequence_scalar(s, name) for name in names] for s in seqs]) if names else None
        return self.head.predict(np.stack([s.hidden for s in seqs]), scalars)


def _sequence_scalar(seq: Sequence, name: str) -> float:
    """A head's scalar feature, read from what the target computed for the sequence."""
    if name != SOLUTION_LOGPROB:
        raise SpecsError(f"value head reads {name!r}, which this version cannot compute")
    value = seq.mean_logprob
    return 0.0 if math.isnan(value) else value  # no scored token yet: as the collection counts it


@dataclass
class ValueHead:
    """Layers as (weight, bias) pairs applied with ReLU between them."""

    layers: list[tuple[np.ndarray, np.ndarray | None]]
    kind: str = "sigmoid"  # "sigmoid": one output; "softmax": class 1 of two

    def __call__(self, hidden: np.ndarray) -> float:
        x = np.asarray(hidden, dtype=np.float64)
        for i, (w, b) in enumerate(self.layers):
            x = w @ x + (b if b is not None else 0.0)
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        if self.kind == "sigmoid":
            return float(1.0 / (1.0 + np.exp(-x.reshape(-1)[0])))
        return float(softmax(x)[1])

    @classmethod
    def load(cls, path: str | Path) -> "ValueHead":
        """From a .npz written by scripts/convert_value_head.py (w0, b0, w1, b1, ..., kind)."""
        path = Path(path)
        if not path.exists():
            raise SpecsError(f"value head not found: {path} (convert one with scripts/convert_value_head.py)")
        data = np.load(path, allow_pickle=False)
        layers = []
        i = 0
        while f"w{i}" in data:
            layers.append((data[f"w{i}"], data[f"b{i}"] if f"b{i}" in data else None))
            i += 1
        if not layers:
            raise SpecsError(f"{path} holds no value-head layers (w0, b0, ...)")
        kind = str(data["kind"]) if "kind" in data else "sigmoid"
        return cls(layers, kind)


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

    @property
    def wants_contexts(self) -> bool:
        return bool(getattr(self.fallback, "wants_contexts", False))

    def reset(self) -> None:
        if self.fallback is not None:
            self.fallback.reset()


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


def probe_head(head: str | Path | ProbeHead) -> ProbeHead:
    """A probe head, loaded from its file unless it already is one: callers that need
    its captured nodes before loading the target read the file once and pass the head on."""
    return head if isinstance(head, ProbeHead) else ProbeHead.load(head)


def load_probe_head(head: str | Path | ProbeHead, target: Model) -> ProbeHead:
    """A probe head checked against the target it will read: same vocabulary and
    the same hidden-state layout (the target must capture the head's nodes)."""
    from .presets import known_sha256

    head = probe_head(head)
    head.require("target_vocab", target.vocab_fingerprint)
    head.require("target_sha256", known_sha256(target.path))
    head.require("capture", list(target.config.capture), what="target's captured layers")
    return head


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
