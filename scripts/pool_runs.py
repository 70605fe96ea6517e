#!/usr/bin/env python3
"""Pool the records of several bench folders by method and compare the methods problem by problem.

    python scripts/pool_runs.py docs/results/gsm8k-21-50-probe docs/results/gsm8k-51-70-probe \
        docs/results/gsm8k-20-greedy-candidate [--methods specs,beam-target,greedy-target]

Each folder's `<method>.jsonl` files are read in the order given; where two folders
hold the same method on the same problem, the later folder's record counts (so a
rerun of one method with new settings replaces the old one, and the other methods
keep theirs), whatever it holds: an error record counts as not solved, as in the
bench report, and replaces an earlier success. Prints each method's count with its 95%
Wilson interval and the folders it came from, then, for each pair of methods over
the problems both ran, how many only one of them solved and the two-sided sign test.
Latencies are not pooled: they are only comparable within one run. Writes nothing.
"""
from __future__ import annotations

import argparse
import sys
from itertools import combinations
from pathlib import Path

from specs_local.report import grade, pooled_records, sign_test, wilson_interval


def pooled(folders: list[Path], methods: list[str] | None) -> tuple[dict[str, dict[str, bool]], dict[str, dict[str, Path]]]:
    """Correctness by method and problem id (later folders win), and the folder each counted record came from."""
    records, origin = pooled_records(folders, methods)
    return {m: {pid: grade(r) for pid, r in by_id.items()} for m, by_id in records.items()}, origin


def sources(origin: dict[str, Path], folders: list[Path]) -> str:
    """The folders a method's pooled records came from, in the order given, with how many each gave."""
    counts = {folder: sum(f == folder for f in origin.values()) for folder in folders}
    return "; ".join(f"{folder} ({n})" for folder, n in counts.items() if n)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="bench --out folders; later ones win.")
    parser.add_argument("--methods", default=None, help="Comma-separated methods (default: every method found).")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        print(f"not a folder: {', '.join(missing)}", file=sys.stderr)
        return 1
    methods = args.methods.split(",") if args.methods else None
    right, origin = pooled(args.folders, methods)
    order = [m for m in (methods or sorted(right)) if m in right]
    if not order:
        print("no records of those methods in those folders", file=sys.stderr)
        return 1
    print("| method | correct [95% Wilson] | from |")
    print("|---|---|---|")
    for m in order:
        ok, n = sum(right[m].values()), len(right[m])
        low, high = wilson_interval(ok, n)
        print(f"| {m} | {ok}/{n} = {ok / n:.0%} [{low:.0%}, {high:.0%}] | {sources(origin[m], args.folders)} |")
    print()
    print("| pair | problems | only the first right | only the second right | sign test p (two-sided) |")
    print("|---|---:|---:|---:|---:|")
    for a, b in combinations(order, 2):
        ids = right[a].keys() & right[b].keys()
        first = sum(right[a][k] and not right[b][k] for k in ids)
        second = sum(right[b][k] and not right[a][k] for k in ids)
        print(f"| {a}, {b} | {len(ids)} | {first} | {second} | {sign_test(first, second):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
