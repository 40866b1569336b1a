// train/programs.cpp — the graphs a model runs: the data stage, forward, loss and metrics,
// backward and the optimizer step, built for one batch size, then planned or made executable.
#include <algorithm>

#include "cudl/distributed.hpp"
#include "cudl/error.hpp"
#include "graph/autodiff.hpp"
#include "graph/planner.hpp"
#include "ops/augment.hpp"
#include "ops/data.hpp"
#include "ops/util.hpp"
#include "train/model_impl.hpp"

namespace cudl {

using graph::kNone;
using graph::Phase;
using graph::Role;
using graph::ValueId;

detail::BuildContext Model::Impl::context(graph::Graph& g, int64_t batch, bool training) {
  detail::BuildContext c;
  c.g = &g;
  c.batch = batch;
  c.training = training;
  c.device = opts.device;
  c.seed = opts.seed;
  c.rng_tensor = rng;
  c.frozen = &frozen;
  c.storage = precision_storage(opts.precision);
  c.propagate_nan = opts.propagate_nan;
  c.layer_precision = &layer_precision;
  if (opts.communicator) c.comm = &opts.communicator->backend();
  return c;
}

ValueId Model::Impl::forward(detail::BuildContext& c, const std::vector<ValueId>& xs) {
  std::map<const detail::VarNode*, std::vector<int>> vals;  // each application's outputs
  for (const auto& n : nodes) {
    if (n->source) {  // a further output of an application built before it
      vals[n.get()] = {vals.at(n->source.get()).at(static_cast<size_t>(n->output))};
      continue;
    }
    if (!n->layer) {
      const size_t k = static_cast<size_t>(std::find(inputs.begin(), inputs.end(), n.get()) - inputs.begin());
      vals[n.get()] = {xs.at(k)};  // one of the model's inputs (checked at construction)
      continue;
    }
    std::vector<int> ins;
    for (const auto& v : n->inputs) ins.push_back(vals.at(v.get()).at(0));
    c.layer = n->layer.get();
    c.layer_name = layer_name(c.layer);
    c.layer_index = positions.at(c.layer);
    vals[n.get()] = detail::LayerAccess::builtin(*n->layer).build(c, ins);
    c.layer = nullptr;
    c.layer_name.clear();
  }
  return vals.at(output).at(0);
}

Shape Model::Impl::batched_input(int64_t batch, size_t k) const {
  std::vector<int64_t> d{batch};
  d.insert(d.end(), inputs[k]->shape.dims().begin(), inputs[k]->shape.dims().end());
  return Shape(d);
}

std::string Model::Impl::input_label(size_t k) const {
  if (inputs.size() == 1) return "x";
  return "input " + std::to_string(k) + " ('" + inputs[k]->name + "')";
}

std::pair<Shape, DType> Model::Impl::target_spec(int64_t batch) const {
  if (opts.loss.takes_labels()) {  // one label per row of logits: the output's dims but the last
    std::vector<int64_t> d{batch};
    if (output->shape.rank() > 0) d.insert(d.end(), output->shape.dims().begin(), output->shape.dims().end() - 1);
    return {Shape(d), DType::i32};
  }
  std::vector<int64_t> d{batch};
  d.insert(d.end(), output->shape.dims().begin(), output->shape.dims().end());
  return {Shape(d), DType::f32};
}

namespace {

// Random shift + rotation of the gathered training images (FitOptions::augment). Outside the
// image it fills with the normalised value of a 0 pixel (u8 data) or 0 (f32 data). The node reads
// the model's RNG state, so the training program advances its offset every step.
ValueId augment_node(detail::BuildContext& c, const std::string& model, ValueId xb, const FitOptions& fo, float fill) {
  const Shape s = c.g->value(xb).shape;
  if (s.rank() != 4) CUDL_FAIL("model ", model, ": augment needs image batches (N, C, H, W), got ", s);
  ValueId y = c.g->add_value("data.augmented_x", s, DType::f32, Role::Intermediate);
  const OpAttrs a = ops::AugmentAttrs{fo.augment_shift, fo.augment_rotation, fill}.to_op_attrs();
  c.g->add_node(OpKind::AugmentImages, a, {xb, c.rng_state()}, {y}, "augment", Phase::Forward);
  return y;
}

/// Advances the model's RNG offset past every Philox block this program's random nodes used, so
/// the next run (of any program of the model) draws fresh values rather than shifted copies.
void advance_rng(detail::BuildContext& c, Phase phase) {
  if (c.rng == kNone) return;
  graph::Graph& g = *c.g;
  int64_t blocks = 1;
  for (const graph::Node& n : g.nodes()) {
    if (n.op == OpKind::Dropout) blocks = std::max(blocks, (g.value(n.inputs[0]).shape.numel() + 3) / 4);
    if (n.op == OpKind::Attention && n.inputs.size() > 4 && n.inputs[4] != kNone)  // (B, H, Tq, Tk) weights
      blocks = std::max(blocks, (g.value(n.outputs[1]).shape.numel() * g.value(n.inputs[1]).shape[1] + 3) / 4);
    if (n.op == OpKind::RandomNormal && !n.inputs.empty() && n.inputs[0] == c.rng)
      blocks = std::max(blocks, (g.value(n.outputs[0]).shape.numel() + 3) / 4);
  }
  ValueId off = g.add_view(c.rng, Shape{1}, "rng", phase, sizeof(int64_t), "rng.offset");
  g.add_node(OpKind::Increment, ops::IncrementAttrs{0, blocks}.to_op_attrs(), {}, {off}, "rng", phase);
}

/// Binds `t` to `v` when it is given (programs built only to be planned have no tensors).
void bind(detail::BuildContext& c, ValueId v, const Tensor& t) {
  if (t.defined()) c.bound[v] = t;
}

}  // namespace

std::unique_ptr<Model::Impl::Build> Model::Impl::build(int64_t B, const DataSpec& d, bool training, bool with_loss) {
  auto b = std::make_unique<Build>();
  graph::Graph& g = b->g;
  b->c = context(g, B, training);
  detail::BuildContext& c = b->c;
  ValueId xb = kNone, yb = kNone;
  const auto [target_shape, target_dtype] = target_spec(B);
  std::vector<ValueId> xbs;
  if (d.gather) {
    // Rows perm[cursor .. cursor + B) of the first input (normalised when u8) and y, then cursor +=
    // B: one GatherBatch. Every further input takes the same rows: BatchIndices reads the cursor
    // before the GatherBatch advances it (the node list is the execution order), and one Gather
    // (GatherImages for u8 images) per input reads the tables through those indices.
    if (d.x.size() != inputs.size())
      CUDL_FAIL("model ", name, ": the data has ", d.x.size(), " inputs but the model takes ", inputs.size());
    for (size_t k = 0; k < inputs.size(); ++k) {
      if (!input_accepts(k, d.x_dtype[k]))
        CUDL_FAIL("model ", name, ": ", input_label(k), " must be ", inputs[k]->dtype == DType::i32 ? "i32" : "f32 or u8",
                  ", got ", d.x_dtype[k]);
    }
    std::vector<ValueId> vx;
    for (size_t k = 0; k < inputs.size(); ++k) {
      vx.push_back(g.add_value(k == 0 ? "data.x" : "data.x" + std::to_string(k), d.x[k], d.x_dtype[k], Role::Input));
      if (k < d.tx.size()) bind(c, vx[k], d.tx[k]);
    }
    ValueId vy = g.add_value("data.y", d.y, d.y_dtype, Role::Input);
    ValueId vp = g.add_value("data.perm", d.perm.defined() ? d.perm.shape() : Shape{d.x[0][0]}, DType::i32, Role::Input);
    bind(c, vy, d.ty);
    bind(c, vp, d.perm);
    ValueId vc = bind_state(c, "data.cursor", cursor);
    const OpAttrs a = ops::NormalizeAttrs{d.mean, d.std}.to_op_attrs();
    xbs.resize(inputs.size(), kNone);
    if (inputs.size() > 1) {
      ValueId idx = g.add_value("data.batch_rows", Shape{B}, DType::i32, Role::Intermediate);
      g.add_node(OpKind::BatchIndices, {}, {vp, vc}, {idx}, "data", Phase::Forward);
      for (size_t k = 1; k < inputs.size(); ++k) {
        std::vector<int64_t> xd = d.x[k].dims();
        xd[0] = B;
        const bool images = d.x_dtype[k] == DType::u8;
        xbs[k] = g.add_value("data.batch_x" + std::to_string(k), Shape(xd), images ? DType::f32 : d.x_dtype[k],
                             Role::Intermediate);
        g.add_node(images ? OpKind::GatherImages : OpKind::Gather, images ? a : OpAttrs{}, {vx[k], idx}, {xbs[k]},
                   "data", Phase::Forward);
      }
    }
    std::vector<int64_t> xd = d.x[0].dims(), yd = d.y.dims();
    xd[0] = yd[0] = B;
    // bf16/f16: u8 images are normalised straight into the storage type (not when augmenting, which
    // reads f32, or when a layer overrides the precision, which may want the f32 values).
    const bool augment = d.augment && d.augment->augment;
    const DType images = !augment && layer_precision.empty() ? c.storage : DType::f32;
    xb = g.add_value("data.batch_x", Shape(xd), d.x_dtype[0] == DType::u8 ? images : d.x_dtype[0], Role::Intermediate);
    yb = g.add_value("data.batch_y", Shape(yd), d.y_dtype, Role::Intermediate);
    g.add_node(OpKind::GatherBatch, a, {vp, vx[0], vy}, {xb, yb, vc}, "data", Phase::Forward);
    if (augment) {
      if (inputs.size() > 1)
        CUDL_FAIL("model ", name, ": augment transforms the images of single-input models; this one has ",
                  inputs.size(), " inputs");
      xb = augment_node(c, name, xb, *d.augment, d.x_dtype[0] == DType::u8 ? -d.mean / d.std : 0.f);
    }
    xbs[0] = xb;
  } else {
    for (size_t k = 0; k < inputs.size(); ++k)
      xbs.push_back(g.add_value(inputs.size() == 1 ? "input" : "input" + std::to_string(k), batched_input(B, k),
                                inputs[k]->dtype, Role::Input));
    b->x = xbs;
    if (with_loss) yb = b->y = g.add_value("target", target_shape, target_dtype, Role::Input);
    if (with_loss) {  // each run reports its own batch: zero the metric accumulators first
      std::vector<std::string> keys{"loss"};
      if (wants("accuracy")) keys.push_back("correct");
      if (wants("mae")) keys.push_back("mae");
      for (const std::string& k : keys)
        g.add_node(OpKind::Fill, ops::FillAttrs{0}.to_op_attrs(), {}, {bind_state(c, "metric." + k + ".zero", acc(k))},
                   "metrics", Phase::Forward);
    }
  }
  ValueId out = forward(c, xbs);
  // predict returns the model's output in f32; the losses (and the metrics they accumulate, accuracy
  // included) read bf16/f16 predictions themselves and write their gradient in that type.
  if (g.value(out).dtype != DType::f32 && dtype_is_float(g.value(out).dtype) && !(with_loss && loss_reads_storage())) {
    c.layer = nullptr;
    out = c.cast(out, DType::f32);
  }
  b->out = out;
  if (!with_loss) {
    advance_rng(c, Phase::Forward);  // noise layers draw afresh at every prediction
    return b;
  }
  const int forward_end = static_cast<int>(g.nodes().size());
  // f16 training: the loss gradient starts at the loss scale, read on the device (amp.scale[0]).
  ValueId amp_v = kNone, dloss = kNone;
  if (training && amp.defined()) {
    amp_v = bind_state(c, "amp.scale", amp);
    dloss = g.add_view(amp_v, Shape{1}, "loss", Phase::Loss, 0, "amp.scale.value");
  }
  auto [loss, dpred] = loss_nodes(c, out, yb, training, dloss);
  (void)loss;
  if (!training) {
    advance_rng(c, Phase::Forward);
    return b;
  }
  graph::BackwardSpec spec;
  spec.forward_end = forward_end;
  spec.seeds[out] = dpred;
  for (const auto& p : c.params)
    if (p.grad != kNone) spec.param_grads[p.value] = p.grad;
  graph::build_backward(g, spec);
  if (opts.communicator) gradient_all_reduce_nodes(c);
  optimizer_nodes(c, amp_v);
  advance_rng(c, Phase::Optimizer);
  return b;
}

graph::ExecutorOptions Model::Impl::exec_options(const std::set<ValueId>& keep) const {
  graph::ExecutorOptions eo;
  eo.cuda_graphs = opts.cuda_graphs;
  // bf16/f16: the 16-bit GEMMs compute in fp32 whatever the mode; the ops kept in f32 run in fp32.
  auto math = [](Precision p) { return p == Precision::tf32 ? MathMode::TF32 : MathMode::F32; };
  eo.math = math(opts.precision);
  for (const auto& [layer, p] : layer_precision) eo.layer_math[layer] = math(p);
  eo.profile = profiling;
  eo.plan.keep_to_end = keep;
  return eo;
}

Model::Impl::Program Model::Impl::make_program(std::unique_ptr<Build> b, const graph::ExecutorOptions& options) {
  Program p;
  p.out = b->out;
  p.x = b->x;
  p.y = b->y;
  p.exec = std::make_unique<graph::Executor>(std::move(b->g), opts.device, b->c.bound, options);
  return p;
}

Model::Impl::Program Model::Impl::train_program(int64_t B, const DataSpec& d, const graph::ExecutorOptions* options) {
  graph::ExecutorOptions eo = options ? *options : exec_options();
  // Every run of a training program first brings the 16-bit weight copies up to date with their
  // masters when something wrote the weights since (set_weights, a checkpoint, another model).
  eo.before_run = [this] { sync_weight_copies(); };
  return make_program(build(B, d, true, true), eo);
}

Model::Impl::Program Model::Impl::eval_program(int64_t B, const DataSpec& d) {
  auto eo = exec_options();
  if (d.gather) eo.cuda_graphs = false;  // evaluation runs a few steps per epoch; no capture needed
  return make_program(build(B, d, false, true), eo);
}

Model::Impl::Program Model::Impl::predict_program(int64_t B) {
  DataSpec feed;
  feed.gather = false;
  auto b = build(B, feed, false, false);
  const ValueId out = b->out;
  return make_program(std::move(b), exec_options({out}));
}

PlanReport Model::Impl::plan(int64_t B) {
  if (B <= 0) CUDL_FAIL("model ", name, ": batch size must be positive, got ", B);
  // The program fit runs: batches gathered from a table of B rows (its row count does not matter).
  DataSpec d;
  for (size_t k = 0; k < inputs.size(); ++k) {
    d.x.push_back(batched_input(B, k));
    d.x_dtype.push_back(inputs[k]->dtype);
  }
  std::tie(d.y, d.y_dtype) = target_spec(B);
  std::unique_ptr<Build> b = build(B, d, true, true);
  return report_of(b->g, graph::plan_memory(b->g), B);
}

PlanReport Model::Impl::report_of(const graph::Graph& g, const graph::Plan& plan, int64_t B) const {
  PlanReport r;
  r.batch_size = B;
  r.precision = opts.precision;
  r.layer_precision = layer_precision;
  r.device = opts.device;
  r.arena_bytes = plan.arena_bytes;
  r.intermediate_bytes = plan.intermediate_bytes;
  r.kernels_per_step = g.kernel_count();
  const auto& values = g.values();
  for (const graph::Value& val : values) {
    if (val.view_of != kNone) continue;
    switch (val.role) {
      case Role::Param:
        r.param_bytes += val.nbytes();
        break;
      case Role::Grad:
        r.grad_bytes += val.nbytes();
        break;
      case Role::State:
        (val.weight_copy ? r.persistent_copy_bytes : r.state_bytes) += val.nbytes();
        break;
      case Role::Intermediate:
        (val.weight_copy ? r.weight_copy_bytes : r.activation_bytes) += val.nbytes();
        break;
      default:
        break;
    }
  }
  return r;
}

}  // namespace cudl
