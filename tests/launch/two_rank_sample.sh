#!/usr/bin/env bash
# tests/launch/two_rank_sample.sh — cudl-seq-mnist or cudl-charlm (built against the emulator) on
# tiny data as one rank, as two ranks as processes under scripts/cudlrun (twice) and as two ranks
# as threads (--devices 2): the two process runs end with the same checkpoint bit for bit, equal to
# the threads' bit for bit and within 1e-5 relative of the one rank's; only rank 0 prints.
# Usage: two_rank_sample.sh seq-mnist|charlm PROGRAM_EMU CUDLRUN DATA (exit 77: no data)
set -uo pipefail
sample=$1 bin=$(realpath "$2") cudlrun=$(realpath "$3") data=$(realpath -m "$4")
here=$(dirname "$(realpath "$0")")
case $sample in
seq-mnist)
  if [[ ! -f $data/train-images-idx3-ubyte && ! -f $data/train-images-idx3-ubyte.gz ]]; then
    echo "skipped: no MNIST in $data (scripts/fetch-mnist.sh)"
    exit 77
  fi
  # 320 images: 288 train (9 global batches of 32, none incomplete, so one rank trains on exactly
  # the rows the two ranks share) and 32 held out; a 16-unit LSTM.
  args=(--data "$data" --limit 320 --epochs 1 --batch-size 32 --units 16 --csv '' --plot '')
  last='^test accuracy'
  compare=()
  ;;
charlm)
  if [[ ! -f $data ]]; then
    echo "skipped: no word list at $data (scripts/fetch-words.sh)"
    exit 77
  fi
  # 6 steps of 16 windows of 8 characters, a one-block model of width 16.
  args=(--data "$data" --limit 400 --steps 6 --batch-size 16 --context 8 --dim 16 --heads 2 --blocks 1
    --log-every 3 --samples 3 --csv '')
  last='^test loss'
  # The attention's key bias has a zero gradient in exact arithmetic; AdamW turns its rounding noise
  # into steps, so it depends on the summation order (compare_checkpoints.py says why).
  compare=(--noise-floor 1e-16)
  ;;
*)
  echo "usage: $0 seq-mnist|charlm PROGRAM_EMU CUDLRUN DATA"
  exit 2
  ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail=0
source "$here/run_lib.sh"
run one env CUDL_EMU_DEVICES=1 "$bin" "${args[@]}" --save one.safetensors
for i in 1 2; do
  run procs$i env CUDL_EMU_DEVICES=2 "$cudlrun" -n 2 "$bin" "${args[@]}" --save procs$i.safetensors
done
run threads env CUDL_EMU_DEVICES=2 "$bin" "${args[@]}" --devices 2 --save threads.safetensors
((fail)) && exit 1

cat procs1.log
grep -q '^\[0\] data-parallel over 2 processes' procs1.log || { echo "FAIL: rank 0 did not say it runs 2 processes"; fail=1; }
grep -q "^\[0\] ${last#^}" procs1.log || { echo "FAIL: rank 0 did not print '${last#^}'"; fail=1; }
grep -q '^data-parallel on 2 CUDA devices (ranks as threads)' threads.log ||
  { echo "FAIL: --devices 2 did not say it runs 2 threads"; fail=1; }
if [[ $sample == charlm ]]; then  # the ranks split each step's windows
  grep -q '^\[0\] each rank trains on 8 of the 16 windows of a step' procs1.log ||
    { echo "FAIL: rank 0 did not say each rank trains on 8 of 16 windows"; fail=1; }
fi
if grep -q '^\[1\]' procs1.log; then
  echo "FAIL: rank 1 printed (only rank 0 prints):"
  grep '^\[1\]' procs1.log
  fail=1
fi
# Processes and threads end with the same test line (the same weights give the same numbers).
diff <(grep "$last" threads.log) <(grep "^\[0\] ${last#^}" procs1.log | sed 's/^\[0\] //') >/dev/null ||
  { echo "FAIL: the processes' test line differs from the threads' run"; fail=1; }
cmp procs1.safetensors procs2.safetensors || { echo "FAIL: two-process runs differ run to run"; fail=1; }
cmp threads.safetensors procs1.safetensors || { echo "FAIL: processes and threads end with different weights"; fail=1; }
echo "one rank vs two processes:"
python3 "$here/compare_checkpoints.py" one.safetensors procs1.safetensors 1e-5 "${compare[@]}" || fail=1
printf 'wall time (emulated devices on the CPU, not a GPU): one rank %.1f s, two processes %.1f s and %.1f s, two threads %.1f s\n' \
  "$(cat one.s)" "$(cat procs1.s)" "$(cat procs2.s)" "$(cat threads.s)"
exit $fail
