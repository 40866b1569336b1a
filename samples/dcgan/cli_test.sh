#!/usr/bin/env bash
# samples/dcgan/cli_test.sh — cudl-dcgan's command line: usage errors for bad flags (before any
# work), then a tiny run on the CPU (a few images, small models, a small score) whose printed lines
# and files are checked, and a resume from its checkpoint. Usage: cli_test.sh CUDL_DCGAN DATA_DIR
set -uo pipefail
source "$(dirname "$(realpath "$0")")/../common/cli_test_lib.sh" "$@"  # bin, data, fail, expect; cd "$work"

has() {  # text the last run's output must contain
  [[ $out == *"$1"* ]] || { echo "FAIL: no '$1' in the output: $out"; fail=1; }
}
png_side() {  # width of a PNG (0 when the file is not a PNG)
  python3 -c "
import struct, sys
b = open(sys.argv[1], 'rb').read(24)
print(struct.unpack('>I', b[16:20])[0] if b[:8] == b'\x89PNG\r\n\x1a\n' and b[12:16] == b'IHDR' else 0)" "$1"
}

expect 0 "usage: cudl-dcgan" --help
has "--score-samples N"
expect 2 "unknown option '--steps'" --steps 3
expect 2 "unexpected argument 'train'" train
expect 2 "option --epochs needs a value" --epochs
expect 2 "--epochs needs an integer in [0, 1000000], got 'two'" --epochs two
expect 2 "--width needs an integer in [1, 4096], got '0'" --width 0
expect 2 "--d-width needs an integer in [1, 4096], got '0'" --d-width 0
expect 2 "--batch-size needs an integer in [2, 65536], got '1'" --batch-size 1
expect 2 "--score-samples needs an integer in [1, 1000000], got '0'" --score-samples 0
expect 2 "--lr needs a positive number" --lr -1
expect 2 "--smooth needs a positive number" --smooth 2
expect 2 "--device must be auto, cuda or cpu, got 'tpu'" --device tpu
expect 2 "--precision must be f32, tf32, bf16 or f16, got 'fp8'" --precision fp8
# Unwritable outputs are reported before the data is read or anything trains.
expect 1 "--csv /nonexistent/l.csv: cannot write there" --csv /nonexistent/l.csv
expect 1 "--grids /nonexistent/dcgan-epoch-1.png: cannot write there" --grids /nonexistent
expect 1 "--save /nonexistent/g.disc.safetensors: cannot write there" --save /nonexistent/g
expect 1 "fetch the data with: scripts/fetch-mnist.sh" --data "$work/no-mnist" --device cpu

if [[ ! -f $data/train-images-idx3-ubyte && ! -f $data/train-images-idx3-ubyte.gz ]]; then
  echo "skipped the training runs: no MNIST in $data (scripts/fetch-mnist.sh)"
  exit $((fail ? 1 : 77))
fi
expect 2 "--batch-size 32 is larger than the 10 training images" --data "$data" --limit 10 --device cpu

# Two tiny epochs: 96 images, batches of 32 (3 steps), width 4, 8 noise dims; 300 digits scored.
tiny=(--data "$data" --device cpu --limit 96 --batch-size 32 --width 4 --d-width 8 --latent 8 --log-every 2)
mkdir grids
expect 0 "mnist score " "${tiny[@]}" --epochs 2 --grids grids --csv l.csv --plot l.png --save g --score \
  --score-samples 300 --classifier clf.safetensors
has "training on 96 images, 3 steps of 32 per epoch (D on real + generated, then G)"
has "epoch 1/2 ["
has "epoch 2/2 ["
has " 3/3  d_loss "
has "samples: grids/dcgan-epoch-1.png"
has "samples: grids/dcgan-epoch-2.png"
has "losses: l.csv"
has "checkpoint: g.{disc,gan}.safetensors"
has "classifier: training the cnn of cudl-mnist for 10 epochs (saved to clf.safetensors for later runs)"
has "real MNIST test images (the ceiling): score "
grep -Eq '^mnist score [0-9]+\.[0-9]{2} \(classes covered ([0-9]|10)/10\)$' <<<"$out" ||
  { echo "FAIL: no final score line: $out"; fail=1; }
for k in 1 2; do
  side=$(png_side "grids/dcgan-epoch-$k.png")
  [[ $side == 242 ]] || { echo "FAIL: grids/dcgan-epoch-$k.png is not a 242-pixel PNG grid (width $side)"; fail=1; }
done
[[ $(head -1 l.csv) == "epoch,d_loss,g_loss,loss" && $(wc -l <l.csv) == 3 ]] ||
  { echo "FAIL: l.csv is not a header and two epochs:"; cat l.csv; fail=1; }
python3 - l.csv <<'EOF' || fail=1
import csv, math, sys
for row in csv.DictReader(open(sys.argv[1])):
    d, g, s = (float(row[k]) for k in ("d_loss", "g_loss", "loss"))
    if not (math.isfinite(d) and math.isfinite(g) and d > 0 and g > 0 and abs(s - (d + g)) < 1e-4):
        sys.exit(f"FAIL: l.csv row {row}: losses must be positive, finite, loss = d_loss + g_loss")
EOF
for f in g.disc.safetensors g.gan.safetensors clf.safetensors; do
  [[ -s $f ]] || { echo "FAIL: $f was not written"; fail=1; }
done
# One tiny epoch in bf16: both training models compiled in it (the plan report says so).
expect 0 "training: " "${tiny[@]}" --epochs 1 --precision bf16 --grids '' --csv ''
has "precision bf16 (bf16 activations"
if command -v gnuplot >/dev/null; then
  [[ $(png_side l.png) -gt 0 ]] || { echo "FAIL: the loss plot l.png was not drawn"; fail=1; }
else
  echo "note: gnuplot not installed, the plot itself was not checked"
fi

# Resume for a third epoch: the classifier is loaded, not trained again; no grids, CSV or plot.
expect 0 "resumed from g.* at epoch 2" "${tiny[@]}" --epochs 3 --resume g --grids '' --csv '' --score \
  --score-samples 300 --classifier clf.safetensors
has "epoch 3/3 ["
has "classifier: clf.safetensors (loaded)"
[[ $out == *"not comparable"* ]] && { echo "FAIL: the classifier the sample trained was called not comparable"; fail=1; }
[[ $out == *"epoch 2/3"* ]] && { echo "FAIL: the resumed run trained epoch 2 again"; fail=1; }
[[ -e grids/dcgan-epoch-3.png || -e dcgan-epoch-3.png ]] && { echo "FAIL: --grids '' still wrote a grid"; fail=1; }
expect 1 "g-missing.disc.safetensors" "${tiny[@]}" --resume g-missing --grids ''

# A cached classifier trained for another number of epochs (its checkpoint's epoch rewritten to 4):
# used, and said to be incomparable with the documented scores.
python3 - <<'EOF'
b = bytearray(open('clf.safetensors', 'rb').read())
i = b.find(b'"epoch":"10"')
assert i > 0, 'no epoch 10 in the classifier checkpoint'
b[i:i + 12] = b'"epoch":"4" '
open('stale.safetensors', 'wb').write(b)
EOF
expect 0 "classifier: it was trained 4 epochs, not 10: its scores are not comparable" "${tiny[@]}" --epochs 0 \
  --grids '' --csv '' --plot '' --score --score-samples 50 --classifier stale.safetensors
exit $fail
