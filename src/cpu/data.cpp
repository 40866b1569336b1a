// cpu/data.cpp — CPU reference implementations of the data op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_data_ops(OpTable& t) {}

}  // namespace cudl
