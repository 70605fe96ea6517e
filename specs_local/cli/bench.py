"""``specs-local bench`` and ``specs-local profile``: the evidence front ends."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ..errors import SpecsError
from ..solver_options import build_solver
from . import cpu_repack_option, gpu_layers_option, handle_interrupt, search_options
from .batch import InputError, cluster_options, ray_options

DEFAULT_METHODS = "specs,beam-target,greedy-target"


def parse_methods(text: str) -> list[str]:
    """The arms of a bench, each METHOD or METHOD@key=value@... (see bench.parse_arm)."""
    from ..bench import arm_label, parse_arm

    arms = []
    for label in (part.strip() for part in text.split(",") if part.strip()):
        try:
            parse_arm(label)
        except SpecsError as err:
            raise click.BadParameter(str(err), param_hint="--methods")
        arms.append(arm_label(label))
    if not arms:
        raise click.BadParameter("no methods given", param_hint="--methods")
    return list(dict.fromkeys(arms))


def arm_sizes(arms: list[str]) -> dict:
    """The largest n and k any arm asks for: the models reserve sequence slots for them."""
    from ..bench import parse_arm

    wanted = [parse_arm(arm)[1] for arm in arms]
    return {key: max(w[key] for w in wanted if key in w) for key in ("n", "k") if any(key in w for w in wanted)}


def model_files(records: dict[str, list[dict]]) -> list[str]:
    """The model files the records name (what the cost model's profile is looked up by)."""
    return sorted({usage["file"] for recs in records.values() for r in recs
                   for usage in r.get("stats", {}).get("models", {}).values()})


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--methods", default=DEFAULT_METHODS, show_default=True,
              help="Comma-separated methods to compare; METHOD@key=value@... runs a method with its own search "
                   "settings (an arm), e.g. specs@greedy_candidate=false,specs@greedy_candidate=true.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: runs/<data name>). Rerunning the same command resumes it.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Problems to run.")
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True, help="Problems to skip first.")
@click.option("--report-only", is_flag=True, help="Rebuild the report from the records already in --out.")
@click.option("--predict-on", "predict_on", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A profile measured elsewhere (e.g. a GPU): the report adds the ratios predicted there.")
@click.option("--model-map", default=None,
              help="run-file=profile-file pairs, comma-separated, where a profile's file names differ.")
@click.option("--baseline", default=None,
              help="The method latencies are compared with (default: beam-target where it runs, else greedy-target).")
@click.option("--trace", is_flag=True, help="Keep every step (source, reward, log-probs, score) in the records.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--retry-errors", is_flag=True, help="Run again the (problem, method) pairs whose record is an error.")
@search_options
@ray_options
@handle_interrupt
def bench(data, methods, out_dir, limit, offset, report_only, predict_on, model_map, baseline, trace, progress,
          retry_errors, ray, workers, gpus_per_worker, **opts):
    """Compare methods on the problems in DATA (JSONL with id/problem/answer), models loaded once."""
    from ..problems import read_problems
    from ..bench import read_records, report, run_bench
    from ..report import git_revision

    method_list = parse_methods(methods)
    cluster = cluster_options(ray, workers, gpus_per_worker, opts)
    try:
        problems = read_problems(data)
    except SpecsError as err:
        raise InputError(str(err))
    problems = [p for p in problems[offset:] if p.error is None][:limit]
    out_dir = out_dir or Path("runs") / Path(data).stem
    command = "specs-local " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    from ..costmodel import find_profile, load_profile

    others = [load_profile(p) for p in predict_on]
    mapping = dict(pair.split("=", 1) for pair in model_map.split(",")) if model_map else None
    revision = git_revision()  # before any problem runs: the code that solves them
    if report_only:
        records = read_records(out_dir, method_list, problems)
        files = model_files(records)
        profile = find_profile(files, opts["threads"], opts["n_gpu_layers"], cpu_repack=opts["cpu_repack"]) if files else None
    elif cluster is not None:
        from ..cluster import run_cluster_bench, worker_options

        records = run_cluster_bench(problems, method_list, out_dir, opts, cluster, trace=trace, progress=progress,
                                    retry_errors=retry_errors, revision=revision)
        engine = worker_options(opts, cluster)  # the threads and offload the workers ran with
        files = model_files(records)
        profile = find_profile(files, engine["threads"], engine["n_gpu_layers"], cpu_repack=engine["cpu_repack"]) if files else None
    else:
        from ..bench import solve_arm

        solver = build_solver(opts, progress=progress, reserve=arm_sizes(method_list))
        records = run_bench(problems, method_list, out_dir, lambda text, arm: solve_arm(solver, text, arm),
                            progress=progress,
                            trace=trace, retry_errors=retry_errors, revision=revision)
        files = [m.name for m in solver.models.distinct().values()]
        profile = find_profile(files, opts["threads"], opts["n_gpu_layers"], cpu_repack=opts["cpu_repack"])
    if baseline is not None and baseline not in method_list:
        raise click.BadParameter(f"{baseline!r} is not one of the methods run", param_hint="--baseline")
    report(records, out_dir, command=command, profile=profile, other_profiles=others, model_map=mapping,
           baseline=baseline)
    click.echo(f"report: {out_dir / 'report.md'}")


@click.command()
@click.option("--preset", default="small", show_default=True)
@click.option("--model", "models", multiple=True, type=click.Path(dir_okay=False),
              help="GGUF files to profile instead of the preset's (repeatable); random-weight files of real "
                   "shapes work: scripts/make_tiny_model.py --shape qwen2.5-7b.")
@click.option("--batches", default="1,2,4,8,16", show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None)
@gpu_layers_option()
@cpu_repack_option()
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the profile JSON here.")
def profile(preset, models, batches, repeats, threads, n_gpu_layers, cpu_repack, out_file):
    """Measure prefill and batched decode speed of each model; the cost model uses it."""
    from ..costmodel import save_profile, store_profile
    from ..profiling import profile_models
    from ..presets import resolve

    sizes = tuple(int(b) for b in batches.split(","))
    paths = list(models) or [resolve(role, role=role, preset=preset) for role in ("draft", "target")]

    def show(name, figures):
        rates = ", ".join(f"b{b} {v:.1f}" for b, v in figures["decode_tps"].items())
        prefill = ", ".join(f"b{b} {v:.1f}" for b, v in figures["prefill_tps_by_batch"].items())
        depth = {kind: ", ".join(f"{d} cells {s * 1000:.1f}" for d, s in figures[f"{kind}_row_seconds_by_depth"].items())
                 for kind in ("decode", "prefill")}
        click.echo(f"{name}: prefill tok/s {prefill}; decode total tok/s {rates}; extra ms per row by cells read: "
                   f"decode {depth['decode']}; prefill {depth['prefill']}")

    result = profile_models(paths, threads=threads, n_gpu_layers=n_gpu_layers, cpu_repack=cpu_repack, batches=sizes,
                            repeats=repeats, on_model=show)
    stored = store_profile(result)
    click.echo(f"stored: {', '.join(str(p) for p in stored)}")
    if out_file is not None:
        save_profile(result, out_file)
        click.echo(f"written: {out_file}")
