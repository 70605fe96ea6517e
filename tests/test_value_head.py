"""Value-head PRMs: the converter on checkpoints written here (safetensors
shards in F32/F16/BF16, a torch zip like Skywork's), and the head on a tiny
GGUF backbone, where a head made of one output row must reproduce that
token's logit."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, _load_script

from specs_local.engine import Model, ModelConfig
from specs_local.rewards import ValueHead, ValueHeadReward, make_reward
from specs_local.sampling import softmax

HIDDEN = 8
CONFIG = {"architectures": ["Qwen2ForProcessRewardModel"], "auto_map": {"AutoModel": "modeling_qwen2_rm.X"},
          "model_type": "qwen2", "hidden_size": HIDDEN}


@pytest.fixture(scope="module")
def conv():
    return _load_script("convert_value_head")


# -- checkpoint writers (independent of the converter) -------------------------


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, truncating."""
    return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def from_bf16(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def stored(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(array as stored, the float32 values a reader must recover)."""
    if dtype == "BF16":
        bits = bf16_bits(x)
        return bits, from_bf16(bits)
    data = x.astype({"F32": "<f4", "F16": "<f2"}[dtype])
    return data, data.astype(np.float32)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    header, blobs, at = {}, [], 0
    for name, (dtype, data) in tensors.items():
        raw = np.ascontiguousarray(data).tobytes()
        header[name] = {"dtype": dtype, "shape": list(data.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _str(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _ints(ns) -> bytes:
    return b"(" + b"".join(_int(n) for n in ns) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


EMPTY_ORDERED_DICT = _global("collections", "OrderedDict") + b")R"


def write_torch_zip(path: Path, tensors: dict, extra_global: tuple[str, str] | None = None) -> None:
    """torch.save's zip format, pickle opcodes written by hand (protocol 2):
    name -> (storage class, flat storage, element offset, shape, strides)."""
    body = b"\x80\x02" + EMPTY_ORDERED_DICT + b"("
    members = {}
    for key, (name, (storage, flat, offset, shape, strides)) in enumerate(tensors.items()):
        pid = b"(" + _str("storage") + _global("torch", storage) + _str(str(key)) + _str("cpu") + _int(flat.size) + b"t"
        args = pid + b"Q" + _int(offset) + _ints(shape) + _ints(strides) + b"\x89" + EMPTY_ORDERED_DICT
        body += _str(name) + _global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"
        members[f"archive/data/{key}"] = flat.tobytes()
    if extra_global:  # a hostile pickle: a global that must never be resolved
        body += _str("evil") + _global(*extra_global) + _str("echo pwned") + b"\x85R"
    body += b"u."
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", body)
        z.writestr("archive/byteorder", "little")
        for member, data in members.items():
            z.writestr(member, data)
        z.writestr("archive/version", "3\n")


def contiguous(storage: str, data: np.ndarray):
    strides = tuple(int(s) // data.itemsize for s in data.strides)
    return storage, data.ravel(), 0, data.shape, strides


def qwen_prm_folder(folder: Path, rng) -> dict[str, np.ndarray]:
    """A Qwen2.5-Math-PRM-like checkpoint: Linear-ReLU-Linear head `score`
    spread over two safetensors shards in three dtypes, with an index."""
    folder.mkdir()
    raw = {
        "score.0.weight": rng.standard_normal((HIDDEN, HIDDEN)),
        "score.0.bias": rng.standard_normal(HIDDEN),
        "score.2.weight": rng.standard_normal((2, HIDDEN)),
        "score.2.bias": rng.standard_normal(2),
        "model.embed_tokens.weight": rng.standard_normal((5, HIDDEN)),
        "model.norm.weight": rng.standard_normal(HIDDEN),
    }
    dtypes = {"score.0.weight": "F32", "score.0.bias": "F16", "score.2.weight": "BF16", "score.2.bias": "BF16",
              "model.embed_tokens.weight": "BF16", "model.norm.weight": "F32"}
    shards = {"model-00001-of-00003.safetensors": ["model.embed_tokens.weight", "score.0.weight"],
              "model-00002-of-00003.safetensors": ["score.0.bias", "score.2.weight", "score.2.bias"],
              "model-00003-of-00003.safetensors": ["model.norm.weight"]}
    values = {}
    for file, names in shards.items():
        tensors = {}
        for name in names:
            data, values[name] = stored(raw[name], dtypes[name])
            tensors[name] = (dtypes[name], data)
        write_safetensors(folder / file, tensors)
    index = {"metadata": {}, "weight_map": {n: f for f, names in shards.items() for n in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "tokenizer.json").write_text('{"fake": true}')
    return values


def skywork_folder(folder: Path, rng) -> dict[str, np.ndarray]:
    """A Skywork-o1-Open-PRM-like checkpoint: pytorch_model.bin only, BF16,
    scalar head v_head.summary; one backbone tensor is a strided view."""
    folder.mkdir()
    w, values_w = stored(rng.standard_normal((1, HIDDEN)), "BF16")
    b, values_b = stored(rng.standard_normal(1), "BF16")
    base = bf16_bits(rng.standard_normal(3 + 4 * HIDDEN))
    view = np.lib.stride_tricks.as_strided(base[3:], (HIDDEN, 4), (2, 2 * HIDDEN))  # a transposed view, offset 3
    embed, values_embed = stored(rng.standard_normal((5, HIDDEN)), "BF16")
    write_torch_zip(folder / "pytorch_model.bin", {
        "model.embed_tokens.weight": contiguous("BFloat16Storage", embed),
        "model.layers.0.mlp.down_proj.weight": ("BFloat16Storage", base, 3, (HIDDEN, 4), (1, HIDDEN)),
        "lm_head.weight": contiguous("BFloat16Storage", embed),
        "v_head.summary.weight": contiguous("BFloat16Storage", w),
        "v_head.summary.bias": contiguous("BFloat16Storage", b),
    })
    (folder / "config.json").write_text(json.dumps({**CONFIG, "architectures": ["Qwen2ForPrmModel"]}))
    return {"v_head.summary.weight": values_w, "v_head.summary.bias": values_b,
            "model.embed_tokens.weight": values_embed, "model.layers.0.mlp.down_proj.weight": from_bf16(view)}


# -- the converter --------------------------------------------------------------


def test_sharded_safetensors_head_in_three_dtypes(conv, tmp_path, capsys):
    values = qwen_prm_folder(tmp_path / "ckpt", np.random.default_rng(0))
    out = tmp_path / "head.npz"
    assert conv.main([str(tmp_path / "ckpt"), "--out", str(out)]) == 0
    assert "score (8->8->2, kind softmax)" in capsys.readouterr().out
    head = ValueHead.load(out)
    assert head.kind == "softmax"
    assert len(head.layers) == 2
    for (w, b), i in zip(head.layers, (0, 2)):
        np.testing.assert_array_equal(w, values[f"score.{i}.weight"])
        np.testing.assert_array_equal(b, values[f"score.{i}.bias"])
    x = np.random.default_rng(1).standard_normal(HIDDEN)
    (w0, b0), (w1, b1) = head.layers
    want = softmax(w1.astype(float) @ np.maximum(w0.astype(float) @ x + b0, 0) + b1)[1]
    assert head(x) == pytest.approx(want, rel=1e-6)


def test_torch_zip_checkpoint_like_skywork(conv, tmp_path):
    values = skywork_folder(tmp_path / "sky", np.random.default_rng(2))
    out = tmp_path / "deep" / "sky.npz"
    assert conv.main([str(tmp_path / "sky"), "--head", str(out)]) == 0
    head = ValueHead.load(out)
    assert head.kind == "sigmoid"
    [(w, b)] = head.layers
    np.testing.assert_array_equal(w, values["v_head.summary.weight"])
    np.testing.assert_array_equal(b, values["v_head.summary.bias"])
    x = np.random.default_rng(3).standard_normal(HIDDEN)
    assert head(x) == pytest.approx(1 / (1 + np.exp(-(w[0] @ x + b[0]))), rel=1e-6)


def test_strided_torch_tensor_reads_as_its_view(conv, tmp_path):
    values = skywork_folder(tmp_path / "sky", np.random.default_rng(4))
    files = conv.weight_map(tmp_path / "sky")
    name = "model.layers.0.mlp.down_proj.weight"
    [ref] = conv.tensor_refs(tmp_path / "sky", [name], files).values()
    assert not ref.contiguous
    np.testing.assert_array_equal(conv.read_float32(ref), values[name])


def fake_hub(monkeypatch, repos: dict[str, Path], tmp_path: Path) -> list[list[str]]:
    """snapshot_download over local folders (the network is the one thing faked)."""
    import fnmatch

    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **_):
        calls.append(list(allow_patterns))
        snap = tmp_path / "snapshots" / repo_id.replace("/", "--") / revision
        snap.mkdir(parents=True, exist_ok=True)
        for f in repos[repo_id].iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                (snap / f.name).write_bytes(f.read_bytes())
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_hub_source_downloads_only_the_heads_shards(conv, tmp_path, monkeypatch):
    values = qwen_prm_folder(tmp_path / "qwen", np.random.default_rng(5))
    calls = fake_hub(monkeypatch, {"Qwen/Qwen2.5-Math-PRM-7B": tmp_path / "qwen"}, tmp_path)
    out = tmp_path / "q.npz"
    # The preset's build line passes the bare repo id; hf:REPO works too.
    assert conv.main(["Qwen/Qwen2.5-Math-PRM-7B", "--revision", "abc", "--head", str(out)]) == 0
    assert calls[-1] == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"]
    np.testing.assert_array_equal(ValueHead.load(out).layers[1][0], values["score.2.weight"])
    assert conv.main(["hf:Qwen/Qwen2.5-Math-PRM-7B", "--out", str(out)]) == 0


def test_hub_single_bin_checkpoint(conv, tmp_path, monkeypatch):
    values = skywork_folder(tmp_path / "sky", np.random.default_rng(6))
    calls = fake_hub(monkeypatch, {"Skywork/PRM": tmp_path / "sky"}, tmp_path)
    out = tmp_path / "s.npz"
    assert conv.main(["Skywork/PRM", "--out", str(out)]) == 0
    assert calls[1:] == [["model.safetensors"], ["pytorch_model.bin"]]
    np.testing.assert_array_equal(ValueHead.load(out).layers[0][0], values["v_head.summary.weight"])


def read_safetensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    return {k: (v["dtype"], v["shape"], data[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


def test_gguf_flag_writes_a_convertible_backbone(conv, tmp_path, capsys):
    values = skywork_folder(tmp_path / "sky", np.random.default_rng(7))
    (tmp_path / "sky" / "merges.txt").write_text("a b\n")
    gguf = tmp_path / "cache" / "prm-f16.gguf"
    head = tmp_path / "cache" / "prm.value_head.npz"
    assert conv.main([str(tmp_path / "sky"), "--gguf", str(gguf), "--head", str(head)]) == 0
    printed = capsys.readouterr().out
    backbone = tmp_path / "cache" / "prm-f16.hf"
    assert f"convert_hf_to_gguf.py {backbone} --outfile {gguf} --outtype f16" in printed
    config = json.loads((backbone / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and "auto_map" not in config
    assert config["hidden_size"] == HIDDEN
    assert (backbone / "merges.txt").read_text() == "a b\n"
    tensors = read_safetensors(backbone / "model.safetensors")
    assert sorted(tensors) == ["lm_head.weight", "model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"]
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"):
        dtype, shape, raw = tensors[name]
        assert dtype == "BF16"
        np.testing.assert_array_equal(from_bf16(np.frombuffer(raw, np.uint16).reshape(shape)), values[name])
    assert head.is_file()

    gguf.write_bytes(b"GGUF")  # once the GGUF exists, only the head is (re)written
    capsys.readouterr()
    assert conv.main([str(tmp_path / "sky"), "--gguf", str(gguf), "--head", str(head)]) == 0
    assert "backbone GGUF already there" in capsys.readouterr().out


@pytest.mark.parametrize("make, args, message", [
    (lambda d, r: qwen_prm_folder(d, r), ["--prefix", "v_head"], "no tensors named v_head.*"),
    (lambda d, r: qwen_prm_folder(d, r), ["--kind", "sigmoid"], "--kind sigmoid needs a head with 1 output(s); score has 2"),
    (lambda d, r: skywork_folder(d, r), ["--prefix", "model.embed_tokens"], "model.embed_tokens has 5 outputs; a value head"),
    (lambda d, r: (qwen_prm_folder(d, r), (d / "config.json").write_text(json.dumps({**CONFIG, "hidden_size": 16}))),
     [], "score layer 0 takes 8 inputs but the backbone's hidden size is 16"),
    (lambda d, r: d.mkdir(), [], "no weights in"),
])
def test_bad_input_is_one_line(conv, tmp_path, capsys, make, args, message):
    make(tmp_path / "ckpt", np.random.default_rng(8))
    assert conv.main([str(tmp_path / "ckpt"), "--out", str(tmp_path / "h.npz"), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "h.npz").exists()


def test_no_known_head(conv, tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    write_safetensors(tmp_path / "ckpt" / "model.safetensors", {"model.norm.weight": ("F32", np.ones(4, np.float32))})
    assert conv.main([str(tmp_path / "ckpt")]) == 1
    assert "no value head found" in capsys.readouterr().err


def test_lfs_pointer_and_hostile_pickle_are_refused(conv, tmp_path, capsys):
    (tmp_path / "lfs").mkdir()
    (tmp_path / "lfs" / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\n")
    assert conv.main([str(tmp_path / "lfs")]) == 1
    assert "is not a safetensors file" in capsys.readouterr().err

    (tmp_path / "evil").mkdir()
    w = np.zeros((1, HIDDEN), np.float32)
    write_torch_zip(tmp_path / "evil" / "pytorch_model.bin", {"v_head.summary.weight": contiguous("FloatStorage", w)},
                    extra_global=("os", "system"))
    assert conv.main([str(tmp_path / "evil")]) == 1
    assert "refusing pickle global os.system" in capsys.readouterr().err


def test_cli_errors_without_traceback(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_value_head.py"), str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [f"Error: checkpoint folder not found: {tmp_path / 'nope'} "
                                               "(or name a hub repo as hf:OWNER/NAME)"]


def test_offline_hub_miss_is_one_line(conv, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def snapshot_download(**_):
        raise huggingface_hub.utils.LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert conv.main(["Skywork/PRM"]) == 1
    assert capsys.readouterr().err == "Error: Skywork/PRM@main is not in the Hugging Face cache and HF_HUB_OFFLINE is set\n"


# -- the head on a real (tiny) backbone ----------------------------------------

TINY = ModelConfig(n_ctx=512, n_batch=64, n_seq_max=8, n_threads=1, embeddings=True)
PROMPT = "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def backbone(open_tiny):
    return open_tiny("target", TINY)


@pytest.fixture(scope="module")
def output_matrix(tiny_models) -> np.ndarray:
    from gguf import GGUFReader

    [tensor] = [t for t in GGUFReader(str(tiny_models["target"])).tensors if t.name == "output.weight"]
    return np.array(tensor.data, dtype=np.float32)  # (n_vocab, n_embd)


def row_head(conv, tmp_path: Path, row: np.ndarray, bias: float = 0.0) -> Path:
    """A Skywork-style checkpoint whose value head is ``row``, converted."""
    folder = tmp_path / "row"
    folder.mkdir(exist_ok=True)
    write_safetensors(folder / "model.safetensors", {
        "v_head.summary.weight": ("F32", row[None, :].astype(np.float32)),
        "v_head.summary.bias": ("F32", np.array([bias], np.float32)),
    })
    (folder / "config.json").write_text(json.dumps({**CONFIG, "hidden_size": row.size}))
    out = tmp_path / "row.npz"
    assert conv.main([str(folder), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def plain(open_tiny):
    """The same model without embeddings: its logits are the reference."""
    return open_tiny("target", ModelConfig(n_ctx=512, n_batch=64, n_seq_max=8, n_threads=1))


def plain_logits(plain: Model, tokens: list[int]) -> np.ndarray:
    seq = plain.new_sequence(tokens)
    try:
        return seq.logits
    finally:
        plain.release(seq)


def test_output_row_head_reproduces_the_tokens_logit(conv, tmp_path, backbone, plain, output_matrix):
    tokens = backbone.tokenize(PROMPT)
    seq = backbone.new_sequence(tokens)
    try:
        assert seq.hidden.shape == (backbone.n_embd,)
        token = backbone.tokenize("8")[0]
        head = ValueHead.load(row_head(conv, tmp_path, output_matrix[token]))
        [(w, b)] = head.layers
        logit = float(w[0] @ seq.hidden + b[0])
        want = float(plain_logits(plain, tokens)[token])  # the last token's logit, read without embeddings
        assert logit == pytest.approx(want, abs=1e-4)
        assert head(seq.hidden) == pytest.approx(1 / (1 + np.exp(-want)), abs=1e-5)
        # Every row at once: the hidden state is the one the output matrix reads.
        np.testing.assert_allclose(output_matrix @ seq.hidden, seq.logits, atol=1e-4)
    finally:
        backbone.release(seq)


def test_batched_rows_each_get_their_own_hidden_state(backbone, plain, output_matrix):
    """llama.cpp outputs every row of a batch in embeddings mode: each
    sequence must still get the row of its own last token."""
    prompt = backbone.tokenize(PROMPT)
    continuations = [backbone.tokenize(t) for t in ("12 * 7 = 84.\n\n", "Let me", "x")]
    head = backbone.new_sequence(prompt)
    kids = backbone.fork(head, len(continuations))
    backbone.extend(list(zip(kids, continuations)), kind="scored")  # one batch, only last rows flagged
    try:
        for kid, cont in zip(kids, continuations):
            np.testing.assert_allclose(kid.logits, plain_logits(plain, prompt + cont), atol=2e-3)
            np.testing.assert_allclose(output_matrix @ kid.hidden, kid.logits, atol=1e-4)
    finally:
        backbone.release_all(kids + [head])


def fresh_logit(model: Model, token_lists: list[list[int]], token: int) -> float:
    seq = model.new_sequence([t for tokens in token_lists for t in tokens])
    try:
        return float(seq.logits[token])
    finally:
        model.release(seq)


def test_value_head_reward_end_to_end(conv, tmp_path, backbone, output_matrix):
    token = backbone.tokenize("8")[0]
    reward = make_reward("value-prm", target=backbone, value_head=row_head(conv, tmp_path, output_matrix[token], 0.5))
    assert isinstance(reward, ValueHeadReward)
    problem = "What is 12 times 7?"
    prefix = backbone.tokenize(f"{problem}\n", add_special=True)
    steps = [["12 * 7 = 84.\n\n", "Twelve sevens.\n\n", "Let me think\n\n"], ["So the answer is 84.\n\n", "Hmm.\n\n"]]
    try:
        for depth, candidates in enumerate(steps):
            accepted = [c[0] for c in steps[:depth]]
            got = reward.score(problem, accepted, candidates)
            assert got.shape == (len(candidates),) and np.all((got >= 0) & (got <= 1))
            want = [1 / (1 + np.exp(-(0.5 + fresh_logit(backbone, [prefix] + [backbone.tokenize(s) for s in accepted + [c]],
                                                              token))))
                    for c in candidates]
            np.testing.assert_allclose(got, want, atol=1e-4)
            assert len(set(np.round(got, 6))) == len(candidates)  # the reward depends on the step
    finally:
        reward.reset()
