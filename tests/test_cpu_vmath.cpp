// tests/test_cpu_vmath.cpp — accuracy of the CPU backend's vectorisable exp, sigmoid, tanh and
// tanh-GELU (src/cpu/vmath.hpp) against double-precision references, and their special values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/vmath.hpp"

namespace {

using namespace cudl;

/// |got - want| in units of the last place of want rounded to float.
double ulps(float got, double want) {
  const float w = static_cast<float>(want);
  if (got == w) return 0;
  const double ulp = std::fabs(static_cast<double>(std::nextafter(w, std::numeric_limits<float>::infinity())) - w);
  return std::fabs(got - want) / ulp;
}

/// Every 1024th float of [lo, hi] (lo < 0 < hi) by bit pattern, plus a dense walk through [-1, 1].
std::vector<float> sample_floats(float lo, float hi) {
  std::vector<float> xs;
  auto walk = [&](float end, float sign) {
    uint32_t last;
    std::memcpy(&last, &end, sizeof last);
    last &= 0x7fffffffu;
    for (uint32_t b = 0; b <= last; b += 1024) {
      float x;
      std::memcpy(&x, &b, sizeof x);
      xs.push_back(sign * x);
    }
  };
  walk(hi, 1.f);
  walk(lo, -1.f);
  for (double x = -1; x <= 1; x += 3.7e-6) xs.push_back(static_cast<float>(x));
  return xs;
}

double gelu_ref(double x) {  // 0.5 x (1 + tanh(u)) written as x sigmoid(2u): no cancellation in the tail
  const double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
  return x / (1 + std::exp(-2 * u));
}

double gelu_grad_ref(double x) {
  const double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
  const double s = 1 / (1 + std::exp(-2 * u));
  return s + 2 * x * s * (1 - s) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
}

TEST(CpuVmath, ExpIsWithinOneUlpOverTheNormalRange) {
  double worst = 0;
  float at = 0;
  for (float x : sample_floats(-87.3f, 88.7f)) {
    const double e = ulps(vmath::exp(x), std::exp(static_cast<double>(x)));
    if (e > worst) worst = e, at = x;
  }
  EXPECT_LE(worst, 1.0) << "at x = " << at;
}

TEST(CpuVmath, TanhAndSigmoidAreWithinFourUlp) {
  double worst_t = 0, worst_s = 0;
  float at_t = 0, at_s = 0;
  for (float x : sample_floats(-20.f, 20.f)) {
    const double t = ulps(vmath::tanh(x), std::tanh(static_cast<double>(x)));
    const double s = ulps(vmath::sigmoid(x), 1 / (1 + std::exp(-static_cast<double>(x))));
    if (t > worst_t) worst_t = t, at_t = x;
    if (s > worst_s) worst_s = s, at_s = x;
  }
  EXPECT_LE(worst_t, 4.0) << "tanh at x = " << at_t;
  EXPECT_LE(worst_s, 4.0) << "sigmoid at x = " << at_s;
}

// For x >= 0 within 4 ulp; for x < 0 the result is about x e^(2u), whose relative error is 2|u| times
// that of u, which float rounds (up to 2.5 ulp): the bound is 4 + 5|u| ulp (the float reference
// 0.5 x (1 + tanhf(u)) loses every digit there instead).
TEST(CpuVmath, GeluTanhIsWithinItsUlpBoundAndItsGradientWithin1e6) {
  double worst = 0, worst_g = 0;
  float at = 0, at_g = 0;
  for (float x : sample_floats(-12.f, 12.f)) {
    const double want = gelu_ref(x);
    // Below 1e-30 the tail needs e^v under -87.3, which vmath::exp flushes to 0 (tested below);
    // 0.5 x (1 + tanhf(u)) in float is 0 there too.
    if (std::fabs(want) > 1e-30) {
      const double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
      const double e = ulps(vmath::gelu_tanh(x), want) / ((4 + 5 * std::fabs(u)) / 4);  // in units of the bound / 4
      if (e > worst) worst = e, at = x;
    }
    // The gradient crosses zero near x = -0.75: absolute error below 1, relative above.
    const double gw = gelu_grad_ref(x);
    const double g = std::fabs(vmath::gelu_tanh_grad(1.f, x) - gw) / std::max(1.0, std::fabs(gw));
    if (g > worst_g) worst_g = g, at_g = x;
  }
  EXPECT_LE(worst, 4.0) << "at x = " << at;
  EXPECT_LE(worst_g, 1e-6) << "at x = " << at_g;
}

TEST(CpuVmath, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(vmath::exp(nan)));
  EXPECT_EQ(vmath::exp(inf), inf);
  EXPECT_EQ(vmath::exp(-inf), 0.f);
  EXPECT_EQ(vmath::exp(89.f), inf);
  EXPECT_EQ(vmath::exp(-88.f), 0.f);
  EXPECT_EQ(vmath::exp(0.f), 1.f);
  EXPECT_TRUE(std::isfinite(vmath::exp(88.72f)));
  EXPECT_TRUE(std::isnan(vmath::tanh(nan)));
  EXPECT_EQ(vmath::tanh(inf), 1.f);
  EXPECT_EQ(vmath::tanh(-inf), -1.f);
  EXPECT_EQ(vmath::sigmoid(-100.f), 0.f);
  EXPECT_EQ(vmath::sigmoid(100.f), 1.f);
  EXPECT_TRUE(std::isnan(vmath::gelu_tanh(nan)));
  EXPECT_EQ(vmath::gelu_tanh(inf), inf);
  EXPECT_TRUE(std::isnan(vmath::gelu_tanh(-inf)));  // as 0.5 x (1 + tanh(u)): -inf * 0
  EXPECT_EQ(vmath::gelu_tanh(0.f), 0.f);
  EXPECT_EQ(vmath::gelu_tanh(100.f), 100.f);
  EXPECT_EQ(vmath::gelu_tanh(-11.f), 0.f);  // x e^(2u), 2u < -87.3: flushed
}

}  // namespace
