#!/usr/bin/env bash
# scripts/test.sh — the test command: set up, configure (CUDA on when the toolkit exists), build,
# run every test (CUDA paths under the emulator, Python, fuzz targets), check that an installed
# cudl links, then run the CPU backend's tests under ASan+UBSan and the threaded ones under TSan.
# Usage: scripts/test.sh [build-dir]   (default: build). Env: CUDL_CMAKE_ARGS for extra options.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
jobs=$(nproc)

scripts/setup.sh
# Real MNIST for the end-to-end sample test (it skips, saying why, if the data cannot be had).
scripts/fetch-mnist.sh || echo "test.sh: MNIST could not be fetched; test_mnist_sample will skip"
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH=/usr/local/cuda/bin:$PATH

# ccache keys on paths relative to the checkout, so a fresh clone elsewhere reuses the cache.
export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1

start=$(date +%s)
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CUDL_CMAKE_ARGS:-}
cmake --build "$build" -j"$jobs"
echo "test.sh: build took $(( $(date +%s) - start )) s"

start=$(date +%s)
ctest --test-dir "$build" --output-on-failure -j"$jobs"
echo "test.sh: tests took $(( $(date +%s) - start )) s"

scripts/consumer-check.sh "$build"

# The CPU backend under AddressSanitizer + UBSan (whole suite and fuzz targets) and the threaded
# tests under ThreadSanitizer, each in its own build directory next to this one.
start=$(date +%s)
CUDL_SANITIZE_BUILD_PREFIX="$build-" scripts/sanitize.sh all
echo "test.sh: sanitizer builds and runs took $(( $(date +%s) - start )) s"
