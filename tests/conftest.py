"""Shared fixtures: tiny random-weight GGUF models built once per session, and
the real Qwen pair from the `small` preset's installed bundles."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session", autouse=True)
def test_home(tmp_path_factory) -> Path:
    """specs-local's folder for the whole session, so that runs killed on purpose leave their
    markers, and profiles their cache, there and not in the user's. Only the model cache is the
    user's own (a link), so that the real pair is assembled once per machine, not per session."""
    users = Path(os.environ.get("SPECS_LOCAL_HOME") or Path.home() / ".cache" / "specs-local").expanduser()
    (users / "models").mkdir(parents=True, exist_ok=True)
    home = tmp_path_factory.mktemp("specs-local-home")
    (home / "models").symlink_to(users / "models", target_is_directory=True)
    os.environ["SPECS_LOCAL_HOME"] = str(home)  # subprocesses (the CLI) inherit it
    return home


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """draft and target share a vocabulary; `other` has one more token;
    `endless` never ends a turn under greedy decoding."""
    make = _load_script("make_tiny_model")
    folder = tmp_path_factory.mktemp("tiny")
    no_system = make.CHATML_TEMPLATE.replace(
        "{% for message in messages %}",
        "{% for message in messages %}{% if message['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}")
    return {
        "draft": make.write_model(folder / "draft.gguf", seed=1),
        "target": make.write_model(folder / "target.gguf", seed=2),
        "other": make.write_model(folder / "other.gguf", seed=3, extra_token=True),
        "endless": make.write_model(folder / "endless.gguf", seed=2, endless=True),
        # Long searches whose steps assert equalities (the calculator decides them).
        "arith": make.write_model(folder / "arith.gguf", seed=4, bigram="arithmetic"),
        "arith-draft": make.write_model(folder / "arith-draft.gguf", seed=5, bigram="arithmetic"),
        # Solutions of boxed digits: right 1 time in 10 against a one-digit gold answer.
        "boxed": make.write_model(folder / "boxed.gguf", seed=8, bigram="boxed"),
        "boxed-draft": make.write_model(folder / "boxed-draft.gguf", seed=9, bigram="boxed"),
        "boxed-either-end": make.write_model(folder / "boxed-either-end.gguf", seed=10, bigram="boxed-either-end"),
        # PRM-like files: no chat template, and a template that refuses a system turn (Mistral-style).
        "no-template": make.write_model(folder / "no-template.gguf", seed=6, chat_template=None),
        "no-system": make.write_model(folder / "no-system.gguf", seed=7, chat_template=no_system),
        # Q4_0 layers, which llama.cpp's CPU repack lays out anew at load.
        "quantized": make.write_model(folder / "quantized.gguf", seed=2, quantized=True),
    }


_OPEN_MODELS: list = []


@pytest.fixture(scope="module")
def open_tiny(tiny_models):
    """``open_tiny(role, config)``: a tiny model for this test module, closed at
    its end; every sequence it holds is released after each test."""
    from specs_local.engine import Model

    opened = []

    def open_model(role: str, config):
        model = Model(tiny_models[role], config)
        opened.append(model)
        _OPEN_MODELS.append(model)
        return model

    yield open_model
    for model in opened:
        _OPEN_MODELS.remove(model)
        model.close()


@pytest.fixture(autouse=True, scope="session")
def _own_run_markers(tmp_path_factory):
    """CLI commands run in this process leave their run markers in a folder of the session's, so that
    a run of the user's that died earlier does not put its hint in front of a test's output."""
    folder = tmp_path_factory.mktemp("running")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("specs_local.run_markers.marker_folder", lambda: folder)
        yield


@pytest.fixture(autouse=True)
def _release_sequences():
    yield
    for model in _OPEN_MODELS:
        model.release_all(model.live_sequences)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    for candidate in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if (candidate / "gsm8k.jsonl").exists():
            return candidate
    pytest.fail("benchmark data not found: expected ../shared/data/gsm8k.jsonl beside the repository")


@pytest.fixture(scope="session")
def real_pair(tmp_path_factory) -> dict[str, Path]:
    """The small preset's Qwen 0.5B/1.5B files, assembled from the installed
    bundle packages with the hub switched off (CI installs the `small` extra)."""
    from specs_local.presets import resolve

    os.environ["HF_HUB_OFFLINE"] = "1"
    return {role: resolve(role, role=role, preset="small", progress=False) for role in ("draft", "target")}


def kill_once_written(cmd: list[str], path: Path, lines: int, timeout: float = 120) -> None:
    """Run ``cmd`` and kill -9 it as soon as ``path`` holds ``lines`` lines: a
    crash at an arbitrary moment of a durable writer."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and (not path.exists() or path.read_bytes().count(b"\n") < lines):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
