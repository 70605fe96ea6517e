"""``specs-local batch``: a whole file of problems, one durable JSONL record each."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import SpecsError
from ..solver_options import build_solver
from . import handle_interrupt, search_options


class InputError(click.ClickException):
    """An input file that cannot be used: one line, exit status 2."""

    exit_code = 2


def ray_options(func):
    """The flags that move a command's searches onto a Ray cluster (batch, bench)."""
    options = [
        click.option("--ray", "ray", is_flag=False, flag_value="auto", default=None, metavar="[auto|ADDRESS]",
                     help="Solve on a Ray cluster: a head's ADDRESS (host:port), or auto (RAY_ADDRESS, else a "
                          "cluster started on this machine, else a Ray of its own). Needs the ray extra."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="Ray workers (default: as many as the machines hold, one per --threads CPUs, and "
                          "per --gpus-per-worker GPUs where given; every CPU is used, at least one worker)."),
        click.option("--gpus-per-worker", type=click.FloatRange(0, min_open=True), default=None,
                     help="GPUs each Ray worker reserves and offloads to (all layers unless --n-gpu-layers)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def cluster_options(ray: str | None, workers: int | None, gpus_per_worker: float | None, opts: dict):
    """The Ray settings of a command line (``cluster.ClusterOptions``); None without --ray."""
    if ray is None:
        given = [flag for flag, value in (("--workers", workers), ("--gpus-per-worker", gpus_per_worker))
                 if value is not None]
        if given:
            raise click.UsageError(f"{given[0]} needs --ray")
        return None
    if opts["n_gpu_layers"] and not gpus_per_worker:
        raise click.UsageError("--n-gpu-layers on Ray needs --gpus-per-worker: a worker offloads only to its own GPUs")
    from ..cluster import ClusterOptions  # not Ray itself: that is imported when the run starts

    # One thread per worker unless told: workers, not threads, are what a cluster adds.
    return ClusterOptions(address=ray, workers=workers, gpus_per_worker=gpus_per_worker or 0.0,
                          threads=opts["threads"] or 1)


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file of results; rerunning the same command resumes it.")
@click.option("--trace", is_flag=True, help="Include every step and the full text in each record.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--retry-errors", is_flag=True, help="Solve again the problems whose record in OUTPUT is an error.")
@search_options
@ray_options
@handle_interrupt
def batch(input_path, output_path, trace, progress, retry_errors, ray, workers, gpus_per_worker, **opts):
    """Solve every problem in INPUT (JSONL with id/problem/answer, or one problem per line)."""
    from ..batch import format_summary, run_batch
    from ..problems import read_problems

    cluster = cluster_options(ray, workers, gpus_per_worker, opts)
    try:
        problems = read_problems(input_path)
    except SpecsError as err:
        raise InputError(str(err))
    if cluster is not None:
        from ..cluster import run_cluster_batch

        summary = run_cluster_batch(problems, output_path, opts, cluster, trace=trace, progress=progress,
                                    out=sys.stderr, retry_errors=retry_errors)
    else:
        solver = build_solver(opts, progress=progress)  # the models load once for the whole file
        summary = run_batch(problems, output_path, lambda text: solver.solve(text).to_dict(),
                            method=solver.method, trace=trace, progress=progress, out=sys.stderr,
                            retry_errors=retry_errors)
    click.echo(format_summary(summary))
