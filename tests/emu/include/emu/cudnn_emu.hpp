// emu/cudnn_emu.hpp — test hooks of the emulated cuDNN (tests/emu/src/cudnn.cpp): make heuristics
// report no engine (so callers' fallback paths run), disable fused graphs, and read counters.
#pragma once

#include <cstdint>

namespace cudl_emu {

/// When true, engine heuristics return no engine config and operation graphs report zero engines,
/// as real cuDNN does for a graph it cannot run. Default false.
void cudnn_set_no_engines(bool none);

/// When false, only single-convolution graphs have engines; graphs that fuse pointwise operations
/// (bias add, ReLU) after a convolution get none. Default true.
void cudnn_set_fusion_supported(bool supported);

/// What the emulated cuDNN was asked to do.
struct CudnnCounters {
  uint64_t plans_finalized = 0;  // execution plans successfully finalized
  uint64_t executions = 0;       // cudnnBackendExecute calls that enqueued work
  int64_t last_engine = -1;      // global index of the engine of the last execution
  bool last_fused = false;       // the last execution ran a conv + pointwise graph
};
CudnnCounters cudnn_counters();
void cudnn_reset_counters();

}  // namespace cudl_emu
