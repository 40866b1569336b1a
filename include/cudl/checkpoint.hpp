// cudl/checkpoint.hpp — checkpoints in the safetensors layout (8-byte header length, JSON header,
// raw little-endian tensors), readable by other tools. Written to a temporary file that is
// fsynced and renamed (every write, close and sync checked), so a crash or a full disk never
// leaves a half-written checkpoint under the final name. Read strictly: the whole file is
// validated before any tensor is returned or any model is changed.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cudl/model.hpp"

namespace cudl {

/// Writes named tensors (any device) and string metadata to `path` atomically. Names must be
/// unique, non-empty and not "__metadata__"; any failure leaves the previous file at `path`.
CUDL_API void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata = {});
/// Reads every tensor of a safetensors file onto the CPU; metadata goes to *metadata when given.
/// The whole file is checked first: header length and JSON syntax, every name (unique,
/// non-empty), dtype (F32, F16, BF16, I32, I64, U8), shape (integers whose byte size fits in
/// 2^63) and data offsets (the size the shape needs, inside the data, tensors tiling the data
/// section with no overlap, hole or trailing bytes), metadata values (strings). Throws
/// cudl::Error naming the file and the field, tensor or value that is wrong.
CUDL_API std::vector<std::pair<std::string, Tensor>> load_safetensors(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

/// Saves the model's complete training state: parameters, buffers, optimizer slots and step
/// counters, RNG state, and the step in the metadata. A data-parallel model (compiled with a
/// communicator) writes only on rank 0: every rank holds the same state, and any world size
/// (or a single device) can load the file.
CUDL_API void save_checkpoint(Model& model, const std::string& path);
/// Restores a checkpoint written by save_checkpoint into a compiled model of the same
/// architecture and optimizer. Throws cudl::Error naming the file and what is wrong for a
/// corrupt file, a missing, extra or mis-shaped tensor, optimizer state that does not match the
/// compiled optimizer, or step/epoch metadata that is not a decimal integer in [0, 2^63); in
/// every such case the model is left exactly as it was (nothing is copied until all is checked).
CUDL_API void load_checkpoint(Model& model, const std::string& path);

}  // namespace cudl
