#!/usr/bin/env python3
"""SPECS thresholds for a probe head, tuned offline on a collection's validation
problems (a slice of a *training* split: never a benchmark set).

    python scripts/tune_thresholds.py runs/value/small.jsonl models/small-probe.npz [--n 4] [--out FILE.json]

Each collected draft step is a SPECS candidate with its target/draft log-ratio,
its probe reward and its outcome label (does its solution end correct). For
each beta, tau_reject is the lowest threshold whose accepted draft steps end
correct at least as often as the target's own steps do: a draft step then gets
through only when the head rates it no worse than what deferring would buy.
The beta kept is the one that accepts most at that precision. Where no
threshold gets there, the most selective one is kept (its top 20 drafts pass)
and the output says ``"bar_met": false``. tau_switch hands
back to the draft after a target step rewarded like a draft step that passes
at the median log-ratio: (tau_reject - median log-ratio) / beta.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from specs_local.collection import load_collection
from specs_local.probe import ProbeHead
from specs_local.probe_train import predict_rows, validation_mask

BETAS = (2.0, 5.0, 10.0, 20.0)


def threshold(beta: float, tau: float, accepted, label, n: int) -> dict:
    """What passing the draft steps ``accepted`` at (beta, tau) gives."""
    rate = float(accepted.mean())
    return {"beta": beta, "tau_reject": float(tau), "draft_acceptance": rate,
            "accepted_precision": float(label[accepted].mean()), "deferral_if_independent": (1 - rate) ** n}


def tune(log_ratio, reward, label, target_rate, n: int) -> dict:
    """The (beta, tau_reject) that accepts the most draft steps whose precision reaches target_rate."""
    best = None
    for beta in BETAS:
        score = log_ratio + beta * reward
        for tau in np.unique(np.round(np.quantile(score, np.linspace(0, 0.95, 96)), 3)):
            accepted = score > tau
            if accepted.sum() < 20:
                continue
            found = threshold(beta, tau, accepted, label, n)
            if found["accepted_precision"] < target_rate:
                continue
            if best is None or found["draft_acceptance"] > best["draft_acceptance"]:
                best = found
            break  # the lowest tau meeting the bar accepts most for this beta
    return best


def most_selective(log_ratio, reward, label, n: int, min_accepted: int = 20) -> dict:
    """When no threshold reaches the bar: the (beta, tau_reject) whose accepted draft
    steps end correct most often, among those that accept at least ``min_accepted``
    (the search then defers nearly always, which is what such a draft deserves)."""
    best = None
    for beta in BETAS:
        score = log_ratio + beta * reward
        passing = min(min_accepted, len(score) - 1)  # a small collection: all but the lowest
        tau = float(np.sort(score)[-passing - 1])  # the top `passing` pass
        accepted = score > tau
        if not accepted.any():
            continue
        found = threshold(beta, tau, accepted, label, n)
        if best is None or found["accepted_precision"] > best["accepted_precision"]:
            best = found
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("collection")
    parser.add_argument("head")
    parser.add_argument("--n", type=int, default=4, help="candidates per SPECS step")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    collection = load_collection(args.collection)
    head = ProbeHead.load(args.head)
    split = head.provenance.get("split", {"val_fraction": 0.2, "seed": 0})
    val = validation_mask(collection.groups, split["val_fraction"], split["seed"])
    reward = predict_rows(head, collection)
    # from the collection's own rows: the file itself may hold retried or error records too
    target_lp, policy_lp = collection.scalars["target_logprob"], collection.scalars["policy_logprob"]
    draft, target = val & (collection.source == "draft"), val & (collection.source == "target")
    if draft.sum() < 2 or not target.any():
        print(f"{args.collection}: its validation problems hold {draft.sum()} draft and {target.sum()} target "
              "steps; tuning needs both (collect with a draft, on more problems)", file=sys.stderr)
        return 1
    target_rate = float(collection.labels[target].mean())
    log_ratio = target_lp[draft] - policy_lp[draft]
    found = tune(log_ratio, reward[draft], collection.labels[draft], target_rate, args.n)
    if found is None:
        print("no threshold makes accepted drafts as good as the target's steps: "
              "keeping the most selective one", file=sys.stderr)
        found = most_selective(log_ratio, reward[draft], collection.labels[draft], args.n)
        if found is None:
            print(f"{args.collection}: every validation draft step scores the same (log-ratio plus beta times "
                  "reward), so no threshold separates them", file=sys.stderr)
            return 1
    found["bar_met"] = found["accepted_precision"] >= target_rate
    median_ratio = float(np.median(log_ratio))
    found["tau_switch"] = round(float(np.clip((found["tau_reject"] - median_ratio) / found["beta"], 0.05, 0.95)), 3)
    summary = {"collection": args.collection, "head": args.head, "validation_problems": int(len(np.unique(collection.groups[val]))),
               "draft_steps": int(draft.sum()), "target_steps": int(target.sum()),
               "target_step_precision": target_rate, "draft_step_precision": float(collection.labels[draft].mean()),
               "median_log_ratio": median_ratio, "mean_reward_target_steps": float(reward[target].mean()),
               "mean_reward_draft_steps": float(reward[draft].mean()), **found}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        open(args.out, "w", encoding="utf-8").write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
