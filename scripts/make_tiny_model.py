#!/usr/bin/env python3
"""Write small random-weight llama-architecture GGUF files for tests and profiles.

Two kinds of model:
- ``tiny`` (default): a few layers, tiny dims, a byte-level BPE vocabulary with
  ChatML special tokens and a ChatML chat template, so that real llama.cpp runs
  the whole product on it in milliseconds per token.
- real shapes (``--shape qwen2.5-1.5b`` etc.): the layer count and dimensions of
  a real model with random weights, so that a GPU or CPU can be profiled
  without downloading weights (the timing depends on shapes, not values).

Usage:
    python scripts/make_tiny_model.py OUT.gguf [--seed 0] [--extra-token]
    python scripts/make_tiny_model.py OUT.gguf --shape qwen2.5-1.5b
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Merges that make the step delimiter appear inside multi-character tokens, as
# Qwen's tokenizer does (".\n\n"), so that text-based stop detection is tested.
MERGES = ["Ċ Ċ", ". ĊĊ", "Ġ Ġ"]


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int | None = None  # None: the byte-level vocabulary's size
    n_ctx_train: int = 4096


SHAPES = {
    "tiny": Shape(n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128),
    "qwen2.5-0.5b": Shape(24, 896, 14, 2, 4864, 151936, 32768),
    "qwen2.5-1.5b": Shape(28, 1536, 12, 2, 8960, 151936, 32768),
    "qwen2.5-7b": Shape(28, 3584, 28, 4, 18944, 152064, 32768),
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def byte_vocab(extra_token: bool = False, n_vocab: int | None = None) -> tuple[list[str], list[int]]:
    """Token strings and types: 256 bytes, merged tokens, then ChatML specials."""
    tokens = sorted(bytes_to_unicode().values(), key=lambda c: ord(c))
    tokens += [m.replace(" ", "") for m in MERGES]
    if extra_token:  # a different token list, hence a different fingerprint
        tokens.append("ĠĠĠĠ")
    types = [1] * len(tokens)
    if n_vocab is not None:  # pad to a real vocabulary size with unused tokens
        pad = n_vocab - len(tokens) - len(SPECIAL_TOKENS)
        tokens += [f"<unused_{i}>" for i in range(pad)]
        types += [5] * pad  # UNUSED
    tokens += SPECIAL_TOKENS
    types += [3] * len(SPECIAL_TOKENS)  # CONTROL
    return tokens, types


def write_model(path: str | Path, *, seed: int = 0, shape: str = "tiny", extra_token: bool = False,
                endless: bool = False, bigram: str | None = None, chat_template: str | None = CHATML_TEMPLATE,
                quantized: bool = False) -> Path:
    """Write one random-weight llama GGUF file and return its path.

    ``endless``: the end-of-turn token's logit is always 0, below the best of
    the others, so greedy decoding never ends a turn (for interrupt tests).
    ``bigram``: one of BIGRAMS, a model whose layers add nothing and whose
    next token follows a small table (sums the calculator decides, or boxed
    answers). ``chat_template``: None writes a model without one. ``quantized``: the layers'
    matrices in Q4_0, a type llama.cpp's CPU repack lays out anew at load (where it has kernels
    for it, as on AVX2 or NEON), so a load shows whether that layout was used."""
    import gguf  # the dev extra; imported here so that the module imports without it

    spec = SHAPES[shape]
    tokens, types = byte_vocab(extra_token, spec.n_vocab)
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"specs-local-{shape}-seed{seed}")
    w.add_context_length(spec.n_ctx_train)
    w.add_embedding_length(spec.n_embd)
    w.add_block_count(spec.n_layer)
    w.add_feed_forward_length(spec.n_ff)
    w.add_head_count(spec.n_head)
    w.add_head_count_kv(spec.n_head_kv)
    w.add_rope_dimension_count(spec.n_embd // spec.n_head)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0 if quantized else
                    gguf.LlamaFileType.ALL_F32 if shape == "tiny" else gguf.LlamaFileType.MOSTLY_F16)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_eot_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    dtype = np.float32 if shape == "tiny" else np.float16
    scale = 1.0 / np.sqrt(spec.n_embd)
    head_dim = spec.n_embd // spec.n_head

    def rand(*dims: int, std: float = scale) -> np.ndarray:
        return (rng.standard_normal(dims, dtype=np.float32) * std).astype(dtype)

    embd = rand(n_vocab, spec.n_embd, std=1.0)
    output = rand(n_vocab, spec.n_embd, std=4.0 * scale)
    if bigram:
        embd, output = bigram_weights(tokens, spec.n_embd, rng, BIGRAMS[bigram])
    elif shape == "tiny":
        # Larger rows make the delimiter and end-of-turn tokens come up often, so
        # that steps end by text and by EOS within a few tokens in tests.
        for tok, boost in (("ĊĊ", 3.0), (".ĊĊ", 3.0), ("<|im_end|>", 0.0 if endless else 2.0)):
            output[tokens.index(tok)] *= boost
    def add_matrix(name: str, weights: np.ndarray) -> None:
        if not quantized:
            w.add_tensor(name, weights)
            return
        q4_0 = gguf.GGMLQuantizationType.Q4_0
        w.add_tensor(name, gguf.quants.quantize(weights.astype(np.float32), q4_0), raw_dtype=q4_0)

    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
    w.add_tensor("output.weight", output)
    for i in range(spec.n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        add_matrix(f"blk.{i}.attn_q.weight", rand(spec.n_embd, spec.n_embd))
        add_matrix(f"blk.{i}.attn_k.weight", rand(spec.n_head_kv * head_dim, spec.n_embd))
        add_matrix(f"blk.{i}.attn_v.weight", rand(spec.n_head_kv * head_dim, spec.n_embd))
        quiet = 0.0 if bigram else 1.0  # a bigram model: the layers leave the embedding as it is
        add_matrix(f"blk.{i}.attn_output.weight", rand(spec.n_embd, spec.n_embd) * quiet)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        add_matrix(f"blk.{i}.ffn_gate.weight", rand(spec.n_ff, spec.n_embd))
        add_matrix(f"blk.{i}.ffn_up.weight", rand(spec.n_ff, spec.n_embd))
        add_matrix(f"blk.{i}.ffn_down.weight", rand(spec.n_embd, spec.n_ff) * quiet)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# Scripted bigram models: next-token logits by class of the current token
# (a class is a token, or "digit", "delim", "eog", "other"). Unlisted: -12.
BIGRAMS = {
    # Steps that assert sums the calculator decides ("12+3=45"); never ends a turn.
    "arithmetic": {
        "other": {"digit": 6.0},  # the prompt's last token, and any text fed in
        "digit": {"digit": 2.0, "+": 3.0, "=": 3.0, "delim": 3.0},
        "+": {"digit": 6.0},
        "=": {"digit": 6.0},
        "delim": {"digit": 6.0},
    },
    # Steps "\boxed{d}" with a random digit d; a solution ends after a few: right 1 time in 10.
    "boxed": {
        "other": {"\\": 6.0},
        "\\": {"b": 6.0}, "b": {"o": 6.0}, "o": {"x": 6.0}, "x": {"e": 6.0}, "e": {"d": 6.0},
        "d": {"{": 6.0}, "{": {"digit": 6.0}, "digit": {"}": 6.0},
        "}": {"delim": 3.0, "eog": 3.0},
        "delim": {"\\": 6.0},
        "eog": {"\\": 6.0},
    },
}
# "boxed" whose solutions end with either end-of-generation token, <|im_end|> or <|endoftext|>.
BIGRAMS["boxed-either-end"] = {**BIGRAMS["boxed"], "}": {"delim": 3.0, "eog": 3.0, "<|endoftext|>": 3.0},
                               "<|endoftext|>": {"\\": 6.0}}


def bigram_weights(tokens: list[str], n_embd: int, rng: np.random.Generator,
                   table: dict[str, dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Embedding and output matrices of a bigram model: each class of token
    embeds as one orthonormal direction (scaled to unit RMS, so the final norm
    keeps it), and a token's output row reads its class's logit from each
    direction. With the layers silenced, the logits are exactly the table's."""
    def token_class(tok: str) -> str:
        if len(tok) == 1 and tok in "0123456789":
            name = "digit"
        else:
            name = {"ĊĊ": "delim", ".ĊĊ": "delim", "<|im_end|>": "eog"}.get(tok, tok)
        return name if name in table else "other"

    classes = list(table)
    basis = np.linalg.qr(rng.standard_normal((n_embd, len(classes))))[0].T  # orthonormal rows
    embd = np.empty((len(tokens), n_embd), np.float32)
    output = np.empty((len(tokens), n_embd), np.float32)
    for i, tok in enumerate(tokens):
        to = token_class(tok)
        embd[i] = basis[classes.index(to)] * np.sqrt(n_embd)
        logits = [table[c].get(to, -12.0) for c in classes]
        output[i] = np.asarray(logits) @ basis / np.sqrt(n_embd)
    return embd, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output .gguf path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--extra-token", action="store_true", help="a different vocabulary (fingerprint tests)")
    parser.add_argument("--endless", action="store_true", help="greedy decoding never ends the turn")
    parser.add_argument("--bigram", choices=sorted(BIGRAMS), help="a scripted bigram model")
    parser.add_argument("--quantized", action="store_true", help="the layers' matrices in Q4_0")
    args = parser.parse_args()
    print(write_model(args.out, seed=args.seed, shape=args.shape, extra_token=args.extra_token, endless=args.endless,
                      bigram=args.bigram, quantized=args.quantized))


if __name__ == "__main__":
    main()
