"""RSD, reward-guided speculative decoding (Liao et al., 2025).

The draft proposes one step; it is kept when its reward reaches ``rsd_delta``,
otherwise the target writes that step. When the reward verifies in the
target's own context (self-verification), the target scores the draft step in
place, and an accepted step is already in the target's KV cache.
"""
from __future__ import annotations

import numpy as np

from .common import Models, adopt, propose, solution_tokens, step_by_step, texts
from .config import SearchConfig
from .results import SearchGenerator, Step, Tracker


def rsd(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    target, reward = models.target, models.reward
    draft = models.require_draft()
    rng = np.random.default_rng(config.seed)
    in_context = getattr(reward, "wants_contexts", False)

    def next_step(heads, steps, last):
        used = solution_tokens(steps)
        kids_d, [g] = propose(draft, heads["draft"], 1, config, rng, last, used=used)
        kids_t, target_lp = target.score(heads["target"], [g.tokens]) if in_context else ([], [None])
        r = float(reward.score(problem, texts(steps), [g.text], contexts=kids_t or None)[0])
        if r >= config.rsd_delta:
            heads["draft"] = adopt(draft, heads["draft"], kids_d, 0)
            if kids_t:
                heads["target"] = adopt(target, heads["target"], kids_t, 0)
            else:
                target.append_lazily(heads["target"], g.tokens, kind="prompt")
            return Step(text=g.text, source="draft", reward=r, draft_logprob=g.mean_logprob,
                        target_logprob=float(np.mean(target_lp[0])) if target_lp[0] is not None else None,
                        accepted=True, tokens=len(g.tokens), ends_turn=g.finish == "eog")
        draft.release_all(kids_d)
        target.release_all(kids_t)
        kids, [gt] = propose(target, heads["target"], 1, config, rng, last, used=used)
        heads["target"] = adopt(target, heads["target"], kids, 0)
        draft.append_lazily(heads["draft"], gt.tokens, kind="prompt")
        return Step(text=gt.text, source="target", target_logprob=gt.mean_logprob, deferred=True,
                    tokens=len(gt.tokens), ends_turn=gt.finish == "eog")

    tracker = Tracker("rsd", models, config)
    return (yield from step_by_step(tracker, problem, {"target": target, "draft": draft}, config, next_step))
