"""Measure a model's speed on this machine: prefill tokens/s and batched decode
tokens/s, through the engine, and what reading a deep KV cache adds per row.
``specs-local profile`` stores the result for the cost model. Times are those
spent inside llama_decode, as the engine records them in a search."""
from __future__ import annotations

import statistics

from .engine import Model, ModelConfig, Sequence
from .machine import machine_name

SAMPLE_TEXT = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins. "
CHAT_PROMPT = "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n"
DEPTHS = (256, 512, 1024, 2048)  # KV cells a row reads: a GSM8K search reads 100-600, MATH500 up to ~1,500


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


def decode_rate(model: Model, prompt: list[int], batch: int, tokens: list[int]) -> float:
    """Total tokens/s of ``batch`` sequences after ``prompt`` decoding together."""
    head = model.new_sequence(prompt)
    try:
        seconds_per_row, _ = decode_row_seconds_after(model, head, batch, tokens)
    finally:
        model.release(head)
    return 1.0 / seconds_per_row


def decode_row_seconds_after(model: Model, head: Sequence, rows: int, tokens: list[int]) -> tuple[float, float]:
    """Seconds per row, and cells read per row, of ``rows`` forks of ``head``
    decoding together, one of ``tokens`` each per call (fed, not sampled: a
    random-weight model may end its text at once)."""
    kids = model.fork(head, rows)

    def decode_each():
        for token in tokens:
            model.extend([(kid, [token]) for kid in kids], kind="generated")

    seconds, cells = decode_work(model, decode_each)
    model.release_all(kids)
    return seconds / (rows * len(tokens)), cells / (rows * len(tokens))


def prefill_row_seconds_after(model: Model, head: Sequence, tokens: list[int]) -> tuple[float, float]:
    """Seconds per row, and cells read per row, of one prefill of ``tokens`` into a fork of ``head``."""
    [child] = model.fork(head, 1)
    seconds, cells = decode_work(model, lambda: model.extend([(child, tokens)], kind="prompt"))
    model.release(child)
    return seconds / len(tokens), cells / len(tokens)


def depth_costs(model: Model, prompt: list[int], text: list[int], depths=DEPTHS, *, decode_rows: int = 4,
                prefill_rows: int = 128, steps: int = 16, repeats: int = 3) -> tuple[dict, dict]:
    """The extra seconds a decode row and a prefill row pay for the KV cells they read.

    In a unified cache every row reads every live cell, so a row costs more
    the deeper the cache. One head sequence grows from ``prompt`` through each
    depth of ``text``; at each, batched decodes of ``decode_rows`` forks and a
    prefill of ``prefill_rows`` tokens into a fork are timed. Each table maps
    the mean cells a row read to its seconds over the shallow measurement
    (which is in the table at 0 s): the cost model interpolates in between."""
    head = model.new_sequence(prompt)

    def medians() -> tuple[tuple[float, float], tuple[float, float]]:
        decode = [decode_row_seconds_after(model, head, decode_rows, text[:steps]) for _ in range(repeats)]
        prefill = [prefill_row_seconds_after(model, head, text[:prefill_rows]) for _ in range(repeats)]
        return tuple((statistics.median(s for s, _ in runs), statistics.median(c for _, c in runs))
                     for runs in (decode, prefill))

    try:
        (decode_base, decode_cells), (prefill_base, prefill_cells) = medians()
        decode, prefill = {str(round(decode_cells)): 0.0}, {str(round(prefill_cells)): 0.0}
        for depth in depths:
            if depth <= head.length:
                continue
            model.extend([(head, text[head.length - len(prompt):depth - len(prompt)])], kind="prompt")
            (decode_s, decode_cells), (prefill_s, prefill_cells) = medians()
            decode[str(round(decode_cells))] = float(f"{max(decode_s - decode_base, 0.0):.4g}")
            prefill[str(round(prefill_cells))] = float(f"{max(prefill_s - prefill_base, 0.0):.4g}")
    finally:
        model.release(head)
    return decode, prefill


def measure_model(model: Model, batches=(1, 2, 4, 8, 16), *, prefill_sizes=(32, 64, 128, 256, 512),
                  depths=DEPTHS, decode_tokens: int = 32, repeats: int = 3) -> dict:
    """Median prefill rates by batch size and decode rates by batch size at a
    shallow context, and what a decode row and a prefill row pay by depth, of
    one loaded model."""
    text = model.tokenize(SAMPLE_TEXT * (max(max(prefill_sizes), max(depths)) // 16 + 1))
    prompt = model.tokenize(CHAT_PROMPT)
    prefill_rate(model, text[:32])  # warm-up: first decodes allocate
    prefill = {str(n): statistics.median(prefill_rate(model, text[:n]) for _ in range(repeats))
               for n in prefill_sizes}
    decode = {str(b): statistics.median(decode_rate(model, prompt, b, text[:decode_tokens]) for _ in range(repeats))
              for b in batches}
    decode_by_depth, prefill_by_depth = depth_costs(model, prompt, text, depths, repeats=repeats)
    main_size = str(256 if 256 in prefill_sizes else max(prefill_sizes))
    return {"prefill_tps": round(prefill[main_size], 2),
            "prefill_tps_by_batch": {k: round(v, 2) for k, v in prefill.items()},
            "decode_tps": {k: round(v, 2) for k, v in decode.items()},
            "decode_row_seconds_by_depth": decode_by_depth,
            "prefill_row_seconds_by_depth": prefill_by_depth}


def profile_models(paths, *, threads: int | None = None, n_gpu_layers: int = 0, cpu_repack: str = "auto",
                   batches=(1, 2, 4, 8, 16), repeats: int = 3, on_model=None) -> dict:
    """A hardware profile (see costmodel) for each GGUF file, measured one after another."""
    models = {}
    for path in paths:
        model = Model(path, ModelConfig(n_ctx=4096, n_seq_max=max(max(batches), 4) + 2, n_threads=threads,
                                        n_gpu_layers=n_gpu_layers, cpu_repack=cpu_repack))
        try:
            models[model.name] = measure_model(model, batches, repeats=repeats)
        finally:
            model.close()
        if on_model is not None:
            on_model(model.name, models[model.name])
    return {"machine": machine_name(), "threads": threads, "n_gpu_layers": n_gpu_layers, "cpu_repack": cpu_repack,
            "models": models}
