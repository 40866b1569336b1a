// cuda/cuda_backend.cpp — registration of the CUDA backend: one call per op family.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_elementwise_ops(OpTable& t);
void register_cuda_reduce_ops(OpTable& t);
void register_cuda_matmul_ops(OpTable& t);
void register_cuda_conv_ops(OpTable& t);
void register_cuda_pool_ops(OpTable& t);
void register_cuda_upsample_ops(OpTable& t);
void register_cuda_norm_ops(OpTable& t);
void register_cuda_random_ops(OpTable& t);
void register_cuda_softmax_ops(OpTable& t);
void register_cuda_attention_ops(OpTable& t);
void register_cuda_loss_ops(OpTable& t);
void register_cuda_optim_ops(OpTable& t);
void register_cuda_data_ops(OpTable& t);
void register_cuda_util_ops(OpTable& t);
void register_cuda_augment_ops(OpTable& t);
void register_cuda_recurrent_ops(OpTable& t);
void register_cuda_collective_ops(OpTable& t);

void register_cuda_ops(OpTable& t) {
  register_cuda_elementwise_ops(t);
  register_cuda_reduce_ops(t);
  register_cuda_matmul_ops(t);
  register_cuda_conv_ops(t);
  register_cuda_pool_ops(t);
  register_cuda_upsample_ops(t);
  register_cuda_norm_ops(t);
  register_cuda_random_ops(t);
  register_cuda_softmax_ops(t);
  register_cuda_attention_ops(t);
  register_cuda_loss_ops(t);
  register_cuda_optim_ops(t);
  register_cuda_data_ops(t);
  register_cuda_util_ops(t);
  register_cuda_augment_ops(t);
  register_cuda_recurrent_ops(t);
  register_cuda_collective_ops(t);
}

}  // namespace cudl
