#!/usr/bin/env bash
# scripts/train-mnist.sh — the main command: set up, fetch MNIST, build, train cudl-mnist.
# The sample uses the GPU when one works, otherwise the CPU reference backend (and says why).
# Usage: scripts/train-mnist.sh [cudl-mnist options...]   (default: --model mlp --epochs 5)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${CUDL_BUILD_DIR:-build}

scripts/setup.sh
# gnuplot draws the sample's training curves (PNG); without it the sample says so and writes the CSV.
if ! command -v gnuplot >/dev/null 2>&1; then
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  install_gnuplot() { DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq gnuplot-nox >/dev/null 2>&1; }
  install_gnuplot || { "${sudo_cmd[@]}" apt-get update -qq >/dev/null 2>&1 && install_gnuplot; } ||
    echo "train-mnist: gnuplot-nox could not be installed; the plot will be skipped"
fi
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH=/usr/local/cuda/bin:$PATH
dataset=mnist
for ((i = 1; i <= $#; ++i)); do
  [[ ${!i} == --dataset ]] && { j=$((i + 1)); dataset=${!j}; }
done
scripts/fetch-mnist.sh --dataset "$dataset"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target cudl-mnist
if (($# == 0)); then set -- --model mlp --epochs 5; fi
exec "$build/samples/cudl-mnist" "$@"
