// cudl/checkpoint.hpp — checkpoints in the safetensors layout (8-byte header length, JSON header,
// raw little-endian tensors), readable by other tools. Written to a temporary file that is
// fsynced and renamed, so a crash never leaves a half-written checkpoint under the final name.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cudl/model.hpp"

namespace cudl {

/// Writes named tensors (any device) and string metadata to `path` atomically.
CUDL_API void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata = {});
/// Reads every tensor of a safetensors file onto the CPU; metadata goes to *metadata when given.
/// Throws cudl::Error naming the file (truncated, corrupt header) or the tensor (bad offsets).
CUDL_API std::vector<std::pair<std::string, Tensor>> load_safetensors(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

/// Saves the model's complete training state: parameters, buffers, optimizer slots and step
/// counters, RNG state, and the step in the metadata.
CUDL_API void save_checkpoint(Model& model, const std::string& path);
/// Restores a checkpoint written by save_checkpoint into a compiled model of the same
/// architecture. A missing or mis-shaped tensor raises an error naming it; nothing is modified
/// unless every tensor matches.
CUDL_API void load_checkpoint(Model& model, const std::string& path);

}  // namespace cudl
