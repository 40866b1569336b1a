// ops/loss.hpp — the loss op family's contract: typed attributes, named arguments and the checks the
// CPU reference and the CUDA backend run first, so both reject the same calls with the same messages.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- losses (kernels/loss.cu, src/cpu/loss.cpp) ---
// in: pred, target, [dloss (f32[1])]; out: loss (f32[1]), [dpred], [correct (i32[1]) for CE],
// pred and dpred of one storage type (f32, bf16 or f16; ops/precision.hpp), every other float f32;
// [loss_acc (f32[1])], [correct_acc (f32[1]) for CE]
// i[0]=Reduction (Mean, Sum); dpred = d loss / d pred, times dloss when given. Mean divides by
// the number of elements (per-sample losses: by the number of rows; CE with an ignore index: by
// the number of rows not ignored). The accumulators are metric sums updated in place, in f32:
// loss_acc += f[1] * loss, and (CE) correct_acc += (f[1] * correct) / counted rows (so with f[1]
// = the batch size B and B rows, += correct; for B sequences, B times the batch's token accuracy).
// MseLoss, L1Loss
// HuberLoss       f[0]=delta
// BceLoss         pred: probabilities in (0,1); log clamped at -100 like PyTorch
// BceWithLogitsLoss
// CrossEntropyLoss      pred: logits (..., C); target: labels i32 (...); f[0]=label smoothing;
//                 i[1]=1: ignore index i[2] (rows whose label equals it add no loss, no gradient,
//                 no correct count and are not counted by Mean)
// SoftCrossEntropyLoss  pred: logits (..., C); target: probabilities or one-hot f32 (..., C)
// NllLoss         pred: log-probabilities (..., C); target: labels i32 (...)
// Per-sample losses take any leading dims: rows = pred.numel() / C (a (B, T, V) sequence of logits
// is B*T rows).
// Loss details (src/cpu/loss.cpp is the spec): loss may be undefined when another output is
// given. Huber: f[0]=delta > 0. CE smoothing e: target (1-e) one_hot + e/C (as PyTorch); CE's
// correct counts rows whose argmax (first max, NaN counts as max) equals the label. NaN in pred
// gives a NaN loss. Labels outside [0, C): the CPU throws naming the op and the label; CUDA cannot
// throw from a kernel, so that row's loss term and its dpred row are NaN (the loss is NaN) and it
// never counts as correct; an ignored label is never out of range. With every row ignored, Mean
// gives loss 0 and a zero gradient (as Keras's ignore_class), and the accumulators add 0. The final
// reduction is deterministic (fixed-order partials, no float atomics); on CUDA each loss is one
// kernel launch, whose last block does that reduction (CE with an ignore index: two, a one-block
// count of the rows kept, then the loss).

namespace cudl {
namespace ops {

/// Every loss: i[0] = reduction, f[0] = param (HuberLoss: delta > 0; CrossEntropyLoss: label
/// smoothing in [0, 1]; unused otherwise), f[1] = acc_scale (loss_acc += acc_scale * loss);
/// CrossEntropyLoss only: i[1] = 1 when labels equal to i[2] = ignore_index are ignored.
struct LossAttrs {
  Reduction reduction = Reduction::Mean;
  double param = 0;
  double acc_scale = 1;
  bool has_ignore = false;
  int32_t ignore_index = -100;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(reduction);
    a.f[0] = param;
    a.f[1] = acc_scale;
    a.i[1] = has_ignore ? 1 : 0;
    a.i[2] = ignore_index;
    return a;
  }
  static LossAttrs from(const OpAttrs& a) {
    return {static_cast<Reduction>(a.i[0]), a.f[0], a.f[1], a.i[1] != 0, static_cast<int32_t>(a.i[2])};
  }
};

/// What a validated loss call computes (see the loss section above).
struct LossArgs {
  DType storage = DType::f32;                    // pred and dpred: f32, bf16 or f16 (ops/precision.hpp)
  TensorView pred, target, dloss;                // dloss may be undefined
  TensorView loss, dpred, correct, loss_acc, correct_acc;  // any may be undefined (not all)
  int64_t n = 0;     // elements of pred
  int64_t rows = 0;  // pred.numel() / C for the per-sample losses (CrossEntropy, SoftCrossEntropy, Nll)
  int64_t cols = 0;  // C, pred's last dim, for the per-sample losses
  bool has_ignore = false;  // CrossEntropy: labels equal to ignore_index are ignored
  int32_t ignore_index = 0;
  bool per_sample = false;
  bool mean = true;  // Reduction::Mean: divide by `divisor()`
  double param = 0;  // Huber delta, or CrossEntropy label smoothing
  bool has_loss = false, has_dpred = false, has_dloss = false, has_correct = false;
  bool has_loss_acc = false, has_correct_acc = false;  // metric accumulators (out 3, out 4)
  float acc_scale = 1.f;                               // loss_acc += acc_scale * loss

  int64_t divisor() const { return per_sample ? rows : n; }
};

/// Checks inputs, outputs, dtypes, shapes and attributes of a loss call; throws cudl::Error naming
/// the op, the call's label and the shapes involved.
LossArgs check_loss_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
