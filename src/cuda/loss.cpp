// cuda/loss.cpp — CUDA backend entries of the loss op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_loss_ops(OpTable& t) {}

}  // namespace cudl
