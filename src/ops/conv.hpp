// ops/conv.hpp — the 2-D convolution family's contract: typed attributes, geometry (output-size
// arithmetic), named arguments and the checks the CPU reference and the CUDA backend run first.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- convolution (src/cuda/conv.cpp via cuDNN graph API + im2col fallback, src/cpu/conv.cpp) ---
// Conv2d          in: x (N, C, H, W), w (K, C/g, R, S), [bias (K)]   out: y (N, K, P, Q)
//                   i[0..1]=stride h,w  i[2..3]=pad h,w  i[4..5]=dilation h,w  i[6]=groups
//                   i[7]=Epilogue (None, Relu)
// Conv2dBackwardData    in: dy, w       out: dx (shape of x);  attrs as Conv2d (epilogue ignored)
// Conv2dBackwardFilter  in: x, dy       out: dw;  attrs as Conv2d
// Conv2dBackwardBias    in: dy          out: db (K)
// Conv2dTranspose in: x (N, Cin, Hin, Win), w (Cin, Cout/g, R, S), [bias (Cout)]   out: y (N, Cout, Hout, Wout)
//                   the data gradient of the Conv2d that maps y's shape to x's (same attrs; epilogue
//                   must be None), plus bias. Hout = (Hin-1)*stride - 2*pad + dil*(R-1) + 1 + output
//                   padding, output padding in [0, stride) (given by y's shape; every such y is valid).

namespace cudl {
namespace ops {

/// Conv2d, Conv2dBackwardData, Conv2dBackwardFilter: i[0..1] = stride h, w; i[2..3] = padding h, w;
/// i[4..5] = dilation h, w; i[6] = groups; i[7] = epilogue (Conv2d only; the backward ops ignore it).
/// e.g. ops::Conv2dAttrs{2, 2, 1, 1, 1, 1, 1, Epilogue::Relu}.to_op_attrs().
struct Conv2dAttrs {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  Epilogue epilogue = Epilogue::None;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i = {stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, static_cast<int64_t>(epilogue)};
    return a;
  }
  static Conv2dAttrs from(const OpAttrs& a) {
    return {a.i[0], a.i[1], a.i[2], a.i[3], a.i[4], a.i[5], a.i[6], static_cast<Epilogue>(a.i[7])};
  }
};

/// Sizes of one NCHW convolution: x (N, C, H, W), w (K, C/groups, R, S), y (N, K, P, Q).
struct Conv2dGeometry {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t K = 0, R = 0, S = 0;         // filter
  int64_t P = 0, Q = 0;                // output
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  bool has_bias = false;
  bool relu = false;  // Conv2d only: epilogue == Epilogue::Relu

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

/// A validated conv call: its geometry and its tensors by name (those the op does not take are
/// undefined). Conv2d: x, w, [bias] -> y. Conv2dBackwardData: dy, w -> dx. Conv2dBackwardFilter:
/// x, dy -> dw. Conv2dBackwardBias: dy -> db. Conv2dTranspose: the geometry is that of the
/// convolution it is the data gradient of, so its input fills `dy` (N, K, P, Q), its output `dx`
/// (N, C, H, W) and its bias (C) `bias`.
struct Conv2dArgs : Conv2dGeometry {
  DType storage =
      DType::f32;            // every float tensor's dtype: f32, or bf16/f16 (ops/precision.hpp) except Conv2dTranspose
  TensorView x, w, bias, y;  // (N, C, H, W), (K, C/groups, R, S), (K) (Conv2dTranspose: (C)), (N, K, P, Q)
  TensorView dy, dx, dw, db;
};

/// Validates a whole Conv2d / Conv2dBackwardData / Conv2dBackwardFilter / Conv2dBackwardBias / Conv2dTranspose call
/// (tensor counts, presence, dtypes: one storage type per call, f32 for Conv2dTranspose, every
/// shape) and returns its geometry. For
/// Conv2dBackwardBias only N, K, P, Q are filled in.
Conv2dArgs check_conv2d_call(const OpCall& call);

/// Output size of a transposed convolution along one axis: (in - 1)*stride - 2*pad + dil*(k - 1) + 1
/// + output_padding (the input size of the convolution it transposes).
inline int64_t conv_transpose_out(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil,
                                  int64_t output_padding) {
  return (in - 1) * stride - 2 * pad + dil * (k - 1) + 1 + output_padding;
}

}  // namespace ops
}  // namespace cudl
