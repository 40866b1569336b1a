// tests/test_memory_pool.cpp — the caching allocator on a fake raw allocator (size classes,
// split/coalesce, per-stream and cross-stream reuse, empty_cache, statistics, passthrough, OOM),
// then the real CUDA device and pinned pools (under the emulator when there is no GPU).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "cudl/memory.hpp"
#include "memory/allocator.hpp"
#include "memory/caching_allocator.hpp"
#include "memory/device_buffer.hpp"
#include "memory/pinned.hpp"
#include "testing.hpp"

#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif

using namespace cudl;
using namespace cudl::memory;

namespace {

constexpr size_t kMiB = size_t(1) << 20;
constexpr size_t kGiB = size_t(1) << 30;

/// A raw allocator handing out fake addresses (never dereferenced) from a bounded capacity, with
/// events whose completion the test controls.
class FakeRaw : public RawAllocator {
 public:
  struct Event {
    StreamHandle stream = nullptr;
    bool recorded = false;
    bool complete = true;
  };

  size_t capacity = 64 * kGiB;
  bool auto_complete = false;  // events recorded complete at once (an idle stream)
  uintptr_t next_addr = 0x100000000;
  std::map<void*, size_t> live;  // raw allocations not yet freed
  std::vector<size_t> alloc_sizes;
  int alloc_calls = 0, free_calls = 0, failed_calls = 0;
  std::map<int, Event> events;  // by id
  int next_event = 1, events_created = 0, events_destroyed = 0, records = 0, syncs = 0;
  std::vector<StreamHandle> recorded_streams;

  size_t live_bytes() const {
    size_t n = 0;
    for (auto& kv : live) n += kv.second;
    return n;
  }
  void* alloc(size_t bytes) override {
    ++alloc_calls;
    alloc_sizes.push_back(bytes);
    if (live_bytes() + bytes > capacity) {
      ++failed_calls;
      return nullptr;
    }
    void* p = reinterpret_cast<void*>(next_addr);
    next_addr += (bytes + 4095) / 4096 * 4096 + 4096;
    live[p] = bytes;
    return p;
  }
  void free(void* p) override {
    ++free_calls;
    ASSERT_EQ(live.count(p), 1u) << "raw free of an unknown pointer";
    live.erase(p);
  }
  EventHandle create_event() override {
    ++events_created;
    int id = next_event++;
    events[id] = Event{};
    return reinterpret_cast<EventHandle>(static_cast<uintptr_t>(id));
  }
  Event& ev(EventHandle e) {
    auto it = events.find(static_cast<int>(reinterpret_cast<uintptr_t>(e)));
    EXPECT_NE(it, events.end()) << "unknown event";
    return it->second;
  }
  void record_event(EventHandle e, StreamHandle s) override {
    ++records;
    recorded_streams.push_back(s);
    Event& x = ev(e);
    x.stream = s;
    x.recorded = true;
    x.complete = auto_complete;
  }
  bool query_event(EventHandle e) override { return ev(e).complete; }
  void synchronize_event(EventHandle e) override {
    ++syncs;
    ev(e).complete = true;
  }
  void destroy_event(EventHandle e) override {
    ++events_destroyed;
    events.erase(static_cast<int>(reinterpret_cast<uintptr_t>(e)));
  }
  std::string name() const override { return "fake:0"; }
  const char* alloc_call() const override { return "fakeMalloc"; }
  const char* free_call() const override { return "fakeFree"; }
  std::string memory_info() const override { return "fake device: 64.00 MiB total"; }

  /// The work queued on `s` so far has finished.
  void complete_stream(StreamHandle s) {
    for (auto& kv : events)
      if (kv.second.recorded && kv.second.stream == s) kv.second.complete = true;
  }
  int records_on(StreamHandle s) const {
    int n = 0;
    for (StreamHandle x : recorded_streams) n += x == s;
    return n;
  }
};

StreamHandle stream(int i) { return reinterpret_cast<StreamHandle>(static_cast<uintptr_t>(0x1000 * i)); }
char* ptr_of(void* p) { return static_cast<char*>(p); }

struct PoolFixture : ::testing::Test {
  FakeRaw* fake = nullptr;
  std::unique_ptr<CachingAllocator> pool;
  void make(CachingAllocator::Mode mode = CachingAllocator::Mode::Caching) {
    auto raw = std::make_unique<FakeRaw>();
    fake = raw.get();
    pool = std::make_unique<CachingAllocator>(std::move(raw), mode);
  }
  void SetUp() override { make(); }
};

}  // namespace

TEST(PoolSizes, RoundingAndSegmentClasses) {
  EXPECT_EQ(round_block_size(0), 512u);
  EXPECT_EQ(round_block_size(1), 512u);
  EXPECT_EQ(round_block_size(512), 512u);
  EXPECT_EQ(round_block_size(513), 1024u);
  EXPECT_EQ(round_block_size(1000), 1024u);
  EXPECT_EQ(segment_size_for(512), 2 * kMiB);
  EXPECT_EQ(segment_size_for(kMiB), 2 * kMiB);         // largest small request
  EXPECT_EQ(segment_size_for(kMiB + 512), 20 * kMiB);  // smallest large request
  EXPECT_EQ(segment_size_for(10 * kMiB - 512), 20 * kMiB);
  EXPECT_EQ(segment_size_for(10 * kMiB), 10 * kMiB);
  EXPECT_EQ(segment_size_for(11 * kMiB), 12 * kMiB);  // rounded to 2 MiB
}

TEST_F(PoolFixture, SmallRequestsAreRoundedAndShareOneSegment) {
  void* a = pool->allocate(1, stream(1));
  EXPECT_EQ(pool->block_size(a), 512u);
  void* b = pool->allocate(0, stream(1));
  EXPECT_NE(a, b);
  EXPECT_EQ(pool->block_size(b), 512u);
  MemoryStats s = pool->stats();
  EXPECT_EQ(s.requested_bytes, 1u);
  EXPECT_EQ(s.allocated_bytes, 1024u);
  EXPECT_EQ(s.reserved_bytes, 2 * kMiB);
  EXPECT_EQ(s.num_raw_allocs, 1u);
  EXPECT_EQ(fake->alloc_sizes, std::vector<size_t>{2 * kMiB});
  EXPECT_EQ(s.num_segments, 1u);
  pool->free(a);
  pool->free(b);
}

TEST_F(PoolFixture, SplitThenCoalesceFreeNeighbours) {
  std::vector<void*> p;
  for (int i = 0; i < 4; ++i) p.push_back(pool->allocate(1000, stream(1)));
  for (int i = 1; i < 4; ++i) EXPECT_EQ(ptr_of(p[i]), ptr_of(p[i - 1]) + 1024) << "blocks carved in address order";
  EXPECT_EQ(fake->alloc_calls, 1);
  // Freeing the two middle blocks merges them into one 2048-byte block, the best fit for 2000.
  pool->free(p[1]);
  pool->free(p[2]);
  void* q = pool->allocate(2000, stream(1));
  EXPECT_EQ(q, p[1]);
  EXPECT_EQ(pool->block_size(q), 2048u);
  pool->free(q);
  pool->free(p[0]);
  pool->free(p[3]);
  // Everything coalesced back into the whole segment: the next request starts at its base ...
  void* r = pool->allocate(kMiB, stream(1));
  EXPECT_EQ(r, p[0]);
  pool->free(r);
  // ... and empty_cache can return it (only whole free segments are released).
  pool->empty_cache();
  EXPECT_EQ(fake->free_calls, 1);
  EXPECT_TRUE(fake->live.empty());
  EXPECT_EQ(pool->stats().reserved_bytes, 0u);
  EXPECT_EQ(fake->alloc_calls, 1);
}

TEST_F(PoolFixture, LargeBlocksSplitOnlyWhenTheRestExceedsOneMiB) {
  void* a = pool->allocate(12 * kMiB, stream(1));
  EXPECT_EQ(fake->alloc_sizes, std::vector<size_t>{12 * kMiB});
  pool->free(a);
  void* b = pool->allocate(11 * kMiB + kMiB / 2, stream(1));  // rest 0.5 MiB: not split
  EXPECT_EQ(b, a);
  EXPECT_EQ(pool->block_size(b), 12 * kMiB);
  EXPECT_EQ(pool->stats().allocated_bytes, 12 * kMiB);
  pool->free(b);
  void* c = pool->allocate(5 * kMiB, stream(1));  // rest 7 MiB: split
  EXPECT_EQ(pool->block_size(c), 5 * kMiB);
  void* d = pool->allocate(6 * kMiB, stream(1));  // from the 7 MiB rest; 1 MiB left is not split off
  EXPECT_EQ(ptr_of(d), ptr_of(c) + 5 * kMiB);
  EXPECT_EQ(pool->block_size(d), 7 * kMiB);
  EXPECT_EQ(fake->alloc_calls, 1);
  void* e = pool->allocate(2 * kMiB, stream(1));  // a mid-sized large request gets a 20 MiB segment
  EXPECT_EQ(fake->alloc_sizes.back(), 20 * kMiB);
  // A small request never comes from the large pool.
  pool->free(c);
  void* f = pool->allocate(4096, stream(1));
  EXPECT_EQ(fake->alloc_sizes.back(), 2 * kMiB);
  for (void* x : {d, e, f}) pool->free(x);
  EXPECT_EQ(pool->stats().num_segments, 3u);
}

TEST_F(PoolFixture, RepeatedAllocFreeHitsTheCacheAndCountsStatistics) {
  for (int i = 0; i < 100; ++i) {
    void* p = pool->allocate(4000, stream(1));
    pool->free(p);
  }
  MemoryStats s = pool->stats();
  EXPECT_EQ(s.num_allocs, 100u);
  EXPECT_EQ(s.num_frees, 100u);
  EXPECT_EQ(s.num_raw_allocs, 1u);
  EXPECT_EQ(s.cache_hits, 99u);
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.requested_bytes, 0u);
  EXPECT_EQ(s.peak_allocated_bytes, 4096u);
  EXPECT_EQ(s.reserved_bytes, 2 * kMiB);
  EXPECT_EQ(s.num_raw_frees, 0u);
  EXPECT_TRUE(s.caching);
}

TEST_F(PoolFixture, SameStreamReusesAtOnceOtherStreamWaitsForAnEvent) {
  void* a = pool->allocate(1000, stream(1));
  pool->free(a);
  void* b = pool->allocate(1000, stream(1));
  EXPECT_EQ(b, a) << "a block freed on a stream is reused by that stream at once";
  EXPECT_EQ(fake->records, 0) << "single-stream reuse needs no event";
  pool->free(b);

  // Stream 2 may not take stream 1's segment while stream 1's work is still running.
  void* c = pool->allocate(1000, stream(2));
  EXPECT_NE(ptr_of(c), ptr_of(a));
  EXPECT_EQ(fake->alloc_calls, 2);
  EXPECT_EQ(fake->records_on(stream(1)), 1) << "an event is recorded on the freeing stream";
  pool->free(c);

  // Stream 1's work finished: its whole free segment moves to stream 3 (stream 2's is not done).
  fake->complete_stream(stream(1));
  void* d = pool->allocate(1000, stream(3));
  EXPECT_EQ(d, a);
  EXPECT_EQ(fake->alloc_calls, 2);

  // The segment now belongs to stream 3; stream 1 finds nothing it may use and allocates.
  void* e = pool->allocate(1000, stream(1));
  EXPECT_NE(e, a);
  EXPECT_NE(e, c);
  EXPECT_EQ(fake->alloc_calls, 3);
  pool->free(d);
  void* f = pool->allocate(1000, stream(3));
  EXPECT_EQ(f, a) << "stream 3 reuses its segment directly";
  for (void* x : {e, f}) pool->free(x);
}

TEST_F(PoolFixture, AnEventRecordedBeforeANewUseIsNotTrusted) {
  void* a = pool->allocate(1000, stream(1));
  pool->free(a);
  void* c = pool->allocate(1000, stream(2));  // records an event on stream 1, not complete
  fake->complete_stream(stream(1));           // that event completes ...
  void* b = pool->allocate(1000, stream(1));  // ... but stream 1 uses its segment again
  EXPECT_EQ(b, a);
  pool->free(b);
  void* d = pool->allocate(1000, stream(3));  // needs a new event, recorded after the new use
  EXPECT_NE(d, a);
  EXPECT_EQ(fake->records_on(stream(1)), 2);
  for (void* x : {c, d}) pool->free(x);
}

TEST_F(PoolFixture, RecordStreamDelaysReuseUntilTheOtherStreamIsDone) {
  void* a = pool->allocate(1000, stream(1));
  pool->record_stream(a, stream(2));
  pool->record_stream(a, stream(2));  // once is enough
  pool->free(a);
  EXPECT_EQ(pool->stats().allocated_bytes, 0u) << "the caller no longer holds it";
  EXPECT_EQ(fake->records_on(stream(2)), 1);
  void* b = pool->allocate(1000, stream(1));
  EXPECT_NE(b, a) << "stream 2 may still be using a's memory";
  EXPECT_EQ(ptr_of(b), ptr_of(a) + 1024);
  fake->complete_stream(stream(2));
  void* c = pool->allocate(1000, stream(1));
  EXPECT_EQ(c, a);
  // record_stream of the allocation stream itself changes nothing.
  pool->record_stream(c, stream(1));
  pool->free(c);
  void* d = pool->allocate(1000, stream(1));
  EXPECT_EQ(d, a);
  for (void* x : {b, d}) pool->free(x);
  EXPECT_EQ(fake->alloc_calls, 1);
}

TEST_F(PoolFixture, EmptyCacheReturnsOnlyUnusedSegmentsAfterTheirStreamsFinish) {
  void* small = pool->allocate(1000, stream(1));
  void* large = pool->allocate(3 * kMiB, stream(2));
  void* kept = pool->allocate(1000, stream(3));
  void* kept2 = pool->allocate(1000, stream(3));
  pool->free(small);
  pool->free(large);
  pool->free(kept);  // its segment still holds kept2
  EXPECT_EQ(pool->stats().reserved_bytes, 2 * kMiB + 20 * kMiB + 2 * kMiB);
  pool->empty_cache();
  EXPECT_EQ(fake->free_calls, 2);
  EXPECT_EQ(pool->stats().reserved_bytes, 2 * kMiB);
  EXPECT_EQ(pool->stats().num_raw_frees, 2u);
  EXPECT_GE(fake->syncs, 2) << "waits for the work queued on streams 1 and 2";
  EXPECT_EQ(fake->records_on(stream(1)), 1);
  EXPECT_EQ(fake->records_on(stream(2)), 1);
  EXPECT_EQ(fake->records_on(stream(3)), 0);
  EXPECT_EQ(fake->live.size(), 1u);

  // A freed block still in use by another stream is released once that stream is waited for.
  void* r = pool->allocate(3 * kMiB, stream(1));
  pool->record_stream(r, stream(4));
  pool->free(r);
  pool->empty_cache();
  EXPECT_EQ(fake->live.size(), 1u);
  EXPECT_EQ(pool->stats().reserved_bytes, 2 * kMiB);
  pool->free(kept2);
  pool->empty_cache();
  EXPECT_TRUE(fake->live.empty());
  EXPECT_EQ(pool->stats().num_segments, 0u);
}

TEST_F(PoolFixture, PeaksAndTheirReset) {
  void* a = pool->allocate(3 * kMiB, stream(1));
  void* b = pool->allocate(1024, stream(1));
  pool->free(a);
  pool->free(b);
  MemoryStats s = pool->stats();
  EXPECT_EQ(s.peak_allocated_bytes, 3 * kMiB + 1024);
  EXPECT_EQ(s.peak_reserved_bytes, 22 * kMiB);
  pool->empty_cache();
  s = pool->stats();
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.peak_reserved_bytes, 22 * kMiB);
  pool->reset_peak_stats();
  s = pool->stats();
  EXPECT_EQ(s.peak_allocated_bytes, 0u);
  EXPECT_EQ(s.peak_reserved_bytes, 0u);
  void* c = pool->allocate(100, stream(1));
  EXPECT_EQ(pool->stats().peak_allocated_bytes, 512u);
  EXPECT_EQ(pool->stats().peak_reserved_bytes, 2 * kMiB);
  pool->free(c);
}

TEST_F(PoolFixture, PassthroughMakesEveryAllocationRaw) {
  make(CachingAllocator::Mode::Passthrough);
  for (int i = 0; i < 10; ++i) {
    void* p = pool->allocate(1000, stream(1));
    EXPECT_EQ(pool->block_size(p), 1000u) << "exact size, so overruns reach the end of the allocation";
    pool->free(p);
    EXPECT_TRUE(fake->live.empty()) << "freed at once";
  }
  MemoryStats s = pool->stats();
  EXPECT_FALSE(s.caching);
  EXPECT_EQ(s.num_raw_allocs, 10u);
  EXPECT_EQ(s.num_raw_frees, 10u);
  EXPECT_EQ(s.cache_hits, 0u);
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.peak_reserved_bytes, 1000u);
  EXPECT_EQ(fake->alloc_sizes, std::vector<size_t>(10, 1000));
  EXPECT_EQ(fake->syncs, 10) << "each free waits for the work queued on its stream";
  // record_stream still defers the release until the other stream is done.
  void* q = pool->allocate(64, stream(1));
  pool->record_stream(q, stream(2));
  pool->free(q);
  EXPECT_EQ(fake->live.size(), 1u);
  fake->complete_stream(stream(2));
  pool->free(pool->allocate(8, stream(1)));
  EXPECT_TRUE(fake->live.empty());
}

TEST(PoolMode, FromEnvironment) {
  const char* old = std::getenv("CUDL_ALLOCATOR");
  std::string saved = old ? old : "";
  ::unsetenv("CUDL_ALLOCATOR");
  EXPECT_EQ(CachingAllocator::mode_from_env(), CachingAllocator::Mode::Caching);
  ::setenv("CUDL_ALLOCATOR", "passthrough", 1);
  EXPECT_EQ(CachingAllocator::mode_from_env(), CachingAllocator::Mode::Passthrough);
  {
    auto raw = std::make_unique<FakeRaw>();
    FakeRaw* fake = raw.get();
    CachingAllocator pool(std::move(raw));
    pool.free(pool.allocate(10, nullptr));
    pool.free(pool.allocate(10, nullptr));
    EXPECT_EQ(fake->alloc_calls, 2);
  }
  ::setenv("CUDL_ALLOCATOR", "caching", 1);
  EXPECT_EQ(CachingAllocator::mode_from_env(), CachingAllocator::Mode::Caching);
  ::setenv("CUDL_ALLOCATOR", "bogus", 1);
  try {
    CachingAllocator::mode_from_env();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bogus"), std::string::npos) << e.what();
  }
  if (old)
    ::setenv("CUDL_ALLOCATOR", saved.c_str(), 1);
  else
    ::unsetenv("CUDL_ALLOCATOR");
}

TEST_F(PoolFixture, OutOfMemoryNamesTheRequestAndThePoolStatistics) {
  fake->capacity = 64 * kMiB;
  void* a = pool->allocate(40 * kMiB, stream(1));
  void* b = pool->allocate(1000, stream(1));
  try {
    pool->allocate(2 * kGiB, stream(1));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const char* part :
         {"out of memory on fake:0", "tried to allocate 2.00 GiB", "2147483648 bytes", "allocated 40.00 MiB",
          "reserved 42.00 MiB", "peak allocated 40.00 MiB", "4 fakeMalloc calls (2 failed)", "0 fakeFree calls",
          "fake device: 64.00 MiB total", "Hint"})
      EXPECT_NE(m.find(part), std::string::npos) << "missing '" << part << "' in: " << m;
  }
  MemoryStats s = pool->stats();
  EXPECT_EQ(s.num_ooms, 1u);
  EXPECT_EQ(s.num_raw_alloc_failures, 2u) << "one retry after emptying the cache";
  EXPECT_EQ(s.allocated_bytes, 40 * kMiB + 1024) << "a failed request leaves the statistics intact";
  pool->free(a);
  pool->free(b);
}

TEST_F(PoolFixture, OutOfMemoryEmptiesTheCacheAndRetriesOnce) {
  fake->capacity = 64 * kMiB;
  void* a = pool->allocate(40 * kMiB, stream(2));
  pool->free(a);                                   // cached on stream 2, whose work is still running
  void* b = pool->allocate(50 * kMiB, stream(1));  // 40 + 50 > 64: fails, frees the cache, retries
  EXPECT_NE(b, nullptr);
  MemoryStats s = pool->stats();
  EXPECT_EQ(s.num_raw_alloc_failures, 1u);
  EXPECT_EQ(s.num_raw_frees, 1u);
  EXPECT_EQ(s.num_ooms, 0u);
  EXPECT_EQ(s.reserved_bytes, 50 * kMiB);
  EXPECT_GE(fake->syncs, 1) << "stream 2 was waited for before its segment was freed";
  EXPECT_EQ(fake->live.size(), 1u);
  pool->free(b);
}

TEST_F(PoolFixture, OutOfMemoryFirstWaitsForBlocksHeldByOtherStreams) {
  fake->capacity = 24 * kMiB;
  void* a = pool->allocate(12 * kMiB, stream(1));
  pool->record_stream(a, stream(2));
  pool->free(a);                                   // pending on stream 2
  void* b = pool->allocate(12 * kMiB, stream(1));  // raw alloc fits (24 MiB)
  pool->free(b);
  void* c = pool->allocate(12 * kMiB, stream(1));  // reuses b
  EXPECT_EQ(c, b);
  void* d = pool->allocate(12 * kMiB, stream(1));  // no room: waits for stream 2, then reuses a
  EXPECT_EQ(d, a);
  EXPECT_EQ(pool->stats().num_raw_frees, 0u);
  pool->free(c);
  pool->free(d);
}

TEST_F(PoolFixture, UnknownAndDoubleFreesThrow) {
  void* a = pool->allocate(100, stream(1));
  pool->free(a);
  EXPECT_THROW(pool->free(a), Error);
  int x = 0;
  EXPECT_THROW(pool->free(&x), Error);
  EXPECT_THROW(pool->record_stream(&x, stream(2)), Error);
  pool->free(nullptr);  // a no-op, like free()
}

TEST_F(PoolFixture, ConcurrentUseFromSeveralThreadsKeepsCountsConsistent) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::vector<void*> held;
      for (int i = 0; i < 500; ++i) {
        held.push_back(pool->allocate(size_t(100 + 97 * i) % 5000 + (i % 7 == 0 ? 3 * kMiB : 0), stream(t + 1)));
        if (held.size() > 3) {
          pool->free(held.front());
          held.erase(held.begin());
        }
      }
      for (void* p : held) pool->free(p);
    });
  for (auto& th : threads) th.join();
  MemoryStats s = pool->stats();
  EXPECT_EQ(s.num_allocs, 2000u);
  EXPECT_EQ(s.num_frees, 2000u);
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.requested_bytes, 0u);
  pool->empty_cache();
  EXPECT_TRUE(fake->live.empty()) << "every segment coalesced back and was released";
}

TEST(PoolLifetime, DestructionReturnsCachedSegmentsAndEvents) {
  struct Tally {
    size_t live = 99;
    int created = 0, destroyed = 0;
  } tally;
  // Reports what was still held when the pool destroyed its raw allocator.
  struct TallyRaw : FakeRaw {
    Tally* out = nullptr;
    ~TallyRaw() override { *out = Tally{live.size(), events_created, events_destroyed}; }
  };
  auto raw = std::make_unique<TallyRaw>();
  raw->out = &tally;
  FakeRaw* fake = raw.get();
  auto pool = std::make_unique<CachingAllocator>(std::move(raw), CachingAllocator::Mode::Caching);
  void* a = pool->allocate(1000, stream(1));
  void* b = pool->allocate(30 * kMiB, stream(1));
  void* held = pool->allocate(1000, stream(3));
  pool->free(a);
  pool->free(b);
  void* c = pool->allocate(1000, stream(2));  // records an event on stream 1
  pool->record_stream(c, stream(4));
  pool->free(c);  // pending on stream 4
  EXPECT_EQ(fake->live.size(), 4u);
  EXPECT_GE(fake->events_created, 2);
  pool.reset();
  EXPECT_EQ(tally.live, 1u) << "only the segment of the block still handed out is kept";
  EXPECT_EQ(tally.destroyed, tally.created) << "every event is destroyed";
  (void)held;
}

TEST(PoolFormat, BytesAndStatistics) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(3 * 1024), "3.00 KiB");
  EXPECT_EQ(format_bytes(3 * kMiB / 2), "1.50 MiB");
  EXPECT_EQ(format_bytes(2 * kGiB), "2.00 GiB");
  MemoryStats s;
  s.allocated_bytes = kMiB;
  s.reserved_bytes = 2 * kMiB;
  s.num_raw_allocs = 3;
  s.cache_hits = 7;
  s.num_allocs = 10;
  const std::string t = to_string(s);
  EXPECT_NE(t.find("allocated 1.00 MiB"), std::string::npos) << t;
  EXPECT_NE(t.find("reserved 2.00 MiB"), std::string::npos) << t;
  EXPECT_NE(t.find("7 cache hits in 10 allocations"), std::string::npos) << t;
}

TEST(PoolPublicApi, CpuHasNoPool) {
  MemoryStats s = memory_stats(Device::cpu());
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.num_allocs, 0u);
  empty_cache(Device::cpu());
  reset_peak_memory_stats(Device::cpu());
  if (!cudl::testing::cuda_available()) EXPECT_THROW(memory_stats(Device::cuda(0)), Error);
  EXPECT_THROW(memory_stats(Device::cuda(99)), Error);
}

TEST(PinnedPool, BuffersAreCachedAndMoveOnly) {
  const MemoryStats before = pinned_memory_stats();
  void* first = nullptr;
  {
    PinnedBuffer a(10000);
    ASSERT_TRUE(a);
    EXPECT_EQ(a.size(), 10000u);
    first = a.data();
    std::memset(a.data(), 0x5a, a.size());  // it is real host memory
    PinnedBuffer b = std::move(a);
    EXPECT_FALSE(a);
    EXPECT_EQ(b.data(), first);
  }
  PinnedBuffer c(10000);
  MemoryStats after = pinned_memory_stats();
  if (after.caching) {
    EXPECT_EQ(c.data(), first) << "the pool reuses the freed block";
    EXPECT_LE(after.num_raw_allocs - before.num_raw_allocs, 1u);
  }
  EXPECT_EQ(after.num_allocs - before.num_allocs, 2u);
  c.reset();
  EXPECT_EQ(pinned_memory_stats().allocated_bytes, before.allocated_bytes);
  static_assert(!std::is_copy_constructible_v<PinnedBuffer>);
  static_assert(!std::is_copy_constructible_v<DeviceBuffer<float>>);
  static_assert(std::is_nothrow_move_constructible_v<DeviceBuffer<float>>);
}

// --- the real CUDA pools (the emulator when there is no GPU) ---------------------------------

TEST(CudaPool, TensorAllocationsReuseCachedBlocks) {
  CUDL_REQUIRE_CUDA();
  const Device dev = Device::cuda(0);
  if (!memory_stats(dev).caching) GTEST_SKIP() << "CUDL_ALLOCATOR=passthrough";
  { Tensor warm = Tensor::empty(Shape{1000}, DType::f32, dev); }
  const MemoryStats before = memory_stats(dev);
#if defined(CUDL_EMULATED)
  const auto emu_before = cudl_emu::counters();
#endif
  for (int i = 0; i < 20; ++i) {
    Tensor t = Tensor::empty(Shape{1000}, DType::f32, dev);
    Tensor u = Tensor::empty(Shape{37, 3}, DType::i32, dev);
  }
  const MemoryStats after = memory_stats(dev);
  EXPECT_EQ(after.num_raw_allocs, before.num_raw_allocs) << "cudaMalloc count grew: " << to_string(after);
  EXPECT_EQ(after.num_allocs - before.num_allocs, 40u);
  EXPECT_EQ(after.cache_hits - before.cache_hits, 40u);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_GE(after.reserved_bytes, after.allocated_bytes);
#if defined(CUDL_EMULATED)
  EXPECT_EQ(cudl_emu::counters().mallocs, emu_before.mallocs) << "the emulated runtime saw cudaMalloc calls";
  EXPECT_EQ(cudl_emu::counters().frees, emu_before.frees);
#endif
}

TEST(CudaPool, RawCountsMatchTheRuntimeAndMemoryIsNotZeroed) {
  CUDL_REQUIRE_CUDA();
  const Device dev = Device::cuda(0);
  const MemoryStats before = memory_stats(dev);
#if defined(CUDL_EMULATED)
  const auto emu_before = cudl_emu::counters();
#endif
  void* p = nullptr;
  {
    Tensor a = Tensor::full(Shape{3000}, 7.0, DType::f32, dev);
    p = a.data();
  }
  Tensor b = Tensor::empty(Shape{3000}, DType::f32, dev);
  if (memory_stats(dev).caching) {
    EXPECT_EQ(b.data(), p) << "the freed block is reused";
    EXPECT_EQ(b.to_vector<float>(), std::vector<float>(3000, 7.f)) << "reused memory keeps its old contents";
  }
#if defined(CUDL_EMULATED)
  const auto emu_after = cudl_emu::counters();
  EXPECT_EQ(emu_after.mallocs - emu_before.mallocs, memory_stats(dev).num_raw_allocs - before.num_raw_allocs);
  EXPECT_EQ(emu_after.memsets, emu_before.memsets) << "the pool does not clear memory";
#endif
}

TEST(CudaPool, EmptyCacheAndOutOfMemory) {
  CUDL_REQUIRE_CUDA();
  const Device dev = Device::cuda(0);
  {
    Tensor big = Tensor::empty(Shape{3 << 20}, DType::f32, dev);  // 12 MiB
    EXPECT_GE(memory_stats(dev).reserved_bytes, size_t(12) << 20);
  }
  const MemoryStats before = memory_stats(dev);
  empty_cache(dev);
  const MemoryStats after = memory_stats(dev);
  if (after.caching) {  // under passthrough the tensor's memory was returned when it was freed
    EXPECT_GT(after.num_raw_frees, before.num_raw_frees);
    EXPECT_LE(after.reserved_bytes + (size_t(12) << 20), before.reserved_bytes);
  }
  EXPECT_EQ(after.reserved_bytes, after.allocated_bytes) << "no unused segment is left";
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  reset_peak_memory_stats(dev);
  EXPECT_EQ(memory_stats(dev).peak_reserved_bytes, after.reserved_bytes);

  try {
    Tensor huge = Tensor::empty(Shape{int64_t(1) << 48}, DType::f32, dev);  // 1 PiB
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("CUDA out of memory on cuda:0"), std::string::npos) << m;
    EXPECT_NE(m.find("tried to allocate 1024.00 TiB"), std::string::npos) << m;
    EXPECT_NE(m.find("cudaMalloc calls"), std::string::npos) << m;
  }
  EXPECT_EQ(memory_stats(dev).num_ooms, after.num_ooms + 1);
  // The pool still works after an out-of-memory error.
  Tensor ok = Tensor::full(Shape{5}, 2.0, DType::f32, dev);
  EXPECT_EQ(ok.to_vector<float>(), std::vector<float>(5, 2.f));
}

TEST(CudaPool, RecordStreamWithRealEvents) {
  CUDL_REQUIRE_CUDA();
  if (!memory_stats(Device::cuda(0)).caching) GTEST_SKIP() << "CUDL_ALLOCATOR=passthrough";
  ExecContext& ctx = default_context(Device::cuda(0));
  std::unique_ptr<CopyStream> side = ctx.make_copy_stream();
  std::unique_ptr<DeviceEvent> side_done = ctx.make_event();
  void* p = cuda_allocate(0, 4096);
  side->record_use(p);
  cuda_deallocate(0, p, 4096);
  side->record(*side_done);
  side_done->synchronize();
  void* q = cuda_allocate(0, 4096);  // the event on `side` has completed: the block is free again
  EXPECT_EQ(q, p);
  cuda_deallocate(0, q, 4096);
}

TEST(CudaPool, DeviceBufferRoundTrip) {
  CUDL_REQUIRE_CUDA();
  DeviceBuffer<int> buf(257, Device::cuda(0));
  std::vector<int> v(257);
  for (int i = 0; i < 257; ++i) v[i] = i * 3 - 100;
  buf.copy_from_host(v.data(), v.size());
  DeviceBuffer<int> moved = std::move(buf);
  EXPECT_EQ(buf.data(), nullptr);
  EXPECT_EQ(moved.to_host(), v);
  EXPECT_THROW(moved.copy_from_host(v.data(), 258), Error);
}

TEST(CudaPool, PinnedBuffersArePageLocked) {
  CUDL_REQUIRE_CUDA();
  PinnedBuffer b(4096);
#if defined(CUDL_EMULATED)
  EXPECT_EQ(cudl_emu::pointer_kind(b.data()), cudl_emu::PtrKind::PinnedHost);
#endif
  EXPECT_TRUE(cuda_is_pinned_host(b.data()));
  std::vector<char> pageable(4096);
  EXPECT_FALSE(cuda_is_pinned_host(pageable.data()));
  EXPECT_NE(pinned_memory_stats().num_raw_allocs, 0u);
}
