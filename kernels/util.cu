// kernels/util.cu — graph utility kernels: device-side metric accumulation and step counters,
// so a captured training step needs no host round trip.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <cstdint>
#include <cuda_runtime.h>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "ops/util.hpp"

namespace cudl::kernels {

template <typename T>
static __global__ void accumulate_kernel(float* __restrict__ acc, const T* __restrict__ x, float scale, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    acc[i] += scale * static_cast<float>(x[i]);
}

template <typename T>
static __global__ void increment_kernel(T* __restrict__ x, T delta, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] += delta;
}

static __global__ void batch_indices_kernel(int32_t* __restrict__ idx, const int32_t* __restrict__ perm,
                                            const int64_t* __restrict__ cursor, int64_t n, int64_t b) {
  const int64_t start = *cursor;
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < b; j += (int64_t)gridDim.x * blockDim.x)
    idx[j] = perm[(start + j) % n];
}

/// idx[j] = perm[(*cursor + j) % n] for j < b; the cursor is read on the device.
void batch_indices_cuda(int32_t* idx, const int32_t* perm, const int64_t* cursor, int64_t n, int64_t b,
                        cudaStream_t stream) {
  if (b == 0) return;
  const int block = 256;
  launch<batch_indices_kernel>(grid_for(b, block), block, 0, stream, idx, perm, cursor, n, b);
}

/// acc[i] += scale * x[i] for n elements; x_dtype: 0 f32, 1 i32, 2 i64, 3 u8.
void accumulate_cuda(float* acc, const void* x, int x_dtype, float scale, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int block = 256;
  const unsigned grid = grid_for(n, block);
  switch (x_dtype) {
    case 0:
      launch<accumulate_kernel<float>>(grid, block, 0, stream, acc, static_cast<const float*>(x), scale, n);
      break;
    case 1:
      launch<accumulate_kernel<int32_t>>(grid, block, 0, stream, acc, static_cast<const int32_t*>(x), scale, n);
      break;
    case 2:
      launch<accumulate_kernel<int64_t>>(grid, block, 0, stream, acc, static_cast<const int64_t*>(x), scale, n);
      break;
    default:
      launch<accumulate_kernel<uint8_t>>(grid, block, 0, stream, acc, static_cast<const uint8_t*>(x), scale, n);
      break;
  }
}

/// x[i] += delta for n elements of f32, i32 or i64 (dtype 0, 1, 2).
void increment_cuda(void* x, int dtype, double delta, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int block = 256;
  const unsigned grid = grid_for(n, block);
  switch (dtype) {
    case 0:
      launch<increment_kernel<float>>(grid, block, 0, stream, static_cast<float*>(x), (float)delta, n);
      break;
    case 1:
      launch<increment_kernel<int32_t>>(grid, block, 0, stream, static_cast<int32_t*>(x), (int32_t)delta, n);
      break;
    default:
      launch<increment_kernel<int64_t>>(grid, block, 0, stream, static_cast<int64_t*>(x), (int64_t)delta, n);
      break;
  }
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/util.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_util_ops puts them into the CUDA op table.

namespace cudl {
namespace {

// The kernels' dtype codes (above); the shared checks have rejected anything else.
int code_of(DType t) {
  switch (t) {
    case DType::f32: return 0;
    case DType::i32: return 1;
    case DType::i64: return 2;
    default: return 3;  // u8
  }
}

void cuda_accumulate(const OpCall& c) {
  const ops::AccumulateArgs p = ops::check_accumulate_call(c);
  const TensorView& x = p.x;
  kernels::accumulate_cuda(p.acc.as<float>(), x.data, code_of(x.dtype), p.scale,
                           x.numel(), cuda_context(c).stream());
}

void cuda_increment(const OpCall& c) {
  const ops::IncrementArgs p = ops::check_increment_call(c);
  const TensorView& x = p.x;
  const int code = code_of(x.dtype);
  kernels::increment_cuda(x.data, code, code == 0 ? p.attrs.step : static_cast<double>(p.attrs.int_step), x.numel(),
                          cuda_context(c).stream());
}

void cuda_batch_indices(const OpCall& c) {
  const ops::BatchIndicesArgs p = ops::check_batch_indices_call(c);
  const TensorView& perm = p.perm;
  const TensorView& cursor = p.cursor;
  const TensorView& idx = p.idx;
  kernels::batch_indices_cuda(idx.as<int32_t>(), perm.as<int32_t>(), cursor.as<int64_t>(), perm.numel(), idx.numel(),
                              cuda_context(c).stream());
}

}  // namespace

void register_cuda_util_ops(OpTable& t) {
  t.add(OpKind::Accumulate, cuda_accumulate);
  t.add(OpKind::Increment, cuda_increment);
  t.add(OpKind::BatchIndices, cuda_batch_indices);
}

}  // namespace cudl
