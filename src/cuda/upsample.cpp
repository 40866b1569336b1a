// cuda/upsample.cpp — CUDA backend entries of the upsampling op family: the check of
// ops/upsample.hpp, then the kernels of kernels/upsample.cu on the context's stream.
#include "ops/upsample.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/upsample.cuh"

namespace cudl {
namespace {

kernels::UpsampleShape shape_of(const ops::Upsample2dArgs& g) {
  return {g.N * g.C, g.H, g.W, g.sh, g.sw, g.bilinear ? 1 : 0};
}

void cuda_upsample2d(const OpCall& c) {
  const ops::Upsample2dArgs g = ops::check_upsample2d_call(c);
  kernels::upsample2d_cuda(g.x.as<float>(), g.y.as<float>(), shape_of(g), cuda_context(c).stream());
}

void cuda_upsample2d_backward(const OpCall& c) {
  const ops::Upsample2dArgs g = ops::check_upsample2d_call(c);
  kernels::upsample2d_backward_cuda(g.dy.as<float>(), g.dx.as<float>(), shape_of(g), cuda_context(c).stream());
}

}  // namespace

void register_cuda_upsample_ops(OpTable& t) {
  t.add(OpKind::Upsample2d, cuda_upsample2d);
  t.add(OpKind::Upsample2dBackward, cuda_upsample2d_backward);
}

}  // namespace cudl
