#!/usr/bin/env bash
# scripts/consumer-check.sh — installs a built cudl into a temporary prefix, checks what was
# installed (SONAME, exported symbols, headers free of CUDA includes), then builds and runs
# samples/consumer against it twice: with find_package(cudl) and with pkg-config.
# Usage: scripts/consumer-check.sh BUILD_DIR   (a configured cudl build; the library is built if needed)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: scripts/consumer-check.sh BUILD_DIR}" && pwd)
jobs=${CUDL_JOBS:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cudl-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "consumer-check: FAILED: $*" >&2; exit 1; }

cmake --build "$build" --target cudl -j"$jobs" >"$tmp/lib.log" 2>&1 || { cat "$tmp/lib.log"; fail "building libcudl"; }
cmake --install "$build" --prefix "$prefix" >/dev/null
lib=$(find "$prefix" -name 'libcudl.so.0' | head -n 1)
[[ -n $lib ]] || fail "no libcudl.so.0 under $prefix"
libdir=$(dirname "$lib")
for f in "$libdir/libcudl.so" "$libdir/cmake/cudl/cudlConfig.cmake" "$libdir/cmake/cudl/cudlConfigVersion.cmake" \
         "$libdir/pkgconfig/cudl.pc" "$prefix/include/cudl/cudl.hpp"; do
  [[ -e $f ]] || fail "missing $f"
done

# The library: SONAME, exports limited to the public API, public headers without CUDA headers.
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == libcudl.so.0 ]] || fail "SONAME is '$soname', expected libcudl.so.0"
exports=$(nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | sed 's/@.*//')
# Everything exported lives in namespace cudl: functions, static members, type info, vtables.
stray=$(grep -vE '^_Z(NK?|TIN|TSN|TVN|TTN)4cudl' <<<"$exports" || true)
[[ -z $stray ]] || fail "libcudl.so exports symbols outside the cudl API:"$'\n'"$(head -n 20 <<<"$stray" | c++filt)"
echo "consumer-check: $lib: SONAME $soname, $(wc -l <<<"$exports") exported cudl symbols"
if grep -rnE '#[[:space:]]*include[[:space:]]*[<"](cuda|cublas|cudnn|nvtx)' "$prefix/include"; then
  fail "installed public headers include CUDA headers"
fi

check_output() {  # $1: what ran, $2: its output
  grep -q '^device: cpu' <<<"$2" || fail "$1: no 'cpu' device line"
  grep -qE '^device: (cuda:[0-9]+: |no CUDA device: )' <<<"$2" || fail "$1: neither a CUDA device nor 'no CUDA device:'"
  grep -q 'caught cudl::Error' <<<"$2" || fail "$1: cudl::Error was not caught across the library boundary"
}

# 1. CMake: find_package(cudl REQUIRED) + cudl::cudl.
cmake -S "$root/samples/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
      >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log"; fail "configuring samples/consumer"; }
cmake --build "$tmp/consumer" -j"$jobs" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; fail "building samples/consumer"; }
out=$("$tmp/consumer/cudl_consumer") || { echo "$out"; fail "cudl_consumer exited non-zero"; }
echo "$out" | sed 's/^/  | /'
check_output "cudl_consumer (CMake)" "$out"

# 2. pkg-config.
export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
flags=$(pkg-config --cflags --libs cudl) || fail "pkg-config --cflags --libs cudl"
[[ $(pkg-config --modversion cudl) == "$(sed -n 's/^Version: //p' "$libdir/pkgconfig/cudl.pc")" ]] || fail "pkg-config version"
echo "consumer-check: pkg-config --cflags --libs cudl: $flags"
# shellcheck disable=SC2086
c++ -std=c++17 "$root/samples/consumer/main.cpp" -o "$tmp/pc_consumer" $flags || fail "building with pkg-config flags"
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/pc_consumer") || { echo "$out"; fail "pc_consumer exited non-zero"; }
check_output "pc_consumer (pkg-config)" "$out"

echo "consumer-check: OK (installed, found with find_package and pkg-config, linked and ran)"
