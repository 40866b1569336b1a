#!/usr/bin/env bash
# bench/scaling_gpu.sh — data-parallel scaling on a multi-GPU machine: cudl (scripts/cudlrun, one
# process per GPU) against PyTorch DDP (bench/torch_ddp.py, launched the same way) on cudl-mnist's mlp/cnn and
# cudl-charlm's Transformer at 1, 2, 4 and 8 GPUs, printing times and scaling efficiency.
#
# NOT MEASURED ON A GPU YET: this script has only run its dry path (DRY=1, below) on emulated
# devices; no figure from it is in the docs.
#
# Usage: bench/scaling_gpu.sh
# Environment:
#   GPUS="1 2 4 8"  world sizes (those above the machine's GPU count are skipped)
#   TASKS="mnist:mlp mnist:cnn charlm" (DRY=1: "mnist:mlp charlm")
#   EPOCHS=5        mnist epochs per run (epoch time: the median of epochs 2..EPOCHS)
#   STEPS=500       charlm steps per run (time: the mean ms per step over all of them)
#   BATCH=128, CHARLM_BATCH=64  the per-GPU batch (weak scaling: the global batch is N times it)
#   BUILD=dir       CUDA Release build of cudl (default /tmp/build-bench-gpu; configured and built
#                   here when needed), DATA=dir (default data/mnist), WORDS=file, PYTHON=python3,
#   ARCH (CMAKE_CUDA_ARCHITECTURES, default native)
#   DRY=1           the CPU-side dry path: cudl built against the emulator (BUILD must hold
#                   samples/cudl-mnist-emu and samples/cudl-charlm-emu from a test build;
#                   CUDL_EMU_DEVICES=N), PyTorch DDP on gloo (--device cpu) when torch imports, tiny
#                   data and GPUS="1 2" unless set. It checks that every run starts, finishes and
#                   prints what the table parses; its times are the emulator's and mean nothing.
#
# Efficiency: mnist trains the same epoch (55000 images) in global batches of N*BATCH, so
# efficiency(N) = t_epoch(1) / (N * t_epoch(N)); charlm trains STEPS steps of N*CHARLM_BATCH windows,
# so efficiency(N) = t_step(1) / t_step(N). N = 1 runs under the launchers too (a world of one).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY=${DRY:-0}
PYTHON=${PYTHON:-python3}
DATA=${DATA:-$ROOT/data/mnist}
WORDS=${WORDS:-/usr/share/dict/american-english}
BATCH=${BATCH:-128}
CHARLM_BATCH=${CHARLM_BATCH:-64}
CUDLRUN=$ROOT/scripts/cudlrun
if ((DRY)); then
  BUILD=${BUILD:-$ROOT/build}
  GPUS=${GPUS:-"1 2"}
  TASKS=${TASKS:-"mnist:mlp charlm"}
  EPOCHS=${EPOCHS:-2}
  STEPS=${STEPS:-4}
  MNIST_BIN=$BUILD/samples/cudl-mnist-emu
  CHARLM_BIN=$BUILD/samples/cudl-charlm-emu
  mnist_extra=(--limit $((1152 * 10 / 9 + 1)))  # 1152 training images after the 10% held out
  charlm_extra=(--limit 400 --context 8 --dim 16 --heads 2 --blocks 1)
  torch_mnist_extra=(--limit $((1152 * 10 / 9 + 1)))
  torch_charlm_extra=(--context 8 --dim 16 --heads 2 --blocks 1)
  torch_device=cpu
  for b in "$MNIST_BIN" "$CHARLM_BIN"; do
    [[ -x $b ]] || { echo "scaling_gpu.sh: DRY=1 needs $b (cmake --build $BUILD --target $(basename "$b"))" >&2; exit 1; }
  done
  max_gpus=8
  echo "DRY RUN on emulated CUDA devices (the CPU): the times below are the emulator's and mean nothing"
else
  BUILD=${BUILD:-/tmp/build-bench-gpu}
  GPUS=${GPUS:-"1 2 4 8"}
  TASKS=${TASKS:-"mnist:mlp mnist:cnn charlm"}
  EPOCHS=${EPOCHS:-5}
  STEPS=${STEPS:-500}
  MNIST_BIN=$BUILD/samples/cudl-mnist
  CHARLM_BIN=$BUILD/samples/cudl-charlm
  mnist_extra=() charlm_extra=() torch_mnist_extra=() torch_charlm_extra=()
  torch_device=cuda
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! gpus=$(nvidia-smi -L 2>&1) || ! grep -q '^GPU' <<<"$gpus"; then
    echo "scaling_gpu.sh: no CUDA device (nvidia-smi -L: ${gpus:-not installed}); DRY=1 runs the dry path" >&2
    exit 1
  fi
  max_gpus=$(grep -c '^GPU' <<<"$gpus")
  if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${ARCH:-native}" \
      -DCUDL_BUILD_TESTS=OFF -DCUDL_BUILD_SAMPLES=ON >/dev/null
  fi
  cmake --build "$BUILD" --target cudl-mnist cudl-charlm -j"${JOBS:-$(nproc)}" >/dev/null
  echo "gpus: $max_gpus x $(head -1 <<<"$gpus" | sed 's/ (UUID.*//'); driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
  nvidia-smi topo -m 2>/dev/null | head -n $((max_gpus + 1)) || true
fi
echo "host: $(nproc) CPUs, load:$(uptime | sed 's/.*load average://')"
have_torch=1
if ! "$PYTHON" -c "import torch, torch.distributed" 2>/dev/null; then
  echo "scaling_gpu.sh: $PYTHON cannot import torch: the PyTorch DDP rows are skipped" >&2
  have_torch=0
elif ((!DRY)) && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "scaling_gpu.sh: $PYTHON's torch has no CUDA: the PyTorch DDP rows are skipped" >&2
  have_torch=0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The median of epochs 2..E of a cudl-mnist history CSV (epoch 1 alone when E = 1).
median_epoch() {
  awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) col[$i] = i; next}
    {s[++n] = $col["epoch_seconds"]}
    END {m = 0; for (i = 2; i <= n; i++) a[++m] = s[i]
         if (!m) {printf "%.5f", s[1]; exit}
         for (i = 2; i <= m; i++) {x = a[i]; j = i - 1; while (j > 0 && a[j] > x) {a[j+1] = a[j]; j--} a[j+1] = x}
         printf "%.5f", m % 2 ? a[(m+1)/2] : (a[m/2] + a[m/2+1]) / 2}' "$1"
}
fail() {  # what, log
  echo "scaling_gpu.sh: $1 failed:" >&2
  tail -20 "$2" >&2
  exit 1
}

rows=()  # task|framework|N|seconds (mnist: epoch; charlm: per step)
for task in $TASKS; do
  for n in $GPUS; do
    if ((n > max_gpus)); then
      echo "skipping N=$n: this machine has $max_gpus GPU(s)"
      continue
    fi
    log=$TMP/run.log
    emu=()
    ((DRY)) && emu=(env CUDL_EMU_DEVICES="$n")
    case $task in
    mnist:*)
      model=${task#mnist:}
      "${emu[@]}" "$CUDLRUN" -n "$n" "$MNIST_BIN" --model "$model" --epochs "$EPOCHS" --batch-size $((n * BATCH)) \
        --lr 1e-3 --schedule constant --data "$DATA" --csv "$TMP/h.csv" --plot '' "${mnist_extra[@]}" >"$log" 2>&1 ||
        fail "cudl $task N=$n" "$log"
      t=$(median_epoch "$TMP/h.csv")
      ;;
    charlm)
      "${emu[@]}" "$CUDLRUN" -n "$n" "$CHARLM_BIN" --steps "$STEPS" --batch-size $((n * CHARLM_BATCH)) \
        --log-every "$STEPS" --samples 0 --data "$WORDS" --csv '' "${charlm_extra[@]}" >"$log" 2>&1 ||
        fail "cudl $task N=$n" "$log"
      t=$(sed -n 's/^\[0\] training: .*(\([0-9.]*\) ms\/step)$/\1/p' "$log" | awk '{printf "%.6f", $1 / 1000}')
      ;;
    esac
    [[ -n $t ]] || fail "reading cudl $task N=$n's time" "$log"
    rows+=("$task|cudl|$n|$t")
    echo "$task cudl N=$n: $t s"
    if ((have_torch)); then
      case $task in
      mnist:*) targs=(--task mnist --model "${task#mnist:}" --epochs "$EPOCHS" --batch-size "$BATCH" --data "$DATA" "${torch_mnist_extra[@]}") ;;
      charlm) targs=(--task charlm --steps "$STEPS" --batch-size "$CHARLM_BATCH" --data "$WORDS" "${torch_charlm_extra[@]}") ;;
      esac
      # cudlrun sets the variables torch.distributed's env:// needs, as torchrun does (and works
      # where an old torchrun does not: Debian's torch 1.13 on Python 3.11).
      "$CUDLRUN" --no-prefix -n "$n" "$PYTHON" "$ROOT/bench/torch_ddp.py" "${targs[@]}" --device "$torch_device" \
        >"$log" 2>&1 || fail "torch DDP $task N=$n" "$log"
      line=$(grep '^RESULT' "$log") || fail "reading torch DDP $task N=$n's RESULT" "$log"
      case $task in
      mnist:*) t=$(sed -n 's/.* epoch_seconds=\([^ ]*\).*/\1/p' <<<"$line") ;;
      charlm) t=$(sed -n 's/.* ms_per_step=\([^ ]*\).*/\1/p' <<<"$line" | awk '{printf "%.6f", $1 / 1000}') ;;
      esac
      rows+=("$task|torch-ddp|$n|$t")
      echo "$task torch DDP N=$n: $t s"
    fi
  done
done

echo
((DRY)) && echo "DRY RUN (emulated devices; not a GPU measurement):"
printf '%-10s %-10s %4s %14s %11s %14s\n' task framework N "time (s)" efficiency "cudl speed-up"
for r in "${rows[@]}"; do
  IFS='|' read -r task fw n t <<<"$r"
  base=$(printf '%s\n' "${rows[@]}" | awk -F'|' -v k="$task" -v f="$fw" '$1 == k && $2 == f && $3 == 1 {print $4}')
  torch=$(printf '%s\n' "${rows[@]}" | awk -F'|' -v k="$task" -v n="$n" '$1 == k && $2 == "torch-ddp" && $3 == n {print $4}')
  eff=$(awk -v t="$t" -v b="$base" -v n="$n" -v k="$task" 'BEGIN {
    if (b == "" || t <= 0) {print "-"; exit}
    printf "%.1f%%", 100 * (k ~ /^mnist/ ? b / (n * t) : b / t)}')
  vs=$(awk -v t="$t" -v p="$torch" -v f="$fw" 'BEGIN {if (f != "cudl" || p == "" || t <= 0) print "-"; else printf "%.2fx", p / t}')
  printf '%-10s %-10s %4s %14s %11s %14s\n' "$task" "$fw" "$n" "$t" "$eff" "$vs"
done
echo "(time: mnist the median epoch of epochs 2..$EPOCHS, charlm seconds per step; per-GPU batch $BATCH / $CHARLM_BATCH;"
echo " efficiency against the same framework at N=1; cudl speed-up: PyTorch DDP's time / cudl's at the same N)"
