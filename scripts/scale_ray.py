#!/usr/bin/env python3
"""How `batch --ray` scales on this machine: the same problems on 1, 2, ... workers.

    # 8 GSM8K problems with the small preset, one worker then two, one thread each;
    # the flags after -- are batch's search flags (default: the small preset, SPECS).
    python scripts/scale_ray.py ../shared/data/gsm8k.jsonl --limit 8 --workers 1,2 --threads 1 -- --n 4

For each worker count the workers are started and their models loaded first, then
the clock runs over the problems alone. It reports throughput (problems per minute),
the median per-problem latency, and the median over problems of the latency ratio
against the first worker count (above 1: the workers slow each other down), and
says which count did most per minute beside what `--workers` defaults to here
(`cluster.default_workers`). Nothing is written but the report (--out, JSON).
Needs the ray extra; `--address` is `--ray`'s (default auto: a Ray of its own when
no cluster runs here).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from specs_local.problems import read_problems
from specs_local.cli.batch import batch as batch_command
from specs_local.cluster import (ClusterOptions, cluster_records, default_workers, import_ray, node_resources,
                                 worker_pool)

CLI_ONLY = ("input_path", "output_path", "trace", "progress", "ray", "workers", "gpus_per_worker")


def search_opts(data: str, flags: list[str], threads: int) -> dict:
    """The search options as `specs-local batch DATA FLAGS` would hand them to its workers."""
    params = batch_command.make_context("batch", [data, "-o", "unused", *flags, "--threads", str(threads)]).params
    return {k: v for k, v in params.items() if k not in CLI_ONLY}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def latency(record: dict) -> float | None:
    return None if "error" in record else record["stats"]["wall_seconds"]


def measure(problems, opts: dict, workers: int, threads: int, address: str) -> dict:
    """One run: warm workers, then the problems alone on the clock."""
    with worker_pool(opts, ClusterOptions(address=address, workers=workers, threads=threads)) as pool:
        pool.wait_started(say)
        if len(pool.live) < workers:
            raise SystemExit(f"only {len(pool.live)} of {workers} workers started")
        started = time.perf_counter()
        records = list(cluster_records([(p, opts["method"]) for p in problems], pool, note=say))
        wall = time.perf_counter() - started
    latencies = {r["id"]: latency(r) for r in records if latency(r) is not None}
    return {"workers": workers, "threads": threads, "problems": len(records), "wall_s": round(wall, 2),
            "problems_per_min": round(len(records) / wall * 60, 3),
            "median_latency_s": round(statistics.median(latencies.values()), 2) if latencies else None,
            "errors": sum("error" in r for r in records), "correct": sum(r.get("correct") is True for r in records),
            "latency_s": latencies}


def latency_ratio(run: dict, base: dict) -> float | None:
    """Median over the problems both solved of this run's latency over the base run's."""
    ratios = [run["latency_s"][i] / base["latency_s"][i] for i in run["latency_s"] if base["latency_s"].get(i)]
    return round(statistics.median(ratios), 3) if ratios else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k.jsonl"
    parser.add_argument("data", nargs="?", default=str(beside_repo))
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="Worker counts to compare, comma-separated.")
    parser.add_argument("--threads", type=int, default=1, help="Threads (CPUs) per worker.")
    parser.add_argument("--address", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/scale_ray.json"))
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, flags = parser.parse_args(argv[:cut]), argv[cut + 1:]

    problems = [p for p in read_problems(args.data) if p.error is None][: args.limit]
    opts = search_opts(args.data, flags, args.threads)
    runs = [measure(problems, opts, int(n), args.threads, args.address) for n in args.workers.split(",")]
    for run in runs:
        run["latency_ratio"] = latency_ratio(run, runs[0])
    best = max(runs, key=lambda run: run["problems_per_min"])
    default = default_workers(node_resources(import_ray()), args.threads, 0)

    print(f"{len(problems)} problems, preset {opts['preset']}, method {opts['method']}, "
          f"{args.threads} thread(s) per worker")
    print("| workers | problems/min | median latency (s) | latency ratio vs first | correct | errors |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        print(f"| {run['workers']} | {run['problems_per_min']:.2f} | {run['median_latency_s']} | "
              f"{run['latency_ratio']} | {run['correct']} | {run['errors']} |")
    print(f"most per minute: {best['workers']} worker(s); --workers defaults to {default} here"
          + ("" if best["workers"] == default else " (they differ: see cluster.workers_on)"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"data": args.data, "flags": flags, "runs": runs, "best_workers": best["workers"],
              "default_workers": default}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
