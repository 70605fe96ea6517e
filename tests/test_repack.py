"""The CPU weight layout (--cpu-repack): the decision, and what a load really makes."""
from __future__ import annotations

import pytest

from specs_local.engine import Model, ModelConfig
from specs_local.engine import repack
from specs_local.engine.repack import AUTO_WITHOUT_AMX, hidden_buffer_types, plan_repack
from specs_local.errors import SpecsError
from specs_local.machine import cpu_flags

AMX_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8
"""
EPYC_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2 fma
"""


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    (tmp_path / "intel").write_text(AMX_CPUINFO)
    (tmp_path / "amd").write_text(EPYC_CPUINFO)
    assert {"amx_int8", "amx_tile", "avx2"} <= cpu_flags(tmp_path / "intel")
    assert "amx_int8" not in cpu_flags(tmp_path / "amd")
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_a_vm_moved_to_another_cpu_is_another_machine(tmp_path):
    """The host name stays when a VM starts on another CPU; a profile of one must not price the other."""
    from specs_local.costmodel import profile_key
    from specs_local.machine import machine_name

    (tmp_path / "intel").write_text(AMX_CPUINFO)
    (tmp_path / "amd").write_text(EPYC_CPUINFO)
    intel, amd = machine_name(tmp_path / "intel"), machine_name(tmp_path / "amd")
    assert intel.endswith("Intel(R) Xeon(R) Processor") and amd.endswith("AMD EPYC 7B13")
    assert profile_key(intel, "m.gguf", None, 0) != profile_key(amd, "m.gguf", None, 0)


def test_auto_never_uses_amx_on_an_amx_cpu(tmp_path):
    (tmp_path / "cpuinfo").write_text(AMX_CPUINFO)
    flags = cpu_flags(tmp_path / "cpuinfo")
    # The build offers AMX: it is taken out of the load, CPU_REPACK stays.
    plan = plan_repack("auto", flags, ("AMX", "CPU_REPACK"))
    assert plan.use_extra and plan.hide == ("AMX",) and plan.layouts == ("CPU_REPACK",)
    assert "AMX" in plan.describe() and "CPU_REPACK" in plan.describe()
    # AMX alone: nothing is left to use, so no extra buffer type at all.
    plan = plan_repack("auto", flags, ("AMX",))
    assert not plan.use_extra
    # The list cannot be read (another build): the CPU flags say AMX, so plain weights.
    plan = plan_repack("auto", flags, None)
    assert not plan.use_extra and "AMX" not in plan.layouts
    assert plan_repack("no-amx", flags, None).use_extra is False


def test_auto_without_amx_follows_the_measured_choice(tmp_path):
    (tmp_path / "cpuinfo").write_text(EPYC_CPUINFO)
    flags = cpu_flags(tmp_path / "cpuinfo")
    plan = plan_repack("auto", flags, ("CPU_REPACK",))
    assert plan.use_extra is (AUTO_WITHOUT_AMX == "on") and plan.hide == ()
    assert plan_repack("auto", flags, None).use_extra is (AUTO_WITHOUT_AMX == "on")


def test_on_and_off_are_what_they_say():
    assert plan_repack("on", {"amx_int8"}, ("AMX", "CPU_REPACK")).layouts == ("AMX", "CPU_REPACK")
    assert plan_repack("on", {"amx_int8"}, ("AMX", "CPU_REPACK")).hide == ()
    off = plan_repack("off", set(), ("CPU_REPACK",))
    assert not off.use_extra and off.layouts == ()
    with pytest.raises(SpecsError, match="cpu_repack must be one of"):
        plan_repack("fast", set(), ())


def _weight_buffers(path, mode: str) -> dict:
    model = Model(path, ModelConfig(n_ctx=256, n_seq_max=2, n_threads=1, cpu_repack=mode))
    try:
        return dict(model.weight_buffers)
    finally:
        model.close()


def test_the_setting_reaches_the_load(tiny_models):
    """llama.cpp's load log says which buffers it made: CPU_REPACK for the Q4_0 layers unless off."""
    offered = repack.extra_buffer_types()
    assert offered is not None and "CPU_REPACK" in offered  # this build repacks on this CPU (AVX2 or NEON)
    assert "CPU_REPACK" not in _weight_buffers(tiny_models["quantized"], "off")
    assert "CPU_REPACK" in _weight_buffers(tiny_models["quantized"], "no-amx")
    auto = _weight_buffers(tiny_models["quantized"], "auto")
    assert ("CPU_REPACK" in auto) is (AUTO_WITHOUT_AMX == "on" or "AMX" in offered)
    assert "AMX" not in auto
    # A float model has nothing to repack.
    assert "CPU_REPACK" not in _weight_buffers(tiny_models["target"], "on")


def test_hiding_a_layout_lasts_only_for_the_load(tiny_models, monkeypatch):
    """The mechanism auto uses to leave AMX out, shown on CPU_REPACK, which every x86 CPU here offers."""
    before = repack.extra_buffer_types()
    monkeypatch.setattr(repack, "plan_for", lambda mode: repack.RepackPlan(mode, True, ("CPU_REPACK",), (), "test"))
    with hidden_buffer_types(("CPU_REPACK",)):
        assert "CPU_REPACK" not in repack.extra_buffer_types()
    assert repack.extra_buffer_types() == before
    from specs_local.engine import loading

    monkeypatch.setattr(loading, "plan_for", repack.plan_for)
    assert "CPU_REPACK" not in _weight_buffers(tiny_models["quantized"], "on")
    assert repack.extra_buffer_types() == before


def test_a_repacked_model_decodes_as_the_plain_one(tiny_models):
    """Layouts change speed, not results: the greedy tokens of both loads agree."""
    import numpy as np

    from specs_local.sampling import SamplerParams

    texts = []
    for mode in ("off", "no-amx"):
        model = Model(tiny_models["quantized"], ModelConfig(n_ctx=256, n_seq_max=2, n_threads=1, cpu_repack=mode))
        try:
            seq = model.new_sequence(model.tokenize("What is 12 times 7?"))
            [gen] = model.generate([seq], SamplerParams(temperature=0.0), np.random.default_rng(0), max_tokens=12,
                                   stop_at_delimiter=False)
            texts.append(gen.tokens)
        finally:
            model.close()
    assert len(texts[0]) == 12 and texts[0][:4] == texts[1][:4]
