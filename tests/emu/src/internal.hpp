// tests/emu/src/internal.hpp — glue between the emulated runtime's own translation units
// (runtime.cpp: errors, devices, streams, events, graphs; memory.cpp: allocations, copies, faults).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "emu/runtime.hpp"

namespace cudl_emu::detail {

/// The lock of stream/event/graph state. Held while queued work runs (work never takes it).
std::recursive_mutex& api_mutex();

/// Records a non-sticky error (when err != cudaSuccess) and returns err: how API calls fail.
cudaError_t fail(cudaError_t err, const std::string& detail);

/// The sticky error if one is set (every API call returns it first), else cudaSuccess.
inline cudaError_t sticky() { return ::cudl_emu::sticky_error(); }

/// For calls CUDA forbids while a global-mode capture is active (cudaMalloc, blocking copies,
/// device/stream sync): invalidates those captures and returns cudaErrorStreamCaptureUnsupported;
/// cudaSuccess when no capture is active.
cudaError_t forbid_during_capture(const char* api);

/// Runs every queued item of the legacy stream and of every blocking stream (what a blocking
/// cudaMemcpy/cudaMemset/cudaFree waits for).
cudaError_t flush_blocking();

/// Memory-side checks of the canaries in the slack bytes next to every live allocation; aborts
/// with a report naming `what` on corruption. After each kernel or library item (quick: the bytes
/// nearest the allocation) and at synchronising calls (full).
void check_canaries(const char* what, bool full = false);

/// Name of the work item the stream executor is running on any thread (fallback for fault
/// reports raised on executor worker threads that set no WorkScope), or nullptr.
const char* running_work();

/// Counter hooks.
enum class CopyDir { H2D, D2H, D2D, H2H };
void count_copy(CopyDir dir, size_t bytes);
void count_memset();
void count_malloc(bool device);
void count_free(bool device);
void count_sync();
void count_kernel_launch();
void count_graph_launch(int device);
void count_library_call();

/// Describes pointer p for error details: "device allocation #3 (0x..., 400 bytes)",
/// "pinned host memory", "pageable host memory", "freed device allocation #2 ...".
std::string describe_pointer(const void* p);

/// Frees a device allocation now (the body of cudaFree / the queued part of cudaFreeAsync).
cudaError_t free_device(void* p, const char* api);

/// Total live device bytes (for cudaMemGetInfo).
size_t live_device_bytes();

}  // namespace cudl_emu::detail
