// nn/recurrent.cpp — the recurrent layers (SimpleRNN, LSTM, GRU): time-major inside, the input
// projection of every step as one Linear, then one RecurrentSequence op (ops/recurrent.hpp).
#include <vector>

#include "cudl/error.hpp"
#include "nn/build_context.hpp"
#include "ops/data.hpp"
#include "ops/matmul.hpp"
#include "ops/recurrent.hpp"

namespace cudl {

using detail::BuildContext;
using graph::kNone;
using graph::ValueId;

namespace {

class RecurrentLayer : public detail::BuiltinLayer {
 public:
  RecurrentLayer(const char* kind, RecurrentCell cell, const RecurrentOptions& o)
      : BuiltinLayer(kind, o.name()),
        cell_(cell),
        units_(o.units()),
        sequences_(o.return_sequences()),
        state_(o.return_state()) {
    if (units_ <= 0) CUDL_FAIL(who(), ": units must be positive, got ", units_);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    if (in.size() != 1) CUDL_FAIL(who(), ": expects 1 input, got ", in.size());
    if (in[0].rank() != 2 || in[0][0] < 1 || in[0][1] < 1)
      CUDL_FAIL(who(), ": expects (time, features) samples with time, features >= 1, got ", in[0]);
    return sequences_ ? Shape{in[0][0], units_} : Shape{units_};
  }
  std::vector<Shape> output_shapes(const std::vector<Shape>& in) const override {
    std::vector<Shape> out{output_shape(in)};
    if (state_) out.resize(cell_ == RecurrentCell::Lstm ? 3 : 2, Shape{units_});  // h_T (and c_T)
    return out;
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;  // (B, T, F)
    const int64_t B = xs[0], T = xs[1], F = xs[2], H = units_, GH = recurrent_gates(cell_) * H;
    // (B, T, F) -> (T, B, F): every step's rows contiguous for the per-step GEMMs and kernels.
    ValueId xt = c.value("x_time_major", Shape{T, B, F});
    c.node(OpKind::Permute, permutation({1, 0, 2}), {in[0]}, {xt});
    ValueId x2 = c.g->add_view(xt, Shape{T * B, F}, c.layer_name, graph::Phase::Forward);
    ValueId w = c.param("kernel", Shape{GH, F}, Init::GlorotUniform, F, GH, true);
    ValueId u = c.param("recurrent_kernel", Shape{GH, H}, Init::Orthogonal, H, GH, true);
    const bool fresh_bias = !has_param("bias");
    ValueId b = c.param("bias", Shape{GH}, Init::Zeros, F, GH, false);
    if (fresh_bias && cell_ == RecurrentCell::Lstm) set_unit_forget_bias(H);
    ValueId br = cell_ == RecurrentCell::Gru ? c.param("recurrent_bias", Shape{GH}, Init::Zeros, H, GH, false) : kNone;
    ValueId xp = c.value("xp", Shape{T * B, GH});
    c.node(OpKind::Linear, ops::LinearAttrs{Epilogue::None}.to_op_attrs(), {x2, w, b}, {xp});
    ValueId xp3 = c.g->add_view(xp, Shape{T, B, GH}, c.layer_name, graph::Phase::Forward);
    ValueId h = c.value("h", Shape{T, B, H});
    std::vector<ValueId> outs{h};
    if (cell_ != RecurrentCell::Simple) {
      outs.push_back(c.value("gates", Shape{T, B, GH}));
      outs.push_back(c.value(cell_ == RecurrentCell::Lstm ? "c" : "rec_h", Shape{T, B, H}));
    }
    std::vector<ValueId> ins{xp3, u};
    if (br != kNone) ins.push_back(br);
    c.node(OpKind::RecurrentSequence, ops::RecurrentAttrs{cell_}.to_op_attrs(), ins, outs);
    // The final step of a (T, B, H) sequence as (B, H): a Slice (its gradient reaches the step).
    auto last = [&](ValueId seq, const std::string& what, const std::string& view) {
      ValueId v = c.value(what, Shape{1, B, H});
      c.node(OpKind::Slice, ops::SliceAttrs{0, T - 1}.to_op_attrs(), {seq}, {v});
      return c.g->add_view(v, Shape{B, H}, c.layer_name, graph::Phase::Forward, 0, c.layer_name + "." + view);
    };
    std::vector<int> result;
    if (sequences_) {
      ValueId y = c.value("sequence", Shape{B, T, H});
      c.node(OpKind::Permute, permutation({1, 0, 2}), {h}, {y});
      result.push_back(y);
    }
    if (!sequences_ || state_) {
      const ValueId h_last = sequences_ ? last(h, "h_state", "h_state_out") : last(h, "last", "out");
      if (!sequences_) result.push_back(h_last);
      if (state_) result.push_back(h_last);  // Keras: h_T is the output itself without return_sequences
    }
    if (state_ && cell_ == RecurrentCell::Lstm) result.push_back(last(outs[2], "c_state", "c_state_out"));
    return result;
  }

 private:
  static OpAttrs permutation(std::initializer_list<int64_t> perm) {
    ops::PermuteAttrs a;
    int k = 0;
    for (int64_t p : perm) a.perm[k++] = p;
    return a.to_op_attrs();
  }
  bool has_param(const std::string& name) const {
    for (const auto& [n, t] : params_)
      if (n == name) return true;
    return false;
  }
  /// Keras's unit_forget_bias: the forget gate's quarter of a new LSTM bias starts at one.
  void set_unit_forget_bias(int64_t H) {
    for (auto& [n, t] : params_) {
      if (n != "bias") continue;
      std::vector<float> v(static_cast<size_t>(4 * H), 0.f);
      for (int64_t j = H; j < 2 * H; ++j) v[j] = 1.f;
      t.copy_from(Tensor::from_vector(v, t.shape(), Device::cpu()));
    }
  }

  RecurrentCell cell_;
  int64_t units_;
  bool sequences_, state_;
};

}  // namespace

namespace layers {

LayerPtr SimpleRNN(const RecurrentOptions& o) {
  return std::make_shared<RecurrentLayer>("simple_rnn", RecurrentCell::Simple, o);
}
LayerPtr SimpleRNN(int64_t units, bool return_sequences) {
  return SimpleRNN(RecurrentOptions(units).return_sequences(return_sequences));
}
LayerPtr LSTM(const RecurrentOptions& o) { return std::make_shared<RecurrentLayer>("lstm", RecurrentCell::Lstm, o); }
LayerPtr LSTM(int64_t units, bool return_sequences) {
  return LSTM(RecurrentOptions(units).return_sequences(return_sequences));
}
LayerPtr GRU(const RecurrentOptions& o) { return std::make_shared<RecurrentLayer>("gru", RecurrentCell::Gru, o); }
LayerPtr GRU(int64_t units, bool return_sequences) {
  return GRU(RecurrentOptions(units).return_sequences(return_sequences));
}

}  // namespace layers
}  // namespace cudl
