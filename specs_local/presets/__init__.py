"""Model presets and model resolution.

A preset is a TOML manifest in ``models/`` (installed as ``specs_local.models``) naming a GGUF file
for each role (draft, target, reward); users may add their own in ``<home>/presets/``. The package
keeps apart what a manifest says (:mod:`.manifests`) from how a file is found or fetched: resolution
(:mod:`.resolution`), the cache and its checks (:mod:`.cache`, :mod:`.hashing`), bundles and
downloads (:mod:`.fetching`), and the status that ``specs-local models`` reports (:mod:`.status`).

A file enters the cache only complete and checked: it is written under a temporary name, its sha256
(and size) compared with the manifest, then renamed into place.
"""
from __future__ import annotations

from .cache import cache_path, value_head_path
from .hashing import known_sha256, read_sidecar, sha256_file, sidecar_path
from .manifests import DEFAULT_PRESET, REWARD_KINDS, ROLES, ModelFile, Preset, Role, home, list_presets, load_preset
from .resolution import is_offline, parse_hf_spec, resolve, resolve_role
from .status import CheckResult, RoleStatus, role_status, verify_cache

__all__ = ["DEFAULT_PRESET", "REWARD_KINDS", "ROLES", "CheckResult", "ModelFile", "Preset", "Role", "RoleStatus",
           "cache_path", "home", "is_offline", "known_sha256", "list_presets", "load_preset", "parse_hf_spec",
           "read_sidecar", "resolve", "resolve_role", "role_status", "sha256_file", "sidecar_path",
           "value_head_path", "verify_cache"]
