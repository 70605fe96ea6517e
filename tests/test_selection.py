"""The solution-level selector, SPECS with k chains, and early stopping by confidence."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from specs_local.errors import SpecsError
from specs_local.sampling import SamplerParams, token_confidence
from specs_local.search import SearchConfig
from specs_local.search.best_of_n import drawn, turns
from specs_local.selection import (RULES, Candidate, agreed, choose, from_record, lowest_window, solution_scores)
from specs_local.solver import EngineOptions, Solver

PROBLEM = "What is 12 times 7?"
ENGINE = EngineOptions(threads=1, ctx=4096)


def cand(answer, logprob, ended=True, vetoed=False, reward=0.5, certainty=1.0, window=1.0):
    return Candidate(answer, {"logprob": logprob, "certainty": certainty, "window": window, "reward": reward},
                     ended=ended, vetoed=vetoed)


def test_token_confidence_of_a_sure_and_an_unsure_row():
    sure = np.full(1000, -20.0, dtype=np.float32)
    sure[3] = 20.0
    flat = np.zeros(1000, dtype=np.float32)
    (c_sure, t_sure), (c_flat, t_flat) = token_confidence(np.stack([sure, flat]))
    assert c_flat == pytest.approx(0.0, abs=1e-5)  # uniform: no certainty
    logp = sure.astype(float) - np.log(np.exp(sure.astype(float)).sum())
    assert c_sure == pytest.approx(-np.log(1000) - logp.mean(), rel=1e-4)  # KL(uniform || p), by definition
    assert t_flat == pytest.approx(np.log(1000), rel=1e-4)  # every top token has log-prob -log V
    assert t_sure > t_flat


def test_solution_scores_and_the_lowest_window():
    assert lowest_window([3, 3, 1, 1, 3, 3], window=2) == 1.0
    assert lowest_window([2, 4], window=32) == 3.0  # shorter than a window: the mean
    rows = np.array([[-0.5, 2.0, 5.0], [-1.5, 4.0, 3.0]])
    scores = solution_scores(rows, reward=0.7, window=1)
    assert scores == {"logprob": -1.0, "certainty": 3.0, "window": 3.0, "reward": 0.7}
    assert math.isnan(solution_scores(np.empty((0, 3)))["logprob"])


def test_each_rule_chooses_as_it_says():
    cs = [cand("5", -0.9), cand("7", -0.2), cand("5", -0.8), cand("5", -0.85)]
    assert choose(cs, "logprob") == 1
    assert choose(cs, "majority") == 2  # "5" wins; its most likely candidate
    assert choose(cs, "vote-logprob") == 1  # exp(10 x log-prob): one sure sample outweighs three unsure ones
    cs = [cand("5", -0.21), cand("7", -0.2), cand("5", -0.22)]
    assert choose(cs, "vote-logprob") == 0  # two about as sure outweigh one
    assert choose([cand("5", -0.2, window=3.0), cand("7", -0.1, window=2.0)], "window") == 0


def test_the_veto_and_unfinished_solutions_step_aside_unless_nothing_is_left():
    cs = [cand("5", -0.1, vetoed=True), cand("7", -0.9), cand("8", -0.05, ended=False)]
    assert choose(cs, "logprob") == 1
    assert choose(cs, "logprob", veto=False) == 0
    assert choose([cand("5", -0.1, vetoed=True), cand("7", -0.2, vetoed=True)], "logprob") == 0
    assert choose([cand(None, -0.1), cand("7", -0.9)], "logprob") == 1  # an answer beats none
    with pytest.raises(ValueError, match="unknown selection rule"):
        choose(cs, "best")
    with pytest.raises(SpecsError, match="unknown selection rule 'best'"):
        SearchConfig(select="best")


def test_agreement_counts_only_finished_unvetoed_answers_and_sets_the_turns():
    assert agreed([cand("5", -1), cand("5.0", -1)], 2)  # one answer, written two ways
    assert not agreed([cand("5", -1), cand("5", -1, ended=False)], 2)
    assert not agreed([cand("5", -1), cand("5", -1, vetoed=True)], 2)
    assert agreed([cand("5", -1), cand("5", -1, vetoed=True)], 2, veto=False)
    assert not agreed([cand(None, -1), cand(None, -1)], 2)
    assert turns(4, 0) == [range(4)] and turns(4, 4) == [range(4)]
    assert turns(4, 2) == [range(2), range(2, 3), range(3, 4)]  # the fewest that can agree, then one at a time
    assert drawn([cand("1", -1), cand("2", -1), cand("2", -1), cand("1", -1)], 2) == 3
    assert drawn([cand("1", -1), cand("2", -1), cand("3", -1), cand("4", -1)], 2) == 4
    assert drawn([cand("1", -1), cand("2", -1), cand("3", -1), cand("4", -1)], 0) == 4


@pytest.fixture(scope="module")
def boxed(tiny_models):
    """Solutions of boxed digits: the samples' answers differ, so the rules disagree."""
    s = Solver.from_paths(tiny_models["boxed"], tiny_models["boxed-draft"], reward_kind="calculator",
                          config=SearchConfig(n=4, k=3, max_steps=6, max_step_tokens=12, final_step_tokens=24, seed=1),
                          engine=ENGINE)
    yield s
    s.close()


@pytest.mark.parametrize("method,changes", [("best-of-n", {}), ("specs", {"k": 3, "n": 2}),
                                            ("beam-target", {"beam_answer": "select"})])
def test_records_let_every_rule_be_recomputed_and_give_the_searchs_answer(boxed, method, changes):
    answers_by_rule = {}
    for rule in RULES:
        for seed in range(3):
            result = boxed.solve(PROBLEM, method=method, select=rule, seed=seed, **changes)
            extra = result.extra
            candidates = [from_record(c) for c in extra["candidates"]]
            assert extra["select"] == rule and len(candidates) >= 2
            assert choose(candidates, rule, veto=extra["veto"]) == extra["chosen"]
            assert result.answer == candidates[extra["chosen"]].answer
            answers_by_rule.setdefault(rule, []).append(result.answer)
    assert len({tuple(a) for a in answers_by_rule.values()}) > 1  # the rules do not all agree


def test_k_chains_share_one_decode_per_round(tiny_models):
    """Three SPECS chains that always accept their drafts: each round is one draft batch and one
    target scoring prefill for all chains, so the target's non-generation decodes are the
    prompt's, one that feeds the first target step's last tokens, and one per draft round,
    not one per chain and round."""
    s = Solver.from_paths(tiny_models["target"], tiny_models["draft"], reward_kind="calculator",
                          config=SearchConfig(n=2, k=3, max_steps=4, max_step_tokens=6, final_step_tokens=8,
                                              tau_reject=-1e9, tau_switch=-1.0), engine=ENGINE)
    try:
        result = s.solve(PROBLEM, method="specs")
        target = result.stats["models"]["target"]
        rounds = max(chain["steps"] for chain in result.extra["chains"])
        assert rounds >= 2 and len(result.extra["chains"]) == 3
        assert target["decode_calls"] - target["generation_calls"] == 2 + (rounds - 1)
        draft_rows = {int(size) for size in result.stats["models"]["draft"]["decode_batches"]}
        assert 6 in draft_rows  # 3 chains x 2 drafts in one batch
        for model in s.models.distinct().values():
            assert model.live_sequences == []
    finally:
        s.close()


def test_one_chain_is_plain_specs(tiny_models):
    """k = 1 takes the first chain's random stream: the same steps as SPECS always gave."""
    s = Solver.from_paths(tiny_models["target"], tiny_models["draft"], reward_kind="calculator",
                          config=SearchConfig(n=3, k=3, max_steps=4, max_step_tokens=8, seed=5), engine=ENGINE)
    try:
        one = s.solve(PROBLEM, method="specs", k=1)
        three = s.solve(PROBLEM, method="specs")
        assert [st.text for st in one.steps]
        assert len(three.extra["candidates"]) == 3 and len(one.extra["candidates"]) == 1
        first = three.extra["candidates"][0]
        assert first["tokens"] == sum(st.tokens for st in one.steps)
    finally:
        s.close()


def test_an_early_stopped_sample_frees_its_sequence(open_tiny):
    from specs_local.engine import ModelConfig

    target = open_tiny("target", ModelConfig(n_ctx=1024, n_seq_max=8, n_threads=1))
    head = target.new_sequence(target.tokenize(PROMPT_TEXT))
    kids = target.fork(head, 3)
    rngs = [np.random.default_rng(i) for i in range(3)]
    calls = target.usage.generation_calls
    gens = target.generate(kids, SamplerParams(1.0), rngs, max_tokens=12, stop_at_delimiter=False,
                           stop_below=(1e9, 2))  # no row is that sure: every one stops after 2 tokens
    assert [g.finish for g in gens] == ["low_confidence"] * 3
    assert [len(g.tokens) for g in gens] == [2, 2, 2]
    assert target.live_sequences == [head]  # stopped rows gave back their sequences and cells
    assert target.usage.generation_calls - calls == 1  # the first token's row only
    kept = target.generate(target.fork(head, 2), SamplerParams(1.0), rngs[:2], max_tokens=6, stop_at_delimiter=False,
                           stop_below=(-1e9, 2))
    assert all(g.finish == "length" and len(g.confidence) == len(g.tokens) == 6 for g in kept)


PROMPT_TEXT = "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n"


def test_early_stopping_saves_rows_and_keeps_the_other_samples(boxed):
    """Each sample draws from its own stream: stopping one leaves the others' text as it was."""
    full = boxed.solve(PROBLEM, method="best-of-n", n=4, seed=2)
    confidence = [c.get("confidence", []) for c in full.extra["candidates"]]
    window = 4
    lows = [lowest_window(c, window) for c in confidence]
    bar = sorted(lows)[1] + 1e-6  # stops the two least sure samples (at least)
    stopped = boxed.solve(PROBLEM, method="best-of-n", n=4, seed=2, stop_confidence=bar, window=window)
    cands = stopped.extra["candidates"]
    assert sum(not c["ended"] for c in cands) >= 2
    rows = lambda r: r.stats["models"]["target"]["generated"]  # noqa: E731
    assert rows(stopped) < rows(full)
    for before, after in zip(full.extra["candidates"], cands):
        if after["ended"]:
            assert after["answer"] == before["answer"] and after["tokens"] == before["tokens"]


@pytest.mark.parametrize("seed,draws", [(5, 2), (10, 3), (2, 4)])  # agreement after 2 samples, after 3, never
def test_a_consensus_stop_draws_no_sample_once_two_agree(boxed, seed, draws):
    """The samples it draws are the full run's first ones (their own streams), it answers by the
    rule among them, and the samples it leaves out cost no rows."""
    full = boxed.solve(PROBLEM, method="best-of-n", n=4, seed=seed)
    stopped = boxed.solve(PROBLEM, method="best-of-n", n=4, seed=seed, consensus=2)
    kept = [(c["answer"], c["tokens"], c["ended"]) for c in stopped.extra["candidates"]]
    assert kept == [(c["answer"], c["tokens"], c["ended"]) for c in full.extra["candidates"][:draws]]
    first = [from_record(c) for c in full.extra["candidates"][:draws]]
    assert stopped.answer == first[choose(first, "logprob")].answer
    rows = lambda r: r.stats["models"]["target"]["generated"]  # noqa: E731
    saved = sum(c["tokens"] - 1 for c in full.extra["candidates"][draws:])  # a last token is sampled, not decoded
    assert rows(full) - rows(stopped) == saved
    assert boxed.models.target.live_sequences == []


def bench_boxed(tiny_models, data_dir, out: Path, methods: str, *extra: str) -> None:
    """`specs-local bench` of the boxed tiny models on 4 problems, as a user runs it."""
    from click.testing import CliRunner

    from specs_local.cli import main

    args = ["bench", str(data_dir / "gsm8k.jsonl"), "--limit", "4", "--methods", methods, "--out", str(out),
            "--target", str(tiny_models["boxed"]), "--draft", str(tiny_models["boxed-draft"]),
            "--reward-kind", "calculator", "--max-step-tokens", "12", "--threads", "1", "--no-progress", *extra]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0


def records_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def selection_rules(*args) -> subprocess.CompletedProcess:
    """scripts/selection_rules.py, run as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "selection_rules.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_the_rules_script_recomputes_a_runs_choices_and_replays_early_stopping(tiny_models, data_dir, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    bench_boxed(tiny_models, data_dir, out, "best-of-n@n=4@select=majority", "--trace")
    log = out / "best-of-n@n=4@select=majority.jsonl"
    records = records_of(log)
    assert all(len(r["selection"]["candidates"]) == 4 and "confidence" not in r["selection"]["candidates"][0]
               for r in records)  # every record keeps the scores; only the trace keeps per-token confidence
    done = selection_rules(log, "--json", tmp_path / "rules.json", "--stop-window", "4")
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "rules.json").read_text())
    assert figures["problems"] == 4 and figures["mismatches"] == []
    own = sum(r["correct"] for r in records)
    assert figures["rules"]["majority"]["solved"] == own  # the run's own rule, recomputed
    assert "recomputed choices that differ from the recorded ones: 0" in done.stdout
    bars = figures["early_stopping"]["bars"]
    assert bars and all(0 <= b["rows_saved"] <= figures["early_stopping"]["total_rows"] for b in bars)
    assert bars[-1]["stopped"] >= bars[0]["stopped"]  # a higher bar stops more

    # The first candidate alone: every rule must give it, so each solves what one sample did.
    done = selection_rules(log, "--first", "1", "--json", tmp_path / "first.json")
    assert done.returncode == 0, done.stderr
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["first"] == 1 and first["oracle"] == first["one_sample"] <= figures["oracle"]
    assert {rule["solved"] for rule in first["rules"].values()} == {first["oracle"]}


def test_the_rules_script_replays_a_consensus_stop_as_a_run_with_it_answers(tiny_models, data_dir, tmp_path,
                                                                            monkeypatch):
    """Replayed from a run that drew every sample, the consensus stop gives the answers a run with
    it gave, and the rows it would have saved."""
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    full, stopped = "best-of-n@n=4@select=majority", "best-of-n@n=4@select=majority@consensus=2"
    bench_boxed(tiny_models, data_dir, out, f"{full},{stopped}", "--seed", "1")  # two of the first three agree
    done = selection_rules(out / f"{full}.jsonl", "--consensus", "2", "--json", tmp_path / "rules.json")
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "rules.json").read_text())
    runs = {arm: records_of(out / f"{arm}.jsonl") for arm in (full, stopped)}
    assert [r["stats"]["settings"]["consensus"] for r in runs[stopped]] == [2] * 4
    assert figures["rules"]["majority"]["solved"] == sum(r["correct"] for r in runs[stopped])
    kept = sum(c["tokens"] for r in runs[stopped] for c in r["selection"]["candidates"])
    assert figures["consensus_rows"]["kept"] == figures["rows"] == kept < figures["consensus_rows"]["rows"]


def test_the_rules_script_replays_a_bar_with_the_consensus_stop_as_a_run_with_both_answers(tiny_models, data_dir,
                                                                                           tmp_path, monkeypatch):
    """A bar and a consensus stop together, replayed from a traced run that drew every sample: a
    stopped sample neither votes nor makes the others agree. The replay gives the answers and the
    rows of a run with both."""
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(tmp_path / "home"))
    full = "best-of-n@n=4@select=majority"
    bench_boxed(tiny_models, data_dir, tmp_path / "full", full, "--seed", "1", "--trace")
    records = records_of(tmp_path / "full" / f"{full}.jsonl")
    # At this seed the samples answer 2, 4, 4, 2 in 30, 10, 40 and 20 tokens: the consensus stop
    # alone draws three. A 35-token window can stop only the 40-token sample, the third, which
    # leaves no two finished samples agreeing until the fourth. (Its last token ends it whatever
    # the window ending there says.)
    lengths = [c["tokens"] for c in records[0]["selection"]["candidates"]]
    assert lengths == [30, 10, 40, 20]
    bar = lowest_window(records[0]["trace"]["extra"]["candidates"][2]["confidence"][:-1], 35) + 1e-3
    arm = f"{full}@consensus=2@stop_confidence={bar!r}@window=35"
    bench_boxed(tiny_models, data_dir, tmp_path / "both", arm, "--seed", "1", "--trace")
    both = records_of(tmp_path / "both" / f"{arm}.jsonl")
    assert [len(r["selection"]["candidates"]) for r in both] == [4] * 4
    assert [[c["ended"] for c in r["selection"]["candidates"]] for r in both] == [[True, True, False, True]] * 4
    done = selection_rules(tmp_path / "full" / f"{full}.jsonl", "--consensus", "2", "--stop-window", "35",
                           "--stop-bars", repr(bar), "--json", tmp_path / "rules.json")
    assert done.returncode == 0, done.stderr
    given = json.loads((tmp_path / "rules.json").read_text())["early_stopping"]["bars"][-1]
    assert given["bar"] == bar and given["stopped"] == 4
    assert given["rules"]["majority"]["solved"] == sum(r["correct"] for r in both)
    rows = sum(c["tokens"] for r in records for c in r["selection"]["candidates"])
    decoded = sum(c["tokens"] for r in both for c in r["selection"]["candidates"])
    assert given["rows_saved"] == rows - decoded > 0
    refused = selection_rules(tmp_path / "full" / f"{full}.jsonl", "--stop-bars", "8,high")
    assert refused.returncode == 2 and "--stop-bars takes numbers" in refused.stderr
    assert "Traceback" not in refused.stderr
