"""Hashing model files, and the ``<file>.sha256`` sidecars that spare later resolutions from reading gigabytes again."""
from __future__ import annotations

import hashlib
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

CHUNK_BYTES = 8 << 20  # bytes per read while joining or hashing
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path, *, progress: bool = False, label: str = "") -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source, progress_bar(progress, path.stat().st_size, label) as advance:
        for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def known_sha256(path: Path) -> str:
    """A model file's sha256: from its cache sidecar where it has one, else hashed now."""
    return read_sidecar(path) or sha256_file(path)


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_sidecar(path: Path) -> str | None:
    try:
        recorded = sidecar_path(path).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return recorded[0] if recorded and SHA256_HEX.fullmatch(recorded[0]) else None


def write_sidecar(path: Path, sha256: str) -> None:
    # sha256sum's format, written atomically: `sha256sum -c` can check it too.
    sidecar = sidecar_path(path)
    staged = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.partial")
    staged.write_text(f"{sha256}  {path.name}\n", encoding="ascii")
    os.replace(staged, sidecar)


@contextmanager
def progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda done: None
        return
    import click

    # On stderr, so stdout stays clean for paths and answers; click prints
    # just the label when stderr is not a terminal.
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=False) as bar:
        yield bar.update
