// train/model_internals.hpp — internal access to a compiled Model's programs, for benchmarks that
// need the executor of the exact training step fit() runs (single steps, per-node bytes, dispatch),
// and to the state checkpoints restore.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "cudl/model.hpp"
#include "graph/executor.hpp"

namespace cudl::detail {

struct ModelInternals {
  /// The training program fit() builds for batches of `batch` rows of `data` (identity order,
  /// no augmentation), on the model's device, with the given executor options. Each run() is
  /// one training step that updates the model's parameters and optimizer state.
  static std::unique_ptr<graph::Executor> training_step(Model& model, const Dataset& data, int64_t batch,
                                                        const graph::ExecutorOptions& options);
  /// Puts the loss scaler (f16) back to its state at compile; nothing without loss scaling.
  static void reset_loss_scale(Model& model);
  /// bf16/f16 training programs built from now on read persistent 16-bit weight copies written by
  /// the optimizer step (true, the default) or cast every weight at the start of each step (false:
  /// the program before the copies, for comparisons). Drops the cached per-batch programs.
  static void set_fused_weight_copies(Model& model, bool fused);
  /// The persistent 16-bit weight copies by "layer.param" (empty before a bf16/f16 training program
  /// is built, and with set_fused_weight_copies(false)).
  static std::map<std::string, Tensor> weight_copies(const Model& model);
};

}  // namespace cudl::detail
