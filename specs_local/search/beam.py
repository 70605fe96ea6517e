"""Beam search as search-and-learn runs it, on the target or the draft.

Every step generates n candidates in total: the live beams share them evenly
(M = ``beam_width`` each once n / M beams are live; the first step takes all n
from the prompt). A candidate that finishes (end of turn, step-length limit,
or an empty step) moves to the completed pool; of the rest, the n / M best by
reward stay live. The search runs until no beam is live or the step limit is
reached, and the answer is the completed beam with the best last-step reward
(search-and-learn's "last" aggregation), preferring beams that ended their turn
over beams cut at the step-length limit (search-and-learn's per-step limit is
2048 tokens, ours 256, so a cut beam is usually an unfinished solution); with
none completed, the best live beam. With ``beam_answer="weighted"`` the answer
is instead the one whose completed beams' last rewards sum highest, given by its
best beam (search-and-learn's weighted best-of-N over the completed beams); with
``"majority"``, the most frequent answer; with ``"select"``, the rule ``select`` of the
solution-level selector (selection.py), which reads the target's confidence over each beam.
``beam-target`` is the baseline SPECS must beat on latency at equal accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..answers import extract_boxed, votes
from ..engine import Generation, Sequence
from ..errors import ContextFullError
from ..selection import Candidate, choose, is_vetoed, selection_extra, solution_scores
from .common import Models, no_room_for_a_step, propose_many, reached_max_tokens, solution_tokens, start, texts
from .config import SearchConfig
from .results import SearchGenerator, Step, Tracker


@dataclass
class Beam:
    seq: Sequence | None
    steps: list[Step]
    token_scores: np.ndarray | None = None  # the model's (log-prob, certainty, confidence) per token, once done

    def candidate(self) -> Candidate:
        """The beam as the solution-level selector sees it."""
        scores = self.token_scores if self.token_scores is not None else np.empty((0, 3))
        text = "".join(texts(self.steps))
        return Candidate(extract_boxed(text), solution_scores(scores, self.last_reward if self.steps else None),
                         ended=self.ends_turn, vetoed=is_vetoed(texts(self.steps)),
                         tokens=sum(s.tokens for s in self.steps), confidence=[float(c) for c in scores[:, 2]],
                         text=text)

    @property
    def last_reward(self) -> float:
        return self.steps[-1].reward if self.steps else float("-inf")

    @property
    def ends_turn(self) -> bool:
        return bool(self.steps) and self.steps[-1].ends_turn


def expansion_counts(n: int, n_beams: int) -> list[int]:
    """Spread n candidates over the live beams as evenly as possible."""
    base, extra = divmod(n, n_beams)
    return [base + (1 if i < extra else 0) for i in range(n_beams)]


def is_finished(gen: Generation) -> bool:
    """A candidate that ends its beam: end of turn, the step-length limit, or nothing written."""
    return gen.finish in ("eog", "length") or not gen.text.strip()


def keep_best(rewards, finished: list[bool], keep: int) -> list[int]:
    """Indices of the ``keep`` best unfinished candidates by reward (stable on ties)."""
    order = np.argsort(-np.asarray(rewards, dtype=float), kind="stable")
    return [int(i) for i in order if not finished[i]][:keep]


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
        beams = [Beam(start(model, problem, config), [])]
        for index in range(config.max_steps):
            last = index == config.max_steps - 1
            counts = expansion_counts(config.n, len(beams))
            kids, gens = propose_many(model, [b.seq for b in beams], counts, config, rng, last,
                                      used=[solution_tokens(b.steps) for b in beams])
            try:
                parents = [b for b, c in zip(beams, counts) for _ in range(c)]
                rewards = _score_by_parent(problem, reward, parents, kids, gens)
            except BaseException:
                model.release_all(kids)
                raise
            grown = [parent.steps + [Step(text=g.text, source=role, reward=float(r), candidates=len(gens),
                                          tokens=len(g.tokens), ends_turn=g.finish == "eog",
                                          **{f"{role}_logprob": g.mean_logprob})]
                     for parent, g, r in zip(parents, gens, rewards)]
            finished = [is_finished(g) or reached_max_tokens(steps, config) for g, steps in zip(gens, grown)]
            survivors = keep_best(rewards, finished, keep)
            completed += [Beam(None, grown[i], kids[i].token_scores()) for i in range(len(gens)) if finished[i]]
            next_beams = [Beam(kids[i], grown[i]) for i in survivors]
            model.release_all([kid for i, kid in enumerate(kids) if i not in survivors])
            model.release_all([b.seq for b in beams])
            beams = next_beams
            if not beams:
                stop_reason = "eos"
                break
    except ContextFullError as error:
        if not completed and not any(b.steps for b in beams):
            raise no_room_for_a_step(error) from None
        stop_reason = "context_full"
    finally:
        for b in beams:
            b.token_scores = b.seq.token_scores() if b.seq is not None and model.owns(b.seq) else None
            model.release(b.seq)
        reward.reset()
    pool = completed or beams
    answers = [extract_boxed("".join(s.text for s in b.steps)) for b in pool]
    rewards, ended = [b.last_reward for b in pool], [b.ends_turn for b in pool]
    chosen = choose_answer(answers, rewards, ended)
    candidates = [b.candidate() for b in pool]
    if pool:
        chosen["select"] = choose(candidates, config.select, veto=config.veto)
    answer = pool[chosen[config.beam_answer]] if pool else Beam(None, [])
    if stop_reason == "eos" and not answer.ends_turn:  # every beam finished, the answer's without ending its turn
        stop_reason = "max_tokens" if reached_max_tokens(answer.steps, config) else "max_steps"
    for step in answer.steps:
        yield step
    extra = {"completed_beams": len(completed), "live_beams": len(beams), "pool_answers": answers,
             "pool_rewards": rewards, "pool_ended": ended,
             **{f"answer_{how}": answers[i] for how, i in chosen.items()},
             **(selection_extra(candidates, config.select if config.beam_answer == "select" else
                                f"beam-{config.beam_answer}", chosen[config.beam_answer], config.veto) if pool else {})}
    return tracker.result(answer.steps, stop_reason, extra=extra)


def choose_answer(answers: list[str | None], rewards: list[float], ended: list[bool]) -> dict[str, int]:
    """Which beam of the pool (its answers, last rewards, whether each ended its
    turn) each rule answers with: "best", the best last reward among beams that
    ended their turn (a beam cut at the step-length limit is usually unfinished);
    "weighted", the best beam of the answer whose beams' last rewards sum highest
    (search-and-learn's weighted best-of-N over the beams); "majority", the most
    frequent answer's best beam."""
    if not answers:
        return {}
    best = max(range(len(answers)), key=lambda i: (ended[i], rewards[i]))
    if not any(answers):
        return {"best": best, "weighted": best, "majority": best}
    chosen = votes(answers, rewards)
    return {"best": best, "weighted": chosen["weighted"], "majority": chosen["majority"]}


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
