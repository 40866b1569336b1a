// cudl/data.hpp — datasets from IDX files (MNIST, Fashion-MNIST), raw or gzip.
#pragma once

#include <string>

#include "cudl/model.hpp"
#include "cudl/tensor.hpp"

namespace cudl {

/// Reads an IDX file (raw or gzip) of unsigned bytes into a u8 tensor with the file's
/// dimensions. Throws cudl::Error naming the file and what was expected and found for a missing,
/// truncated, oversized or corrupt file (bad magic, unsupported element type, zero dimensions).
CUDL_API Tensor read_idx(const std::string& path);

/// Loads MNIST-format data from `dir`: {train,t10k}-images-idx3-ubyte and -labels-idx1-ubyte
/// (each raw or with a .gz suffix). x is u8 (N, 1, 28, 28), y is i32 (N); mean/std are set to
/// the usual MNIST normalisation (0.1307, 0.3081), or Fashion-MNIST's (0.2860, 0.3530) when
/// `fashion`. `limit` > 0 keeps only the first `limit` examples. Throws naming the file when
/// images and labels disagree in count or a label is out of range.
CUDL_API Dataset load_mnist(const std::string& dir, bool train, int64_t limit = 0, bool fashion = false);

}  // namespace cudl
