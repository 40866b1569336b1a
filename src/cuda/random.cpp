// cuda/random.cpp — CUDA backend entries of the random op family: the checks of
// ops/random.hpp, then the Philox kernels of kernels/random.cu.
#include "ops/random.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/random.cuh"

namespace cudl {
namespace {

void cuda_dropout(const OpCall& c) {
  const ops::DropoutArgs pr = ops::check_dropout_call(c);
  kernels::dropout_cuda(pr.x.as<float>(), pr.rng.as<int64_t>(), pr.y.as<float>(),
                        pr.mask.as<uint8_t>(), pr.n, pr.threshold, pr.scale, pr.stream,
                        cuda_context(c).stream());
}

void cuda_dropout_backward(const OpCall& c) {
  const ops::DropoutBackwardArgs pr = ops::check_dropout_backward_call(c);
  kernels::dropout_backward_cuda(pr.dy.as<float>(), pr.mask.as<uint8_t>(), pr.dx.as<float>(), pr.n,
                                 pr.scale, cuda_context(c).stream());
}

void cuda_random_uniform(const OpCall& c) {
  const ops::RandomFillArgs pr = ops::check_random_fill_call(c);
  kernels::random_uniform_cuda(pr.y.as<float>(), pr.n, pr.seed, pr.offset, pr.stream, pr.a, pr.b,
                               cuda_context(c).stream());
}

void cuda_random_normal(const OpCall& c) {
  const ops::RandomFillArgs pr = ops::check_random_fill_call(c);
  kernels::random_normal_cuda(pr.y.as<float>(), pr.rng.as<int64_t>(), pr.n, pr.seed, pr.offset, pr.stream, pr.a,
                              pr.b, cuda_context(c).stream());
}

}  // namespace

void register_cuda_random_ops(OpTable& t) {
  t.add(OpKind::Dropout, cuda_dropout);
  t.add(OpKind::DropoutBackward, cuda_dropout_backward);
  t.add(OpKind::RandomUniform, cuda_random_uniform);
  t.add(OpKind::RandomNormal, cuda_random_normal);
}

}  // namespace cudl
