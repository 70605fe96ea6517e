"""SPECS: speculative drafts for test-time scaling (arXiv 2506.15733).

Per step, in DRAFT mode the draft proposes n steps in one batch, the target
scores them in one prefill over the shared prefix, and the reward model judges
them. Soft verification keeps candidates whose score

    score = mean target log-prob - mean draft log-prob + beta * reward

is above ``tau_reject`` and samples one with probability softmax(score / T).
When none survives the step is deferred to the target (TARGET mode), which
samples n steps (with ``greedy_candidate``, the first is its greedy step) and
keeps the best by reward; once that reward is above
``tau_switch`` the next step goes back to the draft.

No token is evaluated twice: the chosen draft step is already in the target's
KV cache (it was scored there), and target steps reach the draft lazily, only
when it drafts again.

With ``k`` > 1, k chains advance together from one evaluated prompt, each with its own
random stream, mode and deferral: every round the drafts of all chains in DRAFT mode go
into one batch per decode, their target scoring into one prefill, and the target steps of
all chains in TARGET mode (and of those whose drafts were all rejected) into one batch per
decode. A finished chain frees its sequences at once; with ``stop_confidence`` a chain whose
recent tokens the target is unsure of stops early (selection.py, engine/generation.py). The
solution-level rule ``select`` picks the answer among the finished chains, and the chosen
chain's steps are yielded at the end. k = 1 is plain SPECS, its steps yielded as they come.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ..answers import extract_boxed
from ..engine import Sequence
from ..engine.generation import window_confidence
from ..errors import ContextFullError
from ..sampling import softmax
from ..selection import Candidate, choose, is_vetoed, selection_extra, solution_scores
from .common import (Models, adopt, no_room_for_a_step, propose_many, reached_max_tokens, sample_rngs, solution_tokens,
                     start, texts)
from .config import SearchConfig
from .results import SearchGenerator, Step, Tracker


class Mode(Enum):
    DRAFT = "draft"
    TARGET = "target"


def soft_scores(target_logprob, draft_logprob, rewards, beta: float) -> np.ndarray:
    """SPECS' score: the target/draft log-ratio (per-token means) plus beta times the reward."""
    return np.asarray(target_logprob, float) - np.asarray(draft_logprob, float) + beta * np.asarray(rewards, float)


def survivor_probabilities(candidate_texts: list[str], scores, tau_reject: float,
                           temperature: float) -> dict[int, float]:
    """Soft verification's choice distribution: the first index of each surviving text
    (score > tau_reject) -> the probability of choosing that text.

    Each copy of a text weighs exp(score / T) by its own score (the same text
    tokenized differently has different log-probs), and a text weighs the sum over
    its copies, a log-sum-exp of score / T: choosing a text is distributed exactly
    as sampling one of all the surviving candidates would choose it, so the
    importance weights stay correct. T <= 0: all on the text of the best score."""
    scores = np.asarray(scores, dtype=float)
    alive = [i for i, score in enumerate(scores) if score > tau_reject]  # NaN is not
    first: dict[str, int] = {}
    for i in alive:
        first.setdefault(candidate_texts[i], i)
    if not alive:
        return {}
    if temperature <= 0:
        return {first[candidate_texts[alive[int(np.argmax(scores[alive]))]]]: 1.0}
    merged: dict[int, float] = {}
    for i, probability in zip(alive, softmax(scores[alive] / temperature)):
        keep = first[candidate_texts[i]]
        merged[keep] = merged.get(keep, 0.0) + float(probability)
    return merged


def select_candidate(candidate_texts: list[str], scores, tau_reject: float, temperature: float,
                     rng: np.random.Generator) -> int | None:
    """Soft verification: drop scores <= tau_reject, merge duplicate texts into their
    first copy, and sample one survivor by `survivor_probabilities` (softmax(score / T)
    over all candidates, summed over the copies of a text); None if none survives."""
    probabilities = survivor_probabilities(candidate_texts, scores, tau_reject, temperature)
    if not probabilities:
        return None
    survivors = list(probabilities)
    if temperature <= 0:
        return survivors[0]
    return survivors[int(rng.choice(len(survivors), p=list(probabilities.values())))]


def next_mode(draft_accepted: bool, target_reward: float | None, tau_switch: float) -> Mode:
    """Reward-based deferral: an accepted draft keeps the draft in charge; after
    a target step (deferred or not) the draft takes over again only once the
    target's step earned a reward above tau_switch."""
    if draft_accepted:
        return Mode.DRAFT
    return Mode.DRAFT if target_reward is not None and target_reward > tau_switch else Mode.TARGET


@dataclass(eq=False)
class Chain:
    """One SPECS solution in progress: its heads in the target's and the draft's caches."""
    rng: np.random.Generator
    heads: dict[str, Sequence]
    mode: Mode = Mode.TARGET  # SPECS starts with the target
    steps: list[Step] = field(default_factory=list)
    end: str | None = None  # None while it runs; else "eos", "max_steps", "max_tokens", "context_full" or "low_confidence"
    token_scores: np.ndarray | None = None  # the target's, kept when the chain ends

    def candidate(self) -> Candidate:
        scores = self.token_scores if self.token_scores is not None else np.empty((0, 3))
        last = self.steps[-1].reward if self.steps else None
        text = "".join(texts(self.steps))
        return Candidate(extract_boxed(text), solution_scores(scores, last), ended=self.end == "eos",
                         vetoed=is_vetoed(texts(self.steps)), tokens=solution_tokens(self.steps),
                         confidence=[float(c) for c in scores[:, 2]], text=text)


def specs(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    models.require_draft()
    tracker = Tracker("specs", models, config)
    chains: list[Chain] = []
    try:
        chains = _start_chains(problem, models, config)
        for index in range(config.max_steps):
            live = [c for c in chains if c.end is None]
            if not live:
                break
            last = index == config.max_steps - 1
            try:
                _advance(problem, models, config, live, last)
            except ContextFullError as full:
                if index == 0:  # not even a first step fits after the prompt: nothing to answer with
                    raise no_room_for_a_step(full) from None
                for chain in live:
                    _end(chain, "context_full", models)
                break
            for chain in live:
                if config.k == 1:
                    yield chain.steps[-1]
                if chain.steps[-1].ends_turn:
                    _end(chain, "eos", models)
                elif reached_max_tokens(chain.steps, config):
                    _end(chain, "max_tokens", models)
                elif last:
                    _end(chain, "max_steps", models)
                elif config.stop_confidence is not None and _unsure(chain, config):
                    _end(chain, "low_confidence", models)
    finally:
        for chain in chains:
            if chain.end is None:  # stopped from outside (an error, Ctrl-C): free it
                _end(chain, "interrupted", models)
        models.reward.reset()
    candidates = [c.candidate() for c in chains]
    chosen = choose(candidates, config.select, veto=config.veto) if len(chains) > 1 else 0
    if config.k > 1:
        yield from chains[chosen].steps
    extra = selection_extra(candidates, config.select, chosen, config.veto)
    if len(chains) > 1:
        extra["chains"] = [{"end": c.end, "steps": len(c.steps), "steps_draft": sum(s.source == "draft" for s in c.steps)}
                           for c in chains]
    return tracker.result(chains[chosen].steps, chains[chosen].end, extra=extra)


def _start_chains(problem: str, models: Models, config: SearchConfig) -> list[Chain]:
    """k chains on one evaluated prompt per model (the others are forks of it)."""
    heads: dict[str, list[Sequence]] = {}
    try:
        for role, model in (("target", models.target), ("draft", models.draft)):
            first = start(model, problem, config)
            heads[role] = [first]
            heads[role] += model.fork(first, config.k - 1)
    except BaseException:
        for role, seqs in heads.items():
            getattr(models, role).release_all(seqs)
        raise
    return [Chain(rng, {"target": t, "draft": d})
            for rng, t, d in zip(sample_rngs(config.seed, config.k), heads["target"], heads["draft"])]


def _end(chain: Chain, why: str, models: Models) -> None:
    """Stop a chain: keep the target's scores of its tokens, free its sequences."""
    chain.end = why
    target, draft = models.target, models.draft
    if target.owns(chain.heads["target"]):
        chain.token_scores = chain.heads["target"].token_scores()
    target.release(chain.heads["target"])
    draft.release(chain.heads["draft"])


def _unsure(chain: Chain, config: SearchConfig) -> bool:
    """Whether the target's confidence over the chain's last ``window`` tokens is below the bar."""
    head = chain.heads["target"]
    recent = [head.confidence[p] for p in sorted(head.confidence)[-config.window:]]
    return window_confidence(recent, config.window) < config.stop_confidence


def _advance(problem: str, models: Models, config: SearchConfig, live: list[Chain], last: bool) -> None:
    """One step in every live chain: drafts first (one batch for all chains in DRAFT mode),
    then target steps for the chains in TARGET mode and those whose drafts were all rejected."""
    drafting = [c for c in live if c.mode is Mode.DRAFT]
    accepted = _draft_steps(problem, models, config, drafting, last) if drafting else {}
    writing = [c for c in live if c not in accepted]
    written = _target_steps(problem, models, config, writing, last, deferred={c: c.mode is Mode.DRAFT for c in writing})
    for chain in live:
        step = accepted.get(chain) or written[chain]
        chain.steps.append(step)
        chain.mode = next_mode(chain in accepted, None if chain in accepted else step.reward, config.tau_switch)


def _rows(chains: list[Chain], n: int) -> list[np.random.Generator]:
    return [chain.rng for chain in chains for _ in range(n)]


def _draft_steps(problem, models: Models, config, chains: list[Chain], last) -> dict[Chain, Step]:
    """DRAFT mode for several chains: the steps accepted (a chain whose drafts were all rejected
    is missing, its heads untouched)."""
    target, draft, n = models.target, models.draft, config.n
    kids_d, gens = propose_many(draft, [c.heads["draft"] for c in chains], [n] * len(chains), config,
                                _rows(chains, n), last, used=[solution_tokens(c.steps) for c in chains])
    kids_t: list[Sequence] = []
    accepted = {}
    try:
        kids_t, target_lp = target.score_many([c.heads["target"] for c in chains],
                                              [[g.tokens for g in gens[i * n:(i + 1) * n]] for i in range(len(chains))])
        for i, chain in enumerate(chains):
            part = slice(i * n, (i + 1) * n)
            step = _verify(problem, models, config, chain, gens[part], kids_t[part], kids_d[part], target_lp[part])
            if step is not None:
                accepted[chain] = step
    except BaseException:  # the chains' heads are among the kids once adopted: their ends release them
        target.release_all([k for k in kids_t if all(k is not c.heads["target"] for c in chains)])
        draft.release_all([k for k in kids_d if all(k is not c.heads["draft"] for c in chains)])
        raise
    return accepted


def _verify(problem, models: Models, config, chain: Chain, gens, kids_t, kids_d, target_lp) -> Step | None:
    """Soft verification of one chain's drafts: the accepted step (its heads moved on to it), or
    None (its heads untouched); either way the other candidates are freed."""
    target_means = [float(np.mean(lp)) for lp in target_lp]
    draft_means = [g.mean_logprob for g in gens]
    candidate_texts = [g.text for g in gens]
    rewards = models.reward.score(problem, texts(chain.steps), candidate_texts, contexts=kids_t)
    scores = soft_scores(target_means, draft_means, rewards, config.beta)
    chosen = select_candidate(candidate_texts, scores, config.tau_reject, config.temperature, chain.rng)
    if chosen is None:
        models.target.release_all(kids_t)
        models.draft.release_all(kids_d)
        return None
    chain.heads["target"] = adopt(models.target, chain.heads["target"], kids_t, chosen)
    chain.heads["draft"] = adopt(models.draft, chain.heads["draft"], kids_d, chosen)
    g = gens[chosen]
    return Step(
        text=g.text, source="draft", reward=float(rewards[chosen]), draft_logprob=draft_means[chosen],
        target_logprob=target_means[chosen], score=float(scores[chosen]), accepted=True,
        candidates=len(gens), tokens=len(g.tokens), ends_turn=g.finish == "eog",
    )


def _target_steps(problem, models: Models, config, chains: list[Chain], last, deferred: dict) -> dict[Chain, Step]:
    """TARGET mode for several chains, in one batch: n target samples each (the first greedy
    with ``greedy_candidate``), the best by reward wins."""
    if not chains:
        return {}
    target, draft, reward, n = models.target, models.draft, models.reward, config.n
    kids_t, gens = propose_many(target, [c.heads["target"] for c in chains], [n] * len(chains), config,
                                _rows(chains, n), last, greedy_first=config.greedy_candidate,
                                used=[solution_tokens(c.steps) for c in chains])
    steps = {}
    try:
        for i, chain in enumerate(chains):
            part = slice(i * n, (i + 1) * n)
            rewards = reward.score(problem, texts(chain.steps), [g.text for g in gens[part]], contexts=kids_t[part])
            chosen = int(np.argmax(rewards))
            g = gens[part][chosen]
            chain.heads["target"] = adopt(target, chain.heads["target"], kids_t[part], chosen)
            draft.append_lazily(chain.heads["draft"], g.tokens, kind="prompt")  # evaluated only if the draft drafts again
            steps[chain] = Step(
                text=g.text, source="target", reward=float(rewards[chosen]), target_logprob=g.mean_logprob,
                deferred=deferred[chain], candidates=n, tokens=len(g.tokens), ends_turn=g.finish == "eog",
            )
    except BaseException:
        target.release_all([k for k in kids_t if all(k is not c.heads["target"] for c in chains)])
        raise
    return steps
