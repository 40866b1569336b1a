// cudl/interop.hpp — tensors from memory that another framework owns (DLPack imports): copied into
// cudl's own storage, since cudl tensors own theirs.
#pragma once

#include "cudl/tensor.hpp"

namespace cudl {

/// A new tensor on `device` holding a copy of the shape.numel() * dtype_size(dtype) bytes at `data`,
/// which is memory of that device that cudl does not own (a CPU pointer for the CPU, a device
/// pointer for CUDA). On CUDA the copy first waits for all work queued on the device (the
/// producer's writes, on whatever stream) and returns once the copy is complete, so the producer
/// may free or reuse its memory at once.
CUDL_API Tensor tensor_copy_of(const void* data, const Shape& shape, DType dtype, Device device);

}  // namespace cudl
