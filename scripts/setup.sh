#!/usr/bin/env bash
# scripts/setup.sh — installs what a fresh machine lacks to build and test cudl (Debian packages).
# The CUDA 13 toolkit (nvcc, cuBLAS/cuBLASLt, cuDNN 9) is expected at /usr/local/cuda; without it
# cudl builds its CPU reference backend only.
set -euo pipefail

packages=(cmake g++ make pkg-config ccache valgrind libgtest-dev libgmock-dev libbenchmark-dev libboost-context-dev
          libopenblas-dev zlib1g-dev gnuplot-nox python3-dev pybind11-dev python3-numpy python3-pytest
          wamerican)  # wamerican: the word list cudl-charlm trains on
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: CUDA toolkit: $(/usr/local/cuda/bin/nvcc --version | tail -n 2 | head -n 1)"
else
  echo "setup: no CUDA toolkit at /usr/local/cuda: building the CPU backend only"
fi
