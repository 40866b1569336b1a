// cpu/matmul.cpp — CPU reference implementations of the matmul op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_matmul_ops(OpTable& t) {}

}  // namespace cudl
