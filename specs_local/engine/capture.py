"""Reading named activations out of a llama.cpp decode, as it runs.

llama.cpp calls the context's eval callback (``cb_eval``) for every node of
the compute graph, first to ask whether the caller wants that node's data,
then, for the nodes it said yes to, once the node is computed. Asking for a
layer's output (``l_out-13``) or the final normed state (``result_norm``)
copies it out of the very decode that evaluates the tokens, whatever backend
holds it: no second pass, and logits stay as they are (unlike embeddings mode,
which outputs every row of every batch).

Rows: a middle layer's node holds every row of the micro-batch; the last
layer's output and ``result_norm`` hold only the rows that output logits
(llama.cpp drops the others before the last layer).
"""
from __future__ import annotations

import ctypes
import pathlib

import numpy as np

import llama_cpp as llama
from llama_cpp._ctypes_extensions import load_shared_library

from ..errors import SpecsError

_ggml = load_shared_library("ggml-base", pathlib.Path(llama.__file__).parent / "lib")
_ggml.ggml_get_name.argtypes = [ctypes.c_void_p]
_ggml.ggml_get_name.restype = ctypes.c_char_p
_ggml.ggml_nelements.argtypes = [ctypes.c_void_p]
_ggml.ggml_nelements.restype = ctypes.c_int64
_ggml.ggml_nrows.argtypes = [ctypes.c_void_p]
_ggml.ggml_nrows.restype = ctypes.c_int64
_ggml.ggml_nbytes.argtypes = [ctypes.c_void_p]
_ggml.ggml_nbytes.restype = ctypes.c_size_t
_ggml.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
_ggml.ggml_backend_tensor_get.restype = None


def layer_output(layer: int) -> str:
    """The graph name of a layer's output (0-based), as llama.cpp's model graphs call it."""
    return f"l_out-{layer}"


FINAL_NORM = "result_norm"


class ActivationCapture:
    """Copies the nodes named in ``names`` out of each decode.

    ``rows[name]`` holds the last decode's values as a (rows, width) array.
    Install with ``params.cb_eval = capture.callback``; keep the object alive
    as long as the context (ctypes does not hold the callback for C)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = tuple(names)
        self._wanted = {name.encode() for name in self.names}
        self.rows: dict[str, np.ndarray] = {}
        self.callback = llama.ggml_backend_sched_eval_callback(self._on_node)

    def clear(self) -> None:
        self.rows = {}

    def _on_node(self, tensor, ask: bool, _user_data) -> bool:
        # Called from inside llama_decode: an exception here cannot cross into
        # C, so any failure is remembered and surfaced by ``take``.
        try:
            name = _ggml.ggml_get_name(tensor)
            if name not in self._wanted:
                return not ask  # not ours: no data wanted (and, after compute, go on)
            if ask:
                return True
            n, n_rows = _ggml.ggml_nelements(tensor), _ggml.ggml_nrows(tensor)
            if _ggml.ggml_nbytes(tensor) != 4 * n:
                self.rows[name.decode()] = SpecsError(f"activation {name.decode()} is not float32")
                return True
            out = np.empty((n_rows, n // n_rows), dtype=np.float32)
            _ggml.ggml_backend_tensor_get(tensor, out.ctypes.data, 0, out.nbytes)
            self.rows[name.decode()] = out
        except Exception as error:  # pragma: no cover - reported by take()
            self.rows["<error>"] = SpecsError(f"activation capture failed: {error}")
        return True

    def take(self, model_name: str) -> dict[str, np.ndarray]:
        """The rows the last decode produced, checked: every name present."""
        rows, self.rows = self.rows, {}
        errors = [v for v in rows.values() if isinstance(v, Exception)]
        if errors:
            raise errors[0]
        missing = [name for name in self.names if name not in rows]
        if missing:
            raise SpecsError(f"{model_name} has no graph node {missing[0]!r} (is the layer index within the model?)")
        return rows
