// graph/autodiff.cpp — per-op gradient rules and the reverse sweep with fan-out accumulation.
#include "graph/autodiff.hpp"

#include <functional>

#include "ops/collective.hpp"
#include "ops/conv.hpp"
#include "ops/data.hpp"
#include "ops/elementwise.hpp"
#include "ops/matmul.hpp"
#include "ops/norm.hpp"
#include "ops/precision.hpp"
#include "ops/recurrent.hpp"
#include "cudl/error.hpp"

namespace cudl::graph {
namespace {

bool is_loss(OpKind op) {
  switch (op) {
    case OpKind::MseLoss: case OpKind::L1Loss: case OpKind::HuberLoss: case OpKind::BceLoss:
    case OpKind::BceWithLogitsLoss: case OpKind::CrossEntropyLoss: case OpKind::SoftCrossEntropyLoss:
    case OpKind::NllLoss:
      return true;
    default:
      return false;
  }
}

class Sweep {
 public:
  Sweep(Graph& g, const BackwardSpec& spec) : g_(g), spec_(spec) {}

  void run() {
    for (int i = 0; i < spec_.forward_end; ++i) {
      for (ValueId o : g_.nodes()[i].outputs)
        if (o != kNone) producer_[o] = i;
      for (ValueId v : g_.nodes()[i].inputs)
        if (v != kNone) readers_[v]++;
    }
    mark_needs_grad();
    count_contributions();
    for (const auto& [v, dv] : spec_.seeds) contribute(v, dv, "seed");
    for (int i = spec_.forward_end - 1; i >= 0; --i) {
      const Node node = g_.nodes()[i];  // copy: rules append nodes
      std::vector<ValueId> douts;
      bool any = false;
      for (ValueId o : node.outputs) {
        ValueId d = o != kNone && grads_.count(o) ? grads_[o] : kNone;
        douts.push_back(d);
        any |= d != kNone;
      }
      if (!any) continue;
      apply_rule(node, douts);
    }
    for (const auto& [p, gv] : spec_.param_grads) {
      if (written_.count(gv)) continue;
      OpAttrs a;
      g_.add_node(OpKind::Fill, a, {}, {gv}, g_.value(p).name, Phase::Backward);  // no gradient reaches it
    }
  }

 private:
  // needs_[v]: some trainable parameter influences v (so its gradient is needed).
  void mark_needs_grad() {
    for (const auto& [p, gv] : spec_.param_grads) needs_.insert(p);
    for (int i = 0; i < spec_.forward_end; ++i) {
      const Node& n = g_.nodes()[i];
      bool any = false;
      for (ValueId v : n.inputs) any |= v != kNone && needs_.count(v);
      if (any)
        for (ValueId o : n.outputs)
          if (o != kNone) needs_.insert(o);
    }
  }

  // How many gradient contributions each needed value will receive.
  void count_contributions() {
    for (int i = 0; i < spec_.forward_end; ++i) {
      const Node& n = g_.nodes()[i];
      bool out_needed = false;
      for (ValueId o : n.outputs) out_needed |= o != kNone && needs_.count(o);
      if (!out_needed) continue;
      for (ValueId v : n.inputs)  // per occurrence: x*x contributes twice
        if (v != kNone && needs_.count(v)) remaining_[v]++;
    }
    for (const auto& [v, dv] : spec_.seeds) remaining_[v]++;
  }

  // The f32 parameter that v is the 16-bit copy of (a Cast in the forward), when that copy has one
  // reader and LinearBackward may write the parameter's gradient in f32 (ops/precision.hpp); else kNone.
  ValueId master_of(ValueId v) const {
    if (v == kNone || !g_.value(v).weight_copy || !(ops::storage_slots(OpKind::LinearBackward).f32_out & 0x6u))
      return kNone;
    auto pf = producer_.find(v);
    auto uses = readers_.find(v);
    if (pf == producer_.end() || uses == readers_.end() || uses->second != 1) return kNone;
    const Node& cast = g_.nodes()[pf->second];
    if (cast.op != OpKind::Cast || cast.inputs.empty()) return kNone;
    const ValueId master = cast.inputs[0];
    return g_.value(master).dtype == DType::f32 ? master : kNone;
  }

  ValueId pg_grad(ValueId v) const {
    auto pg = spec_.param_grads.find(v);
    return pg == spec_.param_grads.end() ? kNone : pg->second;
  }

  bool wants(ValueId v) const { return v != kNone && needs_.count(v) && remaining_.count(v) && remaining_.at(v) > 0; }

  // Destination for the next gradient contribution to v: the final Grad value when this is the
  // only outstanding contribution and nothing is pending, else a fresh temporary.
  ValueId target_for(ValueId v, const std::string& layer) {
    auto pg = spec_.param_grads.find(v);
    if (pg != spec_.param_grads.end() && remaining_[v] == 1 && !grads_.count(v)) return pg->second;
    const Value val = g_.value(v);  // a copy: add_value may move the values
    const ValueId d = g_.add_value("d" + val.name, val.shape, val.dtype, Role::Intermediate);
    g_.value(d).weight_copy = val.weight_copy;
    return d;
  }

  void contribute(ValueId v, ValueId dv, const std::string& layer) {
    auto pg = spec_.param_grads.find(v);
    remaining_[v]--;
    auto it = grads_.find(v);
    if (it == grads_.end()) {
      grads_[v] = dv;
    } else {
      const bool last = remaining_[v] == 0;
      ValueId sum = last && pg != spec_.param_grads.end() ? pg->second
                                                          : g_.add_value("d" + g_.value(v).name, g_.value(v).shape,
                                                                         g_.value(v).dtype, Role::Intermediate);
      if (sum != pg_grad(v)) g_.value(sum).weight_copy = g_.value(v).weight_copy;
      g_.add_node(OpKind::Binary, ops::BinaryAttrs{BinaryOp::Add}.to_op_attrs(), {it->second, dv}, {sum}, layer,
                  Phase::Backward);
      it->second = sum;
    }
    if (remaining_[v] == 0 && pg != spec_.param_grads.end()) {
      if (grads_[v] != pg->second) {  // single contribution landed in a temporary (seeded value)
        g_.add_node(OpKind::Copy, {}, {grads_[v]}, {pg->second}, layer, Phase::Backward);
        grads_[v] = pg->second;
      }
      written_.insert(pg->second);
    }
  }

  void apply_rule(const Node& n, const std::vector<ValueId>& dout) {
    const auto& in = n.inputs;
    const std::string& L = n.layer;
    auto in_or_none = [&](size_t k) { return k < in.size() ? in[k] : kNone; };
    auto t = [&](size_t k) { return wants(in_or_none(k)) ? target_for(in[k], L) : kNone; };
    auto done = [&](size_t k, ValueId d) {
      if (d != kNone) contribute(in[k], d, L);
    };
    const ValueId dy = dout.empty() ? kNone : dout[0];

    if (n.is_view()) {
      const ValueId base = in[0];
      if (!wants(base)) return;
      // The gradient of a view is the same bytes seen with the base's shape.
      const ValueId d = g_.add_view(dy, g_.value(base).shape, L, Phase::Backward);
      contribute(base, d, L);
      return;
    }
    switch (n.op) {
      case OpKind::Unary: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        g_.add_node(OpKind::UnaryBackward, n.attrs, {in[0], n.outputs[0], dy}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::Binary: {
        ValueId da = t(0), db = t(1);
        g_.add_node(OpKind::BinaryBackward, n.attrs, {in[0], in[1], dy}, {da, db}, L, Phase::Backward);
        done(0, da);
        done(1, db);
        return;
      }
      case OpKind::BinaryScalar: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        g_.add_node(OpKind::BinaryScalarBackward, n.attrs, {in[0], dy}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::Linear: {
        const ValueId y = n.outputs[0];
        ops::LinearBackwardAttrs attrs{ops::LinearAttrs::from(n.attrs).epilogue, false};
        const Epilogue forward_ep = attrs.epilogue;
        const ValueId pre = forward_ep == Epilogue::Gelu && n.outputs.size() > 1 ? n.outputs[1] : kNone;
        const bool db_done = relu_fused_.count(y) > 0;
        if (db_done) attrs.epilogue = Epilogue::None;  // the layer above took dy through this layer's relu:
                                                       // dy is d pre, db is done
        const Epilogue ep = attrs.epilogue;
        // 16-bit storage: when this Linear is the only reader of the 16-bit copies of its weight and
        // bias, the GEMM writes their f32 masters' gradients directly (no 16-bit gradient, no Cast).
        const ValueId w_master = master_of(in[1]), b_master = db_done ? kNone : master_of(in_or_none(2));
        const bool to_masters = w_master != kNone && (in_or_none(2) == kNone || db_done || b_master != kNone);
        ValueId dw = kNone, db = kNone;
        if (to_masters) {
          dw = wants(w_master) ? target_for(w_master, L) : kNone;
          db = b_master != kNone && wants(b_master) ? target_for(b_master, L) : kNone;
        } else {
          dw = t(1);
          db = db_done ? kNone : t(2);
        }
        std::vector<ValueId> ins{in[0], in[1], dy, ep == Epilogue::Relu ? y : kNone, pre};
        ValueId dx = kNone, db_below = kNone;
        const bool fused = fuse_relu_below(n, attrs, ins, dx, db_below);
        if (!fused) dx = t(0);
        std::vector<ValueId> outs{dx, dw, db};
        if (db_below != kNone) outs.push_back(db_below);
        g_.add_node(OpKind::LinearBackward, attrs.to_op_attrs(), ins, outs, L, Phase::Backward);
        if (!fused) done(0, dx);
        if (to_masters) {
          if (dw != kNone) contribute(w_master, dw, L);
          if (db != kNone) contribute(b_master, db, L);
        } else {
          done(1, dw);
          done(2, db);
        }
        return;
      }
      case OpKind::Matmul: {
        const ops::MatmulAttrs fwd = ops::MatmulAttrs::from(n.attrs);
        const bool ta = fwd.trans_a, tb = fwd.trans_b;
        if (g_.value(in[0]).shape.rank() != g_.value(in[1]).shape.rank())
          CUDL_FAIL(n.label, ": gradient of a matmul with a broadcast operand is not supported");
        ValueId da = t(0), db = t(1);
        auto matmul = [&](ops::MatmulAttrs a, ValueId lhs, ValueId rhs, ValueId out) {
          g_.add_node(OpKind::Matmul, a.to_op_attrs(), {lhs, rhs}, {out}, L, Phase::Backward);
        };
        if (da != kNone) {  // C = op(A) op(B): dA = dC op(B)^T, or op(B) dC^T when A is transposed
          if (!ta) matmul({false, !tb}, dy, in[1], da);
          else matmul({tb, true}, in[1], dy, da);
          done(0, da);
        }
        if (db != kNone) {  // dB = op(A)^T dC, or dC^T op(A) when B is transposed
          if (!tb) matmul({!ta, false}, in[0], dy, db);
          else matmul({true, ta}, dy, in[0], db);
          done(1, db);
        }
        return;
      }
      case OpKind::Conv2d: {
        ValueId dz = dy;
        if (ops::Conv2dAttrs::from(n.attrs).epilogue == Epilogue::Relu) {
          // d(conv output) before the ReLU, in the gradient's type (the storage type in bf16/f16 mode)
          dz = g_.add_value("d" + g_.value(n.outputs[0]).name + ".pre", g_.value(dy).shape, g_.value(dy).dtype,
                            Role::Intermediate);
          g_.add_node(OpKind::UnaryBackward, ops::UnaryAttrs{UnaryOp::Relu, 0}.to_op_attrs(), {kNone, n.outputs[0], dy},
                      {dz}, L, Phase::Backward);
        }
        ValueId dx = t(0), dw = t(1), db = t(2);
        if (dx != kNone) g_.add_node(OpKind::Conv2dBackwardData, n.attrs, {dz, in[1]}, {dx}, L, Phase::Backward);
        if (dw != kNone) g_.add_node(OpKind::Conv2dBackwardFilter, n.attrs, {in[0], dz}, {dw}, L, Phase::Backward);
        if (db != kNone) g_.add_node(OpKind::Conv2dBackwardBias, n.attrs, {dz}, {db}, L, Phase::Backward);
        done(0, dx);
        done(1, dw);
        done(2, db);
        return;
      }
      case OpKind::Conv2dTranspose: {
        // y = the data gradient of the convolution conv (x's geometry from y's): dx = conv(dy),
        // dw = that convolution's filter gradient for input dy and output gradient x.
        ValueId dx = t(0), dw = t(1), db = t(2);
        if (dx != kNone) g_.add_node(OpKind::Conv2d, n.attrs, {dy, in[1]}, {dx}, L, Phase::Backward);
        if (dw != kNone) g_.add_node(OpKind::Conv2dBackwardFilter, n.attrs, {dy, in[0]}, {dw}, L, Phase::Backward);
        if (db != kNone) g_.add_node(OpKind::Conv2dBackwardBias, n.attrs, {dy}, {db}, L, Phase::Backward);
        done(0, dx);
        done(1, dw);
        done(2, db);
        return;
      }
      case OpKind::Upsample2d: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        g_.add_node(OpKind::Upsample2dBackward, n.attrs, {dy}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::MaxPool2d: case OpKind::AvgPool2d: case OpKind::GlobalAvgPool: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        if (n.op == OpKind::MaxPool2d)
          g_.add_node(OpKind::MaxPool2dBackward, n.attrs, {in[0], n.outputs[0], dy}, {dx}, L, Phase::Backward);
        else
          g_.add_node(n.op == OpKind::AvgPool2d ? OpKind::AvgPool2dBackward : OpKind::GlobalAvgPoolBackward, n.attrs,
                      {dy}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::BatchNormTrain: {
        ValueId dx = t(0), dg = t(1), dbeta = t(2);
        g_.add_node(OpKind::BatchNormBackward, n.attrs, {in[0], in[1], n.outputs[1], n.outputs[2], dy},
                    {dx, dg, dbeta}, L, Phase::Backward);
        done(0, dx);
        done(1, dg);
        done(2, dbeta);
        return;
      }
      case OpKind::BatchNormApply: {  // synchronised: the sums of dy and dy*xhat all-reduced for dx
        // dgamma / dbeta are this rank's sums: the data-parallel average of the gradients makes them
        // the global batch's. dx needs the sums over every rank's rows (and their count, stats[2]).
        // BatchNormStats, which made the stats from x, passes no gradient: this rule is x's whole one.
        ValueId dx = t(0), dg = t(1), dbeta = t(2);
        const int64_t ch = g_.value(in[0]).shape[1];
        const ValueId sums = g_.add_value(L + ".bn_grad_sums", Shape{2, ch}, DType::f32, Role::Intermediate);
        g_.add_node(OpKind::BatchNormBackwardReduce, {}, {in[0], n.outputs[1], n.outputs[2], dy}, {sums, dg, dbeta}, L,
                    Phase::Backward);
        if (dx != kNone) {
          const ops::SyncBatchNormAttrs a = ops::SyncBatchNormAttrs::from(n.attrs);
          g_.add_node(OpKind::AllReduce, ops::AllReduceAttrs{a.comm, false, ops::AllReduceStage::kWhole}.to_op_attrs(),
                      {sums}, {}, L, Phase::Backward);
          g_.add_node(OpKind::BatchNormBackwardApply, {}, {in[0], in[1], n.outputs[1], n.outputs[2], dy, sums, in[5]},
                      {dx}, L, Phase::Backward);
        }
        done(0, dx);
        done(1, dg);
        done(2, dbeta);
        return;
      }
      case OpKind::BatchNormInference: {  // a frozen BatchNorm: running statistics are constants
        for (size_t k = 1; k < in.size(); ++k)
          if (wants(in[k]))
            CUDL_FAIL("autodiff (", L, "): BatchNormInference gives no gradient for its input ", k, " (",
                      g_.value(in[k]).name, "); a BatchNorm in inference mode in a training graph must be frozen");
        ValueId dx = t(0);
        if (dx == kNone) return;
        g_.add_node(OpKind::BatchNormInferenceBackward, n.attrs, {dy, in[1], in[4]}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::LayerNorm: {
        ValueId dx = t(0), dg = t(1), dbeta = t(2);
        g_.add_node(OpKind::LayerNormBackward, n.attrs, {in[0], in_or_none(1), n.outputs[1], n.outputs[2], dy},
                    {dx, dg, dbeta}, L, Phase::Backward);
        done(0, dx);
        done(1, dg);
        done(2, dbeta);
        return;
      }
      case OpKind::RecurrentSequence: {  // backpropagation through time: one op
        ValueId dxp = t(0), du = t(1), dbias = t(2);
        if (dxp == kNone && du == kNone && dbias == kNone) return;
        const ValueId daux = dout.size() > 2 ? dout[2] : kNone;
        ValueId dh = dy;
        if (dh == kNone) {  // only the LSTM's cell state c is used downstream (return_state): dh = 0
          const Value h = g_.value(n.outputs[0]);
          dh = g_.add_value("d" + h.name, h.shape, h.dtype, Role::Intermediate);
          g_.add_node(OpKind::Fill, ops::FillAttrs{0}.to_op_attrs(), {}, {dh}, L, Phase::Backward);
        }
        if (dxp == kNone)  // the op always writes dxp: give it a temporary
          dxp = g_.add_value("d" + g_.value(in[0]).name, g_.value(in[0]).shape, g_.value(in[0]).dtype,
                             Role::Intermediate);
        const auto opt_out = [&](size_t k) { return k < n.outputs.size() ? n.outputs[k] : kNone; };
        g_.add_node(OpKind::RecurrentSequenceBackward, n.attrs, {in[1], n.outputs[0], opt_out(1), opt_out(2), dh, daux},
                    {dxp, du, dbias}, L, Phase::Backward);
        if (wants(in[0])) done(0, dxp);
        done(1, du);
        done(2, dbias);
        return;
      }
      case OpKind::Dropout: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        g_.add_node(OpKind::DropoutBackward, n.attrs, {dy, n.outputs[1]}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::Attention: {  // in: q, k, v, [key_mask], [rng]; out: o, lse
        ValueId dq = t(0), dk = t(1), dv = t(2);
        if (dq == kNone && dk == kNone && dv == kNone) return;
        g_.add_node(OpKind::AttentionBackward, n.attrs,
                    {in[0], in[1], in[2], n.outputs[0], n.outputs[1], dy, in_or_none(3), in_or_none(4)},
                    {dq, dk, dv}, L, Phase::Backward);
        done(0, dq);
        done(1, dk);
        done(2, dv);
        return;
      }
      case OpKind::Softmax: case OpKind::LogSoftmax: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        g_.add_node(n.op == OpKind::Softmax ? OpKind::SoftmaxBackward : OpKind::LogSoftmaxBackward, n.attrs,
                    {n.outputs[0], dy}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::Reduce: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        g_.add_node(OpKind::ReduceBackward, n.attrs,
                    {in[0], n.outputs[0], dy, n.outputs.size() > 1 ? n.outputs[1] : kNone}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::Copy: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        g_.add_node(OpKind::Copy, {}, {dy}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::Cast: {  // precision boundaries: the gradient converts back (floats only)
        ValueId dx = t(0);
        if (dx == kNone) return;
        if (!dtype_is_float(g_.value(in[0]).dtype) || !dtype_is_float(g_.value(dy).dtype))
          CUDL_FAIL("layer ", L, ": no gradient through a Cast from ", g_.value(in[0]).dtype, " to ", g_.value(dy).dtype);
        g_.add_node(OpKind::Cast, {}, {dy}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::Permute: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        const ops::PermuteAttrs fwd = ops::PermuteAttrs::from(n.attrs);
        ops::PermuteAttrs inv;
        const int r = g_.value(in[0]).shape.rank();
        for (int k = 0; k < r; ++k) inv.perm[fwd.perm[k]] = k;  // inverse permutation
        g_.add_node(OpKind::Permute, inv.to_op_attrs(), {dy}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::Slice: {
        ValueId dx = t(0);
        if (dx == kNone) return;
        g_.add_node(OpKind::SliceBackward, n.attrs, {dy}, {dx}, L, Phase::Backward);
        done(0, dx);
        return;
      }
      case OpKind::Concat: {
        const int axis = static_cast<int>(ops::ConcatAttrs::from(n.attrs).axis);
        int64_t start = 0;
        for (size_t k = 0; k < in.size(); ++k) {
          ValueId dk = t(k);
          if (dk != kNone) {
            g_.add_node(OpKind::Slice, ops::SliceAttrs{axis, start}.to_op_attrs(), {dy}, {dk}, L, Phase::Backward);
            done(k, dk);
          }
          const Shape& s = g_.value(in[k]).shape;
          start += s[axis < 0 ? axis + s.rank() : axis];
        }
        return;
      }
      case OpKind::Gather: {
        ValueId dt = t(0);
        if (dt == kNone) return;
        g_.add_node(OpKind::GatherBackward, n.attrs, {dy, in[1]}, {dt}, L, Phase::Backward);
        done(0, dt);
        return;
      }
      default:
        break;
    }
    if (is_loss(n.op)) {
      // Loss output gradient dL (f32[1]) scales the fused gradient of the prediction.
      ValueId dpred = t(0);
      if (dpred == kNone) return;
      ValueId scratch = g_.add_value(g_.value(n.outputs[0]).name + ".again", Shape{1}, DType::f32, Role::Intermediate);
      g_.add_node(n.op, n.attrs, {in[0], in[1], dy}, {scratch, dpred}, L, Phase::Backward);
      done(0, dpred);
      return;
    }
    CUDL_FAIL(n.label, ": no gradient rule for op ", op_name(n.op));
  }

  // Linear after Linear+Relu (x = relu(pre) of the layer below, used nowhere else): this layer's
  // LinearBackward takes dx through that relu with its mask (dx_relu, in 5) and also writes the lower
  // layer's bias gradient (out 3), so on CUDA one GEMM with the DRELU_BGRAD epilogue replaces the
  // GEMM + relu' kernel + bias-gradient pass. The lower Linear gains the mask output; dx (the lower
  // d pre, already contributed) and db_below are set. Returns false, changing nothing, when the
  // pattern does not apply.
  bool fuse_relu_below(const Node& n, ops::LinearBackwardAttrs& attrs, std::vector<ValueId>& ins, ValueId& dx,
                       ValueId& db_below) {
    const ValueId x = n.inputs[0];
    if (!wants(x) || remaining_.at(x) != 1 || grads_.count(x) || spec_.param_grads.count(x)) return false;
    auto pf = producer_.find(x);
    if (pf == producer_.end()) return false;
    Node& below = g_.nodes()[pf->second];
    if (below.op != OpKind::Linear || ops::LinearAttrs::from(below.attrs).epilogue != Epilogue::Relu ||
        below.outputs[0] != x || (below.outputs.size() > 1 && below.outputs[1] != kNone))
      return false;
    const Value xv = g_.value(x);  // a copy: add_value below may move the values
    if (xv.shape.rank() != 2) return false;
    const std::string lower = below.layer;  // a copy: nodes may be appended below
    const ValueId mask = g_.add_value(xv.name + ".relu_mask", Shape{xv.shape[0], relu_mask_row_bytes(xv.shape[1])},
                                      DType::u8, Role::Intermediate);
    below.outputs.resize(2, kNone);
    below.outputs[1] = mask;
    g_.value(mask).producer = pf->second;
    const ValueId bias = below.inputs.size() > 2 ? below.inputs[2] : kNone;
    db_below = wants(bias) ? target_for(bias, lower) : kNone;
    dx = g_.add_value("d" + xv.name + ".pre", xv.shape, xv.dtype, Role::Intermediate);
    attrs.dx_relu = true;
    ins.push_back(mask);
    contribute(x, dx, n.layer);
    relu_fused_.insert(x);
    if (db_below != kNone) contribute(bias, db_below, lower);
    return true;
  }

  Graph& g_;
  const BackwardSpec& spec_;
  std::map<ValueId, int> producer_;  // forward node that writes each value
  std::map<ValueId, int> readers_;   // forward inputs that read each value (per occurrence)
  std::set<ValueId> relu_fused_;     // Linear+Relu outputs whose gradient arrives as d pre (db done)
  std::set<ValueId> needs_;
  std::map<ValueId, int> remaining_;
  std::map<ValueId, ValueId> grads_;
  std::set<ValueId> written_;
};

}  // namespace

bool has_grad_rule(OpKind op) {
  switch (op) {
    case OpKind::Unary: case OpKind::Binary: case OpKind::BinaryScalar: case OpKind::Linear: case OpKind::Matmul:
    case OpKind::Conv2d: case OpKind::Conv2dTranspose: case OpKind::Upsample2d: case OpKind::MaxPool2d: case OpKind::AvgPool2d: case OpKind::GlobalAvgPool:
    case OpKind::BatchNormTrain: case OpKind::BatchNormInference: case OpKind::BatchNormApply: case OpKind::LayerNorm:
    case OpKind::Dropout:
    case OpKind::Softmax: case OpKind::LogSoftmax: case OpKind::Reduce: case OpKind::Copy: case OpKind::Cast:
    case OpKind::Permute: case OpKind::Slice: case OpKind::Concat: case OpKind::Gather: case OpKind::Attention:
    case OpKind::RecurrentSequence:
      return true;
    default:
      return is_loss(op);
  }
}

void build_backward(Graph& g, const BackwardSpec& spec) { Sweep(g, spec).run(); }

}  // namespace cudl::graph
