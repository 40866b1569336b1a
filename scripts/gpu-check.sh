#!/usr/bin/env bash
# scripts/gpu-check.sh — the checks to run when a GPU is lent (about 8 minutes on one H100): builds for
# the local GPU, runs the op parity tests against the real CUDA backend (nvcc kernels, cuBLAS(Lt),
# cuDNN) compared with the CPU reference, trains the mlp and cnn samples for one epoch and compares
# their first-step losses with the CPU backend's, prints every fallback / "no algo" / "no plan" line
# the libraries produced, then runs bench/mnist_gpu.sh, bench/seq_gpu.sh and the kernel bandwidth benchmark.
#
# Usage: scripts/gpu-check.sh
# Environment: BUILD=dir (default build-gpu), DATA=dir (default data/mnist), JOBS=n (default nproc),
#   SKIP_BENCH=1 (stop after the checks), CUDA_VISIBLE_DEVICES as CUDA reads it.
# Exit codes: 0 every check passed; 1 a check failed; 2 usage or setup error (no MNIST data, a
# build failure); 3 no GPU is present (nothing was checked).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-gpu}
DATA=${DATA:-$ROOT/data/mnist}
JOBS=${JOBS:-$(nproc)}
[[ $# -eq 0 ]] || { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

no_gpu() {
  echo "gpu-check: no GPU is present ($1); nothing was checked (exit code 3)."
  exit 3
}
# What CUDA would see: nvidia-smi's list, less what CUDA_VISIBLE_DEVICES hides.
command -v nvidia-smi >/dev/null 2>&1 || no_gpu "nvidia-smi is not installed"
gpus=$(nvidia-smi -L 2>&1) || no_gpu "nvidia-smi -L failed: $(head -1 <<<"$gpus")"
grep -q '^GPU' <<<"$gpus" || no_gpu "nvidia-smi -L lists no GPU"
if [[ -n "${CUDA_VISIBLE_DEVICES+set}" && ( -z "$CUDA_VISIBLE_DEVICES" || "$CUDA_VISIBLE_DEVICES" == -1* ) ]]; then
  no_gpu "CUDA_VISIBLE_DEVICES='$CUDA_VISIBLE_DEVICES' hides every GPU"
fi

start=$SECONDS
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
LOG=$BUILD/gpu-check-logs
mkdir -p "$LOG"
failures=()
fail() { failures+=("$1"); echo "FAIL: $1"; }
section() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - start)); }

echo "gpu-check: $(head -1 <<<"$gpus"), compute capability $cap, driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"

section "build for sm_$cap (log $LOG/build.log)"
export PATH=/usr/local/cuda/bin:$PATH
op_tests=$(cd "$ROOT/tests" && ls test_op_*.cpp | sed 's/\.cpp$/_device/')
if ! { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${cap}-real" \
         -DCUDL_BUILD_TESTS=ON -DCUDL_TEST_ON_DEVICE=ON -DCUDL_BUILD_SAMPLES=ON -DCUDL_BUILD_BENCH=ON &&
       cmake --build "$BUILD" -j"$JOBS" --target cudl-mnist bench_kernel_bandwidth $op_tests; } >"$LOG/build.log" 2>&1; then
  tail -30 "$LOG/build.log"
  echo "gpu-check: the build failed (exit code 2)"
  exit 2
fi
echo "built in $((SECONDS - start)) s"

section "op parity tests on the device (real CUDA backend vs the CPU reference)"
for t in $op_tests; do
  if "$BUILD/tests/$t" --gtest_brief=1 >"$LOG/$t.log" 2>&1; then
    printf '  %-28s %s\n' "$t" "$(grep -Eo '\[  PASSED  \] [0-9]+ tests?' "$LOG/$t.log" | tail -1)"
  else
    fail "$t (log $LOG/$t.log)"
    grep -E '^\[  FAILED|Failure|error' "$LOG/$t.log" | head -8 | sed 's/^/    /'
  fi
  grep -E '^\[  SKIPPED \] [0-9]+ tests?' "$LOG/$t.log" | sed 's/^/    /'
done

section "samples: first-step loss, CUDA vs CPU (one step of 128 images, same seed)"
if [[ ! -f "$DATA/train-images-idx3-ubyte" && ! -f "$DATA/train-images-idx3-ubyte.gz" ]]; then
  echo "gpu-check: no MNIST in $DATA; fetch it with scripts/fetch-mnist.sh (exit code 2)"
  exit 2
fi
MNIST=$BUILD/samples/cudl-mnist
for model in mlp cnn; do
  # 142 images: 14 held out for validation, 128 trained on = one step of batch 128.
  for dev in cuda cpu; do
    "$MNIST" --model "$model" --device "$dev" --epochs 1 --limit 142 --batch-size 128 --schedule constant \
      --data "$DATA" --csv "$LOG/first-$model-$dev.csv" --plot '' >"$LOG/first-$model-$dev.log" 2>&1 ||
      fail "cudl-mnist --model $model --device $dev (one step; log $LOG/first-$model-$dev.log)"
  done
  loss() { awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == "loss") c = i; next} NR == 2 {print $c}' "$1" 2>/dev/null; }
  g=$(loss "$LOG/first-$model-cuda.csv")
  c=$(loss "$LOG/first-$model-cpu.csv")
  if [[ -n "$g" && -n "$c" ]] && awk -v g="$g" -v c="$c" 'BEGIN {d = g - c; if (d < 0) d = -d; exit !(d <= 1e-4 + 1e-3 * (c < 0 ? -c : c))}'; then
    printf '  %-4s first-step loss cuda %s, cpu %s: match (|diff| <= 1e-4 + 1e-3|cpu|)\n' "$model" "$g" "$c"
  else
    fail "$model first-step loss cuda '${g:-none}' vs cpu '${c:-none}'"
  fi
done

section "samples: one full epoch on the GPU"
for model in mlp cnn; do
  if "$MNIST" --model "$model" --device cuda --epochs 1 --batch-size 128 --data "$DATA" \
       --csv "$LOG/epoch-$model.csv" --plot '' >"$LOG/epoch-$model.log" 2>&1; then
    printf '  %-4s %s\n' "$model" "$(grep -E 'test loss' "$LOG/epoch-$model.log" | tail -1)"
  else
    fail "cudl-mnist --model $model --device cuda --epochs 1 (log $LOG/epoch-$model.log)"
  fi
done

section "fallbacks and library refusals seen in this run"
if grep -hE 'cudl: .*(fallback|no algo|no plan|no engine|unfused|im2col|eager)' "$LOG"/*.log | sort | uniq -c | sed 's/^/  /'; then
  :
else
  echo "  none"
fi

if [[ "${SKIP_BENCH:-0}" != 1 ]]; then
  section "benchmarks: bench/mnist_gpu.sh (EPOCHS=${EPOCHS:-3}) and the kernel bandwidth table"
  BUILD="$BUILD" EPOCHS="${EPOCHS:-3}" DATA="$DATA" "$ROOT/bench/mnist_gpu.sh" 2>&1 | tee "$LOG/mnist_gpu.log" ||
    fail "bench/mnist_gpu.sh (log $LOG/mnist_gpu.log)"
  section "sequence samples: bench/seq_gpu.sh (cudl-seq-mnist and cudl-charlm vs PyTorch eager)"
  BUILD="$BUILD" DATA="$DATA" RUNS="${RUNS:-3}" "$ROOT/bench/seq_gpu.sh" 2>&1 | tee "$LOG/seq_gpu.log" ||
    fail "bench/seq_gpu.sh (log $LOG/seq_gpu.log)"
  if (($(nvidia-smi -L | grep -c '^GPU') > 1)); then
    section "data-parallel scaling: bench/scaling_gpu.sh (cudl vs PyTorch DDP at 1/2/4/8 GPUs)"
    BUILD="$BUILD" DATA="$DATA" "$ROOT/bench/scaling_gpu.sh" 2>&1 | tee "$LOG/scaling_gpu.log" ||
      fail "bench/scaling_gpu.sh (log $LOG/scaling_gpu.log)"
  fi
fi

section "summary"
echo "elapsed $((SECONDS - start)) s; logs in $LOG"
if ((${#failures[@]})); then
  printf 'FAILED (%d):\n' "${#failures[@]}"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
echo "all checks passed"
