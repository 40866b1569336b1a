// cuda/device_memory.cpp — tensor storage on CUDA devices and blocking copies to and from them.
#include <cuda_runtime.h>

#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "memory/allocator.hpp"

namespace cudl::memory {

void* cuda_allocate(int device_index, size_t nbytes) {
  CudaContext& ctx = CudaContext::get(device_index);
  (void)ctx;
  void* p = nullptr;
  CUDL_CUDA_CHECK(cudaMalloc(&p, nbytes == 0 ? 256 : nbytes));
  return p;
}

void cuda_deallocate(int device_index, void* ptr, size_t nbytes) {
  CUDL_CUDA_CHECK(cudaFree(ptr));
}

void cuda_copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t nbytes) {
  const Device dev = dst_device.is_cuda() ? dst_device : src_device;
  CudaContext& ctx = CudaContext::get(dev.index());
  CUDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, ctx.stream()));
  ctx.synchronize();
}

}  // namespace cudl::memory
