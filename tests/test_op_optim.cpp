// tests/test_op_optim.cpp — optimizer steps against the published update rules (expected values
// computed here in double), CUDA vs CPU on many odd-sized tensors in one call, schedules read from
// the device (also through a captured CUDA graph), weight penalties, global-norm clipping, dynamic loss
// scaling (AmpUnscale) and the steps that skip on its flag.
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "ops/optim.hpp"
#include "testing.hpp"
#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif


using namespace cudl;
using cudl::testing::error_message;
using namespace cudl::testing;

namespace {

void run(OpKind op, const std::vector<Tensor>& in, const std::vector<Tensor>& out, const OpAttrs& a, Device dev) {
  std::vector<TensorView> iv, ov;
  for (const auto& t : in) iv.push_back(tv(t));
  for (const auto& t : out) ov.push_back(tv(t));
  OpCall c;
  c.op = op;
  c.inputs = iv.data();
  c.n_inputs = static_cast<int>(iv.size());
  c.outputs = ov.data();
  c.n_outputs = static_cast<int>(ov.size());
  c.attrs = a;
  c.ctx = &default_context(dev);
  c.label = "test/optim";
  op_table(dev.type()).run(c);
}

Tensor hyper(double lr, double t, Device d = Device::cpu()) {
  return Tensor::from_vector<float>({static_cast<float>(lr), static_cast<float>(t)}, Shape{2}, d);
}

using Vec = std::vector<double>;
const Vec kP0 = {0.5, -1.0, 2.0, 0.0, 3.0, -0.25, 1e-3};
// Gradient of element i at step t (1-based): varied signs and magnitudes, one exact zero.
double grad_at(int t, size_t i) {
  static const double scale[] = {1.0, -0.5, 2.0};
  return i == 3 && t == 2 ? 0.0 : 0.1 * double(i + 1) * scale[t - 1] + 0.05 * t;
}
const double kLr[] = {0.1, 0.05, 0.02};  // the schedule: lr changes between steps

Tensor to_tensor(const Vec& v, Device d) {
  return Tensor::from_vector(std::vector<float>(v.begin(), v.end()), Shape{int64_t(v.size())}, d);
}

// Runs 3 steps of `op` on one parameter with `n_state` state tensors (initialised to `state_init`),
// writing lr and t into the hyper tensor before each step. Returns the final parameter.
Vec run_three_steps(OpKind op, const OpAttrs& a, int n_state, double state_init, Device d) {
  Tensor p = to_tensor(kP0, d);
  std::vector<Tensor> state;
  for (int k = 0; k < n_state; ++k)
    state.push_back(Tensor::full(Shape{int64_t(kP0.size())}, state_init, DType::f32, d));
  Tensor h = hyper(0, 1, d);
  for (int t = 1; t <= 3; ++t) {
    Vec g(kP0.size());
    for (size_t i = 0; i < g.size(); ++i) g[i] = grad_at(t, i);
    h.copy_from(hyper(kLr[t - 1], t));
    std::vector<Tensor> in = {h, p, to_tensor(g, d)};
    for (auto& s : state) in.push_back(s);
    run(op, in, {}, a, d);
  }
  const auto v = as_doubles(p);
  return Vec(v.begin(), v.end());
}

void expect_near_vec(const Vec& got, const Vec& want, double rtol, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-6 + rtol * std::fabs(want[i])) << what << " element " << i;
}

std::vector<Device> devices() {
  std::vector<Device> d = {Device::cpu()};
  if (cuda_available()) d.push_back(Device::cuda());
  return d;
}

// --- the published rules, in double ------------------------------------------------------------

Vec sgd_expected(double mom, double damp, double wd, bool nesterov) {
  Vec p = kP0, buf(p.size(), 0.0);
  for (int t = 1; t <= 3; ++t)
    for (size_t i = 0; i < p.size(); ++i) {
      double d = grad_at(t, i) + wd * p[i];
      if (mom != 0) {
        buf[i] = t == 1 ? d : mom * buf[i] + (1 - damp) * d;
        d = nesterov ? d + mom * buf[i] : buf[i];
      }
      p[i] -= kLr[t - 1] * d;
    }
  return p;
}

/// torch's Adam, or with epsilon_hat Keras's: lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps).
Vec adam_expected(double b1, double b2, double eps, double wd, bool decoupled, bool epsilon_hat = false) {
  Vec p = kP0, m(p.size(), 0.0), v(p.size(), 0.0);
  for (int t = 1; t <= 3; ++t) {
    const double lr = kLr[t - 1];
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad_at(t, i);
      if (decoupled)
        p[i] *= 1 - lr * wd;
      else
        g += wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
      if (epsilon_hat)
        p[i] -= lr * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t)) * m[i] / (std::sqrt(v[i]) + eps);
      else
        p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
  return p;
}

/// torch's RMSprop, or with eps_in_sqrt Keras's: lr*g/sqrt(sq + eps).
Vec rmsprop_expected(double alpha, double eps, double wd, bool eps_in_sqrt = false) {
  Vec p = kP0, sq(p.size(), 0.0);
  for (int t = 1; t <= 3; ++t)
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grad_at(t, i) + wd * p[i];
      sq[i] = alpha * sq[i] + (1 - alpha) * g * g;
      p[i] -= kLr[t - 1] * g / (eps_in_sqrt ? std::sqrt(sq[i] + eps) : std::sqrt(sq[i]) + eps);
    }
  return p;
}

Vec adagrad_expected(double eps, double wd, double lr_decay, double init) {
  Vec p = kP0, sum(p.size(), init);
  for (int t = 1; t <= 3; ++t)
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grad_at(t, i) + wd * p[i];
      const double clr = kLr[t - 1] / (1 + (t - 1) * lr_decay);
      sum[i] += g * g;
      p[i] -= clr * g / (std::sqrt(sum[i]) + eps);
    }
  return p;
}

}  // namespace

// Literal values worked by hand: SGD momentum 0.9, lr 0.1, p = 1, g = 1 every step:
// buf = 1, 1.9, 2.71 and p = 0.9, 0.71, 0.439. Adam with a constant g: m_hat = g, v_hat = g^2, so
// each step moves p by lr * g / (|g| + eps): 1 -> 0.9 -> 0.8 -> 0.7.
TEST(Optim, LiteralHandWorkedSteps) {
  for (Device d : devices()) {
    Tensor p = Tensor::full(Shape{1}, 1.0, DType::f32, d), g = Tensor::full(Shape{1}, 1.0, DType::f32, d);
    Tensor buf = Tensor::full(Shape{1}, NAN, DType::f32, d);  // ignored at t = 1 (torch: buffer is None)
    OpAttrs a;
    a.f[0] = 0.9;
    const double want[] = {0.9, 0.71, 0.439};
    for (int t = 1; t <= 3; ++t) {
      run(OpKind::SgdStep, {hyper(0.1, t, d), p, g, buf}, {}, a, d);
      EXPECT_NEAR(p.item(0), want[t - 1], 1e-6) << d << " sgd t=" << t;
    }
    Tensor q = Tensor::full(Shape{1}, 1.0, DType::f32, d), g2 = Tensor::full(Shape{1}, 0.5, DType::f32, d);
    Tensor m = Tensor::zeros(Shape{1}, DType::f32, d), v = Tensor::zeros(Shape{1}, DType::f32, d);
    OpAttrs b;
    b.f[0] = 0.9;
    b.f[1] = 0.999;
    b.f[2] = 1e-8;
    for (int t = 1; t <= 3; ++t) {
      run(OpKind::AdamStep, {hyper(0.1, t, d), q, g2, m, v}, {}, b, d);
      EXPECT_NEAR(q.item(0), 1.0 - 0.1 * t, 1e-6) << d << " adam t=" << t;
    }
  }
}

TEST(Optim, SgdMatchesTorchRule) {
  struct Case {
    double mom, damp, wd;
    bool nesterov;
  } cases[] = {
      {0, 0, 0, false}, {0, 0, 0.01, false}, {0.9, 0, 0, false}, {0.9, 0.1, 0.01, false}, {0.8, 0, 0.05, true}};
  for (Device d : devices())
    for (const Case& c : cases) {
      OpAttrs a;
      a.f[0] = c.mom;
      a.f[1] = c.damp;
      a.f[2] = c.wd;
      a.i[0] = c.nesterov;
      // The momentum buffer starts as NaN: the first step must overwrite it, not read it.
      const Vec got = run_three_steps(OpKind::SgdStep, a, c.mom != 0 ? 1 : 0, NAN, d);
      SCOPED_TRACE(::testing::Message() << d << " momentum " << c.mom << " dampening " << c.damp << " wd " << c.wd
                                        << " nesterov " << c.nesterov);
      expect_near_vec(got, sgd_expected(c.mom, c.damp, c.wd, c.nesterov), 1e-5, "sgd");
    }
}

TEST(Optim, AdamAndAdamWMatchTorchRule) {
  for (Device d : devices())
    for (bool decoupled : {false, true})
      for (double wd : {0.0, 0.1}) {
        OpAttrs a;
        a.f[0] = 0.9;
        a.f[1] = 0.99;
        a.f[2] = 1e-3;
        a.f[3] = wd;
        a.i[0] = decoupled;
        const Vec got = run_three_steps(OpKind::AdamStep, a, 2, 0.0, d);
        SCOPED_TRACE(::testing::Message() << d << " decoupled " << decoupled << " wd " << wd);
        expect_near_vec(got, adam_expected(0.9, 0.99, 1e-3, wd, decoupled), 1e-5, "adam");
      }
}

TEST(Optim, AdamEpsilonHatMatchesKerasRule) {
  // A large eps (TensorFlow suggests 1.0 or 0.1 for some models) separates the two rules: Keras's
  // adds it before the bias correction, where it weighs sqrt(1 - b2^t) times less early on.
  for (Device d : devices())
    for (bool decoupled : {false, true}) {
      OpAttrs a = ops::AdamAttrs{0.9, 0.99, 0.5, decoupled ? 0.1 : 0.0, decoupled, false, true}.to_op_attrs();
      const Vec got = run_three_steps(OpKind::AdamStep, a, 2, 0.0, d);
      SCOPED_TRACE(::testing::Message() << d << " decoupled " << decoupled);
      expect_near_vec(got, adam_expected(0.9, 0.99, 0.5, decoupled ? 0.1 : 0.0, decoupled, true), 1e-5, "adam eps-hat");
      const Vec torch_rule = adam_expected(0.9, 0.99, 0.5, decoupled ? 0.1 : 0.0, decoupled, false);
      EXPECT_GT(std::abs(got[1] - torch_rule[1]), 1e-3) << "the two rules must differ for this eps";
    }
}

TEST(Optim, AdvancingTEqualsIncrementThenStep) {
  // i[1] = 1 on the CPU reference: hyper[1] += 1, then exactly the step a separate Increment +
  // step would give (bitwise), on both devices.
  for (Device d : devices()) {
    SCOPED_TRACE(::testing::Message() << d);
    OpAttrs a;
    a.f[0] = 0.9;
    a.f[1] = 0.99;
    a.f[2] = 1e-3;
    Tensor p1 = to_tensor(kP0, d), p2 = to_tensor(kP0, d);
    Tensor m1 = Tensor::zeros(Shape{7}, DType::f32, d), v1 = Tensor::zeros(Shape{7}, DType::f32, d);
    Tensor m2 = m1.clone(), v2 = v1.clone();
    Tensor h1 = hyper(0.1, 0, d), h2 = hyper(0.1, 0, d);
    OpAttrs adv = a;
    adv.i[1] = 1;
    for (int t = 1; t <= 3; ++t) {
      Vec g(kP0.size());
      for (size_t i = 0; i < g.size(); ++i) g[i] = grad_at(t, i);
      Tensor gt = to_tensor(g, d);
      h1.copy_from(hyper(0.1, t, d));  // the separate Increment's result
      run(OpKind::AdamStep, {h1, p1, gt, m1, v1}, {}, a, d);
      run(OpKind::AdamStep, {h2, p2, gt, m2, v2}, {}, adv, d);
      EXPECT_EQ(h2.to(Device::cpu()).to_vector<float>()[1], static_cast<float>(t));
    }
    EXPECT_TRUE(all_close(p2.to(Device::cpu()), p1.to(Device::cpu()), 0, 0));
    EXPECT_TRUE(all_close(v2.to(Device::cpu()), v1.to(Device::cpu()), 0, 0));
  }
  // A t that would still be below 1 is refused, and hyper is left as it was.
  Tensor h = hyper(0.1, -1), p = to_tensor(kP0, Device::cpu());
  OpAttrs adv;
  adv.i[1] = 1;
  const std::string msg = error_message([&] { run(OpKind::SgdStep, {h, p, p.clone()}, {}, adv, Device::cpu()); });
  EXPECT_NE(msg.find("hyper[1] + 1"), std::string::npos) << msg;
  EXPECT_EQ(h.to_vector<float>()[1], -1.f);
}

TEST(Optim, RmspropMatchesTorchRule) {
  for (Device d : devices())
    for (double wd : {0.0, 0.02}) {
      OpAttrs a;
      a.f[0] = 0.99;
      a.f[1] = 1e-8;
      a.f[2] = wd;
      const Vec got = run_three_steps(OpKind::RmspropStep, a, 1, 0.0, d);
      SCOPED_TRACE(::testing::Message() << d << " wd " << wd);
      expect_near_vec(got, rmsprop_expected(0.99, 1e-8, wd), 1e-5, "rmsprop");
    }
}

TEST(Optim, RmspropEpsInSqrtMatchesKerasRule) {
  for (Device d : devices()) {
    const OpAttrs a = ops::RmspropAttrs{0.9, 0.05, 0.02, false, true}.to_op_attrs();
    const Vec got = run_three_steps(OpKind::RmspropStep, a, 1, 0.0, d);
    SCOPED_TRACE(::testing::Message() << d);
    expect_near_vec(got, rmsprop_expected(0.9, 0.05, 0.02, true), 1e-5, "rmsprop eps in sqrt");
    EXPECT_GT(std::abs(got[1] - rmsprop_expected(0.9, 0.05, 0.02, false)[1]), 1e-3) << "the rules must differ";
  }
}

TEST(Optim, AdagradMatchesTorchRule) {
  for (Device d : devices())
    for (double wd : {0.0, 0.03})
      for (double decay : {0.0, 0.5})
        for (double init : {0.0, 0.1}) {
          OpAttrs a;
          a.f[0] = 1e-10;
          a.f[1] = wd;
          a.f[2] = decay;
          const Vec got = run_three_steps(OpKind::AdagradStep, a, 1, init, d);
          SCOPED_TRACE(::testing::Message() << d << " wd " << wd << " lr_decay " << decay << " init " << init);
          expect_near_vec(got, adagrad_expected(1e-10, wd, decay, init), 1e-5, "adagrad");
        }
}

TEST(Optim, WeightPenaltyAddsL1AndL2) {
  for (Device d : devices()) {
    const Vec p = {1.5, -2.0, 0.0, 0.25};
    const Vec g = {0.1, 0.2, -0.3, 0.0};
    Tensor pt = to_tensor(p, d), gt = to_tensor(g, d);
    OpAttrs a;
    a.f[0] = 0.01;
    a.f[1] = 0.5;
    run(OpKind::WeightPenalty, {Tensor(), pt, gt}, {}, a, d);
    const Vec want = {0.1 + 0.01 + 0.75, 0.2 - 0.01 - 1.0, -0.3, 0.0 + 0.01 + 0.125};
    expect_near_vec(as_doubles(gt), want, 1e-6, "penalty");
    expect_near_vec(as_doubles(pt), p, 0, "param untouched");
  }
}

TEST(Optim, ClipGradNormBelowAndAboveThreshold) {
  for (Device d : devices()) {
    std::vector<Vec> gs = {{3.0}, {0.0, 4.0, 0.0}, {-12.0, 0.0}};  // norm 13
    for (double max_norm : {20.0, 6.5}) {
      std::vector<Tensor> ts;
      for (auto& g : gs) ts.push_back(to_tensor(g, d));
      Tensor norm = Tensor::empty(Shape{1}, DType::f32, d);
      OpAttrs a;
      a.f[0] = max_norm;
      run(OpKind::ClipGradNorm, ts, {norm}, a, d);
      EXPECT_NEAR(norm.item(0), 13.0, 1e-5) << d;
      const double coef = std::min(1.0, max_norm / (13.0 + 1e-6));
      for (size_t k = 0; k < gs.size(); ++k) {
        Vec want = gs[k];
        for (auto& x : want) x *= coef;
        expect_near_vec(as_doubles(ts[k]), want, 1e-6, "clipped grad");
      }
    }
  }
}

TEST(Optim, BadArgumentsNameOpAndShapes) {
  Tensor p = Tensor::zeros(Shape{3, 4}), g = Tensor::zeros(Shape{4, 3}), m = Tensor::zeros(Shape{3, 4});
  std::string msg = error_message([&] { run(OpKind::AdamStep, {hyper(0.1, 1), p, g, m, m}, {}, {}, Device::cpu()); });
  EXPECT_NE(msg.find("AdamStep"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 4)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 3)"), std::string::npos) << msg;
  msg = error_message([&] { run(OpKind::AdamStep, {hyper(0.1, 1), p, p, m}, {}, {}, Device::cpu()); });
  EXPECT_NE(msg.find("groups of 4"), std::string::npos) << msg;
  msg = error_message([&] { run(OpKind::SgdStep, {hyper(0.1, 0), p, p}, {}, {}, Device::cpu()); });
  EXPECT_NE(msg.find("step t"), std::string::npos) << msg;
  if (cuda_available()) {
    const Device gpu = Device::cuda();
    Tensor pg = Tensor::zeros(Shape{3, 4}, DType::f32, gpu), gg = Tensor::zeros(Shape{4, 3}, DType::f32, gpu);
    msg = error_message([&] { run(OpKind::RmspropStep, {hyper(0.1, 1, gpu), pg, gg, pg}, {}, {}, gpu); });
    EXPECT_NE(msg.find("RmspropStep"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(4, 3)"), std::string::npos) << msg;
  }
}

// --- CUDA vs CPU on many tensors --------------------------------------------------------------------

namespace {

// Runs `op` for 3 steps on CPU and CUDA over `sizes` parameters (one multi-tensor call per step) and
// compares parameters and every state tensor. With a.i[1] set (the step advances t itself), hyper
// holds t - 1 before each call and must hold t after it, on both backends.
void compare_many(OpKind op, const OpAttrs& a, int n_state, const std::vector<int64_t>& sizes, double tol) {
  const bool advance = a.i[1] != 0;
  const Device gpu = Device::cuda();
  struct Side {
    std::vector<Tensor> p, s;
  } cpu, cuda;
  for (size_t k = 0; k < sizes.size(); ++k) {
    Tensor p = random_tensor(Shape{sizes[k]}, 100 + k);
    cpu.p.push_back(p.clone());
    cuda.p.push_back(p.to(gpu));
    for (int j = 0; j < n_state; ++j) {
      Tensor s = op == OpKind::SgdStep ? random_tensor(Shape{sizes[k]}, 900 + k) : Tensor::zeros(Shape{sizes[k]});
      cpu.s.push_back(s.clone());
      cuda.s.push_back(s.to(gpu));
    }
  }
  Tensor hg = hyper(0, 1, gpu), hc = hyper(0, 1);
  for (int t = 1; t <= 3; ++t) {
    std::vector<Tensor> in_c = {hc}, in_g = {hg};
    hc.copy_from(hyper(kLr[t - 1], advance ? t - 1 : t));
    hg.copy_from(hc);
    for (size_t k = 0; k < sizes.size(); ++k) {
      Tensor g = random_tensor(Shape{sizes[k]}, 5000 + 10 * k + t, -2, 2);
      in_c.push_back(cpu.p[k]);
      in_c.push_back(g);
      in_g.push_back(cuda.p[k]);
      in_g.push_back(g.to(gpu));
      for (int j = 0; j < n_state; ++j) {
        in_c.push_back(cpu.s[k * n_state + j]);
        in_g.push_back(cuda.s[k * n_state + j]);
      }
    }
    run(op, in_c, {}, a, Device::cpu());
    run(op, in_g, {}, a, gpu);
    EXPECT_EQ(hc.to_vector<float>()[1], static_cast<float>(t)) << op_name(op) << " CPU t after step " << t;
    EXPECT_EQ(hg.to(Device::cpu()).to_vector<float>()[1], static_cast<float>(t))
        << op_name(op) << " CUDA t after step " << t;
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    EXPECT_TRUE(all_close(cuda.p[k].to(Device::cpu()), cpu.p[k], tol, tol)) << op_name(op) << " param " << k;
    for (int j = 0; j < n_state; ++j)
      EXPECT_TRUE(all_close(cuda.s[k * n_state + j].to(Device::cpu()), cpu.s[k * n_state + j], tol, tol))
          << op_name(op) << " state " << j << " of param " << k;
  }
}

const std::vector<int64_t> kOddSizes = {1, 3, 1000, 4097, 5, 33, 2};

// More tensors than one launch's argument block holds, so the launcher must split the list.
std::vector<int64_t> many_small_sizes() {
  std::vector<int64_t> s;
  for (int k = 0; k < 300; ++k) s.push_back(1 + (k * 7) % 13);
  return s;
}

}  // namespace

TEST(OptimCuda, SgdEqualsCpu) {
  CUDL_REQUIRE_CUDA();
  OpAttrs a;
  a.f[0] = 0.9;
  a.f[1] = 0.1;
  a.f[2] = 1e-2;
  compare_many(OpKind::SgdStep, a, 1, kOddSizes, 2e-6);
  a.f[1] = 0;
  a.i[0] = 1;
  compare_many(OpKind::SgdStep, a, 1, kOddSizes, 2e-6);
  OpAttrs plain;
  compare_many(OpKind::SgdStep, plain, 0, many_small_sizes(), 2e-6);
}

TEST(OptimCuda, AdamEqualsCpu) {
  CUDL_REQUIRE_CUDA();
  OpAttrs a;
  a.f[0] = 0.9;
  a.f[1] = 0.999;
  a.f[2] = 1e-8;
  a.f[3] = 0.01;
  compare_many(OpKind::AdamStep, a, 2, kOddSizes, 2e-6);
  a.i[0] = 1;
  compare_many(OpKind::AdamStep, a, 2, kOddSizes, 2e-6);
  compare_many(OpKind::AdamStep, a, 2, many_small_sizes(), 2e-6);
  a.i[2] = 1;  // epsilon_hat (Keras's rule), with an eps large enough to matter
  a.f[2] = 0.1;
  compare_many(OpKind::AdamStep, a, 2, kOddSizes, 2e-6);
}

TEST(OptimCuda, RmspropAndAdagradEqualCpu) {
  CUDL_REQUIRE_CUDA();
  OpAttrs r;
  r.f[0] = 0.99;
  r.f[1] = 1e-8;
  r.f[2] = 0.01;
  compare_many(OpKind::RmspropStep, r, 1, kOddSizes, 2e-6);
  r.i[2] = 1;  // eps_in_sqrt (Keras's rule)
  compare_many(OpKind::RmspropStep, r, 1, kOddSizes, 2e-6);
  OpAttrs g;
  g.f[0] = 1e-10;
  g.f[1] = 0.01;
  g.f[2] = 0.1;
  compare_many(OpKind::AdagradStep, g, 1, kOddSizes, 2e-6);
  compare_many(OpKind::AdagradStep, g, 1, many_small_sizes(), 2e-6);
}

// i[1]: the step advances t itself (one launch instead of Increment + step). Every block must use
// the new t, and the last block of the last launch stores it, exactly once, also when the list takes
// several launches (many_small_sizes) and when several blocks run per launch (4097 elements).
TEST(OptimCuda, StepsThatAdvanceTEqualCpu) {
  CUDL_REQUIRE_CUDA();
  OpAttrs sgd;
  sgd.f[0] = 0.9;
  sgd.i[1] = 1;
  compare_many(OpKind::SgdStep, sgd, 1, kOddSizes, 2e-6);
  OpAttrs adam;
  adam.f[0] = 0.9;
  adam.f[1] = 0.999;
  adam.f[2] = 1e-8;
  adam.i[1] = 1;
  compare_many(OpKind::AdamStep, adam, 2, kOddSizes, 2e-6);
  compare_many(OpKind::AdamStep, adam, 2, many_small_sizes(), 2e-6);
  std::vector<int64_t> big(3, 3 * 4096 + 5);  // 9 chunks per tensor: many blocks in one launch
  compare_many(OpKind::AdamStep, adam, 2, big, 2e-6);
  OpAttrs rms;
  rms.f[0] = 0.99;
  rms.f[1] = 1e-8;
  rms.i[1] = 1;
  compare_many(OpKind::RmspropStep, rms, 1, kOddSizes, 2e-6);
  OpAttrs ada;
  ada.f[0] = 1e-10;
  ada.f[2] = 0.1;
  ada.i[1] = 1;
  compare_many(OpKind::AdagradStep, ada, 1, many_small_sizes(), 2e-6);
}

TEST(OptimCuda, StepThatAdvancesTOverOnlyEmptyTensorsStillAdvancesT) {
  // No element to update: the launcher still runs one (empty) grid whose last block stores t.
  CUDL_REQUIRE_CUDA();
  OpAttrs adam;
  adam.f[0] = 0.9;
  adam.f[1] = 0.999;
  adam.f[2] = 1e-8;
  adam.i[1] = 1;
  compare_many(OpKind::AdamStep, adam, 2, {0, 0}, 0);
  OpAttrs sgd;
  sgd.i[1] = 1;
  compare_many(OpKind::SgdStep, sgd, 0, {0}, 0);
}

TEST(OptimCuda, WeightPenaltyEqualsCpu) {
  CUDL_REQUIRE_CUDA();
  OpAttrs a;
  a.f[0] = 1e-3;
  a.f[1] = 1e-2;
  compare_many(OpKind::WeightPenalty, a, 0, kOddSizes, 1e-7);
}

TEST(OptimCuda, ClipGradNormEqualsCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (const auto& sizes : {kOddSizes, many_small_sizes()})
    for (double max_norm : {1e6, 1.0}) {
      std::vector<Tensor> c, g;
      for (size_t k = 0; k < sizes.size(); ++k) {
        c.push_back(random_tensor(Shape{sizes[k]}, 40 + k));
        g.push_back(c.back().to(gpu));
      }
      Tensor nc = Tensor::empty(Shape{1}), ng = Tensor::empty(Shape{1}, DType::f32, gpu);
      OpAttrs a;
      a.f[0] = max_norm;
      run(OpKind::ClipGradNorm, c, {nc}, a, Device::cpu());
      run(OpKind::ClipGradNorm, g, {ng}, a, gpu);
      EXPECT_TRUE(all_close(ng.to(Device::cpu()), nc, 0, 1e-5)) << "norm, max_norm " << max_norm;
      for (size_t k = 0; k < sizes.size(); ++k)
        ASSERT_TRUE(all_close(g[k].to(Device::cpu()), c[k], 1e-7, 1e-5)) << "grad " << k << ", max_norm " << max_norm;
      if (max_norm == 1.0) {  // the clipped gradients have norm max_norm
        double s = 0;
        for (auto& t : g)
          for (double x : as_doubles(t)) s += x * x;
        EXPECT_NEAR(std::sqrt(s), 1.0, 1e-5);
      }
    }
  // Deterministic: the same inputs give bitwise the same norm.
  std::vector<Tensor> g1, g2;
  for (int64_t k = 0; k < 5; ++k) {
    g1.push_back(random_tensor(Shape{4097 + k}, 7 + k, -1, 1, gpu));
    g2.push_back(random_tensor(Shape{4097 + k}, 7 + k, -1, 1, gpu));
  }
  Tensor n1 = Tensor::empty(Shape{1}, DType::f32, gpu), n2 = Tensor::empty(Shape{1}, DType::f32, gpu);
  OpAttrs a;
  a.f[0] = 1.0;
  run(OpKind::ClipGradNorm, g1, {n1}, a, gpu);
  run(OpKind::ClipGradNorm, g2, {n2}, a, gpu);
  EXPECT_EQ(n1.item(0), n2.item(0));
}

// A captured graph replays the step with the lr and t the hyper tensor holds at replay time.
TEST(OptimCuda, CapturedGraphSeesScheduleChanges) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  ExecContext& ctx = default_context(gpu);
  if (!ctx.supports_capture()) GTEST_SKIP() << "the context of " << gpu << " cannot capture";
  Tensor p = to_tensor(kP0, gpu), m = Tensor::zeros(Shape{int64_t(kP0.size())}, DType::f32, gpu);
  Tensor v = Tensor::zeros(Shape{int64_t(kP0.size())}, DType::f32, gpu);
  Tensor g = Tensor::empty(Shape{int64_t(kP0.size())}, DType::f32, gpu);
  Tensor h = hyper(0, 1, gpu);
  ctx.synchronize();
  OpAttrs a;
  a.f[0] = 0.9;
  a.f[1] = 0.99;
  a.f[2] = 1e-3;
  a.f[3] = 0.1;
  a.i[0] = 1;
  std::unique_ptr<CapturedGraph> graph = cudl::testing::capture(ctx, [&] { run(OpKind::AdamStep, {h, p, g, m, v}, {}, a, gpu); });
  for (int t = 1; t <= 3; ++t) {
    Vec gv(kP0.size());
    for (size_t i = 0; i < gv.size(); ++i) gv[i] = grad_at(t, i);
    g.copy_from(to_tensor(gv, Device::cpu()));
    h.copy_from(hyper(kLr[t - 1], t));
    graph->launch();
  }
  ctx.synchronize();
  expect_near_vec(as_doubles(p), adam_expected(0.9, 0.99, 1e-3, 0.1, true), 1e-5, "graph adamw");
}

// --- dynamic loss scaling (AmpUnscale) and the steps that skip on its flag --------------------------

namespace {

Tensor amp_state(double scale, double clean, double skipped, double overflowed, Device d = Device::cpu()) {
  return Tensor::from_vector<float>({float(scale), float(clean), float(skipped), float(overflowed)}, Shape{4}, d);
}

Tensor hyper3(double lr, double t, double flag, Device d = Device::cpu()) {
  return Tensor::from_vector<float>({float(lr), float(t), float(flag)}, Shape{3}, d);
}

std::vector<float> host(const Tensor& t) { return t.to(Device::cpu()).to_vector<float>(); }

/// One AmpUnscale call over `grads` with the given state and hyper.
void unscale(Tensor& state, Tensor& h, const std::vector<Tensor>& grads, const ops::AmpUnscaleAttrs& a, Device d) {
  std::vector<Tensor> in = {state, h};
  in.insert(in.end(), grads.begin(), grads.end());
  run(OpKind::AmpUnscale, in, {}, a.to_op_attrs(), d);
}

}  // namespace

TEST(AmpUnscale, FiniteGradientsAreUnscaledAndCountAsClean) {
  for (Device d : devices()) {
    SCOPED_TRACE(::testing::Message() << d);
    Tensor state = amp_state(1024, 5, 2, 1, d), h = hyper3(0.1, 7, 1, d);
    std::vector<Tensor> g = {to_tensor({2048, -1024, 0.5}, d), to_tensor({3, 0, -7e-3, 1e30, 65504}, d)};
    unscale(state, h, g, {}, d);
    expect_near_vec(as_doubles(g[0]), {2, -1, 0.5 / 1024}, 0, "grad 0");
    expect_near_vec(as_doubles(g[1]), {3.0 / 1024, 0, float(-7e-3) / 1024.0, float(1e30) / 1024.0, 65504.0 / 1024}, 1e-7,
                    "grad 1");
    EXPECT_EQ(host(state), (std::vector<float>{1024, 6, 2, 0})) << "clean + 1, the scale unchanged, last step clean";
    EXPECT_EQ(host(h), (std::vector<float>{0.1f, 7, 0})) << "skip flag cleared, lr and t untouched";
  }
}

TEST(AmpUnscale, InfOrNanAnywhereBacksOffAndSetsTheSkipFlag) {
  for (Device d : devices())
    for (float bad : {INFINITY, -INFINITY, NAN}) {
      SCOPED_TRACE(::testing::Message() << d << " " << bad);
      Tensor state = amp_state(65536, 17, 2, 0, d), h = hyper3(0.1, 7, 0, d);
      std::vector<Tensor> g = {to_tensor({4, 8}, d), to_tensor({1, 2, bad, 3}, d), to_tensor({-16}, d)};
      unscale(state, h, g, {}, d);
      EXPECT_EQ(host(state), (std::vector<float>{32768, 0, 3, 1})) << "scale * 0.5, clean reset, one more skip";
      EXPECT_EQ(host(h), (std::vector<float>{0.1f, 7, 1}));
      // Every gradient is still multiplied by 1 / the old scale (torch unscales before it checks).
      expect_near_vec(as_doubles(g[0]), {4.0 / 65536, 8.0 / 65536}, 0, "grad 0");
      expect_near_vec(as_doubles(g[2]), {-16.0 / 65536}, 0, "grad 2");
      const std::vector<float> g1 = host(g[1]);
      EXPECT_EQ(g1[0], 1.f / 65536);
      EXPECT_EQ(std::isnan(g1[2]), std::isnan(bad));
      if (!std::isnan(bad)) EXPECT_EQ(g1[2], bad);
    }
}

TEST(AmpUnscale, GrowsAfterIntervalCleanStepsAndNeverToInfinity) {
  for (Device d : devices()) {
    SCOPED_TRACE(::testing::Message() << d);
    const ops::AmpUnscaleAttrs a{2.0, 0.5, 3};
    Tensor state = amp_state(8, 0, 0, 0, d), h = hyper3(0.1, 1, 0, d);
    Tensor g = to_tensor({1, 2}, d);
    const float want_scale[] = {8, 8, 16, 16, 16, 32, 16, 16};
    const float want_clean[] = {1, 2, 0, 1, 2, 0, 0, 1};
    for (int step = 0; step < 8; ++step) {
      const bool overflow = step == 6;
      g.copy_from(to_tensor({overflow ? INFINITY : 1.0, 2}, Device::cpu()));
      unscale(state, h, {g}, a, d);
      const std::vector<float> s = host(state);
      EXPECT_EQ(s[0], want_scale[step]) << "step " << step;
      EXPECT_EQ(s[1], want_clean[step]) << "step " << step;
      EXPECT_EQ(s[2], overflow || step > 6 ? 1.f : 0.f) << "step " << step;
      EXPECT_EQ(s[3], overflow ? 1.f : 0.f) << "step " << step;
      EXPECT_EQ(host(h)[2], overflow ? 1.f : 0.f) << "step " << step;
    }
    // A grown scale that would overflow f32 is not taken (torch): the scale stays, clean restarts.
    Tensor top = amp_state(std::ldexp(1.0, 127), 2, 0, 0, d);
    unscale(top, h, {to_tensor({1}, d)}, a, d);
    EXPECT_EQ(host(top), (std::vector<float>{std::ldexp(1.f, 127), 0, 0, 0}));
    // The torch defaults: growth 2, backoff 0.5, interval 2000.
    const ops::AmpUnscaleAttrs def = ops::AmpUnscaleAttrs::from(ops::AmpUnscaleAttrs{}.to_op_attrs());
    EXPECT_EQ(def.growth, 2.0);
    EXPECT_EQ(def.backoff, 0.5);
    EXPECT_EQ(def.interval, 2000);
    Tensor at_interval = amp_state(4, 1999, 0, 0, d);
    unscale(at_interval, h, {to_tensor({1}, d)}, def, d);
    EXPECT_EQ(host(at_interval), (std::vector<float>{8, 0, 0, 0}));
  }
}

TEST(AmpUnscale, BadArgumentsNameTheOpAndTheSlot) {
  Tensor g = to_tensor({1, 2}, Device::cpu());
  Tensor s3 = Tensor::zeros(Shape{3}), s4 = amp_state(1, 0, 0, 0), h2 = hyper(0.1, 1), h3 = hyper3(0.1, 1, 0);
  std::string msg = error_message(
      [&] { run(OpKind::AmpUnscale, {s3, h3, g}, {}, ops::AmpUnscaleAttrs{}.to_op_attrs(), Device::cpu()); });
  EXPECT_NE(msg.find("AmpUnscale"), std::string::npos) << msg;
  EXPECT_NE(msg.find("state (input 0)"), std::string::npos) << msg;
  msg = error_message(
      [&] { run(OpKind::AmpUnscale, {s4, h2, g}, {}, ops::AmpUnscaleAttrs{}.to_op_attrs(), Device::cpu()); });
  EXPECT_NE(msg.find("hyper (input 1)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("skip flag"), std::string::npos) << msg;
  msg = error_message(
      [&] { run(OpKind::AmpUnscale, {s4, h3, g}, {}, ops::AmpUnscaleAttrs{2, 1.5, 10}.to_op_attrs(), Device::cpu()); });
  EXPECT_NE(msg.find("backoff factor f[1]=1.5"), std::string::npos) << msg;
  msg = error_message(
      [&] { run(OpKind::AmpUnscale, {s4, h3, g}, {}, ops::AmpUnscaleAttrs{2, 0.5, 0}.to_op_attrs(), Device::cpu()); });
  EXPECT_NE(msg.find("growth interval i[0]=0"), std::string::npos) << msg;
  // A step that skips on the flag needs hyper[2].
  ops::SgdAttrs sgd;
  sgd.skip_on_flag = true;
  msg = error_message([&] { run(OpKind::SgdStep, {h2, g, g.clone()}, {}, sgd.to_op_attrs(), Device::cpu()); });
  EXPECT_NE(msg.find("skip_on_flag i[3]"), std::string::npos) << msg;
}

namespace {

/// Every step op with skip_on_flag and advance_t, with its state count.
struct SkipCase {
  OpKind op;
  OpAttrs attrs;
  int n_state;
};
std::vector<SkipCase> skip_cases() {
  ops::SgdAttrs sgd{0.9, 0, 0.01, false, true};
  ops::AdamAttrs adam;
  adam.advance_t = true;
  ops::RmspropAttrs rms;
  rms.advance_t = true;
  ops::AdagradAttrs ada;
  ada.advance_t = true;
  sgd.skip_on_flag = adam.skip_on_flag = rms.skip_on_flag = ada.skip_on_flag = true;
  return {{OpKind::SgdStep, sgd.to_op_attrs(), 1},
          {OpKind::AdamStep, adam.to_op_attrs(), 2},
          {OpKind::RmspropStep, rms.to_op_attrs(), 1},
          {OpKind::AdagradStep, ada.to_op_attrs(), 1}};
}

}  // namespace

// skip_on_flag: hyper[2] != 0 leaves parameters, state and t as they were; hyper[2] == 0 is exactly
// the step without the attribute (bitwise), on both backends; one flag read on the device decides.
TEST(Optim, StepsSkipOnTheFlagAndOtherwiseStepAsUsual) {
  for (Device d : devices())
    for (const SkipCase& c : skip_cases()) {
      SCOPED_TRACE(::testing::Message() << d << " " << op_name(c.op));
      OpAttrs plain = c.attrs;
      plain.i[ops::kSkipOnFlagSlot] = 0;
      Tensor p = to_tensor(kP0, d), ref = to_tensor(kP0, d);
      std::vector<Tensor> s, s_ref;
      for (int k = 0; k < c.n_state; ++k) {
        s.push_back(Tensor::full(Shape{int64_t(kP0.size())}, 0.25, DType::f32, d));
        s_ref.push_back(s.back().clone());
      }
      Tensor h = hyper3(0.1, 0, 0, d), h_ref = hyper(0.1, 0, d);
      for (int step = 0; step < 4; ++step) {
        const bool skip = step == 1 || step == 2;
        Vec gv(kP0.size());
        for (size_t i = 0; i < gv.size(); ++i) gv[i] = grad_at(1 + step % 3, i);
        Tensor g = to_tensor(gv, d);
        h.copy_from(hyper3(0.1, host(h)[1], skip ? 1 : 0));
        const std::vector<float> p_before = host(p);
        std::vector<Tensor> in = {h, p, g};
        in.insert(in.end(), s.begin(), s.end());
        run(c.op, in, {}, c.attrs, d);
        if (skip) {
          EXPECT_EQ(host(p), p_before) << "step " << step << " must leave the parameter";
          for (int k = 0; k < c.n_state; ++k) EXPECT_EQ(host(s[k]), host(s_ref[k])) << "state " << k;
          EXPECT_EQ(host(h)[1], host(h_ref)[1]) << "t does not advance";
          continue;
        }
        std::vector<Tensor> in_ref = {h_ref, ref, g};
        in_ref.insert(in_ref.end(), s_ref.begin(), s_ref.end());
        run(c.op, in_ref, {}, plain, d);
        EXPECT_EQ(host(p), host(ref)) << "step " << step;
        EXPECT_NE(host(p), p_before) << "step " << step << " must move the parameter";
        for (int k = 0; k < c.n_state; ++k) EXPECT_EQ(host(s[k]), host(s_ref[k])) << "state " << k;
        EXPECT_EQ(host(h)[1], host(h_ref)[1]);
      }
      EXPECT_EQ(host(h)[1], 2.f) << "two steps taken";
    }
}

// The same calls on CUDA and the CPU give bitwise the same gradients, state and flag: many odd-sized
// tensors, a list that needs several launches (the flag of an early launch must reach the last),
// tensors of several chunks (many blocks), an overflow in the middle of a later block.
TEST(AmpUnscaleCuda, EqualsCpuAndIsOneLaunch) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  const std::vector<int64_t> big(3, 3 * 4096 + 5);
  struct Bad {
    size_t tensor;
    int64_t at;
    float value;
  };
  for (const auto& sizes : {kOddSizes, many_small_sizes(), big, std::vector<int64_t>{0, 0}})
    for (const std::vector<Bad>& bad :
         {std::vector<Bad>{}, {{0, 0, INFINITY}}, {{sizes.size() - 1, sizes.back() - 1, NAN}},
          {{sizes.size() / 2, sizes[sizes.size() / 2] / 2, -INFINITY}}}) {
      if (!bad.empty() && sizes[bad[0].tensor] == 0) continue;
      SCOPED_TRACE(::testing::Message() << sizes.size() << " tensors, " << bad.size() << " bad value(s)");
      std::vector<Tensor> c, g;
      for (size_t k = 0; k < sizes.size(); ++k) {
        Tensor t = random_tensor(Shape{sizes[k]}, 70 + k, -3e4, 3e4);
        if (!bad.empty() && bad[0].tensor == k) {
          std::vector<float> v = t.to_vector<float>();
          v[size_t(bad[0].at)] = bad[0].value;
          t = Tensor::from_vector(v, t.shape());
        }
        c.push_back(t);
        g.push_back(t.to(gpu));
      }
      const ops::AmpUnscaleAttrs a{2.0, 0.5, 2};
      Tensor sc = amp_state(3 * 65536.0, 1, 4, 0), sg = sc.to(gpu);
      Tensor hc = hyper3(0.01, 9, 0), hg = hc.to(gpu);
      for (int step = 0; step < 2; ++step) {  // the second call sees the first one's state
        unscale(sc, hc, c, a, Device::cpu());
#if defined(CUDL_EMULATED)
        default_context(gpu).synchronize();
        cudl_emu::reset_counters();
#endif
        unscale(sg, hg, g, a, gpu);
#if defined(CUDL_EMULATED)
        default_context(gpu).synchronize();
        const size_t launches_needed = sizes.size() > 200 ? 2 : 1;
        EXPECT_EQ(cudl_emu::counters().kernel_launches, launches_needed) << "step " << step;
#endif
        EXPECT_EQ(host(sg), host(sc)) << "step " << step;
        EXPECT_EQ(host(hg), host(hc)) << "step " << step;
        for (size_t k = 0; k < sizes.size(); ++k)
          ASSERT_TRUE(all_close(g[k].to(Device::cpu()), c[k], 0, 0)) << "grad " << k << " step " << step;
      }
      const std::vector<float> s = host(sc);
      if (bad.empty())
        EXPECT_EQ(s, (std::vector<float>{6 * 65536.0, 1, 4, 0})) << "two clean steps at interval 2: grown once";
      else
        EXPECT_EQ(s, (std::vector<float>{0.75 * 65536.0, 0, 6, 1})) << "two overflows: halved twice";
    }
}

// The skip flag is read on the device at replay: a captured AmpUnscale + step graph skips or steps
// as the gradients of each replay say, without the host looking at anything.
TEST(AmpUnscaleCuda, CapturedUnscaleAndStepFollowTheDeviceFlag) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  ExecContext& ctx = default_context(gpu);
  if (!ctx.supports_capture()) GTEST_SKIP() << "the context of " << gpu << " cannot capture";
  const int64_t n = 4096 * 2 + 3;
  Tensor p = random_tensor(Shape{n}, 3, -1, 1, gpu), m = Tensor::zeros(Shape{n}, DType::f32, gpu);
  Tensor v = Tensor::zeros(Shape{n}, DType::f32, gpu), g = Tensor::zeros(Shape{n}, DType::f32, gpu);
  Tensor state = amp_state(1024, 0, 0, 0, gpu), h = hyper3(0.01, 0, 0, gpu);
  Tensor pc = p.to(Device::cpu()), mc = Tensor::zeros(Shape{n}), vc = Tensor::zeros(Shape{n});
  Tensor sc = amp_state(1024, 0, 0, 0), hc = hyper3(0.01, 0, 0);
  ops::AdamAttrs adam;
  adam.advance_t = adam.skip_on_flag = true;
  ctx.synchronize();
  std::unique_ptr<CapturedGraph> graph = cudl::testing::capture(ctx, [&] {
    unscale(state, h, {g}, {}, gpu);
    run(OpKind::AdamStep, {h, p, g, m, v}, {}, adam.to_op_attrs(), gpu);
  });
  for (int step = 0; step < 4; ++step) {
    Tensor gs = random_tensor(Shape{n}, 40 + step, -500, 500);
    if (step == 1) {
      std::vector<float> x = gs.to_vector<float>();
      x[4096 + 7] = INFINITY;
      gs = Tensor::from_vector(x, gs.shape());
    }
    g.copy_from(gs);
    graph->launch();
    unscale(sc, hc, {gs}, {}, Device::cpu());
    run(OpKind::AdamStep, {hc, pc, gs, mc, vc}, {}, adam.to_op_attrs(), Device::cpu());
  }
  ctx.synchronize();
  EXPECT_EQ(host(state), (std::vector<float>{512, 2, 1, 0}));
  EXPECT_EQ(host(h)[1], 3.f) << "three steps taken, one skipped";
  EXPECT_EQ(host(state), host(sc));
  EXPECT_TRUE(all_close(p.to(Device::cpu()), pc, 2e-6, 2e-6));
  EXPECT_TRUE(all_close(v.to(Device::cpu()), vc, 2e-6, 2e-6));
}

namespace {

/// The 16-bit copy of an f32 tensor, bit by bit: round to nearest even of every element.
std::vector<uint16_t> rounded_bits(const Tensor& master, DType dtype) { return bits_16(to_16bit(master, dtype)); }

/// Steps with weight_copies: each group (param, grad, state..., copy). `copy_type` of each group:
/// bf16, f16, or f32 for "this parameter has no copy" (an undefined slot). Runs `steps` steps with
/// the skip flag of step s in skip[s], the same steps without copies on a reference, and checks
/// after each: the parameters and state are bitwise the reference's (the copies change no math), and
/// every copy is round(master) (so, after a skipped step, the unchanged master's).
void check_weight_copies(const SkipCase& c, Device d, const std::vector<int64_t>& sizes,
                         const std::vector<DType>& copy_type, const std::vector<bool>& skip) {
  OpAttrs with = c.attrs, plain = c.attrs;
  with.i[ops::kWeightCopiesSlot] = 1;
  plain.i[ops::kWeightCopiesSlot] = 0;
  struct Group {
    Tensor p, p_ref, copy;
    std::vector<Tensor> s, s_ref;
  };
  std::vector<Group> groups;
  for (size_t k = 0; k < sizes.size(); ++k) {
    Group gr;
    // Values with 23 mantissa bits: every one rounds in 16 bits (ties and carries included).
    gr.p = random_tensor(Shape{sizes[k]}, 300 + k, -3, 3).to(d);
    gr.p_ref = gr.p.clone();
    if (copy_type[k] != DType::f32) {
      // Garbage to start with (the step must overwrite every element), like a copy not yet written.
      gr.copy = Tensor::full(Shape{sizes[k]}, 7.0, copy_type[k], Device::cpu()).to(d);
    }
    for (int j = 0; j < c.n_state; ++j) {
      gr.s.push_back(Tensor::full(Shape{sizes[k]}, 0.25, DType::f32, d));
      gr.s_ref.push_back(gr.s.back().clone());
    }
    groups.push_back(std::move(gr));
  }
  Tensor h = hyper3(0.05, 0, 0, d), h_ref = hyper3(0.05, 0, 0, d);
  for (size_t step = 0; step < skip.size(); ++step) {
    h.copy_from(hyper3(0.05, host(h)[1], skip[step] ? 1 : 0));
    h_ref.copy_from(h);
    std::vector<Tensor> in = {h}, in_ref = {h_ref};
    for (size_t k = 0; k < groups.size(); ++k) {
      Group& gr = groups[k];
      const Tensor g = random_tensor(Shape{sizes[k]}, 7000 + 31 * k + step, -2, 2).to(d);
      in.insert(in.end(), {gr.p, g});
      in.insert(in.end(), gr.s.begin(), gr.s.end());
      in.push_back(gr.copy);  // undefined: no copy
      in_ref.insert(in_ref.end(), {gr.p_ref, g});
      in_ref.insert(in_ref.end(), gr.s_ref.begin(), gr.s_ref.end());
    }
    const std::vector<std::vector<uint16_t>> before = [&] {
      std::vector<std::vector<uint16_t>> b;
      for (const Group& gr : groups) b.push_back(gr.copy.defined() ? bits_16(gr.copy) : std::vector<uint16_t>{});
      return b;
    }();
    run(c.op, in, {}, with, d);
    run(c.op, in_ref, {}, plain, d);
    for (size_t k = 0; k < groups.size(); ++k) {
      const Group& gr = groups[k];
      SCOPED_TRACE(::testing::Message() << "step " << step << (skip[step] ? " (skipped)" : "") << ", group " << k
                                        << " of " << sizes[k] << " elements");
      ASSERT_EQ(host(gr.p), host(gr.p_ref)) << "the copies must not change the update";
      for (int j = 0; j < c.n_state; ++j) ASSERT_EQ(host(gr.s[j]), host(gr.s_ref[j])) << "state " << j;
      if (!gr.copy.defined()) continue;
      if (skip[step] && step > 0) EXPECT_EQ(bits_16(gr.copy), before[k]) << "a skipped step writes no copy";
      if (skip[step] && step == 0) continue;  // never written yet: still the garbage it started with
      ASSERT_EQ(bits_16(gr.copy), rounded_bits(gr.p, copy_type[k])) << "copy != round(master)";
    }
  }
}

}  // namespace

// weight_copies: every step stores round(updated parameter) into the group's bf16 or f16 copy in the
// pass that updates it; parameters and state stay bitwise those of the step without copies; groups
// without a copy, skipped steps (skip_on_flag) and a list that needs several launches (many_small_sizes)
// included; on the CPU reference and on the emulated CUDA backend.
TEST(OptimWeightCopies, StepsWriteRoundedMastersAndSkipLeavesThem) {
  std::vector<int64_t> sizes = kOddSizes;
  std::vector<DType> types;
  for (size_t k = 0; k < sizes.size(); ++k) types.push_back(k == 2 ? DType::f32 : k % 2 ? DType::f16 : DType::bf16);
  std::vector<int64_t> many = many_small_sizes();
  std::vector<DType> many_types(many.size(), DType::bf16);
  for (size_t k = 0; k < many.size(); k += 3) many_types[k] = DType::f16;
  for (Device d : devices())
    for (const SkipCase& c : skip_cases()) {
      SCOPED_TRACE(::testing::Message() << d << " " << op_name(c.op));
      check_weight_copies(c, d, sizes, types, {false, false, true, false});
      // Adam's list (depth 4 + copies) holds the fewest tensors per launch: 300 take 5 launches.
      if (c.op == OpKind::AdamStep) check_weight_copies(c, d, many, many_types, {true, false});
    }
}

// The CUDA copies are the CPU's: same calls on both backends, the copies compared bit by bit (both
// are round(master), and the masters agree to the tolerance of compare_many; a copy may then differ
// by one 16-bit ulp where a master sits on a rounding boundary, never more).
TEST(OptimWeightCopiesCuda, CopiesEqualCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (const SkipCase& c : skip_cases())
    for (DType t : k16BitTypes) {
      SCOPED_TRACE(::testing::Message() << op_name(c.op) << " " << dtype_name(t));
      OpAttrs a = c.attrs;
      a.i[ops::kWeightCopiesSlot] = 1;
      std::vector<Tensor> pc, pg, cc, cg, sc, sg;
      for (size_t k = 0; k < kOddSizes.size(); ++k) {
        const Tensor p = random_tensor(Shape{kOddSizes[k]}, 40 + k, -3, 3);
        pc.push_back(p.clone());
        pg.push_back(p.to(gpu));
        cc.push_back(Tensor::zeros(Shape{kOddSizes[k]}, t));
        cg.push_back(Tensor::zeros(Shape{kOddSizes[k]}, t, gpu));
        for (int j = 0; j < c.n_state; ++j) {
          sc.push_back(Tensor::zeros(Shape{kOddSizes[k]}));
          sg.push_back(Tensor::zeros(Shape{kOddSizes[k]}, DType::f32, gpu));
        }
      }
      Tensor hc = hyper3(0.05, 0, 0), hg = hyper3(0.05, 0, 0, gpu);
      for (int step = 0; step < 3; ++step) {
        std::vector<Tensor> in_c = {hc}, in_g = {hg};
        for (size_t k = 0; k < kOddSizes.size(); ++k) {
          const Tensor g = random_tensor(Shape{kOddSizes[k]}, 900 + 7 * k + step, -2, 2);
          in_c.insert(in_c.end(), {pc[k], g});
          in_g.insert(in_g.end(), {pg[k], g.to(gpu)});
          for (int j = 0; j < c.n_state; ++j) {
            in_c.push_back(sc[k * c.n_state + j]);
            in_g.push_back(sg[k * c.n_state + j]);
          }
          in_c.push_back(cc[k]);
          in_g.push_back(cg[k]);
        }
        run(c.op, in_c, {}, a, Device::cpu());
        run(c.op, in_g, {}, a, gpu);
      }
      for (size_t k = 0; k < kOddSizes.size(); ++k) {
        EXPECT_EQ(bits_16(cg[k]), rounded_bits(pg[k], t)) << "CUDA copy " << k << " != round(CUDA master)";
        EXPECT_TRUE(all_close(pg[k].to(Device::cpu()), pc[k], 2e-6, 2e-6)) << "master " << k;
        const std::vector<uint16_t> a16 = bits_16(cg[k]), b16 = bits_16(cc[k]);
        int worst = 0;
        for (size_t i = 0; i < a16.size(); ++i) worst = std::max(worst, ulp_distance_16(a16[i], b16[i]));
        EXPECT_LE(worst, 1) << "copy " << k;
      }
    }
}

TEST(OptimWeightCopies, BadCopiesNameTheSlotAndShapes) {
  ops::SgdAttrs sgd;
  sgd.weight_copies = true;
  Tensor h = hyper(0.1, 1), p = Tensor::zeros(Shape{4}), g = Tensor::zeros(Shape{4});
  std::string msg = error_message([&] {
    run(OpKind::SgdStep, {h, p, g, Tensor::zeros(Shape{4}, DType::f32)}, {}, sgd.to_op_attrs(), Device::cpu());
  });
  EXPECT_NE(msg.find("input 3 (group 0's 16-bit weight copy) must be bf16 or f16, got f32"), std::string::npos) << msg;
  msg = error_message([&] {
    run(OpKind::SgdStep, {h, p, g, Tensor::zeros(Shape{5}, DType::bf16)}, {}, sgd.to_op_attrs(), Device::cpu());
  });
  EXPECT_NE(msg.find("group 0: the 16-bit weight copy (input 3) has shape (5,) but the parameter has shape (4,)"),
            std::string::npos)
      << msg;
  msg = error_message([&] { run(OpKind::SgdStep, {h, p, g}, {}, sgd.to_op_attrs(), Device::cpu()); });
  EXPECT_NE(msg.find("expects groups of 3 tensors after 1 leading input(s), got 3 inputs (weight_copies i[4] is set)"),
            std::string::npos)
      << msg;
}
