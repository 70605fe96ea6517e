"""The head file: a trained probe's weights, standardiser, calibration and provenance, and the check that
a head is used on the target it was trained for."""
from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HeadMismatchError, SpecsError
from .logistic import sigmoid

FORMAT = "specs-probe-1"
# the scalar a head may read beside the hidden state: the target's mean log-prob
# per token over the solution so far (its steps, not the prompt)
SOLUTION_LOGPROB = "solution_logprob"


def jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return jsonable(x.item())
    return x


@dataclass(eq=False)
class ProbeHead:
    """p(correct | hidden, scalars) =
    sigmoid(calib_a * (((x - mean) / scale) . w + b + scalars . scalar_weights) + calib_c).

    ``scalar_names`` are cheap per-step figures that join the hidden state after
    the fit (a second stage, see ``train_head``); a head without them reads the
    hidden state alone."""

    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: float
    calib_a: float = 1.0
    calib_c: float = 0.0
    feature_names: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    source: str = "(unsaved value head)"  # where it was loaded from, for messages
    scalar_names: list[str] = field(default_factory=list)
    scalar_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_features(self) -> int:
        return len(self.w)

    def decision(self, X, scalars=None) -> np.ndarray:
        """Uncalibrated scores (log-odds under balanced classes); ranks like predict.
        ``scalars``: one row of ``scalar_names`` values per row of X."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[-1] != self.n_features:
            raise SpecsError(f"value head {self.source} expects {self.n_features} features, got {X.shape[-1]}")
        z = ((X - self.mean) / self.scale) @ self.w + self.b
        if self.scalar_names:
            if scalars is None:
                raise SpecsError(f"value head {self.source} also reads {', '.join(self.scalar_names)}")
            z = z + np.asarray(scalars, dtype=np.float64).reshape(len(z), -1) @ self.scalar_weights
        return z

    def predict(self, X, scalars=None) -> np.ndarray:
        return sigmoid(self.calib_a * self.decision(np.atleast_2d(X), scalars) + self.calib_c)

    def __call__(self, x, scalars=None) -> float:
        x = np.asarray(x).reshape(-1)
        return float(self.predict(x[None, :], None if scalars is None else np.atleast_2d(scalars))[0])

    def save(self, path) -> Path:
        """One .npz: arrays plus a JSON string (feature names, provenance); written atomically."""
        path = Path(path)
        try:
            meta = json.dumps({"format": FORMAT, "feature_names": list(self.feature_names),
                               "scalar_names": list(self.scalar_names),
                               "provenance": jsonable(self.provenance)}, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise SpecsError(f"value head provenance is not JSON-able: {e}") from None
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, mean=np.asarray(self.mean, np.float64), scale=np.asarray(self.scale, np.float64),
                     w=np.asarray(self.w, np.float64),
                     params=np.array([self.b, self.calib_a, self.calib_c], np.float64),
                     scalar_weights=np.asarray(self.scalar_weights, np.float64), meta=np.array(meta))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "ProbeHead":
        path = Path(path)
        if not path.is_file():
            raise SpecsError(f"value head not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"][()]))
                arrays = {k: np.asarray(data[k], np.float64) for k in ("mean", "scale", "w", "params")}
                # heads written before scalar features existed have none
                scalar_weights = np.asarray(data["scalar_weights"], np.float64) if "scalar_weights" in data \
                    else np.zeros(0)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise SpecsError(f"value head {path} is not a probe head file ({type(e).__name__})") from None
        d = arrays["w"].shape
        scalar_names = meta.get("scalar_names", []) if isinstance(meta, dict) else None
        if (not isinstance(meta, dict) or meta.get("format") != FORMAT or len(d) != 1
                or arrays["mean"].shape != d or arrays["scale"].shape != d or arrays["params"].shape != (3,)
                or len(meta.get("feature_names", [])) not in (0, d[0])
                or not isinstance(scalar_names, list) or scalar_weights.shape != (len(scalar_names),)):
            raise SpecsError(f"value head {path} is corrupt (format or array shapes do not match)")
        b, a, c = (float(v) for v in arrays["params"])
        return cls(arrays["mean"], arrays["scale"], arrays["w"], b, a, c,
                   list(meta.get("feature_names", [])), dict(meta.get("provenance") or {}), str(path),
                   [str(n) for n in scalar_names], scalar_weights)

    @property
    def capture(self) -> tuple[str, ...]:
        """The target nodes this head reads, so the target is loaded to capture them."""
        return tuple(self.provenance.get("capture") or ())

    def require(self, key: str, value, what: str = "target") -> None:
        """Raise a one-line SpecsError unless provenance[key] == value."""
        if key not in self.provenance:
            raise SpecsError(f"value head {self.source} records no {key}; cannot check it matches the {what}")
        have = self.provenance[key]
        if have != value:
            raise HeadMismatchError(f"value head {self.source} was trained for a different {what} ({key} {have} != {value})")


def check_provenance(head: ProbeHead, what: str = "target", **expected) -> None:
    """head.require(key, value, what) for each keyword."""
    for key, value in expected.items():
        head.require(key, value, what)
