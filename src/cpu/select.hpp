// cpu/select.hpp — branch-free selects for the CPU reference loops, in the forms that GCC
// vectorises (a float ?: whose arms do arithmetic can stay a data-dependent branch).
#pragma once

#include <cstdint>
#include <cstring>

namespace cudl::cpu_select {

/// `keep ? t : +0.f`, on the bits. t is evaluated either way, so it must be safe to compute.
[[gnu::always_inline]] inline float keep_if(bool keep, float t) {
  uint32_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits &= -static_cast<uint32_t>(keep);
  std::memcpy(&t, &bits, sizeof t);
  return t;
}

}  // namespace cudl::cpu_select
