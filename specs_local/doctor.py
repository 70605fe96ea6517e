"""``specs-local doctor``: what this machine runs, and whether one decode of each model works.

The decode runs in a child process (``python -m specs_local.doctor MODEL``): a native crash in
llama.cpp kills only the child, and its signal becomes a line of the report instead of the end
of the command. Where the chosen CPU weight layout crashes, the check tries plain weights
(``--cpu-repack off``) too, so the report can name the setting that works.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHILD_TIMEOUT_S = 300
PROMPT = "What is 12 times 7?"


@dataclass
class DecodeCheck:
    """One child's load and decode of one model file."""
    mode: str
    ok: bool
    detail: str  # the tokens it wrote, or how it failed
    seconds: float
    weight_buffers: dict = field(default_factory=dict)


def signal_name(returncode: int) -> str:
    try:
        return f"{signal.Signals(-returncode).name} (signal {-returncode})"
    except ValueError:
        return f"signal {-returncode}"


def run_child(argv: list[str], timeout: float = CHILD_TIMEOUT_S, env: dict | None = None) -> tuple[int, str, str]:
    """(return code, stdout, stderr) of a child; a child killed by a signal has a negative code,
    a child past ``timeout`` is killed and reported as -9."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as err:
        return -signal.SIGKILL, err.stdout or "", f"no answer within {timeout:.0f} s"
    return done.returncode, done.stdout, done.stderr


def check_decode(path: Path, mode: str, threads: int | None = None, *, timeout: float = CHILD_TIMEOUT_S,
                 python: str = sys.executable) -> DecodeCheck:
    """Load ``path`` with the layout ``mode`` and decode a few tokens, in a child process."""
    argv = [python, "-X", "faulthandler", "-m", "specs_local.doctor", str(path), "--cpu-repack", mode]
    if threads:
        argv += ["--threads", str(threads)]
    started = time.monotonic()
    code, out, err = run_child(argv, timeout)
    seconds = time.monotonic() - started
    if code == 0:
        try:
            answer = json.loads(out.strip().splitlines()[-1])
            return DecodeCheck(mode, True, answer["text"], seconds, answer["weight_buffers"])
        except (ValueError, IndexError, KeyError):
            return DecodeCheck(mode, False, f"the check printed no result: {out.strip()[-200:]!r}", seconds)
    last = [line for line in err.strip().splitlines() if line.strip()]
    if code < 0:
        where = next((line.strip() for line in last if "File " in line), "")
        detail = f"crashed: {signal_name(code)}" + (f", last in {where}" if where else "")
        if "no answer within" in err:
            detail = f"hung: {err.strip()}"
    else:
        detail = f"failed (exit {code}): {last[-1] if last else 'no message'}"
    return DecodeCheck(mode, False, detail, seconds)


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    from .engine.repack import AMX_CPU_FLAGS
    from .machine import cpu_flags, cpu_model

    flags = cpu_flags(cpuinfo)
    return {"model": cpu_model(cpuinfo), "cores": os.cpu_count(), "amx_flags": sorted(flags & AMX_CPU_FLAGS)}


def model_files(preset: str | None, extra: list[str]) -> tuple[list[dict], list[str]]:
    """The preset's model files (never downloaded here: a missing one is reported) and the given
    ones, each with its path and sha256, and whether that matches the manifest; the problems."""
    from .presets import known_sha256, load_preset, resolve_role, role_status

    chosen = load_preset(preset) if preset else None
    files, problems = [], []
    for role in ("draft", "target", "reward") if chosen else ():
        if not chosen.has_role(role):
            continue
        status = role_status(chosen, role)
        if status.source == "uses":
            continue
        if status.source not in ("cached", "bundle"):
            problems.append(f"{role}: not on this machine ({status.source} {status.detail}); "
                            f"`specs-local models pull {preset}` fetches it")
            continue
        path = resolve_role(preset, role, progress=False)
        digest = known_sha256(path)
        expected = chosen.model(role).sha256
        files.append({"role": role, "path": str(path), "sha256": digest,
                      "sha256_matches": None if not expected else digest == expected})
        if expected and digest != expected:
            problems.append(f"{role}: {path} does not match the preset's sha256 (`specs-local models verify`)")
    for spec in extra:
        path = Path(spec)
        if not path.is_file():
            problems.append(f"{spec}: no such file")
            continue
        files.append({"role": "model", "path": str(path), "sha256": known_sha256(path), "sha256_matches": None})
    return files, problems


def diagnose(preset: str | None, mode: str, *, models: list[str] = (), threads: int | None = None, decode: bool = True,
             timeout: float = CHILD_TIMEOUT_S) -> dict:
    """The whole report. Its ``ok`` is False where a decode check or a model file failed."""
    from .engine import build_info
    from .engine.build_fit import BuildMismatchError
    from .engine.loading import ensure_build_fits_cpu
    from .engine.repack import extra_buffer_types, plan_for
    from .run_markers import unclean_exits

    report = {"specs_local": _version(), "python": platform.python_version(), "platform": platform.platform(),
              "cpu": cpu_info(), "llama_cpp": build_info(),
              "extra_buffer_types": list(extra_buffer_types() or ()), "cpu_repack": plan_for(mode).describe()}
    files, problems = model_files(preset, list(models))
    try:
        ensure_build_fits_cpu()  # the very check every model load makes
    except BuildMismatchError as mismatch:
        problems.insert(0, str(mismatch))
    report["models"] = files
    if decode:
        for entry in files:
            checks = [check_decode(Path(entry["path"]), mode, threads, timeout=timeout)]
            if not checks[0].ok and mode != "off":
                checks.append(check_decode(Path(entry["path"]), "off", threads, timeout=timeout))
            entry["decode"] = [asdict(check) for check in checks]
            if not checks[0].ok:
                works = " (it works with --cpu-repack off)" if checks[-1].ok and len(checks) > 1 else ""
                problems.append(f"{entry['role']} {Path(entry['path']).name}: decode {checks[0].detail}{works}")
    report["earlier_unclean_exits"] = unclean_exits()
    report["problems"] = problems
    report["ok"] = not problems
    return report


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("specs-local")
    except PackageNotFoundError:
        return "unknown"


def child_main(argv: list[str] | None = None) -> None:
    """The child: load one model, decode a few greedy tokens after a chat prompt, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m specs_local.doctor")
    parser.add_argument("model")
    parser.add_argument("--cpu-repack", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=8)
    args = parser.parse_args(argv)
    import numpy as np

    from .engine import Model, ModelConfig
    from .sampling import SamplerParams

    model = Model(args.model, ModelConfig(n_ctx=512, n_seq_max=2, n_threads=args.threads, cpu_repack=args.cpu_repack))
    try:
        messages = [{"role": "user", "content": PROMPT}]
        text = model.render_chat(messages) if model.chat_template else PROMPT
        seq = model.new_sequence(model.tokenize(text))
        [generated] = model.generate([seq], SamplerParams(temperature=0.0), np.random.default_rng(0),
                                     max_tokens=args.tokens, stop_at_delimiter=False)
        print(json.dumps({"text": model.detokenize(generated.tokens), "weight_buffers": model.weight_buffers}))
    finally:
        model.close()


if __name__ == "__main__":
    child_main()
