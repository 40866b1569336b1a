// kernels/elementwise.cuh — host launchers of the elementwise kernels (unary activations, broadcasting
// binary ops, tensor-scalar ops, and their gradients). Contiguous; ops are UnaryOp/BinaryOp values.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

constexpr int kMaxBroadcastDims = 8;  // == Shape::kMaxDims

/// c = a op b as a loop nest over c's (collapsed) dimensions: element with coordinates k of the nest
/// is c[row-major k], a[sum k[d] * a_stride[d]], b[sum k[d] * b_stride[d]] (stride 0: broadcast).
struct BroadcastStrides {
  int rank;
  int64_t dims[kMaxBroadcastDims];
  int64_t a_stride[kMaxBroadcastDims];
  int64_t b_stride[kMaxBroadcastDims];
};

/// Gradient of one operand ("self") of c = a op b: element j of self (row-major over the kept
/// dimensions) sums, in a fixed order, over the reduced dimensions (where self is broadcast).
/// Offsets into c and into the other operand follow the strides of each dimension.
struct BroadcastGradPlan {
  int n_kept;
  int64_t kept_size[kMaxBroadcastDims], kept_c[kMaxBroadcastDims], kept_other[kMaxBroadcastDims];
  int n_red;
  int64_t red_size[kMaxBroadcastDims], red_c[kMaxBroadcastDims], red_other[kMaxBroadcastDims];
  int64_t red_count;  // product of red_size
};

// Every launcher exists for the storage types T = float, __nv_bfloat16 and __half (instantiated in
// elementwise.cu): the kernels widen each load to float, compute in fp32 as for f32, and round each
// store to T (nearest even); broadcast-gradient sums are fp32 and round once. A call makes the same
// launches whatever T is.

template <typename T>
void unary_cuda(int op, float alpha, const T* x, T* y, int64_t n, cudaStream_t stream);
/// x or y may be null when the op's derivative does not read it.
template <typename T>
void unary_backward_cuda(int op, float alpha, const T* x, const T* y, const T* dy, T* dx, int64_t n,
                         cudaStream_t stream);

/// Same shapes when `strides` is null; otherwise the broadcast loop nest of c (n elements).
template <typename T>
void binary_cuda(int op, const T* a, const T* b, T* c, int64_t n, const BroadcastStrides* strides, cudaStream_t stream);
/// Same shapes (n elements each): da and/or db (either may be null), elementwise.
template <typename T>
void binary_backward_same_cuda(int op, const T* a, const T* b, const T* dc, T* da, T* db, int64_t n,
                               cudaStream_t stream);
/// One broadcast gradient: out (n_out elements, the shape of a when self_is_a, else of b).
template <typename T>
void binary_backward_reduce_cuda(int op, bool self_is_a, const T* a, const T* b, const T* dc, T* out, int64_t n_out,
                                 const BroadcastGradPlan& plan, cudaStream_t stream);

/// y = x op s, or s op x when scalar_first.
template <typename T>
void binary_scalar_cuda(int op, float s, bool scalar_first, const T* x, T* y, int64_t n, cudaStream_t stream);
template <typename T>
void binary_scalar_backward_cuda(int op, float s, bool scalar_first, const T* x, const T* dy, T* dx, int64_t n,
                                 cudaStream_t stream);

}  // namespace cudl::kernels
