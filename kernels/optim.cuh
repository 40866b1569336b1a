// kernels/optim.cuh — launchers of the fused multi-tensor optimizer kernels: one launch updates every
// parameter of a list (split into several launches only when the list outgrows a launch's arguments).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace cudl::kernels {

// Every launcher takes `n` groups of `depth` tensors as ptrs[k * depth + d] (group k, tensor d),
// each group's tensors of sizes[k] f32 elements. hyper: device f32 {lr, t}, read by the kernels.
// advance_t (nullable; CudaContext::block_counter): the step advances t itself, so no separate
// Increment launch is needed: every block computes with t = hyper[1] + 1, and the last block of the
// last launch stores that to hyper[1] once every block has read the old value.
// skip_on_flag: every block reads hyper[2] and, when it is nonzero, writes nothing (t included).
// copies (the steps; default none): ptrs[k] is group k's 16-bit weight copy (null: none) of types[k];
// the step stores round_to_nearest_even(updated parameter) there in the same pass.

enum class WeightCopyType : unsigned char { bf16, f16 };
struct WeightCopies {
  void* const* ptrs = nullptr;  // n entries, or null: no copies at all
  const WeightCopyType* types = nullptr;
};

/// torch.optim.SGD; depth 2 (param, grad) without momentum, 3 (param, grad, buf) with.
void sgd_step_cuda(float* hyper, float* const* ptrs, const int64_t* sizes, int n, int depth, float momentum,
                   float dampening, float weight_decay, bool nesterov, cudaStream_t stream,
                   unsigned int* advance_t = nullptr, bool skip_on_flag = false, const WeightCopies& copies = {});
/// torch.optim.Adam / AdamW, or with epsilon_hat Keras's Adam; depth 4 (param, grad, m, v).
void adam_step_cuda(float* hyper, float* const* ptrs, const int64_t* sizes, int n, double beta1, double beta2,
                    double eps, float weight_decay, bool decoupled, bool epsilon_hat, cudaStream_t stream,
                    unsigned int* advance_t = nullptr, bool skip_on_flag = false, const WeightCopies& copies = {});
/// torch.optim.RMSprop (not centered, no momentum), or with eps_in_sqrt Keras's; depth 3 (param, grad,
/// sq_avg).
void rmsprop_step_cuda(float* hyper, float* const* ptrs, const int64_t* sizes, int n, double alpha, float eps,
                       float weight_decay, bool eps_in_sqrt, cudaStream_t stream, unsigned int* advance_t = nullptr,
                       bool skip_on_flag = false, const WeightCopies& copies = {});
/// torch.optim.Adagrad; depth 3 (param, grad, sum).
void adagrad_step_cuda(float* hyper, float* const* ptrs, const int64_t* sizes, int n, float eps,
                       float weight_decay, double lr_decay, cudaStream_t stream, unsigned int* advance_t = nullptr,
                       bool skip_on_flag = false, const WeightCopies& copies = {});
/// grad += l1 * sign(param) + l2 * param; depth 2 (param, grad).
void weight_penalty_cuda(float* const* ptrs, const int64_t* sizes, int n, float l1, float l2, cudaStream_t stream);

/// Dynamic loss scaling (ops AmpUnscale): grads *= 1 / state[0], then state [scale, clean, skipped,
/// overflowed] and hyper[2] (skip flag) updated by the last block (torch's GradScaler rules); depth 1.
/// counter (CudaContext::block_counter) and found (CudaContext::grid_flag) are 0 when it starts and
/// 0 again when it ends. One launch unless the list outgrows the argument block.
void amp_unscale_cuda(float* state, float* hyper, float* const* grads, const int64_t* sizes, int n, double growth,
                      double backoff, int64_t interval, unsigned int* counter, unsigned int* found,
                      cudaStream_t stream);

/// Scratch bytes clip_grad_norm_cuda needs for this list.
size_t clip_grad_norm_workspace_bytes(const int64_t* sizes, int n);
/// total_norm[0] = ||grads||_2 (deterministic two-stage reduction), then every grad is scaled by
/// min(1, max_norm / (norm + 1e-6)) read on the device; depth 1.
void clip_grad_norm_cuda(float* const* grads, const int64_t* sizes, int n, double max_norm, float* total_norm,
                         void* workspace, cudaStream_t stream);

}  // namespace cudl::kernels
