// tests/test_op_pool.cpp — pooling ops: CPU reference vs finite differences and hand-computed
// windows (ties, padding, NaN), CUDA vs CPU forward/backward on odd geometries, geometry errors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cpu/parallel.hpp"
#include "testing.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

const Device kCpu = Device::cpu();

struct Window {
  int64_t kh, kw, sh, sw, ph, pw;
  std::string str() const {
    return "k" + std::to_string(kh) + "x" + std::to_string(kw) + " s" + std::to_string(sh) + "x" + std::to_string(sw) +
           " p" + std::to_string(ph) + "x" + std::to_string(pw);
  }
};

OpAttrs attrs_of(const Window& w) {
  OpAttrs a;
  a.i = {w.kh, w.kw, w.sh, w.sw, w.ph, w.pw, 0, 0};
  return a;
}

/// The output shape of a valid geometry; at least 1 per dim (so invalid geometries reach the op).
Shape out_shape(const Shape& x, const Window& w) {
  auto out = [](int64_t n, int64_t k, int64_t s, int64_t p) {
    return s < 1 ? int64_t{1} : std::max<int64_t>(1, (n + 2 * p - k) / s + 1);
  };
  return Shape{x[0], x[1], out(x[2], w.kh, w.sh, w.ph), out(x[3], w.kw, w.sw, w.pw)};
}

/// Values with distinct magnitudes (gaps of 0.01 >> finite-difference eps): a shuffled ramp.
Tensor distinct_tensor(const Shape& s, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(s.numel()));
  std::iota(v.begin(), v.end(), 0.f);
  std::shuffle(v.begin(), v.end(), std::mt19937_64(seed));
  for (auto& x : v) x = x * 0.01f - 1.f;
  return Tensor::from_vector(v, s);
}

struct MaxOut {
  Tensor y, argmax;
};

MaxOut max_pool(const Tensor& x, const Window& w, Device device, bool with_argmax = true) {
  const Shape ys = out_shape(x.shape(), w);
  Tensor y = Tensor::full(ys, -7.0, x.dtype(), device);
  Tensor am = with_argmax ? Tensor::full(ys, -7.0, DType::i32, device) : Tensor();
  run_op(OpKind::MaxPool2d, {tv(x.to(device))}, {tv(y), tv(am)}, attrs_of(w), nullptr, "test/pool");
  return {y.to(kCpu), with_argmax ? am.to(kCpu) : Tensor()};
}

Tensor max_pool_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Window& w, Device device) {
  Tensor dx = Tensor::full(x.shape(), -7.0, x.dtype(), device);
  run_op(OpKind::MaxPool2dBackward, {tv(x.to(device)), tv(y.to(device)), tv(dy.to(device))}, {tv(dx)}, attrs_of(w),
         nullptr, "test/pool");
  return dx.to(kCpu);
}

Tensor avg_pool(const Tensor& x, const Window& w, Device device) {
  Tensor y = Tensor::full(out_shape(x.shape(), w), -7.0, x.dtype(), device);
  run_op(OpKind::AvgPool2d, {tv(x.to(device))}, {tv(y)}, attrs_of(w), nullptr, "test/pool");
  return y.to(kCpu);
}

Tensor avg_pool_backward(const Tensor& dy, const Shape& x_shape, const Window& w, Device device) {
  Tensor dx = Tensor::full(x_shape, -7.0, dy.dtype(), device);
  run_op(OpKind::AvgPool2dBackward, {tv(dy.to(device))}, {tv(dx)}, attrs_of(w), nullptr, "test/pool");
  return dx.to(kCpu);
}

Tensor global_avg(const Tensor& x, Device device) {
  Tensor y = Tensor::full(Shape{x.shape()[0], x.shape()[1]}, -7.0, x.dtype(), device);
  run_op(OpKind::GlobalAvgPool, {tv(x.to(device))}, {tv(y)}, {}, nullptr, "test/pool");
  return y.to(kCpu);
}

Tensor global_avg_backward(const Tensor& dy, const Shape& x_shape, Device device) {
  Tensor dx = Tensor::full(x_shape, -7.0, dy.dtype(), device);
  run_op(OpKind::GlobalAvgPoolBackward, {tv(dy.to(device))}, {tv(dx)}, {}, nullptr, "test/pool");
  return dx.to(kCpu);
}

std::vector<double> weights(int64_t n, uint64_t seed) { return as_doubles(random_tensor(Shape{n}, seed, -1, 1)); }

Tensor tensor_of(const std::vector<double>& w, const Shape& s) {
  return Tensor::from_vector(std::vector<float>(w.begin(), w.end()), s);
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no cudl::Error thrown";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const auto& s : parts) EXPECT_NE(m.find(s), std::string::npos) << "'" << s << "' not in: " << m;
  }
}

const Window kWindows[] = {
    {2, 2, 2, 2, 0, 0},  // the classic
    {3, 3, 1, 1, 1, 1},  // overlapping, padded
    {3, 2, 2, 1, 1, 1},  // non-square kernel, stride != kernel
    {2, 3, 1, 2, 0, 1},  // stride > 1 in w only, padding in w only
    {5, 5, 3, 2, 2, 2},  // large window on a small image
    {1, 1, 1, 1, 0, 0},  // identity
};

}  // namespace

// ---------------------------------------------------------------- CPU reference -----------------

TEST(PoolCpu, MaxPoolBackwardMatchesFiniteDifferences) {
  const Shape s{2, 2, 7, 5};
  for (const Window& w : kWindows) {
    SCOPED_TRACE(w.str());
    Tensor x = distinct_tensor(s, 1);
    const MaxOut f = max_pool(x, w, kCpu);
    const auto wt = weights(f.y.numel(), 2);
    const Tensor dx = max_pool_backward(x, f.y, tensor_of(wt, f.y.shape()), w, kCpu);
    auto num = numerical_gradient([&](const Tensor& xx) { return weighted_sum(max_pool(xx, w, kCpu, false).y, wt); },
                                  x.clone());
    EXPECT_TRUE(gradient_close(dx, num));
  }
}

TEST(PoolCpu, AvgAndGlobalPoolBackwardMatchFiniteDifferences) {
  const Shape s{2, 3, 7, 5};
  for (const Window& w : kWindows) {
    SCOPED_TRACE(w.str());
    Tensor x = random_tensor(s, 3);
    const Shape ys = out_shape(s, w);
    const auto wt = weights(ys.numel(), 4);
    const Tensor dx = avg_pool_backward(tensor_of(wt, ys), s, w, kCpu);
    auto num = numerical_gradient([&](const Tensor& xx) { return weighted_sum(avg_pool(xx, w, kCpu), wt); }, x.clone());
    EXPECT_TRUE(gradient_close(dx, num));
  }
  Tensor x = random_tensor(s, 5);
  const auto wt = weights(6, 6);
  EXPECT_TRUE(gradient_close(
      global_avg_backward(tensor_of(wt, Shape{2, 3}), s, kCpu),
      numerical_gradient([&](const Tensor& xx) { return weighted_sum(global_avg(xx, kCpu), wt); }, x.clone())));
}

TEST(PoolCpu, ThreadCountDoesNotChangeTwoByTwoMaxPool) {
  // The 2x2 / stride 2 fast path splits the (image, channel) planes over threads.
  const Window w{2, 2, 2, 2, 0, 0};
  for (const Shape& xs : {Shape{3, 5, 7, 6}, Shape{1, 1, 2, 2}, Shape{4, 3, 9, 9}}) {
    SCOPED_TRACE(::testing::Message() << xs);
    Tensor x = distinct_tensor(xs, 41);
    auto run_all = [&](int threads) {
      ScopedCpuThreads scope(threads);
      const MaxOut f = max_pool(x, w, kCpu);
      Tensor dy = random_tensor(f.y.shape(), 42);
      return std::vector<Tensor>{f.y, max_pool_backward(x, f.y, dy, w, kCpu)};
    };
    const std::vector<Tensor> one = run_all(1);
    for (int threads : {2, 3, 8}) {
      const std::vector<Tensor> many = run_all(threads);
      EXPECT_TRUE(bitwise_equal(many[0], one[0])) << "y with " << threads << " threads";
      EXPECT_TRUE(bitwise_equal(many[1], one[1])) << "dx with " << threads << " threads";
    }
  }
}

TEST(PoolCpu, HandComputedWindows) {
  // x (1, 1, 3, 4):  0  1  2  3 /  4  5  6  7 /  8  9 10 11
  std::vector<float> v(12);
  std::iota(v.begin(), v.end(), 0.f);
  Tensor x = Tensor::from_vector(v, Shape{1, 1, 3, 4});
  // 2x2 kernel, stride 1, padding 1 -> (1, 1, 4, 5); corner window covers only x[0][0].
  const MaxOut m = max_pool(x, {2, 2, 1, 1, 1, 1}, kCpu);
  ASSERT_EQ(m.y.shape(), (Shape{1, 1, 4, 5}));
  EXPECT_EQ(m.y.item(0), 0);    // window rows -1..0, cols -1..0
  EXPECT_EQ(m.y.item(6), 5);    // p=1, q=1: rows 0..1, cols 0..1
  EXPECT_EQ(m.y.item(19), 11);  // p=3, q=4: rows 2..3, cols 3..4
  EXPECT_EQ(m.argmax.item(19), 11);
  // Average with padding counted as zeros: corner = 0 / 4, p=1 q=1 = (0+1+4+5)/4.
  const Tensor a = avg_pool(x, {2, 2, 1, 1, 1, 1}, kCpu);
  EXPECT_NEAR(a.item(0), 0.0, 1e-7);
  EXPECT_NEAR(a.item(6), 2.5, 1e-6);
  EXPECT_NEAR(a.item(19), 11 / 4.0, 1e-6);
  EXPECT_NEAR(global_avg(x, kCpu).item(0), 5.5, 1e-6);
}

TEST(PoolCpu, TiesGoToTheFirstMaximumInScanOrder) {
  // Constant 3x3 image, 2x2 windows with stride 1: every window's argmax is its top-left cell.
  Tensor x = Tensor::full(Shape{1, 1, 3, 3}, 2.0);
  const Window w{2, 2, 1, 1, 0, 0};
  const MaxOut m = max_pool(x, w, kCpu);
  EXPECT_EQ(m.argmax.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 3, 4}));
  Tensor dy = Tensor::from_vector<float>({1, 10, 100, 1000}, Shape{1, 1, 2, 2});
  EXPECT_EQ(max_pool_backward(x, m.y, dy, w, kCpu).to_vector<float>(),
            (std::vector<float>{1, 10, 0, 100, 1000, 0, 0, 0, 0}));
}

TEST(PoolCpu, NanIsTheMaximum) {
  Tensor x = distinct_tensor(Shape{1, 1, 4, 4}, 7);
  x.data_as<float>()[5] = std::numeric_limits<float>::quiet_NaN();  // (1, 1)
  const MaxOut m = max_pool(x, {2, 2, 2, 2, 0, 0}, kCpu);
  EXPECT_TRUE(std::isnan(m.y.item(0)));
  EXPECT_EQ(m.argmax.item(0), 5);
  EXPECT_FALSE(std::isnan(m.y.item(1)));
  EXPECT_TRUE(std::isnan(avg_pool(x, {2, 2, 2, 2, 0, 0}, kCpu).item(0)));
}

TEST(PoolCpu, EveryTwoByTwoWindowFollowsTheScanRule) {
  // Every window over {NaN, -0, +0, 1, 2}: the unrolled 2x2 stride-2 path must pick what the
  // scan of op.hpp picks (the first NaN, else the first maximum; -0 and +0 tie), forward and backward.
  const float vals[5] = {std::numeric_limits<float>::quiet_NaN(), -0.f, 0.f, 1.f, 2.f};
  const int64_t windows = 5 * 5 * 5 * 5;
  std::vector<float> v(static_cast<size_t>(windows * 4));
  std::vector<int32_t> expect(static_cast<size_t>(windows));
  for (int64_t w = 0; w < windows; ++w) {
    float* cell = &v[static_cast<size_t>(w * 4)];
    for (int k = 0, code = static_cast<int>(w); k < 4; ++k, code /= 5) cell[k] = vals[code % 5];
    int best = 0;
    for (int k = 1; k < 4; ++k)
      if (!std::isnan(cell[best]) && (cell[k] > cell[best] || std::isnan(cell[k]))) best = k;
    expect[static_cast<size_t>(w)] = best;
  }
  Tensor x = Tensor::from_vector(v, Shape{1, windows, 2, 2});
  const Window win{2, 2, 2, 2, 0, 0};
  const MaxOut m = max_pool(x, win, kCpu);
  EXPECT_EQ(m.argmax.to_vector<int32_t>(), expect);
  const auto y = m.y.to_vector<float>();
  std::vector<float> dyv(static_cast<size_t>(windows));
  for (int64_t w = 0; w < windows; ++w) dyv[static_cast<size_t>(w)] = w % 3 == 0 ? -0.f : static_cast<float>(w + 1);
  const auto dx =
      max_pool_backward(x, m.y, Tensor::from_vector(dyv, Shape{1, windows, 1, 1}), win, kCpu).to_vector<float>();
  for (int64_t w = 0; w < windows; ++w) {
    const float want = v[static_cast<size_t>(w * 4 + expect[static_cast<size_t>(w)])];
    const float got = y[static_cast<size_t>(w)];
    ASSERT_TRUE(std::isnan(want) ? std::isnan(got) : std::memcmp(&want, &got, sizeof got) == 0) << "window " << w;
    for (int k = 0; k < 4; ++k) {
      // The reference sums one term in double from +0: the dy itself, with -0 turned into +0.
      const float d = k == expect[static_cast<size_t>(w)] ? 0.f + dyv[static_cast<size_t>(w)] : 0.f;
      const float g = dx[static_cast<size_t>(w * 4 + k)];
      ASSERT_EQ(std::memcmp(&d, &g, sizeof g), 0) << "window " << w << " cell " << k << ": " << g << " vs " << d;
    }
  }
}

TEST(PoolCpu, GeometryErrorsNameOpAndShapes) {
  Tensor x = random_tensor(Shape{2, 3, 4, 5}, 8);
  expect_error(
      [&] {
        max_pool(x, {6, 2, 1, 1, 0, 0}, kCpu);
      },
      {"MaxPool2d", "test/pool", "(2, 3, 4, 5)", "kernel (6, 2)"});
  expect_error([&] { avg_pool(x, {2, 2, 1, 1, 2, 0}, kCpu); }, {"AvgPool2d", "padding", "(2, 3, 4, 5)"});
  expect_error([&] { max_pool(x, {2, 2, 0, 1, 0, 0}, kCpu); }, {"MaxPool2d", "stride (0, 1)"});
  expect_error(
      [&] {
        Tensor y = Tensor::empty(Shape{2, 3, 2, 3});
        run_op(OpKind::MaxPool2d, {tv(x)}, {tv(y)}, attrs_of({2, 2, 2, 2, 0, 0}), nullptr, "test/pool");
      },
      {"MaxPool2d", "(2, 3, 2, 3)", "(2, 3, 2, 2)", "(2, 3, 4, 5)"});
  expect_error(
      [&] {
        Tensor y = Tensor::empty(Shape{2, 3, 2, 2}), am = Tensor::empty(Shape{2, 3, 2, 2});
        run_op(OpKind::MaxPool2d, {tv(x)}, {tv(y), tv(am)}, attrs_of({2, 2, 2, 2, 0, 0}), nullptr, "test/pool");
      },
      {"MaxPool2d", "argmax", "i32", "f32"});
  expect_error(
      [&] {
        Tensor x3 = random_tensor(Shape{3, 4, 5}, 9), y = Tensor::empty(Shape{3, 4, 2, 2});
        run_op(OpKind::MaxPool2d, {tv(x3)}, {tv(y)}, attrs_of({2, 2, 2, 2, 0, 0}), nullptr, "test/pool");
      },
      {"MaxPool2d", "(3, 4, 5)"});
  expect_error(
      [&] {
        avg_pool_backward(random_tensor(Shape{2, 3, 3, 2}, 9), x.shape(), {2, 2, 2, 2, 0, 0}, kCpu);
      },
      {"AvgPool2dBackward", "dy", "(2, 3, 3, 2)", "(2, 3, 4, 5)"});
  expect_error(
      [&] {
        global_avg_backward(random_tensor(Shape{2, 4}, 9), x.shape(), kCpu);
      },
      {"GlobalAvgPoolBackward", "(2, 4)", "(2, 3, 4, 5)"});
}

// ---------------------------------------------------------------- CUDA vs CPU -------------------

TEST(PoolCuda, MaxPoolForwardAndBackwardMatchCpu) {
  CUDL_REQUIRE_CUDA();
  for (Shape s : {Shape{2, 3, 7, 5}, Shape{1, 1, 1, 1}, Shape{3, 2, 9, 13}, Shape{1, 33, 4, 4}})
    for (const Window& w : kWindows) {
      if (s[2] + 2 * w.ph < w.kh || s[3] + 2 * w.pw < w.kw) continue;
      SCOPED_TRACE(s.str() + " " + w.str());
      Tensor x = random_tensor(s, 10 + s.numel());
      const MaxOut g = max_pool(x, w, Device::cuda());
      const MaxOut e = max_pool(x, w, kCpu);
      EXPECT_TRUE(all_close(g.y, e.y, 0, 0)) << "y";
      EXPECT_TRUE(all_close(g.argmax, e.argmax, 0, 0)) << "argmax";
      Tensor dy = random_tensor(e.y.shape(), 11);
      EXPECT_TRUE(all_close(max_pool_backward(x, e.y, dy, w, Device::cuda()), max_pool_backward(x, e.y, dy, w, kCpu),
                            1e-6, 1e-5))
          << "dx";
    }
}

TEST(PoolCuda, MaxPoolTiesAndNanMatchCpu) {
  CUDL_REQUIRE_CUDA();
  // Values from {0, 1, 2}: many ties inside windows; plus a NaN.
  std::vector<float> v(2 * 3 * 7 * 5);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 5) % 3);
  v[17] = std::numeric_limits<float>::quiet_NaN();
  v[40] = std::numeric_limits<float>::quiet_NaN();
  v[41] = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::from_vector(v, Shape{2, 3, 7, 5});
  for (const Window& w : kWindows) {
    SCOPED_TRACE(w.str());
    const MaxOut g = max_pool(x, w, Device::cuda());
    const MaxOut e = max_pool(x, w, kCpu);
    EXPECT_TRUE(all_close(g.y, e.y, 0, 0)) << "y";
    EXPECT_TRUE(all_close(g.argmax, e.argmax, 0, 0)) << "argmax";
    Tensor dy = random_tensor(e.y.shape(), 12);
    EXPECT_TRUE(
        all_close(max_pool_backward(x, e.y, dy, w, Device::cuda()), max_pool_backward(x, e.y, dy, w, kCpu), 1e-6, 1e-5))
        << "dx";
  }
}

// 16-bit storage: the maximum is one of the inputs, so y and argmax match the CPU bitwise; dx sums
// dy over windows in fp32 and rounds once: within one 16-bit epsilon of the sum of |dy| terms, and
// at least 95% bitwise equal (storage_sum_close).
TEST(PoolCuda, MaxPool16BitMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (DType st : {DType::bf16, DType::f16})
    for (Shape s : {Shape{2, 3, 7, 5}, Shape{3, 2, 9, 13}, Shape{1, 33, 4, 4}})
      for (const Window& w : kWindows) {
        if (s[2] + 2 * w.ph < w.kh || s[3] + 2 * w.pw < w.kw) continue;
        SCOPED_TRACE(std::string(dtype_name(st)) + " " + s.str() + " " + w.str());
        // Rounding to 16 bits makes ties (equal maxima) common: the first-maximum rule is exercised.
        std::vector<float> v = random_tensor(s, 20 + s.numel()).to_vector<float>();
        v[v.size() / 2] = std::numeric_limits<float>::quiet_NaN();
        Tensor x = to_storage(Tensor::from_vector(v, s), st);
        const MaxOut g = max_pool(x, w, Device::cuda());
        const MaxOut e = max_pool(x, w, kCpu);
        ASSERT_EQ(g.y.dtype(), st);
        EXPECT_TRUE(all_close(g.y, e.y, 0, 0)) << "y";
        EXPECT_TRUE(all_close(g.argmax, e.argmax, 0, 0)) << "argmax";
        Tensor dy = to_storage(random_tensor(e.y.shape(), 21), st);
        EXPECT_TRUE(storage_sum_close(max_pool_backward(x, e.y, dy, w, Device::cuda()),
                                      max_pool_backward(x, e.y, dy, w, kCpu),
                                      max_pool_backward(widened(x), widened(e.y), abs_of(dy), w, kCpu)))
            << "dx";
      }
}

TEST(PoolCuda, MaxPoolRejectsMixedStorageTypes) {
  CUDL_REQUIRE_CUDA();
  const Window w{2, 2, 2, 2, 0, 0};
  Tensor x = to_storage(random_tensor(Shape{1, 2, 4, 4}, 1), DType::bf16);
  for (Device d : {kCpu, Device::cuda()}) {
    Tensor y = Tensor::empty(Shape{1, 2, 2, 2}, DType::f16, d);
    expect_error([&] { run_op(OpKind::MaxPool2d, {tv(x.to(d))}, {tv(y)}, attrs_of(w), nullptr, "test/pool"); },
                 {"MaxPool2d", "bf16", "f16"});
    Tensor ax = to_storage(random_tensor(Shape{1, 2, 4, 4}, 1), DType::bf16).to(d);
    Tensor ay = Tensor::empty(Shape{1, 2, 2, 2}, DType::f32, d);
    expect_error([&] { run_op(OpKind::AvgPool2d, {tv(ax)}, {tv(ay)}, attrs_of(w), nullptr, "test/pool"); },
                 {"AvgPool2d", "bf16", "f32", "one storage type per call"});
    Tensor gy = Tensor::empty(Shape{1, 2}, DType::f16, d);
    expect_error([&] { run_op(OpKind::GlobalAvgPool, {tv(ax)}, {tv(gy)}, {}, nullptr, "test/pool"); },
                 {"GlobalAvgPool", "bf16", "f16"});
  }
}

TEST(PoolCuda, AvgAndGlobalPoolMatchCpu) {
  CUDL_REQUIRE_CUDA();
  for (Shape s : {Shape{2, 3, 7, 5}, Shape{1, 1, 1, 1}, Shape{3, 2, 9, 13}, Shape{1, 33, 4, 4}, Shape{2, 5, 40, 37}}) {
    SCOPED_TRACE(s.str());
    Tensor x = random_tensor(s, 20 + s.numel());
    for (const Window& w : kWindows) {
      if (s[2] + 2 * w.ph < w.kh || s[3] + 2 * w.pw < w.kw) continue;
      if (s.numel() > 5000 && w.kh != 3) continue;  // keep the emulated run short
      SCOPED_TRACE(w.str());
      EXPECT_TRUE(all_close(avg_pool(x, w, Device::cuda()), avg_pool(x, w, kCpu), 1e-6, 1e-5)) << "y";
      Tensor dy = random_tensor(out_shape(s, w), 21);
      EXPECT_TRUE(all_close(avg_pool_backward(dy, s, w, Device::cuda()), avg_pool_backward(dy, s, w, kCpu), 1e-6, 1e-5))
          << "dx";
    }
    EXPECT_TRUE(all_close(global_avg(x, Device::cuda()), global_avg(x, kCpu), 1e-6, 1e-5)) << "global";
    Tensor gdy = random_tensor(Shape{s[0], s[1]}, 22);
    EXPECT_TRUE(all_close(global_avg_backward(gdy, s, Device::cuda()), global_avg_backward(gdy, s, kCpu), 1e-6, 1e-5))
        << "global dx";
  }
}

// 16-bit storage: every average is an fp32 sum divided by the window area and rounded once, so
// each result lies within one 16-bit epsilon of the same average of |terms| (storage_sum_close), at
// least 95% bitwise equal to the CPU reference.
TEST(PoolCuda, AvgAndGlobalPool16BitMatchCpu) {
  CUDL_REQUIRE_CUDA();
  for (DType st : k16BitTypes)
    for (Shape s : {Shape{2, 3, 7, 5}, Shape{3, 2, 9, 13}, Shape{1, 33, 4, 4}}) {
      SCOPED_TRACE(std::string(dtype_name(st)) + " " + s.str());
      Tensor x = to_storage(random_tensor(s, 30 + s.numel()), st);
      for (const Window& w : kWindows) {
        if (s[2] + 2 * w.ph < w.kh || s[3] + 2 * w.pw < w.kw) continue;
        SCOPED_TRACE(w.str());
        const Tensor y = avg_pool(x, w, Device::cuda());
        ASSERT_EQ(y.dtype(), st);
        EXPECT_TRUE(storage_sum_close(y, avg_pool(x, w, kCpu), avg_pool(abs_of(x), w, kCpu))) << "y";
        Tensor dy = to_storage(random_tensor(out_shape(s, w), 31), st);
        EXPECT_TRUE(storage_sum_close(avg_pool_backward(dy, s, w, Device::cuda()), avg_pool_backward(dy, s, w, kCpu),
                                      avg_pool_backward(abs_of(dy), s, w, kCpu)))
            << "dx";
      }
      EXPECT_TRUE(storage_sum_close(global_avg(x, Device::cuda()), global_avg(x, kCpu), global_avg(abs_of(x), kCpu)))
          << "global";
      Tensor gdy = to_storage(random_tensor(Shape{s[0], s[1]}, 32), st);
      const Tensor gdx = global_avg_backward(gdy, s, Device::cuda());
      ASSERT_EQ(gdx.dtype(), st);
      EXPECT_TRUE(storage_sum_close(gdx, global_avg_backward(gdy, s, kCpu), global_avg_backward(abs_of(gdy), s, kCpu)))
          << "global dx";
    }
}

// The comparison above fails an average whose sum ran in 16-bit math, or whose result was truncated.
TEST(PoolCuda, Avg16BitComparisonCatchesTruncationAnd16BitSums) {
  const Shape s{4, 16, 8, 8};
  for (DType st : k16BitTypes) {
    SCOPED_TRACE(dtype_name(st));
    Tensor x = to_storage(random_tensor(s, 33, 0.5f, 2.f), st);  // normal in f16 after the average
    const Tensor ref = global_avg(x, kCpu), abs_sum = global_avg(abs_of(x), kCpu);
    EXPECT_TRUE(storage_sum_close(ref, ref, abs_sum));
    EXPECT_FALSE(storage_sum_close(truncated_16bit(global_avg(widened(x), kCpu), st), ref, abs_sum))
        << "truncation must not pass";
    const std::vector<uint16_t> xb = bits_16(x);
    const int64_t images = s[0] * s[1], hw = s[2] * s[3];
    std::vector<float> summed16(static_cast<size_t>(images));
    for (int64_t r = 0; r < images; ++r) {
      float acc = 0.f;
      for (int64_t k = 0; k < hw; ++k) acc = widen_16(round_16(acc + widen_16(xb[r * hw + k], st), st), st);
      summed16[r] = acc / static_cast<float>(hw);
    }
    EXPECT_FALSE(storage_sum_close(to_storage(Tensor::from_vector(summed16, ref.shape()), st), ref, abs_sum))
        << "a 16-bit sum must not pass";
  }
}

TEST(PoolCuda, GeometryErrorsNameOpAndShapes) {
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor(Shape{2, 3, 4, 5}, 8);
  expect_error(
      [&] {
        max_pool(x, {6, 2, 1, 1, 0, 0}, Device::cuda());
      },
      {"MaxPool2d", "(2, 3, 4, 5)", "kernel (6, 2)"});
  expect_error([&] { avg_pool(x, {2, 2, 1, 1, 2, 0}, Device::cuda()); }, {"AvgPool2d", "padding", "(2, 3, 4, 5)"});
}
