// tests/test_op_augment.cpp — AugmentImages: identity without shift/rotation, exact integer shifts,
// rigid rotation about the centre (recovered from ramp images), randomness keyed by offset, image
// and stream, sane statistics, bad arguments; CUDA equal to the CPU reference; fit(augment=true).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "testing.hpp"

#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif

using namespace cudl;
using cudl::testing::error_message;
using namespace cudl::testing;

namespace {

OpAttrs augment_attrs(int64_t max_shift, double max_degrees, double fill = 0.0, int64_t stream = 0) {
  OpAttrs a;
  a.i[0] = max_shift;
  a.i[1] = stream;
  a.f[0] = max_degrees;
  a.f[1] = fill;
  return a;
}

Tensor rng_state(int64_t seed, int64_t offset, Device d = Device::cpu()) {
  return Tensor::from_vector<int64_t>({seed, offset}, Shape{2}, d);
}

void run(const Tensor& x, const Tensor& rng, const Tensor& y, const OpAttrs& a) {
  run_op(OpKind::AugmentImages, {tv(x), tv(rng)}, {tv(y)}, a, nullptr, "test/augment");
}

Tensor augment_cpu(const Tensor& x, const OpAttrs& a, int64_t seed = 5, int64_t offset = 0) {
  Tensor y = Tensor::empty(x.shape());
  run(x, rng_state(seed, offset), y, a);
  return y;
}

// Image b, channel c, pixel (r, col) of a (B, C, H, W) host vector.
struct Images {
  std::vector<float> v;
  int64_t B, C, H, W;
  explicit Images(const Tensor& t)
      : v(t.to(Device::cpu()).to_vector<float>()), B(t.shape()[0]), C(t.shape()[1]), H(t.shape()[2]), W(t.shape()[3]) {}
  float at(int64_t b, int64_t c, int64_t r, int64_t col) const { return v[((b * C + c) * H + r) * W + col]; }
};

// The integer shifts (tx, ty) in [-s, s]^2 under which image b of `out` is image b of `in` moved
// right by tx and down by ty with `fill` outside (every channel, bit for bit).
std::vector<std::pair<int, int>> matching_shifts(const Images& in, const Images& out, int64_t b, int s, float fill) {
  std::vector<std::pair<int, int>> found;
  for (int ty = -s; ty <= s; ++ty)
    for (int tx = -s; tx <= s; ++tx) {
      bool ok = true;
      for (int64_t c = 0; c < in.C && ok; ++c)
        for (int64_t r = 0; r < in.H && ok; ++r)
          for (int64_t col = 0; col < in.W && ok; ++col) {
            const int64_t sr = r - ty, sc = col - tx;
            const float want = (sr >= 0 && sr < in.H && sc >= 0 && sc < in.W) ? in.at(b, c, sr, sc) : fill;
            const float got = out.at(b, c, r, col);
            ok = (std::isnan(want) && std::isnan(got)) || want == got;
          }
      if (ok) found.emplace_back(tx, ty);
    }
  return found;
}

// Two-channel ramp images: channel 0 holds the column index, channel 1 the row index.
Tensor ramps(int64_t B, int64_t H, int64_t W) {
  std::vector<float> v(static_cast<size_t>(B * 2 * H * W));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < H; ++r)
      for (int64_t c = 0; c < W; ++c) {
        v[((b * 2 + 0) * H + r) * W + c] = static_cast<float>(c);
        v[((b * 2 + 1) * H + r) * W + c] = static_cast<float>(r);
      }
  return Tensor::from_vector(v, Shape{B, 2, H, W});
}

// Image b differs from the input image b anywhere.
bool changed(const Images& in, const Images& out, int64_t b) {
  for (int64_t c = 0; c < in.C; ++c)
    for (int64_t r = 0; r < in.H; ++r)
      for (int64_t col = 0; col < in.W; ++col)
        if (in.at(b, c, r, col) != out.at(b, c, r, col)) return true;
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CPU reference semantics

TEST(AugmentCpu, NoShiftNoRotationIsTheIdentity) {
  for (const Shape& s : {Shape{1, 1, 1, 1}, Shape{3, 2, 5, 7}, Shape{4, 1, 28, 28}, Shape{2, 3, 1, 9}}) {
    Tensor x = random_tensor(s, 11);
    float* p = x.data_as<float>();
    p[0] = NAN;  // NaN and Inf stay where they are and do not leak into neighbours
    if (x.numel() > 3) p[3] = INFINITY;
    Tensor y = augment_cpu(x, augment_attrs(0, 0.0, -7.0), 123, 456);
    EXPECT_TRUE(all_close(y, x, 0, 0)) << s;
    const auto yv = y.to_vector<float>();
    if (x.numel() > 4) EXPECT_FALSE(std::isnan(yv[1]) || std::isnan(yv[4]));
  }
}

TEST(AugmentCpu, PureIntegerTranslationShiftsPixelsExactly) {
  const int s = 3;
  const float fill = -0.5f;
  Tensor x = random_tensor(Shape{300, 2, 9, 11}, 21, 0.f, 1.f);
  Tensor y = augment_cpu(x, augment_attrs(s, 0.0, fill), 99, 7);
  const Images in(x), out(y);
  std::vector<int> hist_x(2 * s + 1), hist_y(2 * s + 1);
  for (int64_t b = 0; b < in.B; ++b) {
    auto m = matching_shifts(in, out, b, s, fill);
    ASSERT_EQ(m.size(), 1u) << "image " << b << " is not exactly one integer shift of its input";
    hist_x[m[0].first + s]++;
    hist_y[m[0].second + s]++;
  }
  // Every shift in [-3, 3] occurs, roughly uniformly (expected 300/7 ~ 43 each, sd ~ 6).
  for (int k = 0; k <= 2 * s; ++k) {
    EXPECT_GT(hist_x[k], 20) << "tx " << k - s;
    EXPECT_LT(hist_x[k], 70) << "tx " << k - s;
    EXPECT_GT(hist_y[k], 20) << "ty " << k - s;
    EXPECT_LT(hist_y[k], 70) << "ty " << k - s;
  }
}

TEST(AugmentCpu, RotationIsRigidAboutTheCentreWithIntegerShift) {
  // Bilinear sampling reproduces a linear ramp exactly, so where the source lies inside the image,
  // out_col(p) = cx + cos*(u) + sin*(v) and out_row(p) = cy - sin*u + cos*v, u = x - tx - cx,
  // v = y - ty - cy. Recover (cos, sin, tx, ty) from the outputs and check the whole interior.
  const int64_t B = 64, H = 21, W = 25;
  const double max_deg = 15.0;
  const int s = 2;
  Tensor x = ramps(B, H, W);
  Tensor y = augment_cpu(x, augment_attrs(s, max_deg, -1.0), 3, 11);
  const Images out(y);
  const double cx = (W - 1) / 2.0, cy = (H - 1) / 2.0;
  double max_abs_angle = 0;
  std::set<std::pair<int, int>> shifts;
  for (int64_t b = 0; b < B; ++b) {
    // Near the centre everything samples inside the image for |t| <= 2 and small angles.
    const int64_t r0 = (H - 1) / 2, c0 = (W - 1) / 2;
    const double cosv = out.at(b, 0, r0, c0 + 1) - out.at(b, 0, r0, c0);
    const double sinv = out.at(b, 0, r0 + 1, c0) - out.at(b, 0, r0, c0);
    EXPECT_NEAR(cosv * cosv + sinv * sinv, 1.0, 1e-4) << "image " << b;
    const double angle = std::atan2(sinv, cosv) * 180.0 / M_PI;
    EXPECT_LE(std::fabs(angle), max_deg + 1e-3) << "image " << b;
    max_abs_angle = std::max(max_abs_angle, std::fabs(angle));
    // out at the centre pixel: cx + cos*(-tx) + sin*(-ty), cy - sin*(-tx) + cos*(-ty).
    const double a = out.at(b, 0, r0, c0) - cx, bb = out.at(b, 1, r0, c0) - cy;
    const double tx = -(cosv * a - sinv * bb), ty = -(sinv * a + cosv * bb);
    EXPECT_NEAR(tx, std::round(tx), 1e-3) << "image " << b;
    EXPECT_NEAR(ty, std::round(ty), 1e-3) << "image " << b;
    EXPECT_LE(std::fabs(std::round(tx)), s);
    EXPECT_LE(std::fabs(std::round(ty)), s);
    shifts.insert({static_cast<int>(std::round(tx)), static_cast<int>(std::round(ty))});
    for (int64_t r = 0; r < H; ++r)
      for (int64_t c = 0; c < W; ++c) {
        const double u = c - std::round(tx) - cx, v = r - std::round(ty) - cy;
        const double sx = cx + cosv * u + sinv * v, sy = cy - sinv * u + cosv * v;
        if (sx < 0 || sx > W - 1 || sy < 0 || sy > H - 1) continue;  // touches the fill
        ASSERT_NEAR(out.at(b, 0, r, c), sx, 2e-4) << "image " << b << " (" << r << ", " << c << ")";
        ASSERT_NEAR(out.at(b, 1, r, c), sy, 2e-4) << "image " << b << " (" << r << ", " << c << ")";
      }
    // Corners of a rotated or shifted image read the fill value.
  }
  EXPECT_GT(max_abs_angle, 0.6 * max_deg) << "angles should spread over [-15, 15] degrees";
  EXPECT_GT(shifts.size(), 10u) << "shifts should vary over the 25 possibilities";
}

TEST(AugmentCpu, FillOutsideTheImage) {
  // All ones shifted by up to 4 pixels on a 6x6 image: each image has fill rows/columns exactly
  // where the shift moved the image away, and 1 elsewhere.
  const float fill = 0.25f;
  Tensor x = Tensor::full(Shape{50, 1, 6, 6}, 1.0f);
  Tensor y = augment_cpu(x, augment_attrs(4, 0.0, fill), 8, 1);
  const Images in(x), out(y);
  int with_fill = 0;
  for (int64_t b = 0; b < in.B; ++b) {
    ASSERT_FALSE(matching_shifts(in, out, b, 4, fill).empty()) << "image " << b;
    bool any = false;
    for (float v : std::vector<float>(out.v.begin() + b * 36, out.v.begin() + (b + 1) * 36)) any |= v == fill;
    with_fill += any;
  }
  EXPECT_GT(with_fill, 40);  // only (0, 0) has no fill: 1/81 of the images
}

TEST(AugmentCpu, RandomnessIsKeyedByOffsetImageSeedAndStream) {
  Tensor one = random_tensor(Shape{1, 1, 12, 12}, 4);
  // The same image 40 times: images in one call get different transforms.
  const std::vector<float> pixels = one.to_vector<float>();
  std::vector<float> rep;
  for (int k = 0; k < 40; ++k) rep.insert(rep.end(), pixels.begin(), pixels.end());
  Tensor x = Tensor::from_vector(rep, Shape{40, 1, 12, 12});
  const OpAttrs a = augment_attrs(2, 10.0);
  Tensor y0 = augment_cpu(x, a, 5, 0);
  const Images out0(y0);
  std::set<std::vector<float>> distinct;
  for (int64_t b = 0; b < 40; ++b)
    distinct.insert(std::vector<float>(out0.v.begin() + b * 144, out0.v.begin() + (b + 1) * 144));
  EXPECT_GT(distinct.size(), 35u);
  // Deterministic for the same key; different for another offset, seed or stream.
  EXPECT_TRUE(all_close(augment_cpu(x, a, 5, 0), y0, 0, 0));
  auto differing = [&](const Tensor& y) {
    const Images o(y);
    int n = 0;
    for (int64_t b = 0; b < 40; ++b) n += changed(out0, o, b);
    return n;
  };
  EXPECT_GT(differing(augment_cpu(x, a, 5, 1)), 35);
  EXPECT_GT(differing(augment_cpu(x, a, 6, 0)), 35);
  EXPECT_GT(differing(augment_cpu(x, augment_attrs(2, 10.0, 0.0, 1), 5, 0)), 35);
}

TEST(AugmentCpu, FractionOfChangedImagesIsSane) {
  Tensor x = random_tensor(Shape{500, 1, 10, 10}, 31, 0.f, 1.f);
  const Images in(x);
  auto changed_fraction = [&](const OpAttrs& a) {
    const Images out(augment_cpu(x, a, 77, 5));
    int n = 0;
    for (int64_t b = 0; b < in.B; ++b) n += changed(in, out, b);
    return n / static_cast<double>(in.B);
  };
  // Shift only, |t| <= 2: unchanged iff (tx, ty) = (0, 0), probability 1/25.
  const double f = changed_fraction(augment_attrs(2, 0.0));
  EXPECT_GT(f, 1.0 - 0.04 - 0.035);
  EXPECT_LT(f, 1.0 - 0.04 + 0.03);
  // With rotation, every image changes; with neither, none does.
  EXPECT_EQ(changed_fraction(augment_attrs(2, 10.0)), 1.0);
  EXPECT_EQ(changed_fraction(augment_attrs(0, 0.0)), 0.0);
}

TEST(AugmentCpu, BadArgumentsNameTheOpAndShapes) {
  Tensor x = random_tensor(Shape{2, 1, 4, 4}, 1), y = Tensor::empty(Shape{2, 1, 4, 4});
  Tensor rng = rng_state(1, 0);
  auto msg = [&](const Tensor& xx, const Tensor& rr, const Tensor& yy, const OpAttrs& a) {
    return error_message([&] { run(xx, rr, yy, a); });
  };
  const OpAttrs ok = augment_attrs(2, 10.0);
  std::string m = msg(random_tensor(Shape{2, 16}, 1), rng, Tensor::empty(Shape{2, 16}), ok);
  EXPECT_NE(m.find("AugmentImages"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 16)"), std::string::npos) << m;
  m = msg(x, rng, Tensor::empty(Shape{2, 1, 4, 5}), ok);
  EXPECT_NE(m.find("AugmentImages"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 1, 4, 5)"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 1, 4, 4)"), std::string::npos) << m;
  m = msg(x, Tensor::from_vector<int64_t>({1, 2, 3}, Shape{3}), y, ok);
  EXPECT_NE(m.find("rng state"), std::string::npos) << m;
  m = msg(x, Tensor::from_vector<int32_t>({1, 2}, Shape{2}), y, ok);
  EXPECT_NE(m.find("i64"), std::string::npos) << m;
  m = msg(x, rng, Tensor::empty(Shape{2, 1, 4, 4}, DType::i32), ok);
  EXPECT_NE(m.find("dtype"), std::string::npos) << m;
  m = msg(x, rng, y, augment_attrs(-1, 10.0));
  EXPECT_NE(m.find("max shift"), std::string::npos) << m;
  m = msg(x, rng, y, augment_attrs(2, 200.0));
  EXPECT_NE(m.find("max rotation"), std::string::npos) << m;
  m = msg(x, rng, y, augment_attrs(2, NAN));
  EXPECT_NE(m.find("max rotation"), std::string::npos) << m;
  m = msg(x, rng, x, ok);
  EXPECT_NE(m.find("alias"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 1, 4, 4)"), std::string::npos) << m;
}

// ---------------------------------------------------------------------------------------------
// CUDA vs the CPU reference

TEST(AugmentCuda, MatchesCpu) {
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda(0);
  struct Case {
    Shape s;
    OpAttrs a;
  };
  const Case cases[] = {
      {Shape{1, 1, 1, 1}, augment_attrs(2, 10.0)},
      {Shape{3, 2, 5, 7}, augment_attrs(1, 30.0, -0.4)},
      {Shape{5, 1, 28, 28}, augment_attrs(2, 10.0, -0.4242)},
      {Shape{2, 3, 33, 31}, augment_attrs(3, 180.0, 0.5, 3)},  // 3069 pixels per image: several blocks
      {Shape{7, 1, 13, 1}, augment_attrs(0, 0.0)},
      {Shape{67, 1, 6, 5}, augment_attrs(2, 12.5, 0.0, 1)},
  };
#if defined(CUDL_EMULATED)
  const uint64_t launches_before = cudl_emu::counters().kernel_launches;
#endif
  for (const Case& k : cases) {
    Tensor x = random_tensor(k.s, 13);
    float* p = x.data_as<float>();
    if (x.numel() > 5) {
      p[2] = NAN;
      p[5] = -INFINITY;
    }
    for (int64_t offset : {0, 1, 1000003}) {
      Tensor want = augment_cpu(x, k.a, 0x1234567890ll, offset);
      Tensor xd = x.to(g), yd = Tensor::full(k.s, 123.0f, DType::f32, g);
      run(xd, rng_state(0x1234567890ll, offset, g), yd, k.a);
      EXPECT_TRUE(all_close(yd.to(Device::cpu()), want, 1e-5, 1e-5)) << k.s << " offset " << offset;
    }
  }
#if defined(CUDL_EMULATED)
  // The augment kernel really ran, once per call; the other kernel per call is the fill of yd.
  EXPECT_EQ(cudl_emu::counters().kernel_launches - launches_before, 2u * 6u * 3u);
#endif
}

TEST(AugmentCuda, BadArgumentsAreRejectedLikeOnCpu) {
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda(0);
  Tensor x = Tensor::zeros(Shape{2, 1, 4, 4}, DType::f32, g);
  std::string m = error_message([&] {
    run(x, rng_state(1, 0, g), Tensor::zeros(Shape{2, 1, 4, 3}, DType::f32, g), augment_attrs(2, 10.0));
  });
  EXPECT_NE(m.find("AugmentImages"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 1, 4, 3)"), std::string::npos) << m;
}

// ---------------------------------------------------------------------------------------------
// fit(augment = true): the training program augments (evaluation does not), advances the RNG
// offset every step without dropout, and gives the same losses on CPU and CUDA.

namespace {

Dataset tiny_images(int64_t n) {
  std::vector<uint8_t> x(static_cast<size_t>(n * 64));
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[i] = static_cast<int32_t>(i % 2);
    for (int r = 2; r < 6; ++r)  // a vertical (label 0) or horizontal (label 1) bar
      x[i * 64 + (y[i] ? 4 * 8 + r : r * 8 + 4)] = 255;
  }
  Dataset d{Tensor::from_vector(x, Shape{n, 1, 8, 8}), Tensor::from_vector(y, Shape{n})};
  d.mean = 0.1f;
  d.std = 0.3f;
  return d;
}

Sequential tiny_model(const std::string& tag) {
  return Sequential(Shape{1, 8, 8},
                    {layers::Flatten(tag + "_flat"), layers::Dense(DenseOptions(8).activation("relu").name(tag + "_d1")),
                     layers::Dense(DenseOptions(2).name(tag + "_d2"))},
                    tag, DType::u8);
}

CompileOptions tiny_options(Device d) {
  CompileOptions o;
  o.optimizer = optim::Adam(0.01);
  o.metrics = {"accuracy"};
  o.device = d;
  o.seed = 4;
  return o;
}

FitOptions tiny_fit(bool augment) {
  FitOptions f;
  f.epochs = 2;
  f.batch_size = 8;
  f.verbose = 0;
  f.seed = 2;
  f.augment = augment;
  f.augment_shift = 2;
  f.augment_rotation = 20;
  return f;
}

void copy_params(Model& from, Model& to) {
  auto lf = from.layers(), lt = to.layers();
  ASSERT_EQ(lf.size(), lt.size());
  for (size_t i = 0; i < lf.size(); ++i)
    for (size_t k = 0; k < lf[i]->params().size(); ++k) lt[i]->params()[k].second.copy_from(lf[i]->params()[k].second);
}

int64_t rng_offset(Model& m) {
  for (auto& [k, t] : m.state_tensors())
    if (k == "rng") return t.to(Device::cpu()).to_vector<int64_t>()[1];
  ADD_FAILURE() << "no rng state";
  return -1;
}

}  // namespace

TEST(AugmentFit, AugmentsTrainingOnlyAndAdvancesTheRngEveryStep) {
  Dataset d = tiny_images(36);  // 4 full batches + a tail of 4: 5 steps per epoch
  Sequential plain = tiny_model("augfit_p"), aug = tiny_model("augfit_a");
  plain.compile(tiny_options(Device::cpu()));
  aug.compile(tiny_options(Device::cpu()));
  copy_params(plain, aug);
  const double eval_before_plain = plain.evaluate(d).metrics["loss"], eval_before_aug = aug.evaluate(d).metrics["loss"];
  EXPECT_DOUBLE_EQ(eval_before_plain, eval_before_aug) << "same initial weights";
  EXPECT_EQ(rng_offset(aug), 0);
  History hp = plain.fit(d, tiny_fit(false));
  History ha = aug.fit(d, tiny_fit(true));
  EXPECT_EQ(rng_offset(plain), 0) << "no dropout, no augmentation: the RNG is not used";
  EXPECT_EQ(rng_offset(aug), 10) << "2 epochs of 5 steps";
  EXPECT_NE(hp.metrics["loss"][0], ha.metrics["loss"][0]) << "augmentation must change the training batches";
  // evaluate() never augments: two evaluations of the same model agree exactly.
  EXPECT_DOUBLE_EQ(aug.evaluate(d).metrics["loss"], aug.evaluate(d).metrics["loss"]);
  // Bad options are rejected clearly.
  FitOptions bad = tiny_fit(true);
  bad.augment_rotation = 270;
  std::string m = error_message([&] { aug.fit(d, bad); });
  EXPECT_NE(m.find("augment_rotation"), std::string::npos) << m;
  Sequential flat(Shape{64}, {layers::Dense(DenseOptions(2).name("augfit_flat_d"))}, "augfit_flat");
  flat.compile(tiny_options(Device::cpu()));
  Dataset fd{random_tensor(Shape{16, 64}, 3), random_labels(16, 2, 3)};
  m = error_message([&] { flat.fit(fd, tiny_fit(true)); });
  EXPECT_NE(m.find("(N, C, H, W)"), std::string::npos) << m;
}

TEST(AugmentFit, CpuAndCudaGiveTheSameLosses) {
  CUDL_REQUIRE_CUDA();
  Dataset d = tiny_images(36);
  Sequential c = tiny_model("augpar_c"), g = tiny_model("augpar_g");
  c.compile(tiny_options(Device::cpu()));
  g.compile(tiny_options(Device::cuda(0)));
  copy_params(c, g);
  History hc = c.fit(d, tiny_fit(true)), hg = g.fit(d, tiny_fit(true));
  ASSERT_EQ(hc.metrics["loss"].size(), 2u);
  ASSERT_EQ(hg.metrics["loss"].size(), 2u);
  for (size_t e = 0; e < 2; ++e) EXPECT_NEAR(hc.metrics["loss"][e], hg.metrics["loss"][e], 1e-4) << "epoch " << e;
  EXPECT_EQ(rng_offset(g), 10);
}
