#!/usr/bin/env python3
"""Measure the engine on real GGUF models and compare it with a plain ctypes loop.

For each model it prints prefill tokens/s, batched decode tokens/s (total over
the batch) for 1, 2, 4 and 8 sequences, both through the engine and through a
bare llama_decode loop in the same process (so the ratio is measured in one
run), and the Python share of wall time for a 4-sequence, 5-step generation.

    python scripts/bench_engine.py                # the small preset's pair
    python scripts/bench_engine.py a.gguf b.gguf  # any files
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import llama_cpp as llama
from specs_local.engine import Model, ModelConfig
from specs_local.machine import machine_name
from specs_local.profiling import CHAT_PROMPT, SAMPLE_TEXT, prefill_rate
from specs_local.sampling import SamplerParams

BATCHES = (1, 2, 4, 8)
DECODE_TOKENS = 32
PREFILL_TOKENS = 256


def raw_decode_rate(model: Model, prompt: list[int], k: int, steps: int) -> float:
    """Tokens/s of a bare loop: one llama_batch of k rows per step, argmax on the C logits."""
    ctx, batch = model._ctx, model._decoder._batch
    mem = llama.llama_get_memory(ctx)
    for s in range(k):
        llama.llama_memory_seq_rm(mem, s, -1, -1)
    # prefill once into seq 0 and copy to the others
    batch.n_tokens = len(prompt)
    for i, t in enumerate(prompt):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, i, 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = i == len(prompt) - 1
    llama.llama_decode(ctx, batch)
    for s in range(1, k):
        llama.llama_memory_seq_cp(mem, 0, s, -1, -1)
    n_vocab = model.n_vocab
    last = np.ctypeslib.as_array(llama.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
    tokens = [int(np.argmax(last))] * k
    pos = len(prompt)
    t0 = time.perf_counter()
    for _ in range(steps):
        batch.n_tokens = k
        for s in range(k):
            batch.token[s], batch.pos[s], batch.n_seq_id[s] = tokens[s], pos, 1
            batch.seq_id[s][0] = s
            batch.logits[s] = 1
        llama.llama_decode(ctx, batch)
        rows = np.ctypeslib.as_array(llama.llama_get_logits(ctx), shape=(k, n_vocab))
        tokens = [int(t) for t in np.argmax(rows, axis=1)]
        pos += 1
    elapsed = time.perf_counter() - t0
    for s in range(k):
        llama.llama_memory_seq_rm(mem, s, -1, -1)
    return k * steps / elapsed


def engine_decode_rate(model: Model, prompt: list[int], batch: int, steps: int) -> float:
    """Total tokens/s of ``batch`` sequences generating through the engine (greedy, no stop):
    sampling and bookkeeping included, as a search pays them."""
    head = model.new_sequence(prompt)
    kids = model.fork(head, batch)
    t0 = time.perf_counter()
    gens = model.generate(kids, SamplerParams(temperature=0.0), np.random.default_rng(0), max_tokens=steps + 1,
                          stop_at_delimiter=False)
    elapsed = time.perf_counter() - t0
    model.release_all(kids + [head])
    fed = sum(len(g.tokens) - 1 for g in gens)  # each first token comes from the prompt's logits
    return fed / elapsed


def python_share(model: Model, prompt: list[int]) -> tuple[float, float]:
    """Wall time and the share outside llama_decode for 4 sequences x 5 steps."""
    head = model.new_sequence(prompt)
    rng = np.random.default_rng(1)
    model.usage.decode_seconds = 0.0
    t0 = time.perf_counter()
    seqs = model.fork(head, 4)
    for _ in range(5):
        model.generate(seqs, SamplerParams(temperature=0.7), rng, max_tokens=48)
        model.flush(seqs)
    wall = time.perf_counter() - t0
    share = (wall - model.usage.decode_seconds) / wall
    model.release_all(seqs + [head])
    return wall, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="GGUF files (default: the small preset's draft and target)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    paths = args.models
    if not paths:
        from specs_local.presets import resolve

        paths = [resolve(role, role=role, progress=True) for role in ("draft", "target")]
    print(f"machine: {machine_name()}, llama-cpp-python {llama.__version__}")
    header = "| model | prefill tok/s | " + " | ".join(f"batch {k}: engine / raw (ratio)" for k in BATCHES) + " | python share |"
    print(header)
    print("|" + "---|" * (3 + len(BATCHES)))
    for path in paths:
        model = Model(path, ModelConfig(n_ctx=4096, n_seq_max=16, n_threads=args.threads))
        long_prompt = model.tokenize(SAMPLE_TEXT * 40)[:PREFILL_TOKENS]
        prompt = model.tokenize(CHAT_PROMPT)
        prefill_rate(model, long_prompt[:32])  # warm-up
        prefill = statistics.median(prefill_rate(model, long_prompt) for _ in range(args.repeats))
        cells = []
        for k in BATCHES:
            engine, raw = [], []
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                raw.append(raw_decode_rate(model, prompt, k, DECODE_TOKENS))
                engine.append(engine_decode_rate(model, prompt, k, DECODE_TOKENS))
            e, r = statistics.median(engine), statistics.median(raw)
            cells.append(f"{e:.1f} / {r:.1f} ({e / r:.0%})")
        shares = [python_share(model, prompt)[1] for _ in range(args.repeats)]
        print(f"| {path.name if hasattr(path, 'name') else path} | {prefill:.1f} | " + " | ".join(cells)
              + f" | {statistics.median(shares):.1%} |", flush=True)
        model.close()


if __name__ == "__main__":
    main()
