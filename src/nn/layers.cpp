// nn/layers.cpp — Var, the layer-application records, and every built-in layer: each checks its
// input shapes (naming the layer and both shapes) and adds its nodes and parameters.
#include <cmath>
#include <map>
#include <utility>

#include "backend/backend.hpp"
#include "cudl/error.hpp"
#include "nn/build_context.hpp"
#include "ops/collective.hpp"
#include "ops/conv.hpp"
#include "ops/elementwise.hpp"
#include "ops/matmul.hpp"
#include "ops/norm.hpp"
#include "ops/pool.hpp"
#include "ops/precision.hpp"
#include "ops/random.hpp"

namespace cudl {
namespace detail {

namespace {
uint64_t mix(uint64_t h, const std::string& s) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;  // FNV-1a
  return h;
}
}  // namespace

uint64_t param_seed(uint64_t seed, int layer_index, const std::string& name) {
  uint64_t h = seed * 0x9E3779B97F4A7C15ull + 1469598103934665603ull;
  h = (h ^ static_cast<uint64_t>(layer_index)) * 1099511628211ull;
  return mix(h, name);
}

void check_weight(const std::string& who, const std::string& what, const Tensor& t, const Tensor& w) {
  if (!w.defined() || w.shape() != t.shape() || w.dtype() != t.dtype())
    CUDL_FAIL(who, ": set_weights: ", what, " is ", t.shape(), " ", t.dtype(), ", got ",
              w.defined() ? w.shape().str() + " " + dtype_name(w.dtype()) : std::string("an undefined tensor"));
}

std::vector<std::pair<std::string, Tensor>> LayerAccess::weights(const Layer& layer) {
  std::vector<std::pair<std::string, Tensor>> all = layer.params_;
  all.insert(all.end(), layer.buffers_.begin(), layer.buffers_.end());
  return all;
}

BuiltinLayer& LayerAccess::builtin(Layer& layer) {
  auto* b = dynamic_cast<BuiltinLayer*>(&layer);
  if (!b)
    CUDL_FAIL("layer ", layer.name(), " (", layer.kind(), "): not a built-in cudl layer; models can only build those");
  return *b;
}

bool LayerAccess::assign_name(Layer& layer, const std::string& name) {
  if (!layer.name_.empty()) return false;
  layer.name_ = name;
  layer.auto_named_ = true;
  return true;
}

Shape BuildContext::batched(const Shape& sample) const {
  std::vector<int64_t> d{batch};
  d.insert(d.end(), sample.dims().begin(), sample.dims().end());
  return Shape(d);
}

graph::ValueId BuildContext::value(const std::string& what, const Shape& shape, DType dtype) {
  return g->add_value((layer ? layer_name : std::string("model")) + "." + what, shape, dtype,
                      graph::Role::Intermediate);
}

DType BuildContext::layer_storage() const {
  if (layer && layer_precision) {
    auto it = layer_precision->find(layer_name);
    if (it != layer_precision->end()) return precision_storage(it->second);
  }
  return storage;
}

graph::ValueId BuildContext::cast(graph::ValueId v, DType dtype) {
  if (g->value(v).dtype == dtype) return v;
  auto key = std::make_pair(v, dtype);
  auto it = casts.find(key);
  if (it != casts.end()) return it->second;
  const graph::Value& val = g->value(v);
  const bool weight = val.role == graph::Role::Param;
  const graph::ValueId y = g->add_value(val.name + "." + dtype_name(dtype), val.shape, dtype, graph::Role::Intermediate);
  g->value(y).weight_copy = weight;
  g->add_node(OpKind::Cast, {}, {v}, {y}, layer ? layer_name : "model", graph::Phase::Forward);
  casts[key] = y;
  return y;
}

void BuildContext::node(OpKind op, const OpAttrs& attrs, std::vector<graph::ValueId> in,
                        std::vector<graph::ValueId> out) {
  const ops::StorageSlots slots = ops::storage_slots(op);
  DType st = slots.any() ? layer_storage() : DType::f32;
  // Outputs the layer made elsewhere (state, parameters, views) keep their type: the node then runs in f32.
  for (size_t k = 0; k < out.size() && st != DType::f32; ++k) {
    if (out[k] == graph::kNone || !slots.output(static_cast<int>(k))) continue;
    const graph::Value& v = g->value(out[k]);
    if (dtype_is_float(v.dtype) && (v.role != graph::Role::Intermediate || v.view_of != graph::kNone)) st = DType::f32;
  }
  for (size_t k = 0; k < in.size(); ++k) {
    if (in[k] == graph::kNone || !dtype_is_float(g->value(in[k]).dtype)) continue;
    in[k] = cast(in[k], slots.input(static_cast<int>(k)) ? st : DType::f32);
  }
  for (size_t k = 0; k < out.size(); ++k) {
    if (out[k] == graph::kNone || !slots.output(static_cast<int>(k))) continue;
    graph::Value& v = g->value(out[k]);
    if (dtype_is_float(v.dtype)) v.dtype = st;
  }
  g->add_node(op, attrs, std::move(in), std::move(out), layer ? layer_name : "model", graph::Phase::Forward);
}

graph::ValueId BuildContext::param(const std::string& name, const Shape& shape, Init init, int64_t fan_in,
                                   int64_t fan_out, bool is_weight) {
  for (const ParamBinding& p : params)
    if (p.layer == layer && p.name == name) return p.value;  // layer applied twice: shared weights
  Tensor* t = nullptr;
  for (const auto& [n, tensor] : std::as_const(*layer).params())  // looking is no write
    if (n == name) t = const_cast<Tensor*>(&tensor);
  if (!t) {
    layer->params().emplace_back(name, Tensor::empty(shape, DType::f32, device));
    t = &layer->params().back().second;
    init_tensor(*t, init, fan_in, fan_out, param_seed(seed, layer_index, name));
  } else if (t->shape() != shape || t->device() != device) {
    CUDL_FAIL("layer ", layer_name, ": parameter ", name, " is ", t->shape(), " on ", t->device(), ", expected ", shape,
              " on ", device, t->device() != device ? " (a layer shared by two models lives on one device)" : "");
  }
  ParamBinding b;
  b.layer = layer;
  b.layer_name = layer_name;
  b.name = name;
  b.tensor = *t;
  b.is_weight = is_weight;
  b.value = g->add_value(layer_name + "." + name, shape, DType::f32, graph::Role::Param);
  bound[b.value] = *t;
  if (!layer_frozen()) b.grad = g->add_value("d" + layer_name + "." + name, shape, DType::f32, graph::Role::Grad);
  params.push_back(b);
  return b.value;
}

bool BuildContext::layer_frozen() const { return frozen ? frozen->count(layer) > 0 : !layer->trainable(); }

graph::ValueId BuildContext::buffer(const std::string& name, const Shape& shape, double value) {
  Tensor* t = nullptr;
  for (auto& [n, tensor] : layer->buffers())
    if (n == name) t = &tensor;
  if (!t) {
    layer->buffers().emplace_back(name, Tensor::full(shape, value, DType::f32, device));
    t = &layer->buffers().back().second;
  } else if (t->shape() != shape || t->device() != device) {
    CUDL_FAIL("layer ", layer_name, ": buffer ", name, " is ", t->shape(), " on ", t->device(), ", expected ", shape,
              " on ", device);
  }
  graph::ValueId v = g->add_value(layer_name + "." + name, shape, DType::f32, graph::Role::State);
  bound[v] = *t;
  return v;
}

graph::ValueId BuildContext::rng_state() {
  if (rng == graph::kNone) {
    rng = g->add_value("rng", Shape{2}, DType::i64, graph::Role::State);
    if (!rng_tensor.defined()) CUDL_FAIL("dropout: the model has no RNG state tensor");
    bound[rng] = rng_tensor;
  }
  return rng;
}

Tensor orthogonal_matrix(const Shape& shape, int64_t seed) {
  if (shape.rank() < 2) CUDL_FAIL("orthogonal initialiser: needs a matrix, got shape ", shape);
  const int64_t rows = shape[0], cols = shape.numel() / std::max<int64_t>(rows, 1);
  // Keras: QR of a normal (max, min) matrix; q's columns (sign-fixed so that diag(r) > 0) are the
  // result, transposed when rows < cols. Modified Gram-Schmidt in double gives exactly that q.
  const int64_t tall = std::max(rows, cols), narrow = std::min(rows, cols);
  Tensor a = Tensor::empty(Shape{tall, narrow}, DType::f32, Device::cpu());
  run_op(OpKind::RandomNormal, {}, {TensorView::of(a)}, ops::RandomNormalAttrs{0, 1, seed}.to_op_attrs(), nullptr,
         "init");
  const float* av = a.data_as<float>();
  std::vector<double> q(av, av + tall * narrow);  // (tall, narrow), column k = q[i * narrow + k]
  for (int64_t k = 0; k < narrow; ++k) {
    for (int64_t prev = 0; prev < k; ++prev) {
      double dot = 0;
      for (int64_t i = 0; i < tall; ++i) dot += q[i * narrow + prev] * q[i * narrow + k];
      for (int64_t i = 0; i < tall; ++i) q[i * narrow + k] -= dot * q[i * narrow + prev];
    }
    double norm = 0;
    for (int64_t i = 0; i < tall; ++i) norm += q[i * narrow + k] * q[i * narrow + k];
    norm = std::sqrt(norm);
    if (!(norm > 0)) CUDL_FAIL("orthogonal initialiser: a rank-deficient draw for shape ", shape);
    for (int64_t i = 0; i < tall; ++i) q[i * narrow + k] /= norm;
  }
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < tall; ++i)
    for (int64_t k = 0; k < narrow; ++k)
      (rows >= cols ? out[i * cols + k] : out[k * cols + i]) = static_cast<float>(q[i * narrow + k]);
  return Tensor::from_vector(out, shape, Device::cpu());
}

void init_tensor(Tensor& t, Init init, int64_t fan_in, int64_t fan_out, uint64_t seed) {
  const double fi = static_cast<double>(std::max<int64_t>(fan_in, 1));
  const double fo = static_cast<double>(std::max<int64_t>(fan_out, 1));
  const int64_t s = static_cast<int64_t>(seed & 0x7fffffffffffffffull);
  auto uniform = [&](double limit) {
    run_op(OpKind::RandomUniform, {}, {TensorView::of(t)}, ops::RandomUniformAttrs{-limit, limit, s}.to_op_attrs(),
           nullptr, "init");
  };
  auto normal = [&](double stddev) {
    run_op(OpKind::RandomNormal, {}, {TensorView::of(t)}, ops::RandomNormalAttrs{0, stddev, s}.to_op_attrs(), nullptr,
           "init");
  };
  switch (init) {
    case Init::Zeros:
      t.fill(0);
      return;
    case Init::Ones:
      t.fill(1);
      return;
    case Init::Normal:
      normal(0.05);
      return;
    case Init::Uniform:
      uniform(0.05);
      return;
    case Init::GlorotUniform:
      uniform(std::sqrt(6.0 / (fi + fo)));
      return;
    case Init::GlorotNormal:
      normal(std::sqrt(2.0 / (fi + fo)));
      return;
    case Init::HeUniform:
      uniform(std::sqrt(6.0 / fi));
      return;
    case Init::HeNormal:
      normal(std::sqrt(2.0 / fi));
      return;
    case Init::Orthogonal:
      t.copy_from(orthogonal_matrix(t.shape(), s));
      return;
  }
}

}  // namespace detail

using detail::BuildContext;
using detail::BuiltinLayer;
using detail::apply_activation;
using detail::check_activation;
using detail::expect_inputs;
using graph::kNone;
using graph::ValueId;

Init init_from_name(const std::string& n) {
  if (n == "zeros") return Init::Zeros;
  if (n == "ones") return Init::Ones;
  if (n == "normal") return Init::Normal;
  if (n == "uniform") return Init::Uniform;
  if (n == "glorot_uniform" || n == "xavier_uniform") return Init::GlorotUniform;
  if (n == "glorot_normal" || n == "xavier_normal") return Init::GlorotNormal;
  if (n == "he_uniform" || n == "kaiming_uniform") return Init::HeUniform;
  if (n == "he_normal" || n == "kaiming_normal") return Init::HeNormal;
  if (n == "orthogonal") return Init::Orthogonal;
  CUDL_FAIL("unknown initialiser '", n, "'");
}

const Shape& Var::shape() const {
  if (!node_) CUDL_FAIL("Var::shape: undefined Var");
  return node_->shape;
}

DType Var::dtype() const {
  if (!node_) CUDL_FAIL("Var::dtype: undefined Var");
  return node_->dtype;
}

Var Input(const Shape& shape, DType dtype, const std::string& name) {
  auto n = std::make_shared<detail::VarNode>();
  n->shape = shape;
  n->dtype = dtype;
  n->name = name;
  Var v;
  v.node_ = std::move(n);
  return v;
}

Layer::Layer(std::string kind, std::string name) : kind_(std::move(kind)), name_(std::move(name)) {}
Layer::~Layer() = default;

std::string Layer::who() const { return "layer " + (name_.empty() ? "" : name_ + " ") + "(" + kind_ + ")"; }

Var Layer::operator()(const Var& x) { return (*this)(std::vector<Var>{x}); }

Var Layer::operator()(const std::vector<Var>& xs) {
  std::vector<Var> outs = apply(xs);
  if (outs.size() != 1)
    CUDL_FAIL(who(), " has ", outs.size(),
              " outputs (return_state): apply it with layer->apply(x), which returns them all");
  return outs[0];
}

std::vector<Var> Layer::apply(const Var& x) { return apply(std::vector<Var>{x}); }

std::vector<Var> Layer::apply(const std::vector<Var>& xs) {
  std::vector<Shape> shapes;
  for (const Var& x : xs) {
    if (!x.defined()) CUDL_FAIL(who(), ": input is an undefined Var");
    shapes.push_back(x.shape());
  }
  const std::vector<Shape> out_shapes = output_shapes(shapes);  // throws naming the layer and shapes
  auto n = std::make_shared<detail::VarNode>();
  n->shape = out_shapes.at(0);
  n->layer = shared_from_this();
  for (const Var& x : xs) n->inputs.push_back(x.node_);
  std::vector<Var> outs(out_shapes.size());
  for (size_t k = 1; k < out_shapes.size(); ++k) {  // further outputs: views of the application
    auto o = std::make_shared<detail::VarNode>();
    o->shape = out_shapes[k];
    o->source = n;
    o->inputs = {n};
    o->output = static_cast<int>(k);
    outs[k].node_ = std::move(o);
  }
  outs[0].node_ = std::move(n);
  return outs;
}

std::vector<Tensor> Layer::get_weights() const {
  std::vector<Tensor> out;
  for (const auto& [k, t] : detail::LayerAccess::weights(*this)) out.push_back(t.to(Device::cpu()));
  return out;
}

void Layer::set_weights(const std::vector<Tensor>& w) {
  const auto all = detail::LayerAccess::weights(*this);
  if (all.empty() && !w.empty())
    CUDL_FAIL(who(), ": set_weights before the layer's weights exist (compile a model that uses it first)");
  if (w.size() != all.size())
    CUDL_FAIL(who(), ": set_weights got ", w.size(), " tensors, the layer has ", all.size(), " (", params_.size(),
              " parameters, ", buffers_.size(), " buffers)");
  for (size_t i = 0; i < all.size(); ++i) detail::check_weight(who(), all[i].first, all[i].second, w[i]);
  detail::LayerAccess::weights_written(*this);  // models' 16-bit copies of these weights are stale
  for (size_t i = 0; i < all.size(); ++i) {
    Tensor dst = all[i].second;
    dst.copy_from(w[i]);
  }
}

namespace {

std::string shapes_str(const std::vector<Shape>& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + s[i].str();
  return r;
}

}  // namespace

void detail::expect_inputs(const Layer& l, const std::vector<Shape>& in, size_t n) {
  if (in.size() != n)
    CUDL_FAIL("layer ", l.name(), " (", l.kind(), "): expects ", n, " input(s), got ", in.size(), ": ", shapes_str(in));
}

namespace {

bool unary_from_name(const std::string& n, UnaryOp& op) {
  static const std::map<std::string, UnaryOp> m = {{"relu", UnaryOp::Relu},
                                                   {"leaky_relu", UnaryOp::LeakyRelu},
                                                   {"elu", UnaryOp::Elu},
                                                   {"gelu", UnaryOp::GeluErf},
                                                   {"gelu_tanh", UnaryOp::GeluTanh},
                                                   {"silu", UnaryOp::Silu},
                                                   {"swish", UnaryOp::Silu},
                                                   {"sigmoid", UnaryOp::Sigmoid},
                                                   {"tanh", UnaryOp::Tanh},
                                                   {"softplus", UnaryOp::Softplus},
                                                   {"exp", UnaryOp::Exp},
                                                   {"square", UnaryOp::Square}};
  auto it = m.find(n);
  if (it == m.end()) return false;
  op = it->second;
  return true;
}

}  // namespace

void detail::check_activation(const std::string& who, const std::string& act) {
  UnaryOp op;
  if (act.empty() || act == "linear" || act == "softmax" || act == "log_softmax" || unary_from_name(act, op)) return;
  CUDL_FAIL(who, ": unknown activation '", act, "'");
}

// Applies a named activation to x as its own node (used where no fused epilogue exists).
ValueId detail::apply_activation(BuildContext& c, ValueId x, const std::string& act, float alpha) {
  if (act.empty() || act == "linear") return x;
  const Shape s = c.g->value(x).shape;
  ValueId y = c.value(act, s);
  if (act == "softmax" || act == "log_softmax") {
    c.node(act == "softmax" ? OpKind::Softmax : OpKind::LogSoftmax, OpAttrs{}, {x}, {y});
    return y;
  }
  UnaryOp op;
  if (!unary_from_name(act, op)) CUDL_FAIL("unknown activation '", act, "'");
  c.node(OpKind::Unary, ops::UnaryAttrs{op, alpha}.to_op_attrs(), {x}, {y});
  return y;
}

namespace {

class DenseLayer : public BuiltinLayer {
 public:
  explicit DenseLayer(const DenseOptions& o)
      : BuiltinLayer("dense", o.name()),
        units_(o.units()),
        act_(o.activation()),
        bias_(o.use_bias()),
        init_(o.kernel_initializer()) {
    if (units_ <= 0) CUDL_FAIL(who(), ": units must be positive, got ", units_);
    check_activation(who(), act_);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    if (in[0].rank() < 1) CUDL_FAIL(who(), ": input ", in[0], " has no feature dimension");
    std::vector<int64_t> d = in[0].dims();
    d.back() = units_;
    return Shape(d);
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;
    const int64_t features = xs[-1], rows = xs.numel() / std::max<int64_t>(features, 1);
    ValueId x = in[0];
    if (xs.rank() != 2) x = c.g->add_view(x, Shape{rows, features}, c.layer_name, graph::Phase::Forward);
    ValueId w = c.param("kernel", Shape{units_, features}, init_, features, units_, true);
    ValueId b = bias_ ? c.param("bias", Shape{units_}, Init::Zeros, features, units_, false) : kNone;
    Epilogue ep = Epilogue::None;
    std::string rest = act_;
    if (act_ == "relu" && !c.propagate_nan) ep = Epilogue::Relu, rest = "";
    if (act_ == "gelu_tanh") ep = Epilogue::Gelu, rest = "";
    ValueId y = c.value(ep == Epilogue::None ? "linear" : "linear_" + act_, Shape{rows, units_});
    ValueId pre = ep == Epilogue::Gelu ? c.value("pre", Shape{rows, units_}) : kNone;
    const OpAttrs a = ops::LinearAttrs{ep}.to_op_attrs();
    std::vector<ValueId> outs{y};
    if (pre != kNone) outs.push_back(pre);
    c.node(OpKind::Linear, a, {x, w, b}, outs);
    y = apply_activation(c, y, rest, 0.01f);
    std::vector<int64_t> od = xs.dims();
    od.back() = units_;
    if (xs.rank() != 2) y = c.g->add_view(y, Shape(od), c.layer_name, graph::Phase::Forward);
    return {y};
  }

 private:
  int64_t units_;
  std::string act_;
  bool bias_;
  Init init_;
};

int64_t conv_out(int64_t in, int k, int stride, int pad, int dil) {
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

class Conv2dLayer : public BuiltinLayer {
 public:
  explicit Conv2dLayer(const Conv2dOptions& o)
      : BuiltinLayer("conv2d", o.name()),
        k_(o.filters()),
        r_(o.kernel_size()),
        stride_(o.stride()),
        pad_(o.padding()),
        dil_(o.dilation()),
        groups_(o.groups()),
        act_(o.activation()),
        bias_(o.use_bias()),
        init_(o.kernel_initializer()) {
    if (k_ <= 0 || r_ <= 0 || stride_ <= 0 || pad_ < 0 || dil_ <= 0 || groups_ <= 0)
      CUDL_FAIL(who(), ": invalid geometry: filters ", k_, ", kernel ", r_, ", stride ", stride_, ", padding ", pad_,
                ", dilation ", dil_, ", groups ", groups_);
    check_activation(who(), act_);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    const Shape& s = in[0];
    if (s.rank() != 3) CUDL_FAIL(who(), ": expects (C, H, W) samples, got ", s);
    if (s[0] % groups_ != 0 || k_ % groups_ != 0)
      CUDL_FAIL(who(), ": channels ", s[0], " and filters ", k_, " must be divisible by groups ", groups_);
    const int64_t p = conv_out(s[1], r_, stride_, pad_, dil_), q = conv_out(s[2], r_, stride_, pad_, dil_);
    if (p <= 0 || q <= 0)
      CUDL_FAIL(who(), ": input ", s, " is too small for a ", r_, "x", r_, " kernel (dilation ", dil_, ", padding ",
                pad_, ")");
    return Shape{k_, p, q};
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;  // (B, C, H, W)
    const Shape os = output_shape({Shape{xs[1], xs[2], xs[3]}});
    const int64_t cg = xs[1] / groups_;
    ValueId w = c.param("kernel", Shape{k_, cg, r_, r_}, init_, cg * r_ * r_, k_ * r_ * r_ / groups_, true);
    ValueId b = bias_ ? c.param("bias", Shape{k_}, Init::Zeros, cg * r_ * r_, k_, false) : kNone;
    const OpAttrs a = ops::Conv2dAttrs{stride_, stride_, pad_,    pad_,
                                       dil_,    dil_,    groups_, act_ == "relu" ? Epilogue::Relu : Epilogue::None}
                          .to_op_attrs();
    ValueId y = c.value(act_ == "relu" ? "conv_relu" : "conv", c.batched(os));
    c.node(OpKind::Conv2d, a, {in[0], w, b}, {y});
    return {act_ == "relu" ? y : apply_activation(c, y, act_, 0.01f)};
  }

 private:
  int64_t k_;
  int r_, stride_, pad_, dil_, groups_;
  std::string act_;
  bool bias_;
  Init init_;
};

class PoolLayer : public BuiltinLayer {
 public:
  PoolLayer(std::string kind, OpKind op, int kernel, int stride, int pad, const std::string& name)
      : BuiltinLayer(std::move(kind), name), op_(op), k_(kernel), s_(stride > 0 ? stride : kernel), p_(pad) {
    if (op_ != OpKind::GlobalAvgPool && (kernel <= 0 || s_ <= 0 || pad < 0 || pad * 2 > kernel))
      CUDL_FAIL(who(), ": invalid geometry: kernel ", kernel, ", stride ", s_, ", padding ", pad);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    const Shape& s = in[0];
    if (s.rank() != 3) CUDL_FAIL(who(), ": expects (C, H, W) samples, got ", s);
    if (op_ == OpKind::GlobalAvgPool) return Shape{s[0]};
    const int64_t p = conv_out(s[1], k_, s_, p_, 1), q = conv_out(s[2], k_, s_, p_, 1);
    if (p <= 0 || q <= 0) CUDL_FAIL(who(), ": input ", s, " is smaller than the ", k_, "x", k_, " window");
    return Shape{s[0], p, q};
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;
    const Shape os = output_shape({Shape{xs[1], xs[2], xs[3]}});
    const OpAttrs a = ops::Pool2dAttrs{k_, k_, s_, s_, p_, p_}.to_op_attrs();
    ValueId y = c.value(kind_, c.batched(os));
    c.node(op_, a, {in[0]}, {y});
    return {y};
  }

 private:
  OpKind op_;
  int k_, s_, p_;
};

class BatchNormLayer : public BuiltinLayer {
 public:
  BatchNormLayer(float momentum, float eps, const std::string& name, bool synchronized)
      : BuiltinLayer("batch_norm", name), momentum_(momentum), eps_(eps), synchronized_(synchronized) {}
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    if (in[0].rank() < 1) CUDL_FAIL(who(), ": input ", in[0], " has no channel dimension");
    return in[0];
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;
    const int64_t ch = xs[1];
    ValueId gamma = c.param("gamma", Shape{ch}, Init::Ones, ch, ch, false);
    ValueId beta = c.param("beta", Shape{ch}, Init::Zeros, ch, ch, false);
    ValueId rm = c.buffer("running_mean", Shape{ch}, 0.0), rv = c.buffer("running_var", Shape{ch}, 1.0);
    const OpAttrs a = ops::BatchNormAttrs{eps_, momentum_}.to_op_attrs();
    ValueId y = c.value("bn", xs);
    // Keras: a frozen BatchNorm runs in inference mode even while the model trains (running
    // statistics, left unchanged; gradients still reach the layers below).
    if (c.training && !c.layer_frozen() && synchronized_ && c.comm) {
      // Synchronised: this rank's sums about the running mean (the same on every rank), summed over
      // the ranks in the step, then normalised with the global batch's statistics.
      if (c.layer_storage() != DType::f32)
        CUDL_FAIL(who(), ": synchronized batch norm needs f32 activations, but this layer's precision stores ",
                  c.layer_storage(), " (give it set_precision(Precision::f32))");
      ValueId mean = c.value("saved_mean", Shape{ch}), invstd = c.value("saved_invstd", Shape{ch});
      ValueId stats = c.value("batch_stats", Shape{3, ch});
      c.node(OpKind::BatchNormStats, {}, {in[0], rm}, {stats});
      c.node(OpKind::AllReduce, ops::AllReduceAttrs{c.comm, false, ops::AllReduceStage::kWhole}.to_op_attrs(), {stats},
             {});
      c.node(OpKind::BatchNormApply, ops::SyncBatchNormAttrs{eps_, momentum_, c.comm}.to_op_attrs(),
             {in[0], gamma, beta, rm, rv, stats, rm}, {y, mean, invstd});
    } else if (c.training && !c.layer_frozen()) {
      ValueId mean = c.value("saved_mean", Shape{ch}), invstd = c.value("saved_invstd", Shape{ch});
      c.node(OpKind::BatchNormTrain, a, {in[0], gamma, beta, rm, rv}, {y, mean, invstd});
    } else {
      c.node(OpKind::BatchNormInference, a, {in[0], gamma, beta, rm, rv}, {y});
    }
    return {y};
  }

 private:
  float momentum_, eps_;
  bool synchronized_;
};

class LayerNormLayer : public BuiltinLayer {
 public:
  LayerNormLayer(float eps, const std::string& name) : BuiltinLayer("layer_norm", name), eps_(eps) {}
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    if (in[0].rank() < 1) CUDL_FAIL(who(), ": input ", in[0], " has no feature dimension");
    return in[0];
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;
    const int64_t d = xs[-1], rows = xs.numel() / d;
    ValueId gamma = c.param("gamma", Shape{d}, Init::Ones, d, d, false);
    ValueId beta = c.param("beta", Shape{d}, Init::Zeros, d, d, false);
    const OpAttrs a = ops::LayerNormAttrs{eps_}.to_op_attrs();
    ValueId y = c.value("ln", xs), mean = c.value("mean", Shape{rows}), rstd = c.value("rstd", Shape{rows});
    c.node(OpKind::LayerNorm, a, {in[0], gamma, beta}, {y, mean, rstd});
    return {y};
  }

 private:
  float eps_;
};

class DropoutLayer : public BuiltinLayer {
 public:
  DropoutLayer(float rate, const std::string& name) : BuiltinLayer("dropout", name), rate_(rate) {
    if (!(rate >= 0.f && rate < 1.f)) CUDL_FAIL(who(), ": rate must be in [0, 1), got ", rate);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    return in[0];
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;
    if (!c.training || rate_ == 0.f) return {in[0]};  // identity at inference
    ValueId y = c.value("dropout", xs), mask = c.value("mask", xs, DType::u8);
    const OpAttrs a = ops::DropoutAttrs{rate_, c.dropout_streams++}.to_op_attrs();
    c.node(OpKind::Dropout, a, {in[0], c.rng_state()}, {y, mask});
    return {y};
  }

 private:
  float rate_;
};

class ReshapeLayer : public BuiltinLayer {
 public:
  ReshapeLayer(std::string kind, Shape target, const std::string& name)
      : BuiltinLayer(std::move(kind), name), target_(std::move(target)) {}
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    if (kind_ == "flatten") return Shape{in[0].numel()};
    if (target_.numel() != in[0].numel())
      CUDL_FAIL(who(), ": cannot reshape ", in[0], " to ", target_, " (element counts differ)");
    return target_;
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;
    Shape os = output_shape({Shape(std::vector<int64_t>(xs.dims().begin() + 1, xs.dims().end()))});
    return {c.g->add_view(in[0], c.batched(os), c.layer_name, graph::Phase::Forward, 0, c.layer_name + ".out")};
  }

 private:
  Shape target_;
};

class ActivationLayer : public BuiltinLayer {
 public:
  ActivationLayer(std::string act, float alpha, const std::string& name)
      : BuiltinLayer("activation", name), act_(std::move(act)), alpha_(alpha) {
    check_activation(who(), act_);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    return in[0];
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    return {apply_activation(c, in[0], act_, alpha_)};
  }

 private:
  std::string act_;
  float alpha_;
};

class AddLayer : public BuiltinLayer {
 public:
  AddLayer() : BuiltinLayer("add", "") {}
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 2);
    if (in[0] != in[1]) CUDL_FAIL(who(), ": shapes differ: ", in[0], " vs ", in[1]);
    return in[0];
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    ValueId y = c.value("sum", c.g->value(in[0]).shape);
    const OpAttrs a = ops::BinaryAttrs{BinaryOp::Add}.to_op_attrs();
    c.node(OpKind::Binary, a, {in[0], in[1]}, {y});
    return {y};
  }
};

}  // namespace

Var add(const Var& a, const Var& b) { return (*std::make_shared<AddLayer>())({a, b}); }

namespace layers {
LayerPtr Dense(const DenseOptions& options) { return std::make_shared<DenseLayer>(options); }
LayerPtr Dense(int64_t units, const std::string& activation) {
  return Dense(DenseOptions(units).activation(activation));
}
LayerPtr Conv2d(const Conv2dOptions& options) { return std::make_shared<Conv2dLayer>(options); }
LayerPtr Conv2d(int64_t filters, int kernel_size, const std::string& activation) {
  return Conv2d(Conv2dOptions(filters, kernel_size).activation(activation));
}
LayerPtr MaxPool2d(int kernel, int stride, int padding, const std::string& name) {
  return std::make_shared<PoolLayer>("max_pool2d", OpKind::MaxPool2d, kernel, stride, padding, name);
}
LayerPtr AvgPool2d(int kernel, int stride, int padding, const std::string& name) {
  return std::make_shared<PoolLayer>("avg_pool2d", OpKind::AvgPool2d, kernel, stride, padding, name);
}
LayerPtr GlobalAvgPool(const std::string& name) {
  return std::make_shared<PoolLayer>("global_avg_pool", OpKind::GlobalAvgPool, 1, 1, 0, name);
}
LayerPtr BatchNorm(float momentum, float eps, const std::string& name, bool synchronized) {
  return std::make_shared<BatchNormLayer>(momentum, eps, name, synchronized);
}
LayerPtr LayerNorm(float eps, const std::string& name) { return std::make_shared<LayerNormLayer>(eps, name); }
LayerPtr Dropout(float rate, const std::string& name) { return std::make_shared<DropoutLayer>(rate, name); }
LayerPtr Flatten(const std::string& name) { return std::make_shared<ReshapeLayer>("flatten", Shape{}, name); }
LayerPtr Reshape(const Shape& shape, const std::string& name) {
  return std::make_shared<ReshapeLayer>("reshape", shape, name);
}
LayerPtr Activation(const std::string& act, float alpha, const std::string& name) {
  return std::make_shared<ActivationLayer>(act, alpha, name);
}
}  // namespace layers

}  // namespace cudl
