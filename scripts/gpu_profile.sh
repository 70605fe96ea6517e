#!/usr/bin/env bash
# Run THERE, on the device machine (NVIDIA H200, CUDA 13, no network), after
# scripts/device_pack.sh here:
#   device run: carry [".device"], command "bash scripts/gpu_profile.sh", timeout 600
# Builds llama-cpp-python with CUDA for sm_90, writes random-weight Q4_K_M GGUF
# files of the real shapes (models cannot travel: a call carries 64 MiB), named
# after the files the CPU runs used, so `bench --predict-on` needs no model map,
# and profiles them fully offloaded. Everything lands in $OUT as it is made.
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-profile-out}
mkdir -p "$OUT" /tmp/site /tmp/models
exec > >(tee "$OUT/gpu_profile.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD

# Random weights of the three shapes, written while llama.cpp compiles.
(for spec in qwen2.5-0.5b:qwen2.5-coder-0.5b-instruct qwen2.5-1.5b:qwen2.5-coder-1.5b-instruct \
             qwen2.5-7b:Qwen2.5-Math-7B-Instruct; do
     python3 scripts/make_tiny_model.py "/tmp/models/${spec#*:}-f16.gguf" --shape "${spec%%:*}" >/dev/null
 done; echo "models written $(date +%T)") &
writer=$!

start=$(date +%s)
CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=off" CMAKE_BUILD_PARALLEL_LEVEL=14 \
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .device/llama_cpp_python-*.tar.gz
echo "llama-cpp-python built in $(( $(date +%s) - start )) s"
wait "$writer"

python3 - <<'PY'
import ctypes, pathlib
import llama_cpp as llama

llama.llama_backend_init()
print("GPU offload:", bool(llama.llama_supports_gpu_offload()))
names = {"qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
         "qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
         "Qwen2.5-Math-7B-Instruct": "Qwen2.5-Math-7B-Instruct-Q4_K_M.gguf"}
for stem, name in names.items():
    params = llama.llama_model_quantize_default_params()
    params.ftype = llama.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 16
    source = pathlib.Path(f"/tmp/models/{stem}-f16.gguf")
    if llama.llama_model_quantize(str(source).encode(), f"/tmp/models/{name}".encode(), ctypes.byref(params)):
        raise SystemExit(f"quantizing {source} failed")
    source.unlink()
    print("quantized", name)
PY

# One model per profile call, so a slow one still leaves the others in $OUT.
for name in qwen2.5-coder-1.5b-instruct-q4_k_m qwen2.5-coder-0.5b-instruct-q4_k_m Qwen2.5-Math-7B-Instruct-Q4_K_M; do
    python3 -m specs_local profile --model "/tmp/models/$name.gguf" --n-gpu-layers -1 --repeats 3 \
        --out "$OUT/profile-gpu-$name.json"
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
parts = [json.loads(p.read_text()) for p in sorted(out.glob("profile-gpu-*.json"))]
merged = {**parts[0], "models": {k: v for p in parts for k, v in p["models"].items()}}
(out / "profile-gpu.json").write_text(json.dumps(merged, indent=2) + "\n")
print("profile-gpu.json:", ", ".join(merged["models"]))
PY
