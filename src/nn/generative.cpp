// nn/generative.cpp — the layers of generative models: transposed convolution, upsampling and a
// device-side noise source (RandomNormal fed by the model's RNG state).
#include <cmath>

#include "cudl/error.hpp"
#include "nn/build_context.hpp"
#include "ops/conv.hpp"
#include "ops/random.hpp"
#include "ops/upsample.hpp"

namespace cudl {
namespace detail {

namespace {

using graph::kNone;
using graph::ValueId;

class Conv2dTransposeLayer : public BuiltinLayer {
 public:
  explicit Conv2dTransposeLayer(const Conv2dTransposeOptions& o) : BuiltinLayer("conv2d_transpose", o.name()), o_(o) {
    if (o.filters() <= 0 || o.kernel_size() <= 0 || o.stride() <= 0 || o.padding() < 0 || o.dilation() <= 0 ||
        o.groups() <= 0 || o.output_padding() < 0 || o.output_padding() >= o.stride())
      CUDL_FAIL(who(), ": invalid geometry: filters ", o.filters(), ", kernel ", o.kernel_size(), ", stride ",
                o.stride(), ", padding ", o.padding(), ", output padding ", o.output_padding(),
                " (must be in [0, stride)), dilation ", o.dilation(), ", groups ", o.groups());
    check_activation(who(), o.activation());
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    const Shape& s = in[0];
    const int64_t k = o_.filters(), groups = o_.groups();
    if (s.rank() != 3) CUDL_FAIL(who(), ": expects (C, H, W) samples, got ", s);
    if (s[0] % groups != 0 || k % groups != 0)
      CUDL_FAIL(who(), ": channels ", s[0], " and filters ", k, " must be divisible by groups ", groups);
    auto out = [&](int64_t n) {
      return ops::conv_transpose_out(n, o_.kernel_size(), o_.stride(), o_.padding(), o_.dilation(), o_.output_padding());
    };
    if (out(s[1]) <= 0 || out(s[2]) <= 0)
      CUDL_FAIL(who(), ": input ", s, " with a ", o_.kernel_size(), "x", o_.kernel_size(), " kernel, stride ",
                o_.stride(), ", padding ", o_.padding(), " gives no output (", out(s[1]), " x ", out(s[2]), ")");
    return Shape{k, out(s[1]), out(s[2])};
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;  // (B, C_in, H, W)
    const Shape os = output_shape({Shape{xs[1], xs[2], xs[3]}});
    const int64_t r = o_.kernel_size(), cin = xs[1], kg = o_.filters() / o_.groups();
    // (C_in, filters/groups, R, S): each input channel spreads over the kg outputs of its group.
    ValueId w = c.param("kernel", Shape{cin, kg, r, r}, o_.kernel_initializer(), cin / o_.groups() * r * r, kg * r * r,
                        true);
    ValueId b = o_.use_bias() ? c.param("bias", Shape{o_.filters()}, Init::Zeros, cin * r * r, o_.filters(), false)
                              : kNone;
    const OpAttrs a = ops::Conv2dAttrs{o_.stride(),   o_.stride(),   o_.padding(), o_.padding(), o_.dilation(),
                                       o_.dilation(), o_.groups(),   Epilogue::None}
                          .to_op_attrs();
    ValueId y = c.value("conv_transpose", c.batched(os));
    c.node(OpKind::Conv2dTranspose, a, {in[0], w, b}, {y});
    return {apply_activation(c, y, o_.activation(), 0.01f)};
  }

 private:
  Conv2dTransposeOptions o_;
};

class UpSampling2dLayer : public BuiltinLayer {
 public:
  UpSampling2dLayer(int size, const std::string& interpolation, const std::string& name)
      : BuiltinLayer("upsampling2d", name), size_(size) {
    if (size < 1) CUDL_FAIL(who(), ": size must be >= 1, got ", size);
    if (interpolation == "nearest")
      mode_ = UpsampleMode::Nearest;
    else if (interpolation == "bilinear")
      mode_ = UpsampleMode::Bilinear;
    else
      CUDL_FAIL(who(), ": interpolation must be nearest or bilinear, got '", interpolation, "'");
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    const Shape& s = in[0];
    if (s.rank() != 3) CUDL_FAIL(who(), ": expects (C, H, W) samples, got ", s);
    return Shape{s[0], s[1] * size_, s[2] * size_};
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    const Shape xs = c.g->value(in[0]).shape;
    const Shape os = output_shape({Shape{xs[1], xs[2], xs[3]}});
    ValueId y = c.value("upsample", c.batched(os));
    c.node(OpKind::Upsample2d, ops::Upsample2dAttrs{size_, size_, mode_}.to_op_attrs(), {in[0]}, {y});
    return {y};
  }

 private:
  int size_;
  UpsampleMode mode_ = UpsampleMode::Nearest;
};

// Philox stream ids of noise layers: far above the dropout layers' (0, 1, ...).
constexpr int64_t kNoiseStreamBase = int64_t{1} << 40;

class RandomNormalLayer : public BuiltinLayer {
 public:
  RandomNormalLayer(Shape shape, float mean, float stddev, const std::string& name)
      : BuiltinLayer("random_normal", name), shape_(std::move(shape)), mean_(mean), stddev_(stddev) {
    if (shape_.rank() < 1 || shape_.numel() < 1) CUDL_FAIL(who(), ": needs a non-empty sample shape, got ", shape_);
    if (!(stddev >= 0.f) || !std::isfinite(mean) || !std::isfinite(stddev))
      CUDL_FAIL(who(), ": needs a finite mean and a finite stddev >= 0, got mean ", mean, ", stddev ", stddev);
  }
  Shape output_shape(const std::vector<Shape>& in) const override {
    expect_inputs(*this, in, 1);
    return shape_;
  }
  std::vector<int> build(BuildContext& c, const std::vector<int>& in) override {
    (void)in;  // only the batch size, which the context holds, comes from the input
    const ValueId rng = c.rng_state();
    int64_t index = 0;  // a stream per noise node of this program
    for (const graph::Node& n : c.g->nodes())
      if (n.op == OpKind::RandomNormal && !n.inputs.empty() && n.inputs[0] == rng) ++index;
    ValueId y = c.value("noise", c.batched(shape_));
    const OpAttrs a = ops::RandomNormalAttrs{mean_, stddev_, 0, 0, kNoiseStreamBase + index}.to_op_attrs();
    c.node(OpKind::RandomNormal, a, {rng}, {y});
    return {y};
  }

 private:
  Shape shape_;
  float mean_, stddev_;
};

}  // namespace

}  // namespace detail

namespace layers {

LayerPtr Conv2dTranspose(const Conv2dTransposeOptions& options) {
  return std::make_shared<detail::Conv2dTransposeLayer>(options);
}
LayerPtr Conv2dTranspose(int64_t filters, int kernel_size, int stride, int padding, int output_padding,
                         const std::string& activation) {
  return Conv2dTranspose(Conv2dTransposeOptions(filters, kernel_size)
                             .stride(stride)
                             .padding(padding)
                             .output_padding(output_padding)
                             .activation(activation));
}
LayerPtr UpSampling2d(int size, const std::string& interpolation, const std::string& name) {
  return std::make_shared<detail::UpSampling2dLayer>(size, interpolation, name);
}
LayerPtr RandomNormal(const Shape& shape, float mean, float stddev, const std::string& name) {
  return std::make_shared<detail::RandomNormalLayer>(shape, mean, stddev, name);
}

}  // namespace layers
}  // namespace cudl
