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


def decode_work(model: Model, action) -> tuple[float, int]:
    """Seconds inside llama_decode and KV cells attended while ``action()`` runs."""
    seconds, cells = model.usage.decode_seconds, model.usage.attended_cells
    action()
    return model.usage.decode_seconds - seconds, model.usage.attended_cells - cells


def prefill_rate(model: Model, tokens: list[int]) -> float:
    """Tokens/s evaluating ``tokens`` into a new sequence."""
    seqs = []
    seconds, _ = decode_work(model, lambda: seqs.append(model.new_sequence(tokens)))
    model.release_all(seqs)
    return len(tokens) / seconds


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


def attention_cost(model: Model, shallow: list[int], deep: list[int], batch: int = 4, steps: int = 32) -> float:
    """Seconds per KV cell a decode row reads: the same batched decode after a
    deep prefix and after a shallow one, the extra time over the extra cells."""
    def generation_after(prefix: list[int]) -> tuple[float, int]:
        head = model.new_sequence(prefix)
        kids = model.fork(head, batch)
        work = decode_work(model, lambda: model.generate(kids, SamplerParams(temperature=0.0),
                                                         np.random.default_rng(0), max_tokens=steps + 1,
                                                         stop_at_delimiter=False))
        model.release_all(kids + [head])
        return work

    (near_s, near_cells), (far_s, far_cells) = generation_after(shallow), generation_after(deep)
    return max(far_s - near_s, 0.0) / max(far_cells - near_cells, 1)


def measure_model(model: Model, batches=(1, 2, 4, 8, 16), *, prefill_sizes=(32, 64, 128, 256, 512),
                  decode_tokens: int = 32, deep_tokens: int = 1024, repeats: int = 3) -> dict:
    """Median prefill rates by batch size, decode rates by batch size, and
    the attention cost per KV cell, of one loaded model."""
    text = model.tokenize(SAMPLE_TEXT * (max(max(prefill_sizes), deep_tokens) // 16 + 1))
    prompt = model.tokenize(CHAT_PROMPT)
    prefill_rate(model, text[:32])  # warm-up: first decodes allocate
    attention = statistics.median(attention_cost(model, prompt, text[:deep_tokens], steps=decode_tokens)
                                  for _ in range(repeats))
    prefill = {str(n): statistics.median(prefill_rate(model, text[:n]) for _ in range(repeats))
               for n in prefill_sizes}
    decode = {str(b): statistics.median(decode_rate(model, prompt, b, decode_tokens) for _ in range(repeats))
              for b in batches}
    main_size = str(256 if 256 in prefill_sizes else max(prefill_sizes))
    return {"prefill_tps": round(prefill[main_size], 2),
            "prefill_tps_by_batch": {k: round(v, 2) for k, v in prefill.items()},
            "decode_tps": {k: round(v, 2) for k, v in decode.items()},
            "attention_seconds_per_cell": float(f"{attention:.4g}")}


def machine_name() -> str:
    import os

    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cores"


def profile_models(paths, *, threads: int | None = None, n_gpu_layers: int = 0, batches=(1, 2, 4, 8, 16),
                   repeats: int = 3, on_model=None) -> dict:
    """A hardware profile (see costmodel) for each GGUF file, measured one after another."""
    models = {}
    for path in paths:
        model = Model(path, ModelConfig(n_ctx=4096, n_seq_max=max(max(batches), 4) + 2, n_threads=threads,
                                        n_gpu_layers=n_gpu_layers))
        try:
            models[model.name] = measure_model(model, batches, repeats=repeats)
        finally:
            model.close()
        if on_model is not None:
            on_model(model.name, models[model.name])
    return {"machine": machine_name(), "threads": threads, "n_gpu_layers": n_gpu_layers, "models": models}
