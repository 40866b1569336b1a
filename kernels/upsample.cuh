// kernels/upsample.cuh — host launchers of the upsampling kernels: nearest / bilinear 2-D upsampling
// by integer factors and its gather-form backward (deterministic, no atomics).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

/// Planes (n*c) of h x w upsampled by (sh, sw) to (h*sh) x (w*sw).
struct UpsampleShape {
  int64_t planes, h, w, sh, sw;
  int bilinear;
};

/// y (planes, h*sh, w*sw) from x (planes, h, w); one thread per output element.
void upsample2d_cuda(const float* x, float* y, const UpsampleShape& s, cudaStream_t stream);
/// dx (planes, h, w) from dy (planes, h*sh, w*sw); one thread per input element, gathering the
/// outputs that read it in row-major order (the CPU reference's order).
void upsample2d_backward_cuda(const float* dy, float* dx, const UpsampleShape& s, cudaStream_t stream);

}  // namespace cudl::kernels
