#!/usr/bin/env python3
"""How a probe head's validation figures grow with training problems: the head
is refitted on the first 1/4, 1/2, 3/4 and all of a collection's training
problems, each time scored on the same validation problems (split by problem).

    python scripts/value_learning_curve.py runs/value/small.jsonl [--capture l_out-14,result_norm] [--out FILE.json]

``--capture`` fits only those recorded layers together (default: each alone and all).
``--scalars ""`` fits the hidden state alone (default: the solution's log-prob may join it).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from specs_local.collection import load_collection
from specs_local.probe_train import train_probe, validation_mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("collection")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--capture", default=None, help="comma-separated recorded layers to fit together")
    parser.add_argument("--scalars", default="solution_logprob", help="comma-separated scalar features offered to the head")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    candidates = [args.capture.split(",")] if args.capture else None

    collection = load_collection(args.collection)
    val = validation_mask(collection.groups, args.val_fraction, args.seed)
    total = len(np.unique(collection.groups[~val]))
    curve = []
    for share in (0.25, 0.5, 0.75, 1.0):
        _, summary = train_probe(collection, candidates=candidates, val_fraction=args.val_fraction, seed=args.seed,
                                 train_problems=max(2, round(share * total)),
                                 scalar_names=tuple(n for n in args.scalars.split(",") if n))
        for tried in summary["tried"]:
            row = {"train_problems": summary["train_problems"], "train_rows": summary["train_rows"], **tried}
            curve.append(row)
            print(f"{row['train_problems']:4d} problems | {'+'.join(row['capture']):>16} | last step "
                  f"{row['pairwise_last']:.3f} ({row['pairs_last']} pairs) | first differing "
                  f"{row['pairwise_first_differing']:.3f} | step AUC {row['auc_steps']:.3f}", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"collection": args.collection, "scalars": args.scalars,
                       "validation_problems": int(len(np.unique(collection.groups[val]))),
                       "curve": curve}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
