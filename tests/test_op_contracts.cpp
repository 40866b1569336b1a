// tests/test_op_contracts.cpp — the op contracts of src/ops: the op list (names and arities) agrees with
// the op table, the generic arity check rejects wrong counts, and typed attributes map to their slots.
#include <gtest/gtest.h>

#include <string>

#include "ops/augment.hpp"
#include "ops/common.hpp"
#include "ops/conv.hpp"
#include "ops/data.hpp"
#include "ops/elementwise.hpp"
#include "ops/loss.hpp"
#include "ops/matmul.hpp"
#include "ops/norm.hpp"
#include "ops/optim.hpp"
#include "ops/pool.hpp"
#include "ops/random.hpp"
#include "ops/reduce.hpp"
#include "ops/util.hpp"
#include "testing.hpp"

using namespace cudl;
using cudl::testing::error_message;
using cudl::testing::tv;

namespace {

TEST(OpContracts, ListNamesEveryOpAsTheTableDoes) {
  for (int k = 0; k < kOpCount; ++k) EXPECT_STREQ(ops::kOpNames[k], op_name(static_cast<OpKind>(k))) << "op " << k;
  EXPECT_STREQ(ops::kOpNames[static_cast<int>(OpKind::AugmentImages)], "AugmentImages");
}

TEST(OpContracts, ArityBoundsAreOrdered) {
  for (int k = 0; k < kOpCount; ++k) {
    const ops::OpArity& a = ops::kOpArity[k];
    EXPECT_LE(a.min_in, a.max_in) << ops::kOpNames[k];
    EXPECT_LE(a.min_out, a.max_out) << ops::kOpNames[k];
    EXPECT_GE(a.min_in + a.min_out, 1) << ops::kOpNames[k] << " takes no tensor at all";
  }
  EXPECT_EQ(ops::arity_of(OpKind::LinearBackward).max_in, 6);
  EXPECT_EQ(ops::arity_of(OpKind::Concat).max_in, ops::kAnyCount);
}

TEST(OpContracts, GenericArityCheckNamesOpLabelAndCounts) {
  const Tensor x = Tensor::zeros({3});
  Tensor y = Tensor::zeros({3});
  const std::string m = error_message([&] {
    run_op(OpKind::Unary, {tv(x), tv(x)}, {tv(y)}, ops::UnaryAttrs{UnaryOp::Relu, 0}.to_op_attrs(), nullptr, "act");
  });
  EXPECT_NE(m.find("Unary (act)"), std::string::npos) << m;
  EXPECT_NE(m.find("expected 1..1 inputs and 1..1 outputs, got 2 and 1"), std::string::npos) << m;

  OpCall call;
  call.op = OpKind::Concat;
  call.label = "cat";
  const std::string v = error_message([&] { op_checks::arity(call); });
  EXPECT_NE(v.find("Concat (cat): expected at least 1 inputs and 1..1 outputs, got 0 and 0"), std::string::npos) << v;
}

TEST(OpContracts, TypedAttributesFillTheDocumentedSlots) {
  const OpAttrs conv = ops::Conv2dAttrs{2, 3, 1, 0, 1, 2, 4, Epilogue::Relu}.to_op_attrs();
  EXPECT_EQ(conv.i, (std::array<int64_t, 8>{2, 3, 1, 0, 1, 2, 4, static_cast<int64_t>(Epilogue::Relu)}));
  const ops::Conv2dAttrs back = ops::Conv2dAttrs::from(conv);
  EXPECT_EQ(back.stride_w, 3);
  EXPECT_EQ(back.dil_w, 2);
  EXPECT_EQ(back.groups, 4);
  EXPECT_EQ(back.epilogue, Epilogue::Relu);

  const OpAttrs adam = ops::AdamAttrs{0.8, 0.95, 1e-6, 0.01, true, true, true}.to_op_attrs();
  EXPECT_EQ(adam.f, (std::array<double, 4>{0.8, 0.95, 1e-6, 0.01}));
  EXPECT_EQ(adam.i[0], 1);  // decoupled
  EXPECT_EQ(adam.i[1], 1);  // advance_t
  EXPECT_EQ(adam.i[2], 1);  // epsilon_hat
  const ops::AdamAttrs a = ops::AdamAttrs::from(adam);
  EXPECT_EQ(a.beta2, 0.95);
  EXPECT_TRUE(a.decoupled && a.advance_t && a.epsilon_hat);

  const OpAttrs lb = ops::LinearBackwardAttrs{Epilogue::Gelu, true}.to_op_attrs();
  EXPECT_EQ(lb.i[0], static_cast<int64_t>(Epilogue::Gelu));
  EXPECT_EQ(lb.i[1], 1);
  const OpAttrs red = ops::ReduceAttrs{ReduceOp::Var, -1, true, true}.to_op_attrs();
  EXPECT_EQ(red.i[0], static_cast<int64_t>(ReduceOp::Var));
  EXPECT_EQ(red.i[1], -1);
  EXPECT_EQ(ops::ArgmaxAttrs::from(red).axis, -1);  // Argmax reads the same axis and keepdim slots
  EXPECT_TRUE(ops::ArgmaxAttrs::from(red).keepdim);

  const OpAttrs pool = ops::Pool2dAttrs{3, 2, 2, 1, 1, 0}.to_op_attrs();
  EXPECT_EQ(pool.i[0], 3);
  EXPECT_EQ(pool.i[3], 1);
  EXPECT_EQ(pool.i[4], 1);
  const OpAttrs sgd = ops::SgdAttrs{0.9, 0.1, 5e-4, false, true}.to_op_attrs();
  EXPECT_EQ(sgd.f[1], 0.1);
  EXPECT_EQ(sgd.i[0], 0);
  EXPECT_EQ(sgd.i[1], 1);
  const OpAttrs rnd = ops::RandomUniformAttrs{-1, 2, 7, 9, 3}.to_op_attrs();
  EXPECT_EQ(rnd.f[1], 2);
  EXPECT_EQ(rnd.i[2], 3);
  const OpAttrs loss = ops::LossAttrs{Reduction::Sum, 0.1, 0.5}.to_op_attrs();
  EXPECT_EQ(loss.i[0], static_cast<int64_t>(Reduction::Sum));
  EXPECT_EQ(loss.f[1], 0.5);
  const OpAttrs aug = ops::AugmentAttrs{4, 15, 0.5, 2}.to_op_attrs();
  EXPECT_EQ(aug.i[0], 4);
  EXPECT_EQ(aug.i[1], 2);
  EXPECT_EQ(aug.f[0], 15);
  EXPECT_EQ(ops::SliceAttrs::from(ops::SliceAttrs{-1, 5}.to_op_attrs()).start, 5);
  EXPECT_EQ(ops::IncrementAttrs::from(ops::IncrementAttrs{2.5, 3}.to_op_attrs()).int_step, 3);
  EXPECT_EQ(ops::BatchNormAttrs::from(ops::BatchNormAttrs{1e-3, 0.2}.to_op_attrs()).momentum, 0.2);
}

TEST(OpContracts, ChecksReturnNamedViews) {
  const Tensor x = Tensor::zeros({2, 3}), w = Tensor::zeros({4, 3}), dy = Tensor::zeros({2, 4});
  Tensor dx = Tensor::zeros({2, 3}), dw = Tensor::zeros({4, 3});
  const TensorView in[] = {tv(x), tv(w), tv(dy)};
  const TensorView out[] = {tv(dx), tv(dw), TensorView{}};
  OpCall call;
  call.op = OpKind::LinearBackward;
  call.inputs = in, call.n_inputs = 3, call.outputs = out, call.n_outputs = 3;
  call.attrs = ops::LinearBackwardAttrs{}.to_op_attrs();
  const ops::LinearBackwardArgs args = ops::check_linear_backward_call(call);
  EXPECT_EQ(args.x.data, x.data());
  EXPECT_EQ(args.dy.data, dy.data());
  EXPECT_EQ(args.dw.data, dw.data());
  EXPECT_FALSE(args.db.defined());
  EXPECT_FALSE(args.mask.defined());
  EXPECT_EQ(args.rows, 2);
  EXPECT_EQ(args.in, 3);
  EXPECT_EQ(args.out, 4);
}

}  // namespace
