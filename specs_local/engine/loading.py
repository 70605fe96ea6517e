"""Loading: the llama.cpp backend, a GGUF file into a model, and a context over it."""
from __future__ import annotations

import ctypes
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as llama

from ..errors import ModelLoadError, SpecsError
from ..interrupts import deferred
from ..machine import cpu_flags, cpu_model
from .build_fit import check_build_fits_cpu
from .repack import hidden_buffer_types, plan_for

_LOG_TAIL: deque[str] = deque(maxlen=20)
# "load_tensors:   CPU_REPACK model buffer size =   596.53 MiB": where the last load put its weights.
_WEIGHT_BUFFER = re.compile(r"(\S+) model buffer size =\s*([\d.]+) MiB")
_LOAD_BUFFERS: dict[str, float] = {}
_backend_ready = False
_build_fits = False


@llama.llama_log_callback
def _log_to_tail(level, text, _user_data):  # pragma: no cover - called from C
    # Keep llama.cpp quiet; remember recent messages so that load errors can say why.
    message = text.decode("utf-8", errors="replace").strip() if text else ""
    if message:
        _LOG_TAIL.append(message)
        if found := _WEIGHT_BUFFER.search(message):
            _LOAD_BUFFERS[found.group(1)] = float(found.group(2))
    if os.environ.get("SPECS_LOCAL_LLAMA_LOG"):
        print(message, flush=True)


def ensure_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        with deferred():  # llama.cpp logs through _log_to_tail from here on (see load_model)
            llama.llama_log_set(_log_to_tail, ctypes.c_void_p(0))
            llama.llama_backend_init()
            _backend_ready = True


def supports_gpu_offload() -> bool:
    ensure_backend()
    return bool(llama.llama_supports_gpu_offload())


def system_info() -> str:
    """llama.cpp's own line on its build: each backend and the instruction sets it was compiled with."""
    return llama.llama_print_system_info().decode("utf-8", errors="replace").strip().rstrip("|").strip()


def ensure_build_fits_cpu() -> None:
    """Stop with one line, before a load, where the build would die of an illegal instruction."""
    global _build_fits
    if not _build_fits:
        check_build_fits_cpu(system_info(), cpu_flags(), cpu_model())
        _build_fits = True


def build_info() -> dict:
    """llama.cpp's build as this process loads it: version, CPU features, GPU offload."""
    return {"llama_cpp_python": llama.__version__, "system_info": system_info(), "gpu_offload": supports_gpu_offload()}


@dataclass(frozen=True)
class ModelConfig:
    n_ctx: int = 8192
    n_batch: int = 512
    n_seq_max: int = 16
    workload: str = ""  # what n_seq_max was sized for (slots.py): named when they run out
    kv_unified: bool = True
    n_gpu_layers: int = 0  # -1: all layers
    main_gpu: int = 0
    flash_attn: bool | None = None  # None: llama.cpp decides
    n_threads: int | None = None  # None: all cores
    cpu_repack: str = "auto"  # which CPU weight layouts the load may use (see repack.py)
    embeddings: bool = False  # per-token hidden states (value-head PRMs)
    # Graph nodes copied out of each decode (see capture.py), e.g. ("l_out-13",):
    # a sequence's ``hidden`` is then their values at its last token, concatenated.
    capture: tuple[str, ...] = ()


def check_gguf_file(path: Path) -> None:
    """Fail with one line for a missing file or a file that is not GGUF."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"not a GGUF file: {path}")


def load_model(path: Path, config: ModelConfig):
    """The GGUF file's weights (a ``llama_model*``), offloaded and laid out as ``config`` asks,
    and the MiB it put in each buffer type, e.g. {"CPU_Mapped": 1059.9, "CPU_REPACK": 596.5}."""
    ensure_backend()
    ensure_build_fits_cpu()
    check_gguf_file(path)
    plan = plan_for(config.cpu_repack)
    params = llama.llama_model_default_params()
    params.n_gpu_layers = config.n_gpu_layers if config.n_gpu_layers >= 0 else 999
    params.main_gpu = config.main_gpu
    params.use_extra_bufts = plan.use_extra
    with hidden_buffer_types(plan.hide if plan.use_extra else ()):
        _LOG_TAIL.clear()
        _LOAD_BUFFERS.clear()
        model = _make_holding_ctrl_c(llama.llama_model_load_from_file, llama.llama_model_free, str(path).encode(),
                                     params)
        buffers = dict(_LOAD_BUFFERS)
    if not model:
        reason = next((m for m in reversed(_LOG_TAIL) if "error" in m.lower() or "fail" in m.lower()), "")
        detail = f": {reason}" if reason else ""
        raise ModelLoadError(f"could not load GGUF model {path} (truncated or corrupt?){detail}")
    return model, buffers


def new_context(model, path: Path, config: ModelConfig):
    """A context over ``model`` (a ``llama_context*``) and the activation capture it reports to, if any.

    The caller must hold the capture as long as the context: C keeps only a pointer to its callback."""
    params = llama.llama_context_default_params()
    params.n_ctx = config.n_ctx
    params.n_batch = config.n_batch
    params.n_ubatch = config.n_batch
    params.n_seq_max = config.n_seq_max
    params.kv_unified = config.kv_unified
    threads = config.n_threads or os.cpu_count() or 1
    params.n_threads = threads
    params.n_threads_batch = threads
    params.no_perf = False  # the token counters are the accounting's ground truth
    params.flash_attn_type = {
        None: llama.LLAMA_FLASH_ATTN_TYPE_AUTO,
        True: llama.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        False: llama.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }[config.flash_attn]
    if config.embeddings:
        params.embeddings = True
        params.pooling_type = llama.LLAMA_POOLING_TYPE_NONE
    capture = None
    if config.capture:
        if config.embeddings:
            raise SpecsError("a model reads hidden states by embeddings or by capture, not both")
        from .capture import ActivationCapture

        capture = ActivationCapture(config.capture)
        params.cb_eval = capture.callback
        params.cb_eval_user_data = None
    ctx = _make_holding_ctrl_c(llama.llama_init_from_model, llama.llama_free, model, params)
    if not ctx:
        raise ModelLoadError(f"could not create a context for {path} (n_ctx={config.n_ctx}: out of memory?)")
    return ctx, capture


def _make_holding_ctrl_c(make, free, *args):
    """``make(*args)`` for a C object, with a Ctrl-C held until it returns: it logs through
    _log_to_tail, and ctypes drops a KeyboardInterrupt raised in a callback from C. A held
    Ctrl-C is raised once it returns, after ``free`` has released what it made."""
    made = None
    try:
        with deferred():
            made = make(*args)
    except BaseException:
        if made:
            free(made)
        raise
    return made


def model_chat_template(model) -> str | None:
    raw = llama.llama_model_chat_template(model, None)
    return raw.decode("utf-8", errors="replace") if raw else None
