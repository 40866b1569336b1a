// emu/kernel.hpp — the CUDA kernel language on the host: execution-space keywords, per-thread
// built-ins, barriers, warp intrinsics, atomics, math intrinsics and the emulator's launcher.
// Included through kernels/launch.cuh by every .cu file compiled with g++ (CUDL_EMULATED). The
// real toolkit headers provide the types (dim3, float4, __half, ...); src/exec.cpp runs the grids.
#pragma once

#include <cuda_runtime.h>
#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <tuple>
#include <type_traits>
#include <type_traits>
#include <utility>

#include "emu/runtime.hpp"

// --- execution-space keywords ----------------------------------------------------------------
// host_defines.h already turns __global__/__device__/__host__/__constant__/__managed__ into
// nothing and __forceinline__ into always_inline for a host compiler. Static shared memory becomes
// a thread_local: every OS thread runs one block at a time, so a thread_local is per block.
#undef __shared__
#define __shared__ static thread_local
// __launch_bounds__(N[, min_blocks[, max_cluster]]) leaves exactly N single-byte NOPs at the kernel's
// entry (GCC's patchable_function_entry), which the launcher counts: a launch with more than N
// threads per block fails as on the GPU (cudaErrorLaunchOutOfResources). The NOPs cost a few
// cycles per emulated thread; a kernel without launch bounds has none.
#undef __launch_bounds__
#define __launch_bounds__(...) __attribute__((patchable_function_entry(::cudl_emu::detail::launch_bound(__VA_ARGS__), 0)))
#ifndef __CUDL_EMU_SITE
#define __CUDL_EMU_SITE const char *__cudl_file = __builtin_FILE(), int __cudl_line = __builtin_LINE()
#endif

namespace cudl_emu {

namespace detail {

/// What threadIdx reads: the first member of the executor's per-thread record.
struct ThreadCoords {
  uint3 thread_idx;
  unsigned lane;
};
/// What blockIdx/blockDim/gridDim read: the executor's per-block record on this OS thread.
struct BlockCoords {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  void* dynamic_shared;
};

/// The emulated GPU thread currently running on this OS thread (null outside kernels).
inline thread_local ThreadCoords* t_thread = nullptr;
/// The block currently running on this OS thread.
inline thread_local BlockCoords* t_block = nullptr;

/// The first argument of __launch_bounds__ (max threads per block).
constexpr unsigned launch_bound(unsigned max_threads, unsigned = 0, unsigned = 0) { return max_threads; }

/// Aborts the calling emulated thread when it is not inside a kernel (device-only call on host).
[[noreturn]] void not_in_kernel(const char* what);
inline ThreadCoords* current_thread(const char* what) {
  ThreadCoords* t = t_thread;
  if (!t) not_in_kernel(what);
  return t;
}

/// Block-wide barrier. kind: 0 plain, 1 count, 2 and, 3 or. Returns the reduced predicate.
int block_sync(int kind, int predicate, const char* file, int line);

/// Warp collectives: rendezvous of the lanes named in `mask`; returns this lane's result.
enum class WarpOp : int {
  Sync,
  ShflIdx,
  ShflUp,
  ShflDown,
  ShflXor,
  Ballot,
  Any,
  All,
  MatchAny,
  ReduceAdd,
  ReduceMin,
  ReduceMax,
  ReduceAnd,
  ReduceOr,
  ReduceXor,
  ReduceMinS,
  ReduceMaxS,
  ActiveMask
};
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int param, int width, const char* file, int line);

/// Device-side trap: records a sticky launch failure naming the kernel and abandons the grid.
[[noreturn]] void trap(const char* file, int line);

/// A type-erased grid: `run_thread(args)` runs one GPU thread with the copied arguments.
struct GridLaunch {
  const char* name;
  dim3 grid, block;
  size_t shared_bytes;
  void (*run_thread)(const void* args);
  const void* args;
};
/// Runs every block of `g` now (called from the queued work item); reports errors itself.
void run_grid(const GridLaunch& g);
/// Validates a launch configuration as the runtime does; records a non-sticky error and returns
/// false when it is invalid.
bool check_launch_config(const void* kernel, const char* name, dim3 grid, dim3 block, size_t shared_bytes);
/// Validates the size of a kernel's parameter block (laid out as the CUDA ABI does: each parameter
/// at its own alignment); records a non-sticky error and returns false over the limit.
bool check_param_bytes(const char* name, size_t param_bytes);

/// Before a grid runs on `device`: every pointer argument that points into device memory must
/// be memory that device can access (its own, or a peer's with peer access enabled); otherwise
/// records the sticky cudaErrorIllegalAddress naming the kernel, the argument and both devices
/// (what the GPU's MMU reports) and returns false. `ptrs[i]` is null for non-pointer arguments.
bool check_pointer_args(const char* name, int device, const void* const* ptrs, size_t n);

template <typename T>
const void* pointer_arg(const T& v) {
  if constexpr (std::is_pointer<T>::value)
    return static_cast<const void*>(v);
  else
    return nullptr;
}

/// Bytes of the parameter block of a kernel taking P... (each at its alignment, in order).
template <typename... P>
constexpr size_t param_block_bytes() {
  size_t offset = 0;
  ((offset = (offset + alignof(P) - 1) / alignof(P) * alignof(P) + sizeof(P)), ...);
  return offset;
}

template <typename T>
inline uint64_t to_bits(const T& v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp intrinsic on a type over 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T>
inline T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

/// The launched kernel with its arguments, copied by value at launch time as the driver does.
template <typename... P>
struct KernelCall {
  void (*kernel)(P...);
  std::tuple<std::decay_t<P>...> args;
  static void run(const void* self) {
    const auto* c = static_cast<const KernelCall*>(self);
    std::apply(c->kernel, c->args);
  }
};

template <typename... P>
class Launcher {
 public:
  Launcher(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream)
      : kernel_(kernel), name_(name), grid_(grid), block_(block), shared_(shared_bytes), stream_(stream) {}

  template <typename... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "CUDL_LAUNCH: wrong number of kernel arguments");
    if (!check_param_bytes(name_, param_block_bytes<std::decay_t<P>...>())) return;
    if (!check_launch_config(reinterpret_cast<const void*>(kernel_), name_, grid_, block_, shared_)) return;
    KernelCall<P...> call{kernel_, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
    GridLaunch g{name_, grid_, block_, shared_, &KernelCall<P...>::run, nullptr};
    const int device = current_device();  // enqueue refuses a stream of another device
    enqueue(stream_, WorkKind::Kernel, name_, [call = std::move(call), g, device]() mutable {
      const void* ptrs[sizeof...(P) + 1] = {nullptr};
      size_t i = 0;
      std::apply([&](const auto&... a) { ((ptrs[i++] = pointer_arg(a)), ...); }, call.args);
      if (!check_pointer_args(g.name, device, ptrs, sizeof...(P))) return;
      g.args = &call;
      run_grid(g);
    });
  }

 private:
  void (*kernel_)(P...);
  const char* name_;
  dim3 grid_, block_;
  size_t shared_;
  cudaStream_t stream_;
};

}  // namespace detail

/// CUDL_LAUNCH under emulation: launcher(kernel, "name", grid, block, shared, stream)(args...).
template <typename... P>
detail::Launcher<P...> launcher(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, size_t shared_bytes,
                                cudaStream_t stream) {
  return detail::Launcher<P...>(kernel, name, grid, block, shared_bytes, stream);
}

/// The current block's dynamic shared memory (CUDL_DYNAMIC_SHARED); 16-byte aligned, filled
/// with 0xFF bytes (NaN for floats) when the block starts.
inline void* dynamic_shared_memory() { return detail::t_block ? detail::t_block->dynamic_shared : nullptr; }

}  // namespace cudl_emu

// --- built-in variables ----------------------------------------------------------------------
#define threadIdx (static_cast<const ::uint3&>(::cudl_emu::detail::current_thread("threadIdx")->thread_idx))
#define blockIdx (static_cast<const ::uint3&>(::cudl_emu::detail::t_block->block_idx))
#define blockDim (static_cast<const ::dim3&>(::cudl_emu::detail::t_block->block_dim))
#define gridDim (static_cast<const ::dim3&>(::cudl_emu::detail::t_block->grid_dim))
static constexpr int warpSize = 32;

// --- barriers --------------------------------------------------------------------------------
inline void __syncthreads(__CUDL_EMU_SITE) { ::cudl_emu::detail::block_sync(0, 1, __cudl_file, __cudl_line); }
inline int __syncthreads_count(int predicate, __CUDL_EMU_SITE) {
  return ::cudl_emu::detail::block_sync(1, predicate != 0, __cudl_file, __cudl_line);
}
inline int __syncthreads_and(int predicate, __CUDL_EMU_SITE) {
  return ::cudl_emu::detail::block_sync(2, predicate != 0, __cudl_file, __cudl_line);
}
inline int __syncthreads_or(int predicate, __CUDL_EMU_SITE) {
  return ::cudl_emu::detail::block_sync(3, predicate != 0, __cudl_file, __cudl_line);
}

// --- warp intrinsics -------------------------------------------------------------------------
inline void __syncwarp(unsigned mask = 0xffffffffu, __CUDL_EMU_SITE) {
  ::cudl_emu::detail::warp_collective(::cudl_emu::detail::WarpOp::Sync, mask, 0, 0, 32, __cudl_file, __cudl_line);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, __CUDL_EMU_SITE) {
  using namespace ::cudl_emu::detail;
  return from_bits<T>(warp_collective(WarpOp::ShflIdx, mask, to_bits(var), src_lane, width, __cudl_file, __cudl_line));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, __CUDL_EMU_SITE) {
  using namespace ::cudl_emu::detail;
  return from_bits<T>(warp_collective(WarpOp::ShflUp, mask, to_bits(var), (int)delta, width, __cudl_file, __cudl_line));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, __CUDL_EMU_SITE) {
  using namespace ::cudl_emu::detail;
  return from_bits<T>(
      warp_collective(WarpOp::ShflDown, mask, to_bits(var), (int)delta, width, __cudl_file, __cudl_line));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, __CUDL_EMU_SITE) {
  using namespace ::cudl_emu::detail;
  return from_bits<T>(warp_collective(WarpOp::ShflXor, mask, to_bits(var), lane_mask, width, __cudl_file, __cudl_line));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, __CUDL_EMU_SITE) {
  using namespace ::cudl_emu::detail;
  return (unsigned)warp_collective(WarpOp::Ballot, mask, predicate != 0, 0, 32, __cudl_file, __cudl_line);
}
inline int __any_sync(unsigned mask, int predicate, __CUDL_EMU_SITE) {
  using namespace ::cudl_emu::detail;
  return (int)warp_collective(WarpOp::Any, mask, predicate != 0, 0, 32, __cudl_file, __cudl_line);
}
inline int __all_sync(unsigned mask, int predicate, __CUDL_EMU_SITE) {
  using namespace ::cudl_emu::detail;
  return (int)warp_collective(WarpOp::All, mask, predicate != 0, 0, 32, __cudl_file, __cudl_line);
}
template <typename T>
inline unsigned __match_any_sync(unsigned mask, T value, __CUDL_EMU_SITE) {
  using namespace ::cudl_emu::detail;
  return (unsigned)warp_collective(WarpOp::MatchAny, mask, to_bits(value), 0, 32, __cudl_file, __cudl_line);
}
// __activemask() is a convergence point: it waits until every other live lane of the warp has
// arrived at an __activemask, exited or blocked elsewhere, and returns the lanes that arrived.
inline unsigned __activemask(__CUDL_EMU_SITE) {
  using namespace ::cudl_emu::detail;
  return (unsigned)warp_collective(WarpOp::ActiveMask, 0, 0, 0, 32, __cudl_file, __cudl_line);
}

#define CUDL_EMU_REDUCE_SYNC(fn, op, T)                                                                      \
  inline T fn(unsigned mask, T value, __CUDL_EMU_SITE) {                                                     \
    using namespace ::cudl_emu::detail;                                                                      \
    return (T)warp_collective(WarpOp::op, mask, (uint64_t)(uint32_t)value, 0, 32, __cudl_file, __cudl_line); \
  }
CUDL_EMU_REDUCE_SYNC(__reduce_add_sync, ReduceAdd, unsigned)
CUDL_EMU_REDUCE_SYNC(__reduce_add_sync, ReduceAdd, int)
CUDL_EMU_REDUCE_SYNC(__reduce_min_sync, ReduceMin, unsigned)
CUDL_EMU_REDUCE_SYNC(__reduce_min_sync, ReduceMinS, int)
CUDL_EMU_REDUCE_SYNC(__reduce_max_sync, ReduceMax, unsigned)
CUDL_EMU_REDUCE_SYNC(__reduce_max_sync, ReduceMaxS, int)
CUDL_EMU_REDUCE_SYNC(__reduce_and_sync, ReduceAnd, unsigned)
CUDL_EMU_REDUCE_SYNC(__reduce_or_sync, ReduceOr, unsigned)
CUDL_EMU_REDUCE_SYNC(__reduce_xor_sync, ReduceXor, unsigned)
#undef CUDL_EMU_REDUCE_SYNC

// --- memory fences, traps, timing ------------------------------------------------------------
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
[[noreturn]] inline void __trap(__CUDL_EMU_SITE) { ::cudl_emu::detail::trap(__cudl_file, __cudl_line); }
[[noreturn]] inline void __brkpt(__CUDL_EMU_SITE) { ::cudl_emu::detail::trap(__cudl_file, __cudl_line); }
inline long long clock64() { return (long long)__builtin_ia32_rdtsc(); }
inline void __nanosleep(unsigned) {}
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldca(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcs(const T* p) {
  return *p;
}
template <typename T>
inline T __ldlu(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcv(const T* p) {
  return *p;
}
template <typename T>
inline void __stcg(T* p, T v) {
  *p = v;
}
template <typename T>
inline void __stcs(T* p, T v) {
  *p = v;
}
template <typename T>
inline void __stwb(T* p, T v) {
  *p = v;
}
template <typename T>
inline void __stwt(T* p, T v) {
  *p = v;
}

// --- atomics (real atomics: blocks may run on several OS threads) -----------------------------
namespace cudl_emu::detail {
template <typename T>
inline T atomic_fetch_add(T* p, T v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
template <typename T, typename F>
inline T atomic_update(T* p, F f) {  // CAS loop on the bit pattern (floating point, min/max)
  using U = std::conditional_t<sizeof(T) == 8, uint64_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>>;
  static_assert(sizeof(T) == sizeof(U), "atomic on an unsupported size");
  U* up = reinterpret_cast<U*>(p);
  U old_bits = __atomic_load_n(up, __ATOMIC_RELAXED);
  for (;;) {
    T old_val;
    std::memcpy(&old_val, &old_bits, sizeof(T));
    T new_val = f(old_val);
    U new_bits;
    std::memcpy(&new_bits, &new_val, sizeof(T));
    if (__atomic_compare_exchange_n(up, &old_bits, new_bits, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return old_val;
  }
}
}  // namespace cudl_emu::detail

#define CUDL_EMU_ATOMIC_INT(T)                                                              \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }      \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }      \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }    \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }      \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }        \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }      \
  inline T atomicMin(T* p, T v) {                                                           \
    return ::cudl_emu::detail::atomic_update(p, [v](T o) { return v < o ? v : o; });        \
  }                                                                                         \
  inline T atomicMax(T* p, T v) {                                                           \
    return ::cudl_emu::detail::atomic_update(p, [v](T o) { return v > o ? v : o; });        \
  }                                                                                         \
  inline T atomicCAS(T* p, T compare, T v) {                                                \
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); \
    return compare;                                                                         \
  }                                                                                         \
  inline T atomicAdd_block(T* p, T v) { return atomicAdd(p, v); }                           \
  inline T atomicAdd_system(T* p, T v) { return atomicAdd(p, v); }
CUDL_EMU_ATOMIC_INT(int)
CUDL_EMU_ATOMIC_INT(unsigned int)
CUDL_EMU_ATOMIC_INT(unsigned long long)
CUDL_EMU_ATOMIC_INT(long long)
#undef CUDL_EMU_ATOMIC_INT

inline float atomicAdd(float* p, float v) {
  return ::cudl_emu::detail::atomic_update(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
  return ::cudl_emu::detail::atomic_update(p, [v](double o) { return o + v; });
}
inline float atomicAdd_block(float* p, float v) { return atomicAdd(p, v); }
inline double atomicAdd_block(double* p, double v) { return atomicAdd(p, v); }
inline float atomicAdd_system(float* p, float v) { return atomicAdd(p, v); }
inline double atomicAdd_system(double* p, double v) { return atomicAdd(p, v); }
inline float atomicExch(float* p, float v) {
  return ::cudl_emu::detail::atomic_update(p, [v](float) { return v; });
}
inline unsigned short atomicCAS(unsigned short* p, unsigned short compare, unsigned short v) {
  __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  return ::cudl_emu::detail::atomic_update(p, [limit](unsigned o) { return o >= limit ? 0u : o + 1u; });
}
inline unsigned atomicDec(unsigned* p, unsigned limit) {
  return ::cudl_emu::detail::atomic_update(p, [limit](unsigned o) { return (o == 0 || o > limit) ? limit : o - 1u; });
}

// --- integer and bit intrinsics ---------------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x) {
  return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t v = ((uint64_t)y << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  const uint64_t v = ((uint64_t)hi << 32) | lo;
  return (unsigned)((v << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  const uint64_t v = ((uint64_t)hi << 32) | lo;
  return (unsigned)(v >> (shift & 31));
}
inline int __mul24(int x, int y) { return (int)((int64_t)((x << 8) >> 8) * ((y << 8) >> 8)); }
inline unsigned __umul24(unsigned x, unsigned y) { return (x & 0xffffffu) * (y & 0xffffffu); }
inline int __mulhi(int x, int y) { return (int)(((int64_t)x * y) >> 32); }
inline unsigned __umulhi(unsigned x, unsigned y) { return (unsigned)(((uint64_t)x * y) >> 32); }
inline long long __mul64hi(long long x, long long y) { return (long long)(((__int128)x * y) >> 64); }
inline unsigned long long __umul64hi(unsigned long long x, unsigned long long y) {
  return (unsigned long long)(((unsigned __int128)x * y) >> 64);
}

// --- reinterpretation and conversions ----------------------------------------------------------
inline float __int_as_float(int x) { return ::cudl_emu::detail::from_bits<float>((uint32_t)x); }
inline float __uint_as_float(unsigned x) { return ::cudl_emu::detail::from_bits<float>(x); }
inline int __float_as_int(float x) { return (int)(uint32_t)::cudl_emu::detail::to_bits(x); }
inline unsigned __float_as_uint(float x) { return (uint32_t)::cudl_emu::detail::to_bits(x); }
inline double __longlong_as_double(long long x) { return ::cudl_emu::detail::from_bits<double>((uint64_t)x); }
inline long long __double_as_longlong(double x) { return (long long)::cudl_emu::detail::to_bits(x); }
namespace cudl_emu::detail {
// Float -> integer as PTX cvt.rni/rzi/rmi/rpi: NaN gives 0, out of range saturates.
template <typename I, typename F>
inline I cvt_sat(F r) {
  if (r != r) return 0;
  if (r <= (F)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
  if (r >= (F)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
  return (I)r;
}
}  // namespace cudl_emu::detail
#define CUDL_EMU_CVT(name, I, F, round) \
  inline I name(F x) { return ::cudl_emu::detail::cvt_sat<I, F>(round(x)); }
CUDL_EMU_CVT(__float2int_rn, int, float, nearbyintf)
CUDL_EMU_CVT(__float2int_rz, int, float, truncf)
CUDL_EMU_CVT(__float2int_rd, int, float, floorf)
CUDL_EMU_CVT(__float2int_ru, int, float, ceilf)
CUDL_EMU_CVT(__float2uint_rn, unsigned, float, nearbyintf)
CUDL_EMU_CVT(__float2uint_rz, unsigned, float, truncf)
CUDL_EMU_CVT(__float2uint_rd, unsigned, float, floorf)
CUDL_EMU_CVT(__float2uint_ru, unsigned, float, ceilf)
CUDL_EMU_CVT(__float2ll_rn, long long, float, nearbyintf)
CUDL_EMU_CVT(__float2ll_rz, long long, float, truncf)
CUDL_EMU_CVT(__double2int_rn, int, double, nearbyint)
CUDL_EMU_CVT(__double2int_rz, int, double, trunc)
CUDL_EMU_CVT(__double2ll_rn, long long, double, nearbyint)
#undef CUDL_EMU_CVT
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __ll2float_rn(long long x) { return (float)x; }
inline float __ull2float_rn(unsigned long long x) { return (float)x; }
inline double __int2double_rn(int x) { return (double)x; }
inline float __double2float_rn(double x) { return (float)x; }

// --- floating-point intrinsics (IEEE results; the GPU's fast approximations are within their
// documented error of these) -------------------------------------------------------------------
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fadd_rz(float x, float y) { return x + y; }
inline float __fmul_rz(float x, float y) { return x * y; }
inline float __fmaf_rn(float x, float y, float z) { return fmaf(x, y, z); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline double __dadd_rn(double x, double y) { return x + y; }
inline double __dmul_rn(double x, double y) { return x * y; }
inline double __fma_rn(double x, double y, double z) { return fma(x, y, z); }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline double __dsqrt_rn(double x) { return sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }
inline float sinpif(float x) { return sinf(3.14159265358979323846f * x); }
inline float cospif(float x) { return cosf(3.14159265358979323846f * x); }
inline void sincospif(float x, float* s, float* c) { sincosf(3.14159265358979323846f * x, s, c); }
inline float fdividef(float x, float y) { return x / y; }

// CUDA's min/max overloads for device code (std::min/max need identical types).
#define CUDL_EMU_MINMAX(R, A, B)                               \
  inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; } \
  inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
CUDL_EMU_MINMAX(int, int, int)
CUDL_EMU_MINMAX(unsigned, unsigned, unsigned)
CUDL_EMU_MINMAX(unsigned, int, unsigned)
CUDL_EMU_MINMAX(unsigned, unsigned, int)
CUDL_EMU_MINMAX(long, long, long)
CUDL_EMU_MINMAX(unsigned long, unsigned long, unsigned long)
CUDL_EMU_MINMAX(unsigned long, long, unsigned long)
CUDL_EMU_MINMAX(unsigned long, unsigned long, long)
CUDL_EMU_MINMAX(long long, long long, long long)
CUDL_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
CUDL_EMU_MINMAX(unsigned long long, long long, unsigned long long)
CUDL_EMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef CUDL_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin((double)a, b); }
inline double max(float a, double b) { return fmax((double)a, b); }
inline double min(double a, float b) { return fmin(a, (double)b); }
inline double max(double a, float b) { return fmax(a, (double)b); }
inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long llmin(long long a, long long b) { return a < b ? a : b; }
inline long long llmax(long long a, long long b) { return a > b ? a : b; }

// --- the runtime's C++ API templates that cuda_runtime.h declares only for nvcc ----------------
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
template <typename T>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, T* entry) {
  return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(entry));
}
template <typename T>
inline cudaError_t cudaFuncSetCacheConfig(T* func, cudaFuncCache config) {
  return ::cudaFuncSetCacheConfig(reinterpret_cast<const void*>(func), config);
}
// __constant__ and __device__ variables are ordinary host variables under the emulator.
template <typename T>
inline cudaError_t cudaMemcpyToSymbol(const T& symbol, const void* src, size_t count, size_t offset = 0,
                                      cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
  return ::cudaMemcpyToSymbol(static_cast<const void*>(&symbol), src, count, offset, kind);
}
template <typename T>
inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t count, size_t offset = 0,
                                        cudaMemcpyKind kind = cudaMemcpyDeviceToHost) {
  return ::cudaMemcpyFromSymbol(dst, static_cast<const void*>(&symbol), count, offset, kind);
}
template <typename T>
inline cudaError_t cudaMemcpyToSymbolAsync(const T& symbol, const void* src, size_t count, size_t offset = 0,
                                           cudaMemcpyKind kind = cudaMemcpyHostToDevice, cudaStream_t stream = 0) {
  return ::cudaMemcpyToSymbolAsync(static_cast<const void*>(&symbol), src, count, offset, kind, stream);
}
template <typename T>
inline cudaError_t cudaMemcpyFromSymbolAsync(void* dst, const T& symbol, size_t count, size_t offset = 0,
                                             cudaMemcpyKind kind = cudaMemcpyDeviceToHost, cudaStream_t stream = 0) {
  return ::cudaMemcpyFromSymbolAsync(dst, static_cast<const void*>(&symbol), count, offset, kind, stream);
}
