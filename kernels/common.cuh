// kernels/common.cuh — what every kernel file includes first, the one home of what they share: the
// checked launch that names its kernel, grid sizing from the device, alignment tests and block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "kernels/launch.cuh"
#include "kernels/storage.cuh"

namespace cudl::kernels {

constexpr int kWarpSize = 32;

// --- launching ----------------------------------------------------------------------------------

namespace detail {
/// The kernel's own name out of kernel_name<K>()'s __PRETTY_FUNCTION__ ("... [with auto K =
/// ns::softmax_kernel<true, false>]" -> "softmax_kernel<true, false>"): namespaces dropped, template
/// arguments kept. Defined in src/cuda/launch_check.cpp.
std::string kernel_name_from_signature(const char* signature);
}  // namespace detail

/// The name of kernel K, as the compiler spells it, derived once per kernel. Never freed: work
/// queued under this name may still run while the process exits.
template <auto K>
const char* kernel_name() {
  static const std::string* name = new std::string(detail::kernel_name_from_signature(__PRETTY_FUNCTION__));
  return name->c_str();
}

/// Throws cudl::Error naming the kernel when the last launch failed (defined in src/cuda).
void check_launch(const char* kernel_name);

/// Launches Kernel<<<grid, block, shared_bytes, stream>>>(args...) (on the emulator in the emulated
/// build) and checks it: a failed launch throws cudl::Error naming the kernel, template arguments
/// included. The arguments convert to the kernel's parameter types as in a <<<...>>> launch.
template <auto Kernel, typename... Args>
void launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, Args&&... args) {
  const char* const name = kernel_name<Kernel>();
  detail::raw_launch<Kernel>(name, grid, block, shared_bytes, stream, std::forward<Args>(args)...);
  check_launch(name);
}

// --- grid sizing --------------------------------------------------------------------------------

/// Streaming multiprocessors of the current device, read from the device once per device and
/// process (cudaDevAttrMultiProcessorCount; defined in src/cuda/launch_check.cpp).
int sm_count();

constexpr int kBlocksPerSm = 16;  // resident blocks a grid-stride loop aims for per multiprocessor

/// Blocks for a grid-stride loop over n items of `block` items each: ceil(n / block), at least 1,
/// at most max_blocks. Use this form where the cap must not depend on the device (the grid size
/// decides a reduction order, or sizes a workspace).
inline unsigned grid_for(int64_t n, int block, int max_blocks) {
  int64_t b = (n + block - 1) / block;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

/// As above, capped at kBlocksPerSm blocks per multiprocessor of the current device: enough to
/// fill the GPU, never more than needed. Only where the result does not depend on the grid size.
inline unsigned grid_for(int64_t n, int block) { return grid_for(n, block, sm_count() * kBlocksPerSm); }

// --- alignment ----------------------------------------------------------------------------------

/// True when p is a multiple of kBytes (a power of two); null counts as aligned.
template <unsigned kBytes>
__host__ __device__ __forceinline__ bool aligned_to(const void* p) {
  static_assert((kBytes & (kBytes - 1)) == 0, "alignment must be a power of two");
  return (reinterpret_cast<uintptr_t>(p) & (kBytes - 1)) == 0;
}
/// The float4 / uint4 access test.
__host__ __device__ __forceinline__ bool aligned16(const void* p) { return aligned_to<16>(p); }

// --- storage types ------------------------------------------------------------------------------
// Kernels templated over the storage type T (float, __nv_bfloat16, __half; ops/precision.hpp) load
// T -> float, compute in fp32 exactly as for f32, and store float -> T rounded to nearest even.

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

/// x rounded to T, to nearest even (exact for float).
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

/// Elements of T in one 16-byte access: 4 floats, 8 bf16 / f16 values.
template <typename T>
constexpr int kVec16 = static_cast<int>(16 / sizeof(T));

/// Loads the i-th 16-byte group of p (p 16-byte aligned) with one 16-byte access, widened to float.
template <typename T>
__device__ __forceinline__ void load16(const T* p, int64_t i, float (&out)[kVec16<T>]) {
  const uint4 raw = reinterpret_cast<const uint4*>(p)[i];
  T v[kVec16<T>];
  memcpy(static_cast<void*>(v), &raw, sizeof(raw));  // T has no user-visible members to assign
  for (int k = 0; k < kVec16<T>; ++k) out[k] = to_float(v[k]);
}

/// Stores `in`, each value rounded to T, as the i-th 16-byte group of p (16-byte aligned), one access.
template <typename T>
__device__ __forceinline__ void store16(T* p, int64_t i, const float (&in)[kVec16<T>]) {
  T v[kVec16<T>];
  for (int k = 0; k < kVec16<T>; ++k) v[k] = from_float<T>(in[k]);
  uint4 raw;
  memcpy(&raw, v, sizeof(raw));
  reinterpret_cast<uint4*>(p)[i] = raw;
}

/// Calls f(T{}) with T the C++ type of storage code s (host side, to pick a kernel instantiation).
template <typename F>
void with_storage(Storage s, F&& f) {
  switch (s) {
    case Storage::kBf16:
      return f(__nv_bfloat16{});
    case Storage::kF16:
      return f(__half{});
    default:
      return f(float{});
  }
}

// --- warp and block reductions ------------------------------------------------------------------

/// Reduction operators: op(a, b) combines two partial results (a the running one), identity<T>()
/// is the value that changes nothing (it pads warp 0 when the block has fewer than 32 warps).

/// a + b; identity 0.
struct SumOp {
  template <typename T>
  __host__ __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
  template <typename T>
  __host__ __device__ static constexpr T identity() {
    return T(0);
  }
};

/// Maximum that propagates NaN (b wins when it is larger or NaN); identity -inf (lowest for integers).
struct MaxNanOp {
  template <typename T>
  __host__ __device__ __forceinline__ T operator()(T a, T b) const {
    return (b > a || b != b) ? b : a;
  }
  template <typename T>
  __host__ __device__ static constexpr T identity() {
    return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                                : std::numeric_limits<T>::lowest();
  }
};

enum class Shuffle { kXor, kDown, kIdx };  // kIdx: `offset` is the source lane

template <Shuffle kKind, typename W>
__device__ __forceinline__ W shuffle_word(unsigned mask, W w, int offset) {
  if constexpr (kKind == Shuffle::kXor)
    return __shfl_xor_sync(mask, w, offset);
  else if constexpr (kKind == Shuffle::kIdx)
    return __shfl_sync(mask, w, offset);
  else
    return __shfl_down_sync(mask, w, offset);
}

/// __shfl_xor_sync / __shfl_down_sync for any trivially copyable T: arithmetic types directly,
/// others (small structs such as a value-index pair) one 32-bit word at a time.
template <Shuffle kKind, typename T>
__device__ __forceinline__ T shuffle(unsigned mask, T v, int offset) {
  if constexpr (std::is_arithmetic<T>::value) {
    return shuffle_word<kKind>(mask, v, offset);
  } else {
    static_assert(sizeof(T) % 4 == 0 && std::is_trivially_copyable<T>::value, "shuffle of an odd-sized type");
    unsigned words[sizeof(T) / 4];
    memcpy(words, &v, sizeof(T));
    for (unsigned& w : words) w = shuffle_word<kKind>(mask, w, offset);
    memcpy(&v, words, sizeof(T));
    return v;
  }
}

/// Butterfly over a full warp (v = op(v, lane ^ offset's v), offsets 16, 8, 4, 2, 1): every lane gets
/// the result, and every lane combines in the same order, so all lanes hold bitwise the same value.
template <typename Op, typename T>
__device__ __forceinline__ T warp_reduce(T v, Op op = Op{}) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v = op(v, shuffle<Shuffle::kXor>(0xffffffffu, v, offset));
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_reduce_sum(T v) {
  return warp_reduce<SumOp>(v);
}

/// Tree over the first `lanes` (1..31) threads of a partial warp, which are the only ones that exist:
/// lane l adds lane l + offset only while that lane exists. The result is valid in lane 0 only. A
/// lane whose partner does not exist reads its own value (and drops it): a shuffle must not name a
/// lane outside its mask, whose value the GPU leaves undefined.
template <typename Op, typename T>
__device__ __forceinline__ T partial_warp_reduce(T v, int lanes, Op op = Op{}) {
  const unsigned mask = (1u << lanes) - 1u;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    const bool has_partner = lane + offset < lanes;
    const T other = shuffle<Shuffle::kIdx>(mask, v, has_partner ? lane + offset : lane);
    if (has_partner) v = op(v, other);
  }
  return v;
}

/// How block_reduce combines the per-warp results.
enum class WarpResults {
  kTree,    // warp 0 butterflies them (identity beyond the last warp)
  kSerial,  // each thread folds them in warp order from the identity: ((id op w0) op w1) op ...
};

/// Combines one value per warp over a 1-D block, in the fixed order `kOrder` says, and returns the
/// result to every thread; lane 0's value stands for its warp (for values already reduced within
/// each warp). Every thread of the block must call it (it holds barriers); it may be called again
/// right away (it ends with a barrier).
template <typename Op, WarpResults kOrder = WarpResults::kTree, typename T>
__device__ __forceinline__ T block_combine_warps(T warp_value, Op op = Op{}) {
  __shared__ T warp_results[kWarpSize + 1];  // one per warp, then the block's result
  const int lane = static_cast<int>(threadIdx.x % kWarpSize), warp = static_cast<int>(threadIdx.x / kWarpSize);
  const int n_warps = static_cast<int>((blockDim.x + kWarpSize - 1) / kWarpSize);
  T v = warp_value;
  if (lane == 0) warp_results[warp] = v;
  __syncthreads();
  if (kOrder == WarpResults::kTree) {
    if (warp == 0) {
      if (blockDim.x >= kWarpSize)
        v = warp_reduce(lane < n_warps ? warp_results[lane] : Op::template identity<T>(), op);
      else
        v = warp_results[0];  // the block is one partial warp
      if (lane == 0) warp_results[kWarpSize] = v;
    }
    __syncthreads();
    v = warp_results[kWarpSize];
  } else {
    v = Op::template identity<T>();
    for (int w = 0; w < n_warps; ++w) v = op(v, warp_results[w]);
  }
  __syncthreads();  // warp_results may be written again by the next call
  return v;
}

/// Reduces one value per thread over a 1-D block in a fixed order and returns the result to every
/// thread: a warp_reduce in each warp, then block_combine_warps. Any blockDim.x up to 1024 works:
/// when it is not a multiple of 32 the last warp is partial and reduces with partial_warp_reduce
/// (only its existing lanes take part). Every thread of the block must call it.
template <typename Op, WarpResults kOrder = WarpResults::kTree, typename T>
__device__ __forceinline__ T block_reduce(T v, Op op = Op{}) {
  const int warp = static_cast<int>(threadIdx.x / kWarpSize);
  const int tail = static_cast<int>(blockDim.x % kWarpSize);  // lanes of a partial last warp, 0 if none
  if (tail != 0 && warp == static_cast<int>(blockDim.x / kWarpSize))
    v = partial_warp_reduce(v, tail, op);
  else
    v = warp_reduce(v, op);
  return block_combine_warps<Op, kOrder>(v, op);
}

template <WarpResults kOrder = WarpResults::kTree, typename T>
__device__ __forceinline__ T block_reduce_sum(T v) {
  return block_reduce<SumOp, kOrder>(v);
}

/// Single-pass grids: true in exactly one block, the last one to arrive, and that block then sees
/// every write the other blocks made before they called it. Every thread of every block must call
/// it (it holds barriers), once per launch. `counter` is 0 when the grid starts
/// (CudaContext::block_counter) and 0 again when the last block has passed: atomicInc wraps it.
/// The last block reads what the others wrote with __ldcg (L2), not through a possibly stale L1.
__device__ __forceinline__ bool last_block(unsigned int* counter) {
  __shared__ int is_last;
  __threadfence();  // this block's writes reach device scope before its arrival is counted
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    const unsigned int blocks = gridDim.x * gridDim.y * gridDim.z;
    is_last = atomicInc(counter, blocks - 1) == blocks - 1;
  }
  __syncthreads();
  const bool last = is_last != 0;
  if (last) __threadfence();
  return last;
}

}  // namespace cudl::kernels
