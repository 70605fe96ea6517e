#!/usr/bin/env python3
"""Load and overhead measurements for `specs-local serve` (needs the `server` extra).

    # N concurrent streaming clients, a bounded number of requests, against a running server:
    python scripts/load_server.py load --url http://127.0.0.1:8080 --clients 8 --requests 32
    # The server's added time per request against a sequential in-process Solver loop:
    # same problems, same seeds, the two interleaved; the flags after -- are serve's.
    python scripts/load_server.py overhead --limit 5 -- --preset small

`load` reports requests/s, p50/p95 latency, p50/p95 time to the first step, the 503
count and the errors. `overhead` reports the median latency of each side and their
ratio minus one (the server's overhead as a share of the search time), and the
median of each request's latency minus the search time the server measured. Which
side runs a problem first alternates from one problem to the next.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import openai

DEFAULT_PROBLEMS = [f"What is {a} times {b}?" for a, b in ((12, 7), (6, 9), (13, 4), (8, 8), (25, 3), (11, 11))]


def read_problems(path: str | None, limit: int | None) -> list[str]:
    if path is None:
        problems = DEFAULT_PROBLEMS
    else:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        problems = [json.loads(line)["problem"] if path.endswith(".jsonl") else line for line in lines]
    return (problems * (1 + (limit or 0) // len(problems)))[:limit] if limit else problems


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def load(args) -> dict:
    client = openai.OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key=args.api_key or "none", max_retries=0,
                           timeout=args.timeout)
    model = client.models.list().data[0].id
    problems = read_problems(args.problems, None)
    specs = json.loads(args.specs) if args.specs else None
    latencies, first_steps, errors, rejected = [], [], [], 0
    lock, issued = threading.Lock(), iter(range(args.requests))

    def client_loop():
        nonlocal rejected
        while True:
            with lock:
                index = next(issued, None)
            if index is None:
                return
            t0, first = time.perf_counter(), None
            try:
                stream = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": problems[index % len(problems)]}],
                    stream=True, seed=index, extra_body={"specs": specs} if specs else None)
                for chunk in stream:
                    if first is None and (chunk.model_extra or {}).get("specs", {}).get("step"):
                        first = time.perf_counter() - t0
            except openai.APIStatusError as err:
                with lock:
                    if err.status_code == 503:
                        rejected += 1
                    else:
                        errors.append(f"{err.status_code}: {err.message}")
                continue
            except openai.APIError as err:  # a connection error, or an error event in the stream
                with lock:
                    errors.append(str(err))
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)
                if first is not None:
                    first_steps.append(first)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    return {"clients": args.clients, "requests": args.requests, "completed": len(latencies),
            "rejected_503": rejected, "errors": len(errors), "wall_s": round(wall, 3),
            "requests_per_s": round(len(latencies) / wall, 4),
            "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
            "first_step_p50_s": percentile(first_steps, 50), "first_step_p95_s": percentile(first_steps, 95),
            "error_samples": errors[:5]}


def start_server(flags: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    # No config file on either side: both run on exactly these flags.
    env = {**os.environ, "SPECS_LOCAL_CONFIG": str(log.parent / "no-config.toml")}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "specs_local", "serve", "--port", "0", *flags],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    while not (found := re.search(r"Uvicorn running on (http://\S+:\d+)", log.read_text(errors="replace"))):
        if proc.poll() is not None:
            sys.exit(f"the server did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return proc, found.group(1)


def overhead(args) -> dict:
    from specs_local.cli.serve import load_solver, serve

    # serve's own parser gives the in-process Solver exactly the server's flags.
    opts = serve.make_context("serve", list(args.flags)).params
    problems = read_problems(args.problems, args.limit)
    solver = load_solver({k: v for k, v in opts.items() if k not in ("host", "port", "api_key", "max_queue",
                                                                       "max_n")}, opts["max_n"])
    proc, url = start_server(list(args.flags), Path(args.log or tempfile.mkdtemp()) / "server.log")
    client = openai.OpenAI(base_url=url + "/v1", api_key=opts["api_key"] or "none", max_retries=0,
                           timeout=args.timeout)
    model = client.models.list().data[0].id
    local, remote, inside, went_first, same = [], [], [], [], True
    try:
        def run_local(i, problem):
            t0 = time.perf_counter()
            return solver.solve(problem, seed=i), time.perf_counter() - t0

        def run_remote(i, problem):
            t0 = time.perf_counter()
            response = client.chat.completions.create(model=model, seed=i,
                                                      messages=[{"role": "user", "content": problem}])
            return response, time.perf_counter() - t0

        for i, problem in enumerate(problems[:args.warmup] + problems):  # warm-up runs are not counted
            # The side that goes first alternates, so a drift of the machine within a pair
            # (or a cost of going second) falls on both sides equally.
            first = "in_process" if i % 2 == 0 else "server"
            if first == "in_process":
                result, t_local = run_local(i, problem)
                response, t_remote = run_remote(i, problem)
            else:
                response, t_remote = run_remote(i, problem)
                result, t_local = run_local(i, problem)
            if i < args.warmup:
                continue
            went_first.append(first)
            local.append(t_local)
            remote.append(t_remote)
            inside.append(t_remote - response.model_extra["specs"]["stats"]["wall_seconds"])
            same &= response.choices[0].message.content == result.text
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        solver.close()
    local_median, remote_median = statistics.median(local), statistics.median(remote)
    ratio = remote_median / local_median - 1
    pair_ratio = statistics.median(r / l for r, l in zip(remote, local)) - 1
    return {"problems": len(local), "in_process_median_s": round(local_median, 4),
            "server_median_s": round(remote_median, 4), "overhead_ratio": round(ratio, 4),
            "per_problem_overhead_median": round(pair_ratio, 4),
            "per_problem_s": [[round(l, 4), round(r, 4)] for l, r in zip(local, remote)],
            "per_problem_first": went_first,
            "outside_search_median_s": round(statistics.median(inside), 4), "same_texts": same,
            "budget": args.budget, "within_budget": ratio < args.budget}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p_load = sub.add_parser("load", help="concurrent clients against a running server")
    p_load.add_argument("--url", default="http://127.0.0.1:8080")
    p_load.add_argument("--api-key", default=None)
    p_load.add_argument("--clients", type=int, default=8)
    p_load.add_argument("--requests", type=int, default=32)
    p_load.add_argument("--specs", default=None, help='search parameters as JSON, e.g. \'{"n": 2}\'')
    p_over = sub.add_parser("overhead", help="server vs an in-process Solver loop (same problems and seeds)")
    p_over.add_argument("--limit", type=int, default=5)
    p_over.add_argument("--warmup", type=int, default=1)
    p_over.add_argument("--budget", type=float, default=0.02, help="the overhead ratio to stay under")
    p_over.add_argument("--log", default=None, help="a folder for the server's log (default: a temporary one)")
    p_over.add_argument("flags", nargs=argparse.REMAINDER, help="-- then the serve flags")
    for p in (p_load, p_over):
        p.add_argument("--problems", default=None, help="a .jsonl file with 'problem', or one problem a line")
        p.add_argument("--timeout", type=float, default=3600)
        p.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.mode == "overhead":
        args.flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    report = load(args) if args.mode == "load" else overhead(args)
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
