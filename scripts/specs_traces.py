#!/usr/bin/env python3
"""Where a traced SPECS run wins and loses against the other methods of its bench.

    python scripts/specs_traces.py docs/results/gsm8k-train-beam-answer [--show-lost]

Splits the problems by how SPECS worked them: every step written by the target
(no draft step accepted, so SPECS ran as a step-level best-of-n of the target's
samples) or with accepted draft steps. For each group it counts what each method of the run
solved. `--show-lost` prints the problems SPECS got wrong and another method got
right, step by step (source, reward, score, the step's start). Reads `specs.jsonl`
and the other `<method>.jsonl` files of a `bench --trace` folder; writes nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from specs_local.output_log import read_log


def steps_of(record: dict) -> list[dict]:
    return record.get("trace", {}).get("steps", [])


def sources(record: dict) -> str:
    """One letter per step: D a draft step, T a target step; * marks a deferral to the target."""
    return "".join(("D" if s["source"] == "draft" else "T") + ("*" if s["deferred"] else "") for s in steps_of(record))


def group_of(record: dict) -> str:
    return "with drafts" if any(s["source"] == "draft" for s in steps_of(record)) else "target only"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="A bench --out folder with a traced specs run.")
    parser.add_argument("--show-lost", action="store_true", help="Print the problems SPECS lost, step by step.")
    args = parser.parse_args(argv)
    specs = {k: r for k, r in read_log(args.run / "specs.jsonl").items() if "error" not in r}
    if not specs or not all(steps_of(r) for r in specs.values()):
        print(f"{args.run / 'specs.jsonl'}: no traced specs records (run bench with --trace)", file=sys.stderr)
        return 1
    others = {p.stem: read_log(p) for p in sorted(args.run.glob("*.jsonl")) if p.stem != "specs"}
    methods = {"specs": specs, **others}
    ids = [k for k in specs if all(k in m for m in others.values())]
    groups: dict[str, list[str]] = {}
    for k in ids:
        groups.setdefault(group_of(specs[k]), []).append(k)
    print(f"{len(ids)} problems solved by every method of {args.run}")
    print("| how SPECS worked it | problems | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for name in ("target only", "with drafts"):
        ks = groups.get(name, [])
        counts = " | ".join(str(sum(bool(m[k].get("correct")) for k in ks)) for m in methods.values())
        print(f"| {name} | {len(ks)} | {counts} |")
    accepted = [s for k in ids for s in steps_of(specs[k]) if s["source"] == "draft"]
    lost = [k for k in ids if not specs[k].get("correct") and any(m[k].get("correct") for m in others.values())]
    print(f"accepted draft steps: {len(accepted)}; problems SPECS lost that another method solved: {len(lost)}")
    for k in lost:
        right = ", ".join(name for name, m in others.items() if m[k].get("correct"))
        print(f"- {k} ({group_of(specs[k])}, {sources(specs[k])}): specs {specs[k].get('answer')}, gold "
              f"{specs[k].get('gold')}; right: {right}")
        if args.show_lost:
            for s in steps_of(specs[k]):
                score = "" if s["score"] is None else f" score {s['score']:.2f}"
                text = s["text"][:160].replace("\n", "⏎")
                print(f"    {s['source']:6} reward {s['reward']:.2f}{score}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
