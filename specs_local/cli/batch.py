"""``specs-local batch``: a whole file of problems, one durable JSONL record each."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import SpecsError
from . import build_solver, handle_interrupt, search_options


class InputError(click.ClickException):
    """An input file that cannot be used: one line, exit status 2."""

    exit_code = 2


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file of results; rerunning the same command resumes it.")
@click.option("--trace", is_flag=True, help="Include every step and the full text in each record.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@search_options
@handle_interrupt
def batch(input_path, output_path, trace, progress, **opts):
    """Solve every problem in INPUT (JSONL with id/problem/answer, or one problem per line)."""
    from ..batch import format_summary, read_problems, run_batch

    try:
        problems = read_problems(input_path)
    except SpecsError as err:
        raise InputError(str(err))
    solver = build_solver(opts, progress=progress)  # the models load once for the whole file
    summary = run_batch(problems, output_path, lambda text: solver.solve(text).to_dict(),
                        method=opts["method"], trace=trace, progress=progress, out=sys.stderr)
    click.echo(format_summary(summary))
