// tests/test_op_loss.cpp — loss ops: CPU reference vs finite differences and independent
// formulations, CUDA vs CPU (values, gradients, dloss scaling, accuracy count, metric
// accumulators), NaN, errors.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "testing.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

const Device kCpu = Device::cpu();

struct LossOut {
  Tensor loss, dpred, correct, loss_acc, correct_acc;
};

struct LossArgs {
  Reduction reduction = Reduction::Mean;
  double param = 0;  // Huber delta or label smoothing
  const Tensor* dloss = nullptr;
  bool dpred = true;
  bool correct = false;
  bool loss = true;
  int64_t misalign = 0;  // run on views shifted by this many floats (exercises unaligned paths)
  bool acc = false;      // metric accumulators: loss_acc (and correct_acc for CE), starting at 2.5 / 7
  double acc_scale = 0;  // f[1]
  bool ignore = false;   // CrossEntropyLoss: i[1] = 1, ignore index i[2] = ignore_index
  int32_t ignore_index = -100;
};

constexpr float kLossAcc0 = 2.5f, kCorrectAcc0 = 7.f;

/// Runs a loss op on `device` (inputs copied there), returns host copies of the outputs.
LossOut run_loss(OpKind op, const Tensor& pred, const Tensor& target, Device device, const LossArgs& a = {}) {
  auto place = [&](const Tensor& t) { return t.to(device); };
  const int64_t off = a.misalign;
  auto shifted = [&](const Tensor& t) {  // a copy of t starting `off` elements into a larger buffer
    if (off == 0) return place(t);
    Tensor big = Tensor::zeros(Shape{t.numel() + off}, t.dtype(), kCpu);
    std::memcpy(static_cast<char*>(big.data()) + off * dtype_size(t.dtype()), t.data(), t.nbytes());
    return place(big);
  };
  auto view = [&](const Tensor& storage, const Shape& shape, DType dtype) {
    TensorView v = tv(storage);
    v.data = static_cast<char*>(v.data) + off * dtype_size(dtype);
    v.shape = shape;
    return v;
  };
  Tensor p = shifted(pred), t = shifted(target);
  Tensor dl = a.dloss ? place(*a.dloss) : Tensor();
  Tensor loss = a.loss ? Tensor::full(Shape{1}, -7.0, DType::f32, device) : Tensor();
  Tensor dpred = a.dpred ? Tensor::full(Shape{pred.numel() + off}, -7.0, pred.dtype(), device) : Tensor();
  Tensor correct = a.correct ? Tensor::full(Shape{1}, -7.0, DType::i32, device) : Tensor();
  OpAttrs attrs;
  attrs.i[0] = static_cast<int64_t>(a.reduction);
  attrs.f[0] = a.param;
  const bool ce = op == OpKind::CrossEntropyLoss;
  Tensor loss_acc = a.acc ? Tensor::full(Shape{1}, kLossAcc0, DType::f32, device) : Tensor();
  Tensor correct_acc = a.acc && ce ? Tensor::full(Shape{1}, kCorrectAcc0, DType::f32, device) : Tensor();
  attrs.f[1] = a.acc_scale;
  attrs.i[1] = a.ignore ? 1 : 0;
  attrs.i[2] = a.ignore_index;
  const TensorView dp = a.dpred ? view(dpred, pred.shape(), pred.dtype()) : TensorView{};
  const TensorView pv = view(p, pred.shape(), pred.dtype()), tgt = view(t, target.shape(), target.dtype());
  if (a.acc) {
    run_op(op, {pv, tgt, tv(dl)}, {tv(loss), dp, tv(correct), tv(loss_acc), tv(correct_acc)}, attrs, nullptr,
           "test/loss");
  } else if (a.correct) {
    run_op(op, {pv, tgt, tv(dl)}, {tv(loss), dp, tv(correct)}, attrs, nullptr, "test/loss");
  } else {
    run_op(op, {pv, tgt, tv(dl)}, {tv(loss), dp}, attrs, nullptr, "test/loss");
  }
  LossOut r;
  if (a.loss) r.loss = loss.to(kCpu);
  if (a.dpred) {
    Tensor h = dpred.to(kCpu);
    r.dpred = Tensor::empty(pred.shape(), pred.dtype());
    std::memcpy(r.dpred.data(), static_cast<const char*>(h.data()) + off * dtype_size(pred.dtype()), pred.nbytes());
  }
  if (a.correct) r.correct = correct.to(kCpu);
  if (a.acc) r.loss_acc = loss_acc.to(kCpu);
  if (a.acc && ce) r.correct_acc = correct_acc.to(kCpu);
  return r;
}

double loss_value(OpKind op, const Tensor& pred, const Tensor& target, const LossArgs& a) {
  LossArgs b = a;
  b.dpred = false;
  b.correct = false;
  return run_loss(op, pred, target, kCpu, b).loss.item();
}

/// Checks the CPU dpred against central differences of the CPU loss.
void expect_gradient_matches_fd(OpKind op, const Tensor& pred, const Tensor& target, const LossArgs& a,
                                double atol = 2e-3, double rtol = 2e-2) {
  LossOut r = run_loss(op, pred, target, kCpu, a);
  auto num = numerical_gradient([&](const Tensor& x) { return loss_value(op, x, target, a); }, pred.clone());
  if (a.dloss)
    for (auto& g : num) g *= a.dloss->item();
  EXPECT_TRUE(gradient_close(r.dpred, num, atol, rtol)) << op_name(op);
}

/// Elementwise-loss inputs: pred and target with |pred - target| >= 0.05 (away from the L1 kink).
std::pair<Tensor, Tensor> elementwise_inputs(OpKind op, int64_t n, uint64_t seed) {
  if (op == OpKind::BceLoss)
    return {random_tensor(Shape{n}, seed, 0.05f, 0.95f), random_tensor(Shape{n}, seed + 1, 0.f, 1.f)};
  Tensor p = random_tensor(Shape{n}, seed, -2.f, 2.f);
  Tensor d = random_tensor(Shape{n}, seed + 1, 0.05f, 1.5f);
  Tensor s = random_tensor(Shape{n}, seed + 2, -1.f, 1.f);
  std::vector<float> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    t[i] = p.data_as<float>()[i] + (s.data_as<float>()[i] < 0 ? -1.f : 1.f) * d.data_as<float>()[i];
  if (op == OpKind::BceWithLogitsLoss)
    for (int64_t i = 0; i < n; ++i) t[i] = (d.data_as<float>()[i] - 0.05f) / 1.45f;  // targets in [0, 1]
  return {p, Tensor::from_vector(t, Shape{n})};
}

const OpKind kElementwise[] = {OpKind::MseLoss, OpKind::L1Loss, OpKind::HuberLoss, OpKind::BceLoss,
                               OpKind::BceWithLogitsLoss};

double param_of(OpKind op) { return op == OpKind::HuberLoss ? 0.7 : 0.0; }

/// Probability rows (positive, summing to 1) of shape (n, c).
Tensor probability_rows(int64_t n, int64_t c, uint64_t seed) {
  Tensor t = random_tensor(Shape{n, c}, seed, 0.01f, 1.f);
  float* p = t.data_as<float>();
  for (int64_t r = 0; r < n; ++r) {
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += p[r * c + j];
    for (int64_t j = 0; j < c; ++j) p[r * c + j] = static_cast<float>(p[r * c + j] / s);
  }
  return t;
}

/// Independent log-softmax in double (as f32), for cross-checking CE against NLL.
Tensor log_softmax_rows(const Tensor& x) {
  const int64_t n = x.shape()[0], c = x.shape()[1];
  std::vector<float> out(static_cast<size_t>(n * c));
  const float* p = x.data_as<float>();
  for (int64_t r = 0; r < n; ++r) {
    double m = p[r * c];
    for (int64_t j = 0; j < c; ++j) m = std::max(m, static_cast<double>(p[r * c + j]));
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(p[r * c + j] - m);
    for (int64_t j = 0; j < c; ++j) out[r * c + j] = static_cast<float>(p[r * c + j] - m - std::log(s));
  }
  return Tensor::from_vector(out, x.shape());
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

const Reduction kReductions[] = {Reduction::Mean, Reduction::Sum};

}  // namespace

// ---------------------------------------------------------------- CPU reference -----------------

TEST(LossCpu, ElementwiseGradientsMatchFiniteDifferences) {
  for (OpKind op : kElementwise)
    for (Reduction red : kReductions) {
      SCOPED_TRACE(std::string(op_name(op)) + (red == Reduction::Mean ? " mean" : " sum"));
      auto [p, t] = elementwise_inputs(op, 23, 11);
      LossArgs a;
      a.reduction = red;
      a.param = param_of(op);
      expect_gradient_matches_fd(op, p, t, a);
    }
}

TEST(LossCpu, ElementwiseValuesMatchDefinitions) {
  // A few hand-picked points against the textbook formulas (PyTorch's definitions).
  Tensor p = Tensor::from_vector<float>({0.5f, -1.0f, 3.0f}, Shape{3});
  Tensor t = Tensor::from_vector<float>({0.0f, 1.0f, 1.0f}, Shape{3});
  LossArgs sum;
  sum.reduction = Reduction::Sum;
  EXPECT_NEAR(loss_value(OpKind::MseLoss, p, t, sum), 0.25 + 4 + 4, 1e-5);
  EXPECT_NEAR(loss_value(OpKind::MseLoss, p, t, {}), (0.25 + 4 + 4) / 3, 1e-5);
  EXPECT_NEAR(loss_value(OpKind::L1Loss, p, t, sum), 0.5 + 2 + 2, 1e-5);
  LossArgs huber = sum;
  huber.param = 1.0;
  EXPECT_NEAR(loss_value(OpKind::HuberLoss, p, t, huber), 0.125 + 1.5 + 1.5, 1e-5);
  // log(1 + e^x) - x t for (0.5, 0), (-1, 1), (3, 1).
  const double bcel = std::log1p(std::exp(0.5)) + std::log1p(std::exp(1.0)) + std::log1p(std::exp(-3.0));
  EXPECT_NEAR(loss_value(OpKind::BceWithLogitsLoss, p, t, sum), bcel, 1e-5);
  Tensor prob = Tensor::from_vector<float>({0.25f, 0.0f, 1.0f}, Shape{3});
  Tensor pt = Tensor::from_vector<float>({1.0f, 1.0f, 0.0f}, Shape{3});
  // -log(0.25) + clamp(-log 0) = 100 + clamp(-log(1 - 1)) = 100
  EXPECT_NEAR(loss_value(OpKind::BceLoss, prob, pt, sum), -std::log(0.25) + 100 + 100, 1e-4);
  // BCE with logits agrees with BCE on sigmoid(x) away from saturation.
  auto [x, y] = elementwise_inputs(OpKind::BceWithLogitsLoss, 17, 5);
  std::vector<float> s(17);
  for (int i = 0; i < 17; ++i) s[i] = 1.f / (1.f + std::exp(-x.data_as<float>()[i]));
  EXPECT_NEAR(loss_value(OpKind::BceWithLogitsLoss, x, y, {}),
              loss_value(OpKind::BceLoss, Tensor::from_vector(s, Shape{17}), y, {}), 1e-5);
}

TEST(LossCpu, DlossScalesTheGradient) {
  Tensor dloss = Tensor::from_vector<float>({2.5f}, Shape{1});
  for (OpKind op : kElementwise) {
    auto [p, t] = elementwise_inputs(op, 9, 3);
    LossArgs a;
    a.param = param_of(op);
    a.dloss = &dloss;
    expect_gradient_matches_fd(op, p, t, a);
  }
  Tensor x = random_tensor(Shape{3, 5}, 4, -2, 2);
  Tensor y = random_labels(3, 5, 6);
  LossArgs a;
  a.dloss = &dloss;
  expect_gradient_matches_fd(OpKind::CrossEntropyLoss, x, y, a);
}

TEST(LossCpu, CrossEntropyGradientMatchesFiniteDifferences) {
  for (double smoothing : {0.0, 0.1})
    for (Reduction red : kReductions) {
      Tensor x = random_tensor(Shape{4, 7}, 21, -3, 3);
      Tensor y = random_labels(4, 7, 22);
      LossArgs a;
      a.reduction = red;
      a.param = smoothing;
      expect_gradient_matches_fd(OpKind::CrossEntropyLoss, x, y, a);
    }
}

TEST(LossCpu, SoftCrossEntropyAndNllGradientsMatchFiniteDifferences) {
  for (Reduction red : kReductions) {
    LossArgs a;
    a.reduction = red;
    Tensor x = random_tensor(Shape{3, 6}, 31, -3, 3);
    expect_gradient_matches_fd(OpKind::SoftCrossEntropyLoss, x, probability_rows(3, 6, 32), a);
    Tensor lp = random_tensor(Shape{5, 4}, 33, -4, 0);
    expect_gradient_matches_fd(OpKind::NllLoss, lp, random_labels(5, 4, 34), a);
  }
}

TEST(LossCpu, CrossEntropyAgreesWithIndependentFormulations) {
  const int64_t n = 6, c = 9;
  Tensor x = random_tensor(Shape{n, c}, 41, -3, 3);
  Tensor y = random_labels(n, c, 42);
  // CE == NLL(log_softmax(x)).
  for (Reduction red : kReductions) {
    LossArgs a;
    a.reduction = red;
    EXPECT_NEAR(loss_value(OpKind::CrossEntropyLoss, x, y, a), loss_value(OpKind::NllLoss, log_softmax_rows(x), y, a),
                1e-5);
  }
  // CE with smoothing e == soft CE with targets (1 - e) one_hot + e / C (PyTorch's definition).
  const double e = 0.2;
  std::vector<float> soft(static_cast<size_t>(n * c));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < c; ++j)
      soft[r * c + j] = static_cast<float>((j == y.data_as<int32_t>()[r] ? 1 - e : 0.0) + e / c);
  Tensor t = Tensor::from_vector(soft, Shape{n, c});
  LossArgs a;
  a.param = e;
  LossOut ce = run_loss(OpKind::CrossEntropyLoss, x, y, kCpu, a);
  LossOut sce = run_loss(OpKind::SoftCrossEntropyLoss, x, t, kCpu, {});
  EXPECT_NEAR(ce.loss.item(), sce.loss.item(), 1e-5);
  EXPECT_TRUE(all_close(ce.dpred, sce.dpred, 1e-6, 1e-5));
  // One-hot soft targets == hard labels.
  std::vector<float> hot(static_cast<size_t>(n * c), 0.f);
  for (int64_t r = 0; r < n; ++r) hot[r * c + y.data_as<int32_t>()[r]] = 1.f;
  EXPECT_NEAR(loss_value(OpKind::SoftCrossEntropyLoss, x, Tensor::from_vector(hot, Shape{n, c}), {}),
              loss_value(OpKind::CrossEntropyLoss, x, y, {}), 1e-5);
}

TEST(LossCpu, CorrectCountsArgmaxEqualsLabel) {
  const int64_t n = 37, c = 10;
  Tensor x = random_tensor(Shape{n, c}, 51, -1, 1);
  std::vector<int32_t> labels(n);
  int expected = 0;
  for (int64_t r = 0; r < n; ++r) {
    int best = 0;
    for (int j = 1; j < c; ++j)
      if (x.data_as<float>()[r * c + j] > x.data_as<float>()[r * c + best]) best = j;
    labels[r] = r % 3 == 0 ? best : (best + 1 + static_cast<int>(r) % (c - 1)) % c;
    expected += labels[r] == best;
  }
  LossArgs a;
  a.correct = true;
  LossOut r = run_loss(OpKind::CrossEntropyLoss, x, Tensor::from_vector(labels, Shape{n}), kCpu, a);
  EXPECT_EQ(r.correct.item(), expected);
  EXPECT_EQ(expected, 13);  // rows 0, 3, ..., 36
}

TEST(LossCpu, NanPropagates) {
  Tensor x = random_tensor(Shape{3, 5}, 61);
  x.data_as<float>()[7] = std::numeric_limits<float>::quiet_NaN();
  LossOut r = run_loss(OpKind::CrossEntropyLoss, x, random_labels(3, 5, 62), kCpu);
  EXPECT_TRUE(std::isnan(r.loss.item()));
  for (OpKind op : kElementwise) {
    auto [p, t] = elementwise_inputs(op, 5, 63);
    p.data_as<float>()[2] = std::numeric_limits<float>::quiet_NaN();
    LossOut e = run_loss(op, p, t, kCpu, LossArgs{Reduction::Mean, param_of(op)});
    EXPECT_TRUE(std::isnan(e.loss.item())) << op_name(op);
    EXPECT_TRUE(std::isnan(e.dpred.item(2))) << op_name(op);
  }
}

TEST(LossCpu, OutOfRangeLabelThrowsNamingOpAndLabel) {
  Tensor x = random_tensor(Shape{3, 5}, 71);
  Tensor y = Tensor::from_vector<int32_t>({1, 5, 0}, Shape{3});
  expect_error([&] { run_loss(OpKind::CrossEntropyLoss, x, y, kCpu); }, {"CrossEntropyLoss", "label 5", "(3, 5)"});
  Tensor yn = Tensor::from_vector<int32_t>({1, 2, -1}, Shape{3});
  expect_error([&] { run_loss(OpKind::NllLoss, x, yn, kCpu); }, {"NllLoss", "label -1"});
}

TEST(LossCpu, BadArgumentsNameOpAndShapes) {
  Tensor x = random_tensor(Shape{4, 3}, 81);
  expect_error(
      [&] {
        run_loss(OpKind::MseLoss, x, random_tensor(Shape{3, 4}, 82), kCpu);
      },
      {"MseLoss", "test/loss", "(3, 4)", "(4, 3)"});
  expect_error([&] { run_loss(OpKind::CrossEntropyLoss, x, random_tensor(Shape{4}, 83), kCpu); },
               {"CrossEntropyLoss", "i32", "f32", "(4,)", "(4, 3)"});
  expect_error([&] { run_loss(OpKind::CrossEntropyLoss, x, random_labels(5, 3, 84), kCpu); },
               {"CrossEntropyLoss", "(5,)", "(4, 3)"});
  expect_error([&] { run_loss(OpKind::NllLoss, random_tensor(Shape{12}, 85), random_labels(12, 3, 84), kCpu); },
               {"NllLoss", "(12,)"});
  LossArgs bad_red;
  bad_red.reduction = static_cast<Reduction>(5);
  expect_error([&] { run_loss(OpKind::L1Loss, x, x, kCpu, bad_red); }, {"L1Loss", "reduction"});
  LossArgs corr;
  corr.correct = true;
  expect_error([&] { run_loss(OpKind::MseLoss, x, x, kCpu, corr); }, {"MseLoss", "correct"});
  expect_error(
      [&] {
        run_loss(OpKind::HuberLoss, x, x, kCpu, LossArgs{Reduction::Mean, 0.0});
      },
      {"HuberLoss", "delta"});
}

TEST(LossCpu, AccumulatorsAddTheScaledLossAndTheCorrectCount) {
  // loss_acc += f[1] * loss and correct_acc += (f[1] * correct) / rows, in f32: with f[1] = rows,
  // the correct count itself.
  Tensor x = random_tensor(Shape{9, 4}, 71, -3, 3);
  Tensor y = random_labels(9, 4, 72);
  LossArgs a;
  a.correct = true;
  a.acc = true;
  a.acc_scale = 9;
  LossOut r = run_loss(OpKind::CrossEntropyLoss, x, y, kCpu, a);
  EXPECT_EQ(r.loss_acc.item(), static_cast<double>(kLossAcc0 + 9.f * static_cast<float>(r.loss.item())));
  EXPECT_EQ(r.correct_acc.item(), static_cast<double>(kCorrectAcc0 + static_cast<float>(r.correct.item())));
  // Without the loss output (only the accumulators), and for an elementwise loss with Sum.
  a.loss = false;
  a.dpred = false;
  a.correct = false;
  LossOut q = run_loss(OpKind::CrossEntropyLoss, x, y, kCpu, a);
  EXPECT_EQ(q.loss_acc.item(), r.loss_acc.item());
  EXPECT_EQ(q.correct_acc.item(), r.correct_acc.item());
  auto [p, t] = elementwise_inputs(OpKind::L1Loss, 50, 73);
  LossArgs e;
  e.reduction = Reduction::Sum;
  e.acc = true;
  e.acc_scale = 0.25;
  LossOut l = run_loss(OpKind::L1Loss, p, t, kCpu, e);
  EXPECT_EQ(l.loss_acc.item(), static_cast<double>(kLossAcc0 + 0.25f * static_cast<float>(l.loss.item())));
}

namespace {

/// Sequence logits (b, t, c) and labels (b, t) in which every third position (and the first) is
/// labelled `ignore` (-100 here, out of [0, c), so it must not be range-checked).
std::pair<Tensor, Tensor> sequence_inputs(int64_t b, int64_t t, int64_t c, uint64_t seed, int32_t ignore = -100) {
  Tensor x = random_tensor(Shape{b, t, c}, seed, -4, 4);
  Tensor y = random_labels(b * t, static_cast<int>(c), seed + 1);
  int32_t* l = y.data_as<int32_t>();
  for (int64_t i = 0; i < b * t; i += 3) l[i] = ignore;
  return {x, y.reshape(Shape{b, t})};
}

LossArgs ignoring(int32_t index, Reduction red = Reduction::Mean) {
  LossArgs a;
  a.reduction = red;
  a.ignore = a.correct = a.acc = true;  // every output, counts scaled by 4
  a.ignore_index = index;
  a.acc_scale = 4;
  return a;
}

}  // namespace

TEST(LossCpu, SequenceCrossEntropyIsTheMeanOverTheKeptPositions) {
  // (2, 5, 7) logits, positions 0, 3, 6, 9 ignored: the loss, gradient and counts equal those of
  // plain CE on the 6 kept rows, and the ignored rows' gradient is zero.
  auto [x, y] = sequence_inputs(2, 5, 7, 31);
  const int32_t* l = y.data_as<int32_t>();
  std::vector<float> kx;
  std::vector<int32_t> ky;
  for (int64_t r = 0; r < 10; ++r)
    if (l[r] != -100) {
      kx.insert(kx.end(), x.data_as<float>() + r * 7, x.data_as<float>() + (r + 1) * 7);
      ky.push_back(l[r]);
    }
  const int64_t kept = static_cast<int64_t>(ky.size());
  ASSERT_EQ(kept, 6);
  for (double smoothing : {0.0, 0.2}) {
    LossArgs a = ignoring(-100);
    a.param = smoothing;
    LossArgs plain = a;
    plain.ignore = false;
    plain.acc_scale = static_cast<double>(kept);
    const LossOut s = run_loss(OpKind::CrossEntropyLoss, x, y, kCpu, a);
    const LossOut p = run_loss(OpKind::CrossEntropyLoss, Tensor::from_vector(kx, Shape{kept, 7}),
                               Tensor::from_vector(ky, Shape{kept}), kCpu, plain);
    EXPECT_EQ(s.loss.item(), p.loss.item());
    EXPECT_EQ(s.correct.item(), p.correct.item());
    EXPECT_EQ(s.loss_acc.item(), static_cast<double>(kLossAcc0 + 4.f * static_cast<float>(s.loss.item())));
    EXPECT_EQ(s.correct_acc.item(),
              static_cast<double>(kCorrectAcc0 + (4.f * static_cast<float>(s.correct.item())) / 6.f));
    const float* g = s.dpred.data_as<float>();
    int64_t k = 0;
    for (int64_t r = 0; r < 10; ++r)
      for (int64_t j = 0; j < 7; ++j) {
        const float want = l[r] == -100 ? 0.f : p.dpred.data_as<float>()[k * 7 + j];
        EXPECT_EQ(g[r * 7 + j], want) << "row " << r << " class " << j;
        if (j == 6 && l[r] != -100) ++k;
      }
  }
}

TEST(LossCpu, SequenceCrossEntropyGradientMatchesFiniteDifferences) {
  for (Reduction red : kReductions)
    for (int32_t ignore : {-100, 2}) {  // an index outside the classes, and a class index
      auto [x, y] = sequence_inputs(3, 4, 6, 41, ignore);
      LossArgs a = ignoring(ignore, red);
      a.param = 0.1;
      Tensor dloss = Tensor::from_vector<float>({-0.5f}, Shape{1});
      a.dloss = red == Reduction::Sum ? &dloss : nullptr;
      expect_gradient_matches_fd(OpKind::CrossEntropyLoss, x, y, a);
    }
}

TEST(LossCpu, SequenceCrossEntropyWithEveryPositionIgnoredIsZero) {
  Tensor x = random_tensor(Shape{2, 3, 4}, 51, -2, 2);
  Tensor y = Tensor::full(Shape{2, 3}, 1.0, DType::i32);
  const LossOut r = run_loss(OpKind::CrossEntropyLoss, x, y, kCpu, ignoring(1));
  EXPECT_EQ(r.loss.item(), 0.0);
  EXPECT_EQ(r.correct.item(), 0.0);
  EXPECT_EQ(r.dpred.to_vector<float>(), std::vector<float>(24, 0.f));
  EXPECT_EQ(r.loss_acc.item(), kLossAcc0);
  EXPECT_EQ(r.correct_acc.item(), kCorrectAcc0);
}

TEST(LossCpu, SequenceCrossEntropyErrorsNameTheShapes) {
  Tensor x = random_tensor(Shape{2, 3, 4}, 52);
  expect_error([&] { run_loss(OpKind::CrossEntropyLoss, x, random_labels(6, 4, 53), kCpu); },
               {"CrossEntropyLoss", "(2, 3)", "(2, 3, 4)", "(6,)"});
  LossArgs a;
  a.ignore = true;
  auto [p, t] = elementwise_inputs(OpKind::MseLoss, 5, 54);
  expect_error([&] { run_loss(OpKind::MseLoss, p, t, kCpu, a); }, {"MseLoss", "ignore index"});
  // A label out of range that is not the ignore index still throws.
  Tensor y = Tensor::full(Shape{2, 3}, 1.0, DType::i32);
  y.data_as<int32_t>()[4] = 9;
  expect_error([&] { run_loss(OpKind::CrossEntropyLoss, x, y, kCpu, ignoring(-100)); }, {"label 9", "row 4"});
}

TEST(LossCpu, AccumulatorErrorsNameTheOutput) {
  Tensor x = random_tensor(Shape{4, 3}, 74);
  Tensor y = random_labels(4, 3, 75);
  Tensor loss = Tensor::zeros(Shape{1}), bad = Tensor::zeros(Shape{2}), acc = Tensor::zeros(Shape{1});
  expect_error([&] { run_op(OpKind::CrossEntropyLoss, {tv(x), tv(y), {}}, {tv(loss), {}, {}, tv(bad)}, {}, nullptr, "t"); },
               {"CrossEntropyLoss", "loss_acc", "(2,)"});
  expect_error(
      [&] { run_op(OpKind::CrossEntropyLoss, {tv(x), tv(y), {}}, {tv(loss), {}, {}, {}, tv(bad)}, {}, nullptr, "t"); },
      {"CrossEntropyLoss", "correct_acc", "(2,)"});
  expect_error([&] { run_op(OpKind::MseLoss, {tv(x), tv(x), {}}, {tv(loss), {}, {}, {}, tv(acc)}, {}, nullptr, "t"); },
               {"MseLoss", "correct_acc"});
}

// ---------------------------------------------------------------- CUDA vs CPU -------------------

namespace {

/// A 16-bit dpred against the CPU reference's: within 1 ulp and at least 95% bitwise equal
/// (close_16bit). Softmax gradients p - target cancel where p is near the smoothed target: there
/// both backends' fp32 results carry an error relative to the largest gradient, so 1e-6 of it is
/// allowed.
::testing::AssertionResult dpred_close(const Tensor& got, const Tensor& ref) {
  return close_16bit(got, ref, 1, 0.95, 1e-6 * max_abs(ref));
}

/// With 16-bit predictions (pred and dpred bf16 / f16; the CPU reference runs the f32 function on the
/// widened predictions and rounds dpred once), dpred must pass dpred_close. The loss, the correct
/// count and the accumulators stay f32 and compare as in f32.
void expect_cuda_matches_cpu(OpKind op, const Tensor& pred, const Tensor& target, const LossArgs& a, double atol = 1e-5,
                             double rtol = 1e-5) {
  const LossOut c = run_loss(op, pred, target, kCpu, a);
  const LossOut g = run_loss(op, pred, target, Device::cuda(), a);
  if (a.loss) {
    ASSERT_EQ(g.loss.dtype(), DType::f32);
    EXPECT_TRUE(all_close(g.loss, c.loss, atol, rtol)) << "loss";
  }
  if (a.dpred && pred.dtype() != DType::f32) {
    ASSERT_EQ(g.dpred.dtype(), pred.dtype());
    EXPECT_TRUE(dpred_close(g.dpred, c.dpred)) << "dpred";
  } else if (a.dpred) {
    EXPECT_TRUE(all_close(g.dpred, c.dpred, atol, rtol)) << "dpred";
  }
  if (a.correct) EXPECT_TRUE(all_close(g.correct, c.correct, 0, 0)) << "correct";
  if (a.acc) EXPECT_TRUE(all_close(g.loss_acc, c.loss_acc, atol, rtol)) << "loss_acc";
  if (a.acc && op == OpKind::CrossEntropyLoss) EXPECT_TRUE(all_close(g.correct_acc, c.correct_acc, 0, 0)) << "correct_acc";
}

}  // namespace

TEST(LossCuda, ElementwiseMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  Tensor dloss = Tensor::from_vector<float>({-1.75f}, Shape{1});
  for (OpKind op : kElementwise)
    for (int64_t n : {1, 3, 37, 1221, 4099})
      for (Reduction red : kReductions)
        for (int64_t off : {0, 1}) {
          SCOPED_TRACE(std::string(op_name(op)) + " n=" + std::to_string(n) + " off=" + std::to_string(off) +
                       (red == Reduction::Mean ? " mean" : " sum"));
          auto [p, t] = elementwise_inputs(op, n, 100 + n);
          LossArgs a;
          a.reduction = red;
          a.param = param_of(op);
          a.misalign = off;
          a.dloss = n % 2 ? &dloss : nullptr;
          expect_cuda_matches_cpu(op, p, t, a);
        }
}

TEST(LossCuda, ElementwiseWithoutGradientOrWithoutLoss) {
  CUDL_REQUIRE_CUDA();
  auto [p, t] = elementwise_inputs(OpKind::HuberLoss, 100, 7);
  LossArgs a;
  a.param = 0.5;
  a.dpred = false;
  expect_cuda_matches_cpu(OpKind::HuberLoss, p, t, a);
  a.dpred = true;
  a.loss = false;
  expect_cuda_matches_cpu(OpKind::HuberLoss, p, t, a);
}

TEST(LossCuda, CrossEntropyMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  Tensor dloss = Tensor::from_vector<float>({0.375f}, Shape{1});
  for (int64_t n : {1, 3, 37})
    for (int64_t c : {1, 10, 33, 1000})
      for (Reduction red : kReductions) {
        SCOPED_TRACE("n=" + std::to_string(n) + " c=" + std::to_string(c));
        Tensor x = random_tensor(Shape{n, c}, 200 + n * c, -4, 4);
        Tensor y = random_labels(n, static_cast<int>(c), 300 + n * c);
        for (double smoothing : {0.0, 0.1}) {
          LossArgs a;
          a.reduction = red;
          a.param = smoothing;
          a.correct = true;
          a.dloss = smoothing > 0 ? &dloss : nullptr;
          expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, x, y, a);
        }
      }
}

TEST(LossCuda, CorrectCountMatchesCpuIncludingTies) {
  CUDL_REQUIRE_CUDA();
  // Ties everywhere: argmax is the first maximum on both backends.
  const int64_t n = 37, c = 40;
  std::vector<float> v(static_cast<size_t>(n * c));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7) % 3);
  std::vector<int32_t> labels(n);
  for (int64_t r = 0; r < n; ++r) labels[r] = static_cast<int32_t>((r * 5) % c);
  LossArgs a;
  a.correct = true;
  expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, Tensor::from_vector(v, Shape{n, c}),
                          Tensor::from_vector(labels, Shape{n}), a);
  a.dpred = false;
  a.loss = false;
  expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, random_tensor(Shape{n, c}, 9), random_labels(n, c, 10), a);
}

TEST(LossCuda, SoftCrossEntropyAndNllMatchCpu) {
  CUDL_REQUIRE_CUDA();
  Tensor dloss = Tensor::from_vector<float>({3.0f}, Shape{1});
  for (int64_t n : {1, 3, 37})
    for (int64_t c : {1, 10, 33, 1000})
      for (Reduction red : kReductions) {
        SCOPED_TRACE("n=" + std::to_string(n) + " c=" + std::to_string(c));
        LossArgs a;
        a.reduction = red;
        a.dloss = n == 3 ? &dloss : nullptr;
        Tensor x = random_tensor(Shape{n, c}, 400 + n * c, -4, 4);
        expect_cuda_matches_cpu(OpKind::SoftCrossEntropyLoss, x, probability_rows(n, c, 500 + n * c), a);
        expect_cuda_matches_cpu(OpKind::NllLoss, log_softmax_rows(x), random_labels(n, c, 600 + n * c), a);
      }
}

TEST(LossCuda, NanLogitGivesNanLoss) {
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor(Shape{5, 40}, 91);
  x.data_as<float>()[77] = std::numeric_limits<float>::quiet_NaN();
  LossArgs a;
  a.correct = true;
  expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, x, random_labels(5, 40, 92), a);
  expect_cuda_matches_cpu(OpKind::SoftCrossEntropyLoss, x, probability_rows(5, 40, 93), {});
  const LossOut g = run_loss(OpKind::CrossEntropyLoss, x, random_labels(5, 40, 92), Device::cuda(), a);
  EXPECT_TRUE(std::isnan(g.loss.item()));
  for (OpKind op : kElementwise) {
    auto [p, t] = elementwise_inputs(op, 50, 94);
    p.data_as<float>()[13] = std::numeric_limits<float>::quiet_NaN();
    expect_cuda_matches_cpu(op, p, t, LossArgs{Reduction::Sum, param_of(op)});
  }
}

TEST(LossCuda, OutOfRangeLabelGivesNanRow) {
  CUDL_REQUIRE_CUDA();
  // Documented in op.hpp: a kernel cannot throw, so the row contributes NaN (loss NaN), its
  // dpred row is NaN and it never counts as correct; other rows are unaffected.
  Tensor x = random_tensor(Shape{3, 5}, 95);
  Tensor y = Tensor::from_vector<int32_t>({1, 7, 0}, Shape{3});
  for (OpKind op : {OpKind::CrossEntropyLoss, OpKind::NllLoss}) {
    LossArgs a;
    a.correct = op == OpKind::CrossEntropyLoss;
    const LossOut g = run_loss(op, x, y, Device::cuda(), a);
    EXPECT_TRUE(std::isnan(g.loss.item())) << op_name(op);
    for (int j = 0; j < 5; ++j) {
      EXPECT_TRUE(std::isnan(g.dpred.item(5 + j))) << op_name(op);
      EXPECT_FALSE(std::isnan(g.dpred.item(j))) << op_name(op);
    }
    // The valid rows' gradients equal the CPU's for the same rows alone.
    Tensor x2 = Tensor::from_vector(std::vector<float>(x.data_as<float>(), x.data_as<float>() + 5), Shape{1, 5});
    LossArgs s;
    s.reduction = Reduction::Sum;
    const LossOut c = run_loss(op, x2, Tensor::from_vector<int32_t>({1}, Shape{1}), kCpu, s);
    const LossOut gs = run_loss(op, x, y, Device::cuda(), s);
    for (int j = 0; j < 5; ++j) EXPECT_NEAR(gs.dpred.item(j), c.dpred.item(j), 1e-6);
  }
}

TEST(LossCuda, BadArgumentsNameOpAndShapes) {
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor(Shape{4, 3}, 81);
  expect_error([&] { run_loss(OpKind::BceLoss, x, random_tensor(Shape{12}, 82), Device::cuda()); },
               {"BceLoss", "(12,)", "(4, 3)"});
  expect_error([&] { run_loss(OpKind::CrossEntropyLoss, x, random_tensor(Shape{4}, 83), Device::cuda()); },
               {"CrossEntropyLoss", "i32", "(4, 3)"});
}

TEST(LossCuda, DeterministicRunToRun) {
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor(Shape{37, 1000}, 97, -4, 4);
  Tensor y = random_labels(37, 1000, 98);
  LossArgs a;
  a.param = 0.1;
  const LossOut first = run_loss(OpKind::CrossEntropyLoss, x, y, Device::cuda(), a);
  const LossOut second = run_loss(OpKind::CrossEntropyLoss, x, y, Device::cuda(), a);
  EXPECT_EQ(first.loss.item(), second.loss.item());
  EXPECT_TRUE(all_close(first.dpred, second.dpred, 0, 0));
}

#if defined(CUDL_EMULATED)
#include <cuda_runtime.h>

#include "emu/emu.hpp"

TEST(LossCuda, FusedLaunchesAndNoHostRoundTrip) {
  CUDL_REQUIRE_CUDA();
  // Inputs and outputs already on the device: the op must read dloss on the device (no copy to
  // the host) and fuse forward, gradient, accuracy and the final reduction into one kernel.
  const Device gpu = Device::cuda();
  Tensor x = random_tensor(Shape{37, 33}, 99, -2, 2, gpu);
  Tensor y = random_labels(37, 33, 98, gpu);
  Tensor dloss = Tensor::full(Shape{1}, 0.5, DType::f32, gpu);
  Tensor loss = Tensor::empty(Shape{1}, DType::f32, gpu), dpred = Tensor::empty(Shape{37, 33}, DType::f32, gpu);
  Tensor correct = Tensor::empty(Shape{1}, DType::i32, gpu);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudl_emu::reset_counters();
  OpAttrs attrs;
  attrs.f[0] = 0.1;
  run_op(OpKind::CrossEntropyLoss, {tv(x), tv(y), tv(dloss)}, {tv(loss), tv(dpred), tv(correct)}, attrs);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto c = cudl_emu::counters();
  EXPECT_EQ(c.kernel_launches, 1u);
  EXPECT_EQ(c.memcpy_d2h + c.memcpy_h2d + c.memcpy_d2d, 0u);
  // And the values are those of the CPU reference.
  LossArgs a;
  a.param = 0.1;
  Tensor hd = Tensor::full(Shape{1}, 0.5);
  a.dloss = &hd;
  a.correct = true;
  const LossOut e = run_loss(OpKind::CrossEntropyLoss, x.to(kCpu), y.to(kCpu), kCpu, a);
  EXPECT_TRUE(all_close(loss.to(kCpu), e.loss));
  EXPECT_TRUE(all_close(dpred.to(kCpu), e.dpred));
  EXPECT_TRUE(all_close(correct.to(kCpu), e.correct, 0, 0));
}
#endif

TEST(LossCuda, AccumulatorsMatchCpuOverManyBlocks) {
  // Enough rows / elements for hundreds of blocks: the last block to finish sums every block's
  // partials and updates the accumulators (under each emulator schedule a different block is last).
  CUDL_REQUIRE_CUDA();
  for (int64_t n : {1, 37, 3001}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    Tensor x = random_tensor(Shape{n, 10}, 700 + n, -4, 4);
    Tensor y = random_labels(n, 10, 800 + n);
    LossArgs a;
    a.correct = true;
    a.acc = true;
    a.acc_scale = static_cast<double>(n);
    expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, x, y, a, 1e-4, 1e-5);
    a.loss = a.dpred = a.correct = false;  // accumulators only
    expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, x, y, a, 1e-4, 1e-5);
    LossArgs b;
    b.acc = true;
    b.acc_scale = 0.5;
    expect_cuda_matches_cpu(OpKind::SoftCrossEntropyLoss, x, probability_rows(n, 10, 900 + n), b, 1e-4, 1e-5);
    expect_cuda_matches_cpu(OpKind::NllLoss, log_softmax_rows(x), y, b, 1e-4, 1e-5);
    auto [p, t] = elementwise_inputs(OpKind::MseLoss, n * 10, 950 + n);
    expect_cuda_matches_cpu(OpKind::MseLoss, p, t, b, 1e-4, 1e-5);
  }
}

TEST(LossCuda, SequenceCrossEntropyMatchesCpu) {
  // Rows from 1 to 3,000+ (hundreds of blocks: the kept count must reach every block), classes
  // under and over a warp, both reductions, dloss, and every position ignored.
  CUDL_REQUIRE_CUDA();
  Tensor dloss = Tensor::from_vector<float>({0.625f}, Shape{1});
  struct Case {
    int64_t b, t, c;
  };
  for (const Case& k : {Case{1, 1, 5}, Case{2, 5, 7}, Case{3, 17, 33}, Case{4, 1024, 10}})
    for (Reduction red : kReductions)
      for (int32_t ignore : {-100, 3}) {
        SCOPED_TRACE("b=" + std::to_string(k.b) + " t=" + std::to_string(k.t) + " c=" + std::to_string(k.c) +
                     " ignore=" + std::to_string(ignore));
        auto [x, y] = sequence_inputs(k.b, k.t, k.c, 600 + k.t, ignore);
        LossArgs a = ignoring(ignore, red);
        a.param = red == Reduction::Sum ? 0.1 : 0.0;
        a.dloss = red == Reduction::Sum ? &dloss : nullptr;
        expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, x, y, a, 1e-5, 1e-4);
        a.loss = a.dpred = a.correct = false;  // accumulators only
        expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, x, y, a, 1e-5, 1e-4);
      }
  Tensor x = random_tensor(Shape{2, 40, 4}, 77, -2, 2);
  Tensor y = Tensor::full(Shape{2, 40}, 1.0, DType::i32);
  expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, x, y, ignoring(1), 0, 0);  // all ignored: zeros
}

TEST(LossCuda, RepeatedLaunchesLeaveTheBlockCounterAtZero) {
  // Each launch's last block returns the stream's block counter to 0; if it did not, the next
  // launch would pick the wrong last block and skip or garble its reduction.
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor(Shape{333, 7}, 61, -4, 4);
  Tensor y = random_labels(333, 7, 62);
  LossArgs a;
  a.correct = true;
  const LossOut c = run_loss(OpKind::CrossEntropyLoss, x, y, kCpu, a);
  for (int rep = 0; rep < 3; ++rep) {
    const LossOut g = run_loss(OpKind::CrossEntropyLoss, x, y, Device::cuda(), a);
    EXPECT_NEAR(g.loss.item(), c.loss.item(), 1e-5) << "launch " << rep;
    EXPECT_EQ(g.correct.item(), c.correct.item()) << "launch " << rep;
  }
}

// --- 16-bit predictions: pred and dpred in bf16 / f16; targets, the loss and the accumulators f32 --

// n = 4099 aligned: the 16-byte groups (8 predictions, 8 f32 targets) and a tail of 3; offset by one
// element: the scalar path.
TEST(Loss16Bit, ElementwiseMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  Tensor dloss = Tensor::from_vector<float>({-1.75f}, Shape{1});
  for (DType st : k16BitTypes)
    for (OpKind op : kElementwise)
      for (int64_t n : {37, 4099})
        for (int64_t off : {0, 1}) {
          SCOPED_TRACE(std::string(dtype_name(st)) + " " + op_name(op) + " n=" + std::to_string(n) +
                       " off=" + std::to_string(off));
          auto [p, t] = elementwise_inputs(op, n, 100 + n);
          LossArgs a;
          a.reduction = n == 37 ? Reduction::Sum : Reduction::Mean;
          a.param = param_of(op);
          a.misalign = off;
          a.dloss = off ? &dloss : nullptr;
          a.acc = true;
          a.acc_scale = 3;
          expect_cuda_matches_cpu(op, to_storage(p, st), t, a);
        }
}

TEST(Loss16Bit, CrossEntropyFamilyMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  Tensor dloss = Tensor::from_vector<float>({0.375f}, Shape{1});
  for (DType st : k16BitTypes)
    for (int64_t c : {10, 1000}) {
      const int64_t n = 37;
      SCOPED_TRACE(std::string(dtype_name(st)) + " c=" + std::to_string(c));
      // Logits rounded to 16 bits tie often: the first-maximum rule of `correct` is exercised.
      Tensor x = to_storage(random_tensor(Shape{n, c}, 200 + c, -4, 4), st);
      Tensor y = random_labels(n, static_cast<int>(c), 300 + c);
      for (double smoothing : {0.0, 0.1}) {
        LossArgs a;
        a.param = smoothing;
        a.correct = true;
        a.acc = true;
        a.acc_scale = n;
        a.dloss = smoothing > 0 ? &dloss : nullptr;
        expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, x, y, a);
      }
      Tensor yi = y.clone();  // an ignore index: every fifth row ignored
      for (int64_t r = 0; r < n; r += 5) yi.data_as<int32_t>()[r] = -100;
      LossArgs ai;
      ai.ignore = true;
      ai.correct = true;
      expect_cuda_matches_cpu(OpKind::CrossEntropyLoss, x, yi, ai);
      LossArgs as;
      as.reduction = Reduction::Sum;
      as.dloss = &dloss;
      expect_cuda_matches_cpu(OpKind::SoftCrossEntropyLoss, x, probability_rows(n, c, 500 + c), as);
      expect_cuda_matches_cpu(OpKind::NllLoss, to_storage(log_softmax_rows(widened(x)), st),
                              random_labels(n, static_cast<int>(c), 600 + c), as);
    }
}

// The comparisons above fail what a kernel that skipped the rounding of dpred (truncation), kept the
// gradient's intermediates in 16 bits, or summed the loss in 16 bits would give.
TEST(Loss16Bit, ComparisonCatchesTruncationAnd16BitMath) {
  const int64_t n = 64, c = 100;
  for (DType st : k16BitTypes) {
    SCOPED_TRACE(dtype_name(st));
    Tensor x = to_storage(random_tensor(Shape{n, c}, 41, -4, 4), st);
    Tensor y = random_labels(n, static_cast<int>(c), 42);
    LossArgs a;
    a.reduction = Reduction::Sum;  // gradients of order 1: normal in f16
    const LossOut ref = run_loss(OpKind::CrossEntropyLoss, x, y, kCpu, a);
    const LossOut wide = run_loss(OpKind::CrossEntropyLoss, widened(x), y, kCpu, a);
    EXPECT_TRUE(dpred_close(ref.dpred, ref.dpred));
    EXPECT_FALSE(dpred_close(truncated_16bit(wide.dpred, st), ref.dpred)) << "truncation must not pass";
    auto r16 = [&](float v) { return rounded_16(v, st); };
    const std::vector<uint16_t> xb = bits_16(x);
    const int32_t* lab = y.data_as<int32_t>();
    std::vector<float> stepwise(static_cast<size_t>(n * c));
    float loss16 = 0.f;
    for (int64_t r = 0; r < n; ++r) {
      double m = -INFINITY, s = 0;
      for (int64_t j = 0; j < c; ++j) m = std::max(m, static_cast<double>(widen_16(xb[r * c + j], st)));
      for (int64_t j = 0; j < c; ++j) s += std::exp(widen_16(xb[r * c + j], st) - m);
      const float lse = static_cast<float>(m + std::log(s));
      for (int64_t j = 0; j < c; ++j) {
        const float p = r16(std::exp(r16(widen_16(xb[r * c + j], st) - lse)));
        stepwise[r * c + j] = r16(p - (j == lab[r] ? 1.f : 0.f));
      }
      loss16 = r16(loss16 + r16(lse - widen_16(xb[r * c + lab[r]], st)));
    }
    EXPECT_FALSE(dpred_close(to_storage(Tensor::from_vector(stepwise, Shape{n, c}), st), ref.dpred))
        << "16-bit intermediates must not pass";
    EXPECT_FALSE(all_close(Tensor::full(Shape{1}, loss16), ref.loss, 1e-5, 1e-5)) << "a 16-bit loss sum must not pass";
  }
}

TEST(Loss16Bit, StorageErrorsNameOpSlotAndTypes) {
  for (Device d : test_devices()) {
    SCOPED_TRACE(d.str());
    Tensor x = to_storage(random_tensor(Shape{4, 3}, 1), DType::bf16).to(d);
    Tensor y = random_labels(4, 3, 2).to(d);
    Tensor loss = Tensor::zeros(Shape{1}, DType::f32, d);
    Tensor dpred = Tensor::zeros(Shape{4, 3}, DType::f32, d);  // f32 gradient of bf16 logits
    expect_error(
        [&] {
          run_op(OpKind::CrossEntropyLoss, {tv(x), tv(y), {}}, {tv(loss), tv(dpred)}, {}, nullptr, "t");
        },
        {"CrossEntropyLoss", "bf16", "f32", "one storage type per call"});
    Tensor t16 = to_storage(random_tensor(Shape{4, 3}, 3), DType::bf16).to(d);  // targets stay f32
    expect_error(
        [&] {
          run_op(OpKind::MseLoss, {tv(x), tv(t16), {}}, {tv(loss)}, {}, nullptr, "t");
        },
        {"MseLoss", "input 1", "bf16", "f32"});
    Tensor loss16 = Tensor::zeros(Shape{1}, DType::bf16, d);  // the loss stays f32
    Tensor t32 = random_tensor(Shape{4, 3}, 4).to(d);
    expect_error(
        [&] {
          run_op(OpKind::MseLoss, {tv(x), tv(t32), {}}, {tv(loss16)}, {}, nullptr, "t");
        },
        {"MseLoss", "output 0", "bf16"});
  }
}
