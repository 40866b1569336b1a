// memory/caching_allocator.cpp — the device-independent caching pool: size classes, best-fit
// per-stream free lists, splitting and coalescing inside segments, event-guarded reuse, statistics.
#include "memory/caching_allocator.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <unordered_set>

#include "core/nvtx.hpp"
#include "cudl/error.hpp"

namespace cudl::memory {

size_t round_block_size(size_t nbytes) {
  if (nbytes < kMinBlockSize) return kMinBlockSize;
  return (nbytes + kMinBlockSize - 1) / kMinBlockSize * kMinBlockSize;
}

size_t segment_size_for(size_t rounded) {
  if (rounded <= kSmallSize) return kSmallBuffer;
  if (rounded < kMinLargeAlloc) return kLargeBuffer;
  return (rounded + kRoundLarge - 1) / kRoundLarge * kRoundLarge;
}

CachingAllocator::Mode CachingAllocator::mode_from_env() {
  const char* v = std::getenv("CUDL_ALLOCATOR");
  if (!v || !*v || std::strcmp(v, "caching") == 0) return Mode::Caching;
  if (std::strcmp(v, "passthrough") == 0) return Mode::Passthrough;
  CUDL_FAIL("CUDL_ALLOCATOR='", v, "' is not a known allocator (expected 'caching' or 'passthrough')");
}

bool CachingAllocator::BlockLess::operator()(const Block* a, const Block* b) const {
  auto sa = reinterpret_cast<uintptr_t>(a->segment->stream), sb = reinterpret_cast<uintptr_t>(b->segment->stream);
  if (sa != sb) return sa < sb;
  if (a->size != b->size) return a->size < b->size;
  return reinterpret_cast<uintptr_t>(a->ptr) < reinterpret_cast<uintptr_t>(b->ptr);
}

CachingAllocator::CachingAllocator(std::unique_ptr<RawAllocator> raw, Mode mode) : raw_(std::move(raw)), mode_(mode) {
  if (!raw_) CUDL_FAIL("CachingAllocator: no raw allocator");
  stats_.caching = mode_ == Mode::Caching;
}

CachingAllocator::~CachingAllocator() {
  // Destructors only log.
  try {
    std::lock_guard<std::mutex> lock(mu_);
    synchronize_pending();
    release_free_segments();
    for (EventHandle e : event_cache_) raw_->destroy_event(e);
    event_cache_.clear();
    // Segments with a block still handed out stay with the driver (the holder may still use the
    // memory), but their records go: every block of such a segment, then the segment.
    std::unordered_set<Segment*> held;
    for (const auto& [ptr, block] : active_) held.insert(block->segment);
    for (Segment* seg : held) {
      Block* b = nullptr;
      for (const auto& [ptr, block] : active_)
        if (block->segment == seg) b = block;
      while (b->prev) b = b->prev;
      while (b) {
        Block* next = b->next;
        delete b;
        b = next;
      }
      delete seg;
    }
    active_.clear();
    small_free_.clear();
    large_free_.clear();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cudl: error releasing the memory pool: %s\n", e.what());
  }
}

// --- events ---------------------------------------------------------------------------------

EventHandle CachingAllocator::get_event() {
  if (!event_cache_.empty()) {
    EventHandle e = event_cache_.back();
    event_cache_.pop_back();
    return e;
  }
  return raw_->create_event();
}

void CachingAllocator::put_event(EventHandle e) { event_cache_.push_back(e); }

void CachingAllocator::clear_free_event(Segment* seg) {
  if (seg->free_event) {
    put_event(seg->free_event);
    seg->free_event = nullptr;
  }
}

void CachingAllocator::process_events() {
  if (pending_.empty()) return;
  std::vector<std::pair<EventHandle, Block*>> still;
  std::vector<Block*> done;
  for (auto& [event, block] : pending_) {
    if (raw_->query_event(event)) {
      put_event(event);
      if (--block->pending_events == 0) done.push_back(block);
    } else {
      still.emplace_back(event, block);
    }
  }
  pending_.swap(still);
  for (Block* b : done) free_block(b);
}

void CachingAllocator::synchronize_pending() {
  for (auto& p : pending_) raw_->synchronize_event(p.first);
  process_events();
}

// --- statistics -----------------------------------------------------------------------------

void CachingAllocator::add_allocated(long long bytes, long long requested) {
  stats_.allocated_bytes = static_cast<size_t>(static_cast<long long>(stats_.allocated_bytes) + bytes);
  stats_.requested_bytes = static_cast<size_t>(static_cast<long long>(stats_.requested_bytes) + requested);
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
}

void CachingAllocator::add_reserved(long long bytes) {
  stats_.reserved_bytes = static_cast<size_t>(static_cast<long long>(stats_.reserved_bytes) + bytes);
  stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
}

MemoryStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

size_t CachingAllocator::block_size(const void* ptr) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = active_.find(ptr);
  if (it == active_.end()) CUDL_FAIL("memory pool ", raw_->name(), ": ", ptr, " is not an allocated block");
  return it->second->size;
}

// --- segments and blocks --------------------------------------------------------------------

CachingAllocator::Block* CachingAllocator::new_segment(size_t bytes, StreamHandle stream, bool small) {
  void* p = nullptr;
  {
    CUDL_NVTX_RANGE("cudl/pool_raw_alloc");
    ++stats_.num_raw_allocs;
    p = raw_->alloc(bytes);
  }
  if (!p) {
    ++stats_.num_raw_alloc_failures;
    return nullptr;
  }
  auto* seg = new Segment;
  seg->base = static_cast<char*>(p);
  seg->size = bytes;
  seg->stream = stream;
  seg->small = small;
  auto* b = new Block;
  b->segment = seg;
  b->ptr = seg->base;
  b->size = bytes;
  add_reserved(static_cast<long long>(bytes));
  ++stats_.num_segments;
  return b;
}

void CachingAllocator::release_segment(Block* block) {
  Segment* seg = block->segment;
  ++stats_.num_raw_frees;
  add_reserved(-static_cast<long long>(seg->size));
  --stats_.num_segments;
  clear_free_event(seg);
  char* base = seg->base;
  delete seg;
  delete block;
  raw_->free(base);
}

CachingAllocator::Block* CachingAllocator::find_on_stream(FreeList& list, StreamHandle stream, size_t size) {
  Segment key_seg;
  key_seg.stream = stream;
  Block key;
  key.segment = &key_seg;
  key.size = size;
  key.ptr = nullptr;
  auto it = list.lower_bound(&key);
  if (it == list.end() || (*it)->segment->stream != stream) return nullptr;
  Block* b = *it;
  list.erase(it);
  return b;
}

CachingAllocator::Block* CachingAllocator::take_from_other_stream(FreeList& list, StreamHandle stream, size_t size) {
  // Only whole free segments change stream, so every segment keeps one stream and coalescing
  // stays within it. The segment's last user may still be running on its stream: an event
  // recorded there (now, or on an earlier attempt) must have completed first.
  Block* best = nullptr;
  for (Block* b : list) {
    Segment* seg = b->segment;
    if (b->prev || b->next || seg->stream == stream || b->size < size) continue;
    if (best && b->size >= best->size) continue;
    if (seg->stream != nullptr) {  // a null stream is host order: nothing queued to wait for
      if (!seg->free_event) {
        EventHandle e = get_event();
        try {
          raw_->record_event(e, seg->stream);
        } catch (...) {
          put_event(e);
          throw;
        }
        seg->free_event = e;  // only once recorded: an unrecorded CUDA event queries as complete
      }
      if (!raw_->query_event(seg->free_event)) continue;
    }
    best = b;
  }
  if (!best) return nullptr;
  list.erase(best);
  clear_free_event(best->segment);
  best->segment->stream = stream;
  return best;
}

CachingAllocator::Block* CachingAllocator::split_and_mark(Block* block, size_t rounded, size_t requested) {
  Segment* seg = block->segment;
  if (mode_ == Mode::Caching) {
    const size_t remaining = block->size - rounded;
    if (seg->small ? remaining >= kMinBlockSize : remaining > kSmallSize) {
      auto* rest = new Block;
      rest->segment = seg;
      rest->ptr = block->ptr + rounded;
      rest->size = remaining;
      rest->prev = block;
      rest->next = block->next;
      if (block->next) block->next->prev = rest;
      block->next = rest;
      block->size = rounded;
      pool_of(seg->small).insert(rest);
    }
  }
  clear_free_event(seg);
  block->allocated = true;
  block->requested = requested;
  active_[block->ptr] = block;
  add_allocated(static_cast<long long>(block->size), static_cast<long long>(requested));
  ++stats_.num_allocs;
  return block;
}

void CachingAllocator::free_block(Block* block) {
  block->allocated = false;
  block->requested = 0;
  Segment* seg = block->segment;
  if (mode_ == Mode::Passthrough) {
    // Released at once, after the work queued on its stream (stream-ordered free).
    if (seg->stream) {
      EventHandle e = get_event();
      raw_->record_event(e, seg->stream);
      raw_->synchronize_event(e);
      put_event(e);
    }
    release_segment(block);
    return;
  }
  FreeList& list = pool_of(seg->small);
  if (block->prev && !block->prev->allocated) {
    Block* p = block->prev;
    list.erase(p);
    p->size += block->size;
    p->next = block->next;
    if (block->next) block->next->prev = p;
    delete block;
    block = p;
  }
  if (block->next && !block->next->allocated) {
    Block* n = block->next;
    list.erase(n);
    block->size += n->size;
    block->next = n->next;
    if (n->next) n->next->prev = block;
    delete n;
  }
  list.insert(block);
}

void CachingAllocator::release_free_segments() {
  std::vector<Block*> victims;
  std::vector<StreamHandle> streams;
  for (FreeList* list : {&small_free_, &large_free_}) {
    for (Block* b : *list) {
      if (b->prev || b->next) continue;  // part of a segment that is still in use
      victims.push_back(b);
      StreamHandle s = b->segment->stream;
      if (s && std::find(streams.begin(), streams.end(), s) == streams.end()) streams.push_back(s);
    }
  }
  if (victims.empty()) return;
  // Work queued on the segments' streams before their last free may still use them.
  for (StreamHandle s : streams) {
    EventHandle e = get_event();
    raw_->record_event(e, s);
    raw_->synchronize_event(e);
    put_event(e);
  }
  for (Block* b : victims) {
    pool_of(b->segment->small).erase(b);
    release_segment(b);
  }
}

// --- public interface -----------------------------------------------------------------------

void* CachingAllocator::allocate(size_t nbytes, StreamHandle stream) {
  std::lock_guard<std::mutex> lock(mu_);
  process_events();
  if (mode_ == Mode::Passthrough) {
    // Exactly the bytes asked for (at least 1), so that a guard page or a sanitizer sees overruns.
    const size_t bytes = nbytes == 0 ? 1 : nbytes;
    Block* b = new_segment(bytes, stream, bytes <= kSmallSize);
    if (!b) {
      synchronize_pending();
      b = new_segment(bytes, stream, bytes <= kSmallSize);
    }
    if (!b) throw_oom(nbytes, bytes);
    return split_and_mark(b, bytes, nbytes)->ptr;
  }

  const size_t rounded = round_block_size(nbytes);
  const bool small = rounded <= kSmallSize;
  FreeList& list = pool_of(small);
  Block* b = find_on_stream(list, stream, rounded);
  if (!b) b = take_from_other_stream(list, stream, rounded);
  if (b) {
    ++stats_.cache_hits;
  } else {
    const size_t seg_bytes = segment_size_for(rounded);
    b = new_segment(seg_bytes, stream, small);
    if (!b) {
      // Out of memory: give every unused cached segment back and try once more.
      synchronize_pending();
      b = find_on_stream(list, stream, rounded);
      if (b) {
        ++stats_.cache_hits;
      } else {
        release_free_segments();
        b = new_segment(seg_bytes, stream, small);
      }
      if (!b) throw_oom(nbytes, seg_bytes);
    }
  }
  return split_and_mark(b, rounded, nbytes)->ptr;
}

void CachingAllocator::free(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = active_.find(ptr);
  if (it == active_.end())
    CUDL_FAIL("memory pool ", raw_->name(), ": free of ", ptr, ", which is not an allocated block (double free?)");
  Block* b = it->second;
  active_.erase(it);
  ++stats_.num_frees;
  add_allocated(-static_cast<long long>(b->size), -static_cast<long long>(b->requested));
  if (!b->stream_uses.empty()) {
    // Other streams use the block: it becomes free once the work queued there until now is done.
    for (StreamHandle s : b->stream_uses) {
      EventHandle e = get_event();
      raw_->record_event(e, s);
      pending_.emplace_back(e, b);
      ++b->pending_events;
    }
    b->stream_uses.clear();
    return;
  }
  free_block(b);
}

void CachingAllocator::record_stream(void* ptr, StreamHandle stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = active_.find(ptr);
  if (it == active_.end())
    CUDL_FAIL("memory pool ", raw_->name(), ": record_stream on ", ptr, ", which is not an allocated block");
  Block* b = it->second;
  if (stream == b->segment->stream) return;
  if (std::find(b->stream_uses.begin(), b->stream_uses.end(), stream) == b->stream_uses.end())
    b->stream_uses.push_back(stream);
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  synchronize_pending();
  release_free_segments();
}

void CachingAllocator::throw_oom(size_t nbytes, size_t segment_bytes) {
  ++stats_.num_ooms;
  const MemoryStats& s = stats_;
  std::ostringstream os;
  os << raw_->oom_title() << ": tried to allocate " << format_bytes(nbytes) << " (" << nbytes << " bytes";
  if (segment_bytes != nbytes) os << ", in a new segment of " << format_bytes(segment_bytes);
  os << "); pool: allocated " << format_bytes(s.allocated_bytes) << ", reserved " << format_bytes(s.reserved_bytes)
     << " (peak allocated " << format_bytes(s.peak_allocated_bytes) << ", peak reserved "
     << format_bytes(s.peak_reserved_bytes) << "), reserved but unallocated "
     << format_bytes(s.reserved_bytes - s.allocated_bytes) << " in " << s.num_segments << " segment(s); "
     << s.num_raw_allocs << " " << raw_->alloc_call() << " calls (" << s.num_raw_alloc_failures << " failed), "
     << s.num_raw_frees << " " << raw_->free_call() << " calls, " << s.cache_hits << " cache hits in " << s.num_allocs
     << " allocations";
  if (mode_ == Mode::Passthrough) os << ", CUDL_ALLOCATOR=passthrough";
  const std::string info = raw_->memory_info();
  if (!info.empty()) os << "; " << info;
  os << ". Hint: release tensors that are no longer needed or reduce the batch size";
  if (s.reserved_bytes > s.allocated_bytes) os << "; reserved but unallocated memory is held by partly used segments";
  os << "; CUDL_ALLOCATOR=passthrough allocates without caching (for debugging).";
  CUDL_FAIL(os.str());
}

}  // namespace cudl::memory
