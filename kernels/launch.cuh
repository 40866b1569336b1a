// kernels/launch.cuh — the build-mode switch under every kernel launch: nvcc or the emulator.
// Kernel files launch with cudl::kernels::launch<kernel>(...) (kernels/common.cuh), which checks
// the launch and names the kernel; this header holds only the raw, unchecked forms beneath it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#if !defined(__CUDACC__)  // emulated: compiled as C++ against tests/emu/include
#include "emu/kernel.hpp"
#endif

namespace cudl::kernels::detail {

/// Queues Kernel<<<grid, block, shared_bytes, stream>>>(args...) under nvcc, or on the emulator's
/// stream (arguments copied at launch as the driver does) in the emulated build. Unchecked.
template <auto Kernel, typename... Args>
void raw_launch(const char* name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, Args&&... args) {
#if defined(__CUDACC__)
  (void)name;
  Kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
#else
  ::cudl_emu::launcher(Kernel, name, grid, block, shared_bytes, stream)(std::forward<Args>(args)...);
#endif
}

}  // namespace cudl::kernels::detail

#if defined(__CUDACC__)

/// Unchecked launch for the emulator's own tests (tests/emu), which test the launch errors
/// themselves; kernels/ uses cudl::kernels::launch.
#define CUDL_LAUNCH(kernel, grid, block, shared_bytes, stream) kernel<<<(grid), (block), (shared_bytes), (stream)>>>
#define CUDL_DYNAMIC_SHARED(type, name) extern __shared__ type name[]

#else

#define CUDL_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  ::cudl_emu::launcher(kernel, #kernel, (grid), (block), (shared_bytes), (stream))
#define CUDL_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::cudl_emu::dynamic_shared_memory())

#endif
