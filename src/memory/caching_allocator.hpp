// memory/caching_allocator.hpp — a stream-ordered caching allocator (size classes, block splitting
// and coalescing, per-stream reuse, event-guarded cross-stream reuse) over an injectable raw allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cudl/memory.hpp"

namespace cudl::memory {

/// Opaque stream and event handles (cudaStream_t / cudaEvent_t on CUDA; nullptr is the host or
/// the legacy stream for a pool that has none).
using StreamHandle = void*;
using EventHandle = void*;

/// Where a pool's memory comes from, and the stream events that make cross-stream reuse safe.
/// The CUDA implementation (src/cuda/device_memory.cpp) calls cudaMalloc/cudaFree and cudaEvent*;
/// tests inject a fake one. Methods are called with the pool's lock held.
struct RawAllocator {
  virtual ~RawAllocator() = default;
  /// `bytes` of fresh memory aligned to at least 512 bytes, or nullptr when there is none left.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* ptr) = 0;

  /// Events: record() marks the point after all work queued on `stream` so far; query() is true
  /// once that work has completed; synchronize() blocks until it has.
  virtual EventHandle create_event() = 0;
  virtual void record_event(EventHandle event, StreamHandle stream) = 0;
  virtual bool query_event(EventHandle event) = 0;
  virtual void synchronize_event(EventHandle event) = 0;
  virtual void destroy_event(EventHandle event) = 0;

  /// Names for messages: the device ("cuda:0"), the raw calls ("cudaMalloc", "cudaFree").
  virtual std::string name() const = 0;
  virtual const char* alloc_call() const { return "raw alloc"; }
  virtual const char* free_call() const { return "raw free"; }
  /// First words of the out-of-memory message.
  virtual std::string oom_title() const { return "out of memory on " + name(); }
  /// Extra facts for the out-of-memory message ("device: 80.00 GiB total, 0.31 GiB free").
  virtual std::string memory_info() const { return {}; }
};

/// Size classes (as in PyTorch's CUDACachingAllocator): every request is rounded up to
/// kMinBlockSize; requests up to kSmallSize come from kSmallBuffer segments (small pool); larger
/// ones from kLargeBuffer segments when below kMinLargeAlloc, else from a segment of their size
/// rounded up to kRoundLarge (large pool). A cached block is split when the remainder is at least
/// kMinBlockSize (small pool) or more than kSmallSize (large pool).
constexpr size_t kMinBlockSize = 512;
constexpr size_t kSmallSize = size_t(1) << 20;
constexpr size_t kSmallBuffer = size_t(2) << 20;
constexpr size_t kMinLargeAlloc = size_t(10) << 20;
constexpr size_t kLargeBuffer = size_t(20) << 20;
constexpr size_t kRoundLarge = size_t(2) << 20;

/// Rounded size of a block serving a request of `nbytes`.
size_t round_block_size(size_t nbytes);
/// Size of the segment allocated when no cached block can serve a (rounded) request.
size_t segment_size_for(size_t rounded);

/// CUDA graphs: a block used by captured work must stay allocated while the graph may be
/// replayed (the executor's arena does this); new segments cannot be allocated during capture.
class CachingAllocator {
 public:
  enum class Mode { Caching, Passthrough };
  /// From CUDL_ALLOCATOR: unset, "" or "caching" -> Caching; "passthrough" -> Passthrough;
  /// anything else throws cudl::Error.
  static Mode mode_from_env();

  explicit CachingAllocator(std::unique_ptr<RawAllocator> raw, Mode mode = mode_from_env());
  /// Returns free cached segments to the raw allocator; blocks still handed out are left alone.
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  /// `nbytes` (0 allowed) usable in stream order on `stream`: work queued on `stream` after this
  /// call may use it. Reuses a block freed on the same stream at once; a block last used on
  /// another stream only after an event recorded there has completed. On raw out-of-memory,
  /// frees the cache and retries once, then throws cudl::Error with the size and statistics.
  void* allocate(size_t nbytes, StreamHandle stream);
  /// Gives back a block; it may be reused by work queued on its stream after this call, and by
  /// other streams once their recorded uses (record_stream) have completed. Throws for a pointer
  /// this pool did not hand out.
  void free(void* ptr);
  /// Notes that `stream` (other than the allocation stream) uses the block at `ptr`, so that its
  /// memory is not reused before the work queued on `stream` until free() has completed.
  void record_stream(void* ptr, StreamHandle stream);
  /// Returns every fully free segment to the raw allocator (waiting for pending events first).
  void empty_cache();

  MemoryStats stats() const;
  void reset_peak_stats();
  Mode mode() const { return mode_; }
  RawAllocator& raw() { return *raw_; }
  /// Size of the block handed out at `ptr` (rounded; throws for an unknown pointer).
  size_t block_size(const void* ptr) const;

 private:
  struct Segment;
  struct Block {
    Segment* segment = nullptr;
    char* ptr = nullptr;
    size_t size = 0;
    size_t requested = 0;
    bool allocated = false;
    Block* prev = nullptr;  // neighbours inside the segment, by address
    Block* next = nullptr;
    std::vector<StreamHandle> stream_uses;  // streams other than segment->stream (record_stream)
    int pending_events = 0;                 // events still to complete before the block is free
  };
  struct Segment {
    char* base = nullptr;
    size_t size = 0;
    StreamHandle stream = nullptr;  // all blocks of a segment belong to one stream
    bool small = false;
    EventHandle free_event = nullptr;  // recorded on `stream` while the whole segment is free
  };
  struct BlockLess {
    bool operator()(const Block* a, const Block* b) const;
  };
  using FreeList = std::set<Block*, BlockLess>;  // ordered by (stream, size, address)

  FreeList& pool_of(bool small) { return small ? small_free_ : large_free_; }
  Block* find_on_stream(FreeList& list, StreamHandle stream, size_t size);
  Block* take_from_other_stream(FreeList& list, StreamHandle stream, size_t size);
  Block* new_segment(size_t rounded, StreamHandle stream, bool small);
  Block* split_and_mark(Block* block, size_t rounded, size_t requested);
  void free_block(Block* block);  // back to the free list (merging) or, in passthrough, released
  void release_segment(Block* block);
  void release_free_segments();
  void process_events();
  void synchronize_pending();
  EventHandle get_event();
  void put_event(EventHandle e);
  void clear_free_event(Segment* seg);
  [[noreturn]] void throw_oom(size_t nbytes, size_t segment_bytes);
  void add_allocated(long long bytes, long long requested);
  void add_reserved(long long bytes);

  std::unique_ptr<RawAllocator> raw_;
  Mode mode_;
  mutable std::mutex mu_;
  FreeList small_free_, large_free_;
  std::unordered_map<const void*, Block*> active_;       // handed-out blocks by address
  std::vector<std::pair<EventHandle, Block*>> pending_;  // record_stream events of freed blocks
  std::vector<EventHandle> event_cache_;                 // created events ready for reuse
  MemoryStats stats_;
};

}  // namespace cudl::memory
