// kernels/loss.cuh — host launchers of the loss kernels: fused value + gradient (+ accuracy) per
// element or per row, and in the same launch a deterministic fixed-order reduction of per-block
// partial sums (the last block to finish does it) that also updates metric accumulators.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/storage.cuh"

namespace cudl::kernels {

/// Per-element loss functions (value and d value / d pred), as in src/cpu/loss.cpp.
enum class ElementwiseLoss : int { Mse, L1, Huber, Bce, BceWithLogits };

/// Bytes of scratch memory the launchers below need for `items` elements (elementwise) or rows.
size_t loss_workspace_bytes(int64_t items, bool per_row);

/// Where a launch puts its reduction; every pointer is nullable. loss = the reduced loss,
/// correct = CE's count of rows whose argmax is the label, and the running metric accumulators
/// loss_acc += acc_scale * loss and correct_acc += (acc_scale * correct) / rows counted (f32, in place). `counter` is
/// the stream's block counter (CudaContext::block_counter); it is required whenever any output is.
struct LossSink {
  float* loss = nullptr;
  int32_t* correct = nullptr;
  float* loss_acc = nullptr;
  float acc_scale = 1.f;
  float* correct_acc = nullptr;
  unsigned int* counter = nullptr;
};

/// Shared conventions: pred / logits and dpred are of storage `type` (f32, bf16 or f16: widened on
/// load, dpred rounded to nearest even once); targets, dloss and everything in LossSink are f32, and
/// the math is fp32. `dloss` (nullable) is read on the device; dpred (nullable) = d loss / d pred
/// * dloss * (1 / divisor under Mean). `workspace` holds loss_workspace_bytes() bytes. One kernel
/// launch each; nothing is read back to the host.
void elementwise_loss_cuda(ElementwiseLoss kind, float param, Storage type, const void* pred, const float* target,
                           int64_t n, bool mean, const float* dloss, void* dpred, const LossSink& out, void* workspace,
                           cudaStream_t stream);

/// Logits (rows, cols), labels i32 (rows); one warp per row: log-softmax + NLL with label
/// smoothing, gradient and argmax == label count. A label outside [0, cols) makes its row's loss
/// and gradient NaN and never counts as correct. `ignore_index` (host pointer, nullable): rows with
/// that label add nothing and get zero gradient rows; Mean divides by the rows kept, counted first
/// by a one-block kernel (two launches then). correct_acc += (acc_scale * correct) / rows counted.
void cross_entropy_loss_cuda(Storage type, const void* logits, const int32_t* labels, int64_t rows, int64_t cols,
                             float smoothing, const int32_t* ignore_index, bool mean, const float* dloss, void* dpred,
                             const LossSink& out, void* workspace, cudaStream_t stream);

/// Logits (rows, cols), probability or one-hot targets (rows, cols).
void soft_cross_entropy_loss_cuda(Storage type, const void* logits, const float* target, int64_t rows, int64_t cols,
                                  bool mean, const float* dloss, void* dpred, const LossSink& out, void* workspace,
                                  cudaStream_t stream);

/// Log-probabilities (rows, cols), labels i32 (rows); bad labels as in cross_entropy_loss_cuda.
void nll_loss_cuda(Storage type, const void* logp, const int32_t* labels, int64_t rows, int64_t cols, bool mean,
                   const float* dloss, void* dpred, const LossSink& out, void* workspace, cudaStream_t stream);

}  // namespace cudl::kernels
