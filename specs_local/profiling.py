"""Measure a model's speed on this machine: prefill tokens/s and batched decode
tokens/s, through the engine. ``specs-local profile`` stores the result for
the cost model; ``scripts/bench_engine.py`` sets it beside a bare ctypes loop."""
from __future__ import annotations

import platform
import statistics
import time

import numpy as np

from .engine import Model, ModelConfig
from .sampling import SamplerParams

SAMPLE_TEXT = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins. "
CHAT_PROMPT = "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n"


def prefill_rate(model: Model, tokens: list[int]) -> float:
    """Tokens/s evaluating ``tokens`` into a new sequence."""
    t0 = time.perf_counter()
    seq = model.new_sequence(tokens)
    elapsed = time.perf_counter() - t0
    model.release(seq)
    return len(tokens) / elapsed


def decode_rate(model: Model, prompt: list[int], batch: int, steps: int) -> float:
    """Total tokens/s of ``batch`` sequences generating together (greedy, no stop)."""
    head = model.new_sequence(prompt)
    kids = model.fork(head, batch)
    t0 = time.perf_counter()
    gens = model.generate(kids, SamplerParams(temperature=0.0), np.random.default_rng(0), max_tokens=steps + 1,
                          stop_at_delimiter=False)
    elapsed = time.perf_counter() - t0
    model.release_all(kids + [head])
    fed = sum(len(g.tokens) - 1 for g in gens)  # each first token comes from the prompt's logits
    return fed / elapsed


def measure_model(model: Model, batches=(1, 2, 4, 8, 16), *, prefill_tokens: int = 256, decode_tokens: int = 32,
                  repeats: int = 3) -> dict:
    """Median prefill and decode rates of one loaded model."""
    long_prompt = model.tokenize(SAMPLE_TEXT * (prefill_tokens // 16 + 1))[:prefill_tokens]
    prompt = model.tokenize(CHAT_PROMPT)
    prefill_rate(model, long_prompt[:32])  # warm-up: first decodes allocate
    prefill = statistics.median(prefill_rate(model, long_prompt) for _ in range(repeats))
    decode = {str(b): statistics.median(decode_rate(model, prompt, b, decode_tokens) for _ in range(repeats))
              for b in batches}
    return {"prefill_tps": round(prefill, 2), "decode_tps": {k: round(v, 2) for k, v in decode.items()}}


def machine_name() -> str:
    import os

    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cores"


def profile_models(paths, *, threads: int | None = None, n_gpu_layers: int = 0, batches=(1, 2, 4, 8, 16),
                   repeats: int = 3, on_model=None) -> dict:
    """A hardware profile (see costmodel) for each GGUF file, measured one after another."""
    models = {}
    for path in paths:
        model = Model(path, ModelConfig(n_ctx=4096, n_seq_max=max(batches) + 2, n_threads=threads,
                                        n_gpu_layers=n_gpu_layers))
        try:
            models[model.name] = measure_model(model, batches, repeats=repeats)
        finally:
            model.close()
        if on_model is not None:
            on_model(model.name, models[model.name])
    return {"machine": machine_name(), "threads": threads, "n_gpu_layers": n_gpu_layers, "models": models}
