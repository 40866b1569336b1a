// cpu/cpu_backend.cpp — registration of the CPU reference backend: one call per op family.
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_elementwise_ops(OpTable& t);
void register_cpu_reduce_ops(OpTable& t);
void register_cpu_matmul_ops(OpTable& t);
void register_cpu_conv_ops(OpTable& t);
void register_cpu_pool_ops(OpTable& t);
void register_cpu_upsample_ops(OpTable& t);
void register_cpu_norm_ops(OpTable& t);
void register_cpu_random_ops(OpTable& t);
void register_cpu_softmax_ops(OpTable& t);
void register_cpu_attention_ops(OpTable& t);
void register_cpu_loss_ops(OpTable& t);
void register_cpu_optim_ops(OpTable& t);
void register_cpu_data_ops(OpTable& t);
void register_cpu_util_ops(OpTable& t);
void register_cpu_augment_ops(OpTable& t);
void register_cpu_recurrent_ops(OpTable& t);
void set_cpu_storage_adapter(OpTable& t);

void register_cpu_ops(OpTable& t) {
  register_cpu_elementwise_ops(t);
  register_cpu_reduce_ops(t);
  register_cpu_matmul_ops(t);
  register_cpu_conv_ops(t);
  register_cpu_pool_ops(t);
  register_cpu_upsample_ops(t);
  register_cpu_norm_ops(t);
  register_cpu_random_ops(t);
  register_cpu_softmax_ops(t);
  register_cpu_attention_ops(t);
  register_cpu_loss_ops(t);
  register_cpu_optim_ops(t);
  register_cpu_data_ops(t);
  register_cpu_util_ops(t);
  register_cpu_augment_ops(t);
  register_cpu_recurrent_ops(t);
  set_cpu_storage_adapter(t);  // bf16/f16 storage: widened to f32 around the f32 functions
}

}  // namespace cudl
