#!/usr/bin/env bash
# The runs behind docs/results/, one after another (two llama.cpp workloads at
# once collapse on a 2-core CPU). Each step resumes or is cheap to redo.
#   bash scripts/publish_results.sh [MATH500_LIMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
data=../shared/data
out=docs/results
mkdir -p "$out"
math_limit=${1:-20}

# 1. this machine's profile of the small preset (the cost model's input)
specs-local profile --preset small --repeats 2 --out "$out/profile-cpu.json" | tee "$out/profile-cpu.txt"

# 2. the engine table (engine against a bare ctypes loop)
python scripts/bench_engine.py --repeats 1 | tee "$out/engine.md"

# 3. reward quality on labelled step pairs
specs-local eval-reward --limit 30 --kinds calculator,self,verifier,calculator+self \
    --out "$out/reward-quality.md"

# 4. GSM8K, first 20 problems: specs, beam-target, greedy-target at n = 4
specs-local bench "$data/gsm8k.jsonl" --limit 20 --n 4 --seed 0 \
    --methods specs,beam-target,greedy-target,greedy-draft --out "$out/gsm8k-20" --no-progress

# 5. MATH500, first problems: specs and beam-target
specs-local bench "$data/math500.jsonl" --limit "$math_limit" --n 4 --seed 0 \
    --methods specs,beam-target --out "$out/math500-$math_limit" --no-progress

# 6. the cost model's validation: reruns whose records carry decode shapes and KV cells read
specs-local bench "$data/gsm8k.jsonl" --limit 3 --n 4 --seed 0 --trace \
    --methods specs,beam-target --out "$out/gsm8k-3-costmodel" --no-progress
specs-local bench "$data/math500.jsonl" --limit 2 --n 4 --seed 0 --trace \
    --methods specs,beam-target --out "$out/math500-2-costmodel" --no-progress
