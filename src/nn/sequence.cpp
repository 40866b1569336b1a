// nn/sequence.cpp — layers for sequences of tokens: Embedding (a learned table gathered by i32
// indices) and PositionalEmbedding (a learned table of positions added to its input).
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
    const graph::Value& idx = c.g->value(in[0]);
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

}  // namespace

namespace layers {
LayerPtr Embedding(int64_t vocab, int64_t dim, const std::string& name) {
  return std::make_shared<EmbeddingLayer>(vocab, dim, name);
}
LayerPtr PositionalEmbedding(int64_t max_len, int64_t dim, const std::string& name) {
  return std::make_shared<PositionalEmbeddingLayer>(max_len, dim, name);
}
}  // namespace layers

}  // namespace cudl
