// tests/test_graph.cpp — autodiff vs finite differences on whole graphs (MLP, CNN, residual),
// the memory planner (reuse, soundness by an independent interval check, in-place correctness).
#include <gtest/gtest.h>

#include "graph/autodiff.hpp"
#include "graph/executor.hpp"
#include "graph/planner.hpp"
#include "nn/build_context.hpp"
#include "testing.hpp"

using namespace cudl;
using namespace cudl::graph;
using cudl::testing::all_close;
using cudl::testing::random_labels;
using cudl::testing::random_tensor;

namespace {

// A small network built directly from layers: forward, cross-entropy loss with fused gradient,
// backward to every parameter. No optimizer, so the step can be re-run for finite differences.
struct Net {
  Graph g;
  detail::BuildContext c;
  ValueId x = kNone, y = kNone, out = kNone, loss = kNone;
  Tensor xt, yt;
  std::unique_ptr<Executor> exec;

  Net(const std::vector<int64_t>& sample, int64_t batch, int classes,
      const std::function<ValueId(detail::BuildContext&, ValueId)>& body, Device dev = Device::cpu(),
      bool backward = true) {
    c.g = &g;
    c.batch = batch;
    c.training = true;
    c.device = dev;
    c.seed = 7;
    c.rng_tensor = Tensor::from_vector<int64_t>({5, 0}, Shape{2}, dev);
    std::vector<int64_t> xd{batch};
    xd.insert(xd.end(), sample.begin(), sample.end());
    xt = random_tensor(Shape(xd), 11, -1, 1, dev);
    yt = random_labels(batch, classes, 12, dev);
    x = g.add_value("x", Shape(xd), DType::f32, Role::Input);
    y = g.add_value("y", Shape{batch}, DType::i32, Role::Input);
    c.bound[x] = xt;
    c.bound[y] = yt;
    out = body(c, x);
    const int forward_end = static_cast<int>(g.nodes().size());
    loss = g.add_value("loss", Shape{1}, DType::f32, Role::Intermediate);
    ValueId dout = backward ? g.add_value("dout", g.value(out).shape, DType::f32, Role::Intermediate) : kNone;
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(Reduction::Mean);
    g.add_node(OpKind::CrossEntropyLoss, a, {out, y, kNone}, {loss, dout}, "loss", Phase::Loss);
    if (backward) {
      BackwardSpec spec;
      spec.forward_end = forward_end;
      spec.seeds[out] = dout;
      for (const auto& p : c.params)
        if (p.grad != kNone) spec.param_grads[p.value] = p.grad;
      build_backward(g, spec);
    }
    ExecutorOptions eo;
    eo.plan.keep_to_end = {loss};
    exec = std::make_unique<Executor>(g, dev, c.bound, eo);
  }

  double run_loss() {
    exec->run();
    return exec->tensor(loss).item(0);
  }
};

// Builds layer l on `in` as a model would (unnamed layers get a name unique within this test
// program, as a model names its layers uniquely).
ValueId apply(detail::BuildContext& c, const LayerPtr& l, std::vector<int> in) {
  static int unnamed = 0;
  if (!detail::LayerAccess::has_name(*l)) detail::LayerAccess::assign_name(*l, l->kind() + std::to_string(++unnamed));
  c.layer = l.get();
  c.layer_name = l->name();
  auto out = detail::LayerAccess::builtin(*l).build(c, in);
  c.layer = nullptr;
  return out.at(0);
}

// Checks every parameter gradient of `net` against central differences of its loss.
void check_gradients(Net& net, double eps = 1e-3, double atol = 2e-3, double rtol = 5e-2, int max_elems = 40) {
  net.run_loss();
  for (const auto& p : net.c.params) {
    if (p.grad == kNone) continue;
    Tensor grad = net.exec->tensor(p.grad).clone();
    Tensor param = p.tensor;  // shares storage with the executor's binding
    float* w = param.data_as<float>();
    const int64_t n = param.numel();
    const int64_t stride = std::max<int64_t>(1, n / max_elems);
    std::vector<float> an, num;
    for (int64_t i = 0; i < n; i += stride) {
      const float orig = w[i];
      w[i] = orig + static_cast<float>(eps);
      const double up = net.run_loss();
      w[i] = orig - static_cast<float>(eps);
      const double down = net.run_loss();
      w[i] = orig;
      an.push_back(grad.data_as<float>()[i]);
      num.push_back(static_cast<float>((up - down) / (2 * eps)));
    }
    const int64_t k = static_cast<int64_t>(an.size());
    EXPECT_TRUE(all_close(Tensor::from_vector(an, Shape{k}), Tensor::from_vector(num, Shape{k}), atol, rtol))
        << "parameter " << p.layer->name() << "." << p.name;
  }
}

}  // namespace

TEST(Autodiff, MlpMatchesFiniteDifferences) {
  auto d1 = layers::Dense(7, "tanh"), d2 = layers::Dense(5, "gelu_tanh"), d3 = layers::Dense(4);
  Net net({6}, 3, 4,
          [&](detail::BuildContext& c, ValueId x) { return apply(c, d3, {apply(c, d2, {apply(c, d1, {x})})}); });
  check_gradients(net);
}

// Dense(relu) -> Dense: the upper LinearBackward takes dx through the lower relu with its mask
// (i[1], one DRELU_BGRAD GEMM on CUDA) and writes the lower bias gradient; the lower one then runs
// without its epilogue. Gradients equal those of the same net with the relu as a separate layer.
TEST(Autodiff, ReluBelowALinearIsFusedIntoItsBackward) {
  auto d1 = layers::Dense(9, "relu"), d2 = layers::Dense(6, "relu"), d3 = layers::Dense(4);
  Net fused({5}, 7, 4,
            [&](detail::BuildContext& c, ValueId x) { return apply(c, d3, {apply(c, d2, {apply(c, d1, {x})})}); });
  auto e1 = layers::Dense(9), e2 = layers::Dense(6), e3 = layers::Dense(4);
  auto r1 = layers::Activation("relu"), r2 = layers::Activation("relu");
  Net plain({5}, 7, 4, [&](detail::BuildContext& c, ValueId x) {
    return apply(c, e3, {apply(c, r2, {apply(c, e2, {apply(c, r1, {apply(c, e1, {x})})})})});
  });
  ASSERT_EQ(fused.c.params.size(), plain.c.params.size());
  for (size_t i = 0; i < fused.c.params.size(); ++i) {
    Tensor dst = plain.c.params[i].tensor;
    dst.copy_from(fused.c.params[i].tensor);
  }
  int through = 0, masks = 0;
  for (const Node& n : fused.g.nodes()) {
    if (n.op == OpKind::Linear && n.outputs.size() > 1 && n.outputs[1] != kNone) {
      ++masks;
      EXPECT_EQ(fused.g.value(n.outputs[1]).dtype, DType::u8) << n.label;
    }
    if (n.op != OpKind::LinearBackward) continue;
    if (n.attrs.i[1]) {
      ++through;
      EXPECT_NE(n.outputs.at(3), kNone) << n.label << " writes the bias gradient of the layer below";
    }
    if (n.layer == d1->name() || n.layer == d2->name()) {
      EXPECT_EQ(n.attrs.i[0], static_cast<int64_t>(Epilogue::None)) << n.label;
      EXPECT_EQ(n.outputs.at(2), kNone) << n.label << ": its db came from the layer above";
    }
  }
  EXPECT_EQ(through, 2);
  EXPECT_EQ(masks, 2);
  EXPECT_NEAR(fused.run_loss(), plain.run_loss(), 1e-6);
  for (size_t i = 0; i < fused.c.params.size(); ++i) {
    const auto& pf = fused.c.params[i];
    EXPECT_TRUE(all_close(fused.exec->tensor(pf.grad), plain.exec->tensor(plain.c.params[i].grad), 1e-6, 1e-5))
        << pf.layer->name() << "." << pf.name;
  }
}

TEST(Autodiff, ReluOutputWithTwoConsumersIsNotFused) {
  // h = relu(d1 x) feeds d2 and d3: its gradient is a sum, so no layer may take dx through the relu.
  auto d1 = layers::Dense(5, "relu"), d2 = layers::Dense(5), d3 = layers::Dense(5), d4 = layers::Dense(3);
  Net net({4}, 3, 3, [&](detail::BuildContext& c, ValueId x) {
    ValueId h = apply(c, d1, {x});
    ValueId a = apply(c, d2, {h}), b = apply(c, d3, {h});
    ValueId s = c.g->add_value("sum", c.g->value(a).shape, DType::f32, Role::Intermediate);
    OpAttrs add;
    add.i[0] = static_cast<int64_t>(BinaryOp::Add);
    c.g->add_node(OpKind::Binary, add, {a, b}, {s}, "sum", Phase::Forward);
    return apply(c, d4, {s});
  });
  for (const Node& n : net.g.nodes())
    if (n.op == OpKind::LinearBackward) EXPECT_EQ(n.attrs.i[1], 0) << n.label;
  check_gradients(net);
}

TEST(Autodiff, CnnMatchesFiniteDifferences) {
  auto conv = layers::Conv2d(Conv2dOptions(3, 3).padding(1).activation("tanh")), pool = layers::AvgPool2d(2),
       bn = layers::BatchNorm();
  auto flat = layers::Flatten(), dense = layers::Dense(3);
  Net net({2, 6, 6}, 2, 3, [&](detail::BuildContext& c, ValueId x) {
    ValueId h = apply(c, conv, {x});
    h = apply(c, bn, {h});
    h = apply(c, pool, {h});
    return apply(c, dense, {apply(c, flat, {h})});
  });
  check_gradients(net, 1e-3, 3e-3, 6e-2);
}

// The generative layers' rules: Conv2dTranspose (dx, dw, db; output padding, groups, dilation)
// and Upsample2d (nearest and bilinear) between parameter layers, so every rule's dx is checked too.
TEST(Autodiff, GenerativeLayersMatchFiniteDifferences) {
  auto conv = layers::Conv2d(Conv2dOptions(4, 3).padding(1).activation("tanh"));
  auto up1 = layers::Conv2dTranspose(Conv2dTransposeOptions(4, 3).stride(2).padding(1).output_padding(1)
                                         .activation("tanh"));
  auto near = layers::UpSampling2d(2, "nearest"), bil = layers::UpSampling2d(3, "bilinear");
  auto up2 = layers::Conv2dTranspose(Conv2dTransposeOptions(2, 2).dilation(2).groups(2).activation("tanh"));
  auto pool = layers::AvgPool2d(4), flat = layers::Flatten(), dense = layers::Dense(3);
  Net net({2, 3, 3}, 2, 3, [&](detail::BuildContext& c, ValueId x) {
    ValueId h = apply(c, conv, {x});  // (4, 3, 3)
    h = apply(c, up1, {h});           // (4, 6, 6)
    h = apply(c, near, {h});          // (4, 12, 12)
    h = apply(c, up2, {h});           // (2, 14, 14)
    h = apply(c, pool, {h});          // (2, 3, 3)
    h = apply(c, bil, {h});           // (2, 9, 9)
    return apply(c, dense, {apply(c, flat, {h})});
  });
  check_gradients(net, 1e-3, 3e-3, 6e-2);
}

TEST(Autodiff, ResidualFanOutAccumulates) {
  // x -> d1 -> h; out = d3(h + tanh(d2(h))): h feeds two consumers, so its gradient is summed.
  auto d1 = layers::Dense(5, "tanh"), d2 = layers::Dense(5), act = layers::Activation("tanh"), d3 = layers::Dense(3);
  Net net({4}, 3, 3, [&](detail::BuildContext& c, ValueId x) {
    ValueId h = apply(c, d1, {x});
    ValueId f = apply(c, act, {apply(c, d2, {h})});
    ValueId s = c.g->add_value("sum", c.g->value(h).shape, DType::f32, Role::Intermediate);
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(BinaryOp::Add);
    c.g->add_node(OpKind::Binary, a, {h, f}, {s}, "residual", Phase::Forward);
    return apply(c, d3, {s});
  });
  check_gradients(net);
}

TEST(Autodiff, SharedLayerAccumulatesIntoOneGradient) {
  auto d = layers::Dense(4, "tanh"), head = layers::Dense(2);
  Net net({4}, 2, 2,
          [&](detail::BuildContext& c, ValueId x) { return apply(c, head, {apply(c, d, {apply(c, d, {x})})}); });
  int grads = 0;
  for (const auto& p : net.c.params) grads += p.grad != kNone && p.layer == d.get();
  EXPECT_EQ(grads, 2);  // kernel and bias, each bound once although the layer is applied twice
  check_gradients(net);
}

TEST(Autodiff, FrozenLayerGetsNoGradient) {
  auto d1 = layers::Dense(4, "tanh"), d2 = layers::Dense(3);
  d1->set_trainable(false);
  Net net({5}, 2, 3, [&](detail::BuildContext& c, ValueId x) { return apply(c, d2, {apply(c, d1, {x})}); });
  for (const auto& p : net.c.params) EXPECT_EQ(p.grad == kNone, p.layer == d1.get()) << p.layer->name();
  for (const Node& n : net.g.nodes())
    if (n.phase == Phase::Backward && n.op == OpKind::LinearBackward && n.layer == d1->name())
      EXPECT_EQ(n.outputs[1], kNone) << "no weight gradient for a frozen layer";
  check_gradients(net);
}

TEST(Graph, InsertedNodesMoveLaterNodesAndTheirProducersUp) {
  Graph g;
  const ValueId a = g.add_value("a", Shape{4}, DType::f32, Role::Intermediate);
  const ValueId b = g.add_value("b", Shape{4}, DType::f32, Role::Intermediate);
  g.add_node(OpKind::Fill, {}, {}, {a}, "l", Phase::Forward);
  g.add_node(OpKind::Fill, {}, {}, {b}, "l", Phase::Forward);
  EXPECT_EQ(g.insert_node(1, OpKind::Increment, {}, {a}, "mid", Phase::Forward), 1);
  ASSERT_EQ(g.nodes().size(), 3u);
  EXPECT_EQ(g.nodes()[1].label, "mid/Increment");
  EXPECT_EQ(g.nodes()[2].outputs, std::vector<ValueId>{b});
  EXPECT_EQ(g.value(a).producer, 0);
  EXPECT_EQ(g.value(b).producer, 2) << "b's producer moved up with it";
  EXPECT_NE(cudl::testing::error_message([&] { g.insert_node(5, OpKind::Increment, {}, {a}, "x", Phase::Forward); })
                .find("cannot insert Increment at node 5 of 3"),
            std::string::npos);
}

TEST(Planner, ArenaReusesMemoryAndNoLiveValuesOverlap) {
  std::vector<LayerPtr> ls;
  for (int i = 0; i < 16; ++i) ls.push_back(layers::Dense(64, "tanh"));
  ls.push_back(layers::Dense(10));
  Net net({64}, 8, 10, [&](detail::BuildContext& c, ValueId x) {
    for (auto& l : ls) x = apply(c, l, {x});
    return x;
  });
  const Plan& plan = net.exec->plan();
  // Training keeps the forward activations for the backward pass, so reuse is partial.
  EXPECT_LT(plan.arena_bytes, plan.intermediate_bytes)
      << "arena " << plan.arena_bytes << " of " << plan.intermediate_bytes;
  EXPECT_EQ(verify_plan(net.exec->graph(), plan), "");
  // The independent check must catch a broken plan: put two simultaneously live values together.
  Plan broken = plan;
  const Graph& g = net.exec->graph();
  ValueId a = kNone, b = kNone;
  for (const Node& n : g.nodes())
    if (n.op == OpKind::Linear && n.phase == Phase::Forward) {
      (a == kNone ? a : b) = n.outputs[0];
      if (b != kNone) break;
    }
  ASSERT_NE(b, kNone);
  broken.offset[b] = broken.offset[a];
  EXPECT_NE(verify_plan(g, broken), "");
}

TEST(Planner, InPlaceReuseGivesTheSameAnswer) {
  std::vector<LayerPtr> ls{layers::Dense(16), layers::Activation("tanh"), layers::Dense(16),
                           layers::Activation("sigmoid"), layers::Dense(4)};
  auto body = [&](detail::BuildContext& c, ValueId x) {
    for (auto& l : ls) x = apply(c, l, {x});
    return x;
  };
  Net in_place({8}, 4, 4, body, Device::cpu(), /*backward=*/false);
  EXPECT_GT(in_place.exec->plan().in_place_nodes, 0);
  // Inference needs only a couple of live activations at a time.
  EXPECT_LT(in_place.exec->plan().arena_bytes, in_place.exec->plan().intermediate_bytes / 2);
  EXPECT_EQ(verify_plan(in_place.exec->graph(), in_place.exec->plan()), "");
  const double l1 = in_place.run_loss();
  // Same graph, planned without in-place reuse.
  ExecutorOptions eo;
  eo.plan.in_place = false;
  eo.plan.keep_to_end = {in_place.loss};
  Executor plain(in_place.g, Device::cpu(), in_place.c.bound, eo);
  EXPECT_EQ(plain.plan().in_place_nodes, 0);
  plain.run();
  EXPECT_EQ(plain.tensor(in_place.loss).item(0), l1);
}

TEST(Graph, ShapeErrorsNameTheLayerAndBothShapes) {
  auto x = Input(Shape{3, 8, 8});
  try {
    (*layers::Dense(DenseOptions(4).name("head")))(x);
    auto y = (*layers::Conv2d(Conv2dOptions(4, 9).name("big")))(x);
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("big"), std::string::npos) << m;
    EXPECT_NE(m.find("(3, 8, 8)"), std::string::npos) << m;
  }
  auto a = Input(Shape{4}), b = Input(Shape{5});
  try {
    add(a, b);
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("(4,)"), std::string::npos) << m;
    EXPECT_NE(m.find("(5,)"), std::string::npos) << m;
  }
}

#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"

TEST(Executor, ReplayedStepIsOneGraphLaunchWithNoAllocSyncOrUpload) {
  CUDL_REQUIRE_CUDA();
  auto d1 = layers::Dense(16, "relu"), d2 = layers::Dense(4);
  Net net(
      {8}, 4, 4, [&](detail::BuildContext& c, ValueId x) { return apply(c, d2, {apply(c, d1, {x})}); },
      Device::cuda(0));
  // What one eager step launches (kernels; cuBLASLt calls are library work, not kernels).
  ExecutorOptions eager_opts;
  eager_opts.cuda_graphs = false;
  Executor eager(net.g, Device::cuda(0), net.c.bound, eager_opts);
  eager.run();
  eager.synchronize();
  cudl_emu::reset_counters();
  eager.run();
  eager.synchronize();
  const uint64_t kernels_per_step = cudl_emu::counters().kernel_launches;
  EXPECT_GT(kernels_per_step, 0u);
  net.exec->run();  // warm-up (eager)
  net.exec->run();  // capture + launch
  net.exec->synchronize();
  EXPECT_TRUE(net.exec->replaying());
  cudl_emu::reset_counters();
  for (int i = 0; i < 3; ++i) net.exec->run();
  const auto c = cudl_emu::counters();
  EXPECT_EQ(c.graph_launches, 3u);
  EXPECT_EQ(c.mallocs, 0u);
  EXPECT_EQ(c.syncs, 0u);
  EXPECT_EQ(c.memcpy_h2d, 0u);
  EXPECT_EQ(c.memcpy_d2h, 0u);
  net.exec->synchronize();
  EXPECT_EQ(cudl_emu::counters().kernel_launches, 3u * kernels_per_step)
      << "every kernel of the step ran from the graph";
}

// A step whose CUDA graph cannot be instantiated runs eagerly, then and from then on, with the
// same results as an executor that never captures.
TEST(Executor, FailedCaptureFallsBackToEagerSteps) {
  CUDL_REQUIRE_CUDA();
#if defined(CUDL_EMULATED)
  auto d1 = layers::Dense(16, "relu"), d2 = layers::Dense(4);
  Net net(
      {8}, 4, 4, [&](detail::BuildContext& c, ValueId x) { return apply(c, d2, {apply(c, d1, {x})}); },
      Device::cuda(0));
  ExecutorOptions eager_opts;
  eager_opts.cuda_graphs = false;
  eager_opts.plan.keep_to_end = {net.loss};
  Executor eager(net.g, Device::cuda(0), net.c.bound, eager_opts);
  ExecutorOptions graph_opts;
  graph_opts.plan.keep_to_end = {net.loss};
  Executor graphed(net.g, Device::cuda(0), net.c.bound, graph_opts);
  cudl_emu::fail_next_graph_instantiates(1);
  for (int i = 0; i < 4; ++i) {
    eager.run();
    const float want = static_cast<float>(eager.tensor(net.loss).item(0));
    graphed.run();  // run 2 tries to capture, fails, runs eagerly; later runs never capture
    EXPECT_EQ(static_cast<float>(graphed.tensor(net.loss).item(0)), want) << "run " << i;
  }
  EXPECT_FALSE(graphed.replaying());
  cudl_emu::reset_counters();
  graphed.run();
  graphed.synchronize();
  EXPECT_EQ(cudl_emu::counters().graph_launches, 0u);
  EXPECT_GT(cudl_emu::counters().kernel_launches, 0u);
#else
  GTEST_SKIP() << "injects the failure through the emulator (an emulated build)";
#endif
}

TEST(Executor, CudaMatchesCpuOnAWholeStep) {
  CUDL_REQUIRE_CUDA();
  for (int schedule_run = 0; schedule_run < 1; ++schedule_run) {
    auto d1 = layers::Dense(DenseOptions(9).activation("relu").name("e1")),
         d2 = layers::Dense(DenseOptions(3).name("e2"));
    Net cpu({5}, 6, 3, [&](detail::BuildContext& c, ValueId x) { return apply(c, d2, {apply(c, d1, {x})}); });
    // Same layers, parameters copied to the device (the layers own CPU tensors now).
    auto g1 = layers::Dense(DenseOptions(9).activation("relu").name("g1")),
         g2 = layers::Dense(DenseOptions(3).name("g2"));
    Net gpu(
        {5}, 6, 3, [&](detail::BuildContext& c, ValueId x) { return apply(c, g2, {apply(c, g1, {x})}); },
        Device::cuda(0));
    for (size_t i = 0; i < cpu.c.params.size(); ++i) gpu.c.params[i].tensor.copy_from(cpu.c.params[i].tensor);
    const double lc = cpu.run_loss(), lg = gpu.run_loss();
    EXPECT_NEAR(lc, lg, 1e-5 * std::max(1.0, std::fabs(lc)));
    for (size_t i = 0; i < cpu.c.params.size(); ++i)
      EXPECT_TRUE(all_close(gpu.exec->tensor(gpu.c.params[i].grad).to(Device::cpu()),
                            cpu.exec->tensor(cpu.c.params[i].grad), 1e-5, 1e-4))
          << cpu.c.params[i].name;
  }
}
#endif
