// tests/test_op_reduce.cpp — reduce op family (sum, mean, max+indices, var, argmax): CPU reference vs
// hand values and finite differences, CUDA vs CPU on every kernel path, NaN/ties, argument errors.
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

// The reduced shape, written independently of the library.
Shape reduced_shape(const Shape& x, int64_t axis, bool keepdim) {
  std::vector<int64_t> d;
  if (axis == kReduceAllAxes) {
    if (keepdim) d.assign(x.rank(), 1);
    return Shape(d);
  }
  const int64_t a = axis < 0 ? axis + x.rank() : axis;
  for (int k = 0; k < x.rank(); ++k) {
    if (k != a)
      d.push_back(x.dims()[k]);
    else if (keepdim)
      d.push_back(1);
  }
  return Shape(d);
}

OpAttrs reduce_attrs(ReduceOp op, int64_t axis, bool keepdim, bool unbiased) {
  OpAttrs at;
  at.i[0] = static_cast<int64_t>(op);
  at.i[1] = axis;
  at.i[2] = keepdim;
  at.i[3] = unbiased;
  return at;
}

struct Reduced {
  Tensor y, idx;
};

Reduced run_reduce(ReduceOp op, const Tensor& x, int64_t axis, bool keepdim, bool unbiased = false) {
  const Shape ys = reduced_shape(x.shape(), axis, keepdim);
  Reduced r;
  r.y = Tensor::full(ys, 777.0, DType::f32, x.device());
  if (op == ReduceOp::Max) r.idx = Tensor::full(ys, -5, DType::i64, x.device());
  run_op(OpKind::Reduce, {tv(x)}, {tv(r.y), tv(r.idx)}, reduce_attrs(op, axis, keepdim, unbiased));
  return r;
}

Tensor run_reduce_backward(ReduceOp op, const Tensor& x, const Reduced& fwd, const Tensor& dy, int64_t axis,
                           bool keepdim, bool unbiased = false) {
  Tensor dx = Tensor::full(x.shape(), 777.0, DType::f32, x.device());
  // Only what the spec says is read: x for Var, indices for Max; y is never needed.
  const TensorView xv = op == ReduceOp::Var ? tv(x) : TensorView{};
  run_op(OpKind::ReduceBackward, {xv, TensorView{}, tv(dy), tv(fwd.idx)}, {tv(dx)},
         reduce_attrs(op, axis, keepdim, unbiased));
  return dx;
}

Tensor run_argmax(const Tensor& x, int64_t axis, bool keepdim) {
  Tensor idx = Tensor::full(reduced_shape(x.shape(), axis, keepdim), -5, DType::i32, x.device());
  run_op(OpKind::Argmax, {tv(x)}, {tv(idx)}, reduce_attrs(ReduceOp::Max, axis, keepdim, false));
  return idx;
}

Tensor cuda(const Tensor& t) { return t.to(Device::cuda()); }
Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

struct OpCase {
  ReduceOp op;
  bool unbiased;
  const char* name;
};
const std::vector<OpCase> kOps = {{ReduceOp::Sum, false, "sum"},
                                  {ReduceOp::Mean, false, "mean"},
                                  {ReduceOp::Max, false, "max"},
                                  {ReduceOp::Var, true, "var_unbiased"},
                                  {ReduceOp::Var, false, "var_biased"}};

std::string axis_name(int64_t axis) { return axis == kReduceAllAxes ? "all" : std::to_string(axis); }

}  // namespace

TEST(Reduce, CpuForwardByHand) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, Shape{2, 3});  // [[1,2,3],[4,5,6]]
  EXPECT_EQ(run_reduce(ReduceOp::Sum, x, 0, false).y.to_vector<float>(), (std::vector<float>{5, 7, 9}));
  EXPECT_EQ(run_reduce(ReduceOp::Sum, x, -1, true).y.to_vector<float>(), (std::vector<float>{6, 15}));
  EXPECT_EQ(run_reduce(ReduceOp::Sum, x, -1, true).y.shape(), (Shape{2, 1}));
  Reduced all = run_reduce(ReduceOp::Sum, x, kReduceAllAxes, false);
  EXPECT_EQ(all.y.shape(), Shape{});
  EXPECT_EQ(all.y.item(), 21.0);
  EXPECT_EQ(run_reduce(ReduceOp::Mean, x, kReduceAllAxes, true).y.shape(), (Shape{1, 1}));
  EXPECT_EQ(run_reduce(ReduceOp::Mean, x, 1, false).y.to_vector<float>(), (std::vector<float>{2, 5}));
  EXPECT_EQ(run_reduce(ReduceOp::Var, x, 1, false, true).y.to_vector<float>(), (std::vector<float>{1, 1}));
  EXPECT_NEAR(run_reduce(ReduceOp::Var, x, 1, false, false).y.item(0), 2.0 / 3.0, 1e-7);
  EXPECT_NEAR(run_reduce(ReduceOp::Var, x, kReduceAllAxes, false, true).y.item(0), 3.5, 1e-6);
  Reduced mx = run_reduce(ReduceOp::Max, x, 0, false);
  EXPECT_EQ(mx.y.to_vector<float>(), (std::vector<float>{4, 5, 6}));
  EXPECT_EQ(mx.idx.to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1}));
  EXPECT_EQ(run_argmax(x, kReduceAllAxes, false).to_vector<int32_t>(), (std::vector<int32_t>{5}));
  // Var of a single element with the unbiased flag is 0/0 = NaN (like torch).
  EXPECT_TRUE(std::isnan(run_reduce(ReduceOp::Var, Tensor::full(Shape{1}, 3.0), 0, false, true).y.item()));
}

TEST(Reduce, CpuGradientMatchesFiniteDifferences) {
  Tensor x = random_tensor(Shape{3, 4, 5}, 7);
  for (const OpCase& c : kOps) {
    for (int64_t axis : {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{-1}, kReduceAllAxes}) {
      const bool keepdim = axis == 1 || axis == kReduceAllAxes;
      SCOPED_TRACE(std::string(c.name) + " axis " + axis_name(axis));
      Reduced fwd = run_reduce(c.op, x, axis, keepdim, c.unbiased);
      const auto w = as_doubles(random_tensor(fwd.y.shape(), 8));
      Tensor dy = Tensor::from_vector(std::vector<float>(w.begin(), w.end()), fwd.y.shape());
      Tensor dx = run_reduce_backward(c.op, x, fwd, dy, axis, keepdim, c.unbiased);
      auto f = [&](const Tensor& xx) { return weighted_sum(run_reduce(c.op, xx, axis, keepdim, c.unbiased).y, w); };
      EXPECT_TRUE(gradient_close(dx, numerical_gradient(f, x)));
    }
  }
}

TEST(Reduce, MaxTakesFirstOccurrenceAndNanWins) {
  Tensor x = Tensor::from_vector<float>({1, 3, 3, 2,                  // tie: first 3
                                         1, kNaN, 5, kNaN,            // NaN beats 5, first NaN
                                         -kInf, -kInf, -kInf, -kInf,  // all -inf: index 0
                                         kInf, 2, kInf, 7},
                                        Shape{4, 4});
  std::vector<Device> devices = {Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (Device d : devices) {
    SCOPED_TRACE(d.str());
    Reduced r = run_reduce(ReduceOp::Max, x.to(d), 1, false);
    auto y = host(r.y).to_vector<float>();
    EXPECT_EQ(y[0], 3.f);
    EXPECT_TRUE(std::isnan(y[1]));
    EXPECT_EQ(y[2], -kInf);
    EXPECT_EQ(y[3], kInf);
    EXPECT_EQ(host(r.idx).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 0, 0}));
    EXPECT_EQ(host(run_argmax(x.to(d), 1, false)).to_vector<int32_t>(), (std::vector<int32_t>{1, 1, 0, 0}));
    EXPECT_EQ(host(run_argmax(x.to(d), kReduceAllAxes, false)).to_vector<int32_t>(), (std::vector<int32_t>{5}));
    // Column reduction (inner > 1) with the same rules: columns (1, 1, -inf, inf), (3, NaN, -inf, 2),
    // (3, 5, -inf, inf), (2, NaN, -inf, 7).
    Reduced col = run_reduce(ReduceOp::Max, x.to(d), 0, true);
    EXPECT_EQ(host(col.idx).to_vector<int64_t>(), (std::vector<int64_t>{3, 1, 3, 1}));
    // Sums and means propagate NaN and Inf.
    auto s = host(run_reduce(ReduceOp::Sum, x.to(d), 1, false).y).to_vector<float>();
    EXPECT_TRUE(std::isnan(s[1]));
    EXPECT_EQ(s[2], -kInf);
    EXPECT_EQ(s[3], kInf);
  }
}

TEST(Reduce, CudaMatchesCpuOnEveryPath) {
  CUDL_REQUIRE_CUDA();
  struct Case {
    Shape shape;
    int64_t axis;
  };
  const std::vector<Case> cases = {
      {Shape{4, 2000}, 1},
      {Shape{4, 2000}, -1},
      {Shape{4, 2000}, 0},  // long rows; wide columns
      {Shape{5, 33}, 0},
      {Shape{5, 33}, 1},  // 33 columns; short rows
      {Shape{3, 1, 7}, 1},
      {Shape{7, 1}, 1},
      {Shape{7, 1}, 0},  // rows of 1
      {Shape{2, 3, 33}, 0},
      {Shape{2, 3, 33}, 1},
      {Shape{2, 3, 33}, 2},  // middle axis
      {Shape{2000, 3}, 0},   // long columns
      {Shape{7, 1000}, kReduceAllAxes},
      {Shape{33}, kReduceAllAxes},  // grid and warp all-reduce
      {Shape{1}, kReduceAllAxes},
      {Shape{3, 1025}, kReduceAllAxes},
  };
  int k = 0;
  for (const Case& cs : cases) {
    for (const OpCase& c : kOps) {
      const bool keepdim = (k++ % 2) == 0;
      SCOPED_TRACE(std::string(c.name) + " " + cs.shape.str() + " axis " + axis_name(cs.axis) +
                   (keepdim ? " keepdim" : ""));
      Tensor x = random_tensor(cs.shape, 50 + k, -2, 3);
      Reduced ref = run_reduce(c.op, x, cs.axis, keepdim, c.unbiased);
      Reduced dev = run_reduce(c.op, cuda(x), cs.axis, keepdim, c.unbiased);
      EXPECT_TRUE(all_close(host(dev.y), ref.y, 1e-5, 1e-5));
      if (c.op == ReduceOp::Max) EXPECT_TRUE(all_close(host(dev.idx), ref.idx, 0, 0));
      Tensor dy = random_tensor(ref.y.shape(), 60 + k);
      Tensor dx = run_reduce_backward(c.op, x, ref, dy, cs.axis, keepdim, c.unbiased);
      Reduced ref_dev{cuda(ref.y), ref.idx.defined() ? cuda(ref.idx) : Tensor()};
      Tensor dx_dev = run_reduce_backward(c.op, cuda(x), ref_dev, cuda(dy), cs.axis, keepdim, c.unbiased);
      EXPECT_TRUE(all_close(host(dx_dev), dx, 1e-6, 1e-5));
      if (c.op == ReduceOp::Max)
        EXPECT_TRUE(all_close(host(run_argmax(cuda(x), cs.axis, keepdim)), run_argmax(x, cs.axis, keepdim), 0, 0));
    }
  }
}

TEST(Reduce, CudaAllAxesSumIsDeterministic) {
  CUDL_REQUIRE_CUDA();
  Tensor x = cuda(random_tensor(Shape{9, 1111}, 3));
  const float a = static_cast<float>(run_reduce(ReduceOp::Sum, x, kReduceAllAxes, false).y.item());
  const float b = static_cast<float>(run_reduce(ReduceOp::Sum, x, kReduceAllAxes, false).y.item());
  EXPECT_EQ(a, b);
}

TEST(Reduce, EmptyAxis) {
  std::vector<Device> devices = {Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (Device d : devices) {
    SCOPED_TRACE(d.str());
    Tensor x = Tensor::empty(Shape{0, 3}, DType::f32, d);
    EXPECT_EQ(host(run_reduce(ReduceOp::Sum, x, 0, false).y).to_vector<float>(), (std::vector<float>{0, 0, 0}));
    EXPECT_EQ(host(run_reduce(ReduceOp::Sum, x, kReduceAllAxes, false).y).item(), 0.0);
    EXPECT_TRUE(std::isnan(host(run_reduce(ReduceOp::Mean, x, 0, false).y).item(2)));  // 0 / 0
    EXPECT_EQ(run_reduce(ReduceOp::Sum, x, 1, false).y.numel(), 0);
    EXPECT_THROW(run_reduce(ReduceOp::Max, x, 0, false), Error);
  }
}

TEST(Reduce, WrongDeviceNamesTheOp) {
  CUDL_REQUIRE_CUDA();
  Tensor x = Tensor::zeros(Shape{3, 4});
  Tensor y = Tensor::zeros(Shape{4}, DType::f32, Device::cuda());
  try {
    run_op(OpKind::Reduce, {tv(x)}, {tv(y)}, reduce_attrs(ReduceOp::Sum, 0, false, false));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("Reduce"), std::string::npos) << m;
    EXPECT_NE(m.find("(4,)"), std::string::npos) << m;
  }
}

TEST(Reduce, ErrorsNameOpAndShapes) {
  std::vector<Device> devices = {Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  auto expect_error = [](auto fn, const std::vector<std::string>& parts) {
    try {
      fn();
      ADD_FAILURE() << "no cudl::Error thrown";
    } catch (const Error& e) {
      const std::string m = e.what();
      for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in: " << m;
    }
  };
  for (Device d : devices) {
    SCOPED_TRACE(d.str());
    Tensor x = Tensor::zeros(Shape{3, 4}, DType::f32, d);
    Tensor y3 = Tensor::zeros(Shape{3}, DType::f32, d);
    Tensor y4 = Tensor::zeros(Shape{4}, DType::f32, d);
    expect_error([&] { run_op(OpKind::Reduce, {tv(x)}, {tv(y3)}, reduce_attrs(ReduceOp::Sum, 2, false, false)); },
                 {"Reduce", "axis 2", "(3, 4)"});
    expect_error(
        [&] {
          run_op(OpKind::Reduce, {tv(x)}, {tv(y3)}, reduce_attrs(ReduceOp::Sum, 0, false, false), nullptr, "m/s");
        },
        {"Reduce (m/s)", "(3,)", "(4,)"});
    Tensor dx = Tensor::zeros(Shape{3, 4}, DType::f32, d);
    expect_error(
        [&] {
          run_op(OpKind::ReduceBackward, {tv(x), tv(y4), tv(y4)}, {tv(dx)},
                 reduce_attrs(ReduceOp::Max, 0, false, false));
        },
        {"ReduceBackward", "indices"});
    Tensor wrong_idx = Tensor::zeros(Shape{4}, DType::i64, d);
    expect_error(
        [&] { run_op(OpKind::Argmax, {tv(x)}, {tv(wrong_idx)}, reduce_attrs(ReduceOp::Max, 0, false, false)); },
        {"Argmax", "i64", "i32"});
    Tensor xi = Tensor::zeros(Shape{3, 4}, DType::i32, d);
    expect_error([&] { run_op(OpKind::Reduce, {tv(xi)}, {tv(y4)}, reduce_attrs(ReduceOp::Sum, 0, false, false)); },
                 {"Reduce", "i32", "(3, 4)"});
  }
}
