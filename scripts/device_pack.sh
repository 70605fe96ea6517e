#!/usr/bin/env bash
# Run HERE, before a GPU profile: packs into .device/ (git-ignored) what
# scripts/gpu_profile.sh needs on the device machine, which reaches no network:
#   - the llama-cpp-python sdist, trimmed of llama.cpp's vocab files, docs and
#     tests (the whole sdist is over the 64 MiB a device call may carry);
#   - wheels of the pure-Python packages the device image lacks.
# Then call the device tool with carry [".device"] and the command
#   bash scripts/gpu_profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
rm -rf .device && mkdir -p .device/wheels
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# LLAMA_CPP_PYTHON_SDIST: a tarball already here (pip download prepares its
# metadata first, which takes minutes on a small machine).
sdist=${LLAMA_CPP_PYTHON_SDIST:-}
if [ -z "$sdist" ]; then
    pip download --quiet --no-deps --no-binary llama-cpp-python -d "$work" "llama-cpp-python==$version"
    sdist="$work/llama_cpp_python-$version.tar.gz"
fi
tar -xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-$version"
rm -rf "$src"/vendor/llama.cpp/{models,docs,benches,tests,media,examples,tools,.git} "$src"/{docs,examples,.git}
mkdir -p "$src/vendor/llama.cpp/models"  # some CMake versions glob it
tar -czf ".device/llama_cpp_python-$version.tar.gz" -C "$work" "llama_cpp_python-$version"

# Python 3.12 on the device; these are pure Python.
pip download --quiet --no-deps --only-binary=:all: -d .device/wheels \
    diskcache gguf
du -sh .device/* .device/wheels/*
