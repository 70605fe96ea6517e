#!/usr/bin/env python3
"""What beam search would have answered under each rule, read off one traced run:
the completed beam with the best last reward ("best", the default), the
reward-weighted vote over the completed beams ("weighted"), the plain majority,
and whether any completed beam was right at all (the most a rule could get).

    python scripts/beam_answer_rules.py docs/results/gsm8k-train-beam-answer [--method beam-target]

Needs a `bench --trace` run made at or after the commit that records each beam's
pool (`trace.extra.pool_answers`). Prints a table and writes `beam-answer-rules.json`
into the run folder.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specs_local.answers import grade_many
from specs_local.output_log import read_log
from specs_local.report import sign_test
from specs_local.search.beam import choose_answer
from specs_local.search.config import BEAM_ANSWERS


def pool_of(record: dict) -> tuple[list, list[float], list[bool]]:
    """A record's pool: its answers, last rewards and whether each ended its turn."""
    extra = record["trace"]["extra"]
    if "pool_rewards" in extra:
        return extra["pool_answers"], extra["pool_rewards"], extra["pool_ended"]
    # Runs at 4ce8234 kept the rewards of completed beams only: a pool of live beams is
    # left to the answer beam search gave.
    if extra["completed_beams"]:
        return extra["pool_answers"], extra["completed_rewards"], extra["completed_ended"]
    return [record["answer"]], [0.0], [False]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="A bench --out folder with a traced beam run.")
    parser.add_argument("--method", default="beam-target")
    args = parser.parse_args(argv)
    records = [r for r in read_log(args.run / f"{args.method}.jsonl").values() if "error" not in r]
    if not records or any("extra" not in r.get("trace", {}) for r in records):
        print(f"{args.run / (args.method + '.jsonl')}: no traced beam pools (run bench with --trace at this "
              "revision or later)", file=sys.stderr)
        return 1
    pairs = [(a, r["gold"]) for r in records for a in pool_of(r)[0]]
    right = iter(grade_many(pairs))
    rows = []
    for r in records:
        answers, rewards, ended = pool_of(r)
        correct = [next(right) for _ in answers]
        chosen = choose_answer(answers, rewards, ended)
        rows.append({"id": r["id"], "pool": len(answers), "pool_correct": sum(correct),
                     **{rule: bool(correct[i]) for rule, i in chosen.items()},
                     "recorded_answer_is_best": r["answer"] == answers[chosen["best"]]})
    summary = {rule: sum(row[rule] for row in rows) for rule in BEAM_ANSWERS}
    summary["any_beam_right"] = sum(row["pool_correct"] > 0 for row in rows)
    wins = sum(row["weighted"] and not row["best"] for row in rows)
    losses = sum(row["best"] and not row["weighted"] for row in rows)
    out = {"run": str(args.run), "method": args.method, "problems": len(rows), "correct": summary,
           "weighted_vs_best": {"weighted_only": wins, "best_only": losses, "sign_test_p": round(sign_test(wins, losses), 3)},
           "mean_pool": round(sum(row["pool"] for row in rows) / len(rows), 2), "problems_detail": rows}
    (args.run / "beam-answer-rules.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"{args.method} on {len(rows)} problems of {args.run} (mean pool {out['mean_pool']} completed beams)")
    for rule in (*BEAM_ANSWERS, "any_beam_right"):
        print(f"  {rule:15s} {summary[rule]}/{len(rows)}")
    print(f"  weighted right where best is wrong: {wins}; the reverse: {losses} (sign test p = {sign_test(wins, losses):.3f})")
    if not all(row["recorded_answer_is_best"] for row in rows):
        print("  warning: some recorded answers are not the 'best' rule's (was the run made with --beam-answer?)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
