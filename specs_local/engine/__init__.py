"""The llama.cpp engine: one GGUF model, one context, many sequences.

All sequences of a model live in one KV cache (``kv_unified``), so a shared prefix is evaluated
once and forked with ``llama_memory_seq_cp``. Every decode is one explicit ``llama_batch`` whose
rows carry a sequence id and a position; positions come from ``Sequence.tokens`` and nowhere else.
This package is the only code that calls llama.cpp. Its parts:

- :mod:`.loading`: the backend and what its build supports, a GGUF file into a model, a context over it;
- :mod:`.vocab`: text to tokens and back, special tokens, the tokenizer's fingerprint;
- :mod:`.sequences`: what a sequence holds, and the table of ids and KV cells;
- :mod:`.batching`: feeding tokens through one batch per decode, reading the outputs back;
- :mod:`.scoring` and :mod:`.generation`: the two things a search asks of a model;
- :mod:`.accounting`: tokens evaluated by kind, the shape of every decode;
- :mod:`.capture`: named activations (a middle layer's output) copied out of a decode;
- :mod:`.model`: :class:`Model`, which holds them together.
"""
from __future__ import annotations

from .accounting import KINDS, KVCells, Usage, batch_class
from .generation import STEP_DELIMITER
from .loading import ModelConfig, build_info, check_gguf_file, supports_gpu_offload
from .model import Model
from .sequences import Generation, Sequence

__all__ = ["KINDS", "STEP_DELIMITER", "Generation", "KVCells", "Model", "ModelConfig", "Sequence", "Usage",
           "batch_class", "build_info", "check_gguf_file", "supports_gpu_offload"]
