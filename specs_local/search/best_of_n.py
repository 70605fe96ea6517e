"""Best-of-N: N whole solutions sampled in one batch, one chosen among them (selection.py).

Each sample draws from its own random stream, so a sample stopped early for low confidence
(``stop_confidence``) changes nothing in the others: a run without stopping shows what any bar
would have stopped. The rule ``select`` picks the answer; the result's ``extra`` keeps every
sample's answer and scores, from which scripts/selection_rules.py recomputes every rule.
"""
from __future__ import annotations

import numpy as np

from ..answers import extract_boxed
from ..engine import STEP_DELIMITER
from ..errors import ContextFullError
from ..selection import Candidate, choose, is_vetoed, selection_extra, solution_scores
from .common import (Models, SearchConfig, SearchGenerator, Step, Tracker, no_room_for_a_step, propose, sample_rngs,
                     start, stopping)


def best_of_n(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    model, reward = models.target, models.reward
    tracker = Tracker("best-of-n", models, config)
    head = None
    try:
        head = start(model, problem, config)
        kids, gens = propose(model, head, config.n, config, sample_rngs(config.seed, config.n), last=True,
                             stop_below=stopping(config))
        live = [i for i, g in enumerate(gens) if g.finish != "low_confidence"]  # stopped ones are released
        rewards = np.full(len(gens), np.nan)
        if live:
            rewards[live] = reward.score(problem, [], [gens[i].text for i in live], contexts=[kids[i] for i in live])
        model.release_all(kids)
    except ContextFullError as error:  # its one step is its first
        raise no_room_for_a_step(error) from None
    finally:
        if head is not None:
            model.release(head)
        reward.reset()
    delimiter = STEP_DELIMITER.decode()
    candidates = [Candidate(extract_boxed(g.text), solution_scores(g.token_scores(), None if np.isnan(r) else r),
                            ended=g.finish == "eog", vetoed=is_vetoed(g.text.split(delimiter)), tokens=len(g.tokens),
                            confidence=[c for _, c in g.confidence], text=g.text)
                  for g, r in zip(gens, rewards)]
    chosen = choose(candidates, config.select, veto=config.veto)
    g = gens[chosen]
    step = Step(text=g.text, source="target", reward=None if np.isnan(rewards[chosen]) else float(rewards[chosen]),
                target_logprob=g.mean_logprob, candidates=len(gens), tokens=len(g.tokens), ends_turn=g.finish == "eog")
    yield step
    extra = selection_extra(candidates, config.select, chosen, config.veto)
    cut = "max_tokens" if config.max_tokens is not None and len(g.tokens) >= config.max_tokens else "max_steps"
    return tracker.result([step], "eos" if step.ends_turn else cut, extra=extra)
