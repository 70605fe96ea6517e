"""Rewards read from a model's next-token logits after a prompt, with the prefix cache
that keeps each accepted solution prefix's KV across steps."""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..chat import question_suffix, solution_prompt
from ..engine import Model, Sequence
from ..errors import SpecsError
from ..sampling import softmax


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

    def identity(self) -> dict:
        """What a record names of this reward: its kind, its model file, and its head, if any."""
        return {"reward": self.name, "reward_model": self.model.name}

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
