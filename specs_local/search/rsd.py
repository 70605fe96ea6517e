"""RSD, reward-guided speculative decoding (Liao et al., 2025).

The draft proposes one step; it is kept when its reward reaches ``rsd_delta``,
otherwise the target writes that step. When the reward verifies in the
target's own context (self-verification), the target scores the draft step in
place, and an accepted step is already in the target's KV cache.
"""
from __future__ import annotations

import numpy as np

from ..errors import ContextFullError
from .common import Models, SearchConfig, SearchGenerator, Step, Tracker, adopt, propose, start, texts


def rsd(problem: str, models: Models, config: SearchConfig) -> SearchGenerator:
    target, reward = models.target, models.reward
    draft = models.require_draft()
    tracker = Tracker("rsd", models, config)
    rng = np.random.default_rng(config.seed)
    steps: list[Step] = []
    stop_reason = "max_steps"
    head_t = head_d = None
    in_context = getattr(reward, "wants_contexts", False)
    try:
        head_t, head_d = start(target, problem), start(draft, problem)
        for index in range(config.max_steps):
            last = index == config.max_steps - 1
            kids_d, [g] = propose(draft, head_d, 1, config, rng, last)
            kids_t, target_lp = target.score(head_t, [g.tokens]) if in_context else ([], [None])
            r = float(reward.score(problem, texts(steps), [g.text], contexts=kids_t or None)[0])
            if r >= config.rsd_delta:
                head_d = adopt(draft, head_d, kids_d, 0)
                if kids_t:
                    head_t = adopt(target, head_t, kids_t, 0)
                else:
                    target.append_lazily(head_t, g.tokens, kind="prompt")
                step = Step(text=g.text, source="draft", reward=r, draft_logprob=g.mean_logprob,
                            target_logprob=float(np.mean(target_lp[0])) if target_lp[0] is not None else None,
                            accepted=True, tokens=len(g.tokens), ends_turn=g.finish == "eog")
            else:
                draft.release_all(kids_d)
                target.release_all(kids_t)
                kids, [gt] = propose(target, head_t, 1, config, rng, last)
                head_t = adopt(target, head_t, kids, 0)
                draft.append_lazily(head_d, gt.tokens, kind="prompt")
                step = Step(text=gt.text, source="target", target_logprob=gt.mean_logprob, deferred=True,
                            tokens=len(gt.tokens), ends_turn=gt.finish == "eog")
            steps.append(step)
            yield step
            if step.ends_turn:
                stop_reason = "eos"
                break
    except ContextFullError:
        stop_reason = "context_full"
    finally:
        for model, head in ((target, head_t), (draft, head_d)):
            if head is not None:
                model.release(head)
        reward.reset()
    return tracker.result(steps, stop_reason)
