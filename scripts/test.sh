#!/usr/bin/env bash
# scripts/test.sh — the test command: set up, configure (CUDA on when the toolkit exists), build,
# run every test (CUDA paths under the emulator), then check that an installed cudl links.
# Usage: scripts/test.sh [build-dir]   (default: build). Env: CUDL_CMAKE_ARGS for extra options.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
jobs=$(nproc)

scripts/setup.sh
# Real MNIST for the end-to-end sample test (it skips, saying why, if the data cannot be had).
scripts/fetch-mnist.sh || echo "test.sh: MNIST could not be fetched; test_mnist_sample will skip"
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH=/usr/local/cuda/bin:$PATH

start=$(date +%s)
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CUDL_CMAKE_ARGS:-}
cmake --build "$build" -j"$jobs"
echo "test.sh: build took $(( $(date +%s) - start )) s"

start=$(date +%s)
ctest --test-dir "$build" --output-on-failure -j"$jobs"
echo "test.sh: tests took $(( $(date +%s) - start )) s"

scripts/consumer-check.sh "$build"
