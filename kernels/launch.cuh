// kernels/launch.cuh — the one kernel-launch form of the project, for nvcc and for the emulator.
// Under nvcc: kernel<<<grid, block, shared, stream>>>. Otherwise (g++ against tests/emu): the
// emulator's launcher, which copies the arguments and queues the grid on the emulated stream.
#pragma once

#include <cuda_runtime.h>

#if defined(__CUDACC__)

#define CUDL_LAUNCH(kernel, grid, block, shared_bytes, stream) kernel<<<(grid), (block), (shared_bytes), (stream)>>>
#define CUDL_DYNAMIC_SHARED(type, name) extern __shared__ type name[]

#else  // emulated: compiled as C++ against tests/emu/include

#include "emu/kernel.hpp"

#define CUDL_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  ::cudl_emu::launcher(kernel, #kernel, (grid), (block), (shared_bytes), (stream))
#define CUDL_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::cudl_emu::dynamic_shared_memory())

#endif
