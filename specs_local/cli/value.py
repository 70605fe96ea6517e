"""``specs-local value``: collect training data for a value head on your own
target and problems, train the head, and use it with ``--reward-kind probe``.

    specs-local value collect ../shared/data/gsm8k-train.jsonl -o runs/value/small.jsonl --limit 80
    specs-local value train runs/value/small.jsonl -o small-probe.npz
    specs-local value eval small-probe.npz runs/value/held-out.jsonl
    specs-local value replay runs/value/small.jsonl -o runs/value/layers.jsonl --layers 10,final
    specs-local solve --reward-kind calculator+probe --value-head small-probe.npz "What is 12 times 7?"
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import SpecsError
from . import handle_interrupt, search_options
from .batch import InputError, cluster_options, ray_options


@click.group()
def value():
    """Train a value head (probe) on the target's hidden states."""


def capture_names(layers: str, n_layer: int) -> tuple[str, ...]:
    """``--layers`` ("13,18,final", or "auto": the middle, two thirds, and the final norm) as graph nodes."""
    from ..engine.capture import FINAL_NORM, layer_output

    if layers == "auto":
        return layer_output(n_layer // 2), layer_output(2 * n_layer // 3), FINAL_NORM
    names = []
    for part in layers.split(","):
        part = part.strip()
        if part == "final":
            names.append(FINAL_NORM)
        elif part.isdigit() and int(part) < n_layer:
            names.append(layer_output(int(part)))
        else:
            raise click.BadParameter(f"{part!r} is not a layer of 0..{n_layer - 1} or 'final'", param_hint="--layers")
    return tuple(dict.fromkeys(names))


def probe_target(path, engine, layers: str) -> dict:
    """What a collection's meta says of its target: the file, its sha256 and vocabulary,
    the recorded layers (``--layers``) and the row width, read from a copy loaded briefly."""
    from ..engine import Model
    from ..presets import known_sha256
    from ..slots import inspection_slots

    probe = Model(path, engine.model_config(inspection_slots()))
    try:
        names = capture_names(layers, probe.n_layer)
        return {"target_file": probe.name, "target_sha256": known_sha256(Path(path)),
                "target_vocab": probe.vocab_fingerprint, "capture": list(names), "width": probe.n_embd * len(names)}
    finally:
        probe.close()


class CollectProgress:
    """done/total, rate, ETA, and the share of correct solutions so far."""

    def __init__(self, total: int, prior: list[dict], enabled: bool):
        self.total, self.enabled = total, enabled
        self.done, self.done_now = len(prior), 0
        self.solutions = sum(r["n_solutions"] for r in prior)
        self.correct = sum(r["n_correct"] for r in prior)
        self.started = time.monotonic()

    def advance(self, record: dict) -> None:
        self.done, self.done_now = self.done + 1, self.done_now + 1
        self.solutions += record["n_solutions"]
        self.correct += record["n_correct"]
        if not self.enabled:
            return
        rate = self.done_now / max(time.monotonic() - self.started, 1e-9)
        eta = (self.total - self.done) / rate
        click.echo(f"{self.done}/{self.total} | {rate * 60:.2f}/min | ETA {eta / 60:.0f} min | "
                   f"correct solutions {self.correct}/{self.solutions} "
                   f"({self.correct / max(self.solutions, 1):.0%}) | {record['id']}", err=True)


@value.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL of labelled solutions (features beside it); rerunning resumes it.")
@click.option("--samples", "k", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Solutions per problem from each of the target and the draft.")
@click.option("--layers", default="auto", show_default=True,
              help="Target layers whose output is recorded: comma-separated indices and 'final'.")
@click.option("--limit", type=click.IntRange(1), default=None)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--no-draft", is_flag=True, help="Sample from the target only.")
@click.option("--mc-rollouts", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Also label steps Math-Shepherd style: the share of this many target completions "
                   "from just after the step that end correct (0: outcome labels only).")
@click.option("--mc-every", type=click.IntRange(1), default=1, show_default=True,
              help="Monte Carlo labels on every Nth problem only.")
@click.option("--mc-steps", type=click.IntRange(1), default=1000, show_default=True,
              help="Monte Carlo labels on each solution's first S steps only.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@search_options
@ray_options
@handle_interrupt
def collect(input_path, output_path, k, layers, limit, offset, no_draft, mc_rollouts, mc_every, mc_steps,
            progress, ray, workers, gpus_per_worker, **opts):
    """Sample solutions to INPUT's problems (JSONL with answers) step by step and
    record, for every step, the target's hidden state and whether its solution
    ends correct. Never collect on a benchmark set you report on."""
    from ..problems import read_problems
    from ..collect import MonteCarlo, collect_paths, load_collect_models
    from ..collect import collect as run_collect
    from ..output_log import OutputLog
    from ..solver_options import search_setup

    try:
        problems = read_problems(input_path)[offset:][:limit]
    except SpecsError as err:
        raise InputError(str(err))
    unusable = [p for p in problems if p.error is not None or p.gold is None]
    if unusable:  # a label needs a gold answer: refuse before any model loads
        first = unusable[0]
        why = first.error or f"problem {first.id!r} has no 'answer'"
        raise InputError(f"{input_path}: {len(unusable)} of {len(problems)} problems cannot be labelled "
                         f"(line {first.line}: {why})")
    cluster = cluster_options(ray, workers, gpus_per_worker, opts)
    paths = collect_paths(opts, no_draft=no_draft, progress=progress)
    config, engine = search_setup(opts)
    meta = {**probe_target(paths["target"], engine, layers), "draft_file": None if no_draft else Path(paths["draft"]).name,
            "k": k, "temperature": config.temperature, "max_steps": config.max_steps,
            "max_step_tokens": config.max_step_tokens, "seed": config.seed, "data": str(input_path)}
    mc = MonteCarlo(mc_rollouts, mc_every, mc_steps)
    with OutputLog(output_path) as log:  # only to read what is done: the collection opens it again
        prior = [r for r in log.records.values()]
    bar = CollectProgress(len(problems), prior, progress)
    if cluster is not None:
        from ..cluster import run_cluster_collect

        run_cluster_collect(problems, output_path, meta, opts, cluster, no_draft=no_draft, mc=mc,
                            on_record=bar.advance)
    else:
        target, draft, config = load_collect_models(opts, meta, no_draft=no_draft, mc=mc, progress=progress)
        run_collect(problems, output_path, target=target, draft=draft, k=k, config=config, meta=meta,
                    on_record=bar.advance, mc=mc)
    click.echo(f"{bar.done}/{bar.total} problems, {bar.correct}/{bar.solutions} solutions correct -> {output_path}")


@value.command()
@click.argument("collection_path", metavar="COLLECTION", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "head_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The head file (.npz) to write.")
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True,
              help="Share of problems held out for validation (split by problem).")
@click.option("--seed", type=int, default=0, show_default=True)
def train(collection_path, head_path, val_fraction, seed):
    """Fit a calibrated logistic head on COLLECTION (from `value collect`) and write it."""
    from ..collection import load_collection
    from ..probe_train import train_probe

    collection = load_collection(collection_path)
    head, summary = train_probe(collection, val_fraction=val_fraction, seed=seed, data=str(collection_path))
    head.save(head_path)
    for tried in summary["tried"]:
        scalars = "".join(f" + {r:g} x {name}" for name, r in (tried["scalars"] or {}).items())
        click.echo(f"{'+'.join(tried['capture'])}{scalars}: cv pairwise {tried['cv_pairwise']:.3f} "
                   f"(hidden state alone {tried['cv_pairwise_hidden_only']:.3f}) | validation " + describe(tried))
    report = Path(head_path).with_suffix(".report.json")
    report.write_text(json.dumps(summary, indent=2) + "\n")
    click.echo(f"chose {'+'.join(summary['chosen'])} -> {head_path} (figures: {report})")


def describe(fig: dict) -> str:
    """The headline figures in one line."""
    line = (f"pairwise last step {fig['pairwise_last']:.3f} ({fig['pairs_last']} pairs), first differing step "
            f"{fig['pairwise_first_differing']:.3f}")
    if "pairwise_branch" in fig:
        line += f", branch points {fig['pairwise_branch']:.3f} ({fig['pairs_branch']} pairs)"
    for source in ("target", "draft"):
        if f"pairs_same_step_{source}" in fig:
            line += (f" | {source} vs {source}: last step {fig[f'pairwise_last_{source}']:.3f} "
                     f"({fig[f'pairs_last_{source}']}), same step {fig[f'pairwise_same_step_{source}']:.3f} "
                     f"({fig[f'pairs_same_step_{source}']})")
    return line + f" | step AUC {fig['auc_steps']:.3f} | {fig['problems']} problems"


@value.command("eval")
@click.argument("head_path", metavar="HEAD", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("collection_path", metavar="COLLECTION", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def evaluate(head_path, collection_path, as_json):
    """The figures of HEAD on every problem of COLLECTION (collected for the same
    target, on problems the head was not trained on)."""
    from ..collection import load_collection
    from ..probe import ProbeHead
    from ..probe_train import evaluate_head

    head = ProbeHead.load(head_path)
    fig = evaluate_head(head, load_collection(collection_path))
    click.echo(json.dumps(fig, indent=2) if as_json else describe(fig))


@value.command()
@click.argument("source_path", metavar="COLLECTION", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The new collection's JSONL (features beside it); rerunning resumes it.")
@click.option("--layers", default="auto", show_default=True,
              help="Target layers whose output is recorded: comma-separated indices and 'final'.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N problems of COLLECTION.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@search_options
@handle_interrupt
def replay(source_path, output_path, layers, limit, progress, **opts):
    """Read the target's hidden states again for the steps COLLECTION recorded, by
    feeding their text through the target: other layers, or a features file that
    was not kept, without sampling anything. Needs only COLLECTION's JSONL and
    .meta.json, and the target it was collected with."""
    from ..collect import replay as run_replay
    from ..collection import output_paths
    from ..engine import Model
    from ..output_log import OutputLog, read_log
    from ..presets import known_sha256, resolve
    from ..slots import replay_slots
    from ..solver_options import search_setup

    source_meta_path = output_paths(source_path)[1]
    if not source_path.exists() or not source_meta_path.exists():
        raise InputError(f"{source_path} is not a collection (no {source_meta_path.name} beside it)")
    if output_path.resolve() == source_path.resolve():
        raise InputError("the output must be another file than the collection it replays")
    source_meta = json.loads(source_meta_path.read_text())
    records = list(read_log(source_path).values())[:limit]  # read-only: the source is never written
    path = resolve(opts["target"] or "target", role="target", preset=opts["preset"], progress=progress)
    if known_sha256(path) != source_meta["target_sha256"]:
        raise SpecsError(f"{source_path} was collected with {source_meta['target_file']}, not {Path(path).name}: "
                         "its texts, labels and log-probs belong to that target")
    config, engine = search_setup(opts)
    k = source_meta.get("k", 4)
    rows = {key: value for key, value in probe_target(path, engine, layers).items() if key in ("capture", "width")}
    target = Model(path, engine.model_config(replay_slots(k), capture=tuple(rows["capture"])))
    meta = {**source_meta, **rows, "replayed_from": str(source_path)}
    with OutputLog(output_path) as log:  # only to read what is done: the replay opens it again
        prior = list(log.records.values())
    bar = CollectProgress(len(records), prior, progress)
    retokenized = run_replay(records, output_path, target=target, config=config, meta=meta, batch=k,
                             on_record=bar.advance)
    steps = sum(len(sol["steps"]) for r in records for sol in r["solutions"])
    click.echo(f"{bar.done}/{bar.total} problems replayed -> {output_path} ({retokenized} of {steps} steps "
               "tokenize to another length than they were sampled with: their rows are near the original ones)")
