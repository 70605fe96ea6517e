"""The specs-local command, through click's runner and as a real subprocess, on tiny models."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import kill_once_written
from specs_local.cli import main

TINY_REWARD = ["--reward-kind", "calculator+self"]
FAST = ["--n", "2", "--max-steps", "3", "--max-step-tokens", "8", "--threads", "1", "--ctx", "2048"]


@pytest.fixture()
def models_args(tiny_models):
    # the tiny target cannot use the preset's probe head: self-verification instead
    return ["--draft", str(tiny_models["draft"]), "--target", str(tiny_models["target"]), *TINY_REWARD]


def run(args, **kw):
    result = CliRunner().invoke(main, args, catch_exceptions=False, **kw)
    return result


def test_solve_streams_steps_then_answer_and_stats(models_args):
    result = run(["solve", "What is 12 times 7?", *models_args, *FAST])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("[step 1 · target")  # SPECS starts in target mode
    assert any(line.startswith("Answer: ") for line in lines)
    stats = lines[-1]
    assert stats.startswith("wall ") and "draft /" in stats and "tokens: target" in stats
    estimate = stats[stats.index("est. speedup vs beam-target (n=2): "):]
    assert re.search(r": \d+\.\d\dx \(basis: ", estimate) or ": n/a (the target generated nothing" in estimate
    assert "\x1b[" not in result.output  # piped: no colour codes


def test_solve_json_is_one_object_with_answer_steps_stats(models_args):
    result = run(["solve", "What is 2 + 2?", "--json", *models_args, *FAST])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert set(data) >= {"answer", "steps", "stats", "text", "method"}
    assert data["stats"]["n"] == 2
    assert all({"source", "reward", "accepted", "deferred"} <= set(s) for s in data["steps"])


def test_problem_from_file_and_stdin(models_args, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("What is 3 + 4?\n")
    from_file = run(["solve", "--file", str(path), "--json", "--seed", "1", *models_args, *FAST])
    from_stdin = run(["solve", "-", "--json", "--seed", "1", *models_args, *FAST], input="What is 3 + 4?\n")
    assert from_file.exit_code == from_stdin.exit_code == 0
    assert json.loads(from_file.output)["text"] == json.loads(from_stdin.output)["text"]


def test_config_file_sets_flags_and_flags_win(models_args, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('n = 3\nmax-step-tokens = 8\nmax-steps = 2\nmethod = "beam"\n')
    result = run(["--config", str(config), "solve", "Add 1 and 1.", "--json", *models_args])
    data = json.loads(result.output)
    assert data["stats"]["n"] == 3 and data["method"] == "beam-target"
    result = run(["--config", str(config), "solve", "Add 1 and 1.", "--json", "--n", "2", *models_args])
    assert json.loads(result.output)["stats"]["n"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["solve"], "give a problem"),
        (["solve", "   "], "the problem is empty"),
        (["solve", "x", "--target", "/nope/model.gguf"], "target model not found"),
        (["solve", "x", "--method", "magic"], "Invalid value for '--method'"),
        (["solve", "x", "--beam-answer", "vote"], "Invalid value for '--beam-answer'"),
        (["solve", "--file", "/nope/problem.txt"], "cannot read"),
        (["--config", "/nope/config.toml", "solve", "x"], "config file not found"),
        (["solve", "add one " * 400, "--ctx", "256"], "the context holds 256 (raise --ctx)"),
        (["solve", "x" * 130, "--ctx", "256"], "Error: the prompt leaves no room for a step: "),
        (["solve", "x", "--temperature", "1e-300"], "Error: temperature: must be 0 (greedy) or from 0.01 to 2"),
        (["solve", "x", "--beta", "1.7e308"], "Error: beta: must be from -1000 to 1000, not 1.7e+308"),
        (["solve", "x", "--tau-reject", "nan"], "Error: tau_reject: must be a number"),
        (["solve", "x", "--n", "65"], "Error: n: must be a whole number from 1 to 64, not 65"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, message, models_args):
    result = CliRunner().invoke(main, args + (models_args if "--target" not in args else ["--draft", models_args[1]]))
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and "Stopped" not in result.output


def test_the_cli_spells_the_methods_and_beam_answers_the_searches_have():
    from specs_local import cli
    from specs_local.search import ALIASES, STRATEGIES
    from specs_local.search.config import BEAM_ANSWERS

    assert sorted(cli.METHODS) == sorted({*STRATEGIES, *ALIASES}) and cli.BEAM_ANSWERS == BEAM_ANSWERS
    from specs_local.engine.repack import MODES

    assert cli.CPU_REPACK_MODES == MODES


def test_solve_says_how_it_chose_among_whole_solutions(models_args):
    result = run(["solve", "What is 12 times 7?", *models_args, *FAST, "--method", "best-of-n", "--n", "3",
                  "--select", "majority"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("chosen by "))
    assert line.startswith("chosen by majority from 3 solutions: ")


def test_the_workers_help_says_what_the_default_makes():
    # cluster.default_workers: one worker per --threads CPUs, none kept back
    help_text = " ".join(run(["batch", "--help"]).output.split())
    assert "left spare" not in help_text
    assert "one per --threads CPUs" in help_text and "every CPU is used" in help_text


def test_gpu_offload_asked_of_a_build_without_it_warns(models_args):
    from specs_local.engine import supports_gpu_offload

    result = CliRunner().invoke(main, ["solve", "What is 2 plus 3?", "--n-gpu-layers", "-1", *FAST,
                                       *models_args])
    assert result.exit_code == 0, result.output
    warned = "cannot offload to a GPU; --n-gpu-layers -1 runs on the CPU" in result.stderr
    assert warned == (not supports_gpu_offload())  # CI's CPU build warns; a CUDA or Metal build must not
    assert "cannot offload" not in CliRunner().invoke(main, ["solve", "What is 2 plus 3?", *FAST,
                                                             *models_args]).stderr


def test_a_corrupt_model_file_is_one_line(tmp_path, tiny_models):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(tiny_models["target"].read_bytes()[:5000])
    result = CliRunner().invoke(main, ["solve", "x", "--target", str(bad), "--draft", str(tiny_models["draft"])])
    assert result.exit_code == 1
    assert result.output.startswith("Error: could not load GGUF model") and result.output.count("\n") == 1


def test_the_installed_entry_point_runs(tiny_models):
    out = subprocess.run(
        ["specs-local", "solve", "What is 12 times 7?", "--draft", str(tiny_models["draft"]),
         "--target", str(tiny_models["target"]), *TINY_REWARD, *FAST],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Answer: " in out.stdout and out.stdout.splitlines()[-1].startswith("wall ")


def _problems(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "problem": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n")


def test_batch_survives_sigkill_and_resumes(tiny_models, tmp_path):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _problems(data, 40)
    cmd = ["specs-local", "batch", str(data), "-o", str(out), "--no-progress", "--draft", str(tiny_models["draft"]),
           "--target", str(tiny_models["target"]), "--n", "2", "--max-steps", "6", "--max-step-tokens", "16",
           "--threads", "1", *TINY_REWARD]
    kill_once_written(cmd, out, lines=3)
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] in (b"",) or lines[-1].startswith(b"{")  # at most a torn last line
    done_before = sum(1 for line in lines if line.strip())
    assert 3 <= done_before < 40, "the kill must land mid-batch"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(f"p{i}" for i in range(40))
    assert all("correct" in r and r["gold"] is not None for r in records)


def test_batch_bad_inputs(models_args, tmp_path):
    out = tmp_path / "out.jsonl"
    missing = run(["batch", str(tmp_path / "nope.jsonl"), "-o", str(out), *models_args])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "problem": "1+1?"}\n{"id": "a", "problem": "2+2?"}\n')
    refused = run(["batch", str(dup), "-o", str(out), *models_args])
    assert refused.exit_code == 2 and 'duplicate id "a"' in refused.output and not out.exists()
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"id": "a", "problem": "What is 1+1?", "answer": "2"}\n{not json\n{"id": "c"}\n')
    result = run(["batch", str(mixed), "-o", str(out), "--no-progress", *models_args, *FAST])
    assert result.exit_code == 0, result.output
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "line 2" in records["2"]["error"] and "problem" in records["c"]["error"]
    assert "stats" in records["a"]


def test_batch_refuses_an_output_file_that_is_not_its_own(models_args, tmp_path):
    data, out = tmp_path / "in.jsonl", tmp_path / "config.json"
    _problems(data, 1)
    out.write_text(json.dumps({"id": 7, "name": "config"}))  # what json.dump writes: no final newline
    before = out.read_bytes()
    result = run(["batch", str(data), "-o", str(out), "--no-progress", *models_args, *FAST])
    assert result.exit_code == 1 and "line 1 is not a specs-local record; choose another output file" in result.output
    assert out.read_bytes() == before


def test_ctrl_c_prints_the_trace_so_far_and_exits_130(tiny_models):
    cmd = ["specs-local", "solve", "Count to a million.", "--draft", str(tiny_models["draft"]),
           "--target", str(tiny_models["endless"]), *TINY_REWARD, "--method", "greedy",
           "--max-steps", "100000", "--max-step-tokens", "4", "--ctx", "60000", "--threads", "1"]
    # Signal at a known point, once a few steps are on screen, never by the clock: a race-free test.
    # SIGINT as a terminal delivers it: a shell's background jobs start with it ignored,
    # and a Python started so would never raise KeyboardInterrupt.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = [proc.stdout.readline()]
    while seen[-1] and not seen[-1].startswith("[step 4") and len(seen) < 500:
        seen.append(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert seen[0].startswith("[step 1 · target") and seen[-1].startswith("[step 4"), seen
    assert "Interrupted" in err and "Traceback" not in err


def test_python_dash_m_runs_the_command_without_its_console_script():
    import sys

    out = subprocess.run([sys.executable, "-m", "specs_local", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: specs-local") and "solve" in out.stdout
