// cpu/conv.hpp — 2-D convolution geometry shared by the CPU reference and the CUDA backend:
// attribute decoding, output-size arithmetic and the argument checks every conv op runs first.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

namespace cudl {

/// Sizes of one NCHW convolution: x (N, C, H, W), w (K, C/groups, R, S), y (N, K, P, Q).
struct Conv2dGeometry {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t K = 0, R = 0, S = 0;         // filter
  int64_t P = 0, Q = 0;                // output
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  bool has_bias = false;
  bool relu = false;  // Conv2d only: i[7] == Epilogue::Relu

  int64_t Cg() const { return C / groups; }  // input channels per group
  int64_t Kg() const { return K / groups; }  // output channels per group
  Shape x_shape() const { return Shape{N, C, H, W}; }
  Shape w_shape() const { return Shape{K, C / groups, R, S}; }
  Shape y_shape() const { return Shape{N, K, P, Q}; }
};

/// Decodes the Conv2d attribute slots (stride, padding, dilation, groups, epilogue) and checks
/// them against x and w shapes; throws cudl::Error naming the op, the label and both shapes
/// (non-4-D tensors, channels not divisible by groups, weight shape mismatch, output size <= 0).
Conv2dGeometry conv2d_geometry(const OpCall& call, const Shape& x, const Shape& w);

/// Validates a whole Conv2d / Conv2dBackwardData / Conv2dBackwardFilter / Conv2dBackwardBias call
/// (tensor counts, presence, f32 dtype, every shape) and returns its geometry. For
/// Conv2dBackwardBias only N, K, P, Q are filled in.
Conv2dGeometry check_conv2d_call(const OpCall& call);

}  // namespace cudl
