"""The probe reward: a value head trained on the target's own hidden states, and its head
file, loaded and checked against the target it reads."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from ..engine import Model, Sequence
from ..errors import SpecsError
from ..presets import known_sha256
from ..probe import SOLUTION_LOGPROB, ProbeHead
from .prompted import Layout, PromptedReward


class ProbeReward(PromptedReward):
    """An outcome-supervised value head (a "probe") on the target's own hidden
    state at the candidate's last token, read from the decode that evaluated
    the candidate: the target's scoring prefill of a draft step, or the decode
    that feeds a target step's last token (which the next step feeds anyway).
    With the target's forks as contexts it runs no decode of its own."""

    def __init__(self, target: Model, head, *, name: str = "probe"):
        self.head = head
        super().__init__(target, good=" ", bad=" ", layout=Layout(), name=name, self_verify=True)

    def identity(self) -> dict:
        return {**super().identity(), "head": head_identity(self.head)}

    @property
    def scores_tokens(self) -> bool:
        return bool(self.head.scalar_names)  # the solution's log-prob is read from the tokens' scores

    def _read(self, seqs: list[Sequence]) -> np.ndarray:
        if any(s.hidden is None for s in seqs):
            raise SpecsError(f"{self.model.name}: load the target with the probe's capture (ModelConfig.capture)")
        names = self.head.scalar_names
        scalars = np.array([[_sequence_scalar(s, name) for name in names] for s in seqs]) if names else None
        return self.head.predict(np.stack([s.hidden for s in seqs]), scalars)


def _sequence_scalar(seq: Sequence, name: str) -> float:
    """A head's scalar feature, read from what the target computed for the sequence."""
    if name != SOLUTION_LOGPROB:
        raise SpecsError(f"value head reads {name!r}, which this version cannot compute")
    value = seq.mean_logprob
    return 0.0 if math.isnan(value) else value  # no scored token yet: as the collection counts it


def probe_head(head: str | Path | ProbeHead) -> ProbeHead:
    """A probe head, loaded from its file unless it already is one: callers that need
    its captured nodes before loading the target read the file once and pass the head on."""
    return head if isinstance(head, ProbeHead) else ProbeHead.load(head)


def load_probe_head(head: str | Path | ProbeHead, target: Model) -> ProbeHead:
    """A probe head checked against the target it will read: same vocabulary and
    the same hidden-state layout (the target must capture the head's nodes)."""
    head = probe_head(head)
    head.require("target_vocab", target.vocab_fingerprint)
    head.require("target_sha256", known_sha256(target.path))
    head.require("capture", list(target.config.capture), what="target's captured layers")
    return head


def head_identity(head: ProbeHead) -> str:
    """A head's file and the start of its sha256: which head made a record."""
    path = Path(head.source)
    if not path.is_file():
        return head.source
    return f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
