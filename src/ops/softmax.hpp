// ops/softmax.hpp — argument checks of the softmax op family (Softmax, LogSoftmax and their
// backward), shared by the CPU reference and the CUDA backend.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- softmax (kernels/softmax.cu, src/cpu/softmax.cpp), along the last axis ---
// Softmax         in: x (..., C)     out: y
// SoftmaxBackward in: y, dy          out: dx
// LogSoftmax      in: x              out: y
// LogSoftmaxBackward    in: y, dy     out: dx

namespace cudl {

/// Softmax along the last axis: x (rows, cols) with rows = numel / cols.
struct SoftmaxProblem {
  int64_t rows = 0, cols = 0;
};

/// Forward: in x, out y (same shape). Backward: in y, dy, out dx (same shape). All f32, rank >= 1.
SoftmaxProblem check_softmax_call(const OpCall& call);

}  // namespace cudl
