"""From a collection to a probe head: a validation split by problem, a choice of
layers, the fit, and the figures that matter for search.

What matters is discrimination *within* a problem: a search chooses among
candidates for the same problem, so a head that only recognises hard problems
does not help it. The headline figures are therefore pairwise accuracies over
same-problem pairs of one correct and one wrong solution, scored at their last
step and at their first differing step; across-problem AUC is reported too.
"""
from __future__ import annotations

import datetime
import hashlib

import numpy as np

from .collection import Collection
from .errors import SpecsError
from .probe import SOLUTION_LOGPROB, ProbeHead, pairwise_accuracy, roc_auc, train_head


def validation_mask(groups: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """True for the rows of the validation problems: a fixed share of problems,
    chosen by a hash of the id, so the split never moves as a collection grows."""
    def bucket(problem_id: str) -> float:
        digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    chosen = {g: bucket(str(g)) < fraction for g in np.unique(groups)}
    return np.array([chosen[g] for g in groups])


def columns(meta: dict, names: list[str]) -> np.ndarray:
    """Feature columns of the captured nodes ``names`` (each node is one block of the row)."""
    capture, width = meta["capture"], meta["width"] // len(meta["capture"])
    return np.concatenate([np.arange(capture.index(n) * width, (capture.index(n) + 1) * width) for n in names])


def solution_scores(collection: Collection, scores: np.ndarray, rows: np.ndarray, at: str) -> tuple:
    """One score per solution among ``rows``: at its last step, or at the step where
    it first differs from the other solutions of its problem (there: step 0 when
    solutions are sampled independently from the prompt)."""
    picked = {}
    for r in np.flatnonzero(rows):
        sol = collection.solutions[r]
        step = collection.step_index[r]
        if at == "last":
            if sol not in picked or step > collection.step_index[picked[sol]]:
                picked[sol] = r
        elif step == 0:  # first differing step
            picked[sol] = r
    idx = np.array(sorted(picked.values()))
    return scores[idx], collection.labels[idx], collection.groups[idx]


def branch_point_accuracy(collection: Collection, scores: np.ndarray, rows: np.ndarray) -> tuple[float, int]:
    """Over pairs of candidate steps for one prefix whose Monte Carlo values differ:
    the share the head orders as those values do (ties in score count 1/2)."""
    labelled = rows & np.isfinite(collection.mc)
    wins, pairs = 0.0, 0
    for key in np.unique(collection.prefix[labelled]):
        at = np.flatnonzero(labelled & (collection.prefix == key))
        v, s = collection.mc[at], scores[at]
        dv, ds = v[:, None] - v[None, :], s[:, None] - s[None, :]
        upper = np.triu(dv != 0, 1)
        pairs += int(upper.sum())
        wins += float(np.sum((np.sign(dv) == np.sign(ds))[upper]) + 0.5 * np.sum((ds == 0)[upper]))
    return (wins / pairs if pairs else float("nan")), pairs


def figures(collection: Collection, scores: np.ndarray, rows: np.ndarray) -> dict:
    """The headline figures of ``scores`` over ``rows`` (the validation problems), and,
    per source, pairs of one model's solutions: at their last steps, and step by
    step (a right and a wrong solution's steps at the same depth)."""
    out = {}
    for at in ("last", "first_differing"):
        s, y, g = solution_scores(collection, scores, rows, at)
        acc, pairs = pairwise_accuracy(s, y, g)
        out[f"pairwise_{at}"], out[f"pairs_{at}"] = acc, pairs
    for source in np.unique(collection.source[rows]):  # what a search compares: candidates from one model
        own = rows & (collection.source == source)
        s, y, g = solution_scores(collection, scores, own, "last")
        out[f"pairwise_last_{source}"], out[f"pairs_last_{source}"] = pairwise_accuracy(s, y, g)
        depth = np.char.add(collection.groups[own].astype(str), "|" + collection.step_index[own].astype(str))
        acc, pairs = pairwise_accuracy(scores[own], collection.labels[own], depth)
        out[f"pairwise_same_step_{source}"], out[f"pairs_same_step_{source}"] = acc, pairs
    if collection.mc is not None and np.isfinite(collection.mc[rows]).any():
        out["pairwise_branch"], out["pairs_branch"] = branch_point_accuracy(collection, scores, rows)
    out["auc_steps"] = roc_auc(scores[rows], collection.labels[rows])
    out["rows"], out["problems"] = int(rows.sum()), int(len(np.unique(collection.groups[rows])))
    return out


def train_probe(collection: Collection, *, candidates: list[list[str]] | None = None, val_fraction: float = 0.2,
                seed: int = 0, data: str = "", train_problems: int | None = None,
                scalar_names: tuple[str, ...] = (SOLUTION_LOGPROB,)) -> tuple[ProbeHead, dict]:
    """Fit a head on each candidate set of nodes (default: each node alone, and all) on the
    training problems (the first ``train_problems`` of them, if given: a learning
    curve), keep the one with the best cross-validated pairwise accuracy, and
    report its validation figures. ``scalar_names`` may join each (train_head
    keeps those that raise its cross-validated pairwise accuracy)."""
    meta = collection.meta
    if candidates is None:  # each recorded layer alone, then all of them side by side
        candidates = [[name] for name in meta["capture"]] + ([list(meta["capture"])] if len(meta["capture"]) > 1 else [])
    val = validation_mask(collection.groups, val_fraction, seed)
    train = ~val
    if train_problems is not None:
        kept = list(dict.fromkeys(collection.groups[train]))[:train_problems]
        train &= np.isin(collection.groups, kept)
    if not train.any() or not val.any():
        raise SpecsError(f"{len(np.unique(collection.groups))} problems are too few to split "
                         f"{1 - val_fraction:.0%}/{val_fraction:.0%} by problem")
    scalars = collection.scalar_matrix(list(scalar_names))
    tried = []
    for names in candidates:
        cols = columns(meta, names)
        head, report = train_head(collection.features[train][:, cols], collection.labels[train],
                                  collection.groups[train], feature_names=[f"{n}[{i}]" for n in names
                                                                          for i in range(len(cols) // len(names))],
                                  seed=seed, scalars=None if scalars is None else scalars[train],
                                  scalar_names=scalar_names)
        val_figures = figures(collection, _predict(head, collection, cols), val)
        tried.append({"capture": names, "cv": report, "validation": val_figures, "head": head})
    best = max(tried, key=lambda t: (t["cv"].get("cv_pairwise_accuracy") or 0.0))
    head = best["head"]
    head.provenance.update({
        "capture": best["capture"],
        "target_vocab": meta["target_vocab"],
        "target_sha256": meta["target_sha256"],
        "target_file": meta["target_file"],
        "data": data,
        "date": datetime.date.today().isoformat(),
        "collection": {k: meta[k] for k in ("data", "k", "temperature", "max_steps", "max_step_tokens") if k in meta},
        "split": {"val_fraction": val_fraction, "seed": seed},  # validation_mask's arguments
        "validation": best["validation"],
        "cv": {k: v for k, v in best["cv"].items() if not isinstance(v, (list, dict)) or k == "scalars"},
    })
    summary = {"chosen": best["capture"], "train_problems": int(len(np.unique(collection.groups[train]))),
               "train_rows": int(train.sum()),
               "tried": [{"capture": t["capture"], "cv_pairwise": t["cv"].get("cv_pairwise_accuracy"),
                          "cv_pairwise_hidden_only": t["cv"].get("cv_pairwise_hidden_only"),
                          "scalars": t["cv"].get("scalars"), **t["validation"]} for t in tried]}
    return head, summary


def evaluate_head(head: ProbeHead, collection: Collection) -> dict:
    """A head's figures on every row of a collection of the same target."""
    head.require("target_vocab", collection.meta["target_vocab"], what="collection's target")
    capture = head.provenance.get("capture") or []
    missing = [name for name in capture if name not in collection.meta["capture"]]
    if missing:
        raise SpecsError(f"the collection holds no {missing[0]} rows, which the head reads")
    rows = np.ones(len(collection.labels), dtype=bool)
    return figures(collection, predict_rows(head, collection), rows)


def predict_rows(head: ProbeHead, collection: Collection) -> np.ndarray:
    """The head's value of every row of a collection."""
    return _predict(head, collection, columns(collection.meta, head.provenance.get("capture") or []))


def _predict(head: ProbeHead, collection: Collection, cols: np.ndarray, block: int = 4096) -> np.ndarray:
    features, scalars = collection.features, collection.scalar_matrix(head.scalar_names)
    return np.concatenate([head.predict(features[i:i + block][:, cols], None if scalars is None else scalars[i:i + block])
                           for i in range(0, len(features), block)])
