#!/usr/bin/env bash
# Build llama.cpp's own continuous-batching server (`llama-server`) from the sources vendored in the
# llama-cpp-python sdist: the concurrency reference of bench/serve_load.py (see ../shared/MODELS.md).
#   bench/build_llama_server.sh [OUT_DIR]      -> OUT_DIR/llama-server (default: .venv/llama-server)
# GGML flags: AVX2 (+AVX512 when this CPU has it), never -march=native (it dies with "Illegal instruction" here).
set -euo pipefail
VERSION=0.3.36
OUT=${1:-.venv/llama-server}
PIP=${PIP:-.venv/bin/pip}
if [ -x "$OUT/bin/llama-server" ]; then echo "$OUT/bin/llama-server"; exit 0; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PIP" download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
tar xzf "$WORK"/llama_cpp_python-$VERSION.tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
grep -qw avx512f /proc/cpuinfo && FLAGS="$FLAGS -DGGML_AVX512=ON"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON \
  -DBUILD_SHARED_LIBS=OFF $FLAGS >/dev/null
cmake --build "$WORK/build" --target llama-server -j"$(nproc)" >/dev/null
mkdir -p "$OUT/bin"
cp "$WORK/build/bin/llama-server" "$OUT/bin/llama-server.tmp" && mv "$OUT/bin/llama-server.tmp" "$OUT/bin/llama-server"
echo "$OUT/bin/llama-server"
