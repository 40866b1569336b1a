// memory/pinned.hpp — PinnedBuffer: move-only page-locked host memory from the pinned pool, for
// staging batches to the GPU with asynchronous copies (plain host memory when there is no GPU).
#pragma once

#include <cstddef>
#include <utility>

namespace cudl::memory {

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  /// `bytes` from the pinned pool (contents undefined).
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;  // copies would be silent and expensive
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  size_t size() const { return bytes_; }
  explicit operator bool() const { return data_ != nullptr; }

  /// An asynchronous copy queued on `stream` (a cudaStream_t) reads or writes this buffer: its
  /// memory is not handed out again before that copy has completed, even after destruction.
  void record_stream(void* stream);
  /// Gives the memory back to the pool now.
  void reset() noexcept;

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace cudl::memory
