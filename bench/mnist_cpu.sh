#!/usr/bin/env bash
# bench/mnist_cpu.sh — one MNIST epoch on the CPU, cudl-mnist --device cpu against PyTorch
# (bench/torch_mnist.py), same model, data, batch, optimizer and thread count, alternating runs.
#
# Usage: bench/mnist_cpu.sh            (RUNS=3 MODELS="mlp cnn" by default)
# Environment:
#   BUILD=dir        CPU-only Release build of cudl (default /tmp/build-bench-cpu; configured and
#                    built here when cudl-mnist is missing, rebuilt when stale)
#   RUNS=n           runs of each framework per model (alternating cudl, torch, cudl, ...)
#   MODELS="mlp cnn" which models
#   THREADS=n        threads for both (default: $OPENBLAS_NUM_THREADS, else nproc). cudl's CPU
#                    backend is single-threaded except GEMM, which is OpenBLAS with
#                    OPENBLAS_NUM_THREADS threads, and the convolutions, batch norm and 2x2 max
#                    pooling, which split their work over as many threads; PyTorch gets torch.set_num_threads(n) and the
#                    same OpenBLAS (Debian's torch uses the system BLAS) with the same variable.
#   OMP_WAIT_POLICY  exported to PyTorch; default PASSIVE (see docs/performance.md: with the
#                    default active spin-waiting PyTorch's OpenMP threads are 30-100x slower on a
#                    machine whose cores are shared with other work)
#   DATA=dir         MNIST IDX files (default data/mnist; scripts/fetch-mnist.sh fetches them)
#   PYTHON=python3   an interpreter that can import torch (default: the first of python3,
#                    /usr/bin/python3 that can)
# Output: every run, then per model the median epoch seconds of each, the ratio cudl/PyTorch,
# and both test accuracies; a final "SUMMARY" line per model for scripts.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-/tmp/build-bench-cpu}
RUNS=${RUNS:-3}
MODELS=${MODELS:-"mlp cnn"}
THREADS=${THREADS:-${OPENBLAS_NUM_THREADS:-$(nproc)}}
DATA=${DATA:-$ROOT/data/mnist}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [[ -z "${PYTHON:-}" ]]; then
  for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c "import torch" 2>/dev/null; then PYTHON=$p; break; fi
  done
fi
if [[ -z "${PYTHON:-}" ]] || ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "mnist_cpu.sh: no python with torch (apt-get install python3-torch, or set PYTHON=...)" >&2
  exit 1
fi
if [[ ! -f "$DATA/train-images-idx3-ubyte" && ! -f "$DATA/train-images-idx3-ubyte.gz" ]]; then
  echo "mnist_cpu.sh: no MNIST in $DATA; fetch it with scripts/fetch-mnist.sh" >&2
  exit 1
fi

# Build (Release, CPU only) if needed.
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCUDL_WITH_CUDA=OFF -DCUDL_BUILD_TESTS=OFF \
    -DCUDL_BUILD_BENCH=OFF -DCUDL_BUILD_SAMPLES=ON >/dev/null
fi
if ! grep -q "CMAKE_BUILD_TYPE:STRING=Release" "$BUILD/CMakeCache.txt"; then
  echo "mnist_cpu.sh: $BUILD is not a Release build; use another BUILD=dir" >&2
  exit 1
fi
cmake --build "$BUILD" --target cudl-mnist -j"${JOBS:-2}" >/dev/null
CUDL=$BUILD/samples/cudl-mnist
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

export OPENBLAS_NUM_THREADS=$THREADS
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load:$(uptime | sed 's/.*load average://')"
echo "threads: $THREADS (OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS, torch.set_num_threads($THREADS), OMP_WAIT_POLICY=$OMP_WAIT_POLICY)"
echo "torch: $("$PYTHON" -c 'import torch; print(torch.__version__)') ($PYTHON); cudl: $CUDL"
echo "data: $DATA; one epoch, batch 128, Adam 1e-3, 55000 training images (5000 held out), test on 10000"

summary=()
for model in $MODELS; do
  : >"$TMP/$model.cudl"
  : >"$TMP/$model.torch"
  for ((r = 1; r <= RUNS; r++)); do
    out=$("$CUDL" --model "$model" --epochs 1 --batch-size 128 --lr 1e-3 --schedule constant --device cpu --data "$DATA" \
      --csv "$TMP/h.csv" --plot '')
    secs=$(awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == "epoch_seconds") c = i} NR == 2 {print $c}' "$TMP/h.csv")
    acc=$(sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p' <<<"$out")
    acc=$(awk -v a="$acc" 'BEGIN {printf "%.4f", a / 100}')
    echo "$secs $acc" >>"$TMP/$model.cudl"
    echo "run $r $model cudl : epoch ${secs}s test accuracy $acc  (load$(uptime | sed 's/.*load average://'))"
    line=$("$PYTHON" "$ROOT/bench/torch_mnist.py" --model "$model" --epochs 1 --batch-size 128 --data "$DATA" \
      --threads "$THREADS" | grep '^RESULT')
    secs=$(sed -n 's/.*epoch_seconds=\([0-9.]*\).*/\1/p' <<<"$line")
    acc=$(sed -n 's/.*test_accuracy=\([0-9.]*\).*/\1/p' <<<"$line")
    echo "$secs $acc" >>"$TMP/$model.torch"
    echo "run $r $model torch: epoch ${secs}s test accuracy $acc  (load$(uptime | sed 's/.*load average://'))"
  done
  c_s=$(cut -d' ' -f1 "$TMP/$model.cudl" | median)
  t_s=$(cut -d' ' -f1 "$TMP/$model.torch" | median)
  c_a=$(cut -d' ' -f2 "$TMP/$model.cudl" | median)
  t_a=$(cut -d' ' -f2 "$TMP/$model.torch" | median)
  ratio=$(awk -v c="$c_s" -v t="$t_s" 'BEGIN {printf "%.2f", c / t}')
  summary+=("SUMMARY model=$model runs=$RUNS threads=$THREADS cudl_epoch_s=$c_s torch_epoch_s=$t_s cudl_over_torch=$ratio cudl_test_acc=$c_a torch_test_acc=$t_a")
done
echo
printf '%-5s %16s %16s %11s %10s %10s\n' model "cudl epoch s" "torch epoch s" "cudl/torch" "cudl acc" "torch acc"
for s in "${summary[@]}"; do
  eval "$(sed 's/^SUMMARY //; s/\([a-z_]*\)=\([^ ]*\)/\1=\2;/g' <<<"$s")"
  printf '%-5s %16s %16s %11s %10s %10s\n' "$model" "$cudl_epoch_s" "$torch_epoch_s" "$cudl_over_torch" \
    "$cudl_test_acc" "$torch_test_acc"
done
echo "(medians of $RUNS alternating runs; load at the end:$(uptime | sed 's/.*load average://'))"
printf '%s\n' "${summary[@]}"
