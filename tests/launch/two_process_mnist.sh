#!/usr/bin/env bash
# tests/launch/two_process_mnist.sh — cudl-mnist (on emulated devices) as one process, as two ranks
# (threads, --devices 2) and as two ranks as processes under scripts/cudlrun, twice: the processes'
# final checkpoints must be bit for bit equal run to run, equal to the threads' and within 1e-5
# relative of the one-process run's (four processes too); only rank 0 prints; a rank that fails
# stops the job.
# Usage: two_process_mnist.sh CUDL_MNIST_EMU CUDLRUN DATA_DIR (exit 77: no MNIST data)
set -uo pipefail
bin=$1 cudlrun=$2 data=$3
here=$(dirname "$(realpath "$0")")
if [[ ! -f $data/train-images-idx3-ubyte && ! -f $data/train-images-idx3-ubyte.gz ]]; then
  echo "skipped: no MNIST in $data (scripts/fetch-mnist.sh)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail=0
# 640 images: 576 train (9 global batches of 64, none incomplete, so one device trains on exactly
# the rows the two ranks share) and 64 held out.
args=(--data "$data" --limit 640 --epochs 1 --batch-size 64 --csv '' --plot '')
source "$here/run_lib.sh"
run one env CUDL_EMU_DEVICES=1 "$bin" "${args[@]}" --save one.safetensors
run threads env CUDL_EMU_DEVICES=2 "$bin" "${args[@]}" --devices 2 --save threads.safetensors
# Each process sees two emulated devices and trains on cuda:LOCAL_RANK.
for i in 1 2; do
  run procs$i env CUDL_EMU_DEVICES=2 "$cudlrun" -n 2 "$bin" "${args[@]}" --save procs$i.safetensors
done
# And four processes (16 rows each per step).
run procs4 env CUDL_EMU_DEVICES=4 "$cudlrun" -n 4 "$bin" "${args[@]}" --save procs4.safetensors
((fail)) && exit 1

cat procs1.log
grep -q '^\[0\] data-parallel over 2 processes' procs1.log || { echo "FAIL: rank 0 did not say it runs 2 processes"; fail=1; }
grep -q '^\[0\] test loss .*, test accuracy' procs1.log || { echo "FAIL: rank 0 printed no test accuracy"; fail=1; }
if grep -q '^\[1\]' procs1.log; then
  echo "FAIL: rank 1 printed (only rank 0 prints):"
  grep '^\[1\]' procs1.log
  fail=1
fi
# The same epoch numbers as the threads' run print.
diff <(grep -o 'accuracy .*' threads.log) <(grep -o 'accuracy .*' procs1.log | sed 's/^\[0\] //') >/dev/null ||
  { echo "FAIL: the processes' epoch and test lines differ from the threads' run"; fail=1; }
cmp procs1.safetensors procs2.safetensors || { echo "FAIL: two-process runs differ run to run"; fail=1; }
cmp threads.safetensors procs1.safetensors || { echo "FAIL: processes and threads end with different weights"; fail=1; }
echo "one process vs two processes:"
python3 "$here/compare_checkpoints.py" one.safetensors procs1.safetensors 1e-5 || fail=1
echo "one process vs four processes:"
python3 "$here/compare_checkpoints.py" one.safetensors procs4.safetensors 1e-5 || fail=1

# A rank that fails stops the job: rank 1 alone gets a --batch-size that 2 ranks cannot split.
t0=$(now)
CUDL_EMU_DEVICES=2 "$cudlrun" -n 2 bash -c '[[ $RANK == 1 ]] && exec "$0" "$@" --batch-size 63; exec "$0" "$@"' \
  "$bin" "${args[@]}" >fails.log 2>&1
rc=$?
took=$(secs $(($(now) - t0)))
grep -q 'must be a multiple of WORLD_SIZE=2' fails.log || { echo "FAIL: rank 1's usage error was not shown"; cat fails.log; fail=1; }
grep -q 'cudlrun: rank 1 (pid [0-9]*) exited with status 2; stopping the other ranks' fails.log ||
  { echo "FAIL: cudlrun did not name the failed rank"; cat fails.log; fail=1; }
((rc == 2)) || { echo "FAIL: cudlrun exited with $rc, not rank 1's 2"; fail=1; }
echo "a failing rank 1 stopped the job in ${took}s (exit $rc)"

# A launcher's environment that is wrong, or combined with --devices, is an error naming it.
out=$(CUDL_EMU_DEVICES=2 RANK=x WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 "$bin" "${args[@]}" 2>&1)
grep -q "init_from_env: RANK='x' is not an integer" <<<"$out" || { echo "FAIL: bad RANK: $out"; fail=1; }
out=$(CUDL_EMU_DEVICES=2 RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 "$bin" "${args[@]}" \
  --devices 2 2>&1)
grep -q "cannot be combined with a launcher's RANK/WORLD_SIZE" <<<"$out" || { echo "FAIL: --devices under a launcher: $out"; fail=1; }

printf 'wall time (emulated devices on the CPU, not a GPU): one process %.1f s, two threads %.1f s, two processes %.1f s and %.1f s, four processes %.1f s\n' \
  "$(cat one.s)" "$(cat threads.s)" "$(cat procs1.s)" "$(cat procs2.s)" "$(cat procs4.s)"
exit $fail
