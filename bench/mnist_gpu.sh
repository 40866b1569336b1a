#!/usr/bin/env bash
# bench/mnist_gpu.sh — MNIST on one GPU: cudl (whole-step CUDA graphs on and off, and graphs with
# TF32 GEMMs/convolutions, --precision tf32, and mixed precision, --precision bf16 / f16) against
# PyTorch eager, PyTorch with a captured CUDA graph and torch.compile(mode="reduce-overhead"), and
# PyTorch's autocast (bf16 eager and captured, f16 eager with a GradScaler), data resident on the GPU
# for all; then the kernel bandwidth program. Needs a CUDA GPU and PyTorch with CUDA.
#
# Usage: bench/mnist_gpu.sh
# Environment:
#   BUILD=dir       CUDA Release build of cudl (default /tmp/build-bench-gpu; configured and built
#                   here when needed: cudl-mnist and bench_kernel_bandwidth)
#   EPOCHS=n        epochs per run (default 20: enough for 98% (mlp) / 99% (cnn) validation accuracy)
#   MODELS="mlp cnn", DATA=dir (default data/mnist), PYTHON=python3 (with CUDA torch),
#   ARCH=90         CMAKE_CUDA_ARCHITECTURES for a fresh build (default: native)
# Reported per model and framework: steady-state epoch seconds (median of epochs 2..N), first
# epoch (capture / compilation included), seconds of training to 98% (mlp) / 99% (cnn) validation
# accuracy on the 5000 held-out images, test accuracy, and ratios to cudl with graphs.
# Targets (issue 7, H100): mlp epoch <= 10 ms, >= 20x faster than PyTorch eager, >= 2x faster than
# PyTorch with CUDA graphs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-/tmp/build-bench-gpu}
EPOCHS=${EPOCHS:-20}
MODELS=${MODELS:-"mlp cnn"}
DATA=${DATA:-$ROOT/data/mnist}
PYTHON=${PYTHON:-python3}

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "mnist_gpu.sh: no CUDA device: nvidia-smi is not installed (this benchmark needs a GPU)" >&2
  exit 1
fi
if ! gpus=$(nvidia-smi -L 2>&1) || [[ -z "$gpus" ]] || ! grep -q '^GPU' <<<"$gpus"; then
  echo "mnist_gpu.sh: no CUDA device: nvidia-smi -L says: ${gpus:-nothing}" >&2
  exit 1
fi
if [[ ! -f "$DATA/train-images-idx3-ubyte" && ! -f "$DATA/train-images-idx3-ubyte.gz" ]]; then
  echo "mnist_gpu.sh: no MNIST in $DATA; fetch it with scripts/fetch-mnist.sh" >&2
  exit 1
fi

if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${ARCH:-native}" \
    -DCUDL_BUILD_TESTS=OFF -DCUDL_BUILD_SAMPLES=ON -DCUDL_BUILD_BENCH=ON >/dev/null
fi
cmake --build "$BUILD" --target cudl-mnist bench_kernel_bandwidth -j"${JOBS:-$(nproc)}" >/dev/null
CUDL=$BUILD/samples/cudl-mnist
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "gpu: $(head -1 <<<"$gpus"); driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load:$(uptime | sed 's/.*load average://')"
have_torch=1
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "mnist_gpu.sh: $PYTHON has no CUDA PyTorch: the PyTorch rows are skipped" >&2
  have_torch=0
fi

# Per-epoch CSV of cudl-mnist -> "steady first time_to_target reached_epoch val_acc"
cudl_stats() {  # csv target
  awk -F, -v target="$2" '
    NR == 1 {for (i = 1; i <= NF; i++) col[$i] = i; next}
    {s[NR-1] = $col["epoch_seconds"]; v = $col["val_accuracy"]; total += s[NR-1]
     if (!reached && v >= target) {reached = NR - 1; ttt = total} last = v; n = NR - 1}
    END {m = 0; for (i = 2; i <= n; i++) a[++m] = s[i]
         # median of epochs 2..n (insertion sort; n is small)
         for (i = 2; i <= m; i++) {x = a[i]; j = i - 1; while (j > 0 && a[j] > x) {a[j+1] = a[j]; j--} a[j+1] = x}
         med = m ? (m % 2 ? a[(m+1)/2] : (a[m/2] + a[m/2+1]) / 2) : s[1]
         printf "%.5f %.4f %s %s %.4f\n", med, s[1], reached ? sprintf("%.4f", ttt) : "not_reached", reached ? reached : "none", last}' "$1"
}

rows=()
for model in $MODELS; do
  target=$([[ $model == mlp ]] && echo 0.98 || echo 0.99)
  for run in graphs no-graphs graphs-tf32 graphs-bf16 graphs-f16; do
    graphs=$([[ $run == no-graphs ]] && echo 0 || echo 1)
    precision=$(case $run in graphs-tf32) echo tf32 ;; graphs-bf16) echo bf16 ;; graphs-f16) echo f16 ;; *) echo f32 ;; esac)
    out=$(CUDL_CUDA_GRAPHS=$graphs "$CUDL" --model "$model" --epochs "$EPOCHS" --batch-size 128 --lr 1e-3 --schedule constant --device cuda --data "$DATA" \
      --precision "$precision" --csv "$TMP/h.csv" --plot '')
    acc=$(sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p' <<<"$out")
    read -r steady first ttt reached val < <(cudl_stats "$TMP/h.csv" "$target")
    name="cudl $run"
    rows+=("$model|$name|$steady|$first|$ttt|$reached|$(awk -v a="$acc" 'BEGIN {printf "%.4f", a / 100}')")
    echo "$model $name: epoch ${steady}s (first ${first}s), to $target: ${ttt}s (epoch $reached), test $acc%"
  done
  if ((have_torch)); then
    for mode in eager graph compile eager:bf16 graph:bf16 eager:f16; do
      amp=none
      [[ $mode == *:* ]] && amp=${mode#*:}
      line=$("$PYTHON" "$ROOT/bench/torch_mnist_gpu.py" --model "$model" --mode "${mode%%:*}" --amp "$amp" \
        --epochs "$EPOCHS" --data "$DATA" --target "$target" | grep '^RESULT') || { echo "torch $mode failed" >&2; continue; }
      get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
      rows+=("$model|torch $mode|$(get epoch_seconds)|$(get first_epoch_seconds)|$(get time_to_target)|$(get reached_epoch)|$(get test_accuracy)")
      echo "$model torch $mode: $line"
    done
  fi
done

echo
printf '%-5s %-16s %12s %12s %14s %8s %9s %14s\n' model runner "epoch s" "1st epoch s" "s to target" epoch "test acc" "epoch / cudl"
for r in "${rows[@]}"; do
  IFS='|' read -r model name steady first ttt reached acc <<<"$r"
  base=$(printf '%s\n' "${rows[@]}" | awk -F'|' -v m="$model" '$1 == m && $2 == "cudl graphs" {print $3}')
  ratio=$(awk -v a="$steady" -v b="$base" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "-"}')
  printf '%-5s %-16s %12s %12s %14s %8s %9s %14s\n' "$model" "$name" "$steady" "$first" "$ttt" "$reached" "$acc" "$ratio"
done
echo "(epoch s: median of epochs 2..$EPOCHS; s to target: training seconds until validation accuracy >= 0.98 mlp / 0.99 cnn)"

echo
echo "kernel bandwidth:"
"$BUILD/bench/bench_kernel_bandwidth"
