"""A llama.cpp build compiled for another CPU stops with one line, not an illegal instruction."""
from __future__ import annotations

import pytest

from specs_local.engine.build_fit import BuildMismatchError, check_build_fits_cpu, compiled_features, missing_features
from specs_local.engine.loading import system_info
from specs_local.machine import cpu_flags

# What llama_print_system_info() said of a wheel built on an Intel Xeon with AMX (a session's VM).
XEON_AMX_BUILD = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
                  "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
                  "OPENMP = 1 | REPACK = 1")
AVX2_BUILD = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | OPENMP = 1"
GPU_BUILD = "CUDA : ARCHS = 900 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | " + AVX2_BUILD
_COMMON = ("fpu sse sse2 ssse3 pni pclmulqdq fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand "
           "bmi1 avx2 bmi2 erms adx sha_ni")
ZEN3 = frozenset(_COMMON.split())  # AMD EPYC 7B13: AVX2, no AVX-512
ZEN4 = ZEN3 | {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi",
               "avx512_vbmi2", "avx512_vnni", "avx512_bf16", "avx512_bitalg", "avx512_vpopcntdq"}
SAPPHIRE_RAPIDS = ZEN4 | {"avx_vnni", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8"}


def test_the_build_names_its_instruction_sets():
    assert compiled_features(XEON_AMX_BUILD)[:3] == ["SSE3", "SSSE3", "AVX"]
    assert "AMX_INT8" in compiled_features(XEON_AMX_BUILD) and "AMX_INT8" not in compiled_features(AVX2_BUILD)
    assert compiled_features("CPU : AVX512 = 0 | AVX2 = 1") == ["AVX2"]


def test_a_wheel_from_an_amx_xeon_does_not_fit_an_epyc():
    assert missing_features(XEON_AMX_BUILD, SAPPHIRE_RAPIDS) == []
    assert missing_features(XEON_AMX_BUILD, ZEN4) == ["AVX_VNNI", "AMX_INT8"]
    assert missing_features(XEON_AMX_BUILD, ZEN3) == ["AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
                                                      "AVX512_BF16", "AMX_INT8"]
    with pytest.raises(BuildMismatchError) as raised:
        check_build_fits_cpu(XEON_AMX_BUILD, ZEN3, "AMD EPYC 7B13")
    message = str(raised.value)
    assert "\n" not in message and "AMD EPYC 7B13" in message and "AVX512, " in message
    assert "pip install --force-reinstall --no-cache-dir llama-cpp-python" in message


def test_a_portable_build_fits_every_cpu_it_was_built_for():
    for flags in (ZEN3, ZEN4, SAPPHIRE_RAPIDS):
        check_build_fits_cpu(AVX2_BUILD, flags, "any")
        check_build_fits_cpu(GPU_BUILD, flags, "any")  # a GPU backend's entries are not instruction sets


def test_unknown_cpu_flags_never_stop_a_build():
    """No /proc/cpuinfo (macOS, Windows): nothing to compare, so nothing is refused."""
    check_build_fits_cpu(XEON_AMX_BUILD, frozenset(), "Apple M3")


def test_the_installed_build_fits_the_cpu_it_runs_on():
    """No false alarm where the wheel was built: every name this build reports maps to a flag this CPU has."""
    assert compiled_features(system_info()), system_info()
    assert missing_features(system_info(), cpu_flags()) == []
