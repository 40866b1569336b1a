#!/usr/bin/env bash
# bench/seq_mnist_cpu.sh — training speed on the CPU of cudl-seq-mnist --device cpu against PyTorch
# (bench/torch_seq_mnist.py): same model, initialisers, data, batch 128, Adam 1e-3 and threads.
#
# Usage: bench/seq_mnist_cpu.sh   Environment: BUILD (a CPU-only Release build dir holding
# samples/cudl-seq-mnist, default build-cpu), RUNS (alternating runs each, default 3), CELL (lstm),
# LIMIT (training images, default 12800: 7800 trained after the 5000 held out, 61 steps),
# THREADS (default $OPENBLAS_NUM_THREADS, else nproc), DATA (data/mnist), PYTHON (with torch),
# BASE (an earlier build dir, or a copy holding libcudl.so.0 and samples/cudl-seq-mnist: also timed in
# the same alternation, with BASE first on LD_LIBRARY_PATH, for before/after figures under one load).
# Prints each run's epoch seconds and milliseconds per step, then the medians and cudl/torch.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-cpu} RUNS=${RUNS:-3} CELL=${CELL:-lstm} LIMIT=${LIMIT:-12800}
THREADS=${THREADS:-${OPENBLAS_NUM_THREADS:-$(nproc)}} DATA=${DATA:-$ROOT/data/mnist} PYTHON=${PYTHON:-/usr/bin/python3}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} OPENBLAS_NUM_THREADS=$THREADS
CUDL=$BUILD/samples/cudl-seq-mnist
[[ -x $CUDL ]] || { echo "seq_mnist_cpu.sh: no $CUDL (cmake --build BUILD --target cudl-seq-mnist)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "machine: $(nproc) CPUs, load:$(uptime | sed 's/.*load average://'); threads $THREADS; cell $CELL; limit $LIMIT"
BASE=${BASE:-}
[[ -z $BASE || -x $BASE/samples/cudl-seq-mnist ]] || { echo "seq_mnist_cpu.sh: no $BASE/samples/cudl-seq-mnist" >&2; exit 1; }
# One epoch of a cudl-seq-mnist binary [with this directory first on LD_LIBRARY_PATH]: its output,
# and its epoch seconds (from the CSV) in $TMP/secs.
cudl_epoch() {
  local libs=${LD_LIBRARY_PATH:-}
  [[ -n ${2:-} ]] && libs=$2${libs:+:$libs}
  LD_LIBRARY_PATH=$libs "$1" --cell "$CELL" --epochs 1 --limit "$LIMIT" --device cpu --data "$DATA" \
    --csv "$TMP/h.csv" --plot ''
  awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == "epoch_seconds") c = i} NR == 2 {print $c}' "$TMP/h.csv" \
    >"$TMP/secs"
}
for ((r = 1; r <= RUNS; r++)); do
  if [[ -n $BASE ]]; then
    cudl_epoch "$BASE/samples/cudl-seq-mnist" "$BASE" >/dev/null
    secs=$(<"$TMP/secs")
    echo "$secs" >>"$TMP/base"
    echo "run $r base : epoch ${secs}s"
  fi
  out=$(cudl_epoch "$CUDL")
  steps=$(sed -n 's/^training on \([0-9]*\) sequences.*/\1/p' <<<"$out" | awk '{print int(($1 + 127) / 128)}')
  secs=$(<"$TMP/secs")
  echo "$secs" >>"$TMP/cudl"
  echo "run $r cudl : epoch ${secs}s, $(awk -v s="$secs" -v n="$steps" 'BEGIN {printf "%.1f", 1000 * s / n}') ms/step"
  line=$("$PYTHON" "$ROOT/bench/torch_seq_mnist.py" --cell "$CELL" --epochs 1 --limit "$LIMIT" --data "$DATA" \
    --threads "$THREADS" | grep '^RESULT')
  secs=$(sed -n 's/.*epoch_seconds=\([0-9.]*\).*/\1/p' <<<"$line")
  echo "$secs" >>"$TMP/torch"
  echo "run $r torch: epoch ${secs}s, $(awk -v s="$secs" -v n="$steps" 'BEGIN {printf "%.1f", 1000 * s / n}') ms/step"
done
c=$(median <"$TMP/cudl") t=$(median <"$TMP/torch")
echo "SUMMARY cell=$CELL runs=$RUNS threads=$THREADS steps=$steps cudl_epoch_s=$c torch_epoch_s=$t" \
  "cudl_over_torch=$(awk -v c="$c" -v t="$t" 'BEGIN {printf "%.2f", c / t}') load:$(uptime | sed 's/.*load average://')"
if [[ -n $BASE ]]; then
  b=$(median <"$TMP/base")
  echo "SUMMARY base_epoch_s=$b base_over_torch=$(awk -v b="$b" -v t="$t" 'BEGIN {printf "%.2f", b / t}')" \
    "base_over_cudl=$(awk -v b="$b" -v c="$c" 'BEGIN {printf "%.2f", b / c}')"
fi
