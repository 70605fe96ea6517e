"""Training data for a value head: solutions sampled step by step, labelled by
their outcome, with the target's hidden state at every step's last token.

Per problem, k solutions come from the target and k from the draft, each batch
of k in one decode per token, at the search's temperature: SPECS judges draft
steps and beam search and deferral judge target steps, so the head must see
both. The hidden state is read in the decode that evaluates the step on the
target: for a draft step, the target's scoring prefill of it (as in SPECS);
for a target step, the decode that feeds its last token (which the next step
would feed anyway). Each step's label is whether its solution ends correct
(outcome supervision, OVM).

Output: a JSONL log of one record per problem (resumable, as `batch`'s) and a
features file of float16 rows that the records point into, plus a
``.meta.json`` that says what the rows are (target file, layers, width).
``replay`` reads the rows again from the records' texts alone (other layers, or a
features file that was not kept).
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .answers import extract_boxed, grade
from .calculator import check_step
from .collection import output_paths
from .engine import Model, Sequence
from .errors import SpecsError
from .output_log import OutputLog
from .problems import Problem
from .search.common import sampler, start
from .search.config import SearchConfig

SOURCES = ("target", "draft")


def sample_solutions(target: Model, policy: Model, problem: str, k: int, config: SearchConfig,
                     rng: np.random.Generator, prefix: str = "") -> list[dict]:
    """k solutions of ``policy`` (the target or the draft), step by step, with the
    target's hidden state after each step: [{"steps": [...], "hidden": [rows]}].
    A ``prefix`` (earlier steps' text) continues a solution instead of starting one."""
    own = policy is target
    heads: list[Sequence] = []  # the target's, then the draft's: each started inside the try, so none leaks
    seqs_t: list[Sequence] = []
    seqs_p: list[Sequence] = []
    try:
        for model in (target,) if own else (target, policy):
            heads.append(start(model, problem, config))
            if prefix:  # fed by the fork below, in one batch with nothing else
                model.append_lazily(heads[-1], model.tokenize(prefix))
        seqs_t = target.fork(heads[0], k)
        seqs_p = seqs_t if own else policy.fork(heads[1], k)
        solutions = [{"steps": [], "hidden": []} for _ in range(k)]
        active = list(range(k))
        for index in range(config.max_steps):
            last = index == config.max_steps - 1
            budget = _budget([target, policy], len(active), config, last)
            if budget is None:
                break  # the context is full: these solutions end unfinished (and count as wrong)
            gens = policy.generate([seqs_p[i] for i in active], sampler(config), rng, max_tokens=budget,
                                   stop_at_delimiter=not last)
            if own:
                target.flush([seqs_t[i] for i in active])  # feeds each step's last token: its hidden state
                target_lp = [g.logprobs for g in gens]
            else:
                target_lp = target.extend([(seqs_t[i], g.tokens) for i, g in zip(active, gens)], kind="scored",
                                          score=True)
            for i, g, lp in zip(active, gens, target_lp):
                solutions[i]["steps"].append({
                    "text": g.text, "tokens": len(g.tokens), "finish": g.finish,
                    # the end-of-generation token sampled (not in the text): replay feeds it again
                    **({"end_token": int(g.tokens[-1])} if g.finish == "eog" else {}),
                    "target_logprob": float(np.mean(lp)) if len(lp) else 0.0,
                    "policy_logprob": g.mean_logprob, "calculator": check_step(g.text),
                })
                solutions[i]["hidden"].append(seqs_t[i].hidden)
            active = [i for i, g in zip(active, gens) if g.finish != "eog"]
            if not active:
                break
    finally:
        target.release_all(seqs_t + heads[:1])
        if not own:
            policy.release_all(seqs_p + heads[1:])
    return solutions


def monte_carlo_values(target: Model, problem: Problem, steps: list[dict], correct: bool, *, first: int, k: int,
                       config: SearchConfig, rng: np.random.Generator) -> list[float]:
    """Math-Shepherd labels for the first ``first`` steps of a solution: the share of
    k target completions from just after the step that end correct. After the
    solution's last step nothing is left to complete, so its value is the outcome."""
    values = []
    for index in range(min(first, len(steps))):
        left = config.max_steps - index - 1
        if index == len(steps) - 1 or left < 1:
            values.append(1.0 if correct else 0.0)
            continue
        prefix = "".join(step["text"] for step in steps[: index + 1])
        rollouts = sample_solutions(target, target, problem.text, k, config.with_(max_steps=left), rng, prefix)
        ends = [extract_boxed(prefix + "".join(step["text"] for step in r["steps"])) for r in rollouts]
        values.append(float(np.mean([grade(answer, problem.gold) is True for answer in ends])))
    return values


def _budget(models: list[Model], n: int, config: SearchConfig, last: bool) -> int | None:
    """Tokens each of n diverging sequences may add this step: the KV cells left in
    every model, shared out; None when not even a short step fits."""
    wanted = config.final_step_tokens if last else config.max_step_tokens
    room = min((m.n_ctx - m.live_cells) // n - 16 for m in models)
    return min(wanted, room) if room >= min(wanted, 16) else None


class FeatureFile:
    """Append-only float16 rows; a record names its rows by offset, so rows
    past the last record (a kill between the two writes) are cut on open."""

    def __init__(self, path: Path, width: int, rows_in_records: int):
        self.path, self.width = path, width
        self._f = open(path, "ab+")
        row_bytes = 2 * width
        have = self._f.seek(0, os.SEEK_END) // row_bytes
        if have < rows_in_records:
            raise SpecsError(f"{path} holds {have} feature rows but its records name {rows_in_records}; "
                             "it does not belong to this log")
        self._f.truncate(rows_in_records * row_bytes)
        self.rows = rows_in_records

    def append(self, rows: np.ndarray) -> int:
        """Write rows durably; returns the offset of the first."""
        offset = self.rows
        self._f.write(np.ascontiguousarray(rows, dtype=np.float16).tobytes())
        self._f.flush()
        os.fsync(self._f.fileno())
        self.rows += len(rows)
        return offset

    def close(self) -> None:
        self._f.close()


def feature_rows(hidden: list[np.ndarray]) -> np.ndarray:
    """Steps' hidden states as the rows of a features file; none at all when no
    step was taken (every solution found the context full from its prompt)."""
    return np.stack(hidden) if hidden else np.zeros((0, 0), dtype=np.float32)


def open_meta(meta_path: Path, meta: dict) -> None:
    """Write the meta file, or check that a resumed run collects the same kind of rows."""
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        for key in ("target_sha256", "capture", "width"):
            if old.get(key) != meta.get(key):
                raise SpecsError(f"{meta_path} was collected with {key} {old.get(key)!r}, not {meta.get(key)!r}; "
                                 "choose another output file")
        return
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def problem_record(problem: Problem, by_source: dict[str, list[dict]], method: str) -> dict:
    """The JSONL record of one problem; its step rows follow one another from an
    offset that the writer sets."""
    solutions = []
    for source, sols in by_source.items():
        for sol in sols:
            text = "".join(step["text"] for step in sol["steps"])
            answer = extract_boxed(text)
            correct = grade(answer, problem.gold) if problem.gold is not None else None
            solutions.append({"source": source, "answer": answer, "correct": correct, "steps": sol["steps"]})
    n_rows = sum(len(s["steps"]) for s in solutions)
    return {"id": problem.id, "problem": problem.text, "gold": problem.gold, "method": method,
            "features": {"offset": None, "rows": n_rows}, "solutions": solutions,
            "n_solutions": len(solutions), "n_correct": sum(s["correct"] is True for s in solutions)}


@dataclass(frozen=True)
class MonteCarlo:
    """Which steps get Math-Shepherd labels besides the outcome label (off by default)."""

    rollouts: int = 0  # k target completions per labelled step; 0: none
    every: int = 1  # every Nth problem of the input
    steps: int = 1_000  # the first S steps of each solution

    def wanted(self, position: int) -> bool:
        return self.rollouts > 0 and position % self.every == 0


@contextmanager
def collection_writer(out: Path, meta: dict):
    """The log of ``out`` and its features file, opened to append (resuming what is done)."""
    features_path, meta_path = output_paths(out)
    open_meta(meta_path, meta)
    with OutputLog(out) as log:
        done_rows = sum(r["features"]["rows"] for r in log.records.values())
        features = FeatureFile(features_path, meta["width"], done_rows)
        try:
            yield log, features
        finally:
            features.close()


def collect_paths(opts: dict, *, no_draft: bool, progress: bool = False) -> dict[str, str]:
    """The files of the target and, unless ``no_draft``, of the draft (never resolved
    without it: no copy, no download, no error for a draft that is not there)."""
    from .presets import resolve

    roles = ("target",) if no_draft else ("target", "draft")
    return {role: resolve(opts[role] or role, role=role, preset=opts["preset"], progress=progress) for role in roles}


def load_collect_models(opts: dict, meta: dict, *, no_draft: bool, mc: MonteCarlo, progress: bool = False):
    """The target (copying out the layers ``meta`` names in every decode), the draft
    (None with ``no_draft``) and the search config a collection samples with, each
    model sized for ``meta``'s samples and ``mc``'s rollouts; in this process or in a
    Ray worker, which checks that its files are the ones ``meta`` names."""
    from .presets import known_sha256
    from .slots import collect_slots
    from .solver_options import search_setup

    paths = collect_paths(opts, no_draft=no_draft, progress=progress)
    if known_sha256(Path(paths["target"])) != meta["target_sha256"]:
        raise SpecsError(f"the target here ({Path(paths['target']).name}) is not the file the collection "
                         f"was started with ({meta['target_file']})")
    config, engine = search_setup(opts)
    slots = collect_slots(meta["k"], mc.rollouts)
    target = Model(paths["target"], engine.model_config(slots["target"], capture=tuple(meta["capture"])))
    if no_draft:
        return target, None, config
    try:
        draft = Model(paths["draft"], engine.model_config(slots["draft"]))
    except BaseException:
        target.close()
        raise
    if draft.vocab_fingerprint != target.vocab_fingerprint:
        target.close()
        draft.close()
        raise SpecsError("the draft and the target have different vocabularies; use --no-draft or another draft")
    return target, draft, config


def collect_problem(problem: Problem, *, target: Model, draft: Model | None, k: int, config: SearchConfig,
                    mc: MonteCarlo = MonteCarlo(), with_mc: bool = False) -> tuple[dict, np.ndarray]:
    """One problem's record (its features offset not yet set) and its feature rows.
    Its random stream comes from the seed and the problem's id alone, so the record
    does not depend on which process collects it, or in what order."""
    rng = np.random.default_rng([config.seed, int(hashlib.sha256(problem.id.encode()).hexdigest()[:8], 16)])
    by_source = {}
    for source in SOURCES:
        policy = target if source == "target" else draft
        if policy is not None:
            by_source[source] = sample_solutions(target, policy, problem.text, k, config, rng)
    rows = feature_rows([h for sols in by_source.values() for s in sols for h in s["hidden"]])
    for sols in by_source.values():
        for s in sols:
            del s["hidden"]
    record = problem_record(problem, by_source, "collect")
    if with_mc:
        for sol in record["solutions"]:
            values = monte_carlo_values(target, problem, sol["steps"], sol["correct"] is True,
                                        first=mc.steps, k=mc.rollouts, config=config, rng=rng)
            for step, value in zip(sol["steps"], values):
                step["mc"], step["mc_k"] = value, mc.rollouts
    return record, rows


def write_collection(problems: list[Problem], out: Path, meta: dict, produce, *, on_record=None, note=None) -> None:
    """Write the collection of every problem not yet in ``out``. ``produce(todo)``
    yields (record, rows) in any order (this process, or Ray workers); a record
    that is an error is told to ``note`` and not written, so a rerun collects it."""
    unlabelled = [p.id for p in problems if p.error is not None or p.gold is None]
    if unlabelled:
        raise SpecsError(f"{len(unlabelled)} problems have no usable answer to label by (first: {unlabelled[0]!r})")
    with collection_writer(out, meta) as (log, features):
        for record, rows in produce([p for p in problems if p.id not in log]):
            if "error" in record:
                if note is not None:
                    note(f"{record['id']}: {record['error']} (not written: a rerun collects it)")
                continue
            record["features"] = {"offset": features.append(rows), "rows": len(rows)}
            log.append(record)
            if on_record is not None:
                on_record(record)


def collect(problems: list[Problem], out: Path, *, target: Model, draft: Model | None, k: int,
            config: SearchConfig, meta: dict, on_record=None, mc: MonteCarlo = MonteCarlo()) -> None:
    """Collect every problem not yet in ``out`` in this process; one durable record each."""
    position = {p.id: i for i, p in enumerate(problems)}  # Monte Carlo labels go by place in the input

    def produce(todo):
        for problem in todo:
            yield collect_problem(problem, target=target, draft=draft, k=k, config=config, mc=mc,
                                  with_mc=mc.wanted(position[problem.id]))

    write_collection(problems, out, meta, produce, on_record=on_record)


def step_tokens(target: Model, step: dict) -> list[int]:
    """The tokens a recorded step was evaluated as: its text, and the end-of-generation
    token that ended the solution (the collection fed it too). Collections made before
    steps recorded that token get the end-of-turn token, the one a chat turn ends with."""
    end = [step.get("end_token", target.vocab.eot_token)] if step["finish"] == "eog" else []
    return target.tokenize(step["text"]) + end


def replay_solutions(target: Model, problem: str, solutions: list[dict], config: SearchConfig) -> list[list[np.ndarray]]:
    """The target's hidden state after each recorded step of each solution, by
    feeding the steps' text again: one fork per solution, one batch per step."""
    head = start(target, problem, config)
    seqs: list[Sequence] = []
    try:
        seqs = target.fork(head, len(solutions))
        hidden: list[list[np.ndarray]] = [[] for _ in solutions]
        for index in range(max(len(s["steps"]) for s in solutions)):
            active = [i for i, s in enumerate(solutions) if index < len(s["steps"])]
            work = [(seqs[i], step_tokens(target, solutions[i]["steps"][index])) for i in active]
            fed = [(seq, tokens) for seq, tokens in work if tokens]
            if fed:
                target.extend(fed, kind="scored")
            for i in active:  # an empty step leaves the state where the last one did
                hidden[i].append(seqs[i].hidden)
    finally:
        target.release_all(seqs + [head])
    return hidden


def replay(records: list[dict], out: Path, *, target: Model, config: SearchConfig, meta: dict, batch: int,
           on_record=None) -> int:
    """Write ``records`` (of another collection) to ``out`` with the target's hidden
    states read anew at each step's last token, ``batch`` solutions at a time: for
    other layers, or for a features file that was not kept. Nothing is sampled; texts,
    labels and log-probs are copied. Returns the steps whose text tokenized to another
    length than was sampled (their rows are near, not equal, to the original ones)."""
    retokenized = 0
    with collection_writer(out, meta) as (log, features):
        for record in records:
            if record["id"] in log:
                continue
            sols = record["solutions"]
            rows = [h for at in range(0, len(sols), batch)
                    for per_solution in replay_solutions(target, record["problem"], sols[at:at + batch], config)
                    for h in per_solution]
            retokenized += sum(len(step_tokens(target, step)) != step["tokens"]
                               for sol in sols for step in sol["steps"])
            offset = features.append(feature_rows(rows))
            record = {**record, "method": "replay", "features": {"offset": offset, "rows": len(rows)}}
            log.append(record)
            if on_record is not None:
                on_record(record)
    return retokenized
