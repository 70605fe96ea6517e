#!/usr/bin/env python3
"""Time probe.train_head at hidden-state sizes (rows x features), median of repeats.

    python scripts/bench_probe_training.py --sizes 5000x1536,20000x1536 --repeats 3

Random features with a weak linear signal; prints seconds and the CV pairwise
accuracy. Run it on an otherwise idle machine (BLAS threads compete badly)."""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from specs_local.probe import train_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000x1536,20000x1536")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for size in args.sizes.split(","):
        n, d = (int(x) for x in size.split("x"))
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, d)).astype(np.float32)
        y = (X @ (rng.standard_normal(d) / np.sqrt(d)) + rng.standard_normal(n) > 0.8).astype(int)
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _, report = train_head(X, y, np.arange(n) // 8, feature_names=[f"h{i}" for i in range(d)])
            seconds.append(time.perf_counter() - t0)
        print(f"{n}x{d}: median {statistics.median(seconds):.1f} s over {args.repeats} "
              f"(cv pairwise {report['cv_pairwise_accuracy']:.3f}, l2 {report['l2']})")


if __name__ == "__main__":
    main()
