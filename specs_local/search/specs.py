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
"""
from __future__ import annotations

from enum import Enum

import numpy as np

from ..engine import Sequence
from ..sampling import softmax
from .common import Models, SearchConfig, SearchGenerator, Step, Tracker, adopt, propose, step_by_step, texts


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


def specs(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    target, draft = models.target, models.require_draft()
    rng = np.random.default_rng(config.seed)
    mode = Mode.TARGET  # SPECS starts with the target

    def next_step(heads, steps, last):
        nonlocal mode
        step = _draft_step(problem, models, config, rng, steps, heads, last) if mode is Mode.DRAFT else None
        accepted = step is not None
        if not accepted:  # TARGET mode, or a deferred draft step
            step = _target_step(problem, models, config, rng, steps, heads, last, deferred=mode is Mode.DRAFT)
        mode = next_mode(accepted, None if accepted else step.reward, config.tau_switch)
        return step

    tracker = Tracker("specs", models, config)
    return (yield from step_by_step(tracker, problem, {"target": target, "draft": draft}, config, next_step))


def _draft_step(problem, models: Models, config, rng, steps, heads, last) -> Step | None:
    """One draft-mode step, moving both heads on; None (heads untouched) if every draft is rejected."""
    target, draft, reward = models.target, models.draft, models.reward
    kids_d, gens = propose(draft, heads["draft"], config.n, config, rng, last)
    kids_t: list[Sequence] = []
    try:
        kids_t, target_lp = target.score(heads["target"], [g.tokens for g in gens])
        target_means = [float(np.mean(lp)) for lp in target_lp]
        draft_means = [g.mean_logprob for g in gens]
        candidate_texts = [g.text for g in gens]
        rewards = reward.score(problem, texts(steps), candidate_texts, contexts=kids_t)
        scores = soft_scores(target_means, draft_means, rewards, config.beta)
        chosen = select_candidate(candidate_texts, scores, config.tau_reject, config.temperature, rng)
    except BaseException:
        target.release_all(kids_t)
        draft.release_all(kids_d)
        raise
    if chosen is None:
        target.release_all(kids_t)
        draft.release_all(kids_d)
        return None
    heads["target"] = adopt(target, heads["target"], kids_t, chosen)
    heads["draft"] = adopt(draft, heads["draft"], kids_d, chosen)
    g = gens[chosen]
    return Step(
        text=g.text, source="draft", reward=float(rewards[chosen]), draft_logprob=draft_means[chosen],
        target_logprob=target_means[chosen], score=float(scores[chosen]), accepted=True,
        candidates=len(gens), tokens=len(g.tokens), ends_turn=g.finish == "eog",
    )


def _target_step(problem, models: Models, config, rng, steps, heads, last, deferred: bool) -> Step:
    """One target-mode step: n target samples (the first greedy with ``greedy_candidate``),
    the best by reward wins."""
    target, draft, reward = models.target, models.draft, models.reward
    kids_t, gens = propose(target, heads["target"], config.n, config, rng, last, greedy_first=config.greedy_candidate)
    try:
        rewards = reward.score(problem, texts(steps), [g.text for g in gens], contexts=kids_t)
    except BaseException:
        target.release_all(kids_t)
        raise
    chosen = int(np.argmax(rewards))
    heads["target"] = adopt(target, heads["target"], kids_t, chosen)
    g = gens[chosen]
    draft.append_lazily(heads["draft"], g.tokens, kind="prompt")  # evaluated only if the draft drafts again
    return Step(
        text=g.text, source="target", reward=float(rewards[chosen]), target_logprob=g.mean_logprob,
        deferred=deferred, candidates=len(gens), tokens=len(g.tokens), ends_turn=g.finish == "eog",
    )
