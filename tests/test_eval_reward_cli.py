"""`specs-local eval-reward` end to end: the calculator on real GSM8K pairs, model kinds on a
tiny GGUF model, and bad input."""
from __future__ import annotations

import os

import re

import pytest
from click.testing import CliRunner

from specs_local.cli import main


def table_rows(output: str) -> dict[str, dict[str, str]]:
    """The markdown table in `output`, as {reward label: {column title: cell}}."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    return {row["reward"]: row for row in rows}


def run(*args: str):
    return CliRunner().invoke(main, ["eval-reward", *args])


def test_calculator_on_20_gsm8k_pairs_separates_them(data_dir, tmp_path):
    out = tmp_path / "results" / "reward.md"
    result = run("--data", str(data_dir), "--limit", "20", "--sources", "gsm8k", "--kinds", "calculator",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert list(rows) == ["calculator (gsm8k)"]
    row = rows["calculator (gsm8k)"]
    assert row["pairs"] == "20"
    assert float(row["pairwise acc."]) >= 0.95
    assert float(row["ROC AUC"]) >= 0.95
    assert float(row["mean (correct)"]) > float(row["mean (wrong)"])
    assert "scoring calculator" in result.stderr  # progress goes to stderr, not into the table

    written = out.read_text()
    assert result.stdout.strip() in written  # the same table
    command = re.search(r"command: `(.*)`", written).group(1)
    assert command.startswith("specs-local eval-reward ")
    assert "--limit 20" in command and "--kinds calculator" in command and f"--data {os.path.relpath(data_dir)}" in command  # relative: no machine's paths
    for field in ("git revision: ", "machine: ", "date: 20"):
        assert f"- {field}" in written


def test_model_kinds_on_a_tiny_model_give_every_row(data_dir, tiny_models):
    kinds = ("self", "verifier", "calculator+self")
    result = run("--data", str(data_dir), "--limit", "5", "--kinds", ",".join(kinds),
                 "--target", str(tiny_models["target"]), "--ctx", "2048", "--threads", "1")
    assert result.exit_code == 0, result.output
    # the small preset's reward role uses the target: the verifier follows --target, no second model
    assert "loading target target.gguf" in result.stderr
    assert "loading reward model" not in result.stderr
    rows = table_rows(result.stdout)
    assert list(rows) == [f"{kind} ({source})" for kind in kinds for source in ("gsm8k", "math500")]
    for row in rows.values():
        assert row["pairs"] == "5"
        assert 0.0 <= float(row["mean (correct)"]) <= 1.0
        assert 0.0 <= float(row["mean (wrong)"]) <= 1.0
        assert 0.0 <= float(row["ROC AUC"]) <= 1.0
    # the calculator decides these arithmetic pairs whatever the random model says
    assert float(rows["calculator+self (gsm8k)"]["pairwise acc."]) >= 0.95


def test_a_reward_model_of_its_own_is_loaded_once_beside_the_target(data_dir, tiny_models):
    result = run("--data", str(data_dir), "--limit", "2", "--sources", "gsm8k", "--kinds", "verifier",
                 "--target", str(tiny_models["target"]), "--reward", str(tiny_models["draft"]), "--ctx", "2048")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("loading reward model draft.gguf") == 1
    row = table_rows(result.stdout)["verifier (gsm8k)"]
    assert row["pairs"] == "2" and 0.0 <= float(row["mean (correct)"]) <= 1.0


@pytest.mark.parametrize("args, flag", [
    (["--data", "/nonexistent/data"], "--data"),
    (["--kinds", "calculator,oracle"], "--kinds"),
    (["--sources", "gsm8k,aime"], "--sources"),
])
def test_bad_input_exits_2_with_one_line(args, flag, tmp_path):
    result = run(*args, "--limit", "1")
    assert result.exit_code == 2
    assert result.output.splitlines() == [result.output.strip()]
    assert result.output.startswith(f"Error: {flag}: ")
    assert "Traceback" not in result.output


def test_data_dir_without_the_source_file_is_named(tmp_path):
    result = run("--data", str(tmp_path), "--sources", "math500")
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: --data: data file not found: {tmp_path / 'math500.jsonl'}"
