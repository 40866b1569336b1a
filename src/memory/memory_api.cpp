// memory/memory_api.cpp — the public pool functions of cudl/memory.hpp: statistics, empty_cache,
// peak reset, and their formatting.
#include <cstdio>

#include "cudl/error.hpp"
#include "cudl/memory.hpp"
#include "memory/allocator.hpp"
#include "memory/caching_allocator.hpp"

namespace cudl {

namespace {
memory::CachingAllocator& pool_of(Device device, const char* what) {
  if (!built_with_cuda()) CUDL_FAIL(what, "(", device, "): cudl was built without the CUDA backend");
  return memory::cuda_pool(device.index());
}
}  // namespace

MemoryStats memory_stats(Device device) {
  if (device.is_cpu()) return MemoryStats{};
  return pool_of(device, "memory_stats").stats();
}

void empty_cache(Device device) {
  if (device.is_cpu()) return;
  pool_of(device, "empty_cache").empty_cache();
}

void reset_peak_memory_stats(Device device) {
  if (device.is_cpu()) return;
  pool_of(device, "reset_peak_memory_stats").reset_peak_stats();
}

MemoryStats pinned_memory_stats() { return memory::pinned_pool().stats(); }
void empty_pinned_cache() { memory::pinned_pool().empty_cache(); }

std::string format_bytes(size_t bytes) {
  static const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

std::string to_string(const MemoryStats& s) {
  return "allocated " + format_bytes(s.allocated_bytes) + ", reserved " + format_bytes(s.reserved_bytes) +
         " (peak allocated " + format_bytes(s.peak_allocated_bytes) + ", peak reserved " +
         format_bytes(s.peak_reserved_bytes) + "), " + std::to_string(s.num_segments) + " segment(s), " +
         std::to_string(s.num_raw_allocs) + " raw allocs (" + std::to_string(s.num_raw_alloc_failures) + " failed), " +
         std::to_string(s.num_raw_frees) + " raw frees, " + std::to_string(s.cache_hits) + " cache hits in " +
         std::to_string(s.num_allocs) + " allocations, " + std::to_string(s.num_ooms) + " out-of-memory errors" +
         (s.caching ? "" : ", passthrough");
}

}  // namespace cudl
