#!/usr/bin/env python3
"""How fast each CPU weight layout (``--cpu-repack``) runs the small preset on this CPU.

Two measurements, the layouts interleaved and their order rotated from round to round, so
that drift on a shared machine hits them alike:

1. per model (draft and target): prefill tokens/s at 64 and 256 rows, and decode tokens/s
   of 1 and 4 sequences together, through the engine (seconds inside llama_decode);
2. end to end: the wall seconds of ``greedy-target`` and ``specs`` on gsm8k-train problems,
   each problem run under every layout; the median per-problem ratio against the first
   layout is what decides ``auto`` (docs/results/cpu-repack/RULE.md).

A layout that would use AMX is measured only with ``--allow-amx`` (it segfaults on most
cloud VMs). Writes a JSON file of every figure with ``--out``.

    python scripts/bench_cpu_repack.py --modes off,no-amx --rounds 3 --problems 6 --out result.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specs_local.problems import read_problems  # noqa: E402
from specs_local.engine import Model, ModelConfig  # noqa: E402
from specs_local.engine.repack import MODES, extra_buffer_types, plan_for  # noqa: E402
from specs_local.machine import cpu_flags, cpu_model, machine_name  # noqa: E402
from specs_local.profiling import CHAT_PROMPT, SAMPLE_TEXT, decode_rate, prefill_rate  # noqa: E402
from specs_local.report import git_revision  # noqa: E402

PREFILL_ROWS = (64, 256)
DECODE_BATCHES = (1, 4)
METHODS = ("greedy-target", "specs")


def rotated(items: list[str], shift: int) -> list[str]:
    shift %= len(items)
    return items[shift:] + items[:shift]


def model_figures(path: Path, mode: str, threads: int | None) -> dict:
    """Prefill and decode rates of one model loaded with one layout, with the buffers it made."""
    model = Model(path, ModelConfig(n_ctx=2048, n_seq_max=8, n_threads=threads, cpu_repack=mode))
    try:
        text = model.tokenize(SAMPLE_TEXT * 20)
        prompt = model.tokenize(CHAT_PROMPT)
        prefill_rate(model, text[:32])  # warm-up: the first decodes allocate
        figures = {f"prefill_{n}": prefill_rate(model, text[:n]) for n in PREFILL_ROWS}
        figures |= {f"decode_{b}": decode_rate(model, prompt, b, text[:32]) for b in DECODE_BATCHES}
        return {"figures": figures, "weight_buffers": model.weight_buffers}
    finally:
        model.close()


def solve_seconds(problems, mode: str, threads: int | None) -> dict[str, list[float]]:
    """Wall seconds of each method on each problem, the models loaded once with ``mode``."""
    from specs_local.solver import EngineOptions, Solver

    solver = Solver.from_preset("small", engine=EngineOptions(threads=threads, ctx=4096, cpu_repack=mode))
    try:
        seconds = {}
        for method in METHODS:
            for problem in problems:
                started = time.perf_counter()
                solver.solve(problem.text, method=method, seed=0)
                seconds.setdefault(method, []).append(time.perf_counter() - started)
        return seconds
    finally:
        solver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="off,no-amx", help="layouts, comma-separated; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the per-model figures (medians reported)")
    parser.add_argument("--problems", type=int, default=6, help="gsm8k-train problems for the end-to-end check")
    parser.add_argument("--offset", type=int, default=4100, help="first gsm8k-train problem (0-based)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gsm8k-train.jsonl"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--allow-amx", action="store_true", help="also run layouts that would use AMX")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from specs_local.presets import resolve

    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            parser.error(f"unknown layout {mode!r}: one of {', '.join(MODES)}")
        if "AMX" in plan_for(mode).layouts and not args.allow_amx:
            parser.error(f"--cpu-repack {mode} would use AMX here (it segfaults on most cloud VMs); --allow-amx runs it")
    paths = {role: resolve(role, role=role, progress=False) for role in ("draft", "target")}
    cpu = cpu_model()
    started = datetime.now(timezone.utc)
    result = {"machine": machine_name(), "cpu": cpu, "amx_flags": sorted(cpu_flags() & {"amx_int8", "amx_tile"}),
              "extra_buffer_types": list(extra_buffer_types() or ()), "revision": git_revision(),
              "started": started.isoformat(timespec="seconds"), "threads": args.threads,
              "plans": {mode: plan_for(mode).describe() for mode in modes}, "models": {}, "solve": {}}

    for r in range(args.rounds):
        for mode in rotated(modes, r):
            for role, path in paths.items():
                got = model_figures(path, mode, args.threads)
                entry = result["models"].setdefault(role, {}).setdefault(mode, {"weight_buffers": got["weight_buffers"]})
                for key, value in got["figures"].items():
                    entry.setdefault(key, []).append(round(value, 2))
                print(f"round {r} {role:<6} {mode:<7} " + " ".join(f"{k} {v:.1f}" for k, v in got["figures"].items()),
                      flush=True)

    problems = read_problems(args.data)[args.offset:args.offset + args.problems]
    result["solve_problems"] = [p.id for p in problems]
    for i, problem in enumerate(problems):  # every layout on each problem before the next, order rotated
        for mode in rotated(modes, i):
            for method, seconds in solve_seconds([problem], mode, args.threads).items():
                result["solve"].setdefault(mode, {}).setdefault(method, []).append(round(seconds[0], 2))
                print(f"problem {problem.id} {mode:<7} {method:<13} {seconds[0]:.1f} s", flush=True)

    base = modes[0]
    summary = {}
    for role, by_mode in result["models"].items():
        for mode, entry in by_mode.items():
            for key, values in entry.items():
                if key != "weight_buffers":
                    summary.setdefault(role, {}).setdefault(key, {})[mode] = statistics.median(values)
    result["median"] = summary
    ratios = {}
    for mode in modes[1:]:
        per_problem = [a / b for method in METHODS
                       for a, b in zip(result["solve"][mode][method], result["solve"][base][method])]
        ratios[mode] = {"all": statistics.median(per_problem)} | {
            method: statistics.median(a / b for a, b in zip(result["solve"][mode][method], result["solve"][base][method]))
            for method in METHODS}
    result["solve_ratio_vs_" + base] = ratios
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(json.dumps({"median": summary, "solve_ratio_vs_" + base: ratios}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
