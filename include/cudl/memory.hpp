// cudl/memory.hpp — statistics and control of the memory pools behind tensor storage.
// Each CUDA device has a stream-ordered caching pool; pinned host buffers have one pool of their own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cudl/device.hpp"
#include "cudl/export.hpp"

namespace cudl {

/// Counters of one memory pool. Byte counts are of blocks as the pool hands them out (requests
/// rounded up to 512 bytes), except requested_bytes. "Raw" calls are cudaMalloc/cudaFree for a
/// device pool and cudaMallocHost/cudaFreeHost for the pinned host pool.
struct MemoryStats {
  size_t allocated_bytes = 0;           ///< in blocks currently handed out
  size_t requested_bytes = 0;           ///< what callers asked for, of blocks currently handed out
  size_t reserved_bytes = 0;            ///< held from the driver (cached segments included)
  size_t peak_allocated_bytes = 0;      ///< highest allocated_bytes since start or the last reset
  size_t peak_reserved_bytes = 0;       ///< highest reserved_bytes since start or the last reset
  uint64_t num_allocs = 0;              ///< allocation requests served
  uint64_t num_frees = 0;               ///< blocks given back by callers
  uint64_t cache_hits = 0;              ///< allocations served from cached memory, without a raw call
  uint64_t num_raw_allocs = 0;          ///< raw allocation calls made (failed ones included)
  uint64_t num_raw_frees = 0;           ///< raw free calls made
  uint64_t num_raw_alloc_failures = 0;  ///< raw allocation calls that found no memory
  uint64_t num_ooms = 0;                ///< out-of-memory errors raised
  uint64_t num_segments = 0;            ///< raw allocations currently held
  bool caching = true;                  ///< false under CUDL_ALLOCATOR=passthrough
};

/// Statistics of the pool of `device`. CPU tensors are not pooled: all zero for Device::cpu().
/// Throws cudl::Error for a CUDA device that does not exist.
CUDL_API MemoryStats memory_stats(Device device);
/// Returns cached, unused memory of `device`'s pool to the driver (no-op for the CPU).
CUDL_API void empty_cache(Device device);
/// Sets the peaks of `device`'s pool to the current values (no-op for the CPU).
CUDL_API void reset_peak_memory_stats(Device device);

/// The pinned (page-locked) host pool used for staging data to CUDA devices.
CUDL_API MemoryStats pinned_memory_stats();
CUDL_API void empty_pinned_cache();

/// "allocated 1.20 GiB, reserved 1.50 GiB (peak allocated 1.90 GiB, peak reserved 2.00 GiB), ..."
CUDL_API std::string to_string(const MemoryStats& stats);
/// "512 B", "3.00 KiB", "1.50 MiB", "2.00 GiB".
CUDL_API std::string format_bytes(size_t bytes);

}  // namespace cudl
