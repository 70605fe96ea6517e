"""How many sequences each model is loaded with, from the workload it will run.

A llama.cpp context holds a fixed number of sequences (``n_seq_max``): one for
each head, candidate or cached prefix alive at the same time, and a fork past
them fails. So every loader asks here, naming what its models will do, and the
count travels with the workload it was sized for: the error when sequences run
out names it (``ModelConfig.workload``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .search import SearchConfig


@dataclass(frozen=True)
class Slots:
    """The sequences one model is loaded with, and the workload they were sized for."""

    count: int
    workload: str


def sequences_needed(config: SearchConfig) -> int:
    """Sequences per model for a search (Solver, server): per SPECS chain a head and n
    candidates (beam search: n in all, beside the at most n / beam_width prefixes it
    keeps), n more for the reward's cache of scored prefixes (it frees its least
    recently used ones when forks need room), and 4 spare; at least 8."""
    return max(8, config.k * (config.n + 1) + config.n + 4)


def search_slots(config: SearchConfig) -> Slots:
    return Slots(sequences_needed(config), f"a search with n={config.n}, k={config.k}")


def collect_slots(samples: int, mc_rollouts: int = 0) -> dict[str, Slots]:
    """``value collect``, per role: each model forks ``samples`` solutions from its
    head; then the target alone forks ``mc_rollouts`` completions from one head per
    labelled step (collect.sample_solutions, one batch at a time)."""
    workload = f"value collect --samples {samples} --mc-rollouts {mc_rollouts}"
    return {"target": Slots(1 + max(samples, mc_rollouts), workload), "draft": Slots(1 + samples, workload)}


def replay_slots(batch: int) -> Slots:
    """``value replay``: ``batch`` recorded solutions forked from one head."""
    return Slots(1 + batch, f"value replay of {batch} solutions at a time")


def reward_eval_slots() -> Slots:
    """``eval-reward``: a step and its wrong twin forked from the prefix they follow;
    the other 13 hold the reward's cache of prefixes, so that pairs of one problem
    share its prompt."""
    return Slots(16, "eval-reward (a step and its wrong twin at a time)")


def inspection_slots() -> Slots:
    """A model loaded only to read its shape or vocabulary: one sequence, never used."""
    return Slots(1, "reading the file's shape (no decoding)")
