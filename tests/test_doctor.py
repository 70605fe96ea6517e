"""`specs-local doctor`, faulthandler, and the hint after a run that died."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from specs_local.doctor import check_decode
from specs_local.run_markers import hint, mark_running, unclean_exits

# Python started with this folder on its path runs this sitecustomize first: it segfaults the
# doctor's decode child (`python -m specs_local.doctor ...`), and only that process.
CRASHING_CHILD = """import sys
if sys.argv[:1] == ["-m"] and "--cpu-repack" in sys.argv:
    import ctypes
    ctypes.string_at(0)
"""


def run_cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specs_local", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def cli_env(home: Path, **extra) -> dict:
    return {**os.environ, "SPECS_LOCAL_HOME": str(home), "HF_HUB_OFFLINE": "1", **extra}


def test_doctor_reports_a_model_that_decodes(tiny_models, tmp_path):
    done = run_cli(["doctor", "--model", str(tiny_models["target"]), "--threads", "1", "--json"], cli_env(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["problems"] == []
    [entry] = report["models"]  # --model alone: the preset's files are not checked
    assert entry["path"] == str(tiny_models["target"]) and len(entry["sha256"]) == 64
    [check] = entry["decode"]
    assert check["ok"] and check["mode"] == "auto" and check["detail"]
    assert "AVX" in report["llama_cpp"]["system_info"] or "NEON" in report["llama_cpp"]["system_info"]
    assert report["cpu_repack"].startswith("auto: ")


def test_doctor_reports_a_child_that_segfaults(tiny_models, tmp_path):
    """A decode that kills its process is a line of the report, not the end of the command."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(CRASHING_CHILD)
    env = cli_env(tmp_path / "home", PYTHONPATH=str(tmp_path / "site"))
    done = run_cli(["doctor", "--model", str(tiny_models["target"]), "--threads", "1"], env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "decode with --cpu-repack auto: FAILED" in done.stdout
    assert "crashed: SIGSEGV (signal 11)" in done.stdout
    assert "decode with --cpu-repack off: FAILED" in done.stdout  # it tried plain weights too
    assert "problem: model target.gguf: decode crashed: SIGSEGV" in done.stdout
    assert "Traceback" not in done.stderr


def test_check_decode_names_the_signal_and_a_hang(tmp_path, tiny_models):
    crash = tmp_path / "crash.sh"
    crash.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crash.chmod(0o755)
    check = check_decode(tiny_models["target"], "auto", python=str(crash))
    assert not check.ok and check.detail == "crashed: SIGSEGV (signal 11)"
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    check = check_decode(tiny_models["target"], "auto", python=str(hang), timeout=1)
    assert not check.ok and check.detail.startswith("hung: no answer within 1 s")


CRASH_IN_SOLVE = """import ctypes, sys
import specs_local.cli as cli
solve = sys.modules["specs_local.cli.solve"]  # the module: the package's `solve` is the command
solve.build_solver = lambda *args, **kwargs: ctypes.string_at(0)  # a native crash where the models load
cli.main(["solve", "What is 12 times 7?"])
"""


def test_a_crash_prints_where_and_the_next_start_says_what_to_try(tmp_path, tiny_models):
    env = cli_env(tmp_path)
    crashed = subprocess.run([sys.executable, "-c", CRASH_IN_SOLVE], capture_output=True, text=True, env=env,
                             timeout=120)
    assert crashed.returncode == -11
    assert "Fatal Python error: Segmentation fault" in crashed.stderr  # faulthandler, enabled by the CLI
    assert "<lambda>" in crashed.stderr
    assert len(list((tmp_path / "running").glob("*.json"))) == 1  # the marker outlived the process

    after = run_cli(["solve", "--target", str(tmp_path / "missing.gguf"), "x"], env)
    assert after.returncode == 1
    lines = after.stderr.splitlines()
    assert lines[0].startswith("note: the last `specs-local solve` (pid ")
    assert "crash or a kill" in lines[0] and "specs-local doctor" in lines[0] and "--cpu-repack off" in lines[0]
    assert lines[-1].startswith("Error: target model not found")
    again = run_cli(["solve", "--target", str(tmp_path / "missing.gguf"), "x"], env)
    assert "note:" not in again.stderr  # told once; and a run that exits cleanly leaves no marker
    assert list((tmp_path / "running").glob("*.json")) == []


SLOW_SOLVE = """import sys, time
import specs_local.cli as cli
solve = sys.modules["specs_local.cli.solve"]
solve.build_solver = lambda *args, **kwargs: (print("loading", flush=True), time.sleep(60))
cli.main(["solve", "What is 12 times 7?"])
"""


def test_a_polite_kill_is_not_reported_as_a_crash(tmp_path):
    env = cli_env(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SOLVE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline() == "loading\n"
    assert len(list((tmp_path / "running").glob("*.json"))) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert list((tmp_path / "running").glob("*.json")) == []  # the next start has nothing to say
    proc.stdout.close(), proc.stderr.close()


def test_markers_of_live_runs_are_left_alone(tmp_path):
    assert mark_running("batch", tmp_path) is None
    assert unclean_exits(tmp_path) == []  # this process is alive
    (tmp_path / "999999999.json").write_text(json.dumps({"pid": 999999999, "command": "serve", "started": 0}))
    (tmp_path / "torn.json").write_text("{")
    [dead] = unclean_exits(tmp_path)
    assert dead["command"] == "serve" and "serve" in hint([dead])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{os.getpid()}.json"]
