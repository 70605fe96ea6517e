#!/usr/bin/env python3
"""Which head ranks one model's candidates best: the shipped head, the solution's
log-prob alone, and heads refitted per recorded layer, on the raw hidden state or on
the hidden state minus its problem's mean (problem-demeaned: the fit can then only
learn what differs between solutions of one problem), each with and without the
log-prob beside it. All scored on a collection's validation problems (the split
`value train` uses) and, if given, on every problem of a held-out collection.

    python scripts/value_variants.py runs/value/small.jsonl --head models/small-probe.npz \\
        --held-out runs/value/mc-heldout.jsonl --out docs/results/value/variants.json

The figures per source are the ones a search rests on: SPECS' draft mode compares
drafts, target mode and beam search compare the target's samples.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from specs_local.collection import load_collection
from specs_local.probe import SOLUTION_LOGPROB, ProbeHead, train_head
from specs_local.probe_train import columns, figures, predict_rows, validation_mask

SHOWN = ("pairwise_last", "pairwise_same_step_target", "pairwise_same_step_draft", "pairwise_branch", "auc_steps")


def demeaned(X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each row minus the mean row of its problem."""
    out = X.copy()
    for g in np.unique(groups):
        rows = groups == g
        out[rows] -= out[rows].mean(0)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("collection")
    parser.add_argument("--head", default=None, help="a trained head to score beside the refits")
    parser.add_argument("--held-out", default=None, help="a collection of other problems (e.g. with Monte Carlo labels)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    collection = load_collection(args.collection)
    held_out = load_collection(args.held_out) if args.held_out else None
    val = validation_mask(collection.groups, args.val_fraction, args.seed)
    train = ~val
    rows = []

    def score(name: str, on_val: np.ndarray, on_held_out) -> None:
        row = {"variant": name, "validation": figures(collection, on_val, val)}
        if held_out is not None:
            row["held_out"] = figures(held_out, on_held_out, np.ones(len(held_out.labels), dtype=bool))
        rows.append(row)
        line = " | ".join(f"{k.replace('pairwise_', '')} {row['validation'].get(k, float('nan')):.3f}" for k in SHOWN[:3])
        if held_out is not None:
            line += " || held out: " + " | ".join(f"{k.replace('pairwise_', '')} {row['held_out'].get(k, float('nan')):.3f}"
                                                 for k in SHOWN)
        print(f"{name:34s} {line}", flush=True)

    if args.head:
        head = ProbeHead.load(args.head)
        score(f"head {args.head}", predict_rows(head, collection),
              None if held_out is None else predict_rows(head, held_out))
    score(SOLUTION_LOGPROB + " alone", collection.scalars[SOLUTION_LOGPROB],
          None if held_out is None else held_out.scalars[SOLUTION_LOGPROB])
    S = collection.scalar_matrix([SOLUTION_LOGPROB])
    # Pairs within one source only, the pairs a search compares; most pairs over a whole problem
    # set a target solution against a draft one. (Fitting on these splits folds by problem and source.)
    by_source = np.char.add(collection.groups.astype(str), "|" + collection.source.astype(str))

    def fit_and_score(layer: str, mode: str, with_logprob: bool, groups: np.ndarray, label: str = "") -> None:
        cols = columns(collection.meta, [layer])
        X = collection.features[:, cols]
        fit_on = X[train] if mode == "raw" else demeaned(X[train], collection.groups[train])
        head, report = train_head(fit_on, collection.labels[train], groups[train],
                                  feature_names=[f"{layer}[{i}]" for i in range(len(cols))], seed=args.seed,
                                  scalars=S[train] if with_logprob else None,
                                  scalar_names=(SOLUTION_LOGPROB,) if with_logprob else ())
        kept = bool(head.scalar_names)
        on_held_out = None
        if held_out is not None:
            on_held_out = head.predict(held_out.features[:, columns(held_out.meta, [layer])],
                                       held_out.scalar_matrix(head.scalar_names) if kept else None)
        weight = f" + {report['scalars'][SOLUTION_LOGPROB]:g} x log-prob" if kept else ""
        score(f"{layer} {mode}{weight}{label}", head.predict(X, S if kept else None), on_held_out)

    for layer in collection.meta["capture"]:
        for mode in ("raw", "demeaned"):
            for with_logprob in (False, True):
                fit_and_score(layer, mode, with_logprob, collection.groups)
        fit_and_score(layer, "raw", True, by_source, ", chosen on one-source pairs")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"collection": args.collection, "held_out": args.held_out, "head": args.head,
                       "validation_problems": int(len(np.unique(collection.groups[val]))), "variants": rows},
                      f, indent=2, default=float)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
