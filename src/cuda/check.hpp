// cuda/check.hpp — error checks for CUDA runtime, cuBLAS(Lt) and cuDNN calls, and after launches.
// Each throws cudl::Error with the expression, file, line and the library's own message.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "backend/op.hpp"
#include "cudl/error.hpp"

namespace cudl::detail {
const char* cublas_status_string(cublasStatus_t s);
/// The cuBLAS(Lt) compute type of an f32 GEMM in a call's math mode: fp32, or TF32 tensor cores.
inline cublasComputeType_t cublas_compute_type(MathMode m) {
  return m == MathMode::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}
}

#define CUDL_CUDA_CHECK(expr)                                                                 \
  do {                                                                                        \
    cudaError_t cudl_err_ = (expr);                                                           \
    if (cudl_err_ != cudaSuccess)                                                             \
      CUDL_FAIL("CUDA error: ", #expr, ": ", cudaGetErrorName(cudl_err_), ": ",              \
                cudaGetErrorString(cudl_err_));                                               \
  } while (0)

#define CUDL_CUBLAS_CHECK(expr)                                                               \
  do {                                                                                        \
    cublasStatus_t cudl_st_ = (expr);                                                         \
    if (cudl_st_ != CUBLAS_STATUS_SUCCESS)                                                    \
      CUDL_FAIL("cuBLAS error: ", #expr, ": ", ::cudl::detail::cublas_status_string(cudl_st_)); \
  } while (0)

#define CUDL_CUDNN_CHECK(expr)                                                                \
  do {                                                                                        \
    cudnnStatus_t cudl_st_ = (expr);                                                          \
    if (cudl_st_ != CUDNN_STATUS_SUCCESS)                                                     \
      CUDL_FAIL("cuDNN error: ", #expr, ": ", cudnnGetErrorString(cudl_st_));                 \
  } while (0)

/// After every kernel launch: reports bad launch configurations and sticky errors, naming the kernel.
#define CUDL_CHECK_LAUNCH(kernel_name)                                                        \
  do {                                                                                        \
    cudaError_t cudl_err_ = cudaGetLastError();                                               \
    if (cudl_err_ != cudaSuccess)                                                             \
      CUDL_FAIL("CUDA launch of ", kernel_name, " failed: ", cudaGetErrorName(cudl_err_), ": ", \
                cudaGetErrorString(cudl_err_));                                               \
  } while (0)
