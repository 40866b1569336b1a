// ops/loss.cpp — argument checks of the loss op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/loss.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

namespace {

bool is_per_sample(OpKind op) {
  return op == OpKind::CrossEntropyLoss || op == OpKind::SoftCrossEntropyLoss || op == OpKind::NllLoss;
}

bool has_int_labels(OpKind op) { return op == OpKind::CrossEntropyLoss || op == OpKind::NllLoss; }

}  // namespace

LossArgs check_loss_call(const OpCall& call) {
  const char* name = op_name(call.op);
  LossArgs p;
  const LossAttrs attrs = LossAttrs::from(call.attrs);
  if (call.n_inputs < 2 || call.n_inputs > 3)
    CUDL_FAIL(name, " (", call.label, "): expects inputs (pred, target, [dloss]), got ", call.n_inputs, " inputs");
  if (call.n_outputs < 1 || call.n_outputs > 5)
    CUDL_FAIL(name, " (", call.label, "): expects outputs (loss, [dpred], [correct], [loss_acc], [correct_acc]), got ",
              call.n_outputs, " outputs");
  const TensorView& pred = call.in(0);
  const TensorView& target = call.in(1);
  if (!pred.defined() || !target.defined()) CUDL_FAIL(name, " (", call.label, "): pred and target are required");
  const DType st = p.storage = check_storage(call);  // pred's type; dpred must have it too
  if (pred.dtype != st)
    CUDL_FAIL(name, " (", call.label, "): pred must be f32, bf16 or f16, got ", pred.dtype, " (shape ", pred.shape,
              ")");
  p.n = pred.numel();
  p.per_sample = is_per_sample(call.op);
  if (p.per_sample) {
    if (pred.shape.rank() < 2)
      CUDL_FAIL(name, " (", call.label, "): pred must be (N, C) or (N, ..., C), got shape ", pred.shape);
    p.cols = pred.shape[-1];
    if (p.cols < 1) CUDL_FAIL(name, " (", call.label, "): pred ", pred.shape, " has no classes");
    p.rows = p.n / p.cols;
    if (has_int_labels(call.op)) {
      if (target.dtype != DType::i32)
        CUDL_FAIL(name, " (", call.label, "): target labels must be i32, got ", target.dtype, " (target shape ",
                  target.shape, ", pred shape ", pred.shape, ")");
      const std::vector<int64_t> lead(pred.shape.dims().begin(), pred.shape.dims().end() - 1);
      if (target.shape != Shape(lead))
        CUDL_FAIL(name, " (", call.label, "): target labels must have pred's shape without its class dim, ",
                  Shape(lead), " for pred ", pred.shape, ", got ", target.shape);
    } else {
      if (target.dtype != DType::f32)
        CUDL_FAIL(name, " (", call.label, "): target must be f32, got ", target.dtype, " (shape ", target.shape, ")");
      if (target.shape != pred.shape)
        CUDL_FAIL(name, " (", call.label, "): target shape ", target.shape, " differs from pred shape ", pred.shape);
    }
  } else {
    p.rows = p.n;
    p.cols = 1;
    if (target.dtype != DType::f32)
      CUDL_FAIL(name, " (", call.label, "): target must be f32, got ", target.dtype, " (shape ", target.shape, ")");
    if (target.shape != pred.shape)
      CUDL_FAIL(name, " (", call.label, "): target shape ", target.shape, " differs from pred shape ", pred.shape);
  }

  p.has_dloss = call.has_in(2);
  if (p.has_dloss) {
    const TensorView& d = call.in(2);
    if (d.dtype != DType::f32 || d.numel() != 1)
      CUDL_FAIL(name, " (", call.label, "): dloss must be f32 with one element, got ", d.dtype, " ", d.shape);
  }
  p.has_loss = call.has_out(0);
  if (p.has_loss) {
    const TensorView& l = call.out(0);
    if (l.dtype != DType::f32 || l.numel() != 1)
      CUDL_FAIL(name, " (", call.label, "): loss must be f32 with one element, got ", l.dtype, " ", l.shape);
  }
  p.has_dpred = call.has_out(1);
  if (p.has_dpred) {
    const TensorView& g = call.out(1);
    if (g.dtype != st || g.shape != pred.shape)
      CUDL_FAIL(name, " (", call.label, "): dpred must be ", st, " (pred's type) of pred's shape ", pred.shape,
                ", got ", g.dtype, " ", g.shape);
  }
  p.has_correct = call.has_out(2);
  if (p.has_correct) {
    if (call.op != OpKind::CrossEntropyLoss)
      CUDL_FAIL(name, " (", call.label, "): only CrossEntropyLoss has a `correct` output");
    const TensorView& c = call.out(2);
    if (c.dtype != DType::i32 || c.numel() != 1)
      CUDL_FAIL(name, " (", call.label, "): correct must be i32 with one element, got ", c.dtype, " ", c.shape);
  }
  p.has_loss_acc = call.has_out(3);
  if (p.has_loss_acc) {
    const TensorView& a = call.out(3);
    if (a.dtype != DType::f32 || a.numel() != 1)
      CUDL_FAIL(name, " (", call.label, "): loss_acc must be f32 with one element, got ", a.dtype, " ", a.shape);
  }
  p.acc_scale = static_cast<float>(attrs.acc_scale);
  p.has_correct_acc = call.has_out(4);
  if (p.has_correct_acc) {
    if (call.op != OpKind::CrossEntropyLoss)
      CUDL_FAIL(name, " (", call.label, "): only CrossEntropyLoss has a `correct_acc` output");
    const TensorView& a = call.out(4);
    if (a.dtype != DType::f32 || a.numel() != 1)
      CUDL_FAIL(name, " (", call.label, "): correct_acc must be f32 with one element, got ", a.dtype, " ", a.shape);
  }
  if (!p.has_loss && !p.has_dpred && !p.has_correct && !p.has_loss_acc && !p.has_correct_acc)
    CUDL_FAIL(name, " (", call.label,
              "): no output requested (loss, dpred, correct and the accumulators are all undefined)");

  const int64_t red = static_cast<int64_t>(attrs.reduction);
  if (red != static_cast<int64_t>(Reduction::Mean) && red != static_cast<int64_t>(Reduction::Sum))
    CUDL_FAIL(name, " (", call.label, "): reduction i[0] must be 0 (Mean) or 1 (Sum), got ", red);
  p.mean = red == static_cast<int64_t>(Reduction::Mean);

  if (call.op == OpKind::HuberLoss) {
    p.param = attrs.param;
    if (!(p.param > 0)) CUDL_FAIL(name, " (", call.label, "): delta f[0] must be > 0, got ", p.param);
  } else if (call.op == OpKind::CrossEntropyLoss) {
    p.param = attrs.param;
    if (!(p.param >= 0 && p.param <= 1))
      CUDL_FAIL(name, " (", call.label, "): label smoothing f[0] must be in [0, 1], got ", p.param);
    p.has_ignore = attrs.has_ignore;
    p.ignore_index = attrs.ignore_index;
  }
  if (attrs.has_ignore && call.op != OpKind::CrossEntropyLoss)
    CUDL_FAIL(name, " (", call.label, "): only CrossEntropyLoss takes an ignore index (i[1] = 1)");
  p.pred = pred, p.target = target, p.dloss = op_checks::opt_in(call, 2);
  p.loss = op_checks::opt_out(call, 0), p.dpred = op_checks::opt_out(call, 1), p.correct = op_checks::opt_out(call, 2);
  p.loss_acc = op_checks::opt_out(call, 3), p.correct_acc = op_checks::opt_out(call, 4);
  return p;
}

}  // namespace ops
}  // namespace cudl
