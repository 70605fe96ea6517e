"""`batch --ray` and `bench --ray` on one local Ray instance (2 CPUs) with the tiny models:
the records of one machine, resume across both, a worker killed, the driver killed, workers
that cannot load, a problem that raises, and --ray without Ray."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import ray
from click.testing import CliRunner

from conftest import kill_once_written
from specs_local.batch import write_records
from specs_local.cli import main
from specs_local.cli.batch import batch as batch_command
from specs_local.cluster import (ClusterOptions, WorkerPool, check_room, cluster_records, default_workers,
                                 worker_options)
from specs_local.errors import SpecsError
from specs_local.problems import Problem, read_problems
from specs_local.solver_options import SEARCH_KEYS, method_of
from test_batch import read_records, write_jsonl

REPO = Path(__file__).resolve().parents[1]
FAST = ["--n", "2", "--max-steps", "3", "--max-step-tokens", "8", "--threads", "1", "--ctx", "2048"]


@pytest.fixture(scope="module")
def address():
    """One Ray instance for the module, its files in a short folder (Ray's socket paths must be short)."""
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp,
             object_store_memory=100 * 2**20, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def models_args(tiny_models):
    return ["--draft", str(tiny_models["draft"]), "--target", str(tiny_models["target"]),
            "--reward-kind", "calculator+self"]  # the tiny target cannot use the preset's probe head


def problems_file(path: Path, n: int) -> Path:
    return write_jsonl(path, [{"id": f"p{i}", "problem": f"What is {i} plus {i}?", "answer": str(2 * i)}
                              for i in range(n)])


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def without_timings(value):
    """A record with every measured time taken out: all that may differ between two runs."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def by_id(records: list[dict]) -> dict[str, dict]:
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "an id appears twice"
    return {r["id"]: without_timings(r) for r in records}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, models_args):
    """Twelve problems solved in one process, without Ray: what every Ray run must reproduce."""
    folder = tmp_path_factory.mktemp("local")
    data, output = problems_file(folder / "in.jsonl", 12), folder / "local.jsonl"
    result = run(["batch", str(data), "-o", str(output), "--no-progress", *models_args, *FAST])
    assert result.exit_code == 0, result.output
    return data, output


def search_opts(data: Path, models_args: list[str]) -> dict:
    """The search options exactly as the batch command line hands them on."""
    params = batch_command.make_context("batch", [str(data), "-o", "unused", *models_args, *FAST]).params
    cli_only = ("input_path", "output_path", "trace", "progress", "ray", "workers", "gpus_per_worker")
    return {k: v for k, v in params.items() if k not in cli_only}


# ---------------------------------------------------------------- the same records


def test_two_workers_give_the_records_of_one_machine(address, local_run, models_args, tmp_path):
    data, local = local_run
    output = tmp_path / "ray.jsonl"
    result = run(["batch", str(data), "-o", str(output), "--ray", address, "--workers", "2", *models_args, *FAST])
    assert result.exit_code == 0, result.output
    assert "12 problems: 12 solved now, 0 already done, 0 errors" in result.stdout
    assert "/2 workers | " in result.stderr  # the progress line counts the live workers
    assert by_id(read_records(output)) == by_id(read_records(local))


def test_a_ray_run_resumes_a_local_one(address, local_run, models_args, tmp_path):
    data, local = local_run
    output = tmp_path / "out.jsonl"
    first_four = b"".join(local.read_bytes().splitlines(keepends=True)[:4])
    output.write_bytes(first_four)
    result = run(["batch", str(data), "-o", str(output), "--no-progress", "--ray", address, "--workers", "2",
                  *models_args, *FAST])
    assert result.exit_code == 0, result.output
    assert "12 problems: 8 solved now, 4 already done" in result.stdout
    assert output.read_bytes().startswith(first_four)
    assert by_id(read_records(output)) == by_id(read_records(local))


def test_bench_on_ray_gives_the_records_of_one_machine(address, local_run, models_args, tmp_path):
    data, _ = local_run
    bench = ["bench", str(data), "--methods", "greedy-target,greedy-draft", "--limit", "3", "--no-progress",
             *models_args, *FAST]
    assert run([*bench, "--out", str(tmp_path / "local")]).exit_code == 0
    result = run([*bench, "--out", str(tmp_path / "ray"), "--ray", address, "--workers", "2"])
    assert result.exit_code == 0, result.output
    for method in ("greedy-target", "greedy-draft"):
        on_ray = by_id(read_records(tmp_path / "ray" / f"{method}.jsonl"))
        assert on_ray == by_id(read_records(tmp_path / "local" / f"{method}.jsonl")) and len(on_ray) == 3
    assert (tmp_path / "ray" / "report.md").exists()


def collection_by_problem(path: Path) -> dict[str, tuple]:
    """Each problem's record (less where its rows lie) and its feature rows: what must not
    depend on which process collected it or in what order it came back."""
    from specs_local.collection import load_collection

    loaded = load_collection(path)
    records = {r["id"]: {k: v for k, v in r.items() if k != "features"} for r in read_records(path)}
    assert len(records) == len(read_records(path)), "a problem appears twice"
    return {pid: (record, loaded.features[loaded.groups == pid]) for pid, record in records.items()}


def test_value_collect_on_ray_gives_the_collection_of_one_machine(address, tiny_models, tmp_path):
    from test_value import PROBLEMS, collect_args

    data = write_jsonl(tmp_path / "train.jsonl", PROBLEMS)
    # more rollouts than samples: each worker's target is sized for both
    mc = ["--no-progress", "--mc-rollouts", "5", "--mc-every", "3", "--mc-steps", "1"]
    local, on_ray, resumed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl", tmp_path / "resumed.jsonl"
    assert run(collect_args(tiny_models, data, local, *mc)).exit_code == 0
    result = run([*collect_args(tiny_models, data, on_ray, *mc), "--ray", address, "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert f"{len(PROBLEMS)}/{len(PROBLEMS)} problems" in result.stdout
    expected = collection_by_problem(local)
    assert sum("mc" in s for r, _ in expected.values() for sol in r["solutions"] for s in sol["steps"]) > 0
    for collected in (on_ray, resumed):
        if collected is resumed:  # three problems done in this process, the rest on Ray
            assert run(collect_args(tiny_models, data, resumed, *mc, "--limit", "3")).exit_code == 0
            result = run([*collect_args(tiny_models, data, resumed, *mc), "--ray", address, "--workers", "2"])
            assert result.exit_code == 0, result.output
        got = collection_by_problem(collected)
        assert sorted(got) == sorted(expected)
        for pid, (record, rows) in expected.items():
            assert got[pid][0] == record
            np.testing.assert_array_equal(got[pid][1], rows)


def test_value_collect_on_ray_says_in_one_line_when_no_worker_has_the_target(address, tiny_models, tmp_path):
    from test_value import PROBLEMS, collect_args

    data = write_jsonl(tmp_path / "train.jsonl", PROBLEMS)
    output = tmp_path / "ray.jsonl"
    result = run([*collect_args(tiny_models, data, output, "--no-progress", "--draft", str(tiny_models["other"])),
                  "--ray", address, "--workers", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [errors[0]] and "no Ray worker left" in errors[0] and "different vocabularies" in errors[0]
    assert output.read_bytes() == b""  # nothing half-written


def test_a_problem_that_raises_in_a_collect_worker_is_told_and_left_for_a_rerun(address, tiny_models, tmp_path):
    from test_value import PROBLEMS, collect_args

    from specs_local.cli.value import collect as collect_command
    from specs_local.cluster import run_cluster_collect
    from specs_local.collect import MonteCarlo
    from specs_local.collection import output_paths

    data = write_jsonl(tmp_path / "train.jsonl", PROBLEMS[:2])
    first = tmp_path / "first.jsonl"
    assert run(collect_args(tiny_models, data, first, "--no-progress", "--limit", "1")).exit_code == 0
    meta = json.loads(output_paths(first)[1].read_text())
    params = collect_command.make_context("collect", collect_args(tiny_models, data, first)[2:]).params
    opts = {k: v for k, v in params.items() if k in ("preset", "draft", "target", "threads", "ctx", "n_gpu_layers",
                                                      "max_steps", "max_step_tokens", "seed", *SEARCH_KEYS)}
    problems = [Problem("p0", PROBLEMS[0]["problem"], "0"), Problem("number", 12, "12"),
                Problem("p1", PROBLEMS[1]["problem"], PROBLEMS[1]["answer"])]
    notes = []
    out = tmp_path / "out.jsonl"
    run_cluster_collect(problems, out, meta, opts, ClusterOptions(address=address, workers=1, threads=1),
                        no_draft=False, mc=MonteCarlo(), note=notes.append)
    assert [r["id"] for r in read_records(out)] in (["p0", "p1"], ["p1", "p0"])
    assert len(notes) == 1 and notes[0].startswith("number: ") and notes[0].endswith("(not written: a rerun collects it)")


# ---------------------------------------------------------------- faults


def test_a_killed_worker_hands_its_problems_to_the_other(address, local_run, models_args, tmp_path):
    data, local = local_run
    output = tmp_path / "out.jsonl"
    opts = search_opts(data, models_args)
    pool = WorkerPool(ray, opts, ClusterOptions(workers=2, threads=1))
    notes = []

    def kill_one_at_the_third_record(todo, note):  # the method batch ran locally: the preset's
        records = cluster_records([(p, method_of(opts)) for p in todo], pool, note=notes.append)
        for done, record in enumerate(records, start=1):
            if done == 3:  # a worker that has problems in hand
                ray.kill(pool.actors[min(worker for worker, _ in pool.running.values())])
            yield record

    try:
        summary = write_records(read_problems(data), output, kill_one_at_the_third_record, progress=False)
    finally:
        pool.close()
    assert len(pool.lost) == 1 and len(pool.live) == 1
    assert any(" lost: " in note and "(1 left)" in note for note in notes), notes
    assert summary.done_now == 12 and summary.errors == 0
    assert by_id(read_records(output)) == by_id(read_records(local))  # each problem once, solved as locally


def test_a_killed_driver_resumes_without_a_torn_line_or_a_duplicate(address, models_args, tmp_path):
    data, output = problems_file(tmp_path / "in.jsonl", 40), tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "specs_local", "batch", str(data), "-o", str(output), "--no-progress",
               "--ray", address, "--workers", "2", *models_args, "--n", "2", "--max-steps", "6",
               "--max-step-tokens", "16", "--threads", "1"]
    kill_once_written(command, output, lines=3, timeout=180)
    killed = read_records(output)  # whole lines only
    assert 3 <= len(killed) < 40, "the kill must land mid-run"
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    records = read_records(output)
    assert records[: len(killed)] == killed
    assert sorted(by_id(records)) == sorted(f"p{i}" for i in range(40))


def test_workers_that_cannot_load_stop_the_run_with_one_line_and_nothing_lost(address, local_run, tiny_models,
                                                                               tmp_path):
    data, local = local_run
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(tiny_models["target"].read_bytes()[:5000])
    output = tmp_path / "out.jsonl"
    output.write_bytes(b"".join(local.read_bytes().splitlines(keepends=True)[:4]))
    before = output.read_bytes()
    result = run(["batch", str(data), "-o", str(output), "--no-progress", "--ray", address, "--workers", "2",
                  "--draft", str(tiny_models["draft"]), "--target", str(corrupt), *FAST])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [errors[0]] and errors[0].startswith("Error: no Ray worker left (2 of 2 lost; the last: ")
    assert "could not load GGUF model" in errors[0] and "Traceback" not in result.output
    assert result.stderr.count("could not start: ") == 2  # each worker says why
    assert output.read_bytes() == before


def test_a_problem_that_raises_in_a_worker_gets_an_error_record(address, local_run, models_args):
    data, _ = local_run
    pool = WorkerPool(ray, search_opts(data, models_args), ClusterOptions(workers=1, threads=1))
    tasks = [(Problem("blank", "   "), "specs"),  # a SpecsError, as on one machine
             (Problem("number", 12), "specs"),  # any other exception, which one machine would not survive
             (Problem("fine", "What is 1 plus 1?"), "specs")]
    try:
        records = {r["id"]: r for r in cluster_records(tasks, pool)}
    finally:
        pool.close()
    assert records["blank"]["error"] == "the problem is empty"
    assert records["number"]["error"].startswith("AttributeError: ")
    assert "error" not in records["fine"] and records["fine"]["stats"]["steps"] >= 1
    assert len(pool.live) == 1  # the worker lived through both


# ---------------------------------------------------------------- without Ray


@pytest.mark.parametrize("command", ["batch", "bench"])
def test_ray_without_the_extra_is_a_one_line_error(command, local_run, models_args, tmp_path):
    data, _ = local_run
    no_ray = "import sys; sys.modules['ray'] = None; from specs_local.cli import main; main()"
    out = ["-o", str(tmp_path / "out.jsonl")] if command == "batch" else ["--out", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-c", no_ray, command, str(data), *out, "--ray", *models_args],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    expected = "Error: --ray needs Ray, which is not installed: pip install 'specs-local[ray]'"
    assert result.stderr.splitlines() == [expected]
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out" / "report.md").exists()


def test_without_ray_flag_ray_is_never_imported(local_run, models_args, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "problem": "What is 1 plus 1?", "answer": "2"}])
    watch = ("import atexit, sys; atexit.register(lambda: print('ray imported:', 'ray' in sys.modules, "
             "file=sys.stderr)); from specs_local.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", watch, "batch", str(data), "-o", str(tmp_path / "out.jsonl"),
                             "--no-progress", *models_args, *FAST], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "ray imported: False"


@pytest.mark.parametrize("flags, message", [
    (["--workers", "2"], "--workers needs --ray"),
    (["--gpus-per-worker", "1"], "--gpus-per-worker needs --ray"),
    (["--ray", "auto", "--n-gpu-layers", "-1"], "--n-gpu-layers on Ray needs --gpus-per-worker"),
])
def test_ray_flags_that_do_not_go_together_are_refused(flags, message, tmp_path):
    result = CliRunner().invoke(main, ["batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o.jsonl"), *flags])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- sizing the workers


def test_default_workers_are_one_per_threads_cpus():
    assert default_workers([{"CPU": 2.0}], threads=1, gpus=0) == 2  # this 2-core machine: measured best
    assert default_workers([{"CPU": 16.0}, {"CPU": 8.0}], threads=4, gpus=0) == 4 + 2
    assert default_workers([{"CPU": 2.0}], threads=2, gpus=0) == 1
    assert default_workers([{"CPU": 1.0}], threads=2, gpus=0) == 1  # at least one
    assert default_workers([{"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0}], threads=1, gpus=1) == 2
    assert default_workers([{"CPU": 16.0, "GPU": 1.0}], threads=1, gpus=0.5) == 2


def test_a_worker_no_machine_can_hold_is_refused():
    check_room([{"CPU": 2.0}], threads=2, gpus=0)
    with pytest.raises(SpecsError, match="no machine of the Ray cluster has 1 CPUs and 1 GPUs for one worker"):
        check_room([{"CPU": 2.0}], threads=1, gpus=1)


def test_a_worker_gets_its_own_threads_offload_and_absolute_paths(tmp_path, monkeypatch):
    (tmp_path / "t.gguf").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    opts = {"target": "t.gguf", "draft": "draft", "n_gpu_layers": 0, "threads": None}
    on_cpu = worker_options(opts, ClusterOptions(threads=3))
    assert on_cpu["target"] == str(tmp_path / "t.gguf") and on_cpu["draft"] == "draft"  # a preset role stays
    assert (on_cpu["threads"], on_cpu["n_gpu_layers"]) == (3, 0)
    assert worker_options(opts, ClusterOptions(gpus_per_worker=1))["n_gpu_layers"] == -1
    assert worker_options({**opts, "n_gpu_layers": 20}, ClusterOptions(gpus_per_worker=1))["n_gpu_layers"] == 20
