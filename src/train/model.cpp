// train/model.cpp — Model: built from the Vars it is given (it holds their application graph and
// names its layers), compile (parameters, optimizer state, the plan), weights and training state.
#include "cudl/model.hpp"

#include <algorithm>
#include <utility>
#include <cmath>
#include <set>

#include "backend/backend.hpp"
#include "cudl/distributed.hpp"
#include "cudl/error.hpp"
#include "ops/optim.hpp"
#include "train/model_impl.hpp"
#include "train/model_internals.hpp"

namespace cudl {

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
  for (Tensor& t : out.xs) t = rows(t);
  return out;
}

int History::epochs() const {
  auto it = metrics.find("loss");
  return it == metrics.end() ? 0 : static_cast<int>(it->second.size());
}

// ---------------------------------------------------------------------------------------------
// construction: the model's own record of its layer graph

Model::Model() : impl_(std::make_unique<Impl>()) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model::Impl& Model::impl() const {
  if (!impl_) CUDL_FAIL("model: used after it was moved from");
  return *impl_;
}

Model::Model(const Var& input, const Var& output, const std::string& name)
    : Model(std::vector<Var>{input}, std::vector<Var>{output}, name) {}

Model::Model(const std::vector<Var>& inputs, const std::vector<Var>& outputs, const std::string& name) : Model() {
  if (inputs.empty() || outputs.size() != 1)
    CUDL_FAIL("model ", name, ": fit/evaluate/predict support one or more inputs and one output; got ", inputs.size(),
              " inputs and ", outputs.size(), " outputs");
  for (const Var& v : inputs)
    if (!v.defined()) CUDL_FAIL("model ", name, ": undefined input Var");
  for (const Var& v : outputs)
    if (!v.defined()) CUDL_FAIL("model ", name, ": undefined output Var");
  Impl& m = *impl_;
  m.name = name;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const detail::VarNode* in = inputs[k].node_.get();
    if (in->layer || in->source) CUDL_FAIL("model ", name, ": input ", k, " must be an Input(), not a layer output");
    if (std::find(m.inputs.begin(), m.inputs.end(), in) != m.inputs.end())
      CUDL_FAIL("model ", name, ": input ", k, " ('", in->name, "') is given twice");
    m.inputs.push_back(in);
  }
  m.output = outputs[0].node_.get();
  auto is_input = [&](const detail::VarNode* n) {
    return std::find(m.inputs.begin(), m.inputs.end(), n) != m.inputs.end();
  };
  // Every application reachable from the output, each after its inputs (iterative post-order DFS).
  std::set<const detail::VarNode*> done;
  std::vector<std::pair<std::shared_ptr<const detail::VarNode>, size_t>> stack{{outputs[0].node_, 0}};
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (done.count(n.get())) {
      stack.pop_back();
      continue;
    }
    if (next < n->inputs.size()) {
      auto child = n->inputs[next++];
      if (!done.count(child.get())) stack.emplace_back(child, 0);
      continue;
    }
    if (!n->layer && !n->source && !is_input(n.get()))
      CUDL_FAIL("model ", name, ": output depends on input '", n->name, "' not given to the model");
    done.insert(n.get());
    m.nodes.push_back(n);
    stack.pop_back();
  }
  for (size_t k = 0; k < m.inputs.size(); ++k)
    if (!done.count(m.inputs[k]))
      CUDL_FAIL("model ", name, ": the output does not depend on input ", k, " ('", m.inputs[k]->name, "')");
  for (const auto& n : m.nodes)
    if (n->layer && !m.positions.count(n->layer.get())) {
      m.positions[n->layer.get()] = static_cast<int>(m.layer_list.size());
      m.layer_list.push_back(n->layer);
    }
  // Names: a layer's own name, else "<kind><n>" numbered per kind in this model, skipping taken names.
  std::map<std::string, const Layer*> taken;
  for (const LayerPtr& l : m.layer_list) {
    if (!detail::LayerAccess::has_name(*l) || detail::LayerAccess::auto_named(*l)) continue;
    auto [it, fresh] = taken.emplace(l->name(), l.get());
    if (!fresh) CUDL_FAIL("model ", name, ": two different layers are named '", l->name(), "'");
    m.names[l.get()] = l->name();
  }
  std::map<std::string, int> counters;
  for (const LayerPtr& l : m.layer_list) {
    if (m.names.count(l.get())) continue;
    std::string n;
    do n = l->kind() + std::to_string(++counters[l->kind()]);
    while (taken.count(n));
    taken.emplace(n, l.get());
    m.names[l.get()] = n;
    detail::LayerAccess::assign_name(*l, n);  // the first model's name, for messages outside a model
  }
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

// ---------------------------------------------------------------------------------------------
// compile

Precision default_precision() { return default_math_mode() == MathMode::TF32 ? Precision::tf32 : Precision::f32; }

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
    case Precision::f16: return "f16";
    default: return "f32";
  }
}

Precision parse_precision(const std::string& name) {
  if (name == "f32" || name == "fp32" || name == "float32") return Precision::f32;
  if (name == "tf32") return Precision::tf32;
  if (name == "bf16" || name == "bfloat16") return Precision::bf16;
  if (name == "f16" || name == "fp16" || name == "float16") return Precision::f16;
  CUDL_FAIL("precision '", name, "' is not one of f32, tf32, bf16, f16");
}

DType precision_storage(Precision p) {
  return p == Precision::bf16 ? DType::bf16 : p == Precision::f16 ? DType::f16 : DType::f32;
}

void Model::compile(const CompileOptions& options) {
  Impl& m = impl();
  if (options.device.is_cuda() && options.device.index() >= cuda_device_count())
    CUDL_FAIL("model ", m.name, ": cannot compile for ", options.device, ": ",
              cuda_device_count() == 0 ? cuda_unavailable_reason() : "no such device");
  for (const auto& metric : options.metrics)
    if (metric != "accuracy" && metric != "mae" && metric != "loss")
      CUDL_FAIL("model ", m.name, ": unknown metric '", metric, "' (accuracy, mae)");
  m.check_learning_rate(options.optimizer.lr);
  const LossScaleOptions& ls = options.loss_scale;
  if (!(ls.initial_scale > 0) || !std::isfinite(static_cast<float>(ls.initial_scale)))
    CUDL_FAIL("model ", m.name, ": loss_scale.initial_scale ", ls.initial_scale, " must be > 0 and finite as a float");
  if (!(ls.growth_factor >= 1) || !std::isfinite(ls.growth_factor))
    CUDL_FAIL("model ", m.name, ": loss_scale.growth_factor ", ls.growth_factor, " must be finite and >= 1");
  if (!(ls.backoff_factor > 0 && ls.backoff_factor <= 1))
    CUDL_FAIL("model ", m.name, ": loss_scale.backoff_factor ", ls.backoff_factor, " must be in (0, 1]");
  if (ls.growth_interval < 1)
    CUDL_FAIL("model ", m.name, ": loss_scale.growth_interval ", ls.growth_interval, " must be >= 1");
  if (options.communicator && options.device != options.communicator->device())
    CUDL_FAIL("model ", m.name, ": compiled for ", options.device, " but the communicator of rank ",
              options.communicator->rank(), " is on ", options.communicator->device());
  // Parameters follow the model to its device (and so to every model sharing the layer).
  for (const LayerPtr& l : m.layer_list) {
    for (auto& [n, t] : l->params())
      if (t.device() != options.device) t = t.to(options.device);
    for (auto& [n, t] : l->buffers())
      if (t.device() != options.device) t = t.to(options.device);
  }
  if (!m.compiled || m.opts.device != options.device) m.accumulators.clear();
  m.opts = options;
  m.slots.clear();
  m.weight_copies.clear();
  m.copies_version.clear();
  m.train_batch.clear();
  m.test_batch.clear();
  m.predict_batch.clear();
  m.frozen.clear();
  m.layer_precision.clear();
  for (const LayerPtr& l : m.layer_list)
    if (l->precision()) m.layer_precision[m.layer_name(l.get())] = *l->precision();
  for (const LayerPtr& l : m.layer_list)
    if (!l->trainable()) m.frozen.insert(l.get());
  m.lr = options.optimizer.lr;
  // With loss scaling hyper has a third element, the skip flag AmpUnscale writes and the step reads.
  std::vector<float> h{static_cast<float>(m.lr), 0.f};
  if (m.scales_loss()) h.push_back(0.f);
  m.hyper = Tensor::from_vector<float>(h, Shape{static_cast<int64_t>(h.size())}, options.device);
  m.amp = m.scales_loss() ? m.initial_amp_state().to(options.device) : Tensor();
  m.rng = Tensor::from_vector<int64_t>({static_cast<int64_t>(options.seed & 0x7fffffffffffffffull), 0}, Shape{2},
                                       options.device);
  m.cursor = Tensor::zeros(Shape{1}, DType::i64, options.device);
  m.step = 0;
  m.epochs_done = 0;
  // Building the training graph creates the parameters (first use of each layer) and the optimizer
  // state; planning it reports the memory of a step before step 1. Nothing else is allocated.
  m.report = m.plan(32);
  if (options.communicator) m.broadcast_state();
  m.compiled = true;
  if (options.verbose) std::printf("%s\n", m.report.str().c_str());
}

void Model::Impl::broadcast_state() {
  // Every rank walks the same layers and names in the same order: one broadcast each.
  distributed::Communicator& comm = *opts.communicator;
  for (const LayerPtr& l : layer_list) {
    for (auto& [n, t] : l->params()) comm.broadcast(t, 0);
    for (auto& [n, t] : l->buffers()) comm.broadcast(t, 0);
  }
}

const PlanReport& Model::plan_report() const { return impl().report; }

PlanReport Model::plan(int64_t batch) const {
  Impl& m = impl();
  m.require_compiled("plan");
  return m.plan(batch);
}

bool Model::Impl::scales_loss() const {
  if (opts.precision == Precision::f16) return true;
  for (const auto& [layer, p] : layer_precision)
    if (p == Precision::f16) return true;
  return false;
}

Tensor Model::Impl::initial_amp_state() const {
  return Tensor::from_vector<float>({static_cast<float>(opts.loss_scale.initial_scale), 0.f, 0.f, 0.f},
                                    Shape{ops::kAmpStateSize});
}

void detail::ModelInternals::set_fused_weight_copies(Model& model, bool fused) {
  Model::Impl& m = model.impl();
  m.fused_weight_copies = fused;
  m.train_batch.clear();
  if (!fused) {
    m.weight_copies.clear();
    m.copies_version.clear();
  }
}

std::map<std::string, Tensor> detail::ModelInternals::weight_copies(const Model& model) {
  std::map<std::string, Tensor> out;
  for (const auto& [key, w] : model.impl().weight_copies) out.emplace(key, w.copy);
  return out;
}

void detail::ModelInternals::reset_loss_scale(Model& model) {
  Model::Impl& m = model.impl();
  if (m.amp.defined()) m.amp.copy_from(m.initial_amp_state());
}

void Model::Impl::check_learning_rate(double lr) const {
  // The rate lives on the device as f32: 1e39 is finite as a double but not there.
  if (!(lr >= 0) || !std::isfinite(static_cast<float>(lr)))
    CUDL_FAIL("model ", name, ": invalid learning rate ", lr, " (must be >= 0 and finite as a float)");
}

void Model::Impl::require_compiled(const char* what) const {
  if (!compiled) CUDL_FAIL("model ", name, ": ", what, " before compile()");
}

// ---------------------------------------------------------------------------------------------
// accessors

double Model::learning_rate() const { return impl().lr; }

double Model::loss_scale() const {
  const Impl& m = impl();
  m.require_compiled("loss_scale");
  return m.amp.defined() ? m.amp.item(0) : 1.0;
}

int64_t Model::skipped_steps() const {
  const Impl& m = impl();
  m.require_compiled("skipped_steps");
  return m.amp.defined() ? static_cast<int64_t>(m.amp.item(2)) : 0;
}

void Model::set_learning_rate(double lr) {
  Impl& m = impl();
  m.require_compiled("set_learning_rate");
  m.check_learning_rate(lr);
  m.lr = lr;
  m.write_hyper();
}

void Model::Impl::write_hyper() {
  hyper.view_bytes(0, Shape{1}, DType::f32)
      .copy_from(Tensor::from_vector(std::vector<float>{static_cast<float>(lr)}, Shape{1}));
}

Device Model::device() const { return impl().opts.device; }

const std::shared_ptr<distributed::Communicator>& Model::communicator() const { return impl().opts.communicator; }
const Optimizer& Model::optimizer() const {
  impl().require_compiled("optimizer");
  return impl().opts.optimizer;
}
int64_t Model::step() const { return impl().step; }
void Model::set_step(int64_t step) { impl().step = step; }
Logs Model::batch_logs() {
  Impl& m = impl();
  if (m.epoch_rows == 0)
    CUDL_FAIL("model ", m.name, ": batch_logs is for Callback::on_batch_end inside fit; no batch of an epoch has run");
  return m.read_metrics(static_cast<double>(m.epoch_rows));
}
int64_t Model::epoch() const { return impl().epochs_done; }
void Model::set_epoch(int64_t epoch) { impl().epochs_done = epoch; }
const std::string& Model::name() const { return impl().name; }

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const LayerPtr& l : layers())
    for (const auto& [k, t] : std::as_const(*l).params()) n += t.numel();
  return n;
}

std::vector<LayerPtr> Model::layers() const { return impl().layer_list; }

LayerPtr Model::layer(const std::string& name) const {
  const Impl& m = impl();
  std::string known;
  for (const LayerPtr& l : m.layer_list) {
    if (m.layer_name(l.get()) == name) return l;
    known += (known.empty() ? "" : ", ") + m.layer_name(l.get());
  }
  CUDL_FAIL("model ", m.name, ": no layer named '", name, "' (layers: ", known, ")");
}

void Model::set_trainable(bool trainable) {
  for (const LayerPtr& l : impl().layer_list) l->set_trainable(trainable);
}

std::vector<Tensor> Model::get_weights() const {
  Impl& m = impl();
  m.require_compiled("get_weights");
  std::vector<Tensor> out;
  for (const LayerPtr& l : m.layer_list)
    for (Tensor& t : l->get_weights()) out.push_back(std::move(t));
  return out;
}

void Model::set_weights(const std::vector<Tensor>& weights) {
  Impl& m = impl();
  m.require_compiled("set_weights");
  size_t total = 0;
  for (const LayerPtr& l : m.layer_list) total += detail::LayerAccess::weights(*l).size();
  if (weights.size() != total)
    CUDL_FAIL("model ", m.name, ": set_weights got ", weights.size(), " tensors, the model has ", total);
  // Every layer's part is checked before any is copied, so a mismatch changes nothing.
  size_t at = 0;
  for (const LayerPtr& l : m.layer_list)
    for (const auto& [k, t] : detail::LayerAccess::weights(*l))
      detail::check_weight("model " + m.name, m.layer_name(l.get()) + "." + k, t, weights[at++]);
  at = 0;
  for (const LayerPtr& l : m.layer_list) {
    const size_t n = detail::LayerAccess::weights(*l).size();
    l->set_weights(std::vector<Tensor>(weights.begin() + at, weights.begin() + at + n));
    at += n;
  }
}

std::vector<std::pair<std::string, Tensor>> Model::state_tensors() {
  Impl& m = impl();
  m.require_compiled("state_tensors");
  std::vector<std::pair<std::string, Tensor>> out;
  for (const LayerPtr& l : m.layer_list) {
    const std::string& ln = m.layer_name(l.get());
    for (auto& [k, t] : l->params()) out.emplace_back(ln + "." + k, t);
    for (auto& [k, t] : l->buffers()) out.emplace_back(ln + "." + k, t);
  }
  for (auto& [k, v] : m.slots)
    for (size_t i = 0; i < v.size(); ++i) out.emplace_back("optim." + k + "." + std::to_string(i), v[i]);
  // lr and t only: the skip flag of f16 training is rewritten every step, so checkpoints of every
  // precision hold the same f32[2].
  out.emplace_back("optim.hyper", m.hyper.view_bytes(0, Shape{2}, DType::f32));
  out.emplace_back("rng", m.rng);
  if (m.amp.defined()) out.emplace_back("amp.scale", m.amp);
  return out;
}

}  // namespace cudl
