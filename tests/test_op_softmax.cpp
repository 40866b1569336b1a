// tests/test_op_softmax.cpp — softmax / log-softmax along the last axis: CPU reference vs hand values and
// finite differences, CUDA vs CPU for short (warp) and long (block) rows, -inf/+inf/NaN rows, errors;
// bf16/f16 storage (fp32 math, rounded once) against the CPU reference.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "testing.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

Tensor run_softmax(bool log, const Tensor& x) {
  Tensor y = Tensor::full(x.shape(), 777.0, x.dtype(), x.device());
  run_op(log ? OpKind::LogSoftmax : OpKind::Softmax, {tv(x)}, {tv(y)});
  return y;
}

Tensor run_softmax_backward(bool log, const Tensor& y, const Tensor& dy) {
  Tensor dx = Tensor::full(y.shape(), 777.0, y.dtype(), y.device());
  run_op(log ? OpKind::LogSoftmaxBackward : OpKind::SoftmaxBackward, {tv(y), tv(dy)}, {tv(dx)});
  return dx;
}

Tensor cuda(const Tensor& t) { return t.to(Device::cuda()); }
Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

const char* name(bool log) { return log ? "log_softmax" : "softmax"; }

}  // namespace

TEST(Softmax, CpuForwardByHand) {
  Tensor x = Tensor::from_vector<float>({0.f, static_cast<float>(std::log(3.0)), 1000.f, 1000.f}, Shape{2, 2});
  auto y = run_softmax(false, x).to_vector<float>();
  EXPECT_NEAR(y[0], 0.25, 1e-7);
  EXPECT_NEAR(y[1], 0.75, 1e-7);
  EXPECT_NEAR(y[2], 0.5, 1e-7);  // no overflow: the max is subtracted first
  EXPECT_NEAR(y[3], 0.5, 1e-7);
  auto ly = run_softmax(true, x).to_vector<float>();
  EXPECT_NEAR(ly[0], std::log(0.25), 1e-6);
  EXPECT_NEAR(ly[3], std::log(0.5), 1e-6);
  // A row of one element is probability 1.
  EXPECT_EQ(run_softmax(false, Tensor::full(Shape{3, 1}, -4.0)).to_vector<float>(), (std::vector<float>{1, 1, 1}));
}

TEST(Softmax, CpuGradientMatchesFiniteDifferences) {
  for (bool log : {false, true}) {
    for (const Shape& shape : {Shape{3, 10}, Shape{2, 1}, Shape{2, 33}, Shape{4}, Shape{2, 2, 5}}) {
      SCOPED_TRACE(std::string(name(log)) + " " + shape.str());
      Tensor x = random_tensor(shape, 3, -3, 3);
      const auto w = as_doubles(random_tensor(shape, 4));
      Tensor dy = Tensor::from_vector(std::vector<float>(w.begin(), w.end()), shape);
      Tensor dx = run_softmax_backward(log, run_softmax(log, x), dy);
      auto f = [&](const Tensor& xx) { return weighted_sum(run_softmax(log, xx), w); };
      EXPECT_TRUE(gradient_close(dx, numerical_gradient(f, x)));
    }
  }
}

TEST(Softmax, CudaMatchesCpuForShortAndLongRows) {
  CUDL_REQUIRE_CUDA();
  const std::vector<Shape> shapes = {Shape{5, 1},    Shape{7, 10},   Shape{3, 33}, Shape{2, 3, 33},
                                     Shape{4, 1000}, Shape{3, 3000}, Shape{1025},  Shape{2, 1024}};
  for (bool log : {false, true}) {
    for (const Shape& shape : shapes) {
      SCOPED_TRACE(std::string(name(log)) + " " + shape.str());
      Tensor x = random_tensor(shape, 10 + shape.numel(), -5, 5);
      Tensor y = run_softmax(log, x);
      EXPECT_TRUE(all_close(host(run_softmax(log, cuda(x))), y, 1e-6, 1e-5));
      Tensor dy = random_tensor(shape, 20 + shape.numel());
      Tensor dx = run_softmax_backward(log, y, dy);
      EXPECT_TRUE(all_close(host(run_softmax_backward(log, cuda(y), cuda(dy))), dx, 1e-6, 1e-5));
    }
  }
}

TEST(Softmax, InfAndNanRowsBehaveLikeTorch) {
  // Rows: all -inf (NaN), one +inf (NaN: inf - inf), a NaN (NaN), some -inf (probability 0), plain.
  for (int64_t cols : {int64_t{8}, int64_t{3000}}) {
    std::vector<float> v(static_cast<size_t>(5 * cols));
    for (int64_t j = 0; j < cols; ++j) {
      v[0 * cols + j] = -kInf;
      v[1 * cols + j] = static_cast<float>(j % 5);
      v[2 * cols + j] = static_cast<float>(j % 3);
      v[3 * cols + j] = j % 2 ? -kInf : static_cast<float>(j % 7);
      v[4 * cols + j] = static_cast<float>(j % 4) - 2;
    }
    v[1 * cols + cols / 2] = kInf;
    v[2 * cols + cols - 1] = kNaN;
    Tensor x = Tensor::from_vector(v, Shape{5, cols});
    for (bool log : {false, true}) {
      SCOPED_TRACE(std::string(name(log)) + " cols=" + std::to_string(cols));
      Tensor y = run_softmax(log, x);
      auto yv = y.to_vector<float>();
      for (int r = 0; r < 3; ++r)
        for (int64_t j = 0; j < cols; ++j) ASSERT_TRUE(std::isnan(yv[r * cols + j])) << "row " << r << " col " << j;
      double total = 0;
      for (int64_t j = 0; j < cols; ++j) {
        const float p = log ? std::exp(yv[3 * cols + j]) : yv[3 * cols + j];
        if (j % 2) EXPECT_EQ(p, 0.f) << j;
        total += p;
      }
      EXPECT_NEAR(total, 1.0, 1e-5);
      if (cuda_available()) EXPECT_TRUE(all_close(host(run_softmax(log, cuda(x))), y, 1e-6, 1e-5));
    }
  }
}

TEST(Softmax, WrongDeviceNamesTheOp) {
  CUDL_REQUIRE_CUDA();
  Tensor y = Tensor::zeros(Shape{3, 4}, DType::f32, Device::cuda());
  Tensor dy = Tensor::zeros(Shape{3, 4});
  try {
    run_op(OpKind::SoftmaxBackward, {tv(y), tv(dy)}, {tv(y)});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("SoftmaxBackward"), std::string::npos) << m;
    EXPECT_NE(m.find("(3, 4)"), std::string::npos) << m;
  }
}

TEST(Softmax, ErrorsNameOpAndShapes) {
  for (Device d : test_devices()) {
    SCOPED_TRACE(d.str());
    Tensor x = Tensor::zeros(Shape{3, 4}, DType::f32, d);
    Tensor bad = Tensor::zeros(Shape{4, 3}, DType::f32, d);
    try {
      run_op(OpKind::Softmax, {tv(x)}, {tv(bad)}, {}, nullptr, "head/softmax");
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("Softmax (head/softmax)"), std::string::npos) << m;
      EXPECT_NE(m.find("(4, 3)"), std::string::npos) << m;
      EXPECT_NE(m.find("(3, 4)"), std::string::npos) << m;
    }
    Tensor xi = Tensor::zeros(Shape{3, 4}, DType::i32, d);
    try {
      run_op(OpKind::LogSoftmaxBackward, {tv(x), tv(xi)}, {tv(x)});
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("LogSoftmaxBackward"), std::string::npos) << m;
      EXPECT_NE(m.find("i32"), std::string::npos) << m;
    }
  }
}

// --- 16-bit storage: x, y, dy, dx in bf16 / f16, fp32 math, each result rounded once --------------

namespace {

/// Softmax of `shape` on a view starting one element into a larger buffer (the scalar path of a
/// width the 16-byte groups would otherwise take).
Tensor run_softmax_misaligned(bool log, const Tensor& x) {
  const size_t es = dtype_size(x.dtype());
  Tensor xb = Tensor::zeros(Shape{x.numel() + 1}, x.dtype(), x.device());
  Tensor yb = Tensor::zeros(Shape{x.numel() + 1}, x.dtype(), x.device());
  xb.view_bytes(es, x.shape(), x.dtype()).copy_from(x);
  run_op(log ? OpKind::LogSoftmax : OpKind::Softmax, {tv(xb.view_bytes(es, x.shape(), x.dtype()))},
         {tv(yb.view_bytes(es, x.shape(), x.dtype()))});
  return yb.view_bytes(es, x.shape(), x.dtype()).to(Device::cpu()).clone();
}

}  // namespace

// Widths: 10 and 33 take the warp kernel's scalar path, 16 and 1000 its 16-byte groups (8 values),
// 1500 the block kernel's scalar path, 2048 its 16-byte groups. CUDA equals the CPU reference (the
// f32 function on the widened values, rounded once) to 1 ulp, and at least 95% bitwise.
TEST(Softmax16Bit, MatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (DType st : k16BitTypes)
    for (bool log : {false, true})
      for (const Shape& shape :
           {Shape{7, 10}, Shape{5, 16}, Shape{3, 33}, Shape{6, 1000}, Shape{2, 1500}, Shape{3, 2048}}) {
        SCOPED_TRACE(std::string(dtype_name(st)) + " " + name(log) + " " + shape.str());
        Tensor x = to_storage(random_tensor(shape, 50 + shape.numel(), -6, 6), st);
        const Tensor y = run_softmax(log, x);
        const Tensor yc = host(run_softmax(log, cuda(x)));
        ASSERT_EQ(yc.dtype(), st);
        EXPECT_TRUE(close_16bit(yc, y)) << "y";
        Tensor dy = to_storage(random_tensor(shape, 60 + shape.numel(), -2, 2), st);
        const Tensor dxc = host(run_softmax_backward(log, cuda(y), cuda(dy)));
        ASSERT_EQ(dxc.dtype(), st);
        EXPECT_TRUE(close_16bit(dxc, run_softmax_backward(log, y, dy))) << "dx";
        if (shape[1] % 8 == 0) EXPECT_TRUE(close_16bit(run_softmax_misaligned(log, cuda(x)), y)) << "misaligned";
      }
}

// The comparison MatchesCpu uses fails what a kernel that skipped the rounding (truncation) or
// kept its intermediates in 16 bits (each exp(x - max) and the running row sum rounded) would store.
TEST(Softmax16Bit, ComparisonCatchesTruncationAnd16BitMath) {
  for (DType st : k16BitTypes) {
    SCOPED_TRACE(dtype_name(st));
    const int64_t rows = 8, cols = 1000;
    Tensor x = to_storage(random_tensor(Shape{rows, cols}, 71, -6, 6), st);
    const Tensor y = run_softmax(false, x);
    EXPECT_TRUE(close_16bit(y, y));
    EXPECT_FALSE(close_16bit(truncated_16bit(run_softmax(false, widened(x)), st), y)) << "truncation must not pass";
    const std::vector<uint16_t> xb = bits_16(x);
    std::vector<float> stepwise(static_cast<size_t>(rows * cols));
    auto r16 = [&](float v) { return rounded_16(v, st); };
    for (int64_t r = 0; r < rows; ++r) {
      float m = -kInf;
      for (int64_t j = 0; j < cols; ++j) m = std::max(m, widen_16(xb[r * cols + j], st));
      float sum = 0.f;
      for (int64_t j = 0; j < cols; ++j) sum = r16(sum + r16(std::exp(widen_16(xb[r * cols + j], st) - m)));
      for (int64_t j = 0; j < cols; ++j)
        stepwise[r * cols + j] = r16(std::exp(widen_16(xb[r * cols + j], st) - m)) / sum;
    }
    EXPECT_FALSE(close_16bit(to_storage(Tensor::from_vector(stepwise, Shape{rows, cols}), st), y))
        << "16-bit intermediates must not pass";
  }
}

TEST(Softmax16Bit, MixedStorageTypesNameTheOp) {
  for (Device d : test_devices()) {
    SCOPED_TRACE(d.str());
    Tensor y = to_storage(random_tensor(Shape{3, 4}, 1), DType::bf16).to(d);
    Tensor dy = to_storage(random_tensor(Shape{3, 4}, 2), DType::f16).to(d);
    Tensor dx = Tensor::zeros(Shape{3, 4}, DType::bf16, d);
    const std::string m =
        error_message([&] { run_op(OpKind::SoftmaxBackward, {tv(y), tv(dy)}, {tv(dx)}, {}, nullptr, "head/softmax"); });
    for (const char* part : {"SoftmaxBackward (head/softmax)", "bf16", "f16", "(3, 4)"})
      EXPECT_NE(m.find(part), std::string::npos) << part << " not in: " << m;
  }
}
