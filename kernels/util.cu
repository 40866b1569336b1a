// kernels/util.cu — graph utility kernels: device-side metric accumulation and step counters,
// so a captured training step needs no host round trip.
#include "kernels/common.cuh"
#include "kernels/util.cuh"

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

void batch_indices_cuda(int32_t* idx, const int32_t* perm, const int64_t* cursor, int64_t n, int64_t b,
                        cudaStream_t stream) {
  if (b == 0) return;
  const int block = 256;
  launch<batch_indices_kernel>(grid_for(b, block), block, 0, stream, idx, perm, cursor, n, b);
}

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
