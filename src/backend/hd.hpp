// backend/hd.hpp — CUDL_HD marks small functions shared by the CPU reference and the kernels:
// __host__ __device__ under nvcc, plain inline in host-only (and emulated) builds.
#pragma once

#if defined(__CUDACC__)
#define CUDL_HD __host__ __device__ __forceinline__
#else
#define CUDL_HD inline
#endif
