// train/losses.cpp — losses as values (by name or by function) and the graph nodes a model adds for
// its loss: the loss op, which also accumulates the loss and accuracy metrics, and the MAE metric.
#include <algorithm>
#include <utility>

#include "cudl/error.hpp"
#include "ops/loss.hpp"
#include "ops/precision.hpp"
#include "train/model_impl.hpp"

namespace cudl {

using graph::kNone;
using graph::Phase;
using graph::Role;
using graph::ValueId;

// ---------------------------------------------------------------------------------------------
// losses

namespace {
struct LossName {
  const char* name;
  Loss::Kind kind;
};
// The first name of each kind is its canonical one.
constexpr LossName kLossNames[] = {
    {"sparse_categorical_crossentropy", Loss::SparseCategoricalCrossentropy},
    {"cross_entropy", Loss::SparseCategoricalCrossentropy},
    {"categorical_crossentropy", Loss::CategoricalCrossentropy},
    {"mse", Loss::MeanSquaredError},
    {"mean_squared_error", Loss::MeanSquaredError},
    {"mae", Loss::MeanAbsoluteError},
    {"mean_absolute_error", Loss::MeanAbsoluteError},
    {"l1", Loss::MeanAbsoluteError},
    {"huber", Loss::Huber},
    {"binary_crossentropy", Loss::BinaryCrossentropy},
    {"bce", Loss::BinaryCrossentropy},
    {"bce_with_logits", Loss::BinaryCrossentropyWithLogits},
    {"nll", Loss::NegativeLogLikelihood},
};

OpKind loss_op(Loss::Kind k) {
  switch (k) {
    case Loss::SparseCategoricalCrossentropy:
      return OpKind::CrossEntropyLoss;
    case Loss::CategoricalCrossentropy:
      return OpKind::SoftCrossEntropyLoss;
    case Loss::MeanSquaredError:
      return OpKind::MseLoss;
    case Loss::MeanAbsoluteError:
      return OpKind::L1Loss;
    case Loss::Huber:
      return OpKind::HuberLoss;
    case Loss::BinaryCrossentropy:
      return OpKind::BceLoss;
    case Loss::BinaryCrossentropyWithLogits:
      return OpKind::BceWithLogitsLoss;
    case Loss::NegativeLogLikelihood:
      return OpKind::NllLoss;
  }
  return OpKind::Count;
}
}  // namespace

Loss::Loss(const std::string& name) {
  const std::string n = ascii_lower(name);
  for (const LossName& l : kLossNames)
    if (n == l.name) {
      kind = l.kind;
      return;
    }
  std::string known;
  for (const LossName& l : kLossNames) known += std::string(known.empty() ? "" : ", ") + l.name;
  CUDL_FAIL("unknown loss '", name, "' (", known, ")");
}

const char* Loss::name() const {
  for (const LossName& l : kLossNames)
    if (l.kind == kind) return l.name;
  return "?";
}

namespace losses {
Loss SparseCategoricalCrossentropy(double label_smoothing) {
  Loss l;
  l.kind = Loss::SparseCategoricalCrossentropy;
  l.label_smoothing = label_smoothing;
  return l;
}
Loss SparseCategoricalCrossentropy(double label_smoothing, int32_t ignore_class) {
  Loss l = SparseCategoricalCrossentropy(label_smoothing);
  l.ignore_class = ignore_class;
  return l;
}
Loss CategoricalCrossentropy() { return Loss("categorical_crossentropy"); }
Loss MeanSquaredError() { return Loss("mse"); }
Loss MeanAbsoluteError() { return Loss("mae"); }
Loss Huber(double delta) {
  Loss l("huber");
  l.huber_delta = delta;
  return l;
}
Loss BinaryCrossentropy(bool from_logits) { return Loss(from_logits ? "bce_with_logits" : "binary_crossentropy"); }
Loss NegativeLogLikelihood() { return Loss("nll"); }
}  // namespace losses

// ---------------------------------------------------------------------------------------------
// graph nodes

void Model::Impl::check_targets(const Tensor& y, int64_t rows) const {
  if (opts.loss.takes_labels()) {
    const Shape want = target_spec(y.shape().rank() > 0 ? y.shape()[0] : 0).first;
    if (y.dtype() != DType::i32 || y.shape() != want)
      CUDL_FAIL("model ", name, ": loss ", opts.loss.name(), " needs i32 labels ", want, " for outputs ",
                output->shape, " per sample, got y ", y.shape(), " ", y.dtype());
  } else if (y.dtype() != DType::f32) {
    CUDL_FAIL("model ", name, ": loss ", opts.loss.name(), " needs f32 targets, got y ", y.shape(), " ", y.dtype());
  }
  if (y.shape().rank() == 0 || y.shape()[0] != rows)
    CUDL_FAIL("model ", name, ": x has ", rows, " rows but y is ", y.shape());
}

bool Model::Impl::loss_reads_storage() const { return ops::storage_slots(loss_op(opts.loss.kind)).input(0); }

std::pair<ValueId, ValueId> Model::Impl::loss_nodes(detail::BuildContext& c, ValueId pred, ValueId target,
                                                    bool with_grad, ValueId dloss) {
  graph::Graph& g = *c.g;
  const Shape ps = g.value(pred).shape;
  const Shape ts = g.value(target).shape;
  const Loss& L = opts.loss;
  const OpKind op = loss_op(L.kind);
  if (L.ignore_class && op != OpKind::CrossEntropyLoss)
    CUDL_FAIL("model ", name, ": loss ", L.name(), " takes no ignore_class (only sparse_categorical_crossentropy)");
  if (L.takes_labels()) {
    const std::vector<int64_t> lead(ps.dims().begin(), ps.dims().end() - (ps.rank() > 0 ? 1 : 0));
    if (ps.rank() < 2 || ts != Shape(lead))
      CUDL_FAIL("model ", name, ": loss ", L.name(), " needs logits (N, ..., C) and labels (N, ...); got ", ps,
                " and ", ts);
  } else if (ps.numel() != ts.numel()) {
    CUDL_FAIL("model ", name, ": loss ", L.name(), ": prediction ", ps, " and target ", ts, " have different sizes");
  }
  ValueId target_v = target;
  if (!L.takes_labels() && ps != ts) target_v = g.add_view(target, ps, "loss", Phase::Loss);
  // The loss op adds to the metric accumulators itself (outputs 3 and 4), so metrics cost no
  // extra launch: loss_acc += B * mean loss, correct_acc += rows whose argmax is the label.
  ops::LossAttrs la{Reduction::Mean, op == OpKind::HuberLoss ? L.huber_delta : L.label_smoothing, double(c.batch)};
  if (op == OpKind::CrossEntropyLoss && L.ignore_class) {
    la.has_ignore = true;
    la.ignore_index = *L.ignore_class;
  }
  const OpAttrs a = la.to_op_attrs();
  ValueId loss = g.add_value("loss.value", Shape{1}, DType::f32, Role::Intermediate);
  // bf16/f16 predictions: the loss widens them itself and writes their gradient in the same type.
  ValueId dpred = with_grad ? g.add_value("loss.dpred", ps, g.value(pred).dtype, Role::Intermediate) : kNone;
  std::vector<ValueId> outs{loss, dpred, kNone, bind_state(c, "metric.loss", acc("loss"))};
  if (wants("accuracy")) {
    if (op != OpKind::CrossEntropyLoss)
      CUDL_FAIL("model ", name, ": metric accuracy needs the sparse_categorical_crossentropy loss");
    outs.push_back(bind_state(c, "metric.correct", acc("correct")));
  }
  g.add_node(op, a, {pred, target_v, with_grad ? dloss : kNone}, outs, "loss", Phase::Loss);
  if (wants("mae")) {  // the batch's L1 sum, averaged over the elements of a sample, accumulated
    const OpAttrs s =
        ops::LossAttrs{Reduction::Sum, 0, 1.0 / std::max<int64_t>(1, ps.numel() / std::max<int64_t>(c.batch, 1))}
            .to_op_attrs();
    g.add_node(OpKind::L1Loss, s, {pred, target_v, kNone},
               {kNone, kNone, kNone, bind_state(c, "metric.mae", acc("mae"))}, "metrics", Phase::Metrics);
  }
  return {loss, dpred};
}

}  // namespace cudl
