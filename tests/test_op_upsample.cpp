// tests/test_op_upsample.cpp — Upsample2d (nearest, bilinear): CPU reference vs direct formulas in
// double and finite differences; CUDA vs CPU forward and backward on odd sizes; argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "ops/upsample.hpp"
#include "testing.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

struct Case {
  Shape x;  // (N, C, H, W)
  int64_t sh, sw;
  bool bilinear;
  Shape y() const { return Shape{x[0], x[1], x[2] * sh, x[3] * sw}; }
  OpAttrs attrs() const {
    return ops::Upsample2dAttrs{sh, sw, bilinear ? UpsampleMode::Bilinear : UpsampleMode::Nearest}.to_op_attrs();
  }
  std::string str() const {
    return "x " + x.str() + " scale " + std::to_string(sh) + "x" + std::to_string(sw) +
           (bilinear ? " bilinear" : " nearest");
  }
};

std::vector<Case> cases() {
  std::vector<Case> v;
  for (bool bl : {false, true}) {
    v.push_back({Shape{2, 3, 4, 5}, 2, 2, bl});
    v.push_back({Shape{1, 1, 1, 1}, 3, 3, bl});    // a single pixel
    v.push_back({Shape{3, 2, 7, 3}, 3, 2, bl});    // odd sizes, non-square scale
    v.push_back({Shape{1, 2, 5, 40}, 1, 4, bl});   // scale 1 along h, rows longer than a warp
    v.push_back({Shape{2, 1, 17, 9}, 4, 4, bl});   // a plane of 2448 outputs
  }
  return v;
}

Tensor upsample(const Case& c, const Tensor& x) {
  Tensor y = Tensor::empty(c.y(), x.dtype(), x.device());
  run_op(OpKind::Upsample2d, {tv(x)}, {tv(y)}, c.attrs(), nullptr, "test/up");
  return y;
}

Tensor upsample_backward(const Case& c, const Tensor& dy) {
  Tensor dx = Tensor::empty(c.x, dy.dtype(), dy.device());
  run_op(OpKind::Upsample2dBackward, {tv(dy)}, {tv(dx)}, c.attrs(), nullptr, "test/up");
  return dx;
}

/// The test's own spec in double: nearest copies; bilinear as PyTorch's align_corners=False.
std::vector<double> naive(const Case& c, const Tensor& x) {
  const auto xv = as_doubles(x);
  const int64_t H = c.x[2], W = c.x[3], Ho = H * c.sh, Wo = W * c.sw, planes = c.x[0] * c.x[1];
  std::vector<double> y(planes * Ho * Wo);
  auto src = [](int64_t o, int64_t s, int64_t n, int64_t& i0, int64_t& i1, double& l) {
    double v = std::max(0.0, (o + 0.5) / s - 0.5);
    i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(v)), n - 1);
    i1 = std::min<int64_t>(i0 + 1, n - 1);
    l = v - i0;
  };
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const double* xp = xv.data() + p * H * W;
        double& out = y[(p * Ho + oh) * Wo + ow];
        if (!c.bilinear) {
          out = xp[(oh / c.sh) * W + ow / c.sw];
          continue;
        }
        int64_t h0, h1, w0, w1;
        double lh, lw;
        src(oh, c.sh, H, h0, h1, lh);
        src(ow, c.sw, W, w0, w1, lw);
        out = (1 - lh) * ((1 - lw) * xp[h0 * W + w0] + lw * xp[h0 * W + w1]) +
              lh * ((1 - lw) * xp[h1 * W + w0] + lw * xp[h1 * W + w1]);
      }
  return y;
}

}  // namespace

TEST(UpsampleCpu, ForwardMatchesDirectFormula) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.str());
    Tensor x = random_tensor(c.x, 1);
    const auto want = naive(c, x);
    EXPECT_TRUE(all_close(upsample(c, x), Tensor::from_vector(std::vector<float>(want.begin(), want.end()), c.y()),
                          1e-6, 1e-6));
  }
}

TEST(UpsampleCpu, BilinearOfAConstantIsTheConstant) {
  Case c{Shape{1, 1, 3, 4}, 3, 2, true};
  Tensor y = upsample(c, Tensor::full(c.x, 0.25));
  for (float v : y.to_vector<float>()) EXPECT_FLOAT_EQ(v, 0.25f);
}

TEST(UpsampleCpu, BackwardMatchesFiniteDifferences) {
  for (const Case& c : cases()) {
    if (c.x.numel() > 200) continue;  // a central difference per element: keep it short
    SCOPED_TRACE(c.str());
    Tensor x = random_tensor(c.x, 2);
    const std::vector<double> wts = as_doubles(random_tensor(c.y(), 3));
    Tensor dy = Tensor::from_vector(std::vector<float>(wts.begin(), wts.end()), c.y());
    auto loss = [&](const Tensor& xx) { return weighted_sum(upsample(c, xx), wts); };
    EXPECT_TRUE(gradient_close(upsample_backward(c, dy), numerical_gradient(loss, x.clone())));
  }
}

TEST(UpsampleCpu, NaNPropagates) {
  for (bool bl : {false, true}) {
    Case c{Shape{1, 1, 3, 3}, 2, 2, bl};
    std::vector<float> v(9, 1.f);
    v[4] = NAN;
    Tensor y = upsample(c, Tensor::from_vector(v, c.x));
    const auto yv = y.to_vector<float>();
    EXPECT_TRUE(std::isnan(yv[2 * 6 + 2])) << (bl ? "bilinear" : "nearest");   // reads the centre
    // The far corner reads only x[2][2] (bilinear's neighbours there coincide). Elsewhere a
    // neighbour of weight 0 still multiplies in, so NaN spreads one pixel further, as in PyTorch.
    EXPECT_FALSE(std::isnan(yv[5 * 6 + 5])) << (bl ? "bilinear" : "nearest");
  }
}

void invalid_calls(Device d) {
  Case c{Shape{2, 3, 4, 5}, 2, 2, false};
  Tensor x = random_tensor(c.x, 1, -1, 1, d);
  auto msg = [&](const Tensor& in, const Tensor& out, const OpAttrs& a, OpKind op = OpKind::Upsample2d) {
    return error_message([&] { run_op(op, {tv(in)}, {tv(out)}, a, nullptr, "gen/up"); });
  };
  std::string m = msg(x, Tensor::empty(Shape{2, 3, 8, 9}, DType::f32, d), c.attrs());
  EXPECT_NE(m.find("Upsample2d (gen/up): y has shape (2, 3, 8, 9), expected (2, 3, 8, 10)"), std::string::npos) << m;
  Case zero = c;
  zero.sh = 0;
  m = msg(x, Tensor::empty(c.y(), DType::f32, d), zero.attrs());
  EXPECT_NE(m.find("scale must be >= 1, got (0, 2)"), std::string::npos) << m;
  OpAttrs bad_mode = c.attrs();
  bad_mode.i[2] = 7;
  m = msg(x, Tensor::empty(c.y(), DType::f32, d), bad_mode);
  EXPECT_NE(m.find("mode 7 is neither nearest (0) nor bilinear (1)"), std::string::npos) << m;
  m = msg(random_tensor(Shape{3, 4, 5}, 1, -1, 1, d), Tensor::empty(c.y(), DType::f32, d), c.attrs());
  EXPECT_NE(m.find("x must be (N, C, H, W), got (3, 4, 5)"), std::string::npos) << m;
  m = msg(Tensor::empty(Shape{2, 3, 8, 10}, DType::f32, d), Tensor::empty(Shape{2, 3, 4, 4}, DType::f32, d), c.attrs(),
          OpKind::Upsample2dBackward);
  EXPECT_NE(m.find("Upsample2dBackward (gen/up): dy has shape (2, 3, 8, 10), expected (2, 3, 8, 8)"),
            std::string::npos)
      << m;
  // Integer tensors are no storage type: each is named with its dtype.
  m = msg(Tensor::zeros(c.x, DType::i32, d), Tensor::empty(c.y(), DType::i32, d), c.attrs());
  EXPECT_NE(m.find("Upsample2d (gen/up): x (2, 3, 4, 5) has dtype i32, expected f32"), std::string::npos) << m;
  m = msg(x, Tensor::empty(c.y(), DType::i32, d), c.attrs());
  EXPECT_NE(m.find("y (2, 3, 8, 10) has dtype i32, expected f32"), std::string::npos) << m;
  m = msg(to_storage(random_tensor(c.x, 1), DType::bf16).to(d), Tensor::empty(c.y(), DType::f16, d), c.attrs());
  EXPECT_NE(m.find("has dtype f16 but input 0 has bf16"), std::string::npos) << m;
}

TEST(UpsampleCpu, InvalidCallsRaiseNamedErrors) { invalid_calls(Device::cpu()); }

TEST(UpsampleCuda, InvalidCallsRaiseNamedErrors) {
  CUDL_REQUIRE_CUDA();
  invalid_calls(Device::cuda(0));
}

TEST(UpsampleCuda, ForwardAndBackwardMatchCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda(0);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.str());
    std::vector<float> xv = random_tensor(c.x, 4).to_vector<float>();
    xv[xv.size() / 2] = NAN;  // propagates the same way on both
    Tensor x = Tensor::from_vector(xv, c.x), dy = random_tensor(c.y(), 5);
    EXPECT_TRUE(all_close(upsample(c, x.to(gpu)).to(Device::cpu()), upsample(c, x), 1e-6, 1e-6)) << "forward";
    EXPECT_TRUE(all_close(upsample_backward(c, dy.to(gpu)).to(Device::cpu()), upsample_backward(c, dy), 1e-5, 1e-5))
        << "backward";
  }
}

// 16-bit storage: x, y, dy and dx in bf16 / f16, fp32 math, one rounding per store. Nearest copies
// elements, so it is bitwise equal to the CPU; bilinear weights and the backward's sums run in fp32
// on both, so results differ only where the two fp32 values straddle a rounding boundary (1 ulp).
TEST(UpsampleCuda, SixteenBitStorageMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda(0);
  for (DType st : k16BitTypes)
    for (const Case& c : cases()) {
      SCOPED_TRACE(c.str() + " " + dtype_name(st));
      Tensor x = to_storage(random_tensor(c.x, 4), st), dy = to_storage(random_tensor(c.y(), 5), st);
      const Tensor y_cpu = upsample(c, x), dx_cpu = upsample_backward(c, dy);
      ASSERT_EQ(y_cpu.dtype(), st);
      if (!c.bilinear)
        EXPECT_TRUE(equal_16bit(upsample(c, x.to(gpu)).to(Device::cpu()), y_cpu)) << "forward";
      else
        EXPECT_TRUE(close_16bit(upsample(c, x.to(gpu)).to(Device::cpu()), y_cpu, 1, 0.9)) << "forward";
      EXPECT_TRUE(close_16bit(upsample_backward(c, dy.to(gpu)).to(Device::cpu()), dx_cpu, 1, 0.9)) << "backward";
      // The CPU reference is the f32 op on the widened values, rounded once.
      EXPECT_TRUE(equal_16bit(to_storage(upsample_backward(c, widened(dy)), st), dx_cpu));
    }
}

// The comparison above catches a backward that sums in 16 bits: with scale 4 a dx element sums up to
// 16 (nearest) or 64 (bilinear) terms, and rounding each partial sum moves most results by more
// than an ulp.
TEST(UpsampleCpu, SixteenBitComparisonCatchesSumsIn16Bits) {
  const Case c{Shape{2, 3, 9, 7}, 4, 4, true};
  for (DType st : k16BitTypes) {
    Tensor dy = to_storage(random_tensor(c.y(), 5), st);
    const Tensor dx = upsample_backward(c, dy);
    // dx by summing in the storage type: round after each term, in the reference's order.
    const std::vector<double> d = as_doubles(dy);
    std::vector<float> partial(static_cast<size_t>(c.x.numel()));
    const int64_t H = c.x[2], W = c.x[3], Wo = W * c.sw, planes = c.x[0] * c.x[1];
    for (int64_t p = 0; p < planes; ++p)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
          float acc = 0.f;
          for (int64_t oh = 0; oh < H * c.sh; ++oh)
            for (int64_t ow = 0; ow < Wo; ++ow) {
              const float wt = ops::upsample_weight(oh, i, H, c.sh, true) * ops::upsample_weight(ow, j, W, c.sw, true);
              if (wt == 0.f) continue;
              acc += wt * static_cast<float>(d[(p * H * c.sh + oh) * Wo + ow]);
              acc = rounded_16(acc, st);
            }
          partial[(p * H + i) * W + j] = acc;
        }
    EXPECT_FALSE(close_16bit(to_storage(Tensor::from_vector(partial, c.x), st), dx, 1, 0.9)) << dtype_name(st);
  }
}

