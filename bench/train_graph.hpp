// bench/train_graph.hpp — the training step of the sample's models (samples/mnist/models.hpp) built
// node for node as Model::fit builds it (src/train/model.cpp train_program), for benchmarks that
// need the graph and the executor themselves: per-node bytes, dispatch cost, single steps.
#pragma once

#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cudl/cudl.hpp"
#include "graph/autodiff.hpp"
#include "graph/executor.hpp"
#include "nn/build_context.hpp"
#include "samples/mnist/models.hpp"

namespace cudl_bench {

/// The models of cudl-mnist, from the sample's own header (the same one its test trains).
inline cudl::Sequential build_mnist_model(const std::string& kind) { return mnist::build(kind); }

/// Synthetic MNIST-shaped data: u8 images (n, 1, 28, 28) and i32 labels (n,), on the host.
inline cudl::Dataset synthetic_mnist(int64_t n, uint32_t seed = 1) {
  std::mt19937 g(seed);
  std::vector<uint8_t> x(static_cast<size_t>(n) * 784);
  std::vector<int32_t> y(n);
  for (auto& v : x) v = static_cast<uint8_t>(g() & 0xff);
  for (auto& v : y) v = static_cast<int32_t>(g() % 10);
  cudl::Dataset d;
  d.x = cudl::Tensor::from_vector(x, cudl::Shape{n, 1, 28, 28});
  d.y = cudl::Tensor::from_vector(y, cudl::Shape{n});
  d.mean = 0.1307f;
  d.std = 0.3081f;
  return d;
}

/// One training step of `model` (Adam 1e-3, sparse softmax cross-entropy, accuracy metric) built
/// node for node as Model::Impl::train_program builds it: data nodes (batch indices, cursor,
/// image/label gathers), forward, loss + metric accumulators, backward, optimizer (t += 1, one
/// fused Adam node), RNG offset increment. Parameters are the layers' own tensors.
struct TrainStep {
  cudl::graph::Graph g;
  cudl::detail::BuildContext c;
  std::unique_ptr<cudl::graph::Executor> exec;
  std::vector<cudl::Tensor> owned;  // data, state, optimizer slots
  int forward_end = 0;

  TrainStep(cudl::Model& model, const cudl::Dataset& data, int64_t batch, cudl::Device dev,
            const cudl::graph::ExecutorOptions& options = {}, uint64_t seed = 1) {
    using namespace cudl;
    using namespace cudl::graph;
    c.g = &g;
    c.batch = batch;
    c.training = true;
    c.device = dev;
    c.seed = seed;
    c.rng_tensor = Tensor::from_vector<int64_t>({static_cast<int64_t>(seed), 0}, Shape{2}, dev);
    const int64_t N = data.size();
    // data nodes
    Tensor dx = data.x.to(dev), dy = data.y.to(dev);
    std::vector<int32_t> order(N);
    for (int64_t i = 0; i < N; ++i) order[i] = static_cast<int32_t>(i);
    Tensor perm = Tensor::from_vector(order, Shape{N}, dev);
    Tensor cursor = Tensor::zeros(Shape{1}, DType::i64, dev);
    ValueId vx = bind("data.x", dx, Role::Input), vy = bind("data.y", dy, Role::Input);
    ValueId vp = bind("data.perm", perm, Role::Input), vc = bind("data.cursor", cursor, Role::State);
    ValueId idx = g.add_value("data.idx", Shape{batch}, DType::i32, Role::Intermediate);
    g.add_node(OpKind::BatchIndices, {}, {vp, vc}, {idx}, "data", Phase::Forward);
    OpAttrs inc;
    inc.i[0] = batch;
    g.add_node(OpKind::Increment, inc, {}, {vc}, "data", Phase::Forward);
    ValueId xb = g.add_value("data.batch_x", Shape{batch, 1, 28, 28}, DType::f32, Role::Intermediate);
    OpAttrs norm;
    norm.f[0] = data.mean;
    norm.f[1] = data.std;
    g.add_node(OpKind::GatherImages, norm, {vx, idx}, {xb}, "data", Phase::Forward);
    ValueId yb = g.add_value("data.batch_y", Shape{batch}, DType::i32, Role::Intermediate);
    g.add_node(OpKind::Gather, {}, {vy, idx}, {yb}, "data", Phase::Forward);
    // forward (a Sequential: each layer applied to the previous output)
    ValueId h = xb;
    for (const LayerPtr& l : model.layers()) {
      c.layer = l.get();
      h = l->build(c, {h}).at(0);
      c.layer = nullptr;
    }
    const ValueId out = h;
    forward_end = static_cast<int>(g.nodes().size());
    // loss + metrics
    OpAttrs la;
    la.i[0] = static_cast<int64_t>(Reduction::Mean);
    ValueId loss = g.add_value("loss.value", Shape{1}, DType::f32, Role::Intermediate);
    ValueId dpred = g.add_value("loss.dpred", g.value(out).shape, DType::f32, Role::Intermediate);
    ValueId correct = g.add_value("loss.correct", Shape{1}, DType::i32, Role::Intermediate);
    g.add_node(OpKind::CrossEntropyLoss, la, {out, yb, kNone}, {loss, dpred, correct}, "loss", Phase::Loss);
    OpAttrs sb;
    sb.f[0] = static_cast<double>(batch);
    g.add_node(OpKind::Accumulate, sb, {loss},
               {bind("metric.loss", Tensor::zeros(Shape{1}, DType::f32, dev), Role::State)}, "metrics", Phase::Metrics);
    OpAttrs one;
    one.f[0] = 1.0;
    g.add_node(OpKind::Accumulate, one, {correct},
               {bind("metric.correct", Tensor::zeros(Shape{1}, DType::f32, dev), Role::State)}, "metrics",
               Phase::Metrics);
    // backward
    BackwardSpec spec;
    spec.forward_end = forward_end;
    spec.seeds[out] = dpred;
    for (const auto& p : c.params)
      if (p.grad != kNone) spec.param_grads[p.value] = p.grad;
    build_backward(g, spec);
    // optimizer: t += 1, then one fused Adam node over (hyper, param, grad, m, v)...
    ValueId hv = bind("optim.hyper", Tensor::from_vector<float>({1e-3f, 0.f}, Shape{2}, dev), Role::State);
    ValueId t = g.add_view(hv, Shape{1}, "optimizer", Phase::Optimizer, sizeof(float), "optim.t");
    OpAttrs tinc;
    tinc.f[0] = 1.0;
    g.add_node(OpKind::Increment, tinc, {}, {t}, "optimizer", Phase::Optimizer);
    OpAttrs aa;
    aa.f[0] = 0.9;
    aa.f[1] = 0.999;
    aa.f[2] = 1e-8;
    aa.f[3] = 0;
    std::vector<ValueId> ins{hv};
    for (const auto& p : c.params) {
      if (p.grad == kNone) continue;
      ins.push_back(p.value);
      ins.push_back(p.grad);
      for (int k = 0; k < 2; ++k)
        ins.push_back(bind("optim." + p.layer->name() + "." + p.name + "." + std::to_string(k),
                           Tensor::zeros(p.tensor.shape(), DType::f32, dev), Role::State));
    }
    g.add_node(OpKind::AdamStep, aa, ins, {}, "optimizer", Phase::Optimizer);
    if (c.rng != kNone) {
      ValueId off = g.add_view(c.rng, Shape{1}, "rng", Phase::Optimizer, sizeof(int64_t), "rng.offset");
      OpAttrs ri;
      ri.i[0] = 1;
      g.add_node(OpKind::Increment, ri, {}, {off}, "rng", Phase::Optimizer);
    }
    exec = std::make_unique<Executor>(g, dev, c.bound, options);
  }

  cudl::graph::ValueId bind(const std::string& name, const cudl::Tensor& t, cudl::graph::Role role) {
    cudl::graph::ValueId v = g.add_value(name, t.shape(), t.dtype(), role);
    c.bound[v] = t;
    owned.push_back(t);
    return v;
  }
};

}  // namespace cudl_bench
