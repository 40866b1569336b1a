// cuda/random.cpp — CUDA backend entries of the random op family: the checks of
// ops/random.hpp, then the Philox kernels of kernels/random.cu (dropout for the call's storage type).
#include "ops/random.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "cuda/storage_type.hpp"
#include "kernels/random.cuh"

namespace cudl {
namespace {

void cuda_dropout(const OpCall& c) {
  const ops::DropoutArgs pr = ops::check_dropout_call(c);
  with_storage_type(pr.storage, "Dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::dropout_cuda<T>(pr.x.as<T>(), pr.rng.as<int64_t>(), pr.y.as<T>(), pr.mask.as<uint8_t>(), pr.n,
                             pr.threshold, pr.scale, pr.stream, cuda_context(c).stream());
  });
}

void cuda_dropout_backward(const OpCall& c) {
  const ops::DropoutBackwardArgs pr = ops::check_dropout_backward_call(c);
  with_storage_type(pr.storage, "DropoutBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::dropout_backward_cuda<T>(pr.dy.as<T>(), pr.mask.as<uint8_t>(), pr.dx.as<T>(), pr.n, pr.scale,
                                      cuda_context(c).stream());
  });
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
