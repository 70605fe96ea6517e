"""A collection read back for training (``value train``, ``value eval``, the
scripts): every step row of a ``value collect`` or ``replay`` output, with its
label, problem, solution and the figures recorded beside it.

Reading needs no model, so this module never imports the engine: fitting a head
does not load llama.cpp. collect.py writes what this reads.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SpecsError
from .output_log import read_log
from .probe import SOLUTION_LOGPROB


@dataclass(frozen=True)
class Collection:
    """A collection loaded for training: one row per step."""

    features: np.ndarray  # (steps, width) float32
    labels: np.ndarray  # 1: the step's solution ends correct
    groups: np.ndarray  # problem id of each row
    solutions: np.ndarray  # index of the row's solution, unique across the collection
    step_index: np.ndarray
    source: np.ndarray  # "target" | "draft"
    meta: dict
    mc: np.ndarray | None = None  # Monte Carlo value of the step (nan: none)
    prefix: np.ndarray | None = None  # the text before the step: rows with one prefix are candidates at one branch point
    scalars: dict[str, np.ndarray] = field(default_factory=dict)  # per-row figures a head may read beside the hidden state

    def scalar_matrix(self, names: list[str]) -> np.ndarray | None:
        """The named scalars side by side (rows x names); None for none."""
        missing = [n for n in names if n not in self.scalars]
        if missing:
            raise SpecsError(f"the collection records no {missing[0]}")
        return np.stack([self.scalars[n] for n in names], 1) if names else None


def output_paths(out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    return out.with_suffix(".features.f16"), out.with_suffix(".meta.json")


def load_collection(out: Path) -> Collection:
    """Every step row of a collection, with its label and problem."""
    features_path, meta_path = output_paths(out)
    if not meta_path.exists() or not features_path.exists():
        raise SpecsError(f"{out} is not a collection (no {meta_path.name} or {features_path.name} beside it)")
    meta = json.loads(meta_path.read_text())
    records = list(read_log(out).values())  # read-only: a collection still being written can be trained on
    width = meta["width"]
    raw = np.fromfile(features_path, dtype=np.float16)
    matrix = raw[: len(raw) // width * width].reshape(-1, width)
    rows, labels, groups, solutions, steps, sources, mc, prefixes = [], [], [], [], [], [], [], []
    solution_logprob = []  # the target's mean log-prob per token over the solution up to each step
    step_logprob = {"target_logprob": [], "policy_logprob": []}  # each step's own mean log-prob, by model
    solution_id = 0
    for record in records:
        at = record["features"]["offset"]
        for sol in record["solutions"]:
            before = hashlib.sha256(record["id"].encode())
            logprob_sum, tokens = 0.0, 0
            for index, step in enumerate(sol["steps"]):
                logprob_sum += step["target_logprob"] * step["tokens"]
                tokens += step["tokens"]
                solution_logprob.append(logprob_sum / tokens if tokens else 0.0)
                for key, values in step_logprob.items():
                    values.append(step[key])
                rows.append(at)
                labels.append(1 if sol["correct"] else 0)
                groups.append(record["id"])
                solutions.append(solution_id)
                steps.append(index)
                sources.append(sol["source"])
                mc.append(step.get("mc", np.nan))
                prefixes.append(before.hexdigest()[:16])
                before.update(b"\0" + step["text"].encode())
                at += 1
            solution_id += 1
    if rows and max(rows) >= len(matrix):
        raise SpecsError(f"{features_path} is shorter than its records say")
    return Collection(matrix[rows].astype(np.float32), np.array(labels), np.array(groups), np.array(solutions),
                      np.array(steps), np.array(sources), meta, np.array(mc, dtype=np.float64), np.array(prefixes),
                      {SOLUTION_LOGPROB: np.array(solution_logprob, dtype=np.float64),
                       **{key: np.array(values, dtype=np.float64) for key, values in step_logprob.items()}})
