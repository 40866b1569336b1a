// cpu/loss.cpp — CPU reference implementations of the loss op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_loss_ops(OpTable& t) {}

}  // namespace cudl
