// cpu/loss.hpp — argument checking of the loss op family, shared by the CPU reference and the CUDA
// backend so both accept and reject exactly the same calls, with the same messages.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

namespace cudl {

/// What a validated loss call computes (see the loss section of backend/op.hpp).
struct LossProblem {
  int64_t n = 0;     // elements of pred
  int64_t rows = 0;  // N of (N, C) for the per-sample losses (CrossEntropy, SoftCrossEntropy, Nll)
  int64_t cols = 0;  // C of (N, C) for the per-sample losses
  bool per_sample = false;
  bool mean = true;  // Reduction::Mean: divide by `divisor()`
  double param = 0;  // Huber delta, or CrossEntropy label smoothing
  bool has_loss = false, has_dpred = false, has_dloss = false, has_correct = false;
  bool has_loss_acc = false, has_correct_acc = false;  // metric accumulators (out 3, out 4)
  float acc_scale = 1.f;                               // f[1]: loss_acc += acc_scale * loss

  int64_t divisor() const { return per_sample ? rows : n; }
};

/// Checks inputs, outputs, dtypes, shapes and attributes of a loss call; throws cudl::Error naming
/// the op, the call's label and the shapes involved.
LossProblem check_loss_call(const OpCall& call);

}  // namespace cudl
