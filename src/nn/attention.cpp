// nn/attention.cpp — the MultiHeadAttention layer: query/key/value projections (Linear), the
// Attention op over head-interleaved features (no permutes), and the output projection.
#include <cmath>
#include <string>

#include "cudl/error.hpp"
#include "nn/build_context.hpp"
#include "ops/attention.hpp"
#include "ops/matmul.hpp"

namespace cudl {
namespace detail {

namespace {

using graph::kNone;
using graph::ValueId;

AttentionEngine engine_from_name(const std::string& who, const std::string& n) {
  if (n == "auto") return AttentionEngine::Auto;
  if (n == "fused") return AttentionEngine::Fused;
  if (n == "unfused") return AttentionEngine::Unfused;
  if (n == "cudnn") return AttentionEngine::Cudnn;
  CUDL_FAIL(who, ": engine must be auto, fused, unfused or cudnn, got '", n, "'");
}

class MultiHeadAttentionLayer : public BuiltinLayer {
 public:
  explicit MultiHeadAttentionLayer(const MultiHeadAttentionOptions& o)
      : BuiltinLayer("multi_head_attention", o.name()), o_(o) {
    if (o.heads() < 1 || o.key_dim() < 1 || o.value_dim() < 0 || o.output_dim() < 0)
      CUDL_FAIL(who(), ": heads and key_dim must be positive and value_dim, output_dim >= 0, got heads ", o.heads(),
                ", key_dim ", o.key_dim(), ", value_dim ", o.value_dim(), ", output_dim ", o.output_dim());
    if (!(o.dropout() >= 0.f && o.dropout() < 1.f)) CUDL_FAIL(who(), ": dropout must be in [0, 1), got ", o.dropout());
    engine_ = engine_from_name(who(), o.engine());
  }

  Shape output_shape(const std::vector<Shape>& in) const override {
    roles(in);  // throws naming the layer and the shapes
    return Shape{in[0][0], o_.output_dim() ? o_.output_dim() : in[0][1]};
  }

  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    std::vector<Shape> shapes;
    for (int v : in) {
      const Shape& s = c.g->value(v).shape;
      shapes.emplace_back(std::vector<int64_t>(s.dims().begin() + 1, s.dims().end()));
    }
    const Roles r = roles(shapes);
    const int64_t B = c.batch, H = o_.heads(), D = o_.key_dim(), Dv = value_dim();
    const int64_t tq = shapes[0][0];
    const int64_t out_dim = o_.output_dim() ? o_.output_dim() : shapes[0][1];
    const ValueId q = project(c, "query", in[0], H * D);
    const ValueId k = project(c, "key", in[r.key], H * D);
    const ValueId v = project(c, "value", in[r.value], H * Dv);
    ops::AttentionAttrs a;
    a.scale = 1.0 / std::sqrt(static_cast<double>(D));
    a.heads = H, a.causal = o_.causal(), a.engine = engine_;
    ValueId rng = kNone;
    if (c.training && o_.dropout() > 0.f) {
      a.dropout = o_.dropout();
      a.stream = c.dropout_streams++;
      rng = c.rng_state();
    }
    const ValueId mask = r.mask >= 0 ? in[r.mask] : kNone;
    const ValueId o = c.value("attention", Shape{B, tq, H * Dv}), lse = c.value("lse", Shape{B, H, tq});
    c.node(OpKind::Attention, a.to_op_attrs(), {q, k, v, mask, rng}, {o, lse});
    return {linear(c, "output", o, H * Dv, out_dim)};
  }

 private:
  /// Input slots: value and key default to the query (self-attention); mask is -1 without key_mask.
  struct Roles {
    size_t value = 0, key = 0;
    int mask = -1;
  };

  int64_t value_dim() const { return o_.value_dim() ? o_.value_dim() : o_.key_dim(); }

  Roles roles(const std::vector<Shape>& in) const {
    const size_t n_seq = in.size() - (o_.key_mask() ? 1 : 0);
    if (in.empty() || n_seq < 1 || n_seq > 3)
      CUDL_FAIL(who(), ": expects query, [value], [key]", o_.key_mask() ? " and a key mask" : "", ", got ", in.size(),
                " inputs");
    Roles r;
    r.value = n_seq >= 2 ? 1 : 0;
    r.key = n_seq == 3 ? 2 : r.value;
    for (size_t i = 0; i < n_seq; ++i)
      if (in[i].rank() != 2)
        CUDL_FAIL(who(), ": input ", i, " must be (T, features) per sample, got ", in[i]);
    if (in[r.key][0] != in[r.value][0])
      CUDL_FAIL(who(), ": key ", in[r.key], " and value ", in[r.value], " must have the same length");
    if (o_.key_mask()) {
      r.mask = static_cast<int>(n_seq);
      if (in[r.mask] != Shape{in[r.value][0]})
        CUDL_FAIL(who(), ": key mask ", in[r.mask], " must be (", in[r.value][0], ") for value ", in[r.value]);
    }
    return r;
  }

  /// y (B, T, out) = x (B, T, in)·Wᵀ + b with parameters "<what>_kernel" (out, in) and "<what>_bias".
  ValueId linear(BuildContext& c, const std::string& what, ValueId x3, int64_t in_f, int64_t out_f) {
    const Shape xs = c.g->value(x3).shape;
    const int64_t rows = xs.numel() / in_f;
    const ValueId x = c.g->add_view(x3, Shape{rows, in_f}, c.layer_name, graph::Phase::Forward);
    const ValueId w = c.param(what + "_kernel", Shape{out_f, in_f}, o_.kernel_initializer(), in_f, out_f, true);
    const ValueId b = o_.use_bias() ? c.param(what + "_bias", Shape{out_f}, Init::Zeros, in_f, out_f, false) : kNone;
    const ValueId y = c.value(what, Shape{rows, out_f});
    c.node(OpKind::Linear, ops::LinearAttrs{Epilogue::None}.to_op_attrs(), {x, w, b}, {y});
    return c.g->add_view(y, Shape{xs[0], xs[1], out_f}, c.layer_name, graph::Phase::Forward);
  }

  ValueId project(BuildContext& c, const std::string& what, ValueId x, int64_t out_f) {
    return linear(c, what, x, c.g->value(x).shape[2], out_f);
  }

  MultiHeadAttentionOptions o_;
  AttentionEngine engine_ = AttentionEngine::Auto;
};

}  // namespace

}  // namespace detail

namespace layers {
LayerPtr MultiHeadAttention(const MultiHeadAttentionOptions& options) {
  return std::make_shared<detail::MultiHeadAttentionLayer>(options);
}
LayerPtr MultiHeadAttention(int64_t heads, int64_t key_dim, bool causal) {
  return MultiHeadAttention(MultiHeadAttentionOptions(heads, key_dim).causal(causal));
}
}  // namespace layers

}  // namespace cudl
