"""Which of llama.cpp's CPU weight layouts ("repacks") a model load may use.

At load, llama.cpp may copy CPU weights into extra buffer types laid out for its fastest
kernels: ``CPU_REPACK`` (interleaved blocks for AVX2/AVX-512/NEON) and, on Intel CPUs with AMX,
``AMX`` (tiles). The AMX one segfaults in ``ggml_backend_amx_mul_mat`` on the first decode on
cloud VMs (llama.cpp #20824, Ollama #17249 and #17006), and a segfault cannot be caught, so
``auto`` never lets a load use it.

Modes (``--cpu-repack``, ``cpu_repack`` in the config and the Python API):

- ``auto`` (default): every layout but AMX where the CPU offers AMX; elsewhere what
  :data:`AUTO_WITHOUT_AMX` says, chosen by measurement (docs/results/cpu-repack/);
- ``on``: llama.cpp's own default, AMX included;
- ``no-amx``: every layout but AMX;
- ``off``: plain weights (``use_extra_bufts = false``).

llama.cpp has no switch for one extra buffer type: ``use_extra_bufts`` takes all or none, and
a ``tensor_buft_overrides`` entry places a tensor without asking whether the layout can hold
it (a tensor CPU_REPACK cannot hold is a null dereference at load). So ``no-amx`` takes AMX
out of the null-terminated list that the CPU backend hands every load
(``ggml_backend_dev_get_extra_bufts``) for the length of the load, and puts it back after.
"""
from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import SpecsError
from ..machine import cpu_flags

MODES = ("auto", "on", "no-amx", "off")
AMX = "AMX"
AMX_CPU_FLAGS = frozenset({"amx_int8", "amx_tile", "amx_bf16"})  # as /proc/cpuinfo names them
# What ``auto`` does where the CPU has no AMX: "on" (llama.cpp's default, CPU_REPACK) or "off".
# Measured by scripts/bench_cpu_repack.py on an Intel Xeon VM: CPU_REPACK solved in 0.84 of plain
# weights' time (rule: keep it at 0.97 or less), docs/results/cpu-repack/README.md.
AUTO_WITHOUT_AMX = "on"

_LOAD_LOCK = threading.Lock()  # the list is process-wide: one load changes it at a time


@dataclass(frozen=True)
class RepackPlan:
    """How one load lays out its CPU weights."""
    mode: str
    use_extra: bool  # llama_model_params.use_extra_bufts
    hide: tuple[str, ...]  # extra buffer types taken out of the list for the load
    layouts: tuple[str, ...]  # the extra buffer types the load may use
    reason: str

    def describe(self) -> str:
        used = ", ".join(self.layouts) if self.use_extra and self.layouts else "plain weights"
        return f"{self.mode}: {used} ({self.reason})"


def plan_repack(mode: str, cpu_flags: frozenset[str] | set[str], extra_types: tuple[str, ...] | None) -> RepackPlan:
    """The layout a load uses. ``extra_types`` are the extra buffer types llama.cpp offers
    here, in its order, or None where they cannot be read (then none can be left out alone,
    and the CPU flags say whether AMX is there)."""
    if mode not in MODES:
        raise SpecsError(f"cpu_repack must be one of {', '.join(MODES)}, not {mode!r}")
    offered = extra_types or ()
    has_amx = AMX in offered if extra_types is not None else bool(AMX_CPU_FLAGS & set(cpu_flags))
    if mode == "off":
        return RepackPlan(mode, False, (), (), "asked for")
    if mode == "on":
        return RepackPlan(mode, True, (), offered, "llama.cpp's default")
    if mode == "auto" and not has_amx:
        use = AUTO_WITHOUT_AMX == "on"
        return RepackPlan(mode, use, (), offered if use else (), "no AMX here; measured choice")
    why = "AMX left out: it segfaults on cloud VMs" if has_amx else "no AMX here"
    if extra_types is None:
        return RepackPlan(mode, not has_amx, (), (), why + "; this build cannot leave out one layout")
    kept = tuple(name for name in offered if name != AMX)
    hide = (AMX,) if has_amx else ()
    return RepackPlan(mode, bool(kept), hide, kept, why)


# -- llama.cpp's list of extra buffer types ------------------------------------------------

def _extra_buffer_type_list():
    """The CPU backend's null-terminated array of extra buffer types (``void**``) and a function
    naming one, or None where this build does not expose them."""
    import llama_cpp as llama

    try:
        from llama_cpp._ggml import libggml
    except (ImportError, OSError):
        return None
    lib = libggml
    try:
        dev_by_type, backend_reg = lib.ggml_backend_dev_by_type, lib.ggml_backend_dev_backend_reg
        proc_address, buft_name = lib.ggml_backend_reg_get_proc_address, lib.ggml_backend_buft_name
    except AttributeError:
        return None
    dev_by_type.restype, dev_by_type.argtypes = ctypes.c_void_p, [ctypes.c_int]
    backend_reg.restype, backend_reg.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    proc_address.restype, proc_address.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
    buft_name.restype, buft_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    llama.llama_backend_init()
    cpu = dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not cpu:
        return None
    address = proc_address(backend_reg(cpu), b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return None
    array = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)(cpu)
    if not array:
        return None
    return array, lambda buft: buft_name(buft).decode("utf-8", errors="replace")


def _entries(array) -> list[int]:
    entries = []
    while array[len(entries)]:
        entries.append(array[len(entries)])
    return entries


def extra_buffer_types() -> tuple[str, ...] | None:
    """The names of the extra CPU buffer types llama.cpp offers a load, e.g. ("AMX", "CPU_REPACK")."""
    found = _extra_buffer_type_list()
    if found is None:
        return None
    array, name = found
    return tuple(name(entry) for entry in _entries(array))


def plan_for(mode: str) -> RepackPlan:
    """The plan for ``mode`` on this machine."""
    return plan_repack(mode, cpu_flags(), extra_buffer_types())


@contextmanager
def hidden_buffer_types(names: tuple[str, ...]) -> Iterator[None]:
    """Take ``names`` out of llama.cpp's list of extra buffer types while the block runs (a model
    load), and put the list back as it was. The other entries keep their order."""
    with _LOAD_LOCK:
        found = _extra_buffer_type_list() if names else None
        if found is None:
            yield
            return
        array, name = found
        original = _entries(array)
        kept = [entry for entry in original if name(entry) not in names]
        for i in range(len(original)):
            array[i] = kept[i] if i < len(kept) else None
        try:
            yield
        finally:
            for i, entry in enumerate(original):
                array[i] = entry
