#!/usr/bin/env bash
# samples/mnist/cli_test.sh — cudl-mnist's command line against hostile input: numbers out of
# range, unwritable output paths (reported before training), and file names that a shell would
# run (they must reach gnuplot as plain names). Usage: cli_test.sh CUDL_MNIST DATA_DIR
set -uo pipefail
source "$(dirname "$(realpath "$0")")/../common/cli_test_lib.sh" "$@"  # bin, data, fail, expect; cd "$work"

expect 2 "--epochs needs an integer in [0, 1000000], got '4294967297'" --epochs 4294967297
expect 2 "--batch-size needs an integer" --batch-size 99999999999999999999
expect 2 "--seed needs an integer" --seed 3a8
expect 2 "--lr needs a positive number" --lr 1e39
expect 2 "--lr needs a positive number" --lr nan
expect 2 "--precision must be f32, tf32, bf16 or f16, got 'f8'" --precision f8
expect 1 "--save /nonexistent/dir/m.safetensors: cannot write there" --save /nonexistent/dir/m.safetensors
expect 1 "--csv /nonexistent/h.csv: cannot write there" --csv /nonexistent/h.csv
expect 2 "--batch-size 30 must be a multiple of --devices 4" --devices 4 --batch-size 30
expect 2 "--devices 2 needs CUDA devices, not --device cpu" --devices 2 --device cpu
expect 2 "--devices needs an integer in [1, 64], got '0'" --devices 0

if [[ ! -f $data/train-images-idx3-ubyte && ! -f $data/train-images-idx3-ubyte.gz ]]; then
  echo "skipped the training run: no MNIST in $data (scripts/fetch-mnist.sh)"
  exit $((fail ? 1 : 77))
fi
# A test set of another image size is reported before training.
mkdir odd
for f in train-images-idx3-ubyte train-labels-idx1-ubyte; do
  for g in "$data/$f" "$data/$f.gz"; do [[ -f $g ]] && ln -s "$g" "odd/$(basename "$g")"; done
done
python3 -c "
import struct
open('odd/t10k-images-idx3-ubyte', 'wb').write(struct.pack('>IIII', 0x803, 10, 14, 14) + bytes(10 * 14 * 14))
open('odd/t10k-labels-idx1-ubyte', 'wb').write(struct.pack('>II', 0x801, 10) + bytes(10))"
expect 1 "the test images are (10, 1, 14, 14) u8 but the training images are" --data odd --device cpu

# More ranks than devices (64: no machine here has that many) is an error naming both counts.
expect 1 "64 ranks need 64 CUDA devices, this machine has" --data "$data" --limit 256 --devices 64 --batch-size 64

# --precision tf32 is reported in the plan, and changes nothing on the CPU backend.
expect 0 "precision tf32 (no effect on the cpu backend" --data "$data" --limit 64 --epochs 1 --device cpu \
  --precision tf32 --csv '' --plot ''

# --precision f16 trains with dynamic loss scaling and reports the scaler once, after training.
expect 0 "loss scale 65536, skipped steps 0" --data "$data" --limit 256 --epochs 1 --device cpu \
  --precision f16 --csv '' --plot ''

# A short run whose output names hold shell syntax: nothing may run, the files must appear.
expect 0 "test accuracy" --data "$data" --limit 256 --epochs 1 --device cpu \
  --csv 'h$(touch pwned1).csv' --plot 'p`touch pwned2`;touch pwned3.png'
[[ -e pwned1 || -e pwned2 || -e pwned3 ]] && { echo "FAIL: a file name was run as a command"; fail=1; }
[[ -f 'h$(touch pwned1).csv' ]] || { echo "FAIL: the CSV with a shell-like name was not written"; fail=1; }
if command -v gnuplot >/dev/null; then
  [[ -f 'p`touch pwned2`;touch pwned3.png' ]] || { echo "FAIL: the plot with a shell-like name was not drawn"; fail=1; }
else
  echo "note: gnuplot not installed, the plot itself was not checked"
fi
exit $fail
