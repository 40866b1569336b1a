// emu/runtime.hpp — the emulated CUDA runtime's internal interface, shared by the kernel executor
// (emu/kernel.hpp, src/exec.cpp), the runtime API (src/runtime.cpp, src/memory.cpp) and the
// emulated libraries (src/cublas.cpp, src/cudnn.cpp). Users of the emulator never include this
// directly; CUDA code sees only the real runtime API from <cuda_runtime.h>.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

namespace cudl_emu {

/// A unit of stream work: a kernel grid, a copy, a memset, an event record, a host callback.
/// It runs when the stream is flushed (lazy in-order streams), or is recorded into a graph when
/// the stream is capturing.
enum class WorkKind { Kernel, Copy, Memset, Event, Host, Library };

/// Queues `fn` on `stream` (0 = the legacy default stream). `what` names it in reports (kernel
/// name, "cudaMemcpyAsync", "cublasLtMatmul", ...). Returns the error the real runtime would
/// return at enqueue time (e.g. a sticky error).
cudaError_t enqueue(cudaStream_t stream, WorkKind kind, const char* what, std::function<void()> fn);

constexpr int kMaxDevices = 16;
/// Emulated devices: CUDL_EMU_DEVICES=N (default 1, at most 16), read once. Each has its own
/// allocations, default streams, properties and current-device state per host thread.
int device_count();
/// The calling host thread's current device (cudaSetDevice; 0 on a thread that never set one).
int current_device();
/// Device of the live device allocation containing p, or -1 when p is not device memory.
int pointer_device(const void* p);
/// True when kernels running on `device` may touch memory of `owner`: the same device, or peer
/// access enabled from `device` to `owner` (cudaDeviceEnablePeerAccess).
bool can_access(int device, int owner);

/// enqueue() as if `device` were current (what a library that sets its own device does, NCCL),
/// setting *seq to the item's place in its stream's order.
cudaError_t enqueue_on(int device, cudaStream_t stream, WorkKind kind, const char* what, std::function<void()> fn,
                       uint64_t* seq);
/// Runs the work of `stream` of `device` (stream 0: that device's default stream) up to and
/// including the item numbered `seq`.
void run_upto(int device, cudaStream_t stream, uint64_t seq);

/// Runs everything queued on `stream` (and what it waits on); used by library emulations that
/// must observe results, and by the runtime's synchronising calls.
cudaError_t flush(cudaStream_t stream);
/// Runs everything queued on every stream.
cudaError_t flush_all();

/// True while `stream` is capturing into a graph.
bool is_capturing(cudaStream_t stream);

/// Work of which every replay of a graph is a new instance (an NCCL collective captured into a
/// graph: each launch is a new collective of its communicator). While `stream` is capturing,
/// capture_per_launch records a node. Each cudaGraphLaunch of a graph holding it calls `make`
/// with the runtime's lock held, giving the launch's stream handle, its device and the sequence
/// number the item gets in that stream; `make` returns the item's work and a `wait` that the
/// launch calls once it has released the lock (it may block, e.g. until the other ranks have
/// launched their part). A non-empty string from `wait` fails the launch with
/// cudaErrorLaunchFailure and that message. `ready` (optional) says when the item may run: until
/// then its stream waits at it (flushes by other threads stop there), as a GPU's NCCL kernel waits
/// for its peers. Returns cudaErrorIllegalState when `stream` is not capturing.
struct LaunchedWork {
  std::function<void()> run;
  std::function<std::string()> wait;
  std::function<bool()> ready;
};
using PerLaunch = std::function<LaunchedWork(cudaStream_t stream, int device, uint64_t seq)>;
cudaError_t capture_per_launch(cudaStream_t stream, WorkKind kind, const char* what, PerLaunch make);

/// Name of the kernel (or library call) currently executing on this host thread, or nullptr.
/// Fault reports (guard pages, use after free) name it.
const char* current_work();
struct WorkScope {  // sets current_work() for its lifetime
  explicit WorkScope(const char* what);
  ~WorkScope();
  const char* previous;
};

/// Records an error the way CUDA reports it. Non-sticky errors are returned once by
/// cudaGetLastError / cudaPeekAtLastError; sticky errors (cudaErrorLaunchFailure,
/// cudaErrorIllegalAddress, cudaErrorAssert, ...) are returned by every later call, as on a real
/// context. `detail` names the kernel and what happened; cudaGetErrorString appends it.
void record_error(cudaError_t err, const std::string& detail, bool sticky);
/// The sticky error, or cudaSuccess.
cudaError_t sticky_error();

/// Kind of memory a pointer refers to, for memcpy direction checks.
enum class PtrKind { Device, PinnedHost, PageableHost };
PtrKind pointer_kind(const void* p);
/// True when [p, p+bytes) lies inside one live device allocation.
bool is_device_range(const void* p, size_t bytes);

/// Counters of what the emulated GPU was asked to do; reset with reset_counters().
struct Counters {
  uint64_t kernel_launches = 0;  // grids executed (including those replayed from graphs)
  uint64_t graph_launches = 0;
  uint64_t memcpy_h2d = 0, memcpy_d2h = 0, memcpy_d2d = 0, memcpy_h2h = 0;
  uint64_t bytes_h2d = 0, bytes_d2h = 0, bytes_d2d = 0;
  uint64_t memsets = 0;
  uint64_t mallocs = 0, frees = 0;            // device (sync and async)
  uint64_t host_mallocs = 0, host_frees = 0;  // pinned host
  uint64_t syncs = 0;          // host blocking points: device/stream/event sync, blocking copies, cudaFree(Host)
  uint64_t threads = 0;        // emulated GPU threads run
  uint64_t barriers = 0;       // block-wide barrier crossings (per block)
  uint64_t library_calls = 0;  // emulated cuBLAS/cuBLASLt/cuDNN calls executed (WorkKind::Library)
  uint64_t collectives = 0;       // emulated NCCL collectives executed, each rank's part counted
  uint64_t collective_bytes = 0;  // bytes each executed part sent (all-reduce: count x type size)
};
Counters counters();
/// The counts attributed to one device: graph launches (the stream's device), device and pinned
/// allocations and frees and host synchronisations (the calling thread's current device), and
/// collectives (the communicator's device). The other fields are 0.
Counters counters(int device);
/// Counting hook of the emulated NCCL: one executed part of a collective on `device`.
void count_collective(int device, uint64_t bytes);
void reset_counters();
/// Fault injection: the next `n` cudaGraphInstantiate calls fail with cudaErrorNotSupported (as a
/// driver that cannot instantiate a captured graph would), so callers' fallbacks can be tested.
void fail_next_graph_instantiates(int n);
/// Counting hooks for the executor and libraries.
void count_kernel(uint64_t threads, uint64_t barrier_crossings);

/// Test modes of the emulated libraries (defined in src/cublas.cpp), read from the environment once:
/// - CUDL_EMU_REFUSE_ENGINES=<seed>/<probability> (e.g. 7/0.5): cublasLtMatmulAlgoGetHeuristic finds
///   no algorithm (CUBLAS_STATUS_NOT_SUPPORTED), fused epilogue or plain, and every engine cuDNN's heuristics list carries a
///   numerical note (no note-free engine) for a problem with that probability, decided by a hash of
///   the seed and the problem, so one problem always gets the same answer and every caller's
///   fallback path runs somewhere. Unset or probability 0: never.
/// - CUDL_EMU_ACCUMULATE=fp32: GEMM (cuBLAS, cuBLASLt) and convolution (cuDNN) products of f32/f16/
///   bf16 data accumulate in float with fused multiply-adds in order over k, as the hardware's FP32
///   accumulators do; default (or =fp64) in double. f64 data always accumulates in double.
bool refuse_engine(uint64_t problem_key);
bool accumulate_fp32();
/// An f32 value as a tensor core reads it in TF32 mode (cuBLAS CUBLAS_COMPUTE_32F_FAST_TF32 or
/// CUBLAS_TF32_TENSOR_OP_MATH, cuDNN engines noted TENSOR_CORE + DOWN_CONVERT_INPUTS): 10 explicit
/// mantissa bits, rounded to nearest with ties away from zero (PTX cvt.rna.tf32.f32); Inf and NaN
/// pass unchanged. The product of two TF32 values is exact in f32, so accumulation is unchanged.
inline float round_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  u = (u + 0x1000u) & 0xffffe000u;
  std::memcpy(&x, &u, sizeof u);
  return x;
}
/// Mixes v into a hash h (FNV-1a over the bytes of v): for problem keys.
inline uint64_t hash_mix(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * 1099511628211ull;
  return h;
}

/// For fault reports (defined by the kernel executor, src/exec.cpp; safe to call from a signal
/// handler on the faulting thread): the position of the emulated GPU thread running on this host
/// thread, "block (x,y,z) thread (x,y,z)", or "" outside kernels; and a description of `addr`
/// when it is memory the executor owns ("stack overflow: the guard page of an emulated thread's
/// stack ...", "past the end of the block's N bytes of dynamic shared memory"), else nullptr.
const char* current_kernel_position();
const char* describe_executor_address(const void* addr);

}  // namespace cudl_emu
