"""Whether the llama.cpp build this process loaded can run on this CPU.

llama-cpp-python compiles llama.cpp for the CPU it is built on (``-march=native``), and pip caches
the wheel by its source, not by CPU. A cache shared between machines (a home folder on NFS across a
Ray cluster, a CI cache) can hand a wheel built on a Xeon with AVX-512 and AMX to an AMD EPYC without
them, where a decode dies of an illegal instruction (SIGILL) that no Python code can catch.
llama.cpp says which instruction sets it was compiled with; comparing them with the CPU's flags
turns that crash into one line before any model loads.
"""
from __future__ import annotations

import re

from ..errors import SpecsError

# llama.cpp's name in llama_print_system_info() -> the flag Linux's cpuinfo gives a CPU that has it.
# Names not here (NEON, LLAMAFILE, OPENMP, REPACK, a GPU backend's entries) are never compared.
LINUX_FLAG = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX_VNNI": "avx_vnni", "AVX2": "avx2", "F16C": "f16c",
    "FMA": "fma", "BMI2": "bmi2", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8",
    "SVE": "sve", "DOTPROD": "asimddp", "MATMUL_INT8": "i8mm", "SME": "sme",
}
REBUILD = "pip install --force-reinstall --no-cache-dir llama-cpp-python"


class BuildMismatchError(SpecsError):
    """The llama.cpp build uses instructions this CPU does not have."""


def compiled_features(system_info: str) -> list[str]:
    """The instruction sets a build says it was compiled with ("AVX512 = 1"), in its order."""
    return [name for name, on in re.findall(r"\b([A-Z][A-Z0-9_]*) = (\d+)", system_info) if on != "0"]


def missing_features(system_info: str, cpu_flags: frozenset[str] | set[str]) -> list[str]:
    """The build's instruction sets this CPU lacks. None where the CPU's flags are unknown (no
    /proc/cpuinfo: macOS, Windows): a guess there could only stop a build that works."""
    if not cpu_flags:
        return []
    return [name for name in compiled_features(system_info)
            if name in LINUX_FLAG and LINUX_FLAG[name] not in cpu_flags]


def mismatch_message(missing: list[str], cpu_model: str) -> str:
    return (f"this llama-cpp-python build was compiled for a CPU with {', '.join(missing)}, which this CPU "
            f"({cpu_model}) lacks, and would die of an illegal instruction; it was probably built on "
            f"another machine and taken from pip's cache. Rebuild it here: {REBUILD}")


def check_build_fits_cpu(system_info: str, cpu_flags: frozenset[str] | set[str], cpu_model: str) -> None:
    if missing := missing_features(system_info, cpu_flags):
        raise BuildMismatchError(mismatch_message(missing, cpu_model))
