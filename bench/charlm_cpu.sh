#!/usr/bin/env bash
# bench/charlm_cpu.sh — cudl-charlm --device cpu against PyTorch (bench/torch_charlm.py): the same
# model, data, batches and thread count, alternating runs; reports each run's mean ms/step, the
# medians and their ratio.
#
# Usage: bench/charlm_cpu.sh [CUDL_CHARLM_BINARY]   (default build/samples/cudl-charlm)
# Environment: RUNS=n (3) runs of each, alternating; STEPS=n (300) steps per run; THREADS=n (2):
#   OPENBLAS_NUM_THREADS for cudl (its GEMMs; its other CPU ops are single-threaded except those
#   docs/performance.md lists) and torch.set_num_threads for PyTorch, which uses the same OpenBLAS;
#   OMP_WAIT_POLICY (PASSIVE, see docs/performance.md); PYTHON (/usr/bin/python3); BASE=DIR: also
#   time DIR/samples/cudl-charlm (an earlier build, run with DIR first on LD_LIBRARY_PATH so that it
#   loads DIR's libcudl) in the same alternation, for before/after figures under the same load.
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
BASE=${BASE:-}
[[ -z $BASE || -x $BASE/samples/cudl-charlm ]] || { echo "charlm_cpu.sh: no $BASE/samples/cudl-charlm" >&2; exit 1; }
cudl_step_ms() {  # binary [directory to put first on LD_LIBRARY_PATH]
  local libs=${LD_LIBRARY_PATH:-}
  [[ -n ${2:-} ]] && libs=$2${libs:+:$libs}
  LD_LIBRARY_PATH=$libs OPENBLAS_NUM_THREADS=$THREADS "$1" --device cpu --steps "$STEPS" --csv '' --samples 0 | tr '\r' '\n' | sed -n 's/^training: .*(\([0-9.]*\) ms\/step).*/\1/p'
}
cudl_ms=() torch_ms=() base_ms=()
for ((r = 1; r <= RUNS; r++)); do
  if [[ -n $BASE ]]; then
    b=$(cudl_step_ms "$BASE/samples/cudl-charlm" "$BASE")
    echo "run $r: base $b ms/step (load $(cut -d' ' -f1 /proc/loadavg))"
    base_ms+=("$b")
  fi
  c=$(cudl_step_ms "$CUDL")
  t=$(OPENBLAS_NUM_THREADS=$THREADS "$PYTHON" "$ROOT/bench/torch_charlm.py" --steps "$STEPS" --threads "$THREADS" |
        sed -n 's/^training: .*(\([0-9.]*\) ms\/step).*/\1/p')
  echo "run $r: cudl $c ms/step, pytorch $t ms/step (load $(cut -d' ' -f1 /proc/loadavg))"
  cudl_ms+=("$c") torch_ms+=("$t")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mc=$(median "${cudl_ms[@]}") mt=$(median "${torch_ms[@]}")
echo "SUMMARY charlm cpu: median ms/step cudl $mc, pytorch $mt, cudl/pytorch $(awk -v a="$mc" -v b="$mt" 'BEGIN {printf "%.2f", a / b}') ($RUNS alternating runs of $STEPS steps, $THREADS threads, load $(cut -d' ' -f1-3 /proc/loadavg))"
if [[ -n $BASE ]]; then
  mb=$(median "${base_ms[@]}")
  echo "SUMMARY base: median ms/step $mb, base/pytorch $(awk -v a="$mb" -v b="$mt" 'BEGIN {printf "%.2f", a / b}'), base/cudl $(awk -v a="$mb" -v b="$mc" 'BEGIN {printf "%.2f", a / b}')"
fi
