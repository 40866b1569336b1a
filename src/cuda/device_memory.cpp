// cuda/device_memory.cpp — tensor storage on CUDA devices: one caching pool per device over
// cudaMalloc/cudaFree ordered on the context stream, the cudaMallocHost pinned pool, stream-ordered copies and fills.
#include <cuda_runtime.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cudl/memory.hpp"
#include "kernels/data.cuh"
#include "memory/allocator.hpp"
#include "memory/caching_allocator.hpp"

namespace cudl::memory {

namespace {

/// True when the CUDA runtime is being torn down at process exit: the driver releases everything
/// then, so pool calls made from static destructors are skipped instead of failing.
bool unloading(cudaError_t err) {
  if (err != cudaErrorCudartUnloading) return false;
  (void)cudaGetLastError();
  return true;
}

/// cudaEvent-based events shared by the device and pinned raw allocators; `device` is the device
/// the events are created on.
class CudaEvents : public RawAllocator {
 public:
  explicit CudaEvents(int device) : device_(device) {}
  EventHandle create_event() override {
    DeviceGuard guard(device_);
    cudaEvent_t e = nullptr;
    CUDL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void record_event(EventHandle e, StreamHandle s) override {
    cudaError_t err = cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(s));
    if (!unloading(err)) CUDL_CUDA_CHECK(err);
  }
  bool query_event(EventHandle e) override {
    cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(e));
    if (err == cudaErrorNotReady) return false;
    if (!unloading(err)) CUDL_CUDA_CHECK(err);
    return true;
  }
  void synchronize_event(EventHandle e) override {
    cudaError_t err = cudaEventSynchronize(static_cast<cudaEvent_t>(e));
    if (!unloading(err)) CUDL_CUDA_CHECK(err);
  }
  void destroy_event(EventHandle e) override {
    cudaError_t err = cudaEventDestroy(static_cast<cudaEvent_t>(e));
    if (!unloading(err)) CUDL_CUDA_CHECK(err);
  }

 protected:
  int device_;
};

class CudaDeviceRawAllocator : public CudaEvents {
 public:
  using CudaEvents::CudaEvents;
  void* alloc(size_t bytes) override {
    DeviceGuard guard(device_);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not sticky: clear it so later checks do not see it
      return nullptr;
    }
    if (err == cudaErrorStreamCaptureUnsupported || err == cudaErrorStreamCaptureInvalidated)
      CUDL_FAIL("memory pool ", name(), ": needs a new ", format_bytes(bytes),
                " segment (cudaMalloc) during CUDA graph ",
                "capture, where it is not allowed: allocate what the captured work uses before capturing (",
                cudaGetErrorName(err), ": ", cudaGetErrorString(err), ")");
    CUDL_CUDA_CHECK(err);
    return p;
  }
  void free(void* ptr) override {
    DeviceGuard guard(device_);
    cudaError_t err = cudaFree(ptr);
    if (!unloading(err)) CUDL_CUDA_CHECK(err);
  }
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  const char* alloc_call() const override { return "cudaMalloc"; }
  const char* free_call() const override { return "cudaFree"; }
  std::string oom_title() const override { return "CUDA out of memory on " + name(); }
  std::string memory_info() const override {
    DeviceGuard guard(device_);
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      return {};
    }
    return "device " + name() + ": " + format_bytes(total_bytes) + " total, " + format_bytes(free_bytes) +
           " free (all processes)";
  }
};

/// Pinned host memory serves every device, so its events cannot belong to one: CUDA refuses to
/// record an event on a stream of another device. Each event handle is a slot that holds a
/// cudaEvent_t of the device of the stream it was last recorded on, created there on demand.
class CudaPinnedRawAllocator : public CudaEvents {
 public:
  CudaPinnedRawAllocator() : CudaEvents(-1) {}
  EventHandle create_event() override { return new PinnedEvent; }
  void record_event(EventHandle e, StreamHandle s) override {
    auto* pe = static_cast<PinnedEvent*>(e);
    auto stream = static_cast<cudaStream_t>(s);
    int device = 0;
    cudaError_t err = cudaStreamGetDevice(stream, &device);
    if (unloading(err)) return;
    CUDL_CUDA_CHECK(err);
    if (pe->device != device) {  // destroying an event with a pending record is legal in CUDA
      if (pe->event) CudaEvents::destroy_event(pe->event);
      pe->event = nullptr;
      pe->device = -1;
      DeviceGuard guard(device);
      CUDL_CUDA_CHECK(cudaEventCreateWithFlags(&pe->event, cudaEventDisableTiming));
      pe->device = device;
    }
    CudaEvents::record_event(pe->event, s);
  }
  bool query_event(EventHandle e) override {
    auto* pe = static_cast<PinnedEvent*>(e);
    return !pe->event || CudaEvents::query_event(pe->event);
  }
  void synchronize_event(EventHandle e) override {
    auto* pe = static_cast<PinnedEvent*>(e);
    if (pe->event) CudaEvents::synchronize_event(pe->event);
  }
  void destroy_event(EventHandle e) override {
    std::unique_ptr<PinnedEvent> pe(static_cast<PinnedEvent*>(e));
    if (pe->event) CudaEvents::destroy_event(pe->event);
  }
  void* alloc(size_t bytes) override {
    void* p = nullptr;
    cudaError_t err = cudaMallocHost(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      return nullptr;
    }
    CUDL_CUDA_CHECK(err);
    return p;
  }
  void free(void* ptr) override {
    cudaError_t err = cudaFreeHost(ptr);
    if (!unloading(err)) CUDL_CUDA_CHECK(err);
  }
  std::string name() const override { return "pinned host memory"; }
  const char* alloc_call() const override { return "cudaMallocHost"; }
  const char* free_call() const override { return "cudaFreeHost"; }
  std::string oom_title() const override { return "out of pinned host memory"; }

 private:
  struct PinnedEvent {
    cudaEvent_t event = nullptr;
    int device = -1;  // device of `event`
  };
};

}  // namespace

CachingAllocator& cuda_pool(int device_index) {
  static std::mutex mu;
  // Never destroyed: tensors and contexts release memory during static destruction.
  static auto* pools = new std::vector<std::unique_ptr<CachingAllocator>>();
  std::lock_guard<std::mutex> lock(mu);
  const int n = cuda_device_count();
  if (device_index < 0 || device_index >= n)
    CUDL_FAIL("CUDA device ", device_index, " is not available (", n, " device(s)",
              n == 0 ? "; " + cuda_unavailable_reason() : std::string(), ")");
  if (pools->size() < static_cast<size_t>(n)) pools->resize(n);
  auto& pool = (*pools)[device_index];
  if (!pool) pool = std::make_unique<CachingAllocator>(std::make_unique<CudaDeviceRawAllocator>(device_index));
  return *pool;
}

std::unique_ptr<RawAllocator> make_cuda_pinned_raw_allocator() {
  if (cuda_device_count() == 0) return nullptr;
  return std::make_unique<CudaPinnedRawAllocator>();
}

bool cuda_is_pinned_host(const void* ptr) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeHost;
}

void* cuda_allocate(int device_index, size_t nbytes) {
  CudaContext& ctx = CudaContext::get(device_index);
  ContextScope scope(ctx);
  return cuda_pool(device_index).allocate(nbytes, ctx.stream());
}

void cuda_deallocate(int device_index, void* ptr, size_t nbytes) {
  if (!ptr) return;
  cuda_pool(device_index).free(ptr);
}

void cuda_record_stream(int device_index, void* ptr, void* stream) {
  cuda_pool(device_index).record_stream(ptr, stream);
}

void cuda_copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t nbytes) {
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index() != src_device.index()) {
    // Across devices: after the source device's queued work, complete before returning.
    CudaContext::get(src_device.index()).synchronize();
    CudaContext& dst_ctx = CudaContext::get(dst_device.index());
    ContextScope scope(dst_ctx);
    CUDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, dst_ctx.stream()));
    dst_ctx.synchronize();
    return;
  }
  const Device dev = dst_device.is_cuda() ? dst_device : src_device;
  CudaContext& ctx = CudaContext::get(dev.index());
  ContextScope scope(ctx);
  CUDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, ctx.stream()));
  // Device to device: stream-ordered, nothing to wait for. Host to device from pageable memory:
  // the runtime stages the source before cudaMemcpyAsync returns, so the caller may reuse it at
  // once. A pinned source is read by the DMA later, and a host destination is read by the caller:
  // those wait for the copy.
  if (dst_device.is_cpu() || (src_device.is_cpu() && cuda_is_pinned_host(src))) ctx.synchronize();
}

void cuda_copy_foreign(int device_index, void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  CudaContext& ctx = CudaContext::get(device_index);
  ContextScope scope(ctx);
  CUDL_CUDA_CHECK(cudaDeviceSynchronize());
  CUDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, ctx.stream()));
  ctx.synchronize();
}

void cuda_fill_bytes(int device_index, void* dst, const void* element, size_t element_bytes, size_t count) {
  if (count == 0) return;
  uint64_t bits = 0;
  std::memcpy(&bits, element, element_bytes);
  CudaContext& ctx = CudaContext::get(device_index);
  ContextScope scope(ctx);
  kernels::fill_cuda(dst, static_cast<int64_t>(count), static_cast<int>(element_bytes), bits, ctx.stream());
}

}  // namespace cudl::memory
