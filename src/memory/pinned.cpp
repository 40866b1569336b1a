// memory/pinned.cpp — the pinned host pool: a caching pool over cudaMallocHost when a CUDA device
// exists, over aligned host memory otherwise (then "pinned" buffers are ordinary host memory).
#include "memory/pinned.hpp"

#include <cstdio>
#include <cstdlib>

#include "cudl/device.hpp"
#include "cudl/error.hpp"
#include "memory/allocator.hpp"
#include "memory/caching_allocator.hpp"

namespace cudl::memory {

namespace {
/// Aligned host memory; there is no device work, so every event is complete at once.
class HostRawAllocator : public RawAllocator {
 public:
  void* alloc(size_t bytes) override { return std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096); }
  void free(void* ptr) override { std::free(ptr); }
  EventHandle create_event() override { return this; }
  void record_event(EventHandle, StreamHandle) override {}
  bool query_event(EventHandle) override { return true; }
  void synchronize_event(EventHandle) override {}
  void destroy_event(EventHandle) override {}
  std::string name() const override { return "host (no CUDA device, not pinned)"; }
  const char* alloc_call() const override { return "aligned_alloc"; }
  const char* free_call() const override { return "free"; }
};
}  // namespace

CachingAllocator& pinned_pool() {
  // Never destroyed: buffers may be released during static destruction.
  static CachingAllocator* pool = [] {
    std::unique_ptr<RawAllocator> raw = make_cuda_pinned_raw_allocator();
    if (!raw) raw = std::make_unique<HostRawAllocator>();
    return new CachingAllocator(std::move(raw));
  }();
  return *pool;
}

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) { data_ = pinned_pool().allocate(bytes, nullptr); }

PinnedBuffer::~PinnedBuffer() { reset(); }

void PinnedBuffer::record_stream(void* stream) {
  if (!data_) CUDL_FAIL("PinnedBuffer::record_stream: the buffer is empty");
  pinned_pool().record_stream(data_, stream);
}

void PinnedBuffer::reset() noexcept {
  if (!data_) return;
  try {
    pinned_pool().free(data_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cudl: error freeing a pinned buffer of %zu bytes: %s\n", bytes_, e.what());
  }
  data_ = nullptr;
  bytes_ = 0;
}

}  // namespace cudl::memory
