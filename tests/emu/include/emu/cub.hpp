// emu/cub.hpp — the emulated subset of CUB that kernels/ uses, in place of <cub/...> when the
// kernels are compiled against the emulator: cub::DeviceRadixSort::SortPairs with pointer
// arguments and unsigned integer keys. Semantics and strictness: tests/emu/src/cub.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace cudl_emu {

/// Type-erased SortPairs (tests/emu/src/cub.cpp): keys are unsigned integers of key_bytes bytes.
cudaError_t cub_radix_sort_pairs(void* d_temp_storage, size_t& temp_storage_bytes, const void* d_keys_in,
                                 void* d_keys_out, const void* d_values_in, void* d_values_out, int64_t num_items,
                                 int key_bytes, int value_bytes, int begin_bit, int end_bit, cudaStream_t stream);

}  // namespace cudl_emu

namespace cub {

struct DeviceRadixSort {
  /// As CUB documents it: sorts (key, value) pairs by the key bits [begin_bit, end_bit), stably,
  /// into the output arrays. d_temp_storage == nullptr: writes the temporary storage it needs to
  /// temp_storage_bytes and does nothing else. Work is queued on `stream`.
  template <typename KeyT, typename ValueT, typename NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const KeyT* d_keys_in,
                               KeyT* d_keys_out, const ValueT* d_values_in, ValueT* d_values_out, NumItemsT num_items,
                               int begin_bit = 0, int end_bit = sizeof(KeyT) * 8, cudaStream_t stream = 0) {
    static_assert(std::is_integral<KeyT>::value && std::is_unsigned<KeyT>::value,
                  "the emulated cub::DeviceRadixSort::SortPairs takes unsigned integer keys");
    static_assert(std::is_trivially_copyable<ValueT>::value, "values must be trivially copyable");
    return cudl_emu::cub_radix_sort_pairs(d_temp_storage, temp_storage_bytes, d_keys_in, d_keys_out, d_values_in,
                                          d_values_out, static_cast<int64_t>(num_items), sizeof(KeyT),
                                          sizeof(ValueT), begin_bit, end_bit, stream);
  }
};

}  // namespace cub
