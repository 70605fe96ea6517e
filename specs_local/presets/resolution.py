"""Model resolution: a model spec to a local file.

:func:`resolve` tries, in order:

1. an explicit path;
2. the local cache, ``<home>/models/<owner>--<repo>/<file>``;
3. installed bundle packages, joined once into the cache;
4. a download with ``huggingface_hub.hf_hub_download`` (not when ``HF_HUB_OFFLINE=1``).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelLoadError, SpecsError
from .cache import cache_path, is_cached, value_head_path
from .fetching import assemble_bundle, bundle_part_paths, bundle_shortfall, download_from_hub
from .manifests import DEFAULT_PRESET, ModelFile, ROLES, check_relative, check_role, load_preset


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
    label = f"preset {chosen.name!r}, role {check_role(role)!r}"
    return _provide(chosen.model(role), label, chosen.fetch_hint(), offline, progress)


def parse_hf_spec(spec: str) -> ModelFile:
    """``hf:OWNER/REPO/FILE[@REVISION]`` as a :class:`ModelFile`."""
    body, _, revision = spec[len("hf:"):].partition("@")
    owner, _, rest = body.partition("/")
    name, _, file = rest.partition("/")
    if not (owner and name and file):
        raise SpecsError(f"bad hub spec {spec!r}: expected hf:OWNER/REPO/FILE[@REVISION]")
    check_relative(spec, file)
    return ModelFile(repo=f"{owner}/{name}", file=file, revision=revision or "main")


def build_command(model: ModelFile) -> str:
    return model.build.format(repo=model.repo, revision=model.revision, dest=cache_path(model),
                              head=value_head_path(model) or "")


def _preset_role(spec: str, default_preset: str) -> tuple[str, str] | None:
    if spec in ROLES:
        return default_preset, spec
    name, _, role = spec.rpartition(":")
    return (name, role) if name and role in ROLES else None


def _provide(model: ModelFile, label: str, fetch_hint: str, offline: bool | None, progress: bool) -> Path:
    dest = cache_path(model)
    if is_cached(model, dest):
        return dest
    missing = []
    if model.bundle:
        parts, missing = bundle_part_paths(model.bundle)
        if not missing:
            assemble_bundle(model, parts, dest, label, progress)
            return dest
    if model.build:
        raise ModelLoadError(
            f"{label}: {model.file} is built locally and is not in the cache yet; build it with: {build_command(model)}"
        )
    if is_offline(offline):
        bundle = f"{bundle_shortfall(model.bundle, missing)}, " if model.bundle else ""
        raise ModelLoadError(
            f"{label}: {model.file} is not in the cache ({dest.parent}), {bundle}and downloads are off "
            f"(HF_HUB_OFFLINE=1); fetch it with: {fetch_hint}"
        )
    download_from_hub(model, dest, label, progress)
    return dest


def is_offline(flag: bool | None = None) -> bool:
    """Whether downloads are off: ``flag`` if given, else ``HF_HUB_OFFLINE``."""
    if flag is not None:
        return flag
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
