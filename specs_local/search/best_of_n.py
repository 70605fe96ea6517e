"""Best-of-N: N whole solutions sampled in one batch, one chosen among them (selection.py).

Each sample draws from its own random stream, so a sample stopped early for low confidence
(``stop_confidence``) changes nothing in the others but the batch's shape: a run without
stopping shows what a bar would have stopped, on samples of the same distribution (below).
The rule ``select`` picks the answer; the result's ``extra`` keeps every sample's answer and
scores, from which scripts/selection_rules.py recomputes every rule.

With a consensus stop (``consensus``), the samples are drawn in turns, and none is drawn once
enough finished samples agree. Sample i draws from the same stream whichever turn draws it, but
llama.cpp's arithmetic can differ with the batch's shape, so on a real model it may sample other
tokens: a replay from a run that drew all n (``drawn``) is the same policy on other samples of
the same distribution (docs/results/gsm8k-train-consensus/).
"""
from __future__ import annotations

import numpy as np

from ..answers import extract_boxed
from ..engine import STEP_DELIMITER, Generation
from ..errors import ContextFullError
from ..selection import Candidate, agreed, choose, is_vetoed, selection_extra, solution_scores
from .common import Models, no_room_for_a_step, propose, sample_rngs, start, stopping
from .config import SearchConfig
from .results import SearchGenerator, Step, Tracker


def best_of_n(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    model, reward = models.target, models.reward
    tracker = Tracker("best-of-n", models, config)
    rngs = sample_rngs(config.seed, config.n)
    gens: list[Generation] = []
    candidates: list[Candidate] = []
    head = None
    try:
        head = start(model, problem, config)
        for turn in turns(config.n, config.consensus):
            kids, samples = propose(model, head, len(turn), config, [rngs[i] for i in turn], last=True,
                                    stop_below=stopping(config))
            try:
                live = [i for i, g in enumerate(samples) if g.finish != "low_confidence"]  # stopped: released
                rewards = np.full(len(samples), np.nan)
                if live:
                    rewards[live] = reward.score(problem, [], [samples[i].text for i in live],
                                                 contexts=[kids[i] for i in live])
            finally:
                model.release_all(kids)
            gens += samples
            candidates += [candidate(g, r) for g, r in zip(samples, rewards)]
            if config.consensus and agreed(candidates, config.consensus, config.veto):
                break
    except ContextFullError as error:  # its one step is its first
        raise no_room_for_a_step(error) from None
    finally:
        if head is not None:
            model.release(head)
        reward.reset()
    chosen = choose(candidates, config.select, veto=config.veto)
    g, chosen_reward = gens[chosen], candidates[chosen].scores["reward"]
    step = Step(text=g.text, source="target", reward=None if np.isnan(chosen_reward) else chosen_reward,
                target_logprob=g.mean_logprob, candidates=len(gens), tokens=len(g.tokens), ends_turn=g.finish == "eog")
    yield step
    extra = selection_extra(candidates, config.select, chosen, config.veto)
    cut = "max_tokens" if config.max_tokens is not None and len(g.tokens) >= config.max_tokens else "max_steps"
    return tracker.result([step], "eos" if step.ends_turn else cut, extra=extra)


def turns(n: int, consensus: int) -> list[range]:
    """Which samples are drawn together: all n in one batch, or with a consensus stop the first
    ``consensus`` (the fewest that can agree) and then one at a time, so that none is drawn
    after the answer is settled."""
    if consensus <= 0 or consensus >= n:
        return [range(n)]
    return [range(consensus)] + [range(i, i + 1) for i in range(consensus, n)]


def drawn(candidates: list[Candidate], consensus: int, veto: bool = True) -> int:
    """How many of these samples, in order, a consensus stop would have drawn (a replay from a
    run that drew them all)."""
    end = 0
    for turn in turns(len(candidates), consensus):
        end = turn.stop
        if consensus and agreed(candidates[:end], consensus, veto):
            break
    return end


def candidate(g: Generation, reward: float) -> Candidate:
    """A finished sample as the selector sees it (``reward`` NaN: none, the sample stopped early)."""
    return Candidate(extract_boxed(g.text), solution_scores(g.token_scores(), None if np.isnan(reward) else reward),
                     ended=g.finish == "eog", vetoed=is_vetoed(g.text.split(STEP_DELIMITER.decode())),
                     tokens=len(g.tokens), confidence=[c for _, c in g.confidence], text=g.text)
