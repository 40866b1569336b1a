// emu/emu.hpp — what tests and benchmarks may ask the emulator directly: counters, schedule,
// last error detail. Available only in the emulated build (CUDL_EMULATED is defined).
#pragma once

#include "emu/runtime.hpp"

namespace cudl_emu {

/// Thread order between barriers: forward, reverse, or shuffle with a seed. Initialised from
/// CUDL_EMU_SCHEDULE=forward|reverse|shuffle:<seed> (default forward).
struct Schedule {
  enum Kind { Forward, Reverse, Shuffle } kind = Forward;
  uint64_t seed = 0;
};
Schedule schedule();
void set_schedule(Schedule s);

/// Makes cublasLtMatmulAlgoGetHeuristic find no algo (CUBLAS_STATUS_NOT_SUPPORTED) for a
/// cuBLASLt epilogue, as the real library does for some epilogue, type and layout combinations, so
/// tests can run a caller's unfused fallback. `refuse` false allows it again.
void set_lt_epilogue_refused(uint32_t epilogue, bool refuse);
/// Test mode: the emulated RELU_AUX / DRELU epilogues put mask element i in bit 7 - i % 8 of its
/// byte (MSB first) instead of bit i % 8, as a library with another undocumented bit order would.
void set_lt_relu_mask_msb_first(bool on);

/// Detail of the last recorded error ("barrier divergence in kernel 'reduce_kernel': ...").
std::string last_error_detail();
/// Clears a sticky error so a test can go on after checking a planted bug (the real runtime
/// cannot do this; tests use it instead of restarting the process).
void reset_device_state();

}  // namespace cudl_emu
