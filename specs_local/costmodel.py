"""Latency estimates: what a search would cost by another method, from timings.

``speedup_vs_beam`` answers, for one finished search, how long target-only
beam search at the same n would have taken on this machine: the target's
batched decode time per call, as measured in this very run, times the tokens
of the chosen path (beam search needs one target decode per step token), plus
the same reward time.
"""
from __future__ import annotations


def beam_seconds_from_run(stats: dict) -> tuple[float, str] | None:
    """Estimated seconds of beam-target for this run, and the basis, or None."""
    target = stats.get("models", {}).get("target")
    if not target or not target.get("generation_calls"):
        return None
    per_call = target["generation_seconds"] / target["generation_calls"]
    reward_seconds = stats.get("reward", {}).get("seconds", 0.0)
    tokens = stats.get("step_tokens", 0)
    estimate = per_call * tokens + reward_seconds
    basis = (f"target decode {per_call * 1000:.0f} ms/call at batch {target['mean_generation_batch']:.1f} "
             f"measured in this run x {tokens} step tokens + {reward_seconds:.1f} s reward")
    return estimate, basis


def speedup_vs_beam(stats: dict) -> str:
    """One phrase for the stats line."""
    estimate = beam_seconds_from_run(stats)
    n = stats.get("n")
    if estimate is None:
        return f"est. speedup vs beam-target (n={n}): n/a (the target generated nothing in this run to time it)"
    seconds, basis = estimate
    wall = max(stats["wall_seconds"], 1e-9)
    return f"est. speedup vs beam-target (n={n}): {seconds / wall:.2f}x (basis: {basis})"
