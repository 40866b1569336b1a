// train/optimizers.cpp — optimizers as values (by name or by function), and the graph nodes a model
// adds for them: metric accumulators, the gradient all-reduce, penalties, clipping, the step and the
// 16-bit weight copies it writes. The losses are in train/losses.cpp.
#include <algorithm>
#include <cctype>
#include <set>
#include <utility>

#include "backend/backend.hpp"
#include "backend/communicator.hpp"
#include "cudl/distributed.hpp"
#include "cudl/error.hpp"
#include "nn/layer_impl.hpp"
#include "ops/collective.hpp"
#include "ops/optim.hpp"
#include "ops/precision.hpp"
#include "train/model_impl.hpp"

namespace cudl {

using graph::kNone;
using graph::Phase;
using graph::Role;
using graph::ValueId;

// ---------------------------------------------------------------------------------------------
// optimizers

namespace optim {
Optimizer SGD(double lr, double momentum, bool nesterov, double weight_decay) {
  Optimizer c;
  c.kind = Optimizer::SGD;
  c.lr = lr;
  c.momentum = momentum;
  c.nesterov = nesterov;
  c.weight_decay = weight_decay;
  return c;
}
Optimizer Adam(double lr, double beta1, double beta2, double eps) {
  Optimizer c;
  c.kind = Optimizer::Adam;
  c.lr = lr;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.eps = eps;
  return c;
}
Optimizer AdamW(double lr, double weight_decay) {
  Optimizer c = Adam(lr);
  c.kind = Optimizer::AdamW;
  c.weight_decay = weight_decay;
  return c;
}
Optimizer RMSprop(double lr, double alpha, double eps) {
  Optimizer c;
  c.kind = Optimizer::RMSprop;
  c.lr = lr;
  c.alpha = alpha;
  c.eps = eps;
  return c;
}
Optimizer Adagrad(double lr, double eps) {
  Optimizer c;
  c.kind = Optimizer::Adagrad;
  c.lr = lr;
  c.eps = eps;
  return c;
}
}  // namespace optim

std::string ascii_lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return s;
}

Optimizer::Optimizer(const std::string& name) {
  const std::string n = ascii_lower(name);
  if (n == "sgd")
    *this = optim::SGD();
  else if (n == "adam")
    *this = optim::Adam();
  else if (n == "adamw")
    *this = optim::AdamW();
  else if (n == "rmsprop")
    *this = optim::RMSprop();
  else if (n == "adagrad")
    *this = optim::Adagrad();
  else
    CUDL_FAIL("unknown optimizer '", name, "' (sgd, adam, adamw, rmsprop, adagrad)");
}

const char* Optimizer::name() const {
  switch (kind) {
    case SGD:
      return "sgd";
    case Adam:
      return "adam";
    case AdamW:
      return "adamw";
    case RMSprop:
      return "rmsprop";
    case Adagrad:
      return "adagrad";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// graph nodes

bool Model::Impl::wants(const std::string& metric) const {
  return std::find(opts.metrics.begin(), opts.metrics.end(), metric) != opts.metrics.end();
}

Tensor& Model::Impl::acc(const std::string& key) {
  auto it = accumulators.find(key);
  if (it == accumulators.end()) it = accumulators.emplace(key, Tensor::zeros(Shape{1}, DType::f32, opts.device)).first;
  return it->second;
}

ValueId Model::Impl::bind_state(detail::BuildContext& c, const std::string& nm, const Tensor& t, Role role) {
  ValueId v = c.g->add_value(nm, t.shape(), t.dtype(), role);
  c.bound[v] = t;
  return v;
}

Logs Model::Impl::read_metrics(double rows) {
  Logs logs;
  logs["loss"] = acc("loss").item(0) / rows;
  if (wants("accuracy")) logs["accuracy"] = acc("correct").item(0) / rows;
  if (wants("mae")) logs["mae"] = acc("mae").item(0) / rows;
  return logs;
}

void Model::Impl::gradient_all_reduce_nodes(detail::BuildContext& c) {
  // Data-parallel: every gradient is averaged over the ranks before anything reads it (penalties,
  // clipping, the step), inside the step's program, so a captured step stays one graph launch.
  // Gradients are grouped, in the order the backward pass finishes them, into buckets of up to
  // bucket_bytes; each bucket starts on the communicator's queue right after the last node that
  // writes one of its gradients, overlapping the rest of the backward pass, and one finish node
  // before the optimizer waits for them all.
  graph::Graph& g = *c.g;
  DeviceCommunicator& comm = opts.communicator->backend();
  std::vector<ValueId> grads;
  for (const auto& p : c.params)
    if (p.grad != kNone) grads.push_back(p.grad);
  if (grads.empty()) return;
  std::map<ValueId, int> last_write;  // gradient -> index of the last node writing it (or a view of it)
  for (ValueId v : grads) last_write[v] = -1;
  const auto& nodes = g.nodes();
  for (int i = 0; i < static_cast<int>(nodes.size()); ++i)
    for (ValueId o : nodes[i].outputs)
      if (o != kNone)
        if (auto it = last_write.find(g.storage_root(o)); it != last_write.end()) it->second = i;
  std::stable_sort(grads.begin(), grads.end(), [&](ValueId a, ValueId b) { return last_write[a] < last_write[b]; });
  std::vector<std::pair<int, std::vector<ValueId>>> buckets;  // (insert after node, gradients)
  size_t bytes = 0;
  for (ValueId v : grads) {
    const size_t n = g.value(v).nbytes();
    if (buckets.empty() || bytes + n > comm.bucket_bytes) {
      buckets.push_back({-1, {}});
      bytes = 0;
    }
    buckets.back().first = std::max(buckets.back().first, last_write[v]);
    buckets.back().second.push_back(v);
    bytes += n;
  }
  // The executor puts a bucket's gradients one after another at 16-byte boundaries: those whose
  // size is a multiple of 16 bytes go first, so they (and the first odd-sized one) stay adjacent
  // and the bucket is one call.
  for (auto& [pos, vs] : buckets)
    std::stable_partition(vs.begin(), vs.end(), [&](ValueId v) { return g.value(v).nbytes() % 16 == 0; });
  const OpAttrs start = ops::AllReduceAttrs{&comm, true, ops::AllReduceStage::kStart}.to_op_attrs();
  const OpAttrs finish = ops::AllReduceAttrs{&comm, true, ops::AllReduceStage::kFinish}.to_op_attrs();
  for (size_t b = 0; b < buckets.size(); ++b)  // each earlier insertion moved this bucket's place up by one
    g.insert_node(buckets[b].first + 1 + static_cast<int>(b), OpKind::AllReduce, start, buckets[b].second,
                  "data_parallel/bucket" + std::to_string(b), Phase::Backward);
  g.add_node(OpKind::AllReduce, finish, grads, {}, "data_parallel", Phase::Optimizer);
}

void Model::Impl::optimizer_nodes(detail::BuildContext& c, ValueId amp_state) {
  graph::Graph& g = *c.g;
  const Optimizer& o = opts.optimizer;
  std::vector<const detail::ParamBinding*> train;
  for (const auto& p : c.params)
    if (p.grad != kNone) train.push_back(&p);
  if (train.empty()) return;
  ValueId hv = bind_state(c, "optim.hyper", hyper);
  // Loss scaling (f16): the gradients were computed from loss * scale; one AmpUnscale divides them
  // by it before anything reads them, records an overflow in hyper[2], and the step skips on it.
  if (amp_state != kNone) {
    const LossScaleOptions& ls = opts.loss_scale;
    std::vector<ValueId> ins{amp_state, hv};
    for (const auto* p : train) ins.push_back(p->grad);
    const OpAttrs a =
        ops::AmpUnscaleAttrs{ls.growth_factor, ls.backoff_factor, ls.growth_interval}.to_op_attrs();
    g.add_node(OpKind::AmpUnscale, a, ins, {}, "loss_scale", Phase::Optimizer);
  }
  // L1/L2 penalties per layer.
  std::map<std::pair<float, float>, std::vector<ValueId>> penalties;
  for (const auto* p : train)
    if (p->is_weight && (p->layer->l1() != 0 || p->layer->l2() != 0)) {
      auto& v = penalties[{p->layer->l1(), p->layer->l2()}];
      v.push_back(p->value);
      v.push_back(p->grad);
    }
  for (const auto& [k, groups] : penalties) {
    const OpAttrs a = ops::WeightPenaltyAttrs{k.first, k.second}.to_op_attrs();
    std::vector<ValueId> ins{kNone};  // the (unused) hyper slot, then (param, grad) groups
    ins.insert(ins.end(), groups.begin(), groups.end());
    g.add_node(OpKind::WeightPenalty, a, ins, {}, "regularizer", Phase::Optimizer);
  }
  if (o.clip_norm > 0) {
    std::vector<ValueId> grads;
    for (const auto* p : train) grads.push_back(p->grad);
    ValueId norm = g.add_value("optim.grad_norm", Shape{1}, DType::f32, Role::Intermediate);
    const OpAttrs a = ops::ClipGradNormAttrs{o.clip_norm}.to_op_attrs();
    g.add_node(OpKind::ClipGradNorm, a, grads, {norm}, "optimizer", Phase::Optimizer);
  }
  // Every step advances t = hyper[1] itself (advance_t): no separate Increment launch.
  OpAttrs a;
  OpKind op = OpKind::AdamStep;
  int nslots = 0;
  switch (o.kind) {
    case Optimizer::SGD:
      op = OpKind::SgdStep;
      a = ops::SgdAttrs{o.momentum, o.dampening, o.weight_decay, o.nesterov, true}.to_op_attrs();
      nslots = o.momentum != 0 ? 1 : 0;
      break;
    case Optimizer::Adam:
    case Optimizer::AdamW:
      a = ops::AdamAttrs{o.beta1, o.beta2, o.eps, o.weight_decay, o.kind == Optimizer::AdamW, true, o.keras_epsilon}
              .to_op_attrs();
      nslots = 2;
      break;
    case Optimizer::RMSprop:
      op = OpKind::RmspropStep;
      a = ops::RmspropAttrs{o.alpha, o.eps, o.weight_decay, true, o.keras_epsilon}.to_op_attrs();
      nslots = 1;
      break;
    case Optimizer::Adagrad:
      op = OpKind::AdagradStep;
      a = ops::AdagradAttrs{o.eps, o.weight_decay, 0, true}.to_op_attrs();
      nslots = 1;
      break;
  }
  if (amp_state != kNone) a.i[ops::kSkipOnFlagSlot] = 1;  // skip_on_flag, in every step's attributes
  // bf16/f16: the step also writes the 16-bit copies the next step's forward reads (weight_copies).
  const std::map<ValueId, ValueId> copies =
      fused_weight_copies ? fuse_weight_casts(c, train) : std::map<ValueId, ValueId>{};
  if (!copies.empty()) a.i[ops::kWeightCopiesSlot] = 1;
  std::vector<ValueId> ins{hv};
  for (const auto* p : train) {
    ins.push_back(p->value);
    ins.push_back(p->grad);
    const std::string key = p->layer_name + "." + p->name;
    auto& s = slots[key];
    while (static_cast<int>(s.size()) < nslots) s.push_back(Tensor::zeros(p->tensor.shape(), DType::f32, opts.device));
    for (int k = 0; k < nslots; ++k) ins.push_back(bind_state(c, "optim." + key + "." + std::to_string(k), s[k]));
    if (!copies.empty()) ins.push_back(copies.count(p->value) ? copies.at(p->value) : kNone);
  }
  g.add_node(op, a, ins, {}, "optimizer", Phase::Optimizer);
}

std::map<ValueId, ValueId> Model::Impl::fuse_weight_casts(detail::BuildContext& c,
                                                          const std::vector<const detail::ParamBinding*>& train) {
  graph::Graph& g = *c.g;
  std::map<ValueId, const detail::ParamBinding*> trained;
  for (const auto* p : train) trained[p->value] = p;
  std::map<ValueId, ValueId> copies;
  std::vector<int> casts;  // node indices, ascending
  for (int i = 0; i < static_cast<int>(g.nodes().size()); ++i) {
    const graph::Node& n = g.nodes()[i];
    if (n.op != OpKind::Cast || n.phase != Phase::Forward || n.inputs.size() != 1 || n.outputs.size() != 1) continue;
    const ValueId master = n.inputs[0], y = n.outputs[0];
    const DType t = g.value(y).dtype;
    // One copy per parameter: a second 16-bit type of the same weight keeps its Cast.
    if (!trained.count(master) || copies.count(master) || (t != DType::bf16 && t != DType::f16)) continue;
    const detail::ParamBinding& p = *trained.at(master);
    WeightCopy& w = weight_copies[p.layer_name + "." + p.name];
    if (!w.copy.defined() || w.copy.dtype() != t || w.copy.shape() != p.tensor.shape() ||
        w.copy.device() != opts.device || w.master.data() != p.tensor.data()) {
      // A new copy (or one for another type or tensor): made equal to round(master) before the next step.
      w = WeightCopy{p.layer, p.tensor, Tensor::empty(p.tensor.shape(), t, opts.device)};
      copies_version.erase(p.layer);
    }
    graph::Value& v = g.value(y);
    v.role = Role::State;
    c.bound[y] = w.copy;
    copies[master] = y;
    casts.push_back(i);
  }
  for (auto it = casts.rbegin(); it != casts.rend(); ++it) g.remove_node(*it);
  return copies;
}

void Model::Impl::sync_weight_copies() {
  std::set<Layer*> stale;
  for (const auto& [key, w] : weight_copies) {
    auto it = copies_version.find(w.layer);
    if (it == copies_version.end() || it->second != detail::LayerAccess::weights_version(*w.layer))
      stale.insert(w.layer);
  }
  for (const auto& [key, w] : weight_copies)
    if (stale.count(w.layer))
      run_op(OpKind::Cast, {TensorView::of(w.master)}, {TensorView::of(w.copy)}, {}, nullptr, "weight_copy");
  // This step writes the weights of every layer it trains (with copies or not, in any precision):
  // other models' copies of them (shared layers) go stale, this model's stay equal.
  for (const LayerPtr& l : layer_list) {
    if (frozen.count(l.get()) || std::as_const(*l).params().empty()) continue;
    detail::LayerAccess::weights_written(*l);
  }
  for (const auto& [key, w] : weight_copies) copies_version[w.layer] = detail::LayerAccess::weights_version(*w.layer);
}

}  // namespace cudl
