// memory/allocator.hpp — where tensor storage comes from: aligned host memory for the CPU,
// the device's caching pool (memory/caching_allocator.hpp) for CUDA.
#pragma once

#include <cstddef>
#include <memory>

#include "cudl/device.hpp"

namespace cudl::memory {

class CachingAllocator;
struct RawAllocator;

/// Allocates `nbytes` on `device` (64-byte aligned on the CPU, 256 on CUDA). Never returns null.
void* allocate(Device device, size_t nbytes);
/// Returns memory obtained from allocate() with the same device and size.
void deallocate(Device device, void* ptr, size_t nbytes);

/// Copies `nbytes` between any two devices. Into host memory: complete at return. Between
/// device memory and from pageable host memory: ordered on the device's context stream, without
/// waiting (the host source may be reused at once); from pinned host memory: complete at return.
void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t nbytes);
/// Sets `count` elements of `element_bytes` (1, 2, 4 or 8) at dst to the bytes at `element`; on
/// CUDA one kernel ordered on the context stream (no host buffer, no wait).
void fill_bytes(Device device, void* dst, const void* element, size_t element_bytes, size_t count);

// The CUDA side, in cuda/device_memory.cpp (in a build without CUDA, backend/cuda_absent.cpp
// defines each to throw "built without CUDA", and make_cuda_pinned_raw_allocator to return null).
/// Pool allocation ordered on the device's context stream.
void* cuda_allocate(int device_index, size_t nbytes);
void cuda_deallocate(int device_index, void* ptr, size_t nbytes);
/// copy_bytes where at least one side is a CUDA device, on that device's context stream.
void cuda_copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t nbytes);
/// Copies nbytes of memory cudl does not own on CUDA device `device_index` into dst (on the same
/// device): waits for the whole device first (the owner's queued work on any stream) and for the
/// copy after (the owner may free its memory on return).
void cuda_copy_foreign(int device_index, void* dst, const void* src, size_t nbytes);
/// fill_bytes on CUDA device `device_index`.
void cuda_fill_bytes(int device_index, void* dst, const void* element, size_t element_bytes, size_t count);
/// The caching pool of CUDA device `device_index` (created on first use; throws when absent).
CachingAllocator& cuda_pool(int device_index);
/// Notes that work queued on `stream` (a cudaStream_t) uses the block at `ptr` of that device's
/// pool, so it is not reused before that work has completed (see CachingAllocator::record_stream).
void cuda_record_stream(int device_index, void* ptr, void* stream);
/// cudaMallocHost-backed raw allocator for the pinned pool (nullptr when no CUDA device exists).
std::unique_ptr<RawAllocator> make_cuda_pinned_raw_allocator();
/// True when `ptr` is page-locked host memory the CUDA runtime knows (cudaMallocHost).
bool cuda_is_pinned_host(const void* ptr);

/// The pinned host pool (memory/pinned.hpp); plain aligned host memory when there is no CUDA device.
CachingAllocator& pinned_pool();

}  // namespace cudl::memory
