"""The model cache, ``<home>/models/<owner>--<repo>/<file>``: where a file lives, whether it is there and whole,
and how a finished file enters it (staged under a temporary name, checked, renamed into place).
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import SpecsError
from .hashing import read_sidecar, sha256_file, write_sidecar
from .manifests import ModelFile, home


def cache_path(model: ModelFile) -> Path:
    """Where a model file lives in the cache (keyed by repo, shared by presets)."""
    return home() / "models" / model.repo.replace("/", "--") / model.file


def value_head_path(model: ModelFile) -> Path | None:
    """Where a value-head PRM's head file lives: beside its GGUF in the cache."""
    return cache_path(model).with_name(model.value_head) if model.value_head else None


def is_cached(model: ModelFile, dest: Path) -> bool:
    if not dest.is_file() or (model.size is not None and dest.stat().st_size != model.size):
        return False
    if model.value_head and not value_head_path(model).is_file():
        return False
    recorded = read_sidecar(dest)
    if recorded is None:
        # Placed by hand, or a crash between rename and sidecar: hash it once.
        recorded = sha256_file(dest)
        if model.sha256 and recorded != model.sha256:
            return False
        write_sidecar(dest, recorded)
    return model.sha256 is None or recorded == model.sha256


@contextmanager
def staging_file(dest: Path) -> Iterator[tuple[Path, Any]]:
    # A unique hidden name next to dest: concurrent writers never share a file,
    # a crash leaves only a *.partial, and the final rename is atomic.
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    staged = Path(name)
    os.chmod(staged, 0o644)  # mkstemp makes it private; a model file is not a secret
    try:
        with os.fdopen(handle, "wb") as out:
            yield staged, out
    finally:
        staged.unlink(missing_ok=True)


def commit_staged(staged: Path, dest: Path, sha256: str, model: ModelFile, what: str, remedy: str) -> None:
    """Move a finished file into place if its size and hash are right."""
    size = staged.stat().st_size
    if model.size is not None and size != model.size:
        staged.unlink(missing_ok=True)
        raise SpecsError(f"{what} are {size} bytes, expected {model.size}; {remedy}")
    if model.sha256 is not None and sha256 != model.sha256:
        staged.unlink(missing_ok=True)
        raise SpecsError(f"{what} have sha256 {sha256}, expected {model.sha256}; {remedy}")
    os.replace(staged, dest)
    write_sidecar(dest, sha256)
