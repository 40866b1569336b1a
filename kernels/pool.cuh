// kernels/pool.cuh — host launchers of the pooling kernels: 2-D max/average pooling forward and
// deterministic gather-form backward, global average pooling.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/storage.cuh"

namespace cudl::kernels {

/// Window geometry: x (n, c, h, w) -> y (n, c, p, q), kernel (kh, kw), stride (sh, sw), padding (ph, pw).
struct Pool2dShape {
  int64_t n, c, h, w, p, q;
  int kh, kw, sh, sw, ph, pw;
};

/// y = window max (first maximum in row-major window order; NaN counts as the maximum);
/// argmax (nullable) = flat index into h * w. x and y of storage `type` (the max is exact in any).
void max_pool2d_cuda(const void* x, void* y, int32_t* argmax, Storage type, const Pool2dShape& s, cudaStream_t stream);
/// dx[i] = sum of dy over the windows whose argmax is i (one thread per input element, no atomics);
/// x, y, dy, dx of storage `type`, the sum in fp32 rounded once.
void max_pool2d_backward_cuda(const void* x, const void* y, const void* dy, void* dx, Storage type,
                              const Pool2dShape& s, cudaStream_t stream);
/// y = window sum / (kh * kw) (padding counts as zeros). x, y (dy, dx) of storage `type`: the sums in
/// fp32, each result rounded once.
void avg_pool2d_cuda(const void* x, void* y, Storage type, const Pool2dShape& s, cudaStream_t stream);
void avg_pool2d_backward_cuda(const void* dy, void* dx, Storage type, const Pool2dShape& s, cudaStream_t stream);
/// y (images) = mean of each image of hw values; backward spreads dy / hw. Storage as above.
void global_avg_pool_cuda(const void* x, void* y, Storage type, int64_t images, int64_t hw, cudaStream_t stream);
void global_avg_pool_backward_cuda(const void* dy, void* dx, Storage type, int64_t images, int64_t hw,
                                   cudaStream_t stream);

}  // namespace cudl::kernels
