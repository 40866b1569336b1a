// train/model.cpp — Model: compile (parameters, optimizer state, plan report), the training,
// evaluation and prediction graphs, and the fit loop that reads metrics once per epoch.
#include "cudl/model.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "backend/backend.hpp"
#include "cudl/error.hpp"
#include "data/prefetch.hpp"
#include "graph/autodiff.hpp"
#include "graph/executor.hpp"
#include "nn/build_context.hpp"
#include "train/model_internals.hpp"

namespace cudl {

using graph::kNone;
using graph::Phase;
using graph::Role;
using graph::ValueId;

// ---------------------------------------------------------------------------------------------
// small public pieces

Dataset Dataset::slice(int64_t begin, int64_t end) const {
  if (begin < 0 || end > size() || begin > end)
    CUDL_FAIL("Dataset::slice: rows [", begin, ", ", end, ") out of range for ", size(), " rows");
  auto rows = [&](const Tensor& t) {
    if (!t.defined()) return Tensor();
    std::vector<int64_t> d = t.shape().dims();
    const size_t row_bytes = t.nbytes() / static_cast<size_t>(std::max<int64_t>(d[0], 1));
    d[0] = end - begin;
    Tensor src = t.view_bytes(static_cast<size_t>(begin) * row_bytes, Shape(d), t.dtype());
    return src.clone();
  };
  Dataset out = *this;
  out.x = rows(x);
  out.y = rows(y);
  return out;
}

int History::epochs() const {
  auto it = metrics.find("loss");
  return it == metrics.end() ? 0 : static_cast<int>(it->second.size());
}

namespace optim {
OptimizerConfig SGD(double lr, double momentum, bool nesterov, double weight_decay) {
  OptimizerConfig c;
  c.kind = OptimizerConfig::SGD;
  c.lr = lr;
  c.momentum = momentum;
  c.nesterov = nesterov;
  c.weight_decay = weight_decay;
  return c;
}
OptimizerConfig Adam(double lr, double beta1, double beta2, double eps) {
  OptimizerConfig c;
  c.kind = OptimizerConfig::Adam;
  c.lr = lr;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.eps = eps;
  return c;
}
OptimizerConfig AdamW(double lr, double weight_decay) {
  OptimizerConfig c = Adam(lr);
  c.kind = OptimizerConfig::AdamW;
  c.weight_decay = weight_decay;
  return c;
}
OptimizerConfig RMSprop(double lr, double alpha, double eps) {
  OptimizerConfig c;
  c.kind = OptimizerConfig::RMSprop;
  c.lr = lr;
  c.alpha = alpha;
  c.eps = eps;
  return c;
}
OptimizerConfig Adagrad(double lr, double eps) {
  OptimizerConfig c;
  c.kind = OptimizerConfig::Adagrad;
  c.lr = lr;
  c.eps = eps;
  return c;
}
}  // namespace optim

namespace {
std::string human_bytes(size_t b) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  if (b >= (1ull << 30)) os << b / double(1ull << 30) << " GiB";
  else if (b >= (1ull << 20)) os << b / double(1ull << 20) << " MiB";
  else if (b >= (1ull << 10)) os << b / double(1ull << 10) << " KiB";
  else os << b << " B";
  return os.str();
}
}  // namespace

std::string PlanReport::str() const {
  std::ostringstream os;
  os << "plan (batch " << batch_size << "): arena peak " << human_bytes(arena_bytes) << " (" << arena_bytes
     << " bytes; " << human_bytes(intermediate_bytes) << " without reuse), parameters " << human_bytes(param_bytes)
     << ", gradients " << human_bytes(grad_bytes) << ", optimizer and other state " << human_bytes(state_bytes)
     << ", kernels per training step " << kernels_per_step;
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Model internals

struct Model::Impl {
  std::shared_ptr<detail::LayerGraph> lg;
  std::vector<int> order;  // var ids reachable from the output, in application order
  int input_var = -1, output_var = -1;
  std::string name;

  bool compiled = false;
  CompileOptions opts;
  Tensor hyper;  // f32[2] on the device: {lr, t}
  Tensor rng;    // i64[2] on the device: {seed, offset}
  std::map<std::string, std::vector<Tensor>> slots;  // optimizer state per "layer.param"
  std::map<std::string, Tensor> accumulators;        // "loss", "correct", "mae" (f32[1], on the device)
  Tensor cursor;  // i64[1] on the device: position in the epoch's permutation
  int64_t step = 0;
  int64_t epochs_done = 0;  // over every fit() call: picks each epoch's shuffle
  double lr = 0;
  PlanReport report;
  bool profiling = false;
  std::map<std::string, graph::OpProfile> profile;

  struct Program {
    std::unique_ptr<graph::Executor> exec;
    ValueId out = kNone;
    ValueId input = kNone;
  };

  // -- building ---------------------------------------------------------------------------------
  ValueId forward(detail::BuildContext& c, ValueId x) {
    std::map<int, ValueId> vals;
    for (int id : order) {
      const auto& e = lg->vars[id];
      if (!e.layer) {
        if (id != input_var) CUDL_FAIL("model ", name, ": output depends on input '", e.name, "' not given to the model");
        vals[id] = x;
        continue;
      }
      std::vector<int> ins;
      for (int v : e.inputs) ins.push_back(vals.at(v));
      c.layer = e.layer.get();
      std::vector<int> outs = e.layer->build(c, ins);
      c.layer = nullptr;
      vals[id] = outs.at(0);
    }
    return vals.at(output_var);
  }

  Shape sample_shape(int var) const { return lg->vars[var].shape; }

  OpKind loss_op() const {
    const std::string& n = opts.loss.name;
    if (n == "sparse_categorical_crossentropy" || n == "cross_entropy") return OpKind::CrossEntropyLoss;
    if (n == "categorical_crossentropy") return OpKind::SoftCrossEntropyLoss;
    if (n == "mse" || n == "mean_squared_error") return OpKind::MseLoss;
    if (n == "mae" || n == "l1" || n == "mean_absolute_error") return OpKind::L1Loss;
    if (n == "huber") return OpKind::HuberLoss;
    if (n == "binary_crossentropy" || n == "bce") return OpKind::BceLoss;
    if (n == "bce_with_logits") return OpKind::BceWithLogitsLoss;
    if (n == "nll") return OpKind::NllLoss;
    CUDL_FAIL("model ", name, ": unknown loss '", n, "'");
  }
  bool label_loss() const {
    OpKind k = loss_op();
    return k == OpKind::CrossEntropyLoss || k == OpKind::NllLoss;
  }
  bool wants(const std::string& metric) const {
    return std::find(opts.metrics.begin(), opts.metrics.end(), metric) != opts.metrics.end();
  }

  Tensor& acc(const std::string& key) {
    auto it = accumulators.find(key);
    if (it == accumulators.end()) it = accumulators.emplace(key, Tensor::zeros(Shape{1}, DType::f32, opts.device)).first;
    return it->second;
  }

  ValueId bind_state(detail::BuildContext& c, const std::string& nm, const Tensor& t, Role role = Role::State) {
    ValueId v = c.g->add_value(nm, t.shape(), t.dtype(), role);
    c.bound[v] = t;
    return v;
  }

  // The data node: rows perm[cursor .. cursor + B) of data_x (normalised when u8) and data_y,
  // then cursor += B, in one GatherBatch.
  std::pair<ValueId, ValueId> data_nodes(detail::BuildContext& c, const Tensor& dx, const Tensor& dy, const Tensor& perm,
                                         float mean, float stdv) {
    graph::Graph& g = *c.g;
    const int64_t B = c.batch;
    if (dx.dtype() != DType::u8 && dx.dtype() != DType::f32)
      CUDL_FAIL("model ", name, ": x must be f32 or u8, got ", dx.dtype());
    ValueId vx = bind_state(c, "data.x", dx, Role::Input), vy = bind_state(c, "data.y", dy, Role::Input);
    ValueId vp = bind_state(c, "data.perm", perm, Role::Input), vc = bind_state(c, "data.cursor", cursor);
    std::vector<int64_t> xd = dx.shape().dims();
    xd[0] = B;
    ValueId xb = g.add_value("data.batch_x", Shape(xd), DType::f32, Role::Intermediate);
    std::vector<int64_t> yd = dy.shape().dims();
    yd[0] = B;
    ValueId yb = g.add_value("data.batch_y", Shape(yd), dy.dtype(), Role::Intermediate);
    OpAttrs a;
    a.f[0] = mean;
    a.f[1] = stdv;
    g.add_node(OpKind::GatherBatch, a, {vp, vx, vy}, {xb, yb, vc}, "data", Phase::Forward);
    return {xb, yb};
  }

  void check_targets(const Tensor& y, int64_t batch_rows) const {
    if (label_loss()) {
      if (y.dtype() != DType::i32 || y.shape().rank() != 1)
        CUDL_FAIL("model ", name, ": loss ", opts.loss.name, " needs i32 labels (N,), got y ", y.shape(), " ",
                  y.dtype());
    } else if (y.dtype() != DType::f32) {
      CUDL_FAIL("model ", name, ": loss ", opts.loss.name, " needs f32 targets, got y ", y.shape(), " ", y.dtype());
    }
  }

  // Loss node (+ metrics accumulation). Returns {loss, dpred}.
  std::pair<ValueId, ValueId> loss_nodes(detail::BuildContext& c, ValueId pred, ValueId target, bool with_grad) {
    graph::Graph& g = *c.g;
    const Shape ps = g.value(pred).shape;
    const Shape ts = g.value(target).shape;
    if (label_loss()) {
      if (ps.rank() != 2 || ts.rank() != 1 || ts[0] != ps[0])
        CUDL_FAIL("model ", name, ": loss ", opts.loss.name, " needs logits (N, C) and labels (N,); got ", ps, " and ",
                  ts);
    } else if (ps.numel() != ts.numel()) {
      CUDL_FAIL("model ", name, ": loss ", opts.loss.name, ": prediction ", ps, " and target ", ts,
                " have different sizes");
    }
    ValueId target_v = target;
    if (!label_loss() && ps != ts) target_v = g.add_view(target, ps, "loss", Phase::Loss);
    // The loss op adds to the metric accumulators itself (outputs 3 and 4), so metrics cost no
    // extra launch: loss_acc += B * mean loss, correct_acc += rows whose argmax is the label.
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(Reduction::Mean);
    a.f[0] = loss_op() == OpKind::HuberLoss ? opts.loss.huber_delta : opts.loss.label_smoothing;
    a.f[1] = static_cast<double>(c.batch);
    ValueId loss = g.add_value("loss.value", Shape{1}, DType::f32, Role::Intermediate);
    ValueId dpred = with_grad ? g.add_value("loss.dpred", ps, DType::f32, Role::Intermediate) : kNone;
    std::vector<ValueId> outs{loss, dpred, kNone, bind_state(c, "metric.loss", acc("loss"))};
    if (wants("accuracy")) {
      if (loss_op() != OpKind::CrossEntropyLoss)
        CUDL_FAIL("model ", name, ": metric accuracy needs the sparse_categorical_crossentropy loss");
      outs.push_back(bind_state(c, "metric.correct", acc("correct")));
    }
    g.add_node(loss_op(), a, {pred, target_v, kNone}, outs, "loss", Phase::Loss);
    if (wants("mae")) {  // the batch's L1 sum, averaged over the elements of a sample, accumulated
      OpAttrs s;
      s.i[0] = static_cast<int64_t>(Reduction::Sum);
      s.f[1] = 1.0 / std::max<int64_t>(1, ps.numel() / std::max<int64_t>(c.batch, 1));
      g.add_node(OpKind::L1Loss, s, {pred, target_v, kNone}, {kNone, kNone, kNone, bind_state(c, "metric.mae", acc("mae"))},
                 "metrics", Phase::Metrics);
    }
    return {loss, dpred};
  }

  std::vector<Tensor>& slots_for(const detail::ParamBinding& p, int n) {
    auto& s = slots[p.layer->name() + "." + p.name];
    while (static_cast<int>(s.size()) < n) s.push_back(Tensor::zeros(p.tensor.shape(), DType::f32, opts.device));
    return s;
  }

  void optimizer_nodes(detail::BuildContext& c) {
    graph::Graph& g = *c.g;
    const OptimizerConfig& o = opts.optimizer;
    std::vector<const detail::ParamBinding*> train;
    for (const auto& p : c.params)
      if (p.grad != kNone) train.push_back(&p);
    if (train.empty()) return;
    // L1/L2 penalties per layer.
    std::map<std::pair<float, float>, std::vector<ValueId>> penalties;
    for (const auto* p : train)
      if (p->is_weight && (p->layer->l1() != 0 || p->layer->l2() != 0)) {
        auto& v = penalties[{p->layer->l1(), p->layer->l2()}];
        v.push_back(p->value);
        v.push_back(p->grad);
      }
    for (const auto& [k, groups] : penalties) {
      OpAttrs a;
      a.f[0] = k.first;
      a.f[1] = k.second;
      std::vector<ValueId> ins{kNone};  // the (unused) hyper slot, then (param, grad) groups
      ins.insert(ins.end(), groups.begin(), groups.end());
      g.add_node(OpKind::WeightPenalty, a, ins, {}, "regularizer", Phase::Optimizer);
    }
    if (o.clip_norm > 0) {
      std::vector<ValueId> grads;
      for (const auto* p : train) grads.push_back(p->grad);
      ValueId norm = g.add_value("optim.grad_norm", Shape{1}, DType::f32, Role::Intermediate);
      OpAttrs a;
      a.f[0] = o.clip_norm;
      g.add_node(OpKind::ClipGradNorm, a, grads, {norm}, "optimizer", Phase::Optimizer);
    }
    ValueId hv = bind_state(c, "optim.hyper", hyper);
    OpAttrs a;
    a.i[1] = 1;  // the step advances t = hyper[1] itself: no separate Increment launch
    OpKind op = OpKind::AdamStep;
    int nslots = 0;
    switch (o.kind) {
      case OptimizerConfig::SGD:
        op = OpKind::SgdStep;
        a.f[0] = o.momentum;
        a.f[1] = o.dampening;
        a.f[2] = o.weight_decay;
        a.i[0] = o.nesterov;
        nslots = o.momentum != 0 ? 1 : 0;
        break;
      case OptimizerConfig::Adam:
      case OptimizerConfig::AdamW:
        a.f[0] = o.beta1;
        a.f[1] = o.beta2;
        a.f[2] = o.eps;
        a.f[3] = o.weight_decay;
        a.i[0] = o.kind == OptimizerConfig::AdamW;
        nslots = 2;
        break;
      case OptimizerConfig::RMSprop:
        op = OpKind::RmspropStep;
        a.f[0] = o.alpha;
        a.f[1] = o.eps;
        a.f[2] = o.weight_decay;
        nslots = 1;
        break;
      case OptimizerConfig::Adagrad:
        op = OpKind::AdagradStep;
        a.f[0] = o.eps;
        a.f[1] = o.weight_decay;
        nslots = 1;
        break;
    }
    std::vector<ValueId> ins{hv};
    for (const auto* p : train) {
      ins.push_back(p->value);
      ins.push_back(p->grad);
      auto& s = slots_for(*p, nslots);
      for (int k = 0; k < nslots; ++k)
        ins.push_back(bind_state(c, "optim." + p->layer->name() + "." + p->name + "." + std::to_string(k), s[k]));
    }
    g.add_node(op, a, ins, {}, "optimizer", Phase::Optimizer);
  }

  graph::ExecutorOptions exec_options(const std::set<ValueId>& keep = {}) const {
    graph::ExecutorOptions eo;
    eo.cuda_graphs = opts.cuda_graphs;
    eo.profile = profiling;
    eo.plan.keep_to_end = keep;
    return eo;
  }

  detail::BuildContext context(graph::Graph& g, int64_t batch, bool training) {
    detail::BuildContext c;
    c.g = &g;
    c.batch = batch;
    c.training = training;
    c.device = opts.device;
    c.seed = opts.seed;
    c.rng_tensor = rng;
    return c;
  }

  // Random shift + rotation of the gathered training images (FitOptions::augment). Outside the
  // image it fills with the normalised value of a 0 pixel (u8 data) or 0 (f32 data). The node reads
  // the model's RNG state, so the training program advances its offset every step.
  ValueId augment_node(detail::BuildContext& c, ValueId xb, const FitOptions& fo, float fill) {
    const Shape s = c.g->value(xb).shape;
    if (s.rank() != 4) CUDL_FAIL("model ", name, ": augment needs image batches (N, C, H, W), got ", s);
    ValueId y = c.g->add_value("data.augmented_x", s, DType::f32, Role::Intermediate);
    OpAttrs a;
    a.i[0] = fo.augment_shift;
    a.f[0] = fo.augment_rotation;
    a.f[1] = fill;
    c.g->add_node(OpKind::AugmentImages, a, {xb, c.rng_state()}, {y}, "augment", Phase::Forward);
    return y;
  }

  Program train_program(int64_t B, const Tensor& dx, const Tensor& dy, const Tensor& perm, float mean, float stdv,
                        const FitOptions* augment = nullptr, const graph::ExecutorOptions* options = nullptr) {
    graph::Graph g;
    detail::BuildContext c = context(g, B, true);
    auto [xb, yb] = data_nodes(c, dx, dy, perm, mean, stdv);
    if (augment && augment->augment) xb = augment_node(c, xb, *augment, dx.dtype() == DType::u8 ? -mean / stdv : 0.f);
    ValueId out = forward(c, xb);
    const int forward_end = static_cast<int>(g.nodes().size());
    auto [loss, dpred] = loss_nodes(c, out, yb, true);
    (void)loss;
    graph::BackwardSpec spec;
    spec.forward_end = forward_end;
    spec.seeds[out] = dpred;
    for (const auto& p : c.params)
      if (p.grad != kNone) spec.param_grads[p.value] = p.grad;
    graph::build_backward(g, spec);
    optimizer_nodes(c);
    if (c.rng != kNone) {
      ValueId off = g.add_view(c.rng, Shape{1}, "rng", Phase::Optimizer, sizeof(int64_t), "rng.offset");
      // Dropout element i draws from Philox block i/4 + offset: advance past every block this
      // step used, so the next step's masks are fresh rather than shifted copies.
      int64_t blocks = 1;
      for (const graph::Node& n : g.nodes())
        if (n.op == OpKind::Dropout) blocks = std::max(blocks, (g.value(n.inputs[0]).shape.numel() + 3) / 4);
      OpAttrs inc;
      inc.i[0] = blocks;
      g.add_node(OpKind::Increment, inc, {}, {off}, "rng", Phase::Optimizer);
    }
    Program p;
    p.out = out;
    p.exec = std::make_unique<graph::Executor>(std::move(g), opts.device, c.bound, options ? *options : exec_options());
    return p;
  }

  Program eval_program(int64_t B, const Tensor& dx, const Tensor& dy, const Tensor& perm, float mean, float stdv) {
    graph::Graph g;
    detail::BuildContext c = context(g, B, false);
    auto [xb, yb] = data_nodes(c, dx, dy, perm, mean, stdv);
    ValueId out = forward(c, xb);
    loss_nodes(c, out, yb, false);
    Program p;
    p.out = out;
    auto eo = exec_options();
    eo.cuda_graphs = false;  // evaluation runs a few steps per epoch; no capture needed
    p.exec = std::make_unique<graph::Executor>(std::move(g), opts.device, c.bound, eo);
    return p;
  }

  Program predict_program(int64_t B) {
    graph::Graph g;
    detail::BuildContext c = context(g, B, false);
    Shape in = c.batched(sample_shape(input_var));
    ValueId x = g.add_value("input", in, DType::f32, Role::Input);
    ValueId out = forward(c, x);
    Program p;
    p.out = out;
    p.input = x;
    auto eo = exec_options({out});
    eo.cuda_graphs = false;
    p.exec = std::make_unique<graph::Executor>(std::move(g), opts.device, c.bound, eo);
    return p;
  }

  void collect_profile(const graph::Executor& e) {
    for (const auto& op : e.profile()) {
      auto& p = profile[op.op];
      p.op = op.op;
      p.calls += op.calls;
      p.total_ms += op.total_ms;
    }
  }

  void write_hyper() {  // hyper[0] only: the step count in hyper[1] lives on the device
    hyper.view_bytes(0, Shape{1}, DType::f32).copy_from(Tensor::from_vector(std::vector<float>{static_cast<float>(lr)}, Shape{1}));
  }
};

Model::Model() : impl_(std::make_unique<Impl>()) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model::Model(const Var& input, const Var& output, const std::string& name)
    : Model(std::vector<Var>{input}, std::vector<Var>{output}, name) {}

Model::Model(const std::vector<Var>& inputs, const std::vector<Var>& outputs, const std::string& name) : Model() {
  if (inputs.size() != 1 || outputs.size() != 1)
    CUDL_FAIL("model ", name, ": fit/evaluate/predict support one input and one output; got ", inputs.size(),
              " inputs and ", outputs.size(), " outputs");
  for (const Var& v : inputs)
    if (!v.defined()) CUDL_FAIL("model ", name, ": undefined input Var");
  for (const Var& v : outputs)
    if (!v.defined()) CUDL_FAIL("model ", name, ": undefined output Var");
  impl_->name = name;
  impl_->lg = detail::layer_graph();
  impl_->input_var = inputs[0].id_;
  impl_->output_var = outputs[0].id_;
  if (impl_->lg->vars[impl_->input_var].layer)
    CUDL_FAIL("model ", name, ": the input must be an Input(), not a layer output");
  // Reachable set from the output, in id order (ids are created in application order).
  std::set<int> seen;
  std::vector<int> stack{impl_->output_var};
  while (!stack.empty()) {
    int v = stack.back();
    stack.pop_back();
    if (!seen.insert(v).second) continue;
    for (int u : impl_->lg->vars[v].inputs) stack.push_back(u);
  }
  impl_->order.assign(seen.begin(), seen.end());
  for (int v : impl_->order)
    if (!impl_->lg->vars[v].layer && v != impl_->input_var)
      CUDL_FAIL("model ", name, ": output depends on input '", impl_->lg->vars[v].name, "' not given to the model");
}

Sequential::Sequential(const Shape& input_shape, const std::vector<LayerPtr>& layers, const std::string& name,
                       DType input_dtype) {
  Var x = Input(input_shape, input_dtype, name + ".input");
  Var y = x;
  for (const LayerPtr& l : layers) {
    if (!l) CUDL_FAIL("sequential ", name, ": null layer");
    y = (*l)(y);
  }
  static_cast<Model&>(*this) = Model(x, y, name);
}

void Model::compile(const CompileOptions& options) {
  Impl& m = *impl_;
  if (options.device.is_cuda() && options.device.index() >= cuda_device_count())
    CUDL_FAIL("model ", m.name, ": cannot compile for ", options.device, ": ", cuda_device_count() == 0
                  ? cuda_unavailable_reason() : "no such device");
  if (options.batch_size <= 0) CUDL_FAIL("model ", m.name, ": batch_size must be positive, got ", options.batch_size);
  const bool moved = m.compiled && m.opts.device != options.device;
  m.opts = options;
  m.loss_op();  // validates the loss name
  for (const auto& metric : options.metrics)
    if (metric != "accuracy" && metric != "mae" && metric != "loss")
      CUDL_FAIL("model ", m.name, ": unknown metric '", metric, "' (accuracy, mae)");
  if (moved) {  // parameters follow the model to its new device
    for (int id : m.order)
      if (auto& l = m.lg->vars[id].layer) {
        for (auto& [n, t] : l->params()) t = t.to(options.device);
        for (auto& [n, t] : l->buffers()) t = t.to(options.device);
      }
    m.slots.clear();
    m.accumulators.clear();
  }
  m.lr = options.optimizer.lr;
  m.hyper = Tensor::from_vector<float>({static_cast<float>(m.lr), 0.f}, Shape{2}, options.device);
  m.rng = Tensor::from_vector<int64_t>({static_cast<int64_t>(options.seed & 0x7fffffffffffffffull), 0}, Shape{2},
                                       options.device);
  m.cursor = Tensor::zeros(Shape{1}, DType::i64, options.device);
  m.step = 0;
  m.epochs_done = 0;
  // Build the training program once on placeholder data to create parameters and optimizer
  // state and to report the plan before step 1.
  const int64_t B = options.batch_size;
  std::vector<int64_t> xd{B};
  const Shape in = m.sample_shape(m.input_var);
  xd.insert(xd.end(), in.dims().begin(), in.dims().end());
  Tensor px = Tensor::zeros(Shape(xd), DType::f32, options.device);
  Tensor py;
  if (m.label_loss()) {
    py = Tensor::zeros(Shape{B}, DType::i32, options.device);
  } else {
    std::vector<int64_t> yd{B};
    const Shape os = m.sample_shape(m.output_var);
    yd.insert(yd.end(), os.dims().begin(), os.dims().end());
    py = Tensor::zeros(Shape(yd), DType::f32, options.device);
  }
  Tensor perm = Tensor::zeros(Shape{B}, DType::i32, options.device);
  Impl::Program p = m.train_program(B, px, py, perm, 0.f, 1.f);
  const graph::Executor& e = *p.exec;
  m.report = PlanReport{};
  m.report.batch_size = B;
  m.report.arena_bytes = e.plan().arena_bytes;
  m.report.intermediate_bytes = e.plan().intermediate_bytes;
  m.report.param_bytes = e.bytes_of(Role::Param);
  m.report.grad_bytes = e.bytes_of(Role::Grad);
  m.report.state_bytes = e.bytes_of(Role::State);
  m.report.input_bytes = 0;
  m.report.kernels_per_step = e.kernels_per_run();
  m.compiled = true;
  if (options.verbose) std::printf("%s\n", m.report.str().c_str());
}

const PlanReport& Model::plan_report() const { return impl_->report; }

namespace {
void require_compiled(const Model::Impl& m, const char* what) {
  if (!m.compiled) CUDL_FAIL("model ", m.name, ": ", what, " before compile()");
}

bool stdout_is_tty() { return isatty(fileno(stdout)) != 0; }

/// The rows the data nodes gather from. Device placement: the dataset on the device and the
/// epoch's order as the permutation. Streaming: a prefetcher's two staging slots and the fixed
/// permutation i -> i mod (2 * batch), so step s reads slot s % 2, where its rows were staged.
struct DataSource {
  Tensor x, y, perm;
  std::unique_ptr<data::BatchPrefetcher> prefetch;
  int64_t n = 0, batch = 0;

  DataSource(const Dataset& d, int64_t B, Device dev, DataPlacement placement) : n(d.size()), batch(B) {
    if (placement == DataPlacement::Auto) {
      const size_t bytes = d.x.nbytes() + (d.y.defined() ? d.y.nbytes() : 0);
      placement = dev.is_cuda() && bytes > cuda_device_info(dev.index()).total_memory / 2 ? DataPlacement::Stream
                                                                                           : DataPlacement::Device;
    }
    if (placement == DataPlacement::Stream) {
      prefetch = std::make_unique<data::BatchPrefetcher>(d.x, d.y, B, dev);
      x = prefetch->x();
      y = prefetch->y();
      std::vector<int32_t> slots(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) slots[i] = static_cast<int32_t>(i % (2 * B));
      perm = Tensor::from_vector(slots, Shape{n}, dev);
      return;
    }
    x = d.x.device() == dev ? d.x : d.x.to(dev);
    y = d.y.device() == dev ? d.y : d.y.to(dev);
    perm = Tensor::zeros(Shape{n}, DType::i32, dev);
  }
  /// The epoch's order of rows (each batch takes the next `batch` of them).
  void begin_epoch(const std::vector<int32_t>& order) {
    order_ = &order;
    if (!prefetch) perm.copy_from(Tensor::from_vector(order, Shape{n}));  // one upload per epoch
    else stage(0);
  }
  /// Runs step s of the epoch: when streaming, stages step s + 1 first (its copy overlaps step s)
  /// and orders step s after its own copy.
  void run_step(int64_t s, graph::Executor& exec) {
    if (prefetch) {
      if ((s + 1) * batch < n) stage(s + 1);
      prefetch->begin_step(s);
    }
    exec.run();
    if (prefetch) prefetch->end_step(s);
  }

 private:
  void stage(int64_t s) { prefetch->stage(s, order_->data() + s * batch, std::min(batch, n - s * batch)); }
  const std::vector<int32_t>* order_ = nullptr;
};
}  // namespace

History Model::fit(const Dataset& train_in, const FitOptions& fo) {
  Impl& m = *impl_;
  require_compiled(m, "fit");
  if (fo.batch_size <= 0) CUDL_FAIL("model ", m.name, ": batch_size must be positive, got ", fo.batch_size);
  if (fo.epochs < 0) CUDL_FAIL("model ", m.name, ": epochs must be >= 0, got ", fo.epochs);
  Dataset train = train_in;
  Dataset val;
  const Dataset* valp = fo.validation_data;
  if (fo.validation_split > 0) {
    if (fo.validation_split >= 1) CUDL_FAIL("model ", m.name, ": validation_split must be in [0, 1), got ", fo.validation_split);
    const int64_t n = train_in.size(), nv = static_cast<int64_t>(n * fo.validation_split);
    val = train_in.slice(n - nv, n);
    train = train_in.slice(0, n - nv);
    valp = &val;
  }
  const int64_t N = train.size();
  if (N == 0) CUDL_FAIL("model ", m.name, ": empty training set");
  if (!train.y.defined() || train.y.shape().rank() == 0 || train.y.shape()[0] != N)
    CUDL_FAIL("model ", m.name, ": x has ", N, " rows but y has ", train.y.defined() ? train.y.shape()[0] : 0);
  {
    std::vector<int64_t> want{N};
    const Shape in = m.sample_shape(m.input_var);
    want.insert(want.end(), in.dims().begin(), in.dims().end());
    if (train.x.shape() != Shape(want))
      CUDL_FAIL("model ", m.name, ": x is ", train.x.shape(), " but the model's input is ", Shape(want));
  }
  m.check_targets(train.y, N);
  const Device dev = m.opts.device;
  const int64_t B = std::min(fo.batch_size, N), full = N / B, rest = N % B;
  if (fo.augment && (fo.augment_shift < 0 || !(fo.augment_rotation >= 0 && fo.augment_rotation <= 180)))
    CUDL_FAIL("model ", m.name, ": augment_shift must be >= 0 and augment_rotation in [0, 180] degrees, got ",
              fo.augment_shift, " and ", fo.augment_rotation);
  // The dataset lives on the device for the whole fit (batches are gathered there), or streams.
  DataSource src(train, B, dev, fo.data_placement);
  Impl::Program main = m.train_program(B, src.x, src.y, src.perm, train.mean, train.std, &fo);
  Impl::Program tail;
  if (rest) tail = m.train_program(rest, src.x, src.y, src.perm, train.mean, train.std, &fo);
  m.profile.clear();

  History h;
  std::vector<int32_t> order(N);
  for (auto& cb : fo.callbacks) cb->on_train_begin(*this);
  stop_ = false;
  for (int epoch = 0; epoch < fo.epochs && !stop_; ++epoch) {
    for (auto& cb : fo.callbacks) cb->on_epoch_begin(*this, epoch);
    const auto t0 = std::chrono::steady_clock::now();
    std::iota(order.begin(), order.end(), 0);
    // Each epoch's order depends only on the seeds and the epoch number, so a run resumed from a
    // checkpoint (which stores the epoch) sees the same batches as an uninterrupted one.
    std::mt19937_64 rng(fo.seed ^ (m.opts.seed * 0x9E3779B97F4A7C15ull) ^
                        (static_cast<uint64_t>(m.epochs_done) * 0xD1B54A32D192ED03ull));
    if (fo.shuffle) std::shuffle(order.begin(), order.end(), rng);
    src.begin_epoch(order);
    m.cursor.fill(0);
    for (auto& [k, t] : m.accumulators) t.fill(0);
    const int64_t steps = full + (rest ? 1 : 0);
    const bool tty = fo.verbose > 0 && stdout_is_tty();
    const int64_t log_every = fo.log_every > 0 ? fo.log_every : std::max<int64_t>(1, steps / 20);
    for (int64_t s = 0; s < steps; ++s) {
      src.run_step(s, *(s < full ? main : tail).exec);
      ++m.step;
      for (auto& cb : fo.callbacks) cb->on_batch_end(*this, m.step);
      if (tty && ((s + 1) % log_every == 0 || s + 1 == steps)) {
        const double seen = static_cast<double>(std::min<int64_t>((s + 1) * B, N));
        const double loss = m.acc("loss").item(0) / seen;
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double eta = el / (s + 1) * (steps - s - 1);
        std::printf("\repoch %d/%d %5.1f%% loss %.4f  %.0f samples/s  ETA %.1fs   ", epoch + 1, fo.epochs,
                    100.0 * (s + 1) / steps, loss, seen / std::max(el, 1e-9), eta);
        std::fflush(stdout);
      }
    }
    main.exec->synchronize();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::map<std::string, double> logs;
    logs["loss"] = m.acc("loss").item(0) / N;
    if (m.wants("accuracy")) logs["accuracy"] = m.acc("correct").item(0) / N;
    if (m.wants("mae")) logs["mae"] = m.acc("mae").item(0) / N;
    if (valp) {
      EvalResult r = evaluate(*valp, std::max<int64_t>(B, 256));
      for (const auto& [k, v] : r.metrics) logs["val_" + k] = v;
    }
    logs["epoch_seconds"] = secs;
    for (const auto& [k, v] : logs)
      if (k != "epoch_seconds") h.metrics[k].push_back(v);
    h.metrics["epoch_seconds"].push_back(secs);
    if (fo.verbose > 0) {
      std::printf("%sepoch %d/%d - %.2fs", tty ? "\r" : "", epoch + 1, fo.epochs, secs);
      for (const auto& [k, v] : logs)
        if (k != "epoch_seconds") std::printf(" - %s %.4f", k.c_str(), v);
      std::printf("%s\n", tty ? "          " : "");
      std::fflush(stdout);
    }
    ++m.epochs_done;
    for (auto& cb : fo.callbacks) cb->on_epoch_end(*this, epoch, logs);
  }
  if (m.profiling) {
    m.collect_profile(*main.exec);
    if (tail.exec) m.collect_profile(*tail.exec);
  }
  for (auto& cb : fo.callbacks) cb->on_train_end(*this);
  return h;
}

EvalResult Model::evaluate(const Dataset& data, int64_t batch_size, DataPlacement placement) {
  Impl& m = *impl_;
  require_compiled(m, "evaluate");
  const int64_t N = data.size();
  if (N == 0) CUDL_FAIL("model ", m.name, ": evaluate on an empty dataset");
  if (!data.y.defined() || data.y.shape()[0] != N)
    CUDL_FAIL("model ", m.name, ": x has ", N, " rows but y has ", data.y.defined() ? data.y.shape()[0] : 0);
  m.check_targets(data.y, N);
  if (batch_size <= 0) CUDL_FAIL("model ", m.name, ": evaluate batch_size must be positive, got ", batch_size);
  const Device dev = m.opts.device;
  std::vector<int32_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  const int64_t B = std::min(batch_size, N), full = N / B, rest = N % B;
  DataSource src(data, B, dev, placement);
  // Evaluation has its own accumulators and cursor: swap them in, restore after.
  auto saved_acc = m.accumulators;
  Tensor saved_cursor = m.cursor;
  m.accumulators.clear();
  m.cursor = Tensor::zeros(Shape{1}, DType::i64, dev);
  EvalResult r;
  try {
    Impl::Program main = m.eval_program(B, src.x, src.y, src.perm, data.mean, data.std);
    src.begin_epoch(order);
    for (int64_t s = 0; s < full; ++s) src.run_step(s, *main.exec);
    if (rest) {
      Impl::Program tail = m.eval_program(rest, src.x, src.y, src.perm, data.mean, data.std);
      src.run_step(full, *tail.exec);
    }
    r.metrics["loss"] = m.acc("loss").item(0) / N;
    if (m.wants("accuracy")) r.metrics["accuracy"] = m.acc("correct").item(0) / N;
    if (m.wants("mae")) r.metrics["mae"] = m.acc("mae").item(0) / N;
  } catch (...) {
    m.accumulators = saved_acc;
    m.cursor = saved_cursor;
    throw;
  }
  m.accumulators = saved_acc;
  m.cursor = saved_cursor;
  return r;
}

Tensor Model::predict(const Tensor& x, int64_t batch_size, float mean, float stdv) {
  Impl& m = *impl_;
  require_compiled(m, "predict");
  const Shape in = m.sample_shape(m.input_var);
  if (x.shape().rank() != in.rank() + 1 || Shape(std::vector<int64_t>(x.shape().dims().begin() + 1, x.shape().dims().end())) != in)
    CUDL_FAIL("model ", m.name, ": predict input ", x.shape(), " does not match the model's input (N, ", in.str().substr(1));
  const int64_t N = x.shape()[0];
  std::vector<int64_t> od{N};
  const Shape os = m.sample_shape(m.output_var);
  od.insert(od.end(), os.dims().begin(), os.dims().end());
  Tensor out = Tensor::empty(Shape(od), DType::f32, Device::cpu());
  if (N == 0) return out;
  Tensor xf = x;
  if (x.dtype() == DType::u8) {  // normalise images on the host for prediction
    std::vector<uint8_t> raw = x.to_vector<uint8_t>();
    std::vector<float> f(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) f[i] = (raw[i] / 255.f - mean) / stdv;
    xf = Tensor::from_vector(f, x.shape());
  } else if (x.dtype() != DType::f32) {
    CUDL_FAIL("model ", m.name, ": predict input must be f32 or u8, got ", x.dtype());
  }
  const int64_t B = std::min(batch_size, N);
  std::map<int64_t, Impl::Program> programs;
  const size_t in_row = xf.nbytes() / N, out_row = out.nbytes() / N;
  for (int64_t s = 0; s < N; s += B) {
    const int64_t b = std::min(B, N - s);
    auto it = programs.find(b);
    if (it == programs.end()) it = programs.emplace(b, m.predict_program(b)).first;
    Impl::Program& p = it->second;
    Tensor dst = p.exec->tensor(p.input);
    dst.copy_from(xf.view_bytes(s * in_row, dst.shape(), DType::f32));
    p.exec->run();
    Tensor res = p.exec->tensor(p.out);
    out.view_bytes(s * out_row, res.shape(), DType::f32).copy_from(res);
  }
  return out;
}

std::string Model::summary() const {
  const Impl& m = *impl_;
  std::ostringstream os;
  os << "Model: " << m.name << "\n";
  os << std::left << std::setw(24) << "layer (type)" << std::setw(22) << "output shape" << "params\n";
  os << std::string(58, '-') << "\n";
  int64_t total = 0;
  for (int id : m.order) {
    const auto& e = m.lg->vars[id];
    int64_t n = 0;
    if (e.layer)
      for (const auto& [k, t] : e.layer->params()) n += t.numel();
    total += n;
    std::string shape = "(None, " + e.shape.str().substr(1);
    if (e.shape.rank() == 0) shape = "(None,)";
    if (e.shape.rank() == 1) shape = "(None, " + std::to_string(e.shape[0]) + ")";
    std::string label = e.layer ? e.layer->name() + " (" + e.layer->kind() + ")" : e.name + " (input)";
    os << std::setw(24) << label << std::setw(22) << shape << (e.layer ? std::to_string(n) : "") << "\n";
  }
  os << std::string(58, '-') << "\n";
  os << "total parameters: " << total << (m.compiled ? "" : " (created at compile)") << "\n";
  if (m.compiled) os << m.report.str() << "\n";
  return os.str();
}

double Model::learning_rate() const { return impl_->lr; }

void Model::set_learning_rate(double lr) {
  require_compiled(*impl_, "set_learning_rate");
  if (!(lr >= 0) || !std::isfinite(lr)) CUDL_FAIL("model ", impl_->name, ": invalid learning rate ", lr);
  impl_->lr = lr;
  impl_->write_hyper();
}

Device Model::device() const { return impl_->opts.device; }
int64_t Model::step() const { return impl_->step; }
void Model::set_step(int64_t step) { impl_->step = step; }
int64_t Model::epoch() const { return impl_->epochs_done; }
void Model::set_epoch(int64_t epoch) { impl_->epochs_done = epoch; }

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const LayerPtr& l : layers())
    for (const auto& [k, t] : l->params()) n += t.numel();
  return n;
}

std::vector<LayerPtr> Model::layers() const {
  std::vector<LayerPtr> out;
  for (int id : impl_->order)
    if (impl_->lg->vars[id].layer) {
      const LayerPtr& l = impl_->lg->vars[id].layer;
      if (std::find(out.begin(), out.end(), l) == out.end()) out.push_back(l);
    }
  return out;
}

std::vector<std::pair<std::string, Tensor>> Model::state_tensors() {
  Impl& m = *impl_;
  require_compiled(m, "state_tensors");
  std::vector<std::pair<std::string, Tensor>> out;
  for (const LayerPtr& l : layers()) {
    for (auto& [k, t] : l->params()) out.emplace_back(l->name() + "." + k, t);
    for (auto& [k, t] : l->buffers()) out.emplace_back(l->name() + "." + k, t);
  }
  for (auto& [k, v] : m.slots)
    for (size_t i = 0; i < v.size(); ++i) out.emplace_back("optim." + k + "." + std::to_string(i), v[i]);
  out.emplace_back("optim.hyper", m.hyper);
  out.emplace_back("rng", m.rng);
  return out;
}

void Model::set_profiling(bool on) { impl_->profiling = on; }

std::string Model::profile_table() const {
  std::vector<graph::OpProfile> rows;
  double total = 0;
  for (const auto& [k, p] : impl_->profile) {
    rows.push_back(p);
    total += p.total_ms;
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.total_ms > b.total_ms; });
  std::ostringstream os;
  os << std::left << std::setw(24) << "op" << std::right << std::setw(10) << "calls" << std::setw(14) << "total ms"
     << std::setw(12) << "mean us" << std::setw(9) << "share" << "\n";
  for (const auto& p : rows)
    os << std::left << std::setw(24) << p.op << std::right << std::setw(10) << p.calls << std::setw(14) << std::fixed
       << std::setprecision(2) << p.total_ms << std::setw(12) << std::setprecision(1)
       << 1000.0 * p.total_ms / std::max<int64_t>(p.calls, 1) << std::setw(8) << std::setprecision(1)
       << (total > 0 ? 100.0 * p.total_ms / total : 0.0) << "%\n";
  return os.str();
}

std::unique_ptr<graph::Executor> detail::ModelInternals::training_step(Model& model, const Dataset& data,
                                                                       int64_t batch,
                                                                       const graph::ExecutorOptions& options) {
  Model::Impl& m = *model.impl_;
  require_compiled(m, "training_step");
  const Device dev = m.opts.device;
  const int64_t n = data.size();
  if (batch <= 0 || batch > n) CUDL_FAIL("model ", m.name, ": training_step batch ", batch, " for ", n, " rows");
  m.check_targets(data.y, n);
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  return m.train_program(batch, data.x.to(dev), data.y.to(dev), Tensor::from_vector(order, Shape{n}, dev), data.mean,
                         data.std, nullptr, &options)
      .exec;
}

Tensor ensemble_predict(std::vector<Model*> models, const Tensor& x, int64_t batch_size) {
  if (models.empty()) CUDL_FAIL("ensemble_predict: no models");
  Tensor sum;
  for (Model* m : models) {
    Tensor p = m->predict(x, batch_size);
    if (!sum.defined()) {
      sum = p;
      continue;
    }
    if (p.shape() != sum.shape())
      CUDL_FAIL("ensemble_predict: models disagree on the output shape: ", sum.shape(), " vs ", p.shape());
    float* s = sum.data_as<float>();
    const float* q = p.data_as<float>();
    for (int64_t i = 0; i < p.numel(); ++i) s[i] += q[i];
  }
  float* s = sum.data_as<float>();
  for (int64_t i = 0; i < sum.numel(); ++i) s[i] /= static_cast<float>(models.size());
  return sum;
}

}  // namespace cudl
