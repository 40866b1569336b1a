// cuda/random.cpp — CUDA backend entries of the random op family: the CPU reference's checks
// (cpu/random.hpp), then the Philox kernels of kernels/random.cu.
#include "ops/random.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/random.cuh"

namespace cudl {
namespace {

void cuda_dropout(const OpCall& c) {
  const DropoutProblem pr = check_dropout_call(c);
  kernels::dropout_cuda(c.inputs[0].as<float>(), c.inputs[1].as<int64_t>(), c.outputs[0].as<float>(),
                        pr.has_mask ? c.outputs[1].as<uint8_t>() : nullptr, pr.n, pr.threshold, pr.scale, pr.stream,
                        cuda_context(c).stream());
}

void cuda_dropout_backward(const OpCall& c) {
  const DropoutBackwardProblem pr = check_dropout_backward_call(c);
  kernels::dropout_backward_cuda(c.inputs[0].as<float>(), c.inputs[1].as<uint8_t>(), c.outputs[0].as<float>(), pr.n,
                                 pr.scale, cuda_context(c).stream());
}

void cuda_random_uniform(const OpCall& c) {
  const RandomFillProblem pr = check_random_fill_call(c);
  kernels::random_uniform_cuda(c.outputs[0].as<float>(), pr.n, pr.seed, pr.offset, pr.stream, pr.a, pr.b,
                               cuda_context(c).stream());
}

void cuda_random_normal(const OpCall& c) {
  const RandomFillProblem pr = check_random_fill_call(c);
  kernels::random_normal_cuda(c.outputs[0].as<float>(), pr.n, pr.seed, pr.offset, pr.stream, pr.a, pr.b,
                              cuda_context(c).stream());
}

}  // namespace

void register_cuda_random_ops(OpTable& t) {
  t.add(OpKind::Dropout, cuda_dropout);
  t.add(OpKind::DropoutBackward, cuda_dropout_backward);
  t.add(OpKind::RandomUniform, cuda_random_uniform);
  t.add(OpKind::RandomNormal, cuda_random_normal);
}

}  // namespace cudl
