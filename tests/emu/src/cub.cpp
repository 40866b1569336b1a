// tests/emu/src/cub.cpp — the emulated CUB subset (emu/cub.hpp): cub::DeviceRadixSort::SortPairs
// from its documented semantics, as strict as the emulated cuBLAS/cuDNN calls.
//
// - d_temp_storage == nullptr: the required size is written to temp_storage_bytes and no work is
//   done (nothing is queued). The emulated size is what an LSD radix sort's double buffers take,
//   2 * num_items * (key + value bytes), rounded up to 256, plus 256 bytes of digit histograms.
// - A d_temp_storage smaller than that (temp_storage_bytes too small) returns cudaErrorInvalidValue,
//   as CUB's AliasTemporaries does; so do num_items < 0, a bit range outside [0, key bits] or
//   with end_bit < begin_bit, and overlapping input/output ranges ("in-place operations are not
//   supported"). num_items == 0 or begin_bit == end_bit with no items: success, nothing queued.
// - The sort is queued on `stream` (WorkKind::Library, counted as a library call): it runs in
//   stream order, is recorded into a graph while the stream captures, and when it runs it checks
//   that every range (inputs, outputs, the temporary storage) lies inside one device allocation
//   (else the sticky cudaErrorIllegalAddress naming the call). It sorts stably by the key bits
//   [begin_bit, end_bit) through the temporary storage, then fills that storage with 0xFF bytes,
//   so a caller that keeps data there finds out.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "emu/cub.hpp"
#include "emu/runtime.hpp"

namespace cudl_emu {

namespace {

constexpr const char* kSortPairs = "cub::DeviceRadixSort::SortPairs";

size_t required_bytes(int64_t n, int key_bytes, int value_bytes) {
  const size_t buffers = 2 * static_cast<size_t>(n) * static_cast<size_t>(key_bytes + value_bytes);
  return (buffers + 255) / 256 * 256 + 256;
}

bool overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && pa < pb + b_bytes && pb < pa + a_bytes;
}

bool in_device(const char* what, const void* p, size_t bytes) {
  if (bytes == 0 || (p && is_device_range(p, bytes))) return true;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  record_error(cudaErrorIllegalAddress,
               std::string(kSortPairs) + ": " + what + " [" + buf + ", +" + std::to_string(bytes) +
                   " bytes) is not inside one device allocation",
               true);
  return false;
}

uint64_t load_key(const unsigned char* p, int key_bytes) {
  uint64_t k = 0;
  std::memcpy(&k, p, static_cast<size_t>(key_bytes));  // little-endian host
  return k;
}

}  // namespace

cudaError_t cub_radix_sort_pairs(void* d_temp_storage, size_t& temp_storage_bytes, const void* d_keys_in,
                                 void* d_keys_out, const void* d_values_in, void* d_values_out, int64_t num_items,
                                 int key_bytes, int value_bytes, int begin_bit, int end_bit, cudaStream_t stream) {
  if (num_items < 0) return cudaErrorInvalidValue;
  const size_t need = required_bytes(num_items, key_bytes, value_bytes);
  if (!d_temp_storage) {
    temp_storage_bytes = need;
    return cudaSuccess;
  }
  if (temp_storage_bytes < need) return cudaErrorInvalidValue;
  if (begin_bit < 0 || end_bit > 8 * key_bytes || end_bit < begin_bit) return cudaErrorInvalidValue;
  if (num_items == 0) return cudaSuccess;
  const size_t kb = static_cast<size_t>(num_items) * key_bytes, vb = static_cast<size_t>(num_items) * value_bytes;
  const void* ranges[] = {d_keys_in, d_keys_out, d_values_in, d_values_out};
  const size_t sizes[] = {kb, kb, vb, vb};
  for (int i = 0; i < 4; ++i)
    for (int j = i + 1; j < 4; ++j)
      if (overlap(ranges[i], sizes[i], ranges[j], sizes[j])) return cudaErrorInvalidValue;
  const size_t temp_bytes = temp_storage_bytes;
  return enqueue(stream, WorkKind::Library, kSortPairs, [=] {
    WorkScope scope(kSortPairs);
    if (!in_device("d_keys_in", d_keys_in, kb) || !in_device("d_keys_out", d_keys_out, kb) ||
        !in_device("d_values_in", d_values_in, vb) || !in_device("d_values_out", d_values_out, vb) ||
        !in_device("d_temp_storage", d_temp_storage, temp_bytes))
      return;
    // Stage the pairs in the temporary storage (the sort's double buffer), then sort stably.
    auto* keys = static_cast<unsigned char*>(d_temp_storage);
    auto* vals = keys + kb;
    std::memcpy(keys, d_keys_in, kb);
    std::memcpy(vals, d_values_in, vb);
    const int bits = end_bit - begin_bit;
    const uint64_t mask = bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
    std::vector<uint64_t> digit(static_cast<size_t>(num_items));
    for (int64_t i = 0; i < num_items; ++i) digit[i] = (load_key(keys + i * key_bytes, key_bytes) >> begin_bit) & mask;
    std::vector<int64_t> order(static_cast<size_t>(num_items));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return digit[a] < digit[b]; });
    for (int64_t i = 0; i < num_items; ++i) {
      std::memcpy(static_cast<unsigned char*>(d_keys_out) + i * key_bytes, keys + order[i] * key_bytes, key_bytes);
      std::memcpy(static_cast<unsigned char*>(d_values_out) + i * value_bytes, vals + order[i] * value_bytes,
                  value_bytes);
    }
    std::memset(d_temp_storage, 0xFF, temp_bytes);
  });
}

}  // namespace cudl_emu
