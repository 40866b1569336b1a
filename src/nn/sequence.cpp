// nn/sequence.cpp — layers for sequences of tokens: Embedding (a learned table gathered by i32
// indices), PositionalEmbedding (a learned table of positions added to its input), and the joins
// and cuts a Transformer block needs (Concatenate, Slice, split).
#include "cudl/error.hpp"
#include "nn/build_context.hpp"
#include "ops/data.hpp"
#include "ops/elementwise.hpp"

namespace cudl {

using detail::BuildContext;
using detail::BuiltinLayer;
using graph::ValueId;

namespace {

class EmbeddingLayer : public BuiltinLayer {
 public:
  EmbeddingLayer(int64_t vocab, int64_t dim, const std::string& name)
      : BuiltinLayer("embedding", name), vocab_(vocab), dim_(dim) {
    if (vocab <= 0 || dim <= 0) CUDL_FAIL(who(), ": vocab and dim must be positive, got ", vocab, " and ", dim);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    if (in.size() != 1) CUDL_FAIL(who(), ": expects 1 input (i32 indices), got ", in.size());
    std::vector<int64_t> d = in[0].dims();
    d.push_back(dim_);
    return Shape(d);
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const graph::Value idx = c.g->value(in[0]);  // a copy: param() below adds values to the graph
    if (idx.dtype != DType::i32)
      CUDL_FAIL(who(), ": indices must be i32, got ", idx.dtype, " ", idx.shape,
                " (declare the model input as Input(shape, DType::i32))");
    ValueId table = c.param("embeddings", Shape{vocab_, dim_}, Init::Uniform, vocab_, dim_, false);
    std::vector<int64_t> d = idx.shape.dims();
    d.push_back(dim_);
    ValueId y = c.value("embedded", Shape(d));
    c.node(OpKind::Gather, OpAttrs{}, {table, in[0]}, {y});
    return {y};
  }

 private:
  int64_t vocab_, dim_;
};

/// 1 where a token id is not 0, else 0 (Keras's mask_zero): |float(id)| capped at 1.
class PaddingMaskLayer : public BuiltinLayer {
 public:
  explicit PaddingMaskLayer(const std::string& name) : BuiltinLayer("padding_mask", name) {}
  Shape output_shape(const std::vector<Shape>& in) const override {
    if (in.size() != 1) CUDL_FAIL(who(), ": expects 1 input (i32 token ids), got ", in.size());
    return in[0];
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const graph::Value ids = c.g->value(in[0]);  // a copy: value() below adds values to the graph
    if (ids.dtype != DType::i32)
      CUDL_FAIL(who(), ": token ids must be i32, got ", ids.dtype, " ", ids.shape,
                " (declare the model input as Input(shape, DType::i32))");
    ValueId a = c.value("abs", ids.shape), mask = c.value("mask", ids.shape);
    c.node(OpKind::Unary, ops::UnaryAttrs{UnaryOp::Abs, 0}.to_op_attrs(), {c.cast(in[0], DType::f32)}, {a});
    c.node(OpKind::BinaryScalar, ops::BinaryScalarAttrs{BinaryOp::Minimum, 1.0}.to_op_attrs(), {a}, {mask});
    return {mask};
  }
};

class PositionalEmbeddingLayer : public BuiltinLayer {
 public:
  PositionalEmbeddingLayer(int64_t max_len, int64_t dim, const std::string& name)
      : BuiltinLayer("positional_embedding", name), max_len_(max_len), dim_(dim) {
    if (max_len <= 0 || dim <= 0)
      CUDL_FAIL(who(), ": max_len and dim must be positive, got ", max_len, " and ", dim);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    if (in.size() != 1) CUDL_FAIL(who(), ": expects 1 input (time, dim), got ", in.size());
    const Shape& s = in[0];
    if (s.rank() != 2 || s[1] != dim_ || s[0] > max_len_)
      CUDL_FAIL(who(), ": expects (time, ", dim_, ") samples with time <= max_len ", max_len_, ", got ", s);
    return s;
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;  // (B, T, D)
    const int64_t T = xs[1];
    ValueId table = c.param("embeddings", Shape{max_len_, dim_}, Init::Uniform, max_len_, dim_, false);
    ValueId pos = table;
    if (T < max_len_) {  // the first T positions
      pos = c.value("positions", Shape{T, dim_});
      c.node(OpKind::Slice, ops::SliceAttrs{0, 0}.to_op_attrs(), {table}, {pos});
    }
    ValueId y = c.value("sum", xs);
    c.node(OpKind::Binary, ops::BinaryAttrs{BinaryOp::Add}.to_op_attrs(), {in[0], pos}, {y});
    return {y};
  }

 private:
  int64_t max_len_, dim_;
};

/// The per-sample axis of Keras axis `axis` (of the batched tensor) for samples of rank `rank`.
int sample_axis(const std::string& who, int axis, int64_t rank) {
  const int64_t a = axis < 0 ? axis + rank : axis - 1;
  if (axis == 0 || a < 0 || a >= rank)
    CUDL_FAIL(who, ": axis ", axis, " is not a sample axis of a batched tensor of rank ", rank + 1,
              " (0 is the batch axis)");
  return static_cast<int>(a);
}

class ConcatenateLayer : public BuiltinLayer {
 public:
  ConcatenateLayer(int axis, const std::string& name) : BuiltinLayer("concatenate", name), axis_(axis) {}
  Shape output_shape(const std::vector<Shape>& in) const override {
    if (in.size() < 2) CUDL_FAIL(who(), ": expects at least 2 inputs, got ", in.size());
    const int a = sample_axis(who(), axis_, in[0].rank());
    std::vector<int64_t> d = in[0].dims();
    for (size_t k = 1; k < in.size(); ++k) {
      bool ok = in[k].rank() == in[0].rank();
      for (int64_t j = 0; ok && j < in[0].rank(); ++j) ok = j == a || in[k][j] == in[0][j];
      if (!ok) CUDL_FAIL(who(), ": input ", k, " ", in[k], " does not match input 0 ", in[0], " outside axis ", axis_);
      d[a] += in[k][a];
    }
    return Shape(d);
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    std::vector<Shape> samples;
    for (int v : in) {
      const std::vector<int64_t>& d = c.g->value(v).shape.dims();
      samples.push_back(Shape(std::vector<int64_t>(d.begin() + 1, d.end())));
    }
    const int a = sample_axis(who(), axis_, samples[0].rank());
    ValueId y = c.value("concat", c.batched(output_shape(samples)), c.g->value(in[0]).dtype);
    c.node(OpKind::Concat, ops::ConcatAttrs{a + 1}.to_op_attrs(), std::vector<ValueId>(in.begin(), in.end()), {y});
    return {y};
  }

 private:
  int axis_;
};

class SliceLayer : public BuiltinLayer {
 public:
  SliceLayer(int axis, int64_t start, int64_t length, const std::string& name)
      : BuiltinLayer("slice", name), axis_(axis), start_(start), len_(length) {
    if (start < 0 || length <= 0) CUDL_FAIL(who(), ": start must be >= 0 and length > 0, got ", start, " and ", length);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    if (in.size() != 1) CUDL_FAIL(who(), ": expects 1 input, got ", in.size());
    const int a = sample_axis(who(), axis_, in[0].rank());
    if (start_ + len_ > in[0][a])
      CUDL_FAIL(who(), ": [", start_, ", ", start_ + len_, ") along axis ", axis_, " is outside input ", in[0]);
    std::vector<int64_t> d = in[0].dims();
    d[a] = len_;
    return Shape(d);
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const graph::Value x = c.g->value(in[0]);  // a copy: c.value() adds to the graph
    const Shape sample(std::vector<int64_t>(x.shape.dims().begin() + 1, x.shape.dims().end()));
    const int a = sample_axis(who(), axis_, sample.rank());
    ValueId y = c.value("slice", c.batched(output_shape({sample})), x.dtype);
    c.node(OpKind::Slice, ops::SliceAttrs{a + 1, start_}.to_op_attrs(), {in[0]}, {y});
    return {y};
  }

 private:
  int axis_;
  int64_t start_, len_;
};

}  // namespace

std::vector<Var> split(const Var& x, const std::vector<int64_t>& sizes, int axis) {
  const Shape& s = x.shape();
  const int a = sample_axis("split", axis, s.rank());
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  if (sizes.empty() || total != s[a])
    CUDL_FAIL("split: sizes add up to ", total, " but input ", s, " has ", s[a], " along axis ", axis);
  std::vector<Var> parts;
  int64_t start = 0;
  for (int64_t n : sizes) {
    parts.push_back((*layers::Slice(axis, start, n))(x));
    start += n;
  }
  return parts;
}

namespace layers {
LayerPtr Embedding(int64_t vocab, int64_t dim, const std::string& name) {
  return std::make_shared<EmbeddingLayer>(vocab, dim, name);
}
LayerPtr PaddingMask(const std::string& name) { return std::make_shared<PaddingMaskLayer>(name); }
LayerPtr PositionalEmbedding(int64_t max_len, int64_t dim, const std::string& name) {
  return std::make_shared<PositionalEmbeddingLayer>(max_len, dim, name);
}
LayerPtr Concatenate(int axis, const std::string& name) { return std::make_shared<ConcatenateLayer>(axis, name); }
LayerPtr Slice(int axis, int64_t start, int64_t length, const std::string& name) {
  return std::make_shared<SliceLayer>(axis, start, length, name);
}
}  // namespace layers

}  // namespace cudl
