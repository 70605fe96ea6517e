"""``specs-local solve``: one problem, steps streamed as they are chosen."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..solver_options import build_solver
from . import handle_interrupt, read_problem, search_options


def step_header(index: int, step) -> str:
    parts = [f"step {index}", step.source]
    if step.reward is not None:
        parts.append(f"reward {step.reward:.2f}")
    if step.score is not None:
        parts.append(f"score {step.score:.2f}")
    if step.deferred:
        parts.append("DEFERRED: drafts rejected")
    return "[" + " · ".join(parts) + "]"


def print_step(index: int, step) -> None:
    colour = {"draft": "green", "target": "blue"}.get(step.source, None)
    header = click.style(step_header(index, step), fg="yellow" if step.deferred else colour, bold=step.deferred)
    click.echo(header)
    click.echo(step.text.rstrip("\n"))


def stats_line(result, speculation: str | None = None) -> str:
    from ..costmodel import speedup_vs_beam

    s = result.stats
    parts = [f"wall {s['wall_seconds']:.1f} s"]
    parts.append(f"steps {s['steps_draft']} draft / {s['steps_target']} target ({s['deferrals']} deferred)")
    tokens = []
    for role, m in s["models"].items():
        tokens.append(f"{role} {m['generated']} gen + {m['scored']} scored + {m['prompt']} prompt")
    parts.append("tokens: " + "; ".join(tokens))
    parts.append(speedup_vs_beam(s))
    if speculation:
        parts.append(speculation)
    return " | ".join(parts)


def choice_line(result) -> str | None:
    """How the answer was chosen among whole solutions, where it was: e.g.
    "chosen by logprob from 4 solutions: 18 (x3), 20 (vetoed)"."""
    extra = result.extra
    if len(extra.get("candidates", [])) < 2:
        return None
    tally: dict[str, list[int]] = {}
    for c in extra["candidates"]:
        key = f"{c['answer'] if c['answer'] is not None else 'none'}" + (" (vetoed)" if c["vetoed"] else "") + \
              ("" if c["ended"] else " (unfinished)")
        tally.setdefault(key, []).append(1)
    answers = ", ".join(f"{key} (x{len(n)})" if len(n) > 1 else key for key, n in tally.items())
    return f"chosen by {extra['select']} from {len(extra['candidates'])} solutions: {answers}"


def speculation_line(solver, opts) -> str | None:
    """The cost model's verdict for this machine, where `specs-local profile` has measured it."""
    from ..costmodel import find_profile, speculation_note

    models = solver.models
    if models.draft is None:
        return None
    files = [m.name for m in models.distinct().values()]
    profile = find_profile(files, opts["threads"], opts["n_gpu_layers"], cpu_repack=opts["cpu_repack"])
    return speculation_note(profile, models.draft.name, models.target.name, solver.config.n)


@click.command()
@click.argument("problem", required=False)
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Read the problem from a file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: answer, steps, stats.")
@search_options
@handle_interrupt
def solve(problem, file, as_json, **opts):
    """Solve PROBLEM (or --file PATH, or - for stdin) and print each step as it is chosen."""
    text = read_problem(problem, file)
    solver = build_solver(opts, progress=not as_json)
    steps = []

    def on_step(step):
        steps.append(step)
        if not as_json:
            print_step(len(steps), step)

    try:
        result = solver.solve(text, on_step=on_step)
    except KeyboardInterrupt:
        from ..search.results import SearchResult

        partial = SearchResult(solver.method, "".join(s.text for s in steps), None, steps, {}, "interrupted")
        if as_json:
            click.echo(json.dumps(partial.to_dict(), ensure_ascii=False))
        raise  # handle_interrupt says "Interrupted." and exits 130; the steps are already printed
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    if result.stop_reason == "context_full":
        click.echo("Stopped: the context is full (raise --ctx).", err=True)
    elif result.stop_reason == "max_steps":
        click.echo(f"Stopped at --max-steps ({len(result.steps)} steps) before the solution ended.", err=True)
    answer = result.answer if result.answer is not None else "(no \\boxed{} answer)"
    click.echo(click.style(f"Answer: {answer}", bold=True))
    if chosen := choice_line(result):
        click.echo(chosen)
    click.echo(stats_line(result, speculation_line(solver, opts)))
