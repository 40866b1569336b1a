// kernels/data.cu — data-movement kernels. Byte-level copies pick the widest unit (16, 4 or 1
// bytes) every address and pitch allows; gather's backward is a CUB radix sort of (row, position)
// pairs plus an ordered per-row sum, so it is deterministic without floating-point atomics.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#if defined(__CUDACC__)
#include <cub/device/device_radix_sort.cuh>
#else
#include "emu/cub.hpp"  // the emulated subset, from CUB's documented semantics
#endif

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "backend/convert.hpp"
#include "cudl/error.hpp"
#include "kernels/common.cuh"
#include "kernels/data.cuh"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "ops/data.hpp"

namespace cudl::kernels {

namespace {

constexpr int kBlock = 256;

inline uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

/// The widest unit (16, 4, 2 or 1 bytes) dividing every value given.
inline int unit_for(std::initializer_list<uint64_t> values) {
  uint64_t all = 0;
  for (uint64_t v : values) all |= v;
  if ((all & 15u) == 0) return 16;
  if ((all & 3u) == 0) return 4;
  if ((all & 1u) == 0) return 2;
  return 1;
}

}  // namespace

// --- fill ------------------------------------------------------------------------------------------

// y: n_vec 16-byte words of `pattern`, then `tail` elements of T at tail_at
template <typename T>
static __global__ void fill_kernel(uint4* __restrict__ y, int64_t n_vec, uint4 pattern, T* __restrict__ tail_at,
                                   int64_t tail, T value) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  for (int64_t i = first; i < n_vec; i += stride) y[i] = pattern;
  for (int64_t i = first; i < tail; i += stride) tail_at[i] = value;
}

template <typename T>
static void launch_fill(void* y, int64_t n, uint64_t bits, cudaStream_t stream) {
  T value;
  memcpy(&value, &bits, sizeof(T));
  uint4 pattern;
  unsigned char* pb = reinterpret_cast<unsigned char*>(&pattern);
  for (size_t k = 0; k < sizeof(uint4); ++k) pb[k] = reinterpret_cast<const unsigned char*>(&value)[k % sizeof(T)];
  const bool vec = aligned16(y);
  const int64_t per_vec = static_cast<int64_t>(sizeof(uint4) / sizeof(T));
  const int64_t n_vec = vec ? n / per_vec : 0;
  T* tail_at = static_cast<T*>(y) + n_vec * per_vec;
  const int64_t tail = n - n_vec * per_vec;
  launch<fill_kernel<T>>(grid_for(n_vec > tail ? n_vec : tail, kBlock), kBlock, 0, stream, static_cast<uint4*>(y),
                         n_vec, pattern, tail_at, tail, value);
}

void fill_cuda(void* y, int64_t n, int elem_size, uint64_t bits, cudaStream_t stream) {
  if (n == 0) return;
  switch (elem_size) {
    case 1:
      launch_fill<uint8_t>(y, n, bits, stream);
      break;
    case 2:
      launch_fill<uint16_t>(y, n, bits, stream);
      break;
    case 4:
      launch_fill<uint32_t>(y, n, bits, stream);
      break;
    default:
      launch_fill<uint64_t>(y, n, bits, stream);
      break;
  }
}

// --- copy ------------------------------------------------------------------------------------------

// bytes [0, head) and the tail byte by byte, the middle as units of T (dst + head and src + head aligned)
template <typename T>
static __global__ void copy_kernel(unsigned char* __restrict__ dst, const unsigned char* __restrict__ src,
                                   int64_t bytes, int64_t head) {
  const int64_t units = (bytes - head) / static_cast<int64_t>(sizeof(T));
  const int64_t body_end = head + units * static_cast<int64_t>(sizeof(T));
  const int64_t items = head + units + (bytes - body_end);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < items; i += (int64_t)gridDim.x * blockDim.x) {
    if (i < head) {
      dst[i] = src[i];
    } else if (i < head + units) {
      const int64_t u = i - head;
      reinterpret_cast<T*>(dst + head)[u] = reinterpret_cast<const T*>(src + head)[u];
    } else {
      const int64_t b = body_end + (i - head - units);
      dst[b] = src[b];
    }
  }
}

void copy_bytes_cuda(void* dst, const void* src, int64_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  const unsigned grid_div = kBlock;
  if ((addr(d) & 15u) == (addr(s) & 15u)) {
    const int64_t head = std::min<int64_t>(bytes, (16 - (addr(d) & 15u)) & 15u);
    launch<copy_kernel<uint4>>(grid_for(head + (bytes - head) / 16 + 16, grid_div), kBlock, 0, stream, d, s, bytes,
                               head);
  } else if ((addr(d) & 3u) == (addr(s) & 3u)) {
    const int64_t head = std::min<int64_t>(bytes, (4 - (addr(d) & 3u)) & 3u);
    launch<copy_kernel<uint32_t>>(grid_for(head + (bytes - head) / 4 + 4, grid_div), kBlock, 0, stream, d, s, bytes,
                                  head);
  } else {
    launch<copy_kernel<uint8_t>>(grid_for(bytes, grid_div), kBlock, 0, stream, d, s, bytes, int64_t(0));
  }
}

// --- cast ------------------------------------------------------------------------------------------

__device__ __forceinline__ void convert_to(float x, __half* y) { *y = __float2half_rn(x); }
__device__ __forceinline__ void convert_to(float x, __nv_bfloat16* y) { *y = __float2bfloat16_rn(x); }
__device__ __forceinline__ void convert_to(float x, int32_t* y) { *y = convert::f32_to_i32(x); }
__device__ __forceinline__ void convert_to(__half x, float* y) { *y = __half2float(x); }
__device__ __forceinline__ void convert_to(__nv_bfloat16 x, float* y) { *y = __bfloat162float(x); }
__device__ __forceinline__ void convert_to(int32_t x, float* y) { *y = static_cast<float>(x); }

template <typename From, typename To>
static __global__ void cast_kernel(const From* __restrict__ x, To* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    convert_to(x[i], &y[i]);
}

template <typename From, typename To>
static void launch_cast(const void* x, void* y, int64_t n, cudaStream_t stream) {
  launch<cast_kernel<From, To>>(grid_for(n, kBlock), kBlock, 0, stream, static_cast<const From*>(x),
                                static_cast<To*>(y), n);
}

void cast_cuda(const void* x, int x_type, void* y, int y_type, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (x_type == kCastF32) {
    if (y_type == kCastF16)
      launch_cast<float, __half>(x, y, n, stream);
    else if (y_type == kCastBf16)
      launch_cast<float, __nv_bfloat16>(x, y, n, stream);
    else
      launch_cast<float, int32_t>(x, y, n, stream);
  } else if (x_type == kCastF16) {
    launch_cast<__half, float>(x, y, n, stream);
  } else if (x_type == kCastBf16) {
    launch_cast<__nv_bfloat16, float>(x, y, n, stream);
  } else {
    launch_cast<int32_t, float>(x, y, n, stream);
  }
}

// --- permute ---------------------------------------------------------------------------------------

struct PermuteArgs {
  int rank;
  int64_t out_dims[8];    // y's dims
  int64_t in_strides[8];  // x's stride for each y dim
};

template <typename T>
static __global__ void permute_kernel(const T* __restrict__ x, T* __restrict__ y, PermuteArgs a, int64_t n) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < n; o += (int64_t)gridDim.x * blockDim.x) {
    int64_t rest = o, off = 0;
    for (int k = a.rank - 1; k >= 0; --k) {
      const int64_t c = rest % a.out_dims[k];
      rest /= a.out_dims[k];
      off += c * a.in_strides[k];
    }
    y[o] = x[off];
  }
}

constexpr int kTile = 32, kTileRows = 8;  // transpose tiles of 32 x 32 elements, 32 x 8 threads

/// A permutation that moves x's innermost dim: y dim `p` (size rows) has x stride 1, y's last dim
/// (size cols) has x stride col_stride; the other dims are batch dims. y is contiguous.
struct TransposeArgs {
  int rank, p;
  int64_t out_dims[8], in_strides[8], out_strides[8];
  int64_t rows, cols, col_stride, row_out_stride, batches, row_tiles, col_tiles;
};

/// Each block moves 32 x 32 tiles (grid-stride over batch x row tiles x col tiles): it reads a
/// tile along x's contiguous dim (coalesced), then writes it transposed along y's contiguous last
/// dim (coalesced); the shared tile is padded by one column so neither pass has bank conflicts.
template <typename T>
static __global__ void __launch_bounds__(kTile * kTileRows)
    permute_tiled_kernel(const T* __restrict__ x, T* __restrict__ y, TransposeArgs a) {
  __shared__ T tile[kTile][kTile + 1];
  const int tx = threadIdx.x % kTile, ty = threadIdx.x / kTile;
  const int64_t tiles = a.batches * a.row_tiles * a.col_tiles;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t ct = t % a.col_tiles, rt = (t / a.col_tiles) % a.row_tiles;
    int64_t b = t / (a.col_tiles * a.row_tiles), x_base = 0, y_base = 0;
    for (int k = a.rank - 2; k >= 0; --k) {  // the batch dims: every y dim but p and the last
      if (k == a.p) continue;
      const int64_t c = b % a.out_dims[k];
      b /= a.out_dims[k];
      x_base += c * a.in_strides[k];
      y_base += c * a.out_strides[k];
    }
    const int64_t r0 = rt * kTile, c0 = ct * kTile;
    // load: tile[j][i] = x(row r0 + i, col c0 + j); consecutive threads read consecutive rows (stride 1 in x)
    for (int j = ty; j < kTile; j += kTileRows) {
      const int64_t r = r0 + tx, c = c0 + j;
      if (r < a.rows && c < a.cols) tile[j][tx] = x[x_base + r + c * a.col_stride];
    }
    __syncthreads();
    // store: y(row r0 + i, col c0 + j) = tile[j][i]; consecutive threads write consecutive cols
    for (int i = ty; i < kTile; i += kTileRows) {
      const int64_t r = r0 + i, c = c0 + tx;
      if (r < a.rows && c < a.cols) y[y_base + r * a.row_out_stride + c] = tile[tx][i];
    }
    __syncthreads();  // the tile is reused by the block's next tile
  }
}

template <typename T>
static void launch_permute(const void* x, void* y, const PermuteArgs& a, int64_t n, cudaStream_t stream) {
  int p = -1;  // the y dim that is x's contiguous one
  for (int k = 0; k < a.rank; ++k)
    if (a.in_strides[k] == 1) p = k;
  if (p < 0 || p == a.rank - 1) {  // x's contiguous dim stays last: rows copied, both sides coalesced
    launch<permute_kernel<T>>(grid_for(n, kBlock), kBlock, 0, stream, static_cast<const T*>(x), static_cast<T*>(y),
                              a, n);
    return;
  }
  TransposeArgs t{};
  t.rank = a.rank;
  t.p = p;
  int64_t stride = 1;
  for (int k = a.rank - 1; k >= 0; --k) {
    t.out_dims[k] = a.out_dims[k];
    t.in_strides[k] = a.in_strides[k];
    t.out_strides[k] = stride;
    stride *= a.out_dims[k];
  }
  t.rows = a.out_dims[p];
  t.cols = a.out_dims[a.rank - 1];
  t.col_stride = a.in_strides[a.rank - 1];
  t.row_out_stride = t.out_strides[p];
  t.batches = n / (t.rows * t.cols);
  t.row_tiles = (t.rows + kTile - 1) / kTile;
  t.col_tiles = (t.cols + kTile - 1) / kTile;
  const int64_t tiles = t.batches * t.row_tiles * t.col_tiles;
  const unsigned grid = static_cast<unsigned>(tiles < 65535 ? tiles : 65535);
  launch<permute_tiled_kernel<T>>(grid, kTile * kTileRows, 0, stream, static_cast<const T*>(x), static_cast<T*>(y), t);
}

void permute_cuda(const void* x, void* y, int elem_size, int rank, const int64_t* out_dims, const int64_t* in_strides,
                  int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  // Drop size-1 dims and merge y dims k, k+1 that are also adjacent in x (stride[k] = dim[k+1] * stride[k+1]).
  PermuteArgs a{};
  for (int k = 0; k < rank; ++k) {
    if (out_dims[k] == 1) continue;
    if (a.rank > 0 && a.in_strides[a.rank - 1] == out_dims[k] * in_strides[k]) {
      a.out_dims[a.rank - 1] *= out_dims[k];
      a.in_strides[a.rank - 1] = in_strides[k];
    } else {
      a.out_dims[a.rank] = out_dims[k];
      a.in_strides[a.rank] = in_strides[k];
      ++a.rank;
    }
  }
  switch (elem_size) {
    case 1:
      launch_permute<uint8_t>(x, y, a, n, stream);
      break;
    case 2:
      launch_permute<uint16_t>(x, y, a, n, stream);
      break;
    case 4:
      launch_permute<uint32_t>(x, y, a, n, stream);
      break;
    default:
      launch_permute<uint64_t>(x, y, a, n, stream);
      break;
  }
}

// --- pitched row copies (concat, slice) and slice backward -----------------------------------------

// rows x units of T; pitches in units of T
template <typename T>
static __global__ void copy_rows_kernel(T* __restrict__ dst, int64_t dst_pitch, const T* __restrict__ src,
                                        int64_t src_pitch, int64_t rows, int64_t units) {
  const int64_t n = rows * units;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / units, u = i - r * units;
    dst[r * dst_pitch + u] = src[r * src_pitch + u];
  }
}

template <typename T>
static void launch_copy_rows(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch, int64_t rows,
                             int64_t row_bytes, cudaStream_t stream) {
  const int64_t s = sizeof(T);
  launch<copy_rows_kernel<T>>(grid_for(rows * (row_bytes / s), kBlock), kBlock, 0, stream, static_cast<T*>(dst),
                              dst_pitch / s, static_cast<const T*>(src), src_pitch / s, rows, row_bytes / s);
}

void copy_rows_cuda(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch, int64_t rows, int64_t row_bytes,
                    cudaStream_t stream) {
  if (rows == 0 || row_bytes == 0) return;
  switch (unit_for({addr(dst), addr(src), uint64_t(dst_pitch), uint64_t(src_pitch), uint64_t(row_bytes)})) {
    case 16:
      launch_copy_rows<uint4>(dst, dst_pitch, src, src_pitch, rows, row_bytes, stream);
      break;
    case 4:
      launch_copy_rows<uint32_t>(dst, dst_pitch, src, src_pitch, rows, row_bytes, stream);
      break;
    case 2:
      launch_copy_rows<uint16_t>(dst, dst_pitch, src, src_pitch, rows, row_bytes, stream);
      break;
    default:
      launch_copy_rows<uint8_t>(dst, dst_pitch, src, src_pitch, rows, row_bytes, stream);
      break;
  }
}

__device__ __forceinline__ void set_zero(uint4& v) { v = make_uint4(0, 0, 0, 0); }
template <typename T>
__device__ __forceinline__ void set_zero(T& v) {
  v = T(0);
}

// dx: (outer, full) units, dy: (outer, part) units placed at column start
template <typename T>
static __global__ void slice_backward_kernel(const T* __restrict__ dy, T* __restrict__ dx, int64_t outer, int64_t full,
                                             int64_t start, int64_t part) {
  const int64_t n = outer * full;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / full, u = i - r * full;
    if (u >= start && u < start + part) {
      dx[i] = dy[r * part + (u - start)];
    } else {
      T z;
      set_zero(z);
      dx[i] = z;
    }
  }
}

template <typename T>
static void launch_slice_backward(const void* dy, void* dx, int64_t outer, int64_t full_bytes, int64_t start_bytes,
                                  int64_t part_bytes, cudaStream_t stream) {
  const int64_t s = sizeof(T);
  launch<slice_backward_kernel<T>>(grid_for(outer * (full_bytes / s), kBlock), kBlock, 0, stream,
                                   static_cast<const T*>(dy), static_cast<T*>(dx), outer, full_bytes / s,
                                   start_bytes / s, part_bytes / s);
}

void slice_backward_cuda(const void* dy, void* dx, int64_t outer, int64_t full_bytes, int64_t start_bytes,
                         int64_t part_bytes, cudaStream_t stream) {
  if (outer == 0 || full_bytes == 0) return;
  switch (unit_for({addr(dy), addr(dx), uint64_t(full_bytes), uint64_t(start_bytes), uint64_t(part_bytes)})) {
    case 16:
      launch_slice_backward<uint4>(dy, dx, outer, full_bytes, start_bytes, part_bytes, stream);
      break;
    case 4:
      launch_slice_backward<uint32_t>(dy, dx, outer, full_bytes, start_bytes, part_bytes, stream);
      break;
    case 2:
      launch_slice_backward<uint16_t>(dy, dx, outer, full_bytes, start_bytes, part_bytes, stream);
      break;
    default:
      launch_slice_backward<uint8_t>(dy, dx, outer, full_bytes, start_bytes, part_bytes, stream);
      break;
  }
}

// --- gather ----------------------------------------------------------------------------------------

__device__ __forceinline__ void set_ones(uint4& v) { v = make_uint4(~0u, ~0u, ~0u, ~0u); }
template <typename T>
__device__ __forceinline__ void set_ones(T& v) {
  v = static_cast<T>(~T(0));
}

// Element `at` of table row r as y stores it: copied when TIn is TOut (bytes of any dtype; a row
// outside [0, rows) gives all-ones bytes), else an f32 value rounded to bf16 / f16 (outside: NaN).
template <typename TIn, typename TOut>
__device__ __forceinline__ TOut gathered(const TIn* __restrict__ table, int64_t r, int64_t rows, int64_t at) {
  if constexpr (std::is_same_v<TIn, TOut>) {
    if (r >= 0 && r < rows) return table[at];
    TOut bad;
    set_ones(bad);
    return bad;
  } else {
    return from_float<TOut>(r >= 0 && r < rows ? table[at] : __int_as_float(0x7fffffff));
  }
}

// y: (m, units) = table rows idx[m], as gathered() stores them
template <typename TIn, typename TOut>
static __global__ void gather_rows_kernel(const TIn* __restrict__ table, const int32_t* __restrict__ idx,
                                          TOut* __restrict__ y, int64_t rows, int64_t units, int64_t m) {
  const int64_t n = m * units;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = i / units, u = i - j * units;
    const int64_t r = idx[j];
    y[i] = gathered<TIn, TOut>(table, r, rows, r * units + u);
  }
}

template <typename T>
static void launch_gather_rows(const void* table, const int32_t* idx, void* y, int64_t rows, int64_t row_bytes,
                               int64_t m, cudaStream_t stream) {
  const int64_t units = row_bytes / static_cast<int64_t>(sizeof(T));
  launch<gather_rows_kernel<T, T>>(grid_for(m * units, kBlock), kBlock, 0, stream, static_cast<const T*>(table), idx,
                                   static_cast<T*>(y), rows, units, m);
}

void gather_rows_cuda(const void* table, const int32_t* idx, void* y, int64_t rows, int64_t row_bytes, int64_t m,
                      cudaStream_t stream) {
  if (m == 0 || row_bytes == 0) return;
  switch (unit_for({addr(table), addr(y), uint64_t(row_bytes)})) {
    case 16:
      launch_gather_rows<uint4>(table, idx, y, rows, row_bytes, m, stream);
      break;
    case 4:
      launch_gather_rows<uint32_t>(table, idx, y, rows, row_bytes, m, stream);
      break;
    case 2:
      launch_gather_rows<uint16_t>(table, idx, y, rows, row_bytes, m, stream);
      break;
    default:
      launch_gather_rows<uint8_t>(table, idx, y, rows, row_bytes, m, stream);
      break;
  }
}

void gather_rows_convert_cuda(const float* table, const int32_t* idx, void* y, Storage y_type, int64_t rows,
                              int64_t row, int64_t m, cudaStream_t stream) {
  if (m == 0 || row == 0) return;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    launch<gather_rows_kernel<float, T>>(grid_for(m * row, kBlock), kBlock, 0, stream, table, idx, static_cast<T*>(y),
                                         rows, row, m);
  };
  if (y_type == Storage::kBf16)
    run(__nv_bfloat16{});
  else if (y_type == Storage::kF16)
    run(__half{});
  else
    CUDL_FAIL("gather_rows_convert_cuda: y must be bf16 or f16 (an f32 y is a plain gather)");
}

// --- gather backward: radix sort of (row, position) pairs, then an ordered sum per row -----------

// keys[j] = idx[j], or `rows` (a bucket past every row, summed by nobody) when out of range;
// positions[j] = j, so the stable sort leaves each row's positions in increasing order.
static __global__ void sort_keys_kernel(const int32_t* __restrict__ idx, int64_t m, int64_t rows,
                                        uint32_t* __restrict__ keys, int32_t* __restrict__ positions) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < m; j += (int64_t)gridDim.x * blockDim.x) {
    const int32_t r = idx[j];
    keys[j] = r >= 0 && r < rows ? static_cast<uint32_t>(r) : static_cast<uint32_t>(rows);
    positions[j] = static_cast<int32_t>(j);
  }
}

// starts[r] = first sorted position whose key is >= r, for r in [0, rows]: each r is written once,
// by the element where the keys step past it (or, past the last key, as m).
static __global__ void run_starts_kernel(const uint32_t* __restrict__ keys, int64_t m, int64_t rows,
                                         int32_t* __restrict__ starts) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < m; j += (int64_t)gridDim.x * blockDim.x) {
    const int64_t k = keys[j], prev = j == 0 ? -1 : static_cast<int64_t>(keys[j - 1]);
    for (int64_t r = prev + 1; r <= k && r <= rows; ++r) starts[r] = static_cast<int32_t>(j);
    if (j == m - 1)
      for (int64_t r = k + 1; r <= rows; ++r) starts[r] = static_cast<int32_t>(m);
  }
}

static __global__ void zero_ints_kernel(int32_t* __restrict__ p, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = 0;
}

constexpr int kRowBlock = 128;

// One block per table row (grid-stride), one column per thread: the dy rows of the row's
// positions (widened to fp32), summed in increasing position order from 0.
template <typename T>
static __global__ void __launch_bounds__(kRowBlock)
    ordered_row_sum_kernel(const T* __restrict__ dy, const int32_t* __restrict__ starts,
                           const int32_t* __restrict__ order, float* __restrict__ dtable, int64_t rows, int64_t row) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int32_t lo = starts[r], hi = starts[r + 1];
    for (int64_t col = threadIdx.x; col < row; col += blockDim.x) {
      float acc = 0.0f;
      for (int32_t i = lo; i < hi; ++i) acc += to_float(dy[static_cast<int64_t>(order[i]) * row + col]);
      dtable[r * row + col] = acc;
    }
  }
}

/// Throws naming the call when a CUB call returns an error.
static void check_cub(cudaError_t e, const char* what) {
  if (e != cudaSuccess) CUDL_FAIL("CUDA error: ", what, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

/// Bits that hold every key in [0, rows] (the sort looks at no others).
static int key_bits(int64_t rows) {
  int bits = 1;
  while (bits < 32 && (int64_t{1} << bits) <= rows) ++bits;
  return bits;
}

static size_t round256(size_t b) { return (b + 255) / 256 * 256; }

/// The workspace: keys and positions in and out (m each), starts (rows + 1), CUB's temporary storage.
struct GatherBackwardLayout {
  size_t keys_in, pos_in, keys_out, pos_out, starts, temp, temp_bytes, total;
};

static GatherBackwardLayout gather_backward_layout(int64_t rows, int64_t m) {
  GatherBackwardLayout l{};
  const size_t items = round256(static_cast<size_t>(m) * 4);
  l.keys_in = 0;
  l.pos_in = l.keys_in + items;
  l.keys_out = l.pos_in + items;
  l.pos_out = l.keys_out + items;
  l.starts = l.pos_out + items;
  l.temp = l.starts + round256(static_cast<size_t>(rows + 1) * 4);
  if (m > 0) {  // the size query: no work is done
    check_cub(cub::DeviceRadixSort::SortPairs(nullptr, l.temp_bytes, static_cast<const uint32_t*>(nullptr),
                                              static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                              static_cast<int32_t*>(nullptr), m, 0, key_bits(rows)),
              "cub::DeviceRadixSort::SortPairs (size query)");
  }
  l.total = l.temp + round256(l.temp_bytes);
  return l;
}

size_t gather_backward_workspace_bytes(int64_t rows, int64_t m) { return gather_backward_layout(rows, m).total; }

void gather_backward_cuda(const void* dy, Storage dy_type, const int32_t* idx, float* dtable, int64_t rows,
                          int64_t row, int64_t m, void* workspace, cudaStream_t stream) {
  if (rows == 0 || row == 0) return;
  GatherBackwardLayout l = gather_backward_layout(rows, m);
  char* ws = static_cast<char*>(workspace);
  auto* keys_in = reinterpret_cast<uint32_t*>(ws + l.keys_in);
  auto* keys_out = reinterpret_cast<uint32_t*>(ws + l.keys_out);
  auto* pos_in = reinterpret_cast<int32_t*>(ws + l.pos_in);
  auto* pos_out = reinterpret_cast<int32_t*>(ws + l.pos_out);
  auto* starts = reinterpret_cast<int32_t*>(ws + l.starts);
  if (m > 0) {
    launch<sort_keys_kernel>(grid_for(m, kBlock), kBlock, 0, stream, idx, m, rows, keys_in, pos_in);
    check_cub(cub::DeviceRadixSort::SortPairs(static_cast<void*>(ws + l.temp), l.temp_bytes, keys_in, keys_out, pos_in,
                                              pos_out, m, 0, key_bits(rows), stream),
              "cub::DeviceRadixSort::SortPairs");
    launch<run_starts_kernel>(grid_for(m, kBlock), kBlock, 0, stream, keys_out, m, rows, starts);
  } else {
    launch<zero_ints_kernel>(grid_for(rows + 1, kBlock), kBlock, 0, stream, starts, rows + 1);
  }
  with_storage(dy_type, [&](auto tag) {
    using T = decltype(tag);
    launch<ordered_row_sum_kernel<T>>(grid_for(rows * kRowBlock, kRowBlock), kRowBlock, 0, stream,
                                      static_cast<const T*>(dy), starts, pos_out, dtable, rows, row);
  });
}

// --- one-hot and image gather ------------------------------------------------------------------------

static __global__ void one_hot_kernel(const int32_t* __restrict__ labels, float* __restrict__ y, int64_t n,
                                      int64_t classes) {
  const int64_t total = n * classes;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = i / classes, c = i - row * classes;
    const int32_t l = labels[row];
    y[i] = (l < 0 || l >= classes) ? __int_as_float(0x7fffffff) : (l == c ? 1.0f : 0.0f);
  }
}

void one_hot_cuda(const int32_t* labels, float* y, int64_t n, int64_t classes, cudaStream_t stream) {
  if (n == 0 || classes == 0) return;
  launch<one_hot_kernel>(grid_for(n * classes, kBlock), kBlock, 0, stream, labels, y, n, classes);
}

__device__ __forceinline__ float normalise_pixel(uint8_t u, float mean, float stddev) {
  return (static_cast<float>(u) / 255.0f - mean) / stddev;
}

// y: (b, row) f32; vec: 4 pixels per item (row % 4 == 0, images 4-aligned, y 16-aligned)
static __global__ void gather_images_kernel(const uint8_t* __restrict__ images, const int32_t* __restrict__ idx,
                                            float* __restrict__ y, int64_t rows, int64_t row, int64_t b, float mean,
                                            float stddev, bool vec) {
  const int64_t step = vec ? 4 : 1;
  const int64_t per_row = row / step, total = b * per_row;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = i / per_row, k = (i - j * per_row) * step;
    const int64_t r = idx[j];
    const bool ok = r >= 0 && r < rows;
    const float nan = __int_as_float(0x7fffffff);
    if (vec) {
      float4 o = make_float4(nan, nan, nan, nan);
      if (ok) {
        const uchar4 u = *reinterpret_cast<const uchar4*>(images + r * row + k);
        o = make_float4(normalise_pixel(u.x, mean, stddev), normalise_pixel(u.y, mean, stddev),
                        normalise_pixel(u.z, mean, stddev), normalise_pixel(u.w, mean, stddev));
      }
      *reinterpret_cast<float4*>(y + j * row + k) = o;
    } else {
      y[j * row + k] = ok ? normalise_pixel(images[r * row + k], mean, stddev) : nan;
    }
  }
}

void gather_images_cuda(const uint8_t* images, const int32_t* idx, float* y, int64_t rows, int64_t row, int64_t b,
                        float mean, float stddev, cudaStream_t stream) {
  if (b == 0 || row == 0) return;
  const bool vec = row % 4 == 0 && aligned_to<4>(images) && aligned16(y);
  launch<gather_images_kernel>(grid_for(b * row / (vec ? 4 : 1), kBlock), kBlock, 0, stream, images, idx, y, rows, row,
                               b, mean, stddev, vec);
}

// --- a training step's batch: perm lookup, x and y gathers and the cursor advance in one kernel --------

template <typename T>
__device__ __forceinline__ void copy_or_ones(char* dst, const char* src, bool ok) {
  T v;
  if (ok) {
    v = *reinterpret_cast<const T*>(src);
  } else {
    set_ones(v);
  }
  *reinterpret_cast<T*>(dst) = v;
}

// One unit of `unit` bytes (16, 4, 2 or 1; the same for the whole grid) from src, or all-ones bytes.
__device__ __forceinline__ void copy_unit(char* dst, const char* src, int unit, bool ok) {
  switch (unit) {
    case 16:
      copy_or_ones<uint4>(dst, src, ok);
      break;
    case 4:
      copy_or_ones<uint32_t>(dst, src, ok);
      break;
    case 2:
      copy_or_ones<uint16_t>(dst, src, ok);
      break;
    default:
      copy_or_ones<uint8_t>(dst, src, ok);
      break;
  }
}

// One grid-stride loop over the x items, then the y items, of the batch. An x item is x_unit
// pixels (images: 4 -> one float4 or four 16-bit values, or 1) or x_unit bytes (f32 copy); a y item
// is y_unit bytes. x_per_row / y_per_row: items per row. Every block reads the cursor first; the last
// block to pass last_block() (so after every block's read) writes cursor + b. XB: the type of xb
// (float, or __nv_bfloat16 / __half for images: each pixel normalised in fp32, rounded once).
__device__ __forceinline__ void store_pixels(float* out, float4 o) { *reinterpret_cast<float4*>(out) = o; }
template <typename T>
__device__ __forceinline__ void store_pixels(T* out, float4 o) {
  out[0] = from_float<T>(o.x), out[1] = from_float<T>(o.y), out[2] = from_float<T>(o.z), out[3] = from_float<T>(o.w);
}

template <typename XB>
static __global__ void gather_batch_kernel(GatherBatchArgs a, int x_unit, int64_t x_per_row, int y_unit,
                                           int64_t y_per_row) {
  const int64_t cursor = *a.cursor;
  const int64_t start = (cursor % a.n + a.n) % a.n;
  const int64_t x_items = a.b * x_per_row, total = x_items + a.b * y_per_row;
  const int64_t x_row_bytes = a.x_row * static_cast<int64_t>(sizeof(float));
  const float nan = __int_as_float(0x7fffffff);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const bool is_x = i < x_items;
    const int64_t e = is_x ? i : i - x_items, per_row = is_x ? x_per_row : y_per_row;
    const int64_t j = e / per_row, k = e - j * per_row;
    const int64_t r = a.perm[(start + j) % a.n];
    const bool ok = r >= 0 && r < a.rows;
    const int64_t row = ok ? r : 0;  // addresses stay inside the table; `ok` decides what is written
    if (!is_x) {
      copy_unit(static_cast<char*>(a.yb) + j * a.y_row_bytes + k * y_unit,
                static_cast<const char*>(a.y) + row * a.y_row_bytes + k * y_unit, y_unit, ok);
    } else if (!a.images) {
      copy_unit(static_cast<char*>(a.xb) + j * x_row_bytes + k * x_unit,
                static_cast<const char*>(a.x) + row * x_row_bytes + k * x_unit, x_unit, ok);
    } else {
      const uint8_t* px = static_cast<const uint8_t*>(a.x) + row * a.x_row + k * x_unit;
      XB* out = static_cast<XB*>(a.xb) + j * a.x_row + k * x_unit;
      if (x_unit == 4) {
        float4 o = make_float4(nan, nan, nan, nan);
        if (ok) {
          const uchar4 u = *reinterpret_cast<const uchar4*>(px);
          o = make_float4(normalise_pixel(u.x, a.mean, a.stddev), normalise_pixel(u.y, a.mean, a.stddev),
                          normalise_pixel(u.z, a.mean, a.stddev), normalise_pixel(u.w, a.mean, a.stddev));
        }
        store_pixels(out, o);
      } else {
        *out = from_float<XB>(ok ? normalise_pixel(*px, a.mean, a.stddev) : nan);
      }
    }
  }
  if (last_block(a.block_counter) && threadIdx.x == 0) *a.cursor = cursor + a.b;
}

void gather_batch_cuda(const GatherBatchArgs& a, cudaStream_t stream) {
  if (a.b == 0) return;  // nothing to gather, and the cursor advances by 0
  const int64_t x_row_bytes = a.x_row * static_cast<int64_t>(sizeof(float));
  int x_unit;
  int64_t x_per_row;
  if (a.images) {
    const bool wide = a.xb_dtype == DType::f32;
    x_unit = a.x_row % 4 == 0 && aligned_to<4>(a.x) && (wide ? aligned16(a.xb) : aligned_to<8>(a.xb)) ? 4 : 1;
    x_per_row = a.x_row / x_unit;
  } else {
    x_unit = unit_for({addr(a.x), addr(a.xb), uint64_t(x_row_bytes)});
    x_per_row = x_row_bytes / x_unit;
  }
  const int y_unit = unit_for({addr(a.y), addr(a.yb), uint64_t(a.y_row_bytes)});
  const int64_t y_per_row = a.y_row_bytes / y_unit;
  const dim3 grid = grid_for(a.b * (x_per_row + y_per_row), kBlock);
  if (a.images && a.xb_dtype == DType::bf16)
    launch<gather_batch_kernel<__nv_bfloat16>>(grid, kBlock, 0, stream, a, x_unit, x_per_row, y_unit, y_per_row);
  else if (a.images && a.xb_dtype == DType::f16)
    launch<gather_batch_kernel<__half>>(grid, kBlock, 0, stream, a, x_unit, x_per_row, y_unit, y_per_row);
  else
    launch<gather_batch_kernel<float>>(grid, kBlock, 0, stream, a, x_unit, x_per_row, y_unit, y_per_row);
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/data.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_data_ops puts them into the CUDA op table.

namespace cudl {
namespace {

cudaStream_t stream_of(const OpCall& c) { return cuda_context(c).stream(); }

void cuda_fill(const OpCall& c) {
  const ops::FillArgs p = ops::check_fill_call(c);
  uint64_t bits = 0;
  std::memcpy(&bits, p.bytes, static_cast<size_t>(p.elem_size));
  kernels::fill_cuda(p.y.data, p.n, p.elem_size, bits, stream_of(c));
}

void cuda_copy(const OpCall& c) {
  const ops::CopyArgs p = ops::check_copy_call(c);
  if (p.y.data == p.x.data) return;
  kernels::copy_bytes_cuda(p.y.data, p.x.data, p.bytes, stream_of(c));
}

void cuda_cast(const OpCall& c) {
  const ops::CastArgs p = ops::check_cast_call(c);
  const TensorView& x = p.x;
  const TensorView& y = p.y;
  if (x.dtype == y.dtype) {
    if (x.data != y.data)
      kernels::copy_bytes_cuda(y.data, x.data, x.numel() * static_cast<int64_t>(dtype_size(x.dtype)), stream_of(c));
    return;
  }
  kernels::cast_cuda(x.data, kernels::cast_code(x.dtype), y.data, kernels::cast_code(y.dtype), x.numel(), stream_of(c));
}

void cuda_permute(const OpCall& c) {
  const ops::PermuteArgs p = ops::check_permute_call(c);
  kernels::permute_cuda(p.x.data, p.y.data, p.elem_size, p.rank, p.out_dims, p.in_strides, p.n,
                        stream_of(c));
}

void cuda_concat(const OpCall& c) {
  const ops::ConcatArgs p = ops::check_concat_call(c);
  const int64_t es = p.elem_size, y_pitch = p.total * p.inner * es;
  int64_t at = 0;
  for (int k = 0; k < p.n_xs; ++k) {
    const int64_t row = p.lens[k] * p.inner * es;
    kernels::copy_rows_cuda(static_cast<char*>(p.y.data) + at, y_pitch, p.xs[k].data, row, p.outer, row,
                            stream_of(c));
    at += row;
  }
}

void cuda_slice(const OpCall& c) {
  const ops::SliceArgs p = ops::check_slice_call(c);
  const int64_t es = p.elem_size, part = p.len * p.inner * es;
  kernels::copy_rows_cuda(p.y.data, part, static_cast<const char*>(p.x.data) + p.start * p.inner * es,
                          p.full * p.inner * es, p.outer, part, stream_of(c));
}

void cuda_slice_backward(const OpCall& c) {
  const ops::SliceArgs p = ops::check_slice_call(c);
  const int64_t es = p.elem_size;
  kernels::slice_backward_cuda(p.dy.data, p.dx.data, p.outer, p.full * p.inner * es,
                               p.start * p.inner * es, p.len * p.inner * es, stream_of(c));
}

void cuda_gather(const OpCall& c) {
  const ops::GatherArgs p = ops::check_gather_call(c);
  if (p.storage != DType::f32) {  // f32 table -> bf16 / f16 rows (16-bit storage)
    kernels::gather_rows_convert_cuda(p.table.as<float>(), p.idx.as<int32_t>(), p.y.data,
                                      kernels::storage_of(p.storage), p.rows, p.row, p.m, stream_of(c));
    return;
  }
  kernels::gather_rows_cuda(p.table.data, p.idx.as<int32_t>(), p.y.data, p.rows, p.row * p.elem_size,
                            p.m, stream_of(c));
}

void cuda_gather_backward(const OpCall& c) {
  const ops::GatherArgs p = ops::check_gather_call(c);
  CudaContext& ctx = cuda_context(c);
  void* ws = ctx.workspace(kernels::gather_backward_workspace_bytes(p.rows, p.m));
  kernels::gather_backward_cuda(p.dy.data, kernels::storage_of(p.storage), p.idx.as<int32_t>(),
                                p.dtable.as<float>(), p.rows, p.row, p.m, ws, ctx.stream());
}

void cuda_one_hot(const OpCall& c) {
  const ops::OneHotArgs p = ops::check_one_hot_call(c);
  kernels::one_hot_cuda(p.labels.as<int32_t>(), p.y.as<float>(), p.n, p.classes, stream_of(c));
}

void cuda_gather_images(const OpCall& c) {
  const ops::GatherArgs p = ops::check_gather_call(c);
  kernels::gather_images_cuda(p.table.as<uint8_t>(), p.idx.as<int32_t>(), p.y.as<float>(), p.rows,
                              p.row, p.m, p.mean, p.stddev,
                              stream_of(c));
}

void cuda_gather_batch(const OpCall& c) {
  const ops::GatherBatchArgs p = ops::check_gather_batch_call(c);
  CudaContext& ctx = cuda_context(c);
  kernels::GatherBatchArgs a;
  a.perm = p.perm.as<int32_t>();
  a.n = p.n;
  a.cursor = p.cursor.as<int64_t>();
  a.block_counter = ctx.block_counter();
  a.x = p.x.data;
  a.xb = p.xb.data;
  a.xb_dtype = p.xb.dtype;
  a.y = p.y.data;
  a.yb = p.yb.data;
  a.rows = p.rows;
  a.b = p.b;
  a.x_row = p.x_row;
  a.y_row_bytes = p.y_row_bytes;
  a.images = p.images;
  a.mean = p.mean;
  a.stddev = p.stddev;
  kernels::gather_batch_cuda(a, ctx.stream());
}

}  // namespace

void register_cuda_data_ops(OpTable& t) {
  t.add(OpKind::Fill, cuda_fill);
  t.add(OpKind::Copy, cuda_copy);
  t.add(OpKind::Cast, cuda_cast);
  t.add(OpKind::Permute, cuda_permute);
  t.add(OpKind::Concat, cuda_concat);
  t.add(OpKind::Slice, cuda_slice);
  t.add(OpKind::SliceBackward, cuda_slice_backward);
  t.add(OpKind::Gather, cuda_gather);
  t.add(OpKind::GatherBackward, cuda_gather_backward);
  t.add(OpKind::OneHot, cuda_one_hot);
  t.add(OpKind::GatherImages, cuda_gather_images);
  t.add(OpKind::GatherBatch, cuda_gather_batch);
}

}  // namespace cudl
