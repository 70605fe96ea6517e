"""The ``specs-local`` command.

    specs-local solve "What is 12 times 7?"
    specs-local batch problems.jsonl -o answers.jsonl
    specs-local bench data.jsonl --methods specs,beam-target --limit 20
    specs-local models list
    specs-local serve --port 8080

Every search and engine flag can also be set in a TOML config file
(``--config``, ``$SPECS_LOCAL_CONFIG`` or ``~/.config/specs-local/config.toml``),
with the flag's name as key: ``n = 8``, ``tau-reject = 6.0``, ``method = "beam"``.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from ..errors import SpecsError
from ..presets import REWARD_KINDS
from ..run_markers import enable_faulthandler
from ..selection import RULES

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

# Spelled out, not imported from search/, so that `--help` does not load llama.cpp (a test keeps them equal).
METHODS = ["specs", "beam", "beam-target", "beam-draft", "best-of-n", "rsd", "greedy", "greedy-target", "greedy-draft"]
BEAM_ANSWERS = ("best", "weighted", "majority", "select")
CPU_REPACK_MODES = ("auto", "on", "no-amx", "off")  # engine.repack.MODES
COMMANDS_WITH_SEARCH_FLAGS = ("solve", "batch", "bench", "eval-reward", "serve")
# Commands that load models, and so may die inside llama.cpp: they leave a marker (crash_hint.py).
COMMANDS_THAT_LOAD = ("solve", "batch", "bench", "profile", "eval-reward", "value", "serve")


def default_config_path() -> Path:
    env = os.environ.get("SPECS_LOCAL_CONFIG")
    return Path(env) if env else Path.home() / ".config" / "specs-local" / "config.toml"


def read_config(path: Path, explicit: bool) -> dict:
    """The config file as click default_map entries (flag names with - or _)."""
    if not path.exists():
        if explicit:
            raise click.BadParameter(f"config file not found: {path}", param_hint="--config")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise click.BadParameter(f"cannot read config {path}: {err}", param_hint="--config")
    return {key.replace("-", "_"): value for key, value in data.items()}


class OneLineErrors(click.Group):
    """Turn project errors into ``Error: <one line>`` and exit 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SpecsError as err:
            raise click.ClickException(str(err).splitlines()[0] if str(err) else type(err).__name__)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file whose keys set any flag (default: ~/.config/specs-local/config.toml).")
@click.version_option(package_name="specs-local")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Offline test-time scaling for reasoning with local GGUF models (SPECS on llama.cpp).

    Something wrong (a crash, no answer)? `specs-local doctor` checks this machine."""
    enable_faulthandler()
    if ctx.invoked_subcommand in COMMANDS_THAT_LOAD:
        from ..run_markers import exit_on_sigterm, mark_running

        if message := mark_running(ctx.invoked_subcommand):
            click.echo(message, err=True)
        exit_on_sigterm()
    values = read_config(config_path or default_config_path(), explicit=config_path is not None)
    ctx.default_map = {name: values for name in COMMANDS_WITH_SEARCH_FLAGS}
    ctx.default_map["value"] = {"collect": values}


def search_options(func):
    """The flags every front end that runs searches shares. Their bounds are SearchConfig's
    (search/config.py, one place for the CLI, the Python API and the server), checked before
    any model loads."""
    options = [
        click.option("--preset", default="small", show_default=True, help="Model preset (see `specs-local models list`)."),
        click.option("--method", type=click.Choice(METHODS), default=None,
                     help="The search (default: the preset's, `specs-local models list` names it)."),
        click.option("--n", type=int, default=None, help="Candidates per step (beam: in total). [4]"),
        click.option("--beam-width", type=int, default=None, help="Beam search: candidates per kept prefix. [2]"),
        click.option("--beam-answer", type=click.Choice(BEAM_ANSWERS), default=None,
                     help="Beam search: answer with the completed beam of best last reward, the reward-weighted "
                          "vote, or the majority. [best]"),
        click.option("--temperature", type=float, default=None, help="Sampling and selection temperature."),
        click.option("--beta", type=float, default=None, help="SPECS: weight of the reward in the score."),
        click.option("--tau-reject", type=float, default=None, help="SPECS: drafts scoring at or below are rejected."),
        click.option("--tau-switch", type=float, default=None, help="SPECS: target reward above which the draft takes over again."),
        click.option("--greedy-candidate/--no-greedy-candidate", default=None,
                     help="SPECS: the first of target mode's n candidates is the target's greedy step."),
        click.option("--k", type=int, default=None,
                     help="SPECS: chains advancing together, the answer chosen among them by --select. [1]"),
        click.option("--select", type=click.Choice(RULES), default=None,
                     help="How the answer is chosen among whole solutions (best-of-n, SPECS' k chains, "
                          "--beam-answer select): by the target's mean log-prob, self-certainty, lowest-window "
                          "confidence or last reward, by majority, or by a vote weighted by one of those. [logprob]"),
        click.option("--veto/--no-veto", default=None,
                     help="A solution with a false equality (the calculator) is not chosen while another is left. [on]"),
        click.option("--stop-confidence", type=float, default=None,
                     help="Early stopping: a sample or chain whose mean token confidence over the last --window "
                          "tokens falls below this stops (DeepConf). [off]"),
        click.option("--window", type=int, default=None, help="Tokens of the confidence window. [32]"),
        click.option("--consensus", type=int, default=None,
                     help="Best-of-n: draw the first this many samples together, then one at a time, and stop "
                          "once this many finished samples agree on the answer. 0: all n at once. [0]"),
        click.option("--rsd-delta", type=float, default=None, help="RSD: reward a draft step needs to be kept."),
        click.option("--max-steps", type=int, default=None),
        click.option("--max-step-tokens", type=int, default=None),
        click.option("--seed", type=int, default=None),
        click.option("--draft", default=None, help="Draft model: a GGUF path, a preset role, or hf:REPO/FILE."),
        click.option("--target", default=None, help="Target model: a GGUF path, a preset role, or hf:REPO/FILE."),
        click.option("--reward", default=None, help="Reward model: a GGUF path, a preset role, or hf:REPO/FILE."),
        click.option("--reward-kind", type=click.Choice(list(REWARD_KINDS)), default=None),
        click.option("--value-head", type=click.Path(dir_okay=False), default=None, help="The head .npz of a value-head PRM, or of a probe (`value train`; default: the preset's own)."),
    ]
    for option in reversed(options):
        func = option(func)
    return engine_options(func)


def cpu_repack_option():
    return click.option("--cpu-repack", type=click.Choice(CPU_REPACK_MODES), default="auto", show_default=True,
                        help="CPU weight layouts llama.cpp may use: auto (all but AMX, which crashes on cloud VMs), "
                             "on (llama.cpp's default), no-amx, off (plain weights).")


def engine_options(func):
    """The flags that say how models load: offload, threads, context and CPU weight layout."""
    options = [
        gpu_layers_option(),
        click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (default: all cores)."),
        click.option("--ctx", type=click.IntRange(256), default=8192, show_default=True, help="Context size per model."),
        cpu_repack_option(),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _warn_without_offload(ctx, param, layers: int) -> int:
    # llama.cpp ignores the layer count on a build without GPU support, so a user who
    # asked for offload would otherwise wonder why it is slow.
    if layers:
        from ..engine import supports_gpu_offload  # deferred: it loads llama.cpp

        if not supports_gpu_offload():
            click.echo(f"warning: this llama-cpp-python build cannot offload to a GPU; --n-gpu-layers {layers} "
                       "runs on the CPU here (README, \"GPU offload\", says how to build it with CUDA)", err=True)
    return layers


def gpu_layers_option():
    """--n-gpu-layers, warning where this build would ignore it."""
    return click.option("--n-gpu-layers", type=int, default=0, show_default=True, callback=_warn_without_offload,
                        help="Layers to offload (-1: all).")


def read_problem(problem: str | None, file: Path | None) -> str:
    if file is not None:
        try:
            text = file.read_text()
        except OSError as err:
            raise click.BadParameter(f"cannot read {file}: {err.strerror}", param_hint="--file")
    elif problem == "-":
        text = sys.stdin.read()
    elif problem is not None:
        text = problem
    else:
        raise click.UsageError('give a problem: specs-local solve "PROBLEM", --file PATH, or - for stdin')
    if not text.strip():
        raise click.UsageError("the problem is empty")
    return text.strip()


def handle_interrupt(func):
    """Ctrl-C: the command prints what it has, then exits 130."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
    return wrapper


# The commands live one module each; they import this module's helpers.
from .batch import batch  # noqa: E402
from .bench import bench, profile  # noqa: E402
from .doctor import doctor  # noqa: E402
from .eval_reward import eval_reward  # noqa: E402
from .models import models  # noqa: E402
from .serve import serve  # noqa: E402
from .solve import solve  # noqa: E402
from .value import value  # noqa: E402

for command in (solve, batch, bench, profile, eval_reward, models, value, serve, doctor):
    main.add_command(command)

__all__ = ["main"]
