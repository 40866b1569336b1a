// cuda/data.cpp — CUDA backend entries of the data op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_data_ops(OpTable& t) {}

}  // namespace cudl
