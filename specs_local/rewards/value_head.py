"""A PRM's value head: a small network on the backbone's last hidden state, run in numpy."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import Model, Sequence
from ..errors import SpecsError
from ..sampling import softmax
from .prompted import Layout, PromptedReward


class ValueHeadReward(PromptedReward):
    """A PRM with a value head on the backbone's last hidden state.

    Skywork-o1-Open-PRM: a scalar head, sigmoid, at the step end.
    Qwen2.5-Math-PRM: a 2-class head (Linear-ReLU-Linear) at ``<extra_0>``,
    reward = softmax(...)[1]. The head runs in numpy."""

    def __init__(self, model: Model, head: "ValueHead", *, layout: Layout, name: str = "value-prm", **kw):
        self.head = head
        super().__init__(model, good=" ", bad=" ", layout=layout, name=name, **kw)

    def _read(self, seqs: list[Sequence]) -> np.ndarray:
        if any(s.hidden is None for s in seqs):
            raise SpecsError(f"{self.model.name}: load the PRM backbone with embeddings=True")
        return np.array([self.head(s.hidden) for s in seqs])


@dataclass
class ValueHead:
    """Layers as (weight, bias) pairs applied with ReLU between them."""

    layers: list[tuple[np.ndarray, np.ndarray | None]]
    kind: str = "sigmoid"  # "sigmoid": one output; "softmax": class 1 of two

    def __call__(self, hidden: np.ndarray) -> float:
        x = np.asarray(hidden, dtype=np.float64)
        for i, (w, b) in enumerate(self.layers):
            x = w @ x + (b if b is not None else 0.0)
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        if self.kind == "sigmoid":
            return float(1.0 / (1.0 + np.exp(-x.reshape(-1)[0])))
        return float(softmax(x)[1])

    @classmethod
    def load(cls, path: str | Path) -> "ValueHead":
        """From a .npz written by scripts/convert_value_head.py (w0, b0, w1, b1, ..., kind)."""
        path = Path(path)
        if not path.exists():
            raise SpecsError(f"value head not found: {path} (convert one with scripts/convert_value_head.py)")
        data = np.load(path, allow_pickle=False)
        layers = []
        i = 0
        while f"w{i}" in data:
            layers.append((data[f"w{i}"], data[f"b{i}"] if f"b{i}" in data else None))
            i += 1
        if not layers:
            raise SpecsError(f"{path} holds no value-head layers (w0, b0, ...)")
        kind = str(data["kind"]) if "kind" in data else "sigmoid"
        return cls(layers, kind)
