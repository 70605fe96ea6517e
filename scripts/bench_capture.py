#!/usr/bin/env python3
"""What reading hidden states costs a scoring prefill: plain, with captured
layers (the probe's way, capture.py), and in embeddings mode (every row's
final hidden state, as value-head PRMs are read).

    python scripts/bench_capture.py [--model target.gguf] [--candidates 4] [--tokens 48] [--repeats 7]

One model file, three contexts opened one after another; each scores the same
candidates after the same prompt, several times. Prints the median seconds per
scoring call and the ratio to plain. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

from specs_local.chat import solution_prompt
from specs_local.engine.capture import FINAL_NORM, layer_output
from specs_local.engine import Model, ModelConfig


def median_score_seconds(model: Model, candidates: list[list[int]], repeats: int) -> float:
    prompt = model.new_sequence(model.tokenize(solution_prompt(model, "What is 12 times 7?"), add_special=True))
    seconds = []
    for _ in range(repeats + 1):  # the first call warms up
        t0 = time.perf_counter()
        kids, _ = model.score(prompt, candidates)
        seconds.append(time.perf_counter() - t0)
        model.release_all(kids)
    model.release(prompt)
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: the small preset's target)")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.model is None:
        from specs_local.presets import resolve

        args.model = resolve("target", role="target", preset="small")
    text = "First, we multiply 12 by 7 to get 84, since 12 times 7 is 84. " * 8
    results = {}
    for label, extra in (("plain", {}), ("capture", None), ("embeddings", {"embeddings": True})):
        config = dict(n_ctx=2048, n_seq_max=args.candidates + 2, n_threads=args.threads)
        if extra is None:
            probe = Model(args.model, ModelConfig(**config))
            n_layer = probe.n_layer
            probe.close()
            extra = {"capture": (layer_output(n_layer // 2), layer_output(2 * n_layer // 3), FINAL_NORM)}
        model = Model(args.model, ModelConfig(**config, **extra))
        tokens = model.tokenize(text)[: args.tokens]
        candidates = [tokens[i:] + tokens[:i] for i in range(args.candidates)]  # same length, different text
        results[label] = median_score_seconds(model, candidates, args.repeats)
        model.close()
        print(f"{label:<10} {results[label] * 1000:8.1f} ms per scoring call "
              f"({args.candidates} x {args.tokens} tokens), {results[label] / results['plain']:.3f} of plain",
              flush=True)


if __name__ == "__main__":
    main()
