"""Where each preset role's file stands (cached, bundled, to download, to build), and re-checking the cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cache import cache_path, value_head_path
from .fetching import bundle_part_paths
from .hashing import read_sidecar, sha256_file, sidecar_path, write_sidecar
from .manifests import Preset, ROLES, check_role, home, list_presets, load_preset
from .resolution import build_command


@dataclass(frozen=True)
class RoleStatus:
    """Where a preset role's file would come from right now (no hashing)."""

    role: str
    source: str  # "cached" | "bundle" | "download" | "build" | "uses" | "none"
    detail: str  # a path, a repo/file, a command, or the role used


def role_status(chosen: Preset, role: str) -> RoleStatus:
    entry = chosen.roles[check_role(role)]
    if entry.uses:
        return RoleStatus(role, "uses", entry.uses)
    if not entry.model:
        return RoleStatus(role, "none", "no model file")
    model = entry.model
    dest = cache_path(model)
    head = value_head_path(model)
    if dest.is_file() and (head is None or head.is_file()):
        return RoleStatus(role, "cached", str(dest))
    if model.bundle and not bundle_part_paths(model.bundle)[1]:
        return RoleStatus(role, "bundle", f"installed ({len(model.bundle.parts)} parts), joined on first use")
    if model.build:
        return RoleStatus(role, "build", build_command(model))
    return RoleStatus(role, "download", f"{model.repo}/{model.file}@{model.revision}")


@dataclass(frozen=True)
class CheckResult:
    path: Path
    state: str  # "ok" | "mismatch" (the file was removed) | "recorded" (no hash known before)
    expected: str | None
    actual: str


def verify_cache(*, progress: bool = True) -> list[CheckResult]:
    """Re-hash every cached model file against the manifests (else its sidecar).

    A file that fails is removed with its sidecar: a corrupt GGUF is of no use,
    and the next resolution fetches or assembles it again.
    """
    expected = _expected_hashes()
    results = []
    for path in _cached_files():
        known = expected.get(path) or read_sidecar(path)
        actual = sha256_file(path, progress=progress, label=f"Checking {path.name}")
        if known is None:
            write_sidecar(path, actual)
            state = "recorded"
        elif actual == known:
            state = "ok"
        else:
            path.unlink()
            sidecar_path(path).unlink(missing_ok=True)
            state = "mismatch"
        results.append(CheckResult(path, state, known, actual))
    return results


def _expected_hashes() -> dict[Path, str]:
    expected = {}
    for name in list_presets():
        chosen = load_preset(name)
        for role in filter(chosen.has_role, ROLES):
            model = chosen.model(role)
            if model.sha256:
                expected[cache_path(model)] = model.sha256
    return expected


def _cached_files() -> list[Path]:
    root = home() / "models"
    if not root.is_dir():
        return []
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and not path.name.endswith(".sha256")
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
