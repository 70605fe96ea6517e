#!/usr/bin/env python3
"""Accuracy against latency of every method and arm measured, pooled over bench folders.

    python scripts/frontier.py runs/a runs/b [--baseline greedy-target] [--png frontier.png] [--json frontier.json]

Records are pooled as scripts/pool_runs.py pools them (a later folder's record of a method and
problem replaces an earlier one). Latency is only comparable within one run, so each record's
latency is divided by the baseline's on the same problem in the same folder, and a method's
latency is the median of those ratios over the problems it ran beside the baseline. Prints a
table (accuracy with its 95% Wilson interval, the median ratio with its bootstrap interval, and
the sign test against the baseline on the problems both ran), and draws the frontier: each
method a point, the ones no other beats on both axes joined by a line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specs_local.report import (bootstrap_median_ratio, grade, pooled_records, sign_test,  # noqa: E402
                                wilson_interval)


def latency_ratios(records: dict[str, dict], origin: dict[str, Path], base: dict[str, dict],
                   base_origin: dict[str, Path]) -> list[float]:
    """Per problem, the record's latency over the baseline's from the same folder."""
    return [r["stats"]["wall_seconds"] / base[pid]["stats"]["wall_seconds"]
            for pid, r in records.items()
            if pid in base and base_origin[pid] == origin[pid] and "error" not in r and "error" not in base[pid]]


def frontier(points: dict[str, dict]) -> list[str]:
    """The methods no other is at least as accurate and as fast as, and better on one, by latency."""
    def beaten(m):
        a = points[m]
        return any(b["accuracy"] >= a["accuracy"] and b["ratio"] <= a["ratio"] and
                   (b["accuracy"] > a["accuracy"] or b["ratio"] < a["ratio"]) for o, b in points.items() if o != m)
    return sorted((m for m in points if not beaten(m)), key=lambda m: points[m]["ratio"])


def draw(points: dict[str, dict], best: list[str], baseline: str, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5))
    axes = figure.add_subplot()
    for method, p in points.items():
        low, high = p["interval"]
        rlow, rhigh = p["ratio_interval"]
        axes.errorbar([p["ratio"]], [p["accuracy"]], xerr=[[max(0, p["ratio"] - rlow)], [max(0, rhigh - p["ratio"])]],
                      yerr=[[max(0, p["accuracy"] - low)], [max(0, high - p["accuracy"])]], fmt="o", capsize=3)
        axes.annotate(method, (p["ratio"], p["accuracy"]), textcoords="offset points", xytext=(5, 5), fontsize=7)
    axes.plot([points[m]["ratio"] for m in best], [points[m]["accuracy"] for m in best], "--", alpha=0.5,
              label="frontier")
    axes.set_xlabel(f"latency / {baseline}'s, median per problem (bars: 95% bootstrap)")
    axes.set_ylabel("accuracy (bars: 95% Wilson)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=130)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--baseline", default="greedy-target")
    parser.add_argument("--png", type=Path, default=None, help="draw the frontier here (needs the plot extra)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    records, origin = pooled_records(args.folders)
    if args.baseline not in records:
        print(f"no records of the baseline {args.baseline} in those folders", file=sys.stderr)
        return 1
    base = records[args.baseline]
    points = {}
    for method, by_id in records.items():
        right = [grade(r) for r in by_id.values()]
        ratios = latency_ratios(by_id, origin[method], base, origin[args.baseline])
        if not ratios:
            continue
        median, low, high = bootstrap_median_ratio(ratios)
        ids = by_id.keys() & base.keys()
        gained = sum(grade(by_id[i]) and not grade(base[i]) for i in ids)
        lost = sum(grade(base[i]) and not grade(by_id[i]) for i in ids)
        points[method] = {"solved": sum(right), "n": len(right), "accuracy": sum(right) / len(right),
                          "interval": list(wilson_interval(sum(right), len(right))), "ratio": median,
                          "ratio_interval": [low, high], "paired": len(ids), "gained": gained, "lost": lost,
                          "p": sign_test(gained, lost)}
    best = frontier(points)
    print(f"| method | solved | 95% interval | latency / {args.baseline} [95%] | against {args.baseline} "
          "(paired problems: gained / lost, sign test p) | frontier |")
    print("|---|---|---|---|---|---|")
    for method, p in sorted(points.items(), key=lambda kv: kv[1]["ratio"]):
        print(f"| {method} | {p['solved']}/{p['n']} = {p['accuracy']:.0%} | [{p['interval'][0]:.0%}, "
              f"{p['interval'][1]:.0%}] | {p['ratio']:.2f} [{p['ratio_interval'][0]:.2f}, {p['ratio_interval'][1]:.2f}]"
              f" | {p['paired']}: +{p['gained']} / -{p['lost']}, p {p['p']:.2f} | {'yes' if method in best else ''} |")
    if args.json:
        args.json.write_text(json.dumps({"baseline": args.baseline, "folders": [str(f) for f in args.folders],
                                         "methods": points, "frontier": best}, indent=1) + "\n")
    if args.png:
        draw(points, best, args.baseline, args.png, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
