#!/usr/bin/env bash
# bench/charlm_cpu.sh — cudl-charlm --device cpu against PyTorch (bench/torch_charlm.py): the same
# model, data, batches and thread count, alternating runs; reports each run's mean ms/step, the
# medians and their ratio.
#
# Usage: bench/charlm_cpu.sh [CUDL_CHARLM_BINARY]   (default build/samples/cudl-charlm)
# Environment: RUNS=n (3) runs of each, alternating; STEPS=n (300) steps per run; THREADS=n (2):
#   OPENBLAS_NUM_THREADS for cudl (its GEMMs; its other CPU ops are single-threaded except those
#   docs/performance.md lists) and torch.set_num_threads for PyTorch, which uses the same OpenBLAS;
#   OMP_WAIT_POLICY (PASSIVE, see docs/performance.md); PYTHON (/usr/bin/python3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CUDL=${1:-$ROOT/build/samples/cudl-charlm}
RUNS=${RUNS:-3}
STEPS=${STEPS:-300}
THREADS=${THREADS:-2}
PYTHON=${PYTHON:-/usr/bin/python3}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
[[ -x $CUDL ]] || { echo "charlm_cpu.sh: $CUDL is not built (cmake --build build --target cudl-charlm)" >&2; exit 1; }
"$PYTHON" -c "import torch" 2>/dev/null || { echo "charlm_cpu.sh: $PYTHON cannot import torch" >&2; exit 1; }
"$ROOT/scripts/fetch-words.sh" >/dev/null
cudl_ms=() torch_ms=()
for ((r = 1; r <= RUNS; r++)); do
  c=$(OPENBLAS_NUM_THREADS=$THREADS "$CUDL" --device cpu --steps "$STEPS" --csv '' --samples 0 |
        tr '\r' '\n' | sed -n 's/^training: .*(\([0-9.]*\) ms\/step).*/\1/p')
  t=$(OPENBLAS_NUM_THREADS=$THREADS "$PYTHON" "$ROOT/bench/torch_charlm.py" --steps "$STEPS" --threads "$THREADS" |
        sed -n 's/^training: .*(\([0-9.]*\) ms\/step).*/\1/p')
  echo "run $r: cudl $c ms/step, pytorch $t ms/step (load $(cut -d' ' -f1 /proc/loadavg))"
  cudl_ms+=("$c") torch_ms+=("$t")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mc=$(median "${cudl_ms[@]}") mt=$(median "${torch_ms[@]}")
echo "SUMMARY charlm cpu: median ms/step cudl $mc, pytorch $mt, cudl/pytorch $(awk -v a="$mc" -v b="$mt" 'BEGIN {printf "%.2f", a / b}') ($RUNS alternating runs of $STEPS steps, $THREADS threads)"
