// tests/test_op_data.cpp — data-movement ops: CPU reference against index formulas written here and
// against finite differences (slice, concat, gather, permute); CUDA equal to CPU bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <tuple>
#include <vector>

#include "testing.hpp"
#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif

using namespace cudl;
using cudl::testing::error_message;
using namespace cudl::testing;

namespace {

void run_views(OpKind op, const std::vector<TensorView>& iv, const std::vector<TensorView>& ov, const OpAttrs& a = {}) {
  const Device dev = !ov.empty() ? ov[0].device : iv[0].device;
  OpCall c;
  c.op = op;
  c.inputs = iv.data();
  c.n_inputs = static_cast<int>(iv.size());
  c.outputs = ov.data();
  c.n_outputs = static_cast<int>(ov.size());
  c.attrs = a;
  c.ctx = &default_context(dev);
  c.label = "test/data";
  op_table(dev.type()).run(c);
}

void run(OpKind op, const std::vector<Tensor>& in, const std::vector<Tensor>& out, const OpAttrs& a = {}) {
  std::vector<TensorView> iv, ov;
  for (const auto& t : in) iv.push_back(tv(t));
  for (const auto& t : out) ov.push_back(tv(t));
  run_views(op, iv, ov, a);
}

#define EXPECT_MESSAGE_HAS(msg, text) EXPECT_NE((msg).find(text), std::string::npos) << (msg)

OpAttrs ints(std::initializer_list<int64_t> v) {
  OpAttrs a;
  int k = 0;
  for (int64_t x : v) a.i[k++] = x;
  return a;
}

std::vector<unsigned char> bytes_of(const Tensor& t) {
  Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  const auto* p = static_cast<const unsigned char*>(h.data());
  return std::vector<unsigned char>(p, p + h.nbytes());
}

::testing::AssertionResult same_bytes(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << a.shape() << " " << a.dtype() << " vs " << b.shape() << " " << b.dtype();
  const auto x = bytes_of(a), y = bytes_of(b);
  const size_t es = dtype_size(a.dtype());
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i] != y[i])
      return ::testing::AssertionFailure()
             << "element " << i / es << " differs: " << a.to(Device::cpu()).item(int64_t(i / es)) << " vs "
             << b.to(Device::cpu()).item(int64_t(i / es));
  return ::testing::AssertionSuccess();
}

Tensor iota(const Shape& s, DType dt = DType::f32) {
  Tensor t = Tensor::empty(s, dt);
  for (int64_t i = 0; i < s.numel(); ++i) {
    const double v = dt == DType::u8 ? double(i % 251) : double(i) * 0.5 - 3;
    switch (dt) {
      case DType::f32:
        t.data_as<float>()[i] = float(v);
        break;
      case DType::i32:
        t.data_as<int32_t>()[i] = int32_t(i * 3 - 7);
        break;
      case DType::u8:
        t.data_as<uint8_t>()[i] = uint8_t(v);
        break;
      case DType::i64:
        t.data_as<int64_t>()[i] = int64_t(i) * 1000003 - 5;
        break;
      default: {  // 2-byte types: any bit pattern will do for layout ops
        static_cast<uint16_t*>(t.data())[i] = uint16_t(i * 2654435761u >> 7);
      }
    }
  }
  return t;
}

std::vector<int64_t> unravel(int64_t i, const Shape& s) {
  std::vector<int64_t> c(s.rank());
  for (int k = s.rank() - 1; k >= 0; --k) {
    c[k] = i % s.dims()[k];
    i /= s.dims()[k];
  }
  return c;
}
int64_t ravel(const std::vector<int64_t>& c, const Shape& s) {
  int64_t i = 0;
  for (int k = 0; k < s.rank(); ++k) i = i * s.dims()[k] + c[k];
  return i;
}

std::vector<double> weights(int64_t n) {
  std::vector<double> w(static_cast<size_t>(n));
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.7 * i) + 0.2;
  return w;
}
Tensor weights_tensor(const Shape& s) {
  auto w = weights(s.numel());
  return Tensor::from_vector(std::vector<float>(w.begin(), w.end()), s);
}

const Device kGpu = Device::cuda();

}  // namespace

// --- Fill / Copy ---------------------------------------------------------------------------------

TEST(DataCpu, FillEveryDtype) {
  struct Case {
    DType dt;
    double v, want;
  } cases[] = {{DType::f32, 1.25, 1.25}, {DType::f16, 0.1, 0.0999755859375}, {DType::bf16, -3.3, -3.296875},
               {DType::i32, -7.9, -7},   {DType::i64, 1e12 + 0.5, 1e12},     {DType::u8, 300, 255}};
  for (const Case& c : cases) {
    Tensor t = Tensor::empty(Shape{13}, c.dt);
    OpAttrs a;
    a.f[0] = c.v;
    run(OpKind::Fill, {}, {t}, a);
    for (double x : as_doubles(t)) ASSERT_EQ(x, c.want) << dtype_name(c.dt);
  }
}

TEST(DataCpu, CopyAnyShape) {
  Tensor x = iota(Shape{3, 7}), y = Tensor::empty(Shape{21});
  run(OpKind::Copy, {x}, {y});
  EXPECT_TRUE(all_close(y, x.reshape(Shape{21}), 0, 0));
  std::string msg = error_message([&] { run(OpKind::Copy, {x}, {Tensor::empty(Shape{4, 5})}); });
  EXPECT_MESSAGE_HAS(msg, "Copy");
  EXPECT_MESSAGE_HAS(msg, "(3, 7)");
  EXPECT_MESSAGE_HAS(msg, "(4, 5)");
}

// --- Cast: expected values from the rounding rules --------------------------------------------------

namespace {
const float kInf = std::numeric_limits<float>::infinity();
const float kNan = std::numeric_limits<float>::quiet_NaN();

struct CastCase {
  float in;
  double want;
};
// f32 -> f16 (round to nearest, ties to even; 65520 is halfway between 65504 and 2^16 and goes up to Inf).
const std::vector<CastCase> kToHalf = {
    {1.0f, 1.0},
    {1.0f + std::ldexp(1.0f, -11), 1.0},                            // tie -> even (1.0)
    {1.0f + 3 * std::ldexp(1.0f, -11), 1.0 + std::ldexp(1.0, -9)},  // tie -> even (up)
    {1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20), 1.0 + std::ldexp(1.0, -10)},
    {-2.5f, -2.5},
    {65504.0f, 65504.0},
    {65519.0f, 65504.0},
    {65520.0f, INFINITY},
    {-65520.0f, -INFINITY},
    {std::ldexp(1.0f, -24), std::ldexp(1.0, -24)},           // smallest subnormal
    {std::ldexp(1.0f, -25), 0.0},                            // tie with 0 -> even (0)
    {3 * std::ldexp(1.0f, -25), std::ldexp(1.0, -23)},       // tie -> even (2 * 2^-24)
    {std::ldexp(1.0f, -14) * 0.75f, std::ldexp(0.75, -14)},  // subnormal exact
    {kInf, INFINITY},
    {-kInf, -INFINITY},
    {kNan, NAN},
    {1e-10f, 0.0},
};
// f32 -> bf16 (8-bit mantissa).
const std::vector<CastCase> kToBf16 = {
    {1.0f + std::ldexp(1.0f, -8), 1.0},
    {1.0f + 3 * std::ldexp(1.0f, -8), 1.0 + std::ldexp(1.0, -6)},
    {1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20), 1.0 + std::ldexp(1.0, -7)},
    {std::numeric_limits<float>::max(), INFINITY},
    {-3.0f, -3.0},
    {kInf, INFINITY},
    {kNan, NAN},
    {std::ldexp(1.0f, -130), std::ldexp(1.0, -130)},  // f32 subnormal, exact in bf16
};
// f32 -> i32: truncation toward zero, NaN -> 0, saturation.
const std::vector<CastCase> kToI32 = {
    {2.7f, 2},
    {-2.7f, -2},
    {0.5f, 0},
    {-0.0f, 0},
    {kNan, 0},
    {3e9f, 2147483647},
    {-3e9f, -2147483648.0},
    {kInf, 2147483647},
    {-kInf, -2147483648.0},
    {2147483520.0f, 2147483520.0},
    {-2147483648.0f, -2147483648.0},
};

Tensor f32_of(const std::vector<CastCase>& cs) {
  std::vector<float> v;
  for (const auto& c : cs) v.push_back(c.in);
  return Tensor::from_vector(v, Shape{int64_t(v.size())});
}
}  // namespace

TEST(DataCpu, CastRoundingTiesNanInf) {
  for (auto [dt, cases] :
       {std::pair{DType::f16, kToHalf}, std::pair{DType::bf16, kToBf16}, std::pair{DType::i32, kToI32}}) {
    Tensor x = f32_of(cases), y = Tensor::empty(x.shape(), dt);
    run(OpKind::Cast, {x}, {y});
    const auto got = as_doubles(y);
    for (size_t i = 0; i < cases.size(); ++i) {
      if (std::isnan(cases[i].want))
        EXPECT_TRUE(std::isnan(got[i])) << dtype_name(dt) << " case " << i;
      else
        EXPECT_EQ(got[i], cases[i].want) << dtype_name(dt) << " case " << i << " input " << cases[i].in;
    }
    // back to f32 is exact for floats
    if (dt != DType::i32) {
      Tensor z = Tensor::empty(x.shape());
      run(OpKind::Cast, {y}, {z});
      EXPECT_TRUE(all_close(z, Tensor::from_vector(std::vector<float>(got.begin(), got.end()), x.shape()), 0, 0));
    }
  }
  // -0 keeps its sign in f16
  Tensor nz = Tensor::from_vector<float>({-0.0f}, Shape{1}), h = Tensor::empty(Shape{1}, DType::f16);
  run(OpKind::Cast, {nz}, {h});
  EXPECT_EQ(static_cast<const uint16_t*>(h.data())[0], 0x8000u);
  // i32 -> f32 rounds to nearest even
  Tensor i = Tensor::from_vector<int32_t>({16777217, 16777219, 2147483647, -5}, Shape{4}), f = Tensor::empty(Shape{4});
  run(OpKind::Cast, {i}, {f});
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{16777216.0f, 16777220.0f, 2147483648.0f, -5.0f}));
  std::string msg = error_message([&] { run(OpKind::Cast, {i}, {Tensor::empty(Shape{4}, DType::u8)}); });
  EXPECT_MESSAGE_HAS(msg, "Cast");
  EXPECT_MESSAGE_HAS(msg, "i32");
  EXPECT_MESSAGE_HAS(msg, "u8");
}

// --- Permute ----------------------------------------------------------------------------------------

namespace {
Shape permuted(const Shape& s, const std::vector<int64_t>& perm) {
  std::vector<int64_t> d;
  for (int64_t p : perm) d.push_back(s.dims()[p]);
  return Shape(d);
}
OpAttrs perm_attrs(const std::vector<int64_t>& perm) {
  OpAttrs a;
  for (size_t k = 0; k < perm.size(); ++k) a.i[k] = perm[k];
  return a;
}
std::vector<std::vector<int64_t>> all_perms(int n) {
  std::vector<int64_t> p(n);
  for (int k = 0; k < n; ++k) p[k] = k;
  std::vector<std::vector<int64_t>> out;
  do out.push_back(p);
  while (std::next_permutation(p.begin(), p.end()));
  return out;
}
}  // namespace

TEST(DataCpu, PermuteMatchesIndexFormula) {
  for (const Shape& s : {Shape{3, 5, 7}, Shape{2, 3, 5, 4}}) {
    for (const auto& perm : all_perms(s.rank())) {
      Tensor x = iota(s), y = Tensor::empty(permuted(s, perm));
      run(OpKind::Permute, {x}, {y}, perm_attrs(perm));
      const auto xv = x.to_vector<float>(), yv = y.to_vector<float>();
      for (int64_t o = 0; o < y.numel(); ++o) {
        const auto yc = unravel(o, y.shape());
        std::vector<int64_t> xc(s.rank());
        for (int k = 0; k < s.rank(); ++k) xc[perm[k]] = yc[k];
        ASSERT_EQ(yv[o], xv[ravel(xc, s)]) << "shape " << s << " element " << o;
      }
    }
  }
  std::string msg = error_message([&] {
    run(OpKind::Permute, {Tensor::empty(Shape{2, 3, 4})}, {Tensor::empty(Shape{4, 3, 2})}, perm_attrs({2, 1, 1}));
  });
  EXPECT_MESSAGE_HAS(msg, "Permute");
  EXPECT_MESSAGE_HAS(msg, "(2, 3, 4)");
  msg = error_message([&] {
    run(OpKind::Permute, {Tensor::empty(Shape{2, 3, 4})}, {Tensor::empty(Shape{4, 2, 3})}, perm_attrs({2, 1, 0}));
  });
  EXPECT_MESSAGE_HAS(msg, "(4, 2, 3)");
}

TEST(DataCpu, PermuteGradientIsInversePermute) {
  const Shape s{2, 3, 4};
  const std::vector<int64_t> perm = {1, 2, 0}, inv = {2, 0, 1};
  const Shape ys = permuted(s, perm);
  const auto w = weights(s.numel());
  auto f = [&](const Tensor& x) {
    Tensor y = Tensor::empty(ys);
    run(OpKind::Permute, {x}, {y}, perm_attrs(perm));
    return weighted_sum(y, w);
  };
  Tensor x = random_tensor(s, 1), dx = Tensor::empty(s);
  run(OpKind::Permute, {weights_tensor(ys)}, {dx}, perm_attrs(inv));
  EXPECT_TRUE(gradient_close(dx, numerical_gradient(f, x)));
}

// --- Concat / Slice ------------------------------------------------------------------------------

TEST(DataCpu, ConcatEachAxisAndItsGradientBySlice) {
  const Shape base{4, 5, 6};
  for (int axis = 0; axis < 3; ++axis) {
    std::vector<Tensor> xs;
    std::vector<int64_t> starts;
    int64_t total = 0;
    for (int64_t len : {1, 2, 3}) {
      std::vector<int64_t> d = base.dims();
      d[axis] = len;
      xs.push_back(random_tensor(Shape(d), 10 * axis + len));
      starts.push_back(total);
      total += len;
    }
    std::vector<int64_t> yd = base.dims();
    yd[axis] = total;
    const Shape ys(yd);
    Tensor y = Tensor::empty(ys);
    run(OpKind::Concat, xs, {y}, ints({axis}));
    const auto yv = y.to_vector<float>();
    for (size_t k = 0; k < xs.size(); ++k) {
      const auto xv = xs[k].to_vector<float>();
      for (int64_t i = 0; i < xs[k].numel(); ++i) {
        auto c = unravel(i, xs[k].shape());
        c[axis] += starts[k];
        ASSERT_EQ(yv[ravel(c, ys)], xv[i]) << "axis " << axis << " input " << k << " element " << i;
      }
    }
    // negative axis means the same
    Tensor y2 = Tensor::empty(ys);
    run(OpKind::Concat, xs, {y2}, ints({axis - 3}));
    EXPECT_TRUE(all_close(y2, y, 0, 0));
    // d concat / d x_k = Slice of dy at the input's position; check with finite differences
    const auto w = weights(ys.numel());
    for (size_t k = 0; k < xs.size(); ++k) {
      auto f = [&](const Tensor& xk) {
        std::vector<Tensor> in = xs;
        in[k] = xk;
        Tensor yy = Tensor::empty(ys);
        run(OpKind::Concat, in, {yy}, ints({axis}));
        return weighted_sum(yy, w);
      };
      Tensor dx = Tensor::empty(xs[k].shape());
      run(OpKind::Slice, {weights_tensor(ys)}, {dx}, ints({axis, starts[k]}));
      EXPECT_TRUE(gradient_close(dx, numerical_gradient(f, xs[k].clone()))) << "axis " << axis << " input " << k;
    }
  }
  std::string msg = error_message([&] {
    run(OpKind::Concat, {Tensor::empty(Shape{2, 3}), Tensor::empty(Shape{3, 3})}, {Tensor::empty(Shape{2, 6})},
        ints({1}));
  });
  EXPECT_MESSAGE_HAS(msg, "Concat");
  EXPECT_MESSAGE_HAS(msg, "(3, 3)");
  EXPECT_MESSAGE_HAS(msg, "(2, 6)");
}

TEST(DataCpu, SliceAndSliceBackwardEachAxis) {
  const Shape s{4, 5, 6};
  for (int axis = 0; axis < 3; ++axis) {
    std::vector<int64_t> d = s.dims();
    d[axis] = 2;
    const Shape ys(d);
    Tensor x = random_tensor(s, 3 + axis), y = Tensor::empty(ys);
    run(OpKind::Slice, {x}, {y}, ints({axis, 1}));
    const auto xv = x.to_vector<float>(), yv = y.to_vector<float>();
    for (int64_t i = 0; i < y.numel(); ++i) {
      auto c = unravel(i, ys);
      c[axis] += 1;
      ASSERT_EQ(yv[i], xv[ravel(c, s)]);
    }
    const auto w = weights(ys.numel());
    auto f = [&](const Tensor& xx) {
      Tensor yy = Tensor::empty(ys);
      run(OpKind::Slice, {xx}, {yy}, ints({axis, 1}));
      return weighted_sum(yy, w);
    };
    Tensor dx = Tensor::full(s, 99.0);  // every element must be written
    run(OpKind::SliceBackward, {weights_tensor(ys)}, {dx}, ints({axis, 1}));
    EXPECT_TRUE(gradient_close(dx, numerical_gradient(f, x))) << "axis " << axis;
  }
  std::string msg = error_message([&] {
    run(OpKind::Slice, {Tensor::empty(Shape{4, 5})}, {Tensor::empty(Shape{4, 3})}, ints({1, 3}));
  });
  EXPECT_MESSAGE_HAS(msg, "Slice");
  EXPECT_MESSAGE_HAS(msg, "(4, 5)");
  EXPECT_MESSAGE_HAS(msg, "(4, 3)");
}

// --- Gather / OneHot / GatherImages -----------------------------------------------------------------

TEST(DataCpu, GatherRepeatedIndicesAndBackward) {
  Tensor table = random_tensor(Shape{7, 5}, 2);
  Tensor idx = Tensor::from_vector<int32_t>({3, 0, 3, 6, 3, 1}, Shape{2, 3});
  Tensor y = Tensor::empty(Shape{2, 3, 5});
  run(OpKind::Gather, {table, idx}, {y});
  const auto tv_ = table.to_vector<float>(), yv = y.to_vector<float>();
  const int32_t rows[] = {3, 0, 3, 6, 3, 1};
  for (int m = 0; m < 6; ++m)
    for (int k = 0; k < 5; ++k) ASSERT_EQ(yv[m * 5 + k], tv_[rows[m] * 5 + k]);
  const auto w = weights(30);
  auto f = [&](const Tensor& t) {
    Tensor yy = Tensor::empty(Shape{2, 3, 5});
    run(OpKind::Gather, {t, idx}, {yy});
    return weighted_sum(yy, w);
  };
  Tensor dt = Tensor::full(Shape{7, 5}, 5.0);
  run(OpKind::GatherBackward, {weights_tensor(Shape{2, 3, 5}), idx}, {dt});
  EXPECT_TRUE(gradient_close(dt, numerical_gradient(f, table.clone())));
  // row 3 is referenced three times, rows 2, 4, 5 never (zeros)
  for (int k = 0; k < 5; ++k) {
    EXPECT_NEAR(dt.item(3 * 5 + k), w[0 * 5 + k] + w[2 * 5 + k] + w[4 * 5 + k], 1e-6);
    EXPECT_EQ(dt.item(2 * 5 + k), 0.0);
  }
  // i32 tables (labels) gather too
  Tensor labels = Tensor::from_vector<int32_t>({10, 11, 12, 13}, Shape{4}), out = Tensor::empty(Shape{3}, DType::i32);
  run(OpKind::Gather, {labels, Tensor::from_vector<int32_t>({3, 3, 0}, Shape{3})}, {out});
  EXPECT_EQ(out.to_vector<int32_t>(), (std::vector<int32_t>{13, 13, 10}));

  std::string msg = error_message([&] {
    run(OpKind::Gather, {table, Tensor::from_vector<int32_t>({1, 7}, Shape{2})}, {Tensor::empty(Shape{2, 5})});
  });
  EXPECT_MESSAGE_HAS(msg, "Gather");
  EXPECT_MESSAGE_HAS(msg, "index 7");
  EXPECT_MESSAGE_HAS(msg, "(7, 5)");
  msg = error_message([&] { run(OpKind::Gather, {table, idx}, {Tensor::empty(Shape{6, 4})}); });
  EXPECT_MESSAGE_HAS(msg, "(6, 4)");
  EXPECT_MESSAGE_HAS(msg, "(7, 5)");
  msg = error_message([&] {
    run(OpKind::GatherBackward, {Tensor::zeros(Shape{2, 5}), Tensor::from_vector<int32_t>({-1, 0}, Shape{2})},
        {Tensor::empty(Shape{7, 5})});
  });
  EXPECT_MESSAGE_HAS(msg, "GatherBackward");
  EXPECT_MESSAGE_HAS(msg, "index -1");
}

TEST(DataCpu, OneHotAndErrors) {
  Tensor lab = Tensor::from_vector<int32_t>({2, 0, 3, 3, 1}, Shape{5}), y = Tensor::full(Shape{5, 4}, 7.0);
  run(OpKind::OneHot, {lab}, {y});
  std::vector<float> want(20, 0.0f);
  const int l[] = {2, 0, 3, 3, 1};
  for (int n = 0; n < 5; ++n) want[n * 4 + l[n]] = 1.0f;
  EXPECT_EQ(y.to_vector<float>(), want);
  std::string msg = error_message([&] {
    run(OpKind::OneHot, {Tensor::from_vector<int32_t>({4}, Shape{1})}, {Tensor::empty(Shape{1, 4})});
  });
  EXPECT_MESSAGE_HAS(msg, "OneHot");
  EXPECT_MESSAGE_HAS(msg, "label 4");
}

TEST(DataCpu, GatherImagesNormalises) {
  const Shape s{6, 2, 3, 3};
  std::vector<uint8_t> px(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 37 % 256);
  Tensor img = Tensor::from_vector(px, s), idx = Tensor::from_vector<int32_t>({5, 0, 5, 2}, Shape{4});
  Tensor y = Tensor::empty(Shape{4, 2, 3, 3});
  OpAttrs a;
  a.f[0] = 0.5;
  a.f[1] = 0.25;
  run(OpKind::GatherImages, {img, idx}, {y}, a);
  const int rows[] = {5, 0, 5, 2};
  const auto yv = y.to_vector<float>();
  for (int b = 0; b < 4; ++b)
    for (int k = 0; k < 18; ++k) ASSERT_NEAR(yv[b * 18 + k], (px[rows[b] * 18 + k] / 255.0 - 0.5) / 0.25, 1e-6);
  std::string msg = error_message([&] {
    run(OpKind::GatherImages, {img, Tensor::from_vector<int32_t>({6}, Shape{1})}, {Tensor::empty(Shape{1, 2, 3, 3})},
        a);
  });
  EXPECT_MESSAGE_HAS(msg, "GatherImages");
  EXPECT_MESSAGE_HAS(msg, "index 6");
}

// --- GatherBatch --------------------------------------------------------------------------------------

namespace {

// GatherBatch on the devices of its tensors; the cursor is updated in place.
void gather_batch(const Tensor& perm, const Tensor& x, const Tensor& y, const Tensor& xb, const Tensor& yb,
                  const Tensor& cursor, double mean = 0.5, double stdv = 0.25) {
  OpAttrs a;
  a.f[0] = mean;
  a.f[1] = stdv;
  run(OpKind::GatherBatch, {perm, x, y}, {xb, yb, cursor}, a);
}

// The same step as the four ops it replaces: BatchIndices, GatherImages or Gather (x), Gather (y),
// Increment (cursor).
void four_op_batch(const Tensor& perm, const Tensor& x, const Tensor& y, const Tensor& xb, const Tensor& yb,
                   const Tensor& cursor, double mean = 0.5, double stdv = 0.25) {
  Tensor idx = Tensor::empty(Shape{xb.shape()[0]}, DType::i32, perm.device());
  run(OpKind::BatchIndices, {perm, cursor}, {idx});
  OpAttrs a;
  a.f[0] = mean;
  a.f[1] = stdv;
  run(x.dtype() == DType::u8 ? OpKind::GatherImages : OpKind::Gather, {x, idx}, {xb}, a);
  run(OpKind::Gather, {y, idx}, {yb});
  a.i[0] = xb.shape()[0];
  run(OpKind::Increment, {}, {cursor}, a);
}

Tensor cursor_at(int64_t v, Device d = Device::cpu()) { return Tensor::from_vector<int64_t>({v}, Shape{1}, d); }

Tensor batch_of(const Tensor& table, int64_t b, DType dt, Device d = Device::cpu()) {
  std::vector<int64_t> dims = table.shape().dims();
  dims[0] = b;
  return Tensor::full(Shape(dims), 7.0, dt, d);
}

}  // namespace

TEST(DataCpu, GatherBatchFollowsThePermutationAndAdvancesTheCursor) {
  const Shape s{5, 1, 2, 3};
  std::vector<uint8_t> px(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 37 % 256);
  Tensor img = Tensor::from_vector(px, s), labels = Tensor::from_vector<int32_t>({10, 11, 12, 13, 14}, Shape{5});
  Tensor perm = Tensor::from_vector<int32_t>({4, 0, 3, 1, 2}, Shape{5}), cursor = cursor_at(3);
  Tensor xb = batch_of(img, 4, DType::f32), yb = batch_of(labels, 4, DType::i32);
  // cursor 3, B 4: perm positions 3, 4, then wrapped 0, 1 -> rows 1, 2, 4, 0; then positions 2, 3, 4, 0.
  for (const auto& rows : {std::vector<int32_t>{1, 2, 4, 0}, std::vector<int32_t>{3, 1, 2, 4}}) {
    gather_batch(perm, img, labels, xb, yb, cursor);
    const auto xv = xb.to_vector<float>();
    for (int b = 0; b < 4; ++b)
      for (int k = 0; k < 6; ++k)
        ASSERT_EQ(xv[b * 6 + k], (float(px[rows[b] * 6 + k]) / 255.0f - 0.5f) / 0.25f) << b << " " << k;
    std::vector<int32_t> want;
    for (int32_t r : rows) want.push_back(10 + r);
    EXPECT_EQ(yb.to_vector<int32_t>(), want);
  }
  EXPECT_EQ(cursor.to_vector<int64_t>(), (std::vector<int64_t>{11}));

  // Bit for bit the four ops it replaces, for u8 images with i32 labels and f32 x with f32 targets,
  // over steps that wrap around the permutation.
  Tensor fx = random_tensor(Shape{9, 3, 2}, 5), fy = random_tensor(Shape{9, 2}, 6);
  Tensor perm9 = Tensor::from_vector<int32_t>({8, 2, 5, 0, 7, 1, 4, 6, 3}, Shape{9});
  std::vector<uint8_t> px9(54);  // its own bytes: px holds only 30
  for (size_t i = 0; i < px9.size(); ++i) px9[i] = uint8_t(i * 37 % 256);
  Tensor img9 = Tensor::from_vector(px9, Shape{9, 6});
  Tensor lab9 = random_labels(9, 10, 7);
  for (auto [x, y] : {std::pair{img9, lab9}, std::pair{fx, fy}}) {
    Tensor c1 = cursor_at(6), c2 = cursor_at(6);
    for (int step = 0; step < 4; ++step) {
      Tensor xb1 = batch_of(x, 4, DType::f32), yb1 = batch_of(y, 4, y.dtype());
      Tensor xb2 = batch_of(x, 4, DType::f32), yb2 = batch_of(y, 4, y.dtype());
      gather_batch(perm9, x, y, xb1, yb1, c1);
      four_op_batch(perm9, x, y, xb2, yb2, c2);
      EXPECT_TRUE(same_bytes(xb1, xb2)) << x.dtype() << " step " << step;
      EXPECT_TRUE(same_bytes(yb1, yb2)) << y.dtype() << " step " << step;
      EXPECT_EQ(c1.to_vector<int64_t>(), c2.to_vector<int64_t>());
    }
    EXPECT_EQ(c1.to_vector<int64_t>(), (std::vector<int64_t>{22}));
  }
}

TEST(DataCpu, GatherBatchErrorsNameTheOpAndTheShapes) {
  Tensor img = Tensor::zeros(Shape{5, 1, 2, 3}, DType::u8), labels = Tensor::zeros(Shape{5}, DType::i32);
  Tensor xb = batch_of(img, 4, DType::f32), yb = batch_of(labels, 4, DType::i32), cursor = cursor_at(3);
  // An out-of-range perm entry throws before anything is written: outputs and cursor stay.
  Tensor bad = Tensor::from_vector<int32_t>({4, 0, 3, 1, 9}, Shape{5});
  std::string msg = error_message([&] { gather_batch(bad, img, labels, xb, yb, cursor); });
  EXPECT_MESSAGE_HAS(msg, "GatherBatch");
  EXPECT_MESSAGE_HAS(msg, "index 9");
  EXPECT_MESSAGE_HAS(msg, "(5, 1, 2, 3)");
  EXPECT_EQ(cursor.to_vector<int64_t>(), (std::vector<int64_t>{3}));
  EXPECT_EQ(xb.to_vector<float>(), std::vector<float>(24, 7.0f));
  EXPECT_EQ(yb.to_vector<int32_t>(), std::vector<int32_t>(4, 7));
  msg = error_message([&] { gather_batch(Tensor::from_vector<int32_t>({-1}, Shape{1}), img, labels, xb, yb, cursor); });
  EXPECT_MESSAGE_HAS(msg, "index -1");

  Tensor perm = Tensor::from_vector<int32_t>({4, 0, 3, 1, 2}, Shape{5});
  auto expect_error = [&](const std::function<void()>& f, std::initializer_list<const char*> parts) {
    const std::string m = error_message(f);
    EXPECT_MESSAGE_HAS(m, "GatherBatch");
    for (const char* p : parts) EXPECT_MESSAGE_HAS(m, p);
  };
  expect_error(
      [&] {
        gather_batch(perm, Tensor::zeros(Shape{5, 1, 2, 3}, DType::f16), labels, xb, yb, cursor);
      },
      {"input 1 (5, 1, 2, 3) has dtype f16, expected f32"});
  expect_error(
      [&] {
        gather_batch(perm, Tensor::zeros(Shape{5, 1, 2, 3}, DType::i64), labels, xb, yb, cursor);
      },
      {"x must be u8, f32 or i32", "i64"});
  expect_error(
      [&] {
        gather_batch(perm, Tensor::zeros(Shape{5, 1, 2, 3}, DType::i32), labels, xb, yb, cursor);
      },
      {"xb must be i32, got f32"});
  expect_error([&] { gather_batch(perm, img, labels, xb, batch_of(labels, 4, DType::f32), cursor); },
               {"y dtype i32", "yb dtype f32"});
  expect_error([&] { gather_batch(perm, img, labels, batch_of(img, 4, DType::u8), yb, cursor); },
               {"has dtype u8, expected f32, bf16 or f16 (x is u8)"});
  // A 16-bit batch is made from u8 images only.
  expect_error([&] { gather_batch(perm, random_tensor(Shape{5, 6}, 3), labels, batch_of(img, 4, DType::bf16), yb, cursor); },
               {"a 16-bit xb is made from u8 images only"});
  expect_error(
      [&] {
        gather_batch(perm, img, labels, Tensor::empty(Shape{4, 1, 3, 2}), yb, cursor);
      },
      {"xb shape (4, 1, 3, 2)", "(5, 1, 2, 3)"});
  expect_error([&] { gather_batch(perm, img, labels, xb, Tensor::empty(Shape{3}, DType::i32), cursor); },
               {"yb shape (3,)", "4 rows"});
  expect_error([&] { gather_batch(perm, img, Tensor::zeros(Shape{6}, DType::i32), xb, yb, cursor); },
               {"(5, 1, 2, 3)", "(6,)", "same number of rows"});
  expect_error([&] { gather_batch(Tensor::empty(Shape{0}, DType::i32), img, labels, xb, yb, cursor); },
               {"perm must not be empty"});
  expect_error([&] { gather_batch(Tensor::zeros(Shape{5}, DType::f32), img, labels, xb, yb, cursor); },
               {"perm must be i32"});
  expect_error([&] { gather_batch(perm, img, labels, xb, yb, Tensor::zeros(Shape{1}, DType::i32)); },
               {"cursor must be i64"});
  expect_error([&] { gather_batch(perm, img, labels, xb, yb, Tensor::zeros(Shape{2}, DType::i64)); },
               {"cursor must have one element"});
  expect_error([&] { gather_batch(perm, img, labels, xb, yb, cursor, 0.5, 0.0); }, {"std f[1] must be nonzero"});
  EXPECT_EQ(cursor.to_vector<int64_t>(), (std::vector<int64_t>{3}));
}

// --- CUDA vs CPU -------------------------------------------------------------------------------------

TEST(DataCuda, FillAndCopyAlignedAndMisaligned) {
  CUDL_REQUIRE_CUDA();
  for (DType dt : {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64, DType::u8}) {
    for (int64_t n : {int64_t(1), int64_t(3), int64_t(4097)}) {
      OpAttrs a;
      a.f[0] = -1.5;
      Tensor c = Tensor::zeros(Shape{n + 1}, dt), g = Tensor::zeros(Shape{n + 1}, dt, kGpu);
      run(OpKind::Fill, {}, {c}, a);
      run(OpKind::Fill, {}, {g}, a);
      EXPECT_TRUE(same_bytes(g, c)) << dtype_name(dt) << " n=" << n;
      // misaligned by one element, leaving element 0 alone
      const size_t es = dtype_size(dt);
      Tensor c2 = Tensor::zeros(Shape{n + 1}, dt), g2 = Tensor::zeros(Shape{n + 1}, dt, kGpu);
      a.f[0] = 3;
      auto shifted = [&](const Tensor& t) {
        return TensorView{static_cast<char*>(t.data()) + es, Shape{n}, dt, t.device()};
      };
      run_views(OpKind::Fill, {}, {shifted(c2)}, a);
      run_views(OpKind::Fill, {}, {shifted(g2)}, a);
      EXPECT_TRUE(same_bytes(g2, c2)) << "misaligned " << dtype_name(dt) << " n=" << n;
      EXPECT_EQ(g2.item(0), 0.0);
      // copy: aligned source into misaligned destination and back
      Tensor src = Tensor::zeros(Shape{n + 1}, dt);
      std::vector<unsigned char> raw(src.nbytes());
      for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<unsigned char>(i * 131 % 97);
      std::memcpy(src.data(), raw.data(), raw.size());
      Tensor srcg = src.to(kGpu), dst = Tensor::zeros(Shape{n + 1}, dt, kGpu);
      run_views(OpKind::Copy, {TensorView{srcg.data(), Shape{n}, dt, kGpu}}, {shifted(dst)});
      Tensor back = Tensor::zeros(Shape{n + 1}, dt, kGpu);
      run_views(OpKind::Copy, {shifted(dst)}, {TensorView{back.data(), Shape{n}, dt, kGpu}});
      const auto b = bytes_of(back);
      EXPECT_EQ(std::vector<unsigned char>(b.begin(), b.begin() + n * es),
                std::vector<unsigned char>(raw.begin(), raw.begin() + n * es))
          << dtype_name(dt) << " n=" << n;
    }
  }
}

TEST(DataCuda, CastEqualsCpuBitwise) {
  CUDL_REQUIRE_CUDA();
  for (auto [dt, cases] :
       {std::pair{DType::f16, kToHalf}, std::pair{DType::bf16, kToBf16}, std::pair{DType::i32, kToI32}}) {
    Tensor x = f32_of(cases), y = Tensor::empty(x.shape(), dt), yg = Tensor::empty(x.shape(), dt, kGpu);
    run(OpKind::Cast, {x}, {y});
    run(OpKind::Cast, {x.to(kGpu)}, {yg});
    EXPECT_TRUE(all_close(yg, y, 0, 0)) << dtype_name(dt);
    Tensor z = Tensor::empty(x.shape()), zg = Tensor::empty(x.shape(), DType::f32, kGpu);
    run(OpKind::Cast, {y}, {z});
    run(OpKind::Cast, {yg}, {zg});
    EXPECT_TRUE(all_close(zg, z, 0, 0)) << dtype_name(dt) << " back to f32";
  }
  // many random values across the whole range, odd size
  Tensor x = random_tensor(Shape{4099}, 9, -70000, 70000);
  for (DType dt : {DType::f16, DType::bf16, DType::i32}) {
    Tensor y = Tensor::empty(x.shape(), dt), yg = Tensor::empty(x.shape(), dt, kGpu);
    run(OpKind::Cast, {x}, {y});
    run(OpKind::Cast, {x.to(kGpu)}, {yg});
    EXPECT_TRUE(all_close(yg, y, 0, 0)) << dtype_name(dt);
  }
  Tensor small = random_tensor(Shape{1001}, 10, -1e-4f, 1e-4f);  // f16 subnormals
  Tensor y = Tensor::empty(small.shape(), DType::f16), yg = Tensor::empty(small.shape(), DType::f16, kGpu);
  run(OpKind::Cast, {small}, {y});
  run(OpKind::Cast, {small.to(kGpu)}, {yg});
  EXPECT_TRUE(all_close(yg, y, 0, 0));
}

TEST(DataCuda, PermuteEqualsCpu) {
  CUDL_REQUIRE_CUDA();
  struct Case {
    Shape s;
    DType dt;
  } cases[] = {{Shape{3, 5, 7}, DType::f32},
               {Shape{2, 3, 5, 4}, DType::f32},
               {Shape{3, 5, 7}, DType::u8},
               {Shape{2, 3, 5, 4}, DType::f16}};
  for (const Case& c : cases)
    for (const auto& perm : all_perms(c.s.rank())) {
      Tensor x = iota(c.s, c.dt), y = Tensor::empty(permuted(c.s, perm), c.dt);
      Tensor yg = Tensor::empty(y.shape(), c.dt, kGpu);
      run(OpKind::Permute, {x}, {y}, perm_attrs(perm));
      run(OpKind::Permute, {x.to(kGpu)}, {yg}, perm_attrs(perm));
      ASSERT_TRUE(same_bytes(yg, y)) << "shape " << c.s << " " << dtype_name(c.dt);
    }
  // Transposes (x's contiguous dim moves: tiled) with sides that are not multiples of a tile, the
  // attention head moves (B,T,H,D) -> (B,H,T,D) (rows copied) and (B,H,T,D) -> (B,H,D,T) (tiled)
  // with odd head sizes and T = 1,024, and a rank-6 permutation; 1-, 2-, 4- and 8-byte elements.
  for (auto [s, perm] : {std::pair{Shape{67, 129}, std::vector<int64_t>{1, 0}},
                         std::pair{Shape{3, 33, 65}, std::vector<int64_t>{0, 2, 1}},
                         std::pair{Shape{2, 17, 3, 5}, std::vector<int64_t>{0, 2, 1, 3}},
                         std::pair{Shape{2, 3, 17, 5}, std::vector<int64_t>{0, 1, 3, 2}},
                         std::pair{Shape{1, 2, 1024, 7}, std::vector<int64_t>{0, 1, 3, 2}},
                         std::pair{Shape{2, 1024, 2, 3}, std::vector<int64_t>{0, 2, 1, 3}},
                         std::pair{Shape{40, 3, 70}, std::vector<int64_t>{2, 1, 0}},
                         std::pair{Shape{2, 1, 3, 2, 5, 3}, std::vector<int64_t>{5, 3, 1, 0, 4, 2}}})
    for (DType dt : {DType::f32, DType::u8, DType::f16, DType::i64}) {
      Tensor x = iota(s, dt), y = Tensor::empty(permuted(s, perm), dt), yg = Tensor::empty(y.shape(), dt, kGpu);
      run(OpKind::Permute, {x}, {y}, perm_attrs(perm));
      run(OpKind::Permute, {x.to(kGpu)}, {yg}, perm_attrs(perm));
      EXPECT_TRUE(same_bytes(yg, y)) << "shape " << s << " " << dtype_name(dt);
    }
}

TEST(DataCuda, ConcatSliceEqualCpu) {
  CUDL_REQUIRE_CUDA();
  const Shape base{4, 5, 6};
  for (DType dt : {DType::f32, DType::u8})
    for (int axis = 0; axis < 3; ++axis) {
      std::vector<Tensor> xs, xg;
      int64_t total = 0;
      for (int64_t len : {1, 3, 2}) {
        std::vector<int64_t> d = base.dims();
        d[axis] = len;
        xs.push_back(iota(Shape(d), dt));
        xg.push_back(xs.back().to(kGpu));
        total += len;
      }
      std::vector<int64_t> yd = base.dims();
      yd[axis] = total;
      Tensor y = Tensor::empty(Shape(yd), dt), yg = Tensor::empty(Shape(yd), dt, kGpu);
      run(OpKind::Concat, xs, {y}, ints({axis}));
      run(OpKind::Concat, xg, {yg}, ints({axis}));
      EXPECT_TRUE(same_bytes(yg, y)) << "concat axis " << axis;
      std::vector<int64_t> sd = base.dims();
      sd[axis] = 3;
      Tensor s = Tensor::empty(Shape(sd), dt), sg = Tensor::empty(Shape(sd), dt, kGpu);
      run(OpKind::Slice, {y}, {s}, ints({axis, 2}));
      run(OpKind::Slice, {yg}, {sg}, ints({axis, 2}));
      EXPECT_TRUE(same_bytes(sg, s)) << "slice axis " << axis;
      Tensor dx = Tensor::full(Shape(yd), 1, dt), dxg = Tensor::full(Shape(yd), 1, dt, kGpu);
      run(OpKind::SliceBackward, {s}, {dx}, ints({axis, 2}));
      run(OpKind::SliceBackward, {sg}, {dxg}, ints({axis, 2}));
      EXPECT_TRUE(same_bytes(dxg, dx)) << "slice backward axis " << axis;
    }
  // long rows
  Tensor a = random_tensor(Shape{3, 2000}, 1), b = random_tensor(Shape{3, 2097}, 2);
  Tensor y = Tensor::empty(Shape{3, 4097}), yg = Tensor::empty(Shape{3, 4097}, DType::f32, kGpu);
  run(OpKind::Concat, {a, b}, {y}, ints({1}));
  run(OpKind::Concat, {a.to(kGpu), b.to(kGpu)}, {yg}, ints({1}));
  EXPECT_TRUE(same_bytes(yg, y));
  std::string msg = error_message([&] {
    run(OpKind::Concat, {a.to(kGpu), b.to(kGpu)}, {Tensor::empty(Shape{3, 4096}, DType::f32, kGpu)}, ints({1}));
  });
  EXPECT_MESSAGE_HAS(msg, "Concat");
  EXPECT_MESSAGE_HAS(msg, "(3, 4096)");
}

TEST(DataCuda, GatherAndBackwardEqualCpuBitwise) {
  CUDL_REQUIRE_CUDA();
  for (auto [rows, width, m] :
       {std::tuple{7, 5, 6}, std::tuple{50, 33, 1000}, std::tuple{3, 1, 4097}, std::tuple{1000, 3, 17}}) {
    Tensor table = random_tensor(Shape{rows, width}, uint64_t(rows));
    Tensor idx = random_labels(m, rows, uint64_t(m));
    Tensor y = Tensor::empty(Shape{m, width}), yg = Tensor::empty(Shape{m, width}, DType::f32, kGpu);
    run(OpKind::Gather, {table, idx}, {y});
    run(OpKind::Gather, {table.to(kGpu), idx.to(kGpu)}, {yg});
    EXPECT_TRUE(same_bytes(yg, y)) << "gather " << rows << "x" << width << " m=" << m;
    Tensor dy = random_tensor(Shape{m, width}, 77);
    Tensor dt = Tensor::empty(Shape{rows, width}), dtg = Tensor::full(Shape{rows, width}, NAN, DType::f32, kGpu);
    run(OpKind::GatherBackward, {dy, idx}, {dt});
    run(OpKind::GatherBackward, {dy.to(kGpu), idx.to(kGpu)}, {dtg});
    EXPECT_TRUE(same_bytes(dtg, dt)) << "gather backward " << rows << "x" << width << " m=" << m;
  }
  // GatherBackward on the device ignores indices outside [0, rows) (the CPU throws): the same bits
  // as the CPU over the in-range positions alone, in their order. Also a table of 70,000 rows (17
  // key bits for the radix sort) and no positions at all (zeros).
  for (auto [rows, width, m] : {std::tuple{9, 4, 300}, std::tuple{70000, 2, 5000}, std::tuple{5, 3, 0}}) {
    Tensor idx = random_labels(m, rows, uint64_t(m) + 5), dy = random_tensor(Shape{m, width}, 78);
    std::vector<int32_t> iv = idx.to_vector<int32_t>(), kept_idx;
    std::vector<float> dv = dy.to_vector<float>(), kept_dy;
    for (int64_t j = 0; j < m; ++j) {
      if (j % 7 == 3) iv[j] = j % 2 ? -1 - int32_t(j) : rows + int32_t(j);  // out of range
      if (iv[j] < 0 || iv[j] >= rows) continue;
      kept_idx.push_back(iv[j]);
      kept_dy.insert(kept_dy.end(), dv.begin() + j * width, dv.begin() + (j + 1) * width);
    }
    const int64_t k = static_cast<int64_t>(kept_idx.size());
    Tensor dt = Tensor::empty(Shape{rows, width}), dtg = Tensor::full(Shape{rows, width}, NAN, DType::f32, kGpu);
    run(OpKind::GatherBackward, {Tensor::from_vector(kept_dy, Shape{k, width}), Tensor::from_vector(kept_idx, Shape{k})},
        {dt});
    run(OpKind::GatherBackward, {dy.to(kGpu), Tensor::from_vector(iv, Shape{m}, kGpu)}, {dtg});
    EXPECT_TRUE(same_bytes(dtg, dt)) << "gather backward with ignored indices, " << rows << " rows, m=" << m;
  }
  // Out-of-range rows cannot throw on the device: they read as NaN (documented in op.hpp).
  Tensor table = Tensor::full(Shape{3, 2}, 1.0, DType::f32, kGpu), yg = Tensor::empty(Shape{2, 2}, DType::f32, kGpu);
  run(OpKind::Gather, {table, Tensor::from_vector<int32_t>({1, 3}, Shape{2}, kGpu)}, {yg});
  const auto v = as_doubles(yg);
  EXPECT_EQ(v[0], 1.0);
  EXPECT_TRUE(std::isnan(v[2]) && std::isnan(v[3]));
}

// 16-bit storage: Gather reads an f32 table and writes bf16 / f16 rows (each value rounded once),
// GatherBackward reads bf16 / f16 dy and sums into the f32 dtable in fp32: the same bits on the
// CPU reference (which widens dy and rounds y) and on CUDA. A CUDA kernel that summed in 16 bits,
// or a y that was truncated instead of rounded, would differ.
TEST(DataCuda, Gather16BitRowsAndBackwardEqualCpuBitwise) {
  CUDL_REQUIRE_CUDA();
  for (DType st : {DType::bf16, DType::f16})
    for (auto [rows, width, m] : {std::tuple{7, 5, 6}, std::tuple{50, 33, 1000}, std::tuple{3, 1, 4097}}) {
      SCOPED_TRACE(std::string(dtype_name(st)) + " " + std::to_string(rows) + "x" + std::to_string(width) +
                   " m=" + std::to_string(m));
      Tensor table = random_tensor(Shape{rows, width}, uint64_t(rows) + 3);
      Tensor idx = random_labels(m, rows, uint64_t(m) + 1);
      Tensor y = Tensor::empty(Shape{m, width}, st), yg = Tensor::empty(Shape{m, width}, st, kGpu);
      run(OpKind::Gather, {table, idx}, {y});
      run(OpKind::Gather, {table.to(kGpu), idx.to(kGpu)}, {yg});
      EXPECT_TRUE(same_bytes(yg, y)) << "gather";
      // y is the f32 gather rounded to nearest even.
      Tensor y32 = Tensor::empty(Shape{m, width});
      run(OpKind::Gather, {table, idx}, {y32});
      EXPECT_TRUE(same_bytes(y, to_storage(y32, st))) << "gather rounds each value to nearest even";
      Tensor dy = to_storage(random_tensor(Shape{m, width}, 79), st);
      Tensor dt = Tensor::empty(Shape{rows, width}), dtg = Tensor::full(Shape{rows, width}, NAN, DType::f32, kGpu);
      run(OpKind::GatherBackward, {dy, idx}, {dt});
      run(OpKind::GatherBackward, {dy.to(kGpu), idx.to(kGpu)}, {dtg});
      EXPECT_TRUE(same_bytes(dtg, dt)) << "gather backward";
      // The CPU reference is the f32 op on the widened dy.
      Tensor dt32 = Tensor::empty(Shape{rows, width});
      run(OpKind::GatherBackward, {widened(dy), idx}, {dt32});
      EXPECT_TRUE(same_bytes(dt, dt32)) << "16-bit dy sums as its widened f32 values";
    }
  // The float table is f32 in every precision; a 16-bit one is an error naming the op and the slot.
  std::string msg = error_message([&] {
    run(OpKind::Gather, {Tensor::zeros(Shape{3, 2}, DType::f16), Tensor::from_vector<int32_t>({1}, Shape{1})},
        {Tensor::empty(Shape{1, 2}, DType::f16)});
  });
  EXPECT_MESSAGE_HAS(msg, "Gather");
  EXPECT_MESSAGE_HAS(msg, "f16");
  // Mismatched types name the op, the tensor and both types.
  const Tensor i2 = Tensor::from_vector<int32_t>({1, 0}, Shape{2});
  for (auto [op, in0, out0, want] : {
           std::tuple{OpKind::Gather, Tensor::zeros(Shape{3, 2}), Tensor::empty(Shape{2, 2}, DType::i32), "i32"},
           std::tuple{OpKind::GatherBackward, Tensor::zeros(Shape{2, 2}, DType::i32), Tensor::empty(Shape{3, 2}), "i32"},
           std::tuple{OpKind::GatherBackward, Tensor::zeros(Shape{2, 2}, DType::f16),
                      Tensor::empty(Shape{3, 2}, DType::bf16), "bf16"}}) {
    msg = error_message([&, op = op, in0 = in0, out0 = out0] { run(op, {in0, i2}, {out0}); });
    EXPECT_MESSAGE_HAS(msg, op_name(op));
    EXPECT_MESSAGE_HAS(msg, want);
  }
}

TEST(DataCuda, OneHotAndGatherImagesEqualCpu) {
  CUDL_REQUIRE_CUDA();
  Tensor lab = random_labels(37, 10, 3);
  Tensor y = Tensor::empty(Shape{37, 10}), yg = Tensor::full(Shape{37, 10}, 5.0, DType::f32, kGpu);
  run(OpKind::OneHot, {lab}, {y});
  run(OpKind::OneHot, {lab.to(kGpu)}, {yg});
  EXPECT_TRUE(same_bytes(yg, y));
  const Shape s{20, 1, 28, 28};
  std::vector<uint8_t> px(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t((i * 2654435761u) >> 24);
  Tensor img = Tensor::from_vector(px, s), idx = random_labels(9, 20, 4);
  OpAttrs a;
  a.f[0] = 0.1307;
  a.f[1] = 0.3081;
  Tensor x = Tensor::empty(Shape{9, 1, 28, 28}), xg = Tensor::empty(Shape{9, 1, 28, 28}, DType::f32, kGpu);
  run(OpKind::GatherImages, {img, idx}, {x}, a);
  run(OpKind::GatherImages, {img.to(kGpu), idx.to(kGpu)}, {xg}, a);
  EXPECT_TRUE(same_bytes(xg, x));
}

TEST(DataCuda, GatherBatchEqualsCpuBitwiseUnderEverySchedule) {
  CUDL_REQUIRE_CUDA();
  struct Case {
    Shape x;     // table (R, ...)
    DType x_dt;  // u8 images, f32 or i32 (token) rows
    Shape y;
    DType y_dt;
    int64_t n, b, cursor;
  };
  // rows of 784 px (4 pixels per thread), 75 px (1 per thread), f32 rows of 132 B (4-byte units) and
  // 32 B (16-byte units); y of 4, 12, 16 and 3 bytes; grids of 3 to 29 blocks, no batch a multiple
  // of 256; cursors that wrap (cursor + b > n), perms longer than the table (the streamed layout).
  const std::vector<Case> cases = {
      {Shape{40, 1, 28, 28}, DType::u8, Shape{40}, DType::i32, 40, 37, 30},
      {Shape{50, 3, 5, 5}, DType::u8, Shape{50, 3}, DType::f32, 100, 45, 96},
      {Shape{64, 33}, DType::f32, Shape{64}, DType::i32, 64, 61, 5},
      {Shape{30, 8}, DType::f32, Shape{30, 2}, DType::i64, 30, 301, 29},
      {Shape{20, 1, 28, 28}, DType::u8, Shape{20, 3}, DType::u8, 60, 3, 58},
      {Shape{33, 7}, DType::i32, Shape{33, 7}, DType::i32, 33, 31, 12},  // token rows and targets
  };
#if defined(CUDL_EMULATED)
  // The cursor is advanced by whichever block finishes last: blocks run in order, in reverse and
  // shuffled, so advancing it in any fixed block (or the first to finish) fails under one of them.
  struct Restore {
    cudl_emu::Schedule saved = cudl_emu::schedule();
    ~Restore() { cudl_emu::set_schedule(saved); }
  } restore;
  const std::vector<cudl_emu::Schedule> schedules = {
      {cudl_emu::Schedule::Forward, 0}, {cudl_emu::Schedule::Reverse, 0}, {cudl_emu::Schedule::Shuffle, 11}};
#else
  const std::vector<int> schedules = {0};
#endif
  for (const auto& sched : schedules) {
#if defined(CUDL_EMULATED)
    cudl_emu::set_schedule(sched);
    const int kind = static_cast<int>(sched.kind);
#else
    const int kind = sched;
#endif
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      const Case& k = cases[ci];
      const int64_t rows = k.x[0];
      Tensor x = k.x_dt == DType::u8 ? iota(k.x, DType::u8) : random_tensor(k.x, 11 + ci);
      if (k.x_dt == DType::i32) x = iota(k.x, DType::i32);
      // u8 images: into f32, and (16-bit storage) into bf16 and f16, each pixel rounded once.
      const std::vector<DType> xb_dts =
          k.x_dt == DType::u8 ? std::vector<DType>{DType::f32, DType::bf16, DType::f16} : std::vector<DType>{k.x_dt};
      for (const DType xb_dt : xb_dts) {
      Tensor y = k.y_dt == DType::f32 ? random_tensor(k.y, 13 + ci) : Tensor::empty(k.y, k.y_dt);
      if (k.y_dt != DType::f32) {
        auto* p = static_cast<unsigned char*>(y.data());
        for (size_t i = 0; i < y.nbytes(); ++i) p[i] = static_cast<unsigned char>(i * 2654435761u >> 13);
      }
      // perm entry i: a shuffled row, so consecutive positions are never consecutive rows
      std::vector<int32_t> pv(static_cast<size_t>(k.n));
      for (int64_t i = 0; i < k.n; ++i) pv[i] = static_cast<int32_t>((i % rows * 7 + 3) % rows);
      Tensor perm = Tensor::from_vector(pv, Shape{k.n});
      Tensor xg = x.to(kGpu), yg = y.to(kGpu), pg = perm.to(kGpu);
      Tensor c = cursor_at(k.cursor), cg = cursor_at(k.cursor, kGpu);
      for (int step = 0; step < 3; ++step) {
        Tensor xb = batch_of(x, k.b, xb_dt), yb = batch_of(y, k.b, k.y_dt);
        Tensor xbg = batch_of(x, k.b, xb_dt, kGpu), ybg = batch_of(y, k.b, k.y_dt, kGpu);
        gather_batch(perm, x, y, xb, yb, c, 0.1307, 0.3081);
        gather_batch(pg, xg, yg, xbg, ybg, cg, 0.1307, 0.3081);
        EXPECT_TRUE(same_bytes(xbg, xb)) << "schedule " << kind << " case " << ci << " step " << step << " xb "
                                         << xb_dt;
        EXPECT_TRUE(same_bytes(ybg, yb)) << "schedule " << kind << " case " << ci << " step " << step;
        ASSERT_EQ(cg.to(Device::cpu()).to_vector<int64_t>(), c.to_vector<int64_t>())
            << "schedule " << kind << " case " << ci << " step " << step;
      }
      EXPECT_EQ(c.to_vector<int64_t>()[0], k.cursor + 3 * k.b);
      }
    }
  }

  // Out-of-range perm entries cannot throw on the device: NaN x rows, all-ones y rows, the other
  // rows gathered, and the cursor still advances.
  for (DType x_dt : {DType::u8, DType::f32}) {
    const Shape s{6, 1, 28, 28};
    Tensor x = x_dt == DType::u8 ? iota(s, DType::u8) : random_tensor(s, 3);
    Tensor y = Tensor::from_vector<int32_t>({10, 11, 12, 13, 14, 15}, Shape{6});
    Tensor perm = Tensor::from_vector<int32_t>({2, 6, 0, -1, 5}, Shape{5}, kGpu), cg = cursor_at(4, kGpu);
    Tensor xbg = batch_of(x, 5, DType::f32, kGpu), ybg = batch_of(y, 5, DType::i32, kGpu);
    gather_batch(perm, x.to(kGpu), y.to(kGpu), xbg, ybg, cg, 0.1307, 0.3081);
    // positions 4, 0, 1, 2, 3 -> rows 5, 2, bad, 0, bad
    EXPECT_EQ(ybg.to(Device::cpu()).to_vector<int32_t>(), (std::vector<int32_t>{15, 12, -1, 10, -1}));
    EXPECT_EQ(cg.to(Device::cpu()).to_vector<int64_t>(), (std::vector<int64_t>{9}));
    Tensor want = batch_of(x, 2, DType::f32), want_y = Tensor::empty(Shape{2}, DType::i32);
    gather_batch(Tensor::from_vector<int32_t>({5, 2}, Shape{2}), x, y, want, want_y, cursor_at(0), 0.1307, 0.3081);
    const auto got = as_doubles(xbg), w = as_doubles(want);
    const int64_t row = 784;
    for (int64_t k = 0; k < row; ++k) {
      ASSERT_EQ(got[k], w[k]) << x_dt << " row 0 elem " << k;
      ASSERT_EQ(got[row + k], w[row + k]) << x_dt << " row 1 elem " << k;
      ASSERT_TRUE(std::isnan(got[2 * row + k]) && std::isnan(got[4 * row + k])) << x_dt << " elem " << k;
    }
  }
  // The shared checks reject bad calls on the device too.
  Tensor img = Tensor::zeros(Shape{5, 4}, DType::u8, kGpu);
  const std::string msg = error_message([&] {
    gather_batch(Tensor::zeros(Shape{5}, DType::i32, kGpu), img, Tensor::zeros(Shape{5}, DType::i32, kGpu),
                 Tensor::empty(Shape{2, 4}, DType::f32, kGpu), Tensor::empty(Shape{2}, DType::f32, kGpu),
                 cursor_at(0, kGpu));
  });
  EXPECT_MESSAGE_HAS(msg, "GatherBatch");
  EXPECT_MESSAGE_HAS(msg, "yb dtype f32");
}
