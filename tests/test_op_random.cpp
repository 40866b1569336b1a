// tests/test_op_random.cpp — Philox-4x32-10 against the Random123 known answers; dropout, uniform and
// normal: CPU reference semantics and statistics, CUDA equal to CPU for the same seed/offset/stream;
// dropout on bf16 / f16 storage.
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "backend/philox.hpp"
#include "testing.hpp"

#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif

using namespace cudl;
using cudl::testing::error_message;
using namespace cudl::testing;

namespace {

void run(OpKind op, const std::vector<Tensor>& in, const std::vector<Tensor>& out, const OpAttrs& a = {}) {
  std::vector<TensorView> iv, ov;
  for (const auto& t : in) iv.push_back(tv(t));
  for (const auto& t : out) ov.push_back(tv(t));
  Device dev = !out.empty() ? out[0].device() : in[0].device();
  OpCall c;
  c.op = op;
  c.inputs = iv.data();
  c.n_inputs = static_cast<int>(iv.size());
  c.outputs = ov.data();
  c.n_outputs = static_cast<int>(ov.size());
  c.attrs = a;
  c.ctx = &default_context(dev);
  c.label = "test/op";
  op_table(dev.type()).run(c);
}

OpAttrs dropout_attrs(double p, int64_t stream) {
  OpAttrs a;
  a.f[0] = p;
  a.i[0] = stream;
  return a;
}

OpAttrs random_attrs(double f0, double f1, int64_t seed, int64_t offset, int64_t stream) {
  OpAttrs a;
  a.f[0] = f0;
  a.f[1] = f1;
  a.i[0] = seed;
  a.i[1] = offset;
  a.i[2] = stream;
  return a;
}

Tensor rng_state(int64_t seed, int64_t offset, Device d = Device::cpu()) {
  return Tensor::from_vector<int64_t>({seed, offset}, Shape{2}, d);
}

// The documented counter layout, written out independently of block_words().
uint32_t layout_word(uint64_t seed, uint64_t offset, uint64_t stream, int64_t i) {
  const uint64_t b = static_cast<uint64_t>(i / 4) + offset;
  const philox::U32x4 w = philox::philox4x32_10(
      {uint32_t(b & 0xffffffffu), uint32_t(b >> 32), uint32_t(stream & 0xffffffffu), uint32_t(stream >> 32)},
      uint32_t(seed & 0xffffffffu), uint32_t(seed >> 32));
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  return words[i % 4];
}

}  // namespace

// Random123 tests/kat_vectors, the three "philox4x32 10" lines: ctr[4] key[2] -> result[4].
TEST(Philox, KnownAnswerVectors) {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& k : kats) {
    const philox::U32x4 r = philox::philox4x32_10({k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}, k.key[0], k.key[1]);
    EXPECT_EQ(r.x, k.out[0]);
    EXPECT_EQ(r.y, k.out[1]);
    EXPECT_EQ(r.z, k.out[2]);
    EXPECT_EQ(r.w, k.out[3]);
  }
}

TEST(Philox, UniformMappingAndThreshold) {
  EXPECT_EQ(philox::uniform01(0u), 0.0f);
  EXPECT_EQ(philox::uniform01(0xffffffffu), 1.0f - std::ldexp(1.0f, -24));
  EXPECT_EQ(philox::uniform01(0x80000000u), 0.5f);
  EXPECT_EQ(philox::uniform01_open0(0u), std::ldexp(1.0f, -24));
  EXPECT_EQ(philox::uniform01_open0(0xffffffffu), 1.0f);
  EXPECT_EQ(philox::keep_threshold(0.0), 0u);
  EXPECT_EQ(philox::keep_threshold(1.0), 1u << 24);
  EXPECT_EQ(philox::keep_threshold(0.5), 1u << 23);
  EXPECT_EQ(philox::keep_threshold(0.25 + std::ldexp(1.0, -30)), (1u << 22) + 1);
}

TEST(RandomCpu, DropoutFollowsTheCounterLayout) {
  const int64_t n = 4097;
  const uint64_t seed = 0x123456789abcdefull, offset = 77, stream = 5;
  const double p = 0.3;
  Tensor x = random_tensor(Shape{n}, 1);
  Tensor y = Tensor::empty(Shape{n}), mask = Tensor::empty(Shape{n}, DType::u8);
  run(OpKind::Dropout, {x, rng_state(int64_t(seed), int64_t(offset))}, {y, mask}, dropout_attrs(p, stream));
  const auto xv = x.to_vector<float>(), yv = y.to_vector<float>();
  const auto mv = mask.to_vector<uint8_t>();
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t w = layout_word(seed, offset, stream, i);
    const bool keep = static_cast<double>(w >> 8) >= p * 16777216.0;  // u >= p with u = top 24 bits / 2^24
    ASSERT_EQ(mv[i], keep ? 1 : 0) << "element " << i;
    ASSERT_EQ(yv[i], keep ? xv[i] * scale : 0.0f) << "element " << i;
  }
}

TEST(RandomCpu, DropoutKeepRateWithinFiveSigma) {
  const int64_t n = 200000;
  for (double p : {0.1, 0.5, 0.9}) {
    Tensor x = Tensor::full(Shape{n}, 1.0);
    Tensor y = Tensor::empty(Shape{n}), mask = Tensor::empty(Shape{n}, DType::u8);
    run(OpKind::Dropout, {x, rng_state(42, 0)}, {y, mask}, dropout_attrs(p, 0));
    double kept = 0;
    for (uint8_t m : mask.to_vector<uint8_t>()) kept += m;
    const double q = 1 - p, sigma = std::sqrt(n * p * q);
    EXPECT_NEAR(kept, n * q, 5 * sigma) << "p=" << p;
    // E[y] = 1: the 1/(1-p) scaling keeps the mean.
    double s = 0;
    for (float v : y.to_vector<float>()) s += v;
    EXPECT_NEAR(s / n, 1.0, 5 * std::sqrt(p / q / n)) << "p=" << p;
  }
}

TEST(RandomCpu, DropoutExtremesAndNonFinite) {
  Tensor x = Tensor::from_vector<float>({1, -2, NAN, INFINITY, 5, 6, 7}, Shape{7});
  Tensor y = Tensor::empty(Shape{7}), mask = Tensor::empty(Shape{7}, DType::u8);
  run(OpKind::Dropout, {x, rng_state(1, 2)}, {y, mask}, dropout_attrs(0.0, 0));
  EXPECT_TRUE(all_close(y, x, 0, 0));
  EXPECT_EQ(mask.to_vector<uint8_t>(), std::vector<uint8_t>(7, 1));
  run(OpKind::Dropout, {x, rng_state(1, 2)}, {y, mask}, dropout_attrs(1.0, 0));
  EXPECT_EQ(y.to_vector<float>(), std::vector<float>(7, 0.0f));  // no 0 * inf, no division by zero
  EXPECT_EQ(mask.to_vector<uint8_t>(), std::vector<uint8_t>(7, 0));
  Tensor dx = Tensor::empty(Shape{7});
  run(OpKind::DropoutBackward, {x, mask}, {dx}, dropout_attrs(1.0, 0));
  EXPECT_EQ(dx.to_vector<float>(), std::vector<float>(7, 0.0f));
}

TEST(RandomCpu, DropoutMasksDependOnSeedOffsetAndStream) {
  const int64_t n = 1000;
  Tensor x = Tensor::full(Shape{n}, 1.0);
  auto mask_of = [&](int64_t seed, int64_t offset, int64_t stream) {
    Tensor y = Tensor::empty(Shape{n}), m = Tensor::empty(Shape{n}, DType::u8);
    run(OpKind::Dropout, {x, rng_state(seed, offset)}, {y, m}, dropout_attrs(0.5, stream));
    return m.to_vector<uint8_t>();
  };
  const auto base = mask_of(7, 0, 0);
  EXPECT_EQ(mask_of(7, 0, 0), base);
  auto differing = [&](const std::vector<uint8_t>& o) {
    int d = 0;
    for (size_t i = 0; i < o.size(); ++i) d += o[i] != base[i];
    return d;
  };
  // Independent masks with p = 0.5 differ in about half the positions.
  EXPECT_GT(differing(mask_of(7, int64_t(philox::blocks(n)), 0)), 400);
  EXPECT_GT(differing(mask_of(7, 0, 1)), 400);
  EXPECT_GT(differing(mask_of(8, 0, 0)), 400);
}

TEST(RandomCpu, DropoutBackwardMatchesFiniteDifferences) {
  const Shape s{3, 37};
  Tensor x = random_tensor(s, 3);
  Tensor rng = rng_state(99, 4);
  const OpAttrs a = dropout_attrs(0.4, 2);
  std::vector<double> w(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(0.37 * i) + 0.1;
  auto f = [&](const Tensor& xx) {
    Tensor y = Tensor::empty(s), m = Tensor::empty(s, DType::u8);
    run(OpKind::Dropout, {xx, rng}, {y, m}, a);
    return weighted_sum(y, w);
  };
  Tensor y = Tensor::empty(s), m = Tensor::empty(s, DType::u8);
  run(OpKind::Dropout, {x, rng}, {y, m}, a);
  std::vector<float> wf(w.begin(), w.end());
  Tensor dy = Tensor::from_vector(wf, s), dx = Tensor::empty(s);
  run(OpKind::DropoutBackward, {dy, m}, {dx}, a);
  EXPECT_TRUE(gradient_close(dx, numerical_gradient(f, x.clone())));
}

TEST(RandomCpu, UniformFollowsLayoutAndStatistics) {
  const int64_t n = 100003;
  const double lo = -2, hi = 3;
  Tensor y = Tensor::empty(Shape{n});
  run(OpKind::RandomUniform, {}, {y}, random_attrs(lo, hi, 11, 3, 9));
  const auto v = y.to_vector<float>();
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double u = static_cast<double>(layout_word(11, 3, 9, i) >> 8) / 16777216.0;
    ASSERT_NEAR(v[i], lo + (hi - lo) * u, 1e-6) << i;
    ASSERT_GE(v[i], lo);
    ASSERT_LE(v[i], hi);
    s += v[i];
  }
  const double mean = s / n;
  for (float x : v) s2 += (x - mean) * (x - mean);
  const double var = s2 / (n - 1), w = hi - lo;
  const double sigma2 = w * w / 12, mu4 = std::pow(w, 4) / 80;
  EXPECT_NEAR(mean, (lo + hi) / 2, 5 * std::sqrt(sigma2 / n));
  EXPECT_NEAR(var, sigma2, 5 * std::sqrt((mu4 - sigma2 * sigma2) / n));
}

TEST(RandomCpu, NormalStatistics) {
  const int64_t n = 100001;
  const double mu = 0.5, sd = 2.0;
  Tensor y = Tensor::empty(Shape{n});
  run(OpKind::RandomNormal, {}, {y}, random_attrs(mu, sd, 5, 0, 0));
  const auto v = y.to_vector<float>();
  double s = 0, s2 = 0, s4 = 0;
  for (float x : v) {
    ASSERT_TRUE(std::isfinite(x));
    s += x;
  }
  const double mean = s / n;
  for (float x : v) {
    s2 += (x - mean) * (x - mean);
    s4 += std::pow((x - mean) / sd, 4);
  }
  const double var = s2 / (n - 1);
  EXPECT_NEAR(mean, mu, 5 * sd / std::sqrt(double(n)));
  EXPECT_NEAR(var, sd * sd, 5 * sd * sd * std::sqrt(2.0 / n));
  EXPECT_NEAR(s4 / n, 3.0, 5 * std::sqrt(96.0 / n));  // kurtosis of a normal; Var[z^4] = 105 - 9
  // Element 0..3 by the documented Box-Muller pairing of block 0's words.
  const philox::U32x4 w = philox::philox4x32_10({0, 0, 0, 0}, 5, 0);
  const double r = std::sqrt(-2 * std::log((double(w.x >> 8) + 1) / 16777216.0));
  const double th = 2 * M_PI * double(w.y >> 8) / 16777216.0;
  EXPECT_NEAR(v[0], mu + sd * r * std::cos(th), 1e-4);
  EXPECT_NEAR(v[1], mu + sd * r * std::sin(th), 1e-4);
}

TEST(RandomCpu, BadArgumentsNameOpAndShapes) {
  Tensor x = Tensor::zeros(Shape{4, 5}), y = Tensor::empty(Shape{4, 6}), m = Tensor::empty(Shape{4, 5}, DType::u8);
  std::string msg = error_message([&] { run(OpKind::Dropout, {x, rng_state(1, 0)}, {y, m}, dropout_attrs(0.5, 0)); });
  EXPECT_NE(msg.find("Dropout"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 5)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 6)"), std::string::npos) << msg;
  Tensor y2 = Tensor::empty(Shape{4, 5});
  msg = error_message([&] { run(OpKind::Dropout, {x, Tensor::zeros(Shape{2})}, {y2, m}, dropout_attrs(0.5, 0)); });
  EXPECT_NE(msg.find("rng state"), std::string::npos) << msg;
  msg = error_message([&] { run(OpKind::Dropout, {x, rng_state(1, 0)}, {y2, m}, dropout_attrs(1.5, 0)); });
  EXPECT_NE(msg.find("Dropout"), std::string::npos) << msg;
  msg = error_message([&] { run(OpKind::DropoutBackward, {x, Tensor::zeros(Shape{5, 4}, DType::u8)}, {y2}, {}); });
  EXPECT_NE(msg.find("DropoutBackward"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(5, 4)"), std::string::npos) << msg;
}

// RandomNormal fed by the device RNG state {seed, offset} draws what the attribute form draws with
// that seed and offset (plus its own offset attribute); a bad state is named.
TEST(RandomCpu, NormalFromRngStateEqualsTheAttributeForm) {
  const int64_t n = 1003;
  for (int64_t offset : {int64_t(0), int64_t(251)}) {
    Tensor a = Tensor::empty(Shape{n}), b = Tensor::empty(Shape{n});
    run(OpKind::RandomNormal, {rng_state(99, offset)}, {a}, random_attrs(0.5, 2, /*seed, unused*/ 7, 3, 9));
    run(OpKind::RandomNormal, {}, {b}, random_attrs(0.5, 2, 99, offset + 3, 9));
    EXPECT_TRUE(all_close(a, b, 0, 0)) << "offset " << offset;
  }
  Tensor y = Tensor::empty(Shape{4, 5});
  std::string msg = error_message(
      [&] { run(OpKind::RandomNormal, {Tensor::zeros(Shape{3}, DType::i64)}, {y}, random_attrs(0, 1, 0, 0, 0)); });
  EXPECT_NE(msg.find("RandomNormal"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rng must be i64 (2,)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 5)"), std::string::npos) << msg;
}

// --- CUDA vs CPU ---------------------------------------------------------------------------------

TEST(RandomCuda, DropoutMaskEqualsCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
#if defined(CUDL_EMULATED)
  const uint64_t launches_before = cudl_emu::counters().kernel_launches;
#endif
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(4), int64_t(33), int64_t(4097)}) {
    for (double p : {0.0, 0.3, 1.0}) {
      Tensor x = random_tensor(Shape{n}, uint64_t(n));
      const OpAttrs a = dropout_attrs(p, 3);
      Tensor y = Tensor::empty(Shape{n}), m = Tensor::empty(Shape{n}, DType::u8);
      run(OpKind::Dropout, {x, rng_state(-12345, 1000)}, {y, m}, a);
      Tensor xg = x.to(gpu), yg = Tensor::empty(Shape{n}, DType::f32, gpu),
             mg = Tensor::empty(Shape{n}, DType::u8, gpu);
      run(OpKind::Dropout, {xg, rng_state(-12345, 1000, gpu)}, {yg, mg}, a);
      EXPECT_TRUE(all_close(mg, m, 0, 0)) << "n=" << n << " p=" << p;
      EXPECT_TRUE(all_close(yg, y, 0, 0)) << "n=" << n << " p=" << p;
      // backward
      Tensor dy = random_tensor(Shape{n}, 7), dx = Tensor::empty(Shape{n});
      run(OpKind::DropoutBackward, {dy, m}, {dx}, a);
      Tensor dxg = Tensor::empty(Shape{n}, DType::f32, gpu);
      run(OpKind::DropoutBackward, {dy.to(gpu), mg}, {dxg}, a);
      EXPECT_TRUE(all_close(dxg, dx, 0, 0)) << "n=" << n << " p=" << p;
    }
  }
#if defined(CUDL_EMULATED)
  EXPECT_EQ(cudl_emu::counters().kernel_launches - launches_before, 5u * 3u * 2u);  // the kernels really ran
#endif
}

TEST(RandomCuda, DropoutReadsRngStateFromDeviceEachCall) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  const int64_t n = 1001;
  Tensor x = random_tensor(Shape{n}, 4);
  Tensor xg = x.to(gpu), state = rng_state(77, 0, gpu);
  Tensor yg = Tensor::empty(Shape{n}, DType::f32, gpu), mg = Tensor::empty(Shape{n}, DType::u8, gpu);
  std::vector<uint8_t> previous;
  for (int64_t step = 0; step < 3; ++step) {
    const int64_t offset = step * int64_t(philox::blocks(n));
    state.copy_from(rng_state(77, offset));  // what a graph's Increment of the offset does
    run(OpKind::Dropout, {xg, state}, {yg, mg}, dropout_attrs(0.5, 1));
    Tensor y = Tensor::empty(Shape{n}), m = Tensor::empty(Shape{n}, DType::u8);
    run(OpKind::Dropout, {x, rng_state(77, offset)}, {y, m}, dropout_attrs(0.5, 1));
    EXPECT_TRUE(all_close(mg, m, 0, 0)) << "step " << step;
    EXPECT_TRUE(all_close(yg, y, 0, 0)) << "step " << step;
    const auto now = mg.to_vector<uint8_t>();
    EXPECT_NE(now, previous);
    previous = now;
  }
}

// A captured graph replays dropout with the rng state the device tensor holds at replay time.
TEST(RandomCuda, CapturedGraphSeesRngStateChanges) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  ExecContext& ctx = default_context(gpu);
  if (!ctx.supports_capture()) GTEST_SKIP() << "the context of " << gpu << " cannot capture";
  const int64_t n = 999;
  Tensor x = random_tensor(Shape{n}, 12);
  Tensor xg = x.to(gpu), state = rng_state(5, 0, gpu);
  Tensor yg = Tensor::empty(Shape{n}, DType::f32, gpu), mg = Tensor::empty(Shape{n}, DType::u8, gpu);
  ctx.synchronize();
  std::unique_ptr<CapturedGraph> graph =
      cudl::testing::capture(ctx, [&] { run(OpKind::Dropout, {xg, state}, {yg, mg}, dropout_attrs(0.25, 4)); });
  for (int64_t offset : {int64_t(0), int64_t(250), int64_t(500)}) {
    state.copy_from(rng_state(5, offset));
    graph->launch();
    Tensor y = Tensor::empty(Shape{n}), m = Tensor::empty(Shape{n}, DType::u8);
    run(OpKind::Dropout, {x, rng_state(5, offset)}, {y, m}, dropout_attrs(0.25, 4));
    EXPECT_TRUE(all_close(mg, m, 0, 0)) << "offset " << offset;
    EXPECT_TRUE(all_close(yg, y, 0, 0)) << "offset " << offset;
  }
}

TEST(RandomCuda, UniformAndNormalEqualCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(6), int64_t(4097), int64_t(20000)}) {
    const OpAttrs ua = random_attrs(-1, 4, 1234567, 17, 2), na = random_attrs(1, 0.5, 1234567, 17, 2);
    Tensor u = Tensor::empty(Shape{n}), ug = Tensor::empty(Shape{n}, DType::f32, gpu);
    run(OpKind::RandomUniform, {}, {u}, ua);
    run(OpKind::RandomUniform, {}, {ug}, ua);
    EXPECT_TRUE(all_close(ug, u, 0, 0)) << "uniform n=" << n;
    Tensor z = Tensor::empty(Shape{n}), zg = Tensor::empty(Shape{n}, DType::f32, gpu);
    run(OpKind::RandomNormal, {}, {z}, na);
    run(OpKind::RandomNormal, {}, {zg}, na);
    // logf/cosf/sinf may differ by an ulp or two between the host and the GPU.
    EXPECT_TRUE(all_close(zg, z, 2e-6, 2e-6)) << "normal n=" << n;
  }
}

// RandomNormal in 16-bit storage: each fp32 draw rounded once to bf16 / f16, on the CPU exactly the
// f32 draw rounded; on CUDA within an ulp of it (the host's and the device's logf/cosf differ in the
// last f32 bits, which can move a rounding), with at least 99% of the elements bitwise.
TEST(RandomCuda, Normal16BitEqualsCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  const OpAttrs na = random_attrs(1, 0.5, 1234567, 17, 2);
  for (DType st : cudl::testing::k16BitTypes)
    for (int64_t n : {int64_t(3), int64_t(4097)}) {
      SCOPED_TRACE(std::string(dtype_name(st)) + " n " + std::to_string(n));
      Tensor z32 = Tensor::empty(Shape{n}), z = Tensor::empty(Shape{n}, st), zg = Tensor::empty(Shape{n}, st, gpu);
      run(OpKind::RandomNormal, {}, {z32}, na);
      run(OpKind::RandomNormal, {}, {z}, na);
      run(OpKind::RandomNormal, {rng_state(1234567, 0, gpu)}, {zg}, na);
      EXPECT_TRUE(cudl::testing::equal_16bit(z, cudl::testing::to_storage(z32, st)));
      EXPECT_TRUE(cudl::testing::close_16bit(zg.to(Device::cpu()), z, 1, 0.99));
    }
}

// The noise of a captured step: each replay reads the state the device holds then.
TEST(RandomCuda, CapturedNormalFromRngStateEqualsCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  ExecContext& ctx = default_context(gpu);
  if (!ctx.supports_capture()) GTEST_SKIP() << "the context of " << gpu << " cannot capture";
  const int64_t n = 1001;
  const OpAttrs a = random_attrs(0, 1, 0, 0, int64_t{1} << 40);
  Tensor state = rng_state(3, 0, gpu), zg = Tensor::empty(Shape{n}, DType::f32, gpu);
  ctx.synchronize();
  std::unique_ptr<CapturedGraph> graph =
      cudl::testing::capture(ctx, [&] { run(OpKind::RandomNormal, {state}, {zg}, a); });
  std::vector<float> previous;
  for (int64_t offset : {int64_t(0), int64_t(251), int64_t(502)}) {
    state.copy_from(rng_state(3, offset));
    graph->launch();
    Tensor z = Tensor::empty(Shape{n});
    run(OpKind::RandomNormal, {rng_state(3, offset)}, {z}, a);
    EXPECT_TRUE(all_close(zg, z, 2e-6, 2e-6)) << "offset " << offset;
    EXPECT_NE(zg.to_vector<float>(), previous);
    previous = zg.to_vector<float>();
  }
}

TEST(RandomCuda, BadArgumentsNameOpAndShapes) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  Tensor x = Tensor::zeros(Shape{4, 5}, DType::f32, gpu), y = Tensor::empty(Shape{4, 6}, DType::f32, gpu);
  Tensor m = Tensor::empty(Shape{4, 5}, DType::u8, gpu);
  std::string msg = error_message([&] { run(OpKind::Dropout, {x, rng_state(1, 0, gpu)}, {y, m}, dropout_attrs(0.5, 0)); });
  EXPECT_NE(msg.find("Dropout"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 6)"), std::string::npos) << msg;
  Tensor y2 = Tensor::empty(Shape{4, 5}, DType::f32, gpu);
  msg = error_message([&] {
    run(OpKind::Dropout, {x, Tensor::zeros(Shape{3}, DType::i64, gpu)}, {y2, m}, dropout_attrs(0.5, 0));
  });
  EXPECT_NE(msg.find("rng state"), std::string::npos) << msg;
}

// --- 16-bit storage (bf16, f16) ------------------------------------------------------------------
// Dropout and DropoutBackward on bf16 / f16: the same mask as f32, y = keep ? x * scale : 0 with the
// product in fp32 rounded once to nearest even. Bitwise equal on CPU and CUDA, as for f32.

namespace {

std::string trace(DType dt, int64_t n, double p) {
  std::ostringstream os;
  os << dt << " n=" << n << " p=" << p;
  return os.str();
}

}  // namespace

TEST(RandomCuda, Dropout16BitEqualsCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  // 8 and 4099: 8-wide vectors (two Philox blocks per thread) with and without a tail.
  for (DType dt : k16BitTypes) {
    for (int64_t n : {int64_t(1), int64_t(3), int64_t(4), int64_t(8), int64_t(33), int64_t(4099)}) {
      for (double p : {0.0, 0.3, 1.0}) {
        SCOPED_TRACE(trace(dt, n, p));
        Tensor x = to_16bit(random_tensor(Shape{n}, uint64_t(n), -2, 2), dt);
        const OpAttrs a = dropout_attrs(p, 3);
        Tensor y = Tensor::empty(Shape{n}, dt), m = Tensor::empty(Shape{n}, DType::u8);
        run(OpKind::Dropout, {x, rng_state(-12345, 1000)}, {y, m}, a);
        Tensor yg = Tensor::empty(Shape{n}, dt, gpu), mg = Tensor::empty(Shape{n}, DType::u8, gpu);
        run(OpKind::Dropout, {x.to(gpu), rng_state(-12345, 1000, gpu)}, {yg, mg}, a);
        EXPECT_TRUE(all_close(mg, m, 0, 0));
        EXPECT_TRUE(equal_16bit(yg, y));
        // The mask does not depend on the storage type.
        Tensor y32 = Tensor::empty(Shape{n}), m32 = Tensor::empty(Shape{n}, DType::u8);
        run(OpKind::Dropout, {random_tensor(Shape{n}, 1), rng_state(-12345, 1000)}, {y32, m32}, a);
        EXPECT_EQ(mg.to_vector<uint8_t>(), m32.to_vector<uint8_t>());
        // backward
        Tensor dy = to_16bit(random_tensor(Shape{n}, 7, -2, 2), dt), dx = Tensor::empty(Shape{n}, dt);
        run(OpKind::DropoutBackward, {dy, m}, {dx}, a);
        Tensor dxg = Tensor::empty(Shape{n}, dt, gpu);
        run(OpKind::DropoutBackward, {dy.to(gpu), mg}, {dxg}, a);
        EXPECT_TRUE(equal_16bit(dxg, dx));
      }
    }
  }
}

// y = x * scale in fp32, rounded once to nearest even: with p = 0.3 (scale 1/0.7) most products are
// inexact, and truncating them would change many values.
TEST(RandomCuda, Dropout16BitRoundsToNearestEven) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  const int64_t n = 4099;
  const double p = 0.3;
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  for (DType dt : k16BitTypes) {
    SCOPED_TRACE(dt == DType::bf16 ? "bf16" : "f16");
    Tensor x = to_16bit(random_tensor(Shape{n}, 21, 0.25f, 2.f), dt);
    Tensor yg = Tensor::empty(Shape{n}, dt, gpu), mg = Tensor::empty(Shape{n}, DType::u8, gpu);
    run(OpKind::Dropout, {x.to(gpu), rng_state(5, 9, gpu)}, {yg, mg}, dropout_attrs(p, 1));
    const std::vector<uint16_t> xb = bits_16(x), got = bits_16(yg);
    const std::vector<uint8_t> keep = mg.to_vector<uint8_t>();
    std::vector<uint16_t> want(n);
    int kept = 0, truncation_differs = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float r = widen_16(xb[i], dt) * scale;
      want[i] = keep[i] ? round_16(r, dt) : 0;
      kept += keep[i];
      truncation_differs += keep[i] && truncate_16(r, dt) != want[i];  // r in [0.25, 3): normal in f16
    }
    EXPECT_GT(kept, n / 2);
    EXPECT_GT(truncation_differs, kept / 4) << "inputs too weak to show truncation";
    EXPECT_EQ(got, want);
    // backward: dx = mask ? dy * scale : 0, rounded the same way
    Tensor dxg = Tensor::empty(Shape{n}, dt, gpu);
    run(OpKind::DropoutBackward, {x.to(gpu), mg}, {dxg}, dropout_attrs(p, 1));
    EXPECT_EQ(bits_16(dxg), want);
  }
}

// A mask 4 bytes past an 8-byte boundary cannot take the 16-bit kernels' 8-byte mask accesses: the
// scalar path gives the same result.
TEST(RandomCuda, Dropout16BitWithAnUnalignedMask) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  const int64_t n = 1003;
  for (DType dt : k16BitTypes) {
    Tensor x = to_16bit(random_tensor(Shape{n}, 31), dt);
    Tensor y = Tensor::empty(Shape{n}, dt), m = Tensor::empty(Shape{n}, DType::u8);
    run(OpKind::Dropout, {x, rng_state(8, 0)}, {y, m}, dropout_attrs(0.5, 2));
    Tensor mask_buf = Tensor::zeros(Shape{n + 8}, DType::u8, gpu);
    Tensor mg = mask_buf.view_bytes(4, Shape{n}, DType::u8);
    Tensor yg = Tensor::empty(Shape{n}, dt, gpu);
    run(OpKind::Dropout, {x.to(gpu), rng_state(8, 0, gpu)}, {yg, mg}, dropout_attrs(0.5, 2));
    EXPECT_TRUE(all_close(mg, m, 0, 0));
    EXPECT_TRUE(equal_16bit(yg, y));
    Tensor dxg = Tensor::empty(Shape{n}, dt, gpu), dx = Tensor::empty(Shape{n}, dt);
    run(OpKind::DropoutBackward, {y.to(gpu), mg}, {dxg}, dropout_attrs(0.5, 2));
    run(OpKind::DropoutBackward, {y, m}, {dx}, dropout_attrs(0.5, 2));
    EXPECT_TRUE(equal_16bit(dxg, dx));
  }
}

#if defined(CUDL_EMULATED)
// One launch each for Dropout and DropoutBackward, whatever the storage type.
TEST(RandomCuda, Dropout16BitSameLaunchesAsF32) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  ExecContext& ctx = default_context(gpu);
  const int64_t n = 4099;
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    Tensor x = Tensor::zeros(Shape{n}, dt, gpu), y = Tensor::empty(Shape{n}, dt, gpu);
    Tensor m = Tensor::empty(Shape{n}, DType::u8, gpu), state = rng_state(1, 0, gpu);
    ctx.synchronize();
    uint64_t before = cudl_emu::counters().kernel_launches;
    run(OpKind::Dropout, {x, state}, {y, m}, dropout_attrs(0.5, 0));
    ctx.synchronize();
    EXPECT_EQ(cudl_emu::counters().kernel_launches - before, 1u) << "Dropout " << dt;
    before = cudl_emu::counters().kernel_launches;
    run(OpKind::DropoutBackward, {y, m}, {x}, dropout_attrs(0.5, 0));
    ctx.synchronize();
    EXPECT_EQ(cudl_emu::counters().kernel_launches - before, 1u) << "DropoutBackward " << dt;
  }
}
#endif

// One storage type per call: both dtypes are named.
TEST(DropoutErrors, MixedStorageTypesNameBoth) {
  for (Device d : test_devices()) {
    SCOPED_TRACE(d.str());
    Tensor xb = Tensor::zeros(Shape{6}, DType::bf16, d), yf = Tensor::empty(Shape{6}, DType::f32, d);
    Tensor m = Tensor::empty(Shape{6}, DType::u8, d);
    std::string msg = error_message([&] {
      run(OpKind::Dropout, {xb, rng_state(1, 0, d)}, {yf, m}, dropout_attrs(0.5, 0));
    });
    EXPECT_NE(msg.find("Dropout"), std::string::npos) << msg;
    EXPECT_NE(msg.find("bf16"), std::string::npos) << msg;
    EXPECT_NE(msg.find("f32"), std::string::npos) << msg;
    Tensor dyh = Tensor::zeros(Shape{6}, DType::f16, d), dxb = Tensor::empty(Shape{6}, DType::bf16, d);
    msg = error_message([&] { run(OpKind::DropoutBackward, {dyh, m}, {dxb}, dropout_attrs(0.5, 0)); });
    EXPECT_NE(msg.find("DropoutBackward"), std::string::npos) << msg;
    EXPECT_NE(msg.find("f16"), std::string::npos) << msg;
    EXPECT_NE(msg.find("bf16"), std::string::npos) << msg;
  }
}
