"""The analysis scripts under scripts/, run as a user runs them, on records in the bench's format."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT


def _step(source: str, *, deferred: bool = False, reward: float = 0.5) -> dict:
    return {"text": f"a {source} step\n\n", "source": source, "reward": reward, "deferred": deferred,
            "score": 3.5 if source == "draft" else None}


def _record(pid: str, method: str, correct: bool, steps: list[dict] | None = None) -> dict:
    record = {"id": pid, "method": method, "answer": "1" if correct else "2", "gold": "1", "correct": correct}
    if steps is not None:
        record["trace"] = {"steps": steps, "text": "".join(s["text"] for s in steps)}
    return record


def _error(pid: str, method: str) -> dict:
    """A bench error record: the solve failed; graded wrong against its gold answer."""
    return {"id": pid, "method": method, "answer": None, "gold": "1", "correct": False, "error": "boom"}


def _write_run(folder, records_by_method: dict[str, list[dict]]):
    """A bench --out folder holding these records, one JSONL file per method."""
    folder.mkdir()
    for method, records in records_by_method.items():
        (folder / f"{method}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_specs_traces_splits_problems_by_accepted_drafts_and_lists_the_lost_ones(tmp_path):
    specs = [_record("p1", "specs", False, [_step("target"), _step("target", deferred=True)]),
             _record("p2", "specs", True, [_step("target"), _step("draft", reward=0.8)]),
             _record("p3", "specs", False, [_step("target"), _step("draft", reward=0.7)])]
    greedy = [_record("p1", "greedy-target", True), _record("p2", "greedy-target", True),
              _record("p3", "greedy-target", False)]
    run_dir = _write_run(tmp_path / "run", {"specs": specs, "greedy-target": greedy})
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "specs_traces.py"), str(run_dir), "--show-lost"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "| target only | 1 | 0 | 1 |" in lines and "| with drafts | 2 | 1 | 1 |" in lines
    assert "accepted draft steps: 2; problems SPECS lost that another method solved: 1" in lines
    assert any(line.startswith("- p1 (target only, TT*): specs 2, gold 1; right: greedy-target") for line in lines)
    assert not any(line.startswith("- p3") for line in lines)  # lost by every method


def test_specs_traces_refuses_an_untraced_run_in_one_line(tmp_path):
    (tmp_path / "specs.jsonl").write_text(json.dumps(_record("p1", "specs", True)) + "\n")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "specs_traces.py"), str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "no traced specs records" in run.stderr


def test_pool_runs_lets_a_later_folder_replace_a_method_and_pairs_the_methods(tmp_path):
    old = _write_run(tmp_path / "old", {
        "specs": [_record("p1", "specs", False), _record("p2", "specs", False), _record("p3", "specs", True)],
        "greedy-target": [_record("p1", "greedy-target", True), _record("p2", "greedy-target", False),
                          _record("p3", "greedy-target", True), _error("p4", "greedy-target")]})
    new = _write_run(tmp_path / "new", {"specs": [_record("p1", "specs", True), _record("p2", "specs", True),
                                                  _error("p3", "specs")]})
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "pool_runs.py"), str(old), str(new),
                          "--methods", "specs,greedy-target"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    # the new specs records replace the old ones, the error too: p3 failed, though the old run solved it
    specs = next(line for line in lines if line.startswith("| specs | "))
    assert specs.startswith("| specs | 2/3 = 67% [") and specs.endswith(f"| {new} (3) |")  # nothing left of old
    # an error counts as not solved, as the bench report counts it
    assert any(line.startswith("| greedy-target | 2/4 = 50% [") for line in lines)
    assert "| specs, greedy-target | 3 | 1 | 1 | 1.00 |" in lines  # specs lost p3 to its error


def test_pool_runs_refuses_a_missing_folder_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "pool_runs.py"), str(tmp_path / "nowhere")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "not a folder" in run.stderr


def _timed(pid: str, method: str, correct: bool, seconds: float) -> dict:
    return {**_record(pid, method, correct), "stats": {"wall_seconds": seconds}}


def test_frontier_pools_accuracy_and_takes_latency_within_each_run(tmp_path):
    """Latency is compared within a folder only: the second run's machine is twice as slow, and
    best-of-n still costs twice greedy's time on every problem."""
    fast = _write_run(tmp_path / "fast", {
        "greedy-target": [_timed("p1", "greedy-target", True, 10), _timed("p2", "greedy-target", False, 10)],
        "best-of-n": [_timed("p1", "best-of-n", True, 20), _timed("p2", "best-of-n", True, 20)],
        "specs": [_timed("p1", "specs", False, 40), _timed("p2", "specs", False, 40)]})
    slow = _write_run(tmp_path / "slow", {
        "greedy-target": [_timed("p3", "greedy-target", False, 20)],
        "best-of-n": [_timed("p3", "best-of-n", True, 40)]})
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "frontier.py"), str(fast), str(slow),
                          "--json", str(tmp_path / "f.json"), "--png", str(tmp_path / "f.png")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    figures = json.loads((tmp_path / "f.json").read_text())
    best = figures["methods"]["best-of-n"]
    assert (best["solved"], best["n"], best["ratio"]) == (3, 3, 2.0)
    assert (best["gained"], best["lost"]) == (2, 0)
    assert figures["methods"]["specs"]["ratio"] == 4.0
    assert figures["frontier"] == ["greedy-target", "best-of-n"]  # specs is slower and no more accurate
    assert (tmp_path / "f.png").stat().st_size > 0
    assert "| best-of-n | 3/3 = 100% |" in run.stdout


BATCHED_BENCH = """main: n_kv_max = 20000, n_batch = 2048, n_ubatch = 1024, flash_attn = 1, is_pp_shared = 0

|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|   512 |     32 |    1 |    544 |    0.100 |  5120.00 |    0.400 |    80.00 |    0.500 |  1088.00 |
|   512 |     32 |    4 |   2176 |    0.400 |  5120.00 |    0.512 |   250.00 |    0.912 |  2385.96 |
|  4096 |     32 |    1 |   4128 |    1.024 |  4000.00 |    0.500 |    64.00 |    1.524 |  2708.66 |
|  4096 |     32 |    4 |  16512 |    4.096 |  4000.00 |    0.640 |   200.00 |    4.736 |  3486.49 |
"""


def test_batched_bench_profile_turns_llama_cpp_tables_into_a_profile_the_cost_model_reads(tmp_path):
    from specs_local.costmodel import load_profile, rows_call_seconds

    (tmp_path / "big.md").write_text(BATCHED_BENCH)
    out = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "batched_bench_profile.py"),
                           f"big={tmp_path / 'big.md'}", "--machine", "a GPU", "--source", "a paste", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    profile = load_profile(out)
    assert profile["machine"] == "a GPU" and profile["n_gpu_layers"] == -1 and profile["source"] == "a paste"
    big = profile["models"]["big"]
    assert big["decode_tps"] == {"1": 80.0, "4": 250.0}  # at the smallest PP
    assert big["prefill_tps"] == 5120.0
    assert big["prefill_tps_by_batch"] == {"512": 5120.0, "1024": 5120.0}  # 4 x 512 rows, in calls of n_ubatch
    # A row of a 4-wide decode: 0.512 / 128 s at 512 cells, 0.640 / 128 at 4096; read at PP + TG / 2 cells.
    assert big["decode_row_seconds_by_depth"] == {"528": 0.0, "4112": 0.001}
    assert big["prefill_row_seconds_by_depth"] == pytest.approx({"256": 0.0, "2048": 1.024 / 4096 - 0.100 / 512},
                                                                abs=1e-9)  # a prefill row, B = 1, at PP / 2 cells
    assert rows_call_seconds(big, 4) == 4 / 250.0


def test_batched_bench_profile_refuses_a_file_without_a_table_in_one_line(tmp_path):
    (tmp_path / "empty.md").write_text("llama-batched-bench crashed\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "batched_bench_profile.py"),
                           f"big={tmp_path / 'empty.md'}", "--machine", "m", "--out", str(tmp_path / "p.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no llama-batched-bench rows" in done.stderr
    assert not (tmp_path / "p.json").exists()
