// cuda/conv.cpp — CUDA backend entries of the conv op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_conv_ops(OpTable& t) {}

}  // namespace cudl
