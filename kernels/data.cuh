// kernels/data.cuh — launchers of the data-movement kernels: fill, copy, cast, permute, strided row copies
// (concat/slice), gather (+ deterministic backward), one-hot, u8 image gather, a training step's batch gather.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cudl/dtype.hpp"  // GatherBatchArgs::xb_dtype (nvcc's device pass sees no other include of it)
#include "kernels/storage.cuh"

namespace cudl::kernels {

/// n elements of elem_size (1, 2, 4, 8) bytes, each set to the low elem_size bytes of `bits`.
void fill_cuda(void* y, int64_t n, int elem_size, uint64_t bits, cudaStream_t stream);
/// memmove-free byte copy (dst and src do not overlap), 16-byte vectors where co-aligned.
void copy_bytes_cuda(void* dst, const void* src, int64_t bytes, cudaStream_t stream);

/// Dtype codes for cast_cuda.
enum CastType : int { kCastF32 = 0, kCastF16 = 1, kCastBf16 = 2, kCastI32 = 3 };
/// The code of a dtype cast_cuda converts (f32, f16, bf16, i32; the callers' checks reject others).
inline int cast_code(DType t) {
  switch (t) {
    case DType::f16:
      return kCastF16;
    case DType::bf16:
      return kCastBf16;
    case DType::i32:
      return kCastI32;
    default:
      return kCastF32;
  }
}
/// y = x converted: f32 -> f16/bf16 round to nearest even, f32 -> i32 truncation (NaN 0, saturating),
/// f16/bf16/i32 -> f32. One side must be f32.
void cast_cuda(const void* x, int x_type, void* y, int y_type, int64_t n, cudaStream_t stream);

/// y (out_dims, row-major) element c reads x at sum_k c[k] * in_strides[k]; rank <= 8. When x's
/// contiguous dim is not y's last (a transpose: (B,H,T,D) -> (B,H,D,T)), 32 x 32 shared-memory
/// tiles keep both the reads and the writes coalesced; otherwise each thread copies one element
/// and consecutive threads touch consecutive elements on both sides ((B,T,H,D) -> (B,H,T,D)).
void permute_cuda(const void* x, void* y, int elem_size, int rank, const int64_t* out_dims, const int64_t* in_strides,
                  int64_t n, cudaStream_t stream);

/// rows x row_bytes copy between pitched buffers (concat pieces, slices).
void copy_rows_cuda(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch, int64_t rows, int64_t row_bytes,
                    cudaStream_t stream);
/// dx row o (full_bytes) = zeros except bytes [start, start + part) = dy row o (part_bytes).
void slice_backward_cuda(const void* dy, void* dx, int64_t outer, int64_t full_bytes, int64_t start_bytes,
                         int64_t part_bytes, cudaStream_t stream);

/// y row m = table row idx[m] (row_bytes each); an index outside [0, rows) writes 0xFF bytes (NaN for f32).
void gather_rows_cuda(const void* table, const int32_t* idx, void* y, int64_t rows, int64_t row_bytes, int64_t m,
                      cudaStream_t stream);
/// As gather_rows_cuda from an f32 table into a bf16 / f16 y (y_type), each value rounded to nearest
/// even; an index outside [0, rows) writes a NaN row.
void gather_rows_convert_cuda(const float* table, const int32_t* idx, void* y, Storage y_type, int64_t rows,
                              int64_t row, int64_t m, cudaStream_t stream);
/// Scratch bytes gather_backward_cuda needs.
size_t gather_backward_workspace_bytes(int64_t rows, int64_t m);
/// dtable row r = sum of dy rows m with idx[m] == r in increasing m, no float atomics: the
/// (row, position) pairs are sorted by cub::DeviceRadixSort::SortPairs (stable, over the key bits
/// rows needs) in the workspace, then each row's run is summed in order. Indices outside [0, rows)
/// are ignored. dy is f32, bf16 or f16 (dy_type), widened and summed in fp32. Launches: 3 kernels
/// + the sort (m > 0), 2 kernels (m == 0).
void gather_backward_cuda(const void* dy, Storage dy_type, const int32_t* idx, float* dtable, int64_t rows,
                          int64_t row, int64_t m, void* workspace, cudaStream_t stream);

/// y (n, classes) = one_hot(labels); a label outside [0, classes) gives a row of NaN.
void one_hot_cuda(const int32_t* labels, float* y, int64_t n, int64_t classes, cudaStream_t stream);
/// y row b = (images row idx[b] / 255 - mean) / stddev in f32; an index outside [0, rows) gives NaN.
void gather_images_cuda(const uint8_t* images, const int32_t* idx, float* y, int64_t rows, int64_t row, int64_t b,
                        float mean, float stddev, cudaStream_t stream);

/// One training step's batch (GatherBatch). Row j of xb and yb is table row perm[(*cursor + j) mod n]:
/// x rows are u8 pixels normalised into f32 like gather_images_cuda (`images`) or f32 copied, y rows
/// are copied bytes. A perm entry outside [0, rows) gives a NaN x row and an all-ones y row. One
/// kernel: every block reads *cursor, and the last block to finish (block_counter, a word that is 0
/// between kernels) writes *cursor + b.
struct GatherBatchArgs {
  const int32_t* perm = nullptr;  // (n)
  int64_t n = 0;
  int64_t* cursor = nullptr;  // i64[1], read and advanced on the device
  unsigned int* block_counter = nullptr;
  const void* x = nullptr;  // (rows, x_row) u8 or f32
  void* xb = nullptr;       // (b, x_row): f32, or for images (u8 x) also bf16 / f16 (xb_dtype)
  DType xb_dtype = DType::f32;
  const void* y = nullptr;  // (rows, y_row_bytes) bytes
  void* yb = nullptr;       // (b, y_row_bytes) bytes
  int64_t rows = 0, b = 0, x_row = 0, y_row_bytes = 0;
  bool images = false;
  float mean = 0.f, stddev = 1.f;
};
void gather_batch_cuda(const GatherBatchArgs& args, cudaStream_t stream);

}  // namespace cudl::kernels
