// memory/allocator.cpp — storage allocation by device: aligned host memory, or the CUDA pool.
#include "memory/allocator.hpp"

#include <cstdlib>
#include <cstring>

#include "cudl/error.hpp"

namespace cudl::memory {

void* allocate(Device device, size_t nbytes) {
  if (device.is_cpu()) {
    size_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (!p) CUDL_FAIL("out of host memory allocating ", nbytes, " bytes");
    return p;
  }
  if (!built_with_cuda()) CUDL_FAIL("cannot allocate on ", device, ": cudl was built without the CUDA backend");
  return cuda_allocate(device.index(), nbytes);
}

void deallocate(Device device, void* ptr, size_t nbytes) {
  if (!ptr) return;
  if (device.is_cpu()) {
    std::free(ptr);
    return;
  }
  cuda_deallocate(device.index(), ptr, nbytes);
}

void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  if (!built_with_cuda())
    CUDL_FAIL("cannot copy between ", src_device, " and ", dst_device, ": cudl was built without CUDA");
  cuda_copy_bytes(dst_device, dst, src_device, src, nbytes);
}

void fill_bytes(Device device, void* dst, const void* element, size_t element_bytes, size_t count) {
  if (element_bytes != 1 && element_bytes != 2 && element_bytes != 4 && element_bytes != 8)
    CUDL_FAIL("fill_bytes: elements of ", element_bytes, " bytes (1, 2, 4 or 8)");
  if (count == 0) return;
  if (device.is_cpu()) {
    for (size_t i = 0; i < count; ++i) std::memcpy(static_cast<char*>(dst) + i * element_bytes, element, element_bytes);
    return;
  }
  if (!built_with_cuda()) CUDL_FAIL("cannot fill memory on ", device, ": cudl was built without CUDA");
  cuda_fill_bytes(device.index(), dst, element, element_bytes, count);
}

}  // namespace cudl::memory
