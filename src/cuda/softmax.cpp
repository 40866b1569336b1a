// cuda/softmax.cpp — CUDA backend entries of the softmax op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_softmax_ops(OpTable& t) {}

}  // namespace cudl
