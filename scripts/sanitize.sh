#!/usr/bin/env bash
# scripts/sanitize.sh — the CPU backend under sanitizers, each in its own build directory:
# AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer) over the whole test suite and the
# fuzz targets, and ThreadSanitizer over the tests of threaded code (the CPU thread pool and the
# ops that use it, the memory pools, the training loop, models built on several threads). The
# Python package is left out (the interpreter would need the sanitizer runtime preloaded).
# Usage: scripts/sanitize.sh [asan|tsan|all]   (default: all)
# Env: CUDL_SANITIZE_JOBS (default: nproc), CUDL_FUZZ_RUNS (inputs per fuzz target, default 100000),
#      CUDL_SANITIZE_BUILD_PREFIX (default: build-; the directories are <prefix>asan, <prefix>tsan).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case $what in asan | tsan | all) ;; *) echo "usage: $0 [asan|tsan|all]" >&2; exit 2 ;; esac
jobs=${CUDL_SANITIZE_JOBS:-$(nproc)}
prefix=${CUDL_SANITIZE_BUILD_PREFIX:-build-}

scripts/setup.sh

# The threaded code and the tests that drive it (ctest names).
tsan_tests=(test_cpu_parallel test_memory_pool test_op_conv test_op_norm test_op_pool test_model test_model_graph)

# configure <dir> <flags> <samples ON|OFF>: a CPU-only build (no nvcc, no emulator) with the sanitizer flags.
configure() {
  local dir=$1 flags=$2 samples=$3
  cmake -S . -B "$dir" -DCUDL_WITH_CUDA=OFF -DCUDL_BUILD_BENCH=OFF -DCUDL_BUILD_SAMPLES="$samples" -DCUDL_PYTHON=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUDL_FUZZ_RUNS="${CUDL_FUZZ_RUNS:-100000}" \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" >/dev/null
}

status=0
if [[ $what == asan || $what == all ]]; then
  dir=${prefix}asan
  start=$(date +%s)
  # Samples too: their command-line test (cudl_mnist_cli: hostile flags, then a short training run)
  # runs under the sanitizers with the rest of the suite.
  configure "$dir" "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" ON
  cmake --build "$dir" -j"$jobs"
  echo "sanitize.sh: ASan+UBSan build took $(($(date +%s) - start)) s"
  start=$(date +%s)
  # Any report fails the test that produced it (halt, non-zero exit), leaks included.
  ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_init_order=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$dir" --output-on-failure -j"$jobs" || status=1
  echo "sanitize.sh: ASan+UBSan tests (fuzz targets included) took $(($(date +%s) - start)) s"
  # The convnet (conv, pooling, batch norm kernels of the CPU backend) in a short real run.
  if [[ -f data/mnist/train-images-idx3-ubyte || -f data/mnist/train-images-idx3-ubyte.gz ]]; then
    start=$(date +%s)
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$dir/samples/cudl-mnist" --device cpu --model cnn --limit 512 --epochs 1 --data data/mnist --csv '' \
      | tail -n 1 || status=1
    echo "sanitize.sh: cudl-mnist --model cnn (512 images, 1 epoch) under ASan+UBSan took $(($(date +%s) - start)) s"
  else
    echo "sanitize.sh: skipped the cnn sample run: no MNIST in data/mnist (scripts/fetch-mnist.sh)"
  fi
fi

if [[ $what == tsan || $what == all ]]; then
  dir=${prefix}tsan
  start=$(date +%s)
  configure "$dir" "-fsanitize=thread -fno-omit-frame-pointer" OFF
  cmake --build "$dir" -j"$jobs" --target "${tsan_tests[@]}"
  echo "sanitize.sh: TSan build took $(($(date +%s) - start)) s"
  start=$(date +%s)
  regex="^($(IFS='|'; echo "${tsan_tests[*]}"))\$"
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --test-dir "$dir" --output-on-failure -j"$jobs" -R "$regex" || status=1
  echo "sanitize.sh: TSan tests took $(($(date +%s) - start)) s"
fi
exit $status
