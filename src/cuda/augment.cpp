// cuda/augment.cpp — CUDA backend entry of the image augmentation family: the checks of
// ops/augment.hpp, then the kernel of kernels/augment.cu.
#include "ops/augment.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/augment.cuh"

namespace cudl {
namespace {

void cuda_augment_images(const OpCall& c) {
  const ops::AugmentArgs pr = ops::check_augment_call(c);
  kernels::augment_images_cuda(pr.x.as<float>(), pr.rng.as<int64_t>(), pr.y.as<float>(), pr.B, pr.C,
                               pr.H, pr.W, pr.max_shift, pr.max_radians, pr.fill, pr.stream, cuda_context(c).stream());
}

}  // namespace

void register_cuda_augment_ops(OpTable& t) { t.add(OpKind::AugmentImages, cuda_augment_images); }

}  // namespace cudl
