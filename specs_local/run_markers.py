"""What a run leaves behind for a crash it cannot report itself: faulthandler's traceback, and a
hint on the next start after a command died without exiting.

A native crash inside llama.cpp (a segfault) kills the process before Python can say anything
useful; faulthandler prints where it died, but not what to do. So each command that loads
models leaves a marker, ``<home>/running/<pid>.json``, and removes it when it exits. A marker
whose process is gone belongs to a run that crashed or was killed: the next command says so in
one line, naming ``specs-local doctor`` and ``--cpu-repack off``, and removes it.
"""
from __future__ import annotations

import atexit
import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path


def enable_faulthandler() -> None:
    """On a native crash (a segfault in llama.cpp), print where Python was before the process dies."""
    try:
        faulthandler.enable(file=sys.__stderr__, all_threads=True)
    except (AttributeError, OSError, RuntimeError, ValueError):  # no real stderr (embedded, a test runner)
        pass


def marker_folder() -> Path:
    from .presets import home

    return home() / "running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def unclean_exits(folder: Path | None = None) -> list[dict]:
    """The markers of runs whose process is gone, oldest first; they are removed."""
    folder = folder or marker_folder()
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            marker = json.loads(path.read_text())
            pid = int(marker["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # half-written by a run that died writing it
            continue
        if pid != os.getpid() and not _alive(pid):
            found.append(marker)
            path.unlink(missing_ok=True)
    return sorted(found, key=lambda m: m.get("started", 0))


def hint(markers: list[dict]) -> str | None:
    if not markers:
        return None
    last = markers[-1]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last.get("started", 0)))
    more = f" (and {len(markers) - 1} earlier)" if len(markers) > 1 else ""
    return (f"note: the last `specs-local {last.get('command', '?')}` (pid {last['pid']}, started {when}){more} "
            "ended without exiting, by a crash or a kill; `specs-local doctor` checks this machine, and "
            "--cpu-repack off avoids llama.cpp's CPU weight layouts if a load or decode crashes")


def mark_running(command: str, folder: Path | None = None) -> str | None:
    """Leave this run's marker until it exits; the hint about earlier runs that died, if any."""
    folder = folder or marker_folder()
    message = hint(unclean_exits(folder))
    path = folder / f"{os.getpid()}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": os.getpid(), "command": command, "argv": sys.argv[1:],
                                    "started": time.time()}))
    except OSError:  # a read-only home: the hint is a courtesy, never a reason to fail
        return message
    atexit.register(path.unlink, missing_ok=True)
    return message


TERMINATED = 128 + signal.SIGTERM  # the exit status of a polite kill, as a shell reports it


def exit_on_sigterm() -> None:
    """A polite kill (SIGTERM, what `kill` and `pkill` send) exits through Python, so that the run's
    marker goes and the next start does not call it a crash. Only where nothing else handles it."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_143)


_terminating = False


def terminating() -> bool:
    """Whether a polite kill has arrived. Decodes and loads hold it back to their end
    (interrupts.deferred); a llama.cpp callback outside them would drop its SystemExit, and the
    kill come out as another error: this tells the two apart."""
    return _terminating


def _exit_143(signum, frame) -> None:
    global _terminating
    _terminating = True
    raise SystemExit(TERMINATED)
