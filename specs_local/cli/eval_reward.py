"""``specs-local eval-reward``: how well each reward kind tells a correct step from its wrong twin.

    specs-local eval-reward --limit 20 --kinds calculator
    specs-local eval-reward --kinds calculator,self,verifier,calculator+self --out docs/results/reward.md

One table row per reward kind and data source: ROC AUC, pairwise accuracy,
mean reward of each class and seconds per scored step.
"""
from __future__ import annotations

import datetime
import os
import shlex
import sys
from pathlib import Path

import click

from ..machine import machine_name
from ..presets import REWARD_KINDS
from ..report import git_revision
from ..solver_options import engine_from
from . import engine_options, handle_interrupt

SOURCES = ("gsm8k", "math500")
DEFAULT_KINDS = "calculator,self,verifier,calculator+self"
REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REWARDS = ("verifier", "token-prm", "value-prm")  # bases that run on the reward model


class FlagError(click.ClickException):
    """Bad usage said in one line (no usage block), exit 2 like click's own usage errors."""

    exit_code = 2

    def __init__(self, flag: str, message: str):
        super().__init__(f"{flag}: {message}")


# -- flags ----------------------------------------------------------------------


def default_data_dir() -> Path | None:
    """../shared/data beside the repository (a CI clone), else ./shared/data."""
    for candidate in (REPO_ROOT.parent / "shared" / "data", Path.cwd() / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def data_files(data: Path | None, sources: list[str]) -> dict[str, Path]:
    """The JSONL file of each source, checked before anything is loaded."""
    if data is None:
        raise FlagError("--data", "no data directory given and neither ../shared/data nor ./shared/data exists")
    if not data.is_dir():
        raise FlagError("--data", f"not a directory: {data}")
    files = {source: data / f"{source}.jsonl" for source in sources}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise FlagError("--data", f"data file not found: {', '.join(missing)}")
    return files


def parse_list(value: str, allowed, flag: str) -> list[str]:
    """A comma-separated choice list, in the given order, without repeats."""
    items = list(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise FlagError(flag, f"unknown {', '.join(unknown) or '(empty)'}; choose from {','.join(allowed)}")
    return items


def reward_base(kind: str) -> str:
    """The model reward inside a kind: "self" for "calculator+self", "" for "calculator"."""
    return "" if kind == "calculator" else kind.removeprefix("calculator+")


# -- models -----------------------------------------------------------------------


def load_models(kinds: list[str], opts: dict):
    """(target, reward model or None, value head or None), each loaded once; no model for the
    calculator alone. Specs resolve like the other commands: path, preset role or hf:..."""
    from ..engine import Model, ModelConfig
    from ..presets import load_preset, resolve, value_head_path
    from ..rewards import probe_head
    from ..slots import reward_eval_slots

    bases = {reward_base(kind) for kind in kinds} - {""}
    if not bases:
        return None, None, None
    preset = opts["preset"]
    wants_value_head = "value-prm" in bases

    def config(embeddings: bool, capture: tuple[str, ...] = ()) -> ModelConfig:
        return engine_from(opts).model_config(reward_eval_slots(), embeddings=embeddings, capture=capture)

    target_path = resolve(opts["target"] or "target", role="target", preset=preset)
    reward_path, value_head = None, opts["value_head"]
    capture = ()
    if "probe" in bases:  # the probe reads the target's own layers: load it capturing them
        value_head = value_head or load_preset(preset).roles["reward"].probe_head
        if value_head is None:
            raise FlagError("--value-head", f"a probe needs its head; preset {preset!r} ships none")
        value_head = probe_head(value_head)  # read once: its nodes decide how the target loads
        capture = value_head.capture
    if bases & set(MODEL_REWARDS):
        manifest = load_preset(preset)
        if opts["reward"]:
            reward_path = resolve(opts["reward"], role="reward", preset=preset)
        elif manifest.has_role("reward"):
            # a reward role that `uses` the target follows --target, not the preset's target file
            uses = manifest.roles["reward"].uses
            reward_path = target_path if uses == "target" else resolve(uses or "reward", role="reward", preset=preset)
            if wants_value_head and value_head is None:
                value_head = value_head_path(manifest.model("reward"))
    separate = reward_path is not None and Path(reward_path).resolve() != Path(target_path).resolve()
    click.echo(f"loading target {Path(target_path).name}", err=True)
    target = Model(target_path, config(wants_value_head and not separate, capture))
    reward_model = None
    if separate:
        click.echo(f"loading reward model {Path(reward_path).name}", err=True)
        reward_model = Model(reward_path, config(wants_value_head))
    return target, reward_model, value_head


# -- measuring --------------------------------------------------------------------


class Ticking:
    """A reward that advances a progress bar after each score call (one per pair)."""

    def __init__(self, reward, tick):
        self.reward, self.tick, self.name = reward, tick, reward.name

    def score(self, problem, steps, candidates, contexts=None):
        rewards = self.reward.score(problem, steps, candidates, contexts)
        self.tick()
        return rewards


def measure(reward, pairs_by_source: dict[str, list]) -> list[dict]:
    """One evaluate_reward row per source, labelled "<kind> (<source>)"."""
    from ..reward_eval import evaluate_reward

    total = sum(len(pairs) for pairs in pairs_by_source.values())
    rows = []
    with click.progressbar(length=total, label=f"scoring {reward.name}", file=sys.stderr,
                           update_min_steps=max(1, total // 100)) as bar:
        ticking = Ticking(reward, lambda: bar.update(1))
        for source, pairs in pairs_by_source.items():
            row = evaluate_reward(ticking, pairs)
            rows.append({**row, "reward": f"{reward.name} ({source})"})
            reward.reset()  # free its cached sequences for the next kind
    return rows


# -- the report -------------------------------------------------------------------


def command_line(opts: dict) -> str:
    """The command with every effective value (defaults and config file included), so that it
    reruns the same measurement."""
    words = ["specs-local", "eval-reward"]
    for name, value in opts.items():
        if isinstance(value, Path):  # a results file names no machine's absolute paths
            value = os.path.relpath(value)
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(words)


def report(table: str, opts: dict, counts: dict[str, int], models: list[str]) -> str:

    pairs = ", ".join(f"{n} {source}" for source, n in counts.items())
    lines = ["# Reward quality: correct steps against their wrong twins", "", table, "",
             f"- command: `{command_line(opts)}`",
             f"- git revision: {git_revision()}",
             f"- machine: {machine_name()}",
             f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- pairs: {pairs} (seed {opts['seed']})"]
    if models:
        lines.append(f"- models: {', '.join(models)}")
    return "\n".join(lines) + "\n"


@click.command("eval-reward")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Folder with gsm8k.jsonl and math500.jsonl (default: ../shared/data beside the repo, else ./shared/data).")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True, help="Pairs per source.")
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the wrong values.")
@click.option("--kinds", default=DEFAULT_KINDS, show_default=True,
              help=f"Reward kinds, comma-separated; any of {', '.join(REWARD_KINDS)}.")
@click.option("--sources", default=",".join(SOURCES), show_default=True, help="Data sources, comma-separated.")
@click.option("--preset", default="small", show_default=True, help="Preset whose models the specs refer to.")
@click.option("--target", default=None, help="Target model: a GGUF path, a preset role, or hf:REPO/FILE.")
@click.option("--reward", default=None, help="Reward model (verifier, token-prm, value-prm): a GGUF path, a preset role, or hf:REPO/FILE.")
@click.option("--value-head", type=click.Path(dir_okay=False), default=None,
              help="The head .npz of a value-head PRM or a probe (default: the preset's probe head).")
@engine_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the table, command, git revision, machine and date to this markdown file.")
@handle_interrupt
def eval_reward(**opts):
    """Measure how well each reward kind scores a correct step above its wrong twin."""
    from ..reward_eval import build_pairs, format_table
    from ..rewards import make_reward

    opts = {param.name: opts[param.name] for param in click.get_current_context().command.params}  # flag order
    kinds = parse_list(opts["kinds"], REWARD_KINDS, "--kinds")
    sources = parse_list(opts["sources"], SOURCES, "--sources")
    opts["data"] = opts["data"] or default_data_dir()
    files = data_files(opts["data"], sources)
    pairs = build_pairs(files.get("gsm8k"), files.get("math500"), seed=opts["seed"], limit=opts["limit"])
    pairs_by_source = {source: [p for p in pairs if p.source == source] for source in sources}
    counts = {source: len(pairs) for source, pairs in pairs_by_source.items()}
    click.echo("pairs: " + ", ".join(f"{n} {source}" for source, n in counts.items()), err=True)

    target, reward_model, value_head = load_models(kinds, opts)
    try:
        rows = []
        for kind in kinds:
            reward = make_reward(kind, target=target, reward_model=reward_model, value_head=value_head)
            rows += measure(reward, pairs_by_source)
    finally:
        for model in (target, reward_model):
            if model is not None:
                model.close()
    table = format_table(rows)
    click.echo(table)
    if opts["out"] is not None:
        models = [f"{role} {m.name}" for role, m in (("target", target), ("reward", reward_model)) if m is not None]
        opts["out"].parent.mkdir(parents=True, exist_ok=True)
        opts["out"].write_text(report(table, opts, counts, models), encoding="utf-8")
        click.echo(f"wrote {opts['out']}", err=True)
