#!/usr/bin/env python3
"""Extract a PRM's value head from a Hugging Face checkpoint into a .npz for specs-local.

The head becomes ``w0, b0, w1, b1, ..., kind`` (float32), as ``ValueHead.load``
in specs_local/rewards/value_head.py reads it; the backbone runs in llama.cpp as a GGUF
with per-token embeddings and the head is applied in numpy.

Known heads (found automatically, or name one with --prefix):
- Skywork-o1-Open-PRM-Qwen-2.5 1.5B/7B: ``v_head.summary`` (Linear hidden->1),
  kind "sigmoid". These checkpoints ship only ``pytorch_model.bin``.
- Qwen2.5-Math-PRM-7B: ``score.0`` (Linear hidden->hidden), ReLU, ``score.2``
  (Linear hidden->2), kind "softmax" (reward = class 1). Sharded safetensors.

Weights are read without torch: safetensors are parsed directly, and
``pytorch_model.bin`` (torch's zip format) through an unpickler that accepts
only the globals a state dict needs. Only the head's bytes are read.

With --gguf, the backbone goes with it: llama.cpp's converter refuses a PRM
checkpoint (its architecture and head tensors are unknown to it), so this
writes a plain causal-LM copy of the backbone (head dropped, safetensors) and
prints the llama.cpp ``convert_hf_to_gguf.py`` command that makes the GGUF.

Usage:
    python scripts/convert_value_head.py SOURCE [--revision REV] [--out HEAD.npz]
        [--kind auto|sigmoid|softmax] [--prefix NAME] [--gguf BACKBONE.gguf]

SOURCE is a checkpoint folder, ``hf:OWNER/NAME`` or ``OWNER/NAME`` (downloaded
with huggingface_hub; HF_HUB_OFFLINE=1 uses the local cache only).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import math
import os
import pickle
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from specs_local.errors import SpecsError
from specs_local.presets import is_offline

KNOWN_HEADS = ("v_head.summary", "score")  # Skywork (trl ValueHead), Qwen2.5-Math-PRM
KINDS_BY_OUTPUTS = {1: "sigmoid", 2: "softmax"}
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "generation_config.json", "tokenizer.model")
CAUSAL_LM = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}  # model_type -> what llama.cpp converts
MAX_HEADER = 100 << 20  # a safetensors JSON header larger than this is not a real one
CHUNK = 64 << 20

# Safetensors dtype names; torch storage classes map onto them.
NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
                "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
TORCH_STORAGES = {"DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
                  "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
                  "ByteStorage": "U8", "BoolStorage": "BOOL"}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


# ---------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes are: a file (safetensors) or a zip member
    (torch), from byte ``offset``, laid out with element ``strides``."""

    name: str
    dtype: str  # a key of NUMPY_DTYPES
    shape: tuple[int, ...]
    path: Path
    offset: int
    member: str | None = None  # zip member of a torch checkpoint
    strides: tuple[int, ...] | None = None  # None: C-contiguous

    @property
    def itemsize(self) -> int:
        return np.dtype(NUMPY_DTYPES[self.dtype]).itemsize

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def contiguous(self) -> bool:
        return self.strides is None or self.count == 0 or self.strides == c_strides(self.shape)

    @property
    def span(self) -> int:
        """Elements from the first to the last one the tensor touches."""
        if self.count == 0:
            return 0
        if self.contiguous:
            return self.count
        return 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))


def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


@contextlib.contextmanager
def open_bytes(ref: TensorRef):
    """A binary file positioned anywhere in the tensor's container."""
    if ref.member is None:
        with open(ref.path, "rb") as f:
            yield f
    else:
        with zipfile.ZipFile(ref.path) as z, z.open(ref.member) as f:
            yield f


def span_chunks(ref: TensorRef, size: int = CHUNK) -> Iterator[bytes]:
    """The raw bytes of the tensor's span, in chunks; fails on a short file."""
    left = ref.span * ref.itemsize
    with open_bytes(ref) as f:
        f.seek(ref.offset)
        while left:
            chunk = f.read(min(size, left))
            if not chunk:
                raise SpecsError(f"{ref.path.name}: tensor {ref.name} runs past the end of the file (truncated?)")
            left -= len(chunk)
            yield chunk


def raw_array(ref: TensorRef) -> np.ndarray:
    """The tensor in its stored dtype (BF16 as uint16 bits), C-contiguous."""
    flat = np.frombuffer(b"".join(span_chunks(ref)), dtype=NUMPY_DTYPES[ref.dtype])
    if ref.contiguous:
        return flat.reshape(ref.shape)
    byte_strides = tuple(s * ref.itemsize for s in ref.strides)
    return np.ascontiguousarray(np.lib.stride_tricks.as_strided(flat, ref.shape, byte_strides))


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype not in FLOAT_DTYPES:
        raise SpecsError(f"value-head tensors must be floating point, not {dtype}")
    return raw.astype(np.float32)


def read_float32(ref: TensorRef) -> np.ndarray:
    return to_float32(raw_array(ref), ref.dtype)


# ------------------------------------------------------------ safetensors


def safetensors_refs(path: Path) -> dict[str, TensorRef]:
    """Tensor locations from a safetensors header (8-byte little-endian
    length, JSON header, then the raw bytes)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(MAX_HEADER, size - 8):
            raise SpecsError(f"{path} is not a safetensors file (a git-lfs pointer or truncated?)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SpecsError(f"{path} is not a safetensors file: its header is not JSON") from None
    start = 8 + n
    refs = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SpecsError(f"{path}: malformed header entry for {name}") from None
        if dtype not in NUMPY_DTYPES:
            raise SpecsError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        ref = TensorRef(name, dtype, shape, path, start + begin)
        if end - begin != ref.count * ref.itemsize or start + end > size:
            raise SpecsError(f"{path}: tensor {name} has {end - begin} bytes for shape {list(shape)} {dtype}, "
                             f"or runs past the file")
        refs[name] = ref
    return refs


def write_safetensors(path: Path, refs: list[TensorRef]) -> None:
    """Copy tensors byte for byte into one safetensors file (streamed)."""
    header, at = {}, 0
    for ref in refs:
        nbytes = ref.count * ref.itemsize
        header[ref.name] = {"dtype": ref.dtype, "shape": list(ref.shape), "data_offsets": [at, at + nbytes]}
        at += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned, as the format recommends
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for ref in refs:
            if ref.contiguous:
                for chunk in span_chunks(ref):
                    f.write(chunk)
            else:
                f.write(raw_array(ref).tobytes())


# ------------------------------------------------- torch zip (no torch)


@dataclass(frozen=True)
class _Storage:
    dtype: str
    member: str


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor_v2(storage, offset, shape, strides, *_ignored) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(shape), tuple(strides))


class _StateDictUnpickler(pickle.Unpickler):
    """Loads a torch state dict's structure, never its code: only the few
    globals a plain state dict uses are resolved, to harmless stand-ins."""

    def __init__(self, data: bytes, prefix: str, source: Path):
        super().__init__(io.BytesIO(data))
        self.prefix = prefix
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in TORCH_STORAGES:
            return _StorageType(TORCH_STORAGES[name])
        raise SpecsError(f"{self.source}: refusing pickle global {module}.{name} (not a plain state dict)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise SpecsError(f"{self.source}: unsupported storage record {pid!r:.60}")
        return _Storage(pid[1].dtype, f"{self.prefix}data/{pid[2]}")


def torch_refs(path: Path) -> dict[str, TensorRef]:
    """Tensor locations in a ``torch.save`` zip file (``pytorch_model.bin``)."""
    if not zipfile.is_zipfile(path):
        raise SpecsError(f"{path} is not a torch zip checkpoint (the legacy pre-1.6 format is not supported)")
    with zipfile.ZipFile(path) as z:
        pkl = next((n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
        if pkl is None:
            raise SpecsError(f"{path} has no data.pkl: not a torch checkpoint")
        prefix = pkl[: -len("data.pkl")]
        if prefix + "byteorder" in z.namelist() and z.read(prefix + "byteorder").strip() != b"little":
            raise SpecsError(f"{path} was saved big-endian; only little-endian checkpoints are supported")
        try:
            state = _StateDictUnpickler(z.read(pkl), prefix, path).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise SpecsError(f"{path}: unreadable state dict ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise SpecsError(f"{path} does not hold a state dict")
    refs = {}
    for name, t in state.items():
        if isinstance(t, _Tensor):
            itemsize = np.dtype(NUMPY_DTYPES[t.storage.dtype]).itemsize
            refs[name] = TensorRef(name, t.storage.dtype, t.shape, path, t.offset * itemsize,
                                   member=t.storage.member, strides=t.strides)
    return refs


def file_refs(path: Path) -> dict[str, TensorRef]:
    if not path.is_file():
        raise SpecsError(f"checkpoint file missing: {path}")
    return safetensors_refs(path) if path.suffix == ".safetensors" else torch_refs(path)


# --------------------------------------------------------------- checkpoint


def weight_map(folder: Path) -> dict[str, str]:
    """Tensor name -> file name, from an index or the single weights file."""
    for index in INDEX_FILES:
        if (folder / index).is_file():
            try:
                mapping = json.loads((folder / index).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise SpecsError(f"{folder / index} is not a checkpoint index (no weight_map)") from None
            return {str(k): str(v) for k, v in mapping.items()}
    for single in SINGLE_FILES:
        if (folder / single).is_file():
            return {name: single for name in file_refs(folder / single)}
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    if found:
        return {name: f for f in found for name in file_refs(folder / f)}
    raise SpecsError(f"no weights in {folder}: expected {' or '.join(INDEX_FILES + SINGLE_FILES)}")


def tensor_refs(folder: Path, names: Iterable[str], files: dict[str, str]) -> dict[str, TensorRef]:
    """Locations of ``names``, opening only the files that hold them."""
    names = list(names)
    refs: dict[str, TensorRef] = {}
    for file in sorted({files[n] for n in names}):
        in_file = file_refs(folder / file)
        for name in (n for n in names if files[n] == file):
            if name not in in_file:
                raise SpecsError(f"{folder / file} lacks tensor {name} that its index promises")
            refs[name] = in_file[name]
    return refs


# ------------------------------------------------------------------- head


def find_prefix(names: Iterable[str]) -> str:
    names = set(names)
    for prefix in KNOWN_HEADS:
        if any(n.startswith(prefix + ".") for n in names):
            return prefix
    raise SpecsError(f"no value head found (looked for {', '.join(p + '.*' for p in KNOWN_HEADS)}); "
                     f"name its tensors with --prefix")


def head_layer_names(names: Iterable[str], prefix: str) -> list[tuple[str, str | None]]:
    """(weight, bias) names of the head's Linear layers, in order.

    ``prefix.weight`` is a single Linear; ``prefix.<i>.weight`` an
    nn.Sequential whose parameterless modules between Linears (indices
    skipped) are taken to be ReLU, as in Qwen2.5-Math-PRM's score head."""
    under = {n[len(prefix) + 1:] for n in names if n.startswith(prefix + ".")}
    if not under:
        raise SpecsError(f"no tensors named {prefix}.* in the checkpoint")
    if "weight" in under:
        layers = [("weight", "bias")]
    else:
        indices = sorted(int(m.group(1)) for k in under if (m := re.fullmatch(r"(\d+)\.weight", k)))
        if not indices:
            raise SpecsError(f"{prefix}.* holds no Linear weights: {', '.join(sorted(under)[:4])}")
        if any(b - a != 2 for a, b in zip(indices, indices[1:])):
            raise SpecsError(f"{prefix} is not Linear-ReLU-Linear: layers {indices} (expected one activation between Linears)")
        layers = [(f"{i}.weight", f"{i}.bias") for i in indices]
    expected = {k for pair in layers for k in pair}
    if under - expected:
        raise SpecsError(f"{prefix} has parameters a Linear-ReLU head does not: {', '.join(sorted(under - expected))}")
    return [(f"{prefix}.{w}", f"{prefix}.{b}" if b in under else None) for w, b in layers]


def check_layers(layers: list[tuple[np.ndarray, np.ndarray | None]], prefix: str, hidden_size: int | None) -> None:
    width = hidden_size
    for i, (w, b) in enumerate(layers):
        if w.ndim != 2:
            raise SpecsError(f"{prefix} layer {i}: weight has shape {list(w.shape)}, not (out, in)")
        if width is not None and w.shape[1] != width:
            what = "the backbone's hidden size" if i == 0 else "the previous layer's outputs"
            raise SpecsError(f"{prefix} layer {i} takes {w.shape[1]} inputs but {what} is {width}")
        if b is not None and b.shape != (w.shape[0],):
            raise SpecsError(f"{prefix} layer {i}: bias has shape {list(b.shape)} for {w.shape[0]} outputs")
        width = w.shape[0]


def head_kind(outputs: int, asked: str, prefix: str) -> str:
    natural = KINDS_BY_OUTPUTS.get(outputs)
    if asked == "auto":
        if natural is None:
            raise SpecsError(f"{prefix} has {outputs} outputs; a value head has 1 (sigmoid) or 2 (softmax)")
        return natural
    if natural != asked:
        need = {v: k for k, v in KINDS_BY_OUTPUTS.items()}[asked]
        raise SpecsError(f"--kind {asked} needs a head with {need} output(s); {prefix} has {outputs}")
    return asked


def read_head(folder: Path, files: dict[str, str], prefix: str | None, kind: str):
    """(layers, kind, prefix) of the value head in a checkpoint folder."""
    prefix = prefix or find_prefix(files)
    pairs = head_layer_names(files, prefix)
    refs = tensor_refs(folder, [n for pair in pairs for n in pair if n], files)
    layers = [(read_float32(refs[w]), read_float32(refs[b]) if b else None) for w, b in pairs]
    check_layers(layers, prefix, hidden_size(folder))
    return layers, head_kind(layers[-1][0].shape[0], kind, prefix), prefix


def hidden_size(folder: Path) -> int | None:
    config = read_config(folder)
    return config.get("hidden_size") if config else None


def read_config(folder: Path) -> dict | None:
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise SpecsError(f"{path} is not valid JSON") from None


def write_head(path: Path, layers, kind: str) -> None:
    arrays = {"kind": np.array(kind)}
    for i, (w, b) in enumerate(layers):
        arrays[f"w{i}"] = w
        if b is not None:
            arrays[f"b{i}"] = b
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append ".npz" to the name
        np.savez(f, **arrays)
    os.replace(tmp, path)


# --------------------------------------------------------------- backbone


def backbone_config(config: dict | None, folder: Path) -> dict:
    """The PRM's config as the plain causal LM llama.cpp can convert."""
    if config is None:
        raise SpecsError(f"{folder} has no config.json; the backbone cannot be described to llama.cpp")
    model_type = config.get("model_type")
    if model_type not in CAUSAL_LM:
        raise SpecsError(f"backbone model_type {model_type!r} is not one this script knows ({', '.join(CAUSAL_LM)})")
    plain = {k: v for k, v in config.items() if k not in ("auto_map", "architectures")}
    plain["architectures"] = [CAUSAL_LM[model_type]]
    return plain


def write_backbone(folder: Path, files: dict[str, str], head_prefix: str, dest: Path) -> None:
    """A causal-LM checkpoint folder of the backbone: every tensor but the
    head's, in one safetensors file, with the tokenizer files."""
    config = backbone_config(read_config(folder), folder)
    names = sorted(n for n in files if not n.startswith(head_prefix + "."))
    refs = tensor_refs(folder, names, files)
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, tmp / name)
    write_safetensors(tmp / "model.safetensors", [refs[n] for n in names])
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def convert_command(backbone: Path, gguf: Path, outtype: str) -> str:
    return f"python llama.cpp/convert_hf_to_gguf.py {backbone} --outfile {gguf} --outtype {outtype}"


def gguf_outtype(gguf: Path) -> str:
    """The converter's --outtype that the GGUF's file name promises (f16 by default)."""
    stem = gguf.stem.lower()
    return next((t for t in ("bf16", "q8_0", "f32", "f16") if stem.endswith(t)), "f16")


# ---------------------------------------------------------------- sources


def hub_repo(source: str) -> str | None:
    """The repo id when ``source`` names the hub rather than a folder."""
    if source.startswith("hf:"):
        return source[3:]
    if not Path(source).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        return source
    return None


def download(repo: str, revision: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo, revision=revision, allow_patterns=patterns))
    except Exception as e:  # the hub client raises many types; the user needs one line
        if is_offline():
            raise SpecsError(f"{repo}@{revision} is not in the Hugging Face cache and HF_HUB_OFFLINE is set") from None
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecsError(f"could not download {repo}@{revision}: {detail}") from None


def fetch_checkpoint(repo: str, revision: str, head_prefix: str | None, whole: bool) -> Path:
    """Download the metadata, then only the weight files needed: the head's
    shard(s), or everything when the backbone is wanted too."""
    folder = download(repo, revision, ["*.json", "*.txt", "*.model"])
    index = next((folder / i for i in INDEX_FILES if (folder / i).is_file()), None)
    if index is None:
        for single in SINGLE_FILES:
            folder = download(repo, revision, [single])
            if (folder / single).is_file():
                return folder
        raise SpecsError(f"{repo}@{revision} has no {' or '.join(INDEX_FILES + SINGLE_FILES)}")
    files = weight_map(folder)
    if whole:
        wanted = set(files.values())
    else:
        prefix = head_prefix or find_prefix(files)
        wanted = {files[n] for pair in head_layer_names(files, prefix) for n in pair if n}
    return download(repo, revision, sorted(wanted))


def resolve_folder(source: str, revision: str, prefix: str | None, whole: bool) -> Path:
    repo = hub_repo(source)
    if repo is not None:
        return fetch_checkpoint(repo, revision, prefix, whole)
    folder = Path(source)
    if not folder.is_dir():
        raise SpecsError(f"checkpoint folder not found: {folder} (or name a hub repo as hf:OWNER/NAME)")
    return folder


def default_head_path(source: str) -> Path:
    name = (hub_repo(source) or str(Path(source).resolve())).rstrip("/").split("/")[-1]
    return Path(f"{name.lower()}.value_head.npz")


# -------------------------------------------------------------------- CLI


def convert(source: str, *, revision: str = "main", out: Path | None = None, kind: str = "auto",
            prefix: str | None = None, gguf: Path | None = None) -> list[str]:
    """Write the head (and the backbone folder for --gguf); returns the lines to print."""
    need_backbone = gguf is not None and not gguf.is_file()
    folder = resolve_folder(source, revision, prefix, whole=need_backbone)
    files = weight_map(folder)
    layers, kind, prefix = read_head(folder, files, prefix, kind)
    out = out or default_head_path(source)
    write_head(out, layers, kind)
    dims = "->".join(str(n) for n in [layers[0][0].shape[1]] + [w.shape[0] for w, _ in layers])
    lines = [f"wrote {out}: {prefix} ({dims}, kind {kind})"]
    if gguf is None:
        return lines
    if not need_backbone:
        return lines + [f"backbone GGUF already there: {gguf}"]
    backbone = gguf.with_name(gguf.stem + ".hf")
    write_backbone(folder, files, prefix, backbone)
    return lines + [
        f"wrote the backbone as a plain {backbone_config(read_config(folder), folder)['architectures'][0]} "
        f"checkpoint: {backbone}",
        "make the GGUF with llama.cpp's converter (it needs torch; see llama.cpp's "
        "requirements/requirements-convert_hf_to_gguf.txt), then delete that folder:",
        "  " + convert_command(backbone, gguf, gguf_outtype(gguf)),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="checkpoint folder, hf:OWNER/NAME or OWNER/NAME")
    parser.add_argument("--revision", default="main", help="hub revision (branch, tag or commit)")
    parser.add_argument("--out", "--head", dest="out", type=Path,
                        help="the .npz to write (default: <name>.value_head.npz here)")
    parser.add_argument("--kind", choices=("auto", "sigmoid", "softmax"), default="auto",
                        help="sigmoid: one output; softmax: reward = class 1 of two (auto: by outputs)")
    parser.add_argument("--prefix", help=f"the head's tensor-name prefix (default: the first of {', '.join(KNOWN_HEADS)})")
    parser.add_argument("--gguf", type=Path,
                        help="the backbone GGUF that goes with the head: if missing, write the backbone for llama.cpp")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lines = convert(args.source, revision=args.revision, out=args.out, kind=args.kind,
                        prefix=args.prefix, gguf=args.gguf)
    except SpecsError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a disk full or an unreadable file, said in one line
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
