// cpu/norm.cpp — CPU reference implementations of the norm op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_norm_ops(OpTable& t) {}

}  // namespace cudl
