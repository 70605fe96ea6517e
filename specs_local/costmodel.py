"""Latency estimates: what a search costs, from timings and hardware profiles.

Two kinds of estimate live here.

``speedup_vs_beam`` answers, for one finished search, how long target-only
beam search at the same n would have taken on this machine: the target's
batched decode time per call, as measured in this very run, times the tokens
of the chosen path (beam search needs one target decode per step token), plus
the same reward time.

The cost model predicts a search's latency from its step statistics and a
hardware **profile**: per model file, prefill tokens/s and the total decode
tokens/s of one batch of b sequences::

    {"machine": str, "threads": int | None, "n_gpu_layers": int,
     "models": {"<gguf file name>": {"prefill_tps": float,
                                     "decode_tps": {"1": float, "2": float, ...},
                                     "prefill_tps_by_batch": {"32": float, ...},          # optional
                                     "decode_row_seconds_by_depth": {"40": 0.0, "290": float, ...},
                                     "prefill_row_seconds_by_depth": {...}}}}             # optional

A decode of r rows costs r over the throughput at r rows (one table over
decode and prefill sizes, measured at a shallow context: a row is a row,
whichever sequence it belongs to). On top, each row pays for the KV cells it
reads: in a unified cache a row reads every live cell, so forks, beams and
verifier questions make every decode dearer. The two depth tables give that
extra time per row against the cells read, one for decode-sized calls (up to
16 rows, where attention is a matrix-vector product per row) and one for
prefill-sized calls (one matrix product, far cheaper per cell). The engine
records cells and rows per size class; the mean cells per row of a class is
looked up in its table. Profiles from before the tables have one
``attention_seconds_per_cell`` for decode-sized calls (linear in depth).

Profiles are cached per (machine, model file, threads, GPU layers) under
``<home>/profiles/``. Because the step statistics (tokens, batch sizes) do not
depend on the hardware, a profile measured elsewhere predicts what the same
searches would cost there (``predict_ratio_on``).
"""
from __future__ import annotations

import json
import math
import os
import re
import statistics
import tempfile
from pathlib import Path

import numpy as np

from .errors import SpecsError
from .machine import machine_name
from .report import finished_records, paired_values


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


# ---------------------------------------------------------------- profiles

PREFILL_ROWS = 256  # the batch at which a profile's single prefill_tps was measured
DECODE_ROWS_MAX = 16  # calls up to this many rows are decode-sized
DEPTH_TABLES = ("decode_row_seconds_by_depth", "prefill_row_seconds_by_depth")


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _non_negative(value: object) -> bool:
    return _positive(value) or value == 0


def _checked_model(name: str, entry: object, source: str) -> dict:
    """One model's figures, with decode batch sizes as string keys; SpecsError if malformed."""
    if not isinstance(entry, dict) or not _positive(entry.get("prefill_tps")):
        raise SpecsError(f"{source}: model {name} needs a positive prefill_tps")
    decode = entry.get("decode_tps")
    if not isinstance(decode, dict) or not decode:
        raise SpecsError(f"{source}: model {name} needs decode_tps by batch size")
    checked = {}
    for batch, tps in decode.items():
        if not str(batch).isdigit() or int(batch) < 1 or not _positive(tps):
            raise SpecsError(f"{source}: model {name} has a bad decode_tps entry {batch!r}: {tps!r}")
        checked[str(int(batch))] = float(tps)
    entry = {**entry, "prefill_tps": float(entry["prefill_tps"]), "decode_tps": checked}
    by_batch = entry.get("prefill_tps_by_batch")
    if by_batch is not None:
        if not isinstance(by_batch, dict) or not all(str(b).isdigit() and int(b) >= 1 and _positive(t)
                                                     for b, t in by_batch.items()):
            raise SpecsError(f"{source}: model {name} has a bad prefill_tps_by_batch: {by_batch!r}")
        entry["prefill_tps_by_batch"] = {str(int(b)): float(t) for b, t in by_batch.items()}
    attention = entry.get("attention_seconds_per_cell", 0.0)
    if not _non_negative(attention):
        raise SpecsError(f"{source}: model {name} needs a non-negative attention_seconds_per_cell, not {attention!r}")
    for key in DEPTH_TABLES:
        table = entry.get(key)
        if table is None:
            continue
        if not isinstance(table, dict) or not table or not all(
                str(d).isdigit() and _non_negative(s) for d, s in table.items()):
            raise SpecsError(f"{source}: model {name} has a bad {key}: {table!r}")
        entry[key] = {str(int(d)): float(s) for d, s in table.items()}
    return entry


def check_profile(profile: object, source: str = "profile") -> dict:
    """The profile, validated; SpecsError naming the first problem."""
    if not isinstance(profile, dict) or not isinstance(profile.get("machine"), str):
        raise SpecsError(f"{source} is not a specs-local profile (no machine name)")
    threads, layers = profile.get("threads"), profile.get("n_gpu_layers", 0)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise SpecsError(f"{source}: threads must be a positive integer or null, not {threads!r}")
    if not isinstance(layers, int):
        raise SpecsError(f"{source}: n_gpu_layers must be an integer, not {layers!r}")
    models = profile.get("models")
    if not isinstance(models, dict) or not models:
        raise SpecsError(f"{source} profiles no models")
    return {**profile, "threads": threads, "n_gpu_layers": layers,
            "models": {name: _checked_model(name, entry, source) for name, entry in models.items()}}


def load_profile(path: str | os.PathLike) -> dict:
    """A profile from a JSON file; SpecsError if unreadable or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SpecsError(f"cannot read profile {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise SpecsError(f"profile {path} is not JSON ({error})") from None
    return check_profile(data, str(path))


def save_profile(profile: dict, path: str | os.PathLike) -> Path:
    """Write a profile as JSON, atomically (a reader never sees half a file)."""
    path = Path(path)
    text = json.dumps(check_profile(profile), indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "unnamed"


def profile_key(machine: str, model_file: str, threads: int | None, n_gpu_layers: int, cpu_repack: str = "auto") -> str:
    """The cache key of one model's profile: everything its speed depends on (the CPU weight
    layout named only when it is not the default, so that older profiles keep their keys)."""
    thread_part = "auto" if threads is None else str(threads)
    layout = "" if cpu_repack == "auto" else f"__repack-{cpu_repack}"
    return f"{_slug(machine)}__{_slug(Path(model_file).name)}__threads-{thread_part}__gpu-{n_gpu_layers}{layout}"


def profile_path(key: str) -> Path:
    from .presets import home

    return home() / "profiles" / f"{key}.json"


def store_profile(profile: dict) -> list[Path]:
    """Cache each model of a profile under its own key; the paths written."""
    profile = check_profile(profile)
    written = []
    for name, entry in profile["models"].items():
        key = profile_key(profile["machine"], name, profile["threads"], profile["n_gpu_layers"],
                          profile.get("cpu_repack", "auto"))
        written.append(save_profile({**profile, "models": {name: entry}}, profile_path(key)))
    return written


def find_profile(model_files, threads: int | None, n_gpu_layers: int, machine: str | None = None,
                 cpu_repack: str = "auto") -> dict | None:
    """The cached profile of every given model on this machine (or ``machine``), or None
    unless every one has been profiled with these thread, GPU and weight-layout settings."""
    if machine is None:
        machine = machine_name()
    models = {}
    for model_file in model_files:
        name = Path(model_file).name
        path = profile_path(profile_key(machine, name, threads, n_gpu_layers, cpu_repack))
        if not path.exists():
            return None
        models[name] = load_profile(path)["models"][name]
    if not models:
        return None
    return {"machine": machine, "threads": threads, "n_gpu_layers": n_gpu_layers, "cpu_repack": cpu_repack,
            "models": models}


# ---------------------------------------------------------------- prediction


def decode_call_seconds(model_profile: dict, batch: float) -> float:
    """Seconds of one decode call feeding ``batch`` rows, one per sequence.

    The total tokens/s is interpolated linearly in the batch size between the
    measured sizes and held constant beyond them (past the largest size the
    hardware is taken as saturated: time grows in proportion to rows)."""
    if batch <= 0:
        return 0.0
    sizes = sorted((int(b), tps) for b, tps in model_profile["decode_tps"].items())
    tps = float(np.interp(batch, [b for b, _ in sizes], [t for _, t in sizes]))
    return batch / tps


def rows_call_seconds(model_profile: dict, rows: float) -> float:
    """Seconds of one decode of ``rows`` rows at a shallow context.

    Throughput comes from one table over the decode sizes and the prefill
    sizes, interpolated linearly in rows and held constant past its ends."""
    if rows <= 0:
        return 0.0
    table = {int(b): t for b, t in model_profile["decode_tps"].items()}
    prefill = model_profile.get("prefill_tps_by_batch") or {str(PREFILL_ROWS): model_profile["prefill_tps"]}
    table.update({int(b): t for b, t in prefill.items()})
    sizes = sorted(table)
    return rows / float(np.interp(rows, sizes, [table[b] for b in sizes]))


def profile_name(profile: dict, model_file: str, model_map: dict | None) -> str:
    """The entry of a profile that prices ``model_file``: its own name where the profile has it,
    else the name ``model_map`` gives it (a profile of other files, e.g. published figures)."""
    return model_file if model_file in profile["models"] else (model_map or {}).get(model_file, model_file)


def _model_entry(profile: dict, model_file: str, model_map: dict | None) -> dict:
    name = profile_name(profile, model_file, model_map)
    entry = profile["models"].get(name)
    if entry is None:
        raise SpecsError(f"the profile of {profile['machine']} has no model {name}; "
                         "measure it with `specs-local profile`")
    return entry


def extra_row_seconds(table: dict[str, float], depth: float) -> float:
    """Seconds a row pays for reading ``depth`` KV cells, from a depth table:
    linear between the measured depths, held below the shallowest, and
    extended along the last segment past the deepest."""
    points = sorted((int(d), s) for d, s in table.items())
    if depth <= points[-1][0]:
        return float(np.interp(depth, [d for d, _ in points], [s for _, s in points]))
    (d0, s0), (d1, s1) = ([(0, 0.0)] + points)[-2:]
    return max(s1 + (depth - d1) * (s1 - s0) / (d1 - d0), 0.0)


def depth_row_seconds(model_profile: dict, rows_per_call: float, depth: float) -> float:
    """The extra seconds of one row of a call of ``rows_per_call`` rows that reads ``depth`` cells."""
    decode_sized = rows_per_call <= DECODE_ROWS_MAX
    table = model_profile.get(DEPTH_TABLES[0] if decode_sized else DEPTH_TABLES[1])
    if table is not None:
        return extra_row_seconds(table, depth)
    # A profile from before the depth tables: one cost per cell, for decode-sized calls.
    return model_profile.get("attention_seconds_per_cell", 0.0) * depth if decode_sized else 0.0


def model_seconds(usage: dict, model_profile: dict) -> float:
    """Predicted seconds one model spent in a search, from its usage stats.

    With the decode shapes recorded (``decode_batches``): each size class
    costs its calls at their mean rows, and its rows what reading their mean
    cells costs (``depth_row_seconds``). Stats from before those were
    recorded: the generation decodes cost ``generation_calls`` calls at the
    mean generation batch, and every other evaluated token is costed as
    prefill."""
    if "decode_batches" in usage:
        seconds = 0.0
        for calls, rows, cells in usage["decode_batches"].values():
            seconds += calls * rows_call_seconds(model_profile, rows / calls)
            seconds += rows * depth_row_seconds(model_profile, rows / calls, cells / rows)
        return seconds
    calls = usage.get("generation_calls", 0)
    batch = usage.get("mean_generation_batch", 0.0)
    rows = round(calls * batch)
    generation = calls * decode_call_seconds(model_profile, batch)
    prefill = max(usage.get("evaluated", 0) - rows, 0) / model_profile["prefill_tps"]
    return generation + prefill


def priced_by_shape(record: dict) -> bool:
    """Whether a record's stats carry decode shapes (else the older, coarser prediction applies)."""
    models = record.get("stats", {}).get("models", {})
    return bool(models) and all("decode_batches" in usage for usage in models.values())


def predict_seconds(stats: dict, profile: dict, *, model_map: dict | None = None) -> float:
    """Predicted wall seconds of one search from its stats: the time of every model it used.

    Models are matched to profile entries by file name (``model_map`` renames a
    run's file to a profile entry, e.g. a random-weight file of the same shape).
    The reward's own ``seconds`` are left out: the model part of them is already
    in the models' evaluated tokens, and the stats cannot separate the rest
    (calculator checks, Python bookkeeping), which is small beside decoding.
    So is sampling and other Python time: the prediction is model time only."""
    return sum(model_seconds(usage, _model_entry(profile, usage["file"], model_map))
               for usage in stats.get("models", {}).values())


def predict_method_latency(records: list[dict], profile: dict, *, model_map: dict | None = None) -> float | None:
    """Mean predicted seconds per problem over a method's finished records; None if none finished."""
    done = finished_records(records)
    if not done:
        return None
    return statistics.fmean(predict_seconds(r["stats"], profile, model_map=model_map) for r in done)


def predict_latencies(records_by_method: dict[str, list[dict]], profile: dict, *,
                      model_map: dict | None = None) -> dict[str, float]:
    """Predicted mean seconds per method, for ``report.summarize_methods(predictions=...)``."""
    predicted = {m: predict_method_latency(recs, profile, model_map=model_map) for m, recs in records_by_method.items()}
    return {m: seconds for m, seconds in predicted.items() if seconds is not None}


def predict_ratio_on(profile_other: dict, records_by_method: dict[str, list[dict]], *, baseline: str = "beam-target",
                     model_map: dict | None = None) -> dict:
    """What the cost model predicts these searches would cost on other hardware.

    The step statistics of the runs (tokens, batches, acceptance) are replayed
    on ``profile_other``. Returns the machine, the predicted mean seconds per
    method and, per method, the median of the per-problem predicted latency
    ratios against ``baseline`` (as the report measures them), or None where no
    problem finished under both."""
    def predicted(record: dict) -> float:
        return predict_seconds(record["stats"], profile_other, model_map=model_map)

    base = {r["id"]: predicted(r) for r in finished_records(records_by_method.get(baseline, []))}
    ratios = {}
    for method, records in records_by_method.items():
        pairs = paired_values({r["id"]: predicted(r) for r in finished_records(records)}, base)
        ratios[method] = float(np.median([a / b for a, b in pairs])) if pairs else None
    return {
        "machine": profile_other["machine"],
        "baseline": baseline,
        "predicted_seconds": predict_latencies(records_by_method, profile_other, model_map=model_map),
        "ratios": ratios,
    }


# ---------------------------------------------------------------- can speculation pay?


def speculation_ratio(profile: dict, draft_file: str, target_file: str, n: int, step_tokens: int = 60,
                      acceptance: float = 1.0) -> float:
    """The idealised cost of one SPECS step over one beam-target step, both with n candidates of L tokens.

    SPECS: the draft generates L tokens at batch n, the target scores the n*L
    drafted tokens as prefill, and on rejection (1 - acceptance) the target
    generates the step itself. Beam-target: the target generates L tokens at
    batch n. Rewards are left out of both sides alike."""
    draft = _model_entry(profile, Path(draft_file).name, None)
    target = _model_entry(profile, Path(target_file).name, None)
    target_step = step_tokens * decode_call_seconds(target, n)
    drafting = step_tokens * decode_call_seconds(draft, n)
    scoring = rows_call_seconds(target, n * step_tokens)
    return (drafting + scoring + (1.0 - acceptance) * target_step) / target_step


def speculation_can_pay(profile: dict, draft_file: str, target_file: str, n: int, step_tokens: int = 60,
                        acceptance: float = 1.0) -> bool:
    """Whether a SPECS step costs less than a target step on this hardware."""
    return speculation_ratio(profile, draft_file, target_file, n, step_tokens, acceptance) < 1.0


def speculation_note(profile: dict | None, draft_file: str, target_file: str, n: int) -> str | None:
    """A line for the solve stats when speculation cannot pay even at 100% acceptance;
    None when it can, or when the profile lacks either model."""
    if profile is None:
        return None
    try:
        ratio = speculation_ratio(profile, draft_file, target_file, n)
    except SpecsError:
        return None
    if ratio < 1.0:
        return None
    return (f"speculation cannot pay here: drafting+scoring costs {ratio:.2f}x a target step "
            "even at 100% acceptance")
