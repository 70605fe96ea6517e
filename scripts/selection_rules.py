#!/usr/bin/env python3
"""Every solution-level rule, recomputed from the records of one run, without rerunning it.

    python scripts/selection_rules.py runs/train/best-of-n@n=4.jsonl [more.jsonl ...] [--json OUT]
        [--stop-window 32] [--stop-percentiles 5,10,20,30] [--stop-bars 8.05] [--first K] [--consensus V]

Each record of a method that chooses among whole solutions (best-of-n, SPECS with k chains,
beam with --beam-answer select) keeps every candidate's answer and scores (`selection`, or
`trace.extra` in traced records). For each rule of specs_local/selection.py, with and without
the calculator's veto, this grades the answer the rule would have given, beside one sample
(the mean over candidates), the oracle (any candidate right), and the rule the run used (whose
recomputed choice must equal the recorded one: a mismatch is counted and printed).

With traced records (`bench --trace`, which keep each candidate's per-token confidence), it also
replays early stopping (DeepConf's online mode): at each bar (a percentile of the candidates'
lowest windowed confidence over all problems) a candidate stops at the first window below it,
its tokens after that point are rows saved, and it leaves the choice as an unfinished solution.
That is how best-of-n's samples stop (the engine checks after every token). SPECS' chains check
only at the end of each step, over the step's last window, so for SPECS records the replay stops
chains sooner and more often than a run would: its rows saved are an upper bound there.
Each sample draws from its own random stream, so a stopped sample leaves the others as they
were, save for what a smaller batch changes in llama.cpp's arithmetic. That is not always small:
on a real model one flipped token in a few hundred makes another solution, and a consensus-stop
run drew other samples than the full run's first ones on 36 of 40 problems
(docs/results/gsm8k-train-consensus/). A replay is the same policy on samples of the same
distribution; it agrees with a run in the aggregate, not problem by problem.

For the same reason ``--first K`` keeps each record's first K candidates only: from best-of-n at
n = 4 it replays best-of-n at n = K (sample i draws from the same stream whatever n is), which
compares it with SPECS at k = K chains without another run, and ``--consensus V`` keeps the
candidates that best-of-n's consensus stop would have drawn (``SearchConfig.consensus``: stop
once V finished samples agree), with the target rows it would have saved. With both, the bars
are replayed together with the consensus stop, as a run with ``stop_confidence`` and ``consensus``
behaves: a stopped sample neither votes nor makes the others agree, so more may be drawn.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specs_local.answers import grade_many, normalize_answer  # noqa: E402
from specs_local.output_log import read_log  # noqa: E402
from specs_local.report import sign_test, wilson_interval  # noqa: E402
from specs_local.search.best_of_n import drawn  # noqa: E402
from specs_local.selection import RULES, choose, from_record, lowest_window  # noqa: E402


def selection_of(record: dict) -> dict | None:
    return record.get("selection") or (record.get("trace", {}).get("extra") if "trace" in record else None)


def load(paths: list[Path], first: int | None = None) -> list[dict]:
    """Finished records that carry a choice among candidates, with a gold answer (only the
    first ``first`` candidates of each, when given), with the rows their candidates decoded
    (``rows``)."""
    records = []
    for path in paths:
        for record in read_log(path).values():
            chosen = selection_of(record)
            if "error" not in record and record.get("gold") is not None and chosen and chosen.get("candidates"):
                full = record.get("trace", {}).get("extra") or chosen  # the traced copy has the confidences
                if first is not None:
                    full = {**full, "candidates": full["candidates"][:first]}
                records.append({"id": record["id"], "gold": record["gold"], "selection": full,
                                "correct": bool(record.get("correct")),
                                "rows": sum(c["tokens"] for c in full["candidates"])})
    return records


def replayed(records: list[dict], consensus: int = 0, bar: float | None = None, window: int = 32) -> list[dict]:
    """The records as an early-stopping policy would have left them. Below ``bar`` a candidate
    stops at its first window under it (``first_stop``): it decoded that many rows, has no answer
    and did not end, so it can neither be right nor vote. Then a consensus stop at ``consensus``
    votes keeps the candidates it would have drawn (``best_of_n.drawn``), which a stopped one
    never makes agree. Each record says how many candidates stopped and the rows decoded
    (``stopped``, ``rows_kept``)."""
    out = []
    for r in records:
        candidates, right = r["selection"]["candidates"], r["right"]
        stops = [None if bar is None else first_stop(c["confidence"], bar, window) for c in candidates]
        candidates = [c if at is None else {**c, "answer": None, "ended": False, "tokens": at}
                      for c, at in zip(candidates, stops)]
        right = [ok and at is None for ok, at in zip(right, stops)]
        kept = (drawn([from_record(c) for c in candidates], consensus, r["selection"].get("veto", True))
                if consensus else len(candidates))
        out.append({**r, "selection": {**r["selection"], "candidates": candidates[:kept]}, "right": right[:kept],
                    "stopped": sum(at is not None for at in stops[:kept]),
                    "rows_kept": sum(c["tokens"] for c in candidates[:kept])})
    return out


def grade_candidates(records: list[dict]) -> None:
    """Each candidate's correctness, graded once per distinct (answer, gold)."""
    pairs = sorted({(c["answer"], r["gold"]) for r in records for c in r["selection"]["candidates"]
                    if c["answer"] is not None}, key=str)
    verdicts = dict(zip(pairs, grade_many(pairs)))
    for r in records:
        r["right"] = [c["answer"] is not None and verdicts[(c["answer"], r["gold"])]
                      for c in r["selection"]["candidates"]]


SHOWN = ("logprob", "vote-logprob", "majority", "vote-reward")  # rules in the early-stopping table


def first_stop(confidence: list[float], bar: float, window: int) -> int | None:
    """The token count at which a sample stops: the end of its first window whose mean is below
    the bar. The last token ends the sample whatever its window says (the engine checks only a
    sample that goes on), so the window ending there stops nothing."""
    if len(confidence) <= window:
        return None
    sums = np.convolve(np.asarray(confidence[:-1], dtype=float), np.ones(window), mode="valid") / window
    below = np.flatnonzero(sums < bar)
    return int(below[0]) + window if len(below) else None


def rule_table(records: list[dict]) -> dict[str, dict]:
    """Solved counts by rule (and veto)."""
    table = {}
    for veto in (True, False):
        for rule in RULES:
            solved = sum(bool(r["right"][choose([from_record(c) for c in r["selection"]["candidates"]], rule,
                                                veto=veto)]) for r in records)
            table[f"{rule}{'' if veto else ' (no veto)'}"] = {"solved": solved}
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="bench records (JSONL), e.g. runs/x/best-of-n.jsonl")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--stop-window", type=int, default=32, help="tokens of the confidence window replayed")
    parser.add_argument("--stop-percentiles", default="5,10,20,30,40",
                        help="bars to replay: percentiles of the candidates' lowest windowed confidence")
    parser.add_argument("--stop-bars", default="", metavar="BAR,...",
                        help="bars to replay as given, e.g. the stop_confidence a run used")
    parser.add_argument("--first", type=int, default=None, metavar="K",
                        help="keep each record's first K candidates (best-of-n at n = K, from a run at a larger n)")
    parser.add_argument("--consensus", type=int, default=0, metavar="V",
                        help="keep the candidates best-of-n's consensus stop at V votes would have drawn")
    args = parser.parse_args(argv)
    if args.first is not None and args.first < 1:
        parser.error("--first must be at least 1")
    if args.consensus < 0:
        parser.error("--consensus must be at least 0")
    try:
        bars = [float(b) for b in args.stop_bars.split(",")] if args.stop_bars else []
    except ValueError:
        parser.error(f"--stop-bars takes numbers separated by commas, not {args.stop_bars!r}")
    pool = load(args.logs, args.first)  # every candidate the run drew, for the replays below
    if not pool:
        print("no records with candidates and a gold answer", file=sys.stderr)
        return 1
    grade_candidates(pool)
    records = replayed(pool, args.consensus)
    n = len(records)
    rows, rows_kept = sum(r["rows"] for r in pool), sum(r["rows_kept"] for r in records)
    out = {"logs": [str(p) for p in args.logs], "problems": n, "first": args.first, "consensus": args.consensus,
           "rows": rows_kept}
    fewer = args.first is not None or args.consensus
    # With fewer candidates than the run had, its own choice is not comparable.
    mismatches = [r["id"] for r in records if not fewer and r["selection"]["select"] in RULES and
                  choose([from_record(c) for c in r["selection"]["candidates"]], r["selection"]["select"],
                         veto=r["selection"]["veto"]) != r["selection"]["chosen"]]
    one_sample = sum(np.mean(r["right"]) for r in records)
    oracle = sum(any(r["right"]) for r in records)
    majority_size = np.mean([len({normalize_answer(c["answer"]) for c in r["selection"]["candidates"]}) for r in records])
    table = rule_table(records)
    print(f"{n} problems, {np.mean([len(r['right']) for r in records]):.1f} candidates each "
          f"({majority_size:.1f} distinct answers); the run's own choice: {sum(r['correct'] for r in records)} solved; " +
          (f"recomputed choices that differ from the recorded ones: {len(mismatches)} {mismatches[:5]}"
           if not fewer else "fewer candidates than it had, so not checked against it"))
    if args.consensus:
        out["consensus_rows"] = {"rows": rows, "kept": rows_kept, "saved": 1 - rows_kept / rows}
        print(f"consensus stop at {args.consensus} votes replayed: {rows_kept} of {rows} target rows decoded "
              f"({1 - rows_kept / rows:.1%} saved)")
    print(f"one sample (mean over candidates): {one_sample:.1f}; any candidate right (oracle): {oracle}; "
          f"target rows sampled by the candidates: {rows_kept}")
    print("| rule | solved | 95% interval | gained / lost against `logprob` (sign test p) |")
    print("|---|---|---|---|")
    base = {r["id"]: r["right"][choose([from_record(c) for c in r["selection"]["candidates"]], "logprob")]
            for r in records}
    for name, figures in table.items():
        rule, veto = name.split(" ")[0], "no veto" not in name
        picks = {r["id"]: r["right"][choose([from_record(c) for c in r["selection"]["candidates"]], rule, veto=veto)]
                 for r in records}
        gained = sum(picks[i] and not base[i] for i in picks)
        lost = sum(base[i] and not picks[i] for i in picks)
        low, high = wilson_interval(figures["solved"], n)
        figures.update(gained=gained, lost=lost, p=sign_test(gained, lost))
        print(f"| {name} | {figures['solved']}/{n} = {figures['solved'] / n:.0%} | [{low:.0%}, {high:.0%}] | "
              f"+{gained} / -{lost} (p {figures['p']:.2f}) |")
    out.update(mismatches=mismatches, one_sample=one_sample, oracle=oracle, rules=table)

    # Bars are set over every candidate the run drew, whatever a consensus stop would have kept.
    traced = all("confidence" in c for r in pool for c in r["selection"]["candidates"])
    lows = [lowest_window(c["confidence"], args.stop_window) for r in pool for c in r["selection"]["candidates"]
            if traced and len(c["confidence"]) >= args.stop_window]
    if bars and not traced:
        print("\nEarly stopping not replayed: --stop-bars needs traced records (bench --trace)")
    if traced and not lows:
        print(f"\nEarly stopping not replayed: no candidate is as long as the {args.stop_window}-token window")
    elif traced:
        out["early_stopping"] = {"window": args.stop_window, "total_rows": rows, "consensus": args.consensus,
                                 "bars": []}
        with_consensus = f" with the consensus stop at {args.consensus} votes" if args.consensus else ""
        print(f"\nEarly stopping replayed{with_consensus} (window {args.stop_window} tokens; "
              f"{rows} target rows decoded by the run):")
        print("| bar (percentile) | candidates stopped | rows saved | " + " | ".join(SHOWN) + " |")
        print("|---|---|---|" + "---|" * len(SHOWN))
        levels = [(float(np.percentile(lows, pct)), pct) for pct in map(float, args.stop_percentiles.split(","))]
        for bar, pct in levels + [(bar, None) for bar in bars]:
            stopped = replayed(pool, args.consensus, bar, args.stop_window)
            saved = rows - sum(r["rows_kept"] for r in stopped)
            count = sum(r["stopped"] for r in stopped)
            solved = rule_table(stopped)
            out["early_stopping"]["bars"].append({"percentile": pct, "bar": bar, "stopped": count,
                                                  "rows_saved": saved, "rules": solved})
            where = f"{bar:.3f} ({pct:g}%)" if pct is not None else f"{bar:g} (given)"
            print(f"| {where} | {count} | {saved / rows:.1%} | " +
                  " | ".join(f"{solved[r]['solved']}/{n}" for r in SHOWN) + " |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
