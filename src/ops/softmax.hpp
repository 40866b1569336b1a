// ops/softmax.hpp — the softmax op family's contract (Softmax, LogSoftmax and their backward): named
// arguments and the checks the CPU reference and the CUDA backend run first. No attributes.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- softmax (kernels/softmax.cu, src/cpu/softmax.cpp), along the last axis ---
// Softmax         in: x (..., C)     out: y
// SoftmaxBackward in: y, dy          out: dx
// LogSoftmax      in: x              out: y
// LogSoftmaxBackward    in: y, dy     out: dx

namespace cudl {
namespace ops {

/// Softmax along the last axis: x (rows, cols) with rows = numel / cols.
struct SoftmaxArgs {
  DType storage = DType::f32;  // every tensor: f32, bf16 or f16 (ops/precision.hpp); the math is fp32
  TensorView x, y;       // forward: x -> y
  TensorView dy, dx;     // backward: y (the forward output), dy -> dx
  int64_t rows = 0, cols = 0;
};

/// Forward: in x, out y (same shape). Backward: in y, dy, out dx (same shape). Rank >= 1; every
/// tensor of one storage type (f32, bf16 or f16).
SoftmaxArgs check_softmax_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
