// tests/testing.hpp — shared test helpers: random tensors, tolerance comparison that prints the
// first mismatching indices (and its bf16/f16 form in ulps), central finite differences, and the
// "CUDA available?" skip.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "core/half.hpp"
#include "cudl/cudl.hpp"
#if defined(CUDL_EMULATED)
#include "emu/cudnn_emu.hpp"
#endif

namespace cudl::testing {

/// cudnnBackendExecute calls so far under the emulator; 0 on a real GPU, where tests that count
/// them compare only under CUDL_EMULATED.
inline uint64_t cudnn_executions() {
#if defined(CUDL_EMULATED)
  return cudl_emu::cudnn_counters().executions;
#else
  return 0;
#endif
}

/// True when a CUDA device is usable: always under the emulator, on a real GPU when one exists.
inline bool cuda_available() { return cuda_device_count() > 0; }

/// The CPU, and the CUDA device when one is usable: where a check runs on every backend.
inline std::vector<Device> test_devices() {
  std::vector<Device> devices = {Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  return devices;
}

/// Skips the current test, saying why, when no CUDA device is usable.
#define CUDL_REQUIRE_CUDA()                                                                 \
  do {                                                                                      \
    if (!::cudl::testing::cuda_available())                                                 \
      GTEST_SKIP() << "needs a CUDA device (" << ::cudl::cuda_unavailable_reason() << ")";  \
  } while (0)

/// Records the work `queue_work` puts on `ctx` into a replayable graph; ends the capture when it throws.
inline std::unique_ptr<CapturedGraph> capture(ExecContext& ctx, const std::function<void()>& queue_work) {
  ctx.begin_capture();
  try {
    queue_work();
  } catch (...) {
    ctx.abort_capture();
    throw;
  }
  return ctx.end_capture();
}

/// Uniform random f32 tensor on `device` (values generated on the host with a fixed seed).
inline Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.f, float hi = 1.f,
                            Device device = Device::cpu()) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  for (auto& x : v) x = dist(rng);
  return Tensor::from_vector(v, shape, device);
}

/// Random integer labels in [0, classes).
inline Tensor random_labels(int64_t n, int classes, uint64_t seed, Device device = Device::cpu()) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<int32_t>(rng() % classes);
  return Tensor::from_vector(v, Shape{n}, device);
}

/// Values of any tensor (f32, i32, i64, u8, f16, bf16) as doubles on the host.
inline std::vector<double> as_doubles(const Tensor& t) {
  Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  std::vector<double> out(static_cast<size_t>(h.numel()));
  for (int64_t i = 0; i < h.numel(); ++i) out[i] = h.item(i);
  return out;
}

/// Every f32 element has the same bits (NaN included); names the first mismatch otherwise.
inline ::testing::AssertionResult bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return ::testing::AssertionFailure() << "shapes " << a.shape() << " vs " << b.shape();
  const Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
  const float* pa = ha.data_as<float>();
  const float* pb = hb.data_as<float>();
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(pa + i, pb + i, sizeof(float)) != 0)
      return ::testing::AssertionFailure() << "element " << i << ": " << pa[i] << " vs " << pb[i];
  return ::testing::AssertionSuccess();
}

/// Passes when |a-e| <= atol + rtol*|e| for every element (NaN matches NaN, Inf matches the same
/// Inf); otherwise fails listing the first mismatches with their flat indices.
inline ::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, double atol = 1e-5,
                                            double rtol = 1e-5, int show = 8) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape " << actual.shape() << " vs expected " << expected.shape();
  if (actual.dtype() != expected.dtype())
    return ::testing::AssertionFailure() << "dtype " << actual.dtype() << " vs expected " << expected.dtype();
  const auto a = as_doubles(actual), e = as_doubles(expected);
  std::ostringstream os;
  int bad = 0;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    bool ok;
    if (std::isnan(e[i]) || std::isnan(a[i])) ok = std::isnan(e[i]) && std::isnan(a[i]);
    else if (std::isinf(e[i]) || std::isinf(a[i])) ok = a[i] == e[i];
    else ok = std::fabs(a[i] - e[i]) <= atol + rtol * std::fabs(e[i]);
    if (!ok) {
      if (bad < show) os << "\n  [" << i << "] got " << a[i] << ", expected " << e[i];
      if (!std::isnan(a[i] - e[i])) worst = std::max(worst, std::fabs(a[i] - e[i]));
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << a.size() << " elements differ (atol " << atol
                                       << ", rtol " << rtol << ", worst |diff| " << worst << "):" << os.str();
}

/// The 16-bit storage types of the mixed-precision op tests.
inline constexpr DType k16BitTypes[] = {DType::bf16, DType::f16};

/// v rounded to bf16 / f16 bits, to nearest even (core/half.hpp: the CPU reference's rounding).
inline uint16_t round_16(float v, DType dtype) {
  return dtype == DType::bf16 ? float_to_bf16_bits(v) : float_to_half_bits(v);
}
/// The value of bf16 / f16 bits (exact).
inline float widen_16(uint16_t h, DType dtype) {
  return dtype == DType::bf16 ? bf16_bits_to_float(h) : half_bits_to_float(h);
}
/// v rounded to bf16 / f16 to nearest even, as a float (a 16-bit store and load).
inline float rounded_16(float v, DType dtype) { return widen_16(round_16(v, dtype), dtype); }
/// v rounded toward zero to bf16 / f16 bits (what a store that drops the low bits gives); v finite
/// and, for f16, in its normal range.
inline uint16_t truncate_16(float v, DType dtype) {
  const uint32_t u = float_to_bits(v);
  if (dtype == DType::bf16) return static_cast<uint16_t>(u >> 16);
  const uint32_t sign = (u >> 16) & 0x8000u, exp = ((u >> 23) & 0xffu) - 127 + 15, mant = (u >> 13) & 0x3ffu;
  return static_cast<uint16_t>(sign | exp << 10 | mant);
}

/// An f32 tensor's values rounded to bf16 / f16 (nearest even), as a CPU tensor of that dtype: the
/// 16-bit inputs of the mixed-precision op tests.
inline Tensor to_16bit(const Tensor& t, DType dtype) {
  const std::vector<float> v = t.to(Device::cpu()).to_vector<float>();
  Tensor out = Tensor::empty(t.shape(), dtype);
  uint16_t* h = static_cast<uint16_t*>(out.data());
  for (size_t i = 0; i < v.size(); ++i) h[i] = round_16(v[i], dtype);
  return out;
}

/// The bits of a bf16 / f16 tensor's elements (copied to the host).
inline std::vector<uint16_t> bits_16(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  const uint16_t* p = static_cast<const uint16_t*>(h.data());
  return std::vector<uint16_t>(p, p + h.numel());
}

/// Distance in units in the last place between two 16-bit floats of one format (bf16 or f16 bits):
/// consecutive representable values are 1 apart, +0 and -0 are 0 apart, opposite signs add up.
inline int ulp_distance_16(uint16_t a, uint16_t b) {
  auto key = [](uint16_t h) { return (h & 0x8000u) ? 0x8000 - static_cast<int>(h & 0x7fffu) : 0x8000 + h; };
  return std::abs(key(a) - key(b));
}

/// True when a bf16 / f16 bit pattern is a NaN (exponent all ones, mantissa non-zero).
inline bool is_nan_16(uint16_t h, DType dtype) {
  return dtype == DType::bf16 ? (h & 0x7fffu) > 0x7f80u : (h & 0x7fffu) > 0x7c00u;
}

/// 16-bit results of an op computed in fp32 and rounded once (softmax, norms, the losses' gradients,
/// average pooling) against the CPU reference in the same type: every element at most `max_ulps`
/// apart (or, where fp32 cancellation makes tiny results inexact, within `atol`), infinities equal,
/// NaN matching NaN, and at least `min_exact` of the elements bitwise equal. The two backends' fp32
/// results differ by a few fp32 ulps, so they round differently only where they straddle a 16-bit
/// rounding boundary; a kernel that truncated instead of rounding to nearest even, or kept
/// intermediates in 16 bits, differs in far more elements.
inline ::testing::AssertionResult close_16bit(const Tensor& actual, const Tensor& expected, int max_ulps = 1,
                                              double min_exact = 0.95, double atol = 0, int show = 8) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape " << actual.shape() << " vs expected " << expected.shape();
  if (actual.dtype() != expected.dtype() || (expected.dtype() != DType::bf16 && expected.dtype() != DType::f16))
    return ::testing::AssertionFailure() << "dtype " << actual.dtype() << " vs expected " << expected.dtype()
                                         << " (both must be bf16 or both f16)";
  const DType dt = expected.dtype();
  const std::vector<uint16_t> a = bits_16(actual), e = bits_16(expected);
  const auto av = as_doubles(actual), ev = as_doubles(expected);
  std::ostringstream os;
  size_t bad = 0, exact = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool an = is_nan_16(a[i], dt), en = is_nan_16(e[i], dt);
    bool ok;
    if (an || en)
      ok = an && en;
    else if (std::isinf(av[i]) || std::isinf(ev[i]))
      ok = a[i] == e[i];
    else
      ok = ulp_distance_16(a[i], e[i]) <= max_ulps || std::fabs(av[i] - ev[i]) <= atol;
    exact += a[i] == e[i] || (an && en);
    if (!ok) {
      if (bad < static_cast<size_t>(show))
        os << "\n  [" << i << "] got " << av[i] << " (0x" << std::hex << a[i] << "), expected " << ev[i] << " (0x"
           << e[i] << std::dec << "), " << ulp_distance_16(a[i], e[i]) << " ulp";
      ++bad;
    }
  }
  const bool enough = a.empty() || static_cast<double>(exact) >= min_exact * static_cast<double>(a.size());
  if (bad == 0 && enough) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << dt << ": " << bad << " of " << a.size() << " elements beyond " << max_ulps
                                       << " ulp and " << atol << ", " << exact << " bitwise equal (at least "
                                       << min_exact * 100 << "% required):" << os.str();
}

/// An f32 tensor's values truncated (toward zero) to bf16 / f16, as a CPU tensor of that dtype: what
/// a kernel that dropped the low bits instead of rounding would store (values finite and within the
/// 16-bit range; f16 subnormals included).
inline Tensor truncated_16bit(const Tensor& t, DType dtype) {
  const std::vector<float> v = t.to(Device::cpu()).to_vector<float>();
  Tensor out = Tensor::empty(t.shape(), dtype);
  uint16_t* h = static_cast<uint16_t*>(out.data());
  for (size_t i = 0; i < v.size(); ++i) {
    const float a = std::fabs(v[i]);
    if (dtype == DType::f16 && a < 0x1p-14f)  // subnormal: whole multiples of 2^-24
      h[i] = static_cast<uint16_t>((std::signbit(v[i]) ? 0x8000u : 0u) | static_cast<uint32_t>(a * 0x1p24f));
    else
      h[i] = truncate_16(v[i], dtype);
  }
  return out;
}

/// Two bf16 / f16 tensors of one dtype and shape agree: each element has the same bits, or both are
/// NaN (NaN payloads differ between the host's and the device's conversions), or, with max_ulps > 0,
/// the values are at most max_ulps apart (ulp_distance_16; never across Inf and NaN). Lists the first
/// mismatches otherwise.
inline ::testing::AssertionResult equal_16bit(const Tensor& actual, const Tensor& expected, int max_ulps = 0,
                                              int show = 8) {
  return close_16bit(actual, expected, max_ulps, 0.0, 0.0, show);
}

/// Largest |a - b| over the elements of two same-shaped tensors (NaN pairs are skipped).
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto x = as_doubles(a), y = as_doubles(b);
  double worst = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i)
    if (!std::isnan(x[i] - y[i])) worst = std::max(worst, std::fabs(x[i] - y[i]));
  return worst;
}

/// Largest |t| over the elements (NaN skipped): the scale of a tolerance relative to a tensor.
inline double max_abs(const Tensor& t) { return max_abs_diff(t, Tensor::zeros(t.shape())); }

/// An f32 CPU tensor with every element rounded to TF32 as the tensor cores read it: 11 significant
/// bits, ties away from zero (computed with frexp/round, independently of the emulator's bit trick).
inline Tensor tf32_rounded(const Tensor& t) {
  std::vector<float> v = t.to(Device::cpu()).to_vector<float>();
  for (float& x : v) {
    if (!std::isfinite(x) || x == 0) continue;
    int e = 0;
    const float m = std::frexp(x, &e);  // |m| in [0.5, 1)
    x = std::ldexp(std::round(m * 2048.f), e - 11);
  }
  return Tensor::from_vector(v, t.shape());
}

/// Sets an environment variable for a scope (the previous value is not kept: the variables the tests
/// use are unset in their runs).
struct EnvGuard {
  std::string name;
  EnvGuard(const char* n, const char* value) : name(n) { setenv(n, value, 1); }
  ~EnvGuard() { unsetenv(name.c_str()); }
};

/// Central finite-difference gradient of a scalar function of one f32 CPU tensor, in double.
/// `f` must not keep references to x; x is perturbed in place and restored.
inline std::vector<double> numerical_gradient(const std::function<double(const Tensor&)>& f, Tensor x,
                                              double eps = 1e-3) {
  std::vector<double> g(static_cast<size_t>(x.numel()));
  float* p = x.data_as<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float orig = p[i];
    p[i] = static_cast<float>(orig + eps);
    const double up = f(x);
    p[i] = static_cast<float>(orig - eps);
    const double down = f(x);
    p[i] = orig;
    g[i] = (up - down) / (2 * eps);
  }
  return g;
}

/// Sum of w[i] * y[i] in double: turns a tensor-valued op into a scalar for gradient checks.
inline double weighted_sum(const Tensor& y, const std::vector<double>& w) {
  const auto v = as_doubles(y);
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += v[i] * w[i];
  return s;
}

/// Compares an analytic gradient with a numerical one, printing the first mismatches.
inline ::testing::AssertionResult gradient_close(const Tensor& analytic, const std::vector<double>& numeric,
                                                 double atol = 2e-3, double rtol = 2e-2) {
  return all_close(analytic, Tensor::from_vector(std::vector<float>(numeric.begin(), numeric.end()),
                                                 analytic.shape()),
                   atol, rtol);
}

inline TensorView tv(const Tensor& t) { return TensorView::of(t); }

// --- 16-bit storage (bf16/f16) ------------------------------------------------------------------

/// A CPU f32 tensor rounded to `storage` (bf16 or f16) to nearest even; f32 returns a copy.
inline Tensor to_storage(const Tensor& t, DType storage) {
  return storage == DType::f32 ? t.to(Device::cpu()).clone() : to_16bit(t, storage);
}

/// Any float tensor widened to a CPU f32 tensor (exact).
inline Tensor widened(const Tensor& t) {
  const auto v = as_doubles(t);
  return Tensor::from_vector(std::vector<float>(v.begin(), v.end()), t.shape());
}

/// |t| elementwise as a CPU f32 tensor (t of any float type).
inline Tensor abs_of(const Tensor& t) {
  auto v = as_doubles(t);
  std::vector<float> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = static_cast<float>(std::fabs(v[i]));
  return Tensor::from_vector(a, t.shape());
}

/// The storage type's epsilon, the distance from 1 to the next value: 2^-7 (bf16), 2^-10 (f16), 2^-23.
inline double storage_eps(DType t) { return t == DType::bf16 ? 0x1p-7 : t == DType::f16 ? 0x1p-10 : 0x1p-23; }

/// 16-bit results of a sum (conv, bias gradient, ...) against the CPU reference in the same type:
/// each element within `eps_units` 16-bit epsilons of the sum of |terms| that produced it (abs_sum,
/// f32: the op run on |inputs|), NaN matching NaN; and at least `min_exact` of the elements bitwise
/// equal. Both backends sum in fp32 (or wider) and round once, so they differ only where the sum lies
/// within its fp32 error of a rounding boundary; a path that summed in 16-bit math, or truncated
/// instead of rounding to nearest even, differs in far more elements.
inline ::testing::AssertionResult storage_sum_close(const Tensor& actual, const Tensor& expected, const Tensor& abs_sum,
                                                    double eps_units = 1.0, double min_exact = 0.95, int show = 8) {
  if (actual.shape() != expected.shape() || actual.shape() != abs_sum.shape())
    return ::testing::AssertionFailure() << "shapes " << actual.shape() << ", expected " << expected.shape()
                                         << ", abs_sum " << abs_sum.shape();
  if (actual.dtype() != expected.dtype())
    return ::testing::AssertionFailure() << "dtype " << actual.dtype() << " vs expected " << expected.dtype();
  const double eps = storage_eps(expected.dtype());
  const auto a = as_doubles(actual), e = as_doubles(expected), s = as_doubles(abs_sum);
  std::ostringstream os;
  int64_t bad = 0, exact = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool nan = std::isnan(a[i]) || std::isnan(e[i]);
    if ((nan && std::isnan(a[i]) && std::isnan(e[i])) || a[i] == e[i]) {
      ++exact;
      continue;
    }
    const double tol = eps_units * eps * s[i];
    if (nan || !(std::fabs(a[i] - e[i]) <= tol)) {
      if (bad < show) os << "\n  [" << i << "] got " << a[i] << ", expected " << e[i] << " (tolerance " << tol << ")";
      ++bad;
    }
  }
  const double frac = a.empty() ? 1.0 : static_cast<double>(exact) / static_cast<double>(a.size());
  if (bad == 0 && frac >= min_exact) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expected.dtype() << ": " << bad << " of " << a.size() << " elements beyond "
                                       << eps_units << " eps x sum|terms|, " << exact << " bitwise equal (at least "
                                       << min_exact * 100 << "% required):" << os.str();
}

/// The message of the cudl::Error that `f` throws, or "<no error>" when it throws none.
inline std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

/// The per-epoch losses of two runs agree within `rtol` * max(1, loss) (CPU vs CUDA runs).
inline ::testing::AssertionResult losses_close(const History& a, const History& b, double rtol = 1e-4) {
  const std::vector<double>& la = a.metrics.at("loss");
  const std::vector<double>& lb = b.metrics.at("loss");
  if (la.size() != lb.size())
    return ::testing::AssertionFailure() << la.size() << " vs " << lb.size() << " epochs";
  for (size_t e = 0; e < la.size(); ++e)
    if (!(std::fabs(la[e] - lb[e]) <= rtol * std::max(1.0, std::fabs(la[e]))))
      return ::testing::AssertionFailure() << "epoch " << e << ": loss " << la[e] << " vs " << lb[e];
  return ::testing::AssertionSuccess();
}

/// Silent fit options: `epochs` of batches of `batch` rows, shuffled by `seed`.
inline FitOptions quiet_fit(int epochs, int64_t batch, uint64_t seed) {
  FitOptions f;
  f.epochs = epochs;
  f.batch_size = batch;
  f.verbose = 0;
  f.seed = seed;
  return f;
}

/// Compile options: `optimizer` and `loss` with the accuracy metric, on `device`, seeded by `seed`.
inline CompileOptions classifier_options(Device device, Optimizer optimizer, uint64_t seed,
                                         Loss loss = "sparse_categorical_crossentropy") {
  CompileOptions o;
  o.optimizer = optimizer;
  o.loss = loss;
  o.metrics = {"accuracy"};
  o.device = device;
  o.seed = seed;
  return o;
}

/// Gaussian blobs: row i has label i % classes; feature k is `hi` when k % classes equals the
/// label, else -1, plus N(0, sigma) noise drawn row by row. Linearly separable for small sigma.
inline Dataset separable_blobs(int64_t n, int features, int classes, float hi, float sigma, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.f, sigma);
  std::vector<float> x(static_cast<size_t>(n * features));
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[i] = static_cast<int32_t>(i % classes);
    for (int k = 0; k < features; ++k) x[i * features + k] = (k % classes == y[i] ? hi : -1.f) + noise(rng);
  }
  return Dataset{Tensor::from_vector(x, Shape{n, features}), Tensor::from_vector(y, Shape{n})};
}

/// Every parameter of every layer of `m`, in layers() order, copied to the host as one vector.
inline std::vector<float> flat_weights(Model& m) {
  std::vector<float> w;
  for (auto& l : m.layers())
    for (auto& [k, t] : l->params()) {
      auto v = t.to(Device::cpu()).to_vector<float>();
      w.insert(w.end(), v.begin(), v.end());
    }
  return w;
}

/// For a model compiled with optim::SGD(1.0): one training step on (x, y) moves each probed element
/// of `w` (a parameter tensor of the model, sharing its storage) by -dL/dw. Checks that against
/// central differences (step 1e-2) of the batch's loss (test_on_batch), within atol + 2e-2 *
/// |numeric|; restores every weight afterwards. Returns the largest |numeric derivative| seen, so a
/// caller can check that a gradient reached w at all.
inline double expect_sgd_step_matches_fd(Model& m, const Tensor& x, const Tensor& y, Tensor w,
                                         const std::vector<size_t>& probe, double atol, const std::string& what) {
  const std::vector<float> w0 = w.to(Device::cpu()).to_vector<float>();
  const std::vector<Tensor> saved = m.get_weights();
  auto loss_at = [&](size_t i, float delta) {
    std::vector<float> v = w0;
    v[i] += delta;
    w.copy_from(Tensor::from_vector(v, w.shape()));
    const double l = m.test_on_batch(x, y).at("loss");
    w.copy_from(Tensor::from_vector(w0, w.shape()));
    return l;
  };
  std::vector<double> numeric;
  const float h = 1e-2f;
  for (size_t i : probe) numeric.push_back((loss_at(i, h) - loss_at(i, -h)) / (2.0 * h));
  m.train_on_batch(x, y);
  const std::vector<float> w1 = w.to(Device::cpu()).to_vector<float>();
  double largest = 0;
  for (size_t k = 0; k < probe.size(); ++k) {
    EXPECT_NEAR(w0[probe[k]] - w1[probe[k]], numeric[k], atol + 2e-2 * std::fabs(numeric[k]))
        << what << " weight " << probe[k];
    largest = std::max(largest, std::fabs(numeric[k]));
  }
  m.set_weights(saved);
  return largest;
}

}  // namespace cudl::testing
