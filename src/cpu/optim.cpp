// cpu/optim.cpp — CPU reference implementations of the optim op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_optim_ops(OpTable& t) {}

}  // namespace cudl
