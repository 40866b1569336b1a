// cuda/augment.cpp — CUDA backend entry of the image augmentation family: the CPU reference's
// checks (cpu/augment.hpp), then the kernel of kernels/augment.cu.
#include "ops/augment.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/augment.cuh"

namespace cudl {
namespace {

void cuda_augment_images(const OpCall& c) {
  const AugmentProblem pr = check_augment_call(c);
  kernels::augment_images_cuda(c.inputs[0].as<float>(), c.inputs[1].as<int64_t>(), c.outputs[0].as<float>(), pr.B, pr.C,
                               pr.H, pr.W, pr.max_shift, pr.max_radians, pr.fill, pr.stream, cuda_context(c).stream());
}

}  // namespace

void register_cuda_augment_ops(OpTable& t) { t.add(OpKind::AugmentImages, cuda_augment_images); }

}  // namespace cudl
