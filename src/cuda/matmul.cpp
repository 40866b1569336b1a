// cuda/matmul.cpp — CUDA backend entries of the matmul op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_matmul_ops(OpTable& t) {}

}  // namespace cudl
