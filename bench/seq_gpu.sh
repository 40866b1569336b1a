#!/usr/bin/env bash
# bench/seq_gpu.sh — the sequence samples on a GPU against PyTorch eager on the same GPU: one epoch of
# cudl-seq-mnist (LSTM(128), batch 128) against bench/torch_seq_mnist.py --device cuda, and
# cudl-charlm's steps against bench/torch_charlm.py --device cuda (same model, data, schedule).
# cudl runs the whole step as one CUDA graph; PyTorch runs eagerly (cuDNN's LSTM, its own kernels).
#
# Usage: bench/seq_gpu.sh   Environment: BUILD (a CUDA build dir holding samples/cudl-seq-mnist and
# samples/cudl-charlm; default build-bench-gpu, configured and built here when missing), RUNS
# (alternating runs each, default 3), EPOCHS (seq-mnist, default 1), STEPS (charlm, default 3000),
# PRECISION (cudl's --precision, default f32), DATA (data/mnist), PYTHON (a python3 with CUDA torch).
# Prints each run, then per sample the medians and cudl/torch. Needs a GPU: without one it stops
# saying so. Not yet run on a GPU (docs/performance.md says so next to every GPU figure).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench-gpu} RUNS=${RUNS:-3} EPOCHS=${EPOCHS:-1} STEPS=${STEPS:-3000}
PRECISION=${PRECISION:-f32} DATA=${DATA:-$ROOT/data/mnist} PYTHON=${PYTHON:-/usr/bin/python3}
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 ||
  { echo "seq_gpu.sh: no GPU here (nvidia-smi -L fails); this benchmark needs one" >&2; exit 1; }
"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' ||
  { echo "seq_gpu.sh: $PYTHON's torch sees no CUDA device" >&2; exit 1; }
if [[ ! -x $BUILD/samples/cudl-seq-mnist || ! -x $BUILD/samples/cudl-charlm ]]; then
  export PATH=/usr/local/cuda/bin:$PATH
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" --target cudl-seq-mnist cudl-charlm -j"$(nproc)" >/dev/null
fi
[[ -d $DATA ]] || "$ROOT/scripts/fetch-mnist.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); cudl precision $PRECISION; runs $RUNS"
for ((r = 1; r <= RUNS; r++)); do
  "$BUILD/samples/cudl-seq-mnist" --device cuda --epochs "$EPOCHS" --precision "$PRECISION" --data "$DATA" \
    --csv "$TMP/h.csv" --plot '' >"$TMP/seq.out"
  secs=$(awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == "epoch_seconds") c = i} END {print $c}' "$TMP/h.csv")
  echo "$secs" >>"$TMP/seq_cudl"
  echo "run $r seq-mnist cudl : epoch ${secs}s, $(grep 'test accuracy' "$TMP/seq.out")"
  line=$("$PYTHON" "$ROOT/bench/torch_seq_mnist.py" --device cuda --epochs "$EPOCHS" --data "$DATA" | grep '^RESULT')
  secs=$(sed -n 's/.*epoch_seconds=\([0-9.]*\).*/\1/p' <<<"$line")
  echo "$secs" >>"$TMP/seq_torch"
  echo "run $r seq-mnist torch: epoch ${secs}s, $(sed -n 's/.*\(test_accuracy=[0-9.]*\).*/\1/p' <<<"$line")"

  out=$("$BUILD/samples/cudl-charlm" --device cuda --steps "$STEPS" --precision "$PRECISION" --plot '' --csv '')
  ms=$(sed -n 's/^training: .* (\([0-9.]*\) ms\/step).*/\1/p' <<<"$out")
  echo "$ms" >>"$TMP/lm_cudl"
  echo "run $r charlm cudl : ${ms} ms/step, $(grep 'test loss' <<<"$out")"
  out=$("$PYTHON" "$ROOT/bench/torch_charlm.py" --device cuda --steps "$STEPS")
  ms=$(sed -n 's/^training: .* (\([0-9.]*\) ms\/step).*/\1/p' <<<"$out")
  echo "$ms" >>"$TMP/lm_torch"
  echo "run $r charlm torch: ${ms} ms/step, $(grep 'test loss' <<<"$out")"
done
for s in seq lm; do
  c=$(median <"$TMP/${s}_cudl") t=$(median <"$TMP/${s}_torch")
  echo "SUMMARY $([[ $s == seq ]] && echo "seq-mnist epoch_s" || echo "charlm ms_per_step") cudl=$c torch=$t" \
    "cudl_over_torch=$(awk -v c="$c" -v t="$t" 'BEGIN {printf "%.2f", c / t}') precision=$PRECISION runs=$RUNS"
done
