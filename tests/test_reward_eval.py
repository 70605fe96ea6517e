"""The labelled reward-evaluation set and its measurements (data from ../shared/data)."""
from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from specs_local.calculator import NUMERAL
from specs_local.rewards import CalculatorReward
from specs_local.reward_eval import (RewardEvalError, build_pairs, evaluate_reward, format_table,
                                     pairwise_accuracy, roc_auc)


@pytest.fixture(scope="module")
def pairs(data_dir):
    return build_pairs(data_dir / "gsm8k.jsonl", data_dir / "math500.jsonl", seed=0, limit=200)


def test_pairs_are_deterministic_for_a_seed_and_differ_across_seeds(data_dir, pairs):
    again = build_pairs(data_dir / "gsm8k.jsonl", data_dir / "math500.jsonl", seed=0, limit=200)
    other = build_pairs(data_dir / "gsm8k.jsonl", data_dir / "math500.jsonl", seed=1, limit=200)
    assert again == pairs
    assert [p.correct for p in other] == [p.correct for p in pairs]  # same gold steps ...
    assert sum(o.wrong != p.wrong for o, p in zip(other, pairs)) > len(pairs) // 2  # ... other errors


def test_both_sources_give_pairs_up_to_the_limit(pairs):
    sources = [p.source for p in pairs]
    assert sources.count("gsm8k") == 200
    assert 0 < sources.count("math500") <= 200
    assert len({p.id for p in pairs}) == len(pairs)


def test_a_wrong_twin_changes_numbers_only(pairs):
    for pair in pairs:
        assert pair.wrong != pair.correct
        assert "<<" not in pair.correct + pair.wrong + "".join(pair.prefix_steps)
        # the prose is untouched: the error is the only difference
        assert NUMERAL.split(pair.wrong) == NUMERAL.split(pair.correct)


def test_prefix_steps_are_the_earlier_gold_steps(data_dir, pairs):
    record = json.loads((data_dir / "gsm8k.jsonl").read_text().splitlines()[0])
    lines = [re.sub(r"<<[^<>]*>>", "", line) for line in record["solution"].split("\n")[:-1]]
    own = [p for p in pairs if p.problem == record["problem"]]
    assert [p.correct for p in own] == lines  # both lines of its solution compute a result
    assert [p.prefix_steps for p in own] == [lines[:i] for i in range(len(lines))]
    math_pairs = [p for p in pairs if p.source == "math500"]
    for earlier, later in itertools.pairwise(math_pairs):
        if later.problem == earlier.problem:
            assert later.prefix_steps[: len(earlier.prefix_steps) + 1] == earlier.prefix_steps + [earlier.correct]


def test_calculator_separates_gsm8k_pairs(pairs):
    gsm8k = [p for p in pairs if p.source == "gsm8k"]
    row = evaluate_reward(CalculatorReward(), gsm8k)
    assert row["reward"] == "calculator"
    assert row["n_pairs"] == 200
    assert row["pairwise_accuracy"] >= 0.95
    assert row["auc"] >= 0.95
    assert row["mean_correct"] > 0.9 > 0.1 > row["mean_wrong"]
    assert 0 < row["seconds_per_step"] < 0.05


def test_scoring_one_candidate_at_a_time_gives_the_same_numbers(pairs):
    some = pairs[:30]
    batched, single = evaluate_reward(CalculatorReward(), some), evaluate_reward(CalculatorReward(), some, batch=False)
    for key in ("auc", "pairwise_accuracy", "mean_correct", "mean_wrong"):
        assert batched[key] == single[key]


def test_auc_of_a_perfect_and_a_constant_reward():
    assert roc_auc([0.9, 0.8, 0.7], [0.1, 0.2, 0.69]) == 1.0
    assert roc_auc([0.5] * 4, [0.5] * 4) == 0.5
    assert roc_auc([0.1, 0.2], [0.8, 0.9]) == 0.0
    assert pairwise_accuracy([0.9, 0.5, 0.1], [0.1, 0.5, 0.9]) == 0.5


def test_auc_counts_ties_as_half():
    rng = random.Random(0)
    pos = [rng.choice((0.05, 0.5, 0.95)) for _ in range(40)]
    neg = [rng.choice((0.05, 0.5, 0.95)) for _ in range(30)]
    by_pairs = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert roc_auc(pos, neg) == pytest.approx(by_pairs)


def test_table_has_one_row_per_reward(pairs):
    rows = [evaluate_reward(CalculatorReward(), pairs[:20]), evaluate_reward(CalculatorReward(), pairs[:10])]
    rows[1]["reward"] = "calculator (10 pairs)"
    lines = format_table(rows).splitlines()
    assert lines[0].startswith("| reward | pairs | ROC AUC | pairwise acc.")
    assert re.fullmatch(r"\|[-:|]+\|", lines[1])
    assert lines[2].startswith("| calculator | 20 |")
    assert lines[3].startswith("| calculator (10 pairs) | 10 |")
    assert len(lines) == 4


def test_bad_input_is_a_one_line_error(tmp_path):
    with pytest.raises(RewardEvalError, match="data file not found: .*missing.jsonl"):
        build_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(RewardEvalError, match="broken.jsonl:1: record needs id, problem and solution"):
        build_pairs(tmp_path / "broken.jsonl")
    with pytest.raises(RewardEvalError, match="no step pairs"):
        evaluate_reward(CalculatorReward(), [])
