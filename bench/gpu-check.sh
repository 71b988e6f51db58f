#!/usr/bin/env bash
# Issue 8's one prepared GPU check, for a machine with an NVIDIA GPU, run from a checkout where
# `npm ci` has run. ggml's CUDA backend comes from, in order: $TASKTUNE_GGML_DIR; the npm package
# @node-llama-cpp/linux-x64-cuda; else a build from node-llama-cpp's bundled exact source, kept in
# build/ggml-cuda (needs cmake, nvcc and a C++ compiler; about 2 minutes on 16 cores). Then
# `npm run bench -- --gpu`: each GPU configuration (bench/configs.ts) in tasktune and, where
# PyTorch + PEFT are installed, in PyTorch on the same GPU, with the ratio. A configuration whose
# graph has an op the CUDA backend cannot run reports that op instead of a time.
# Results go to $OUT (or gpu-out/): gpu.txt, devices.txt, gpu-bench.jsonl, and cmake.log if it built.
# Usage: bench/gpu-check.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

if [ -z "${TASKTUNE_GGML_DIR:-}" ] && [ ! -d node_modules/@node-llama-cpp/linux-x64-cuda ]; then
  build="$PWD/build/ggml-cuda"
  if [ ! -f "$build/bin/libggml-base.so" ]; then
    src="$(mktemp -d)"
    git clone --quiet node_modules/node-llama-cpp/llama/gitRelease.bundle "$src"
    # ggml/CMakeLists.txt configures ggml.pc from a template the bundle leaves out.
    [ -f "$src/ggml/ggml.pc.in" ] || : > "$src/ggml/ggml.pc.in"
    generator="Unix Makefiles"
    command -v ninja > /dev/null && generator=Ninja
    echo "building ggml's CUDA backend from the bundled source (log: $out/cmake.log)"
    cmake -S "$src/ggml" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
      -DGGML_CUDA=ON -DGGML_CUDA_FA=OFF -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-90}" \
      -DGGML_BACKEND_DL=OFF -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF \
      -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$build/bin" -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$build/bin" > "$out/cmake.log" 2>&1
    cmake --build "$build" -j "$(nproc)" >> "$out/cmake.log" 2>&1
  fi
  export TASKTUNE_GGML_DIR="$build/bin"
fi

node bin/tasktune.js devices --device cuda | tee "$out/devices.txt"
npm run --silent bench -- --gpu --json "$@" | tee "$out/gpu-bench.jsonl"
