// tests/emu/src/runtime.cpp — the emulated CUDA runtime: errors (sticky and not), the device and
// its properties, lazy in-order streams, events, host callbacks, stream capture and CUDA graphs.
#include "emu/runtime.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "emu/emu.hpp"
#include "internal.hpp"

namespace cudl_emu {
namespace {

// ---- errors ----------------------------------------------------------------------------------

struct ErrorInfo {
  int code;
  const char* name;
  const char* message;
};
const ErrorInfo kErrors[] = {
#include "error_table.inc"
};

const ErrorInfo* find_error(cudaError_t err) {
  for (const ErrorInfo& e : kErrors)
    if (e.code == static_cast<int>(err)) return &e;
  return nullptr;
}

struct ErrorState {
  std::mutex mu;
  cudaError_t last = cudaSuccess;
  cudaError_t sticky = cudaSuccess;
  std::string last_detail;
  std::map<int, std::string> detail_by_code;
  std::set<std::string> interned;  // cudaGetErrorString results stay valid forever
};
ErrorState& errors() {
  static ErrorState* s = new ErrorState;  // never destroyed: usable from atexit and other statics
  return *s;
}
std::atomic<bool> g_sticky_set{false};

// ---- counters ----------------------------------------------------------------------------------

struct AtomicCounters {
  std::atomic<uint64_t> kernel_launches{0}, graph_launches{0};
  std::atomic<uint64_t> memcpy_h2d{0}, memcpy_d2h{0}, memcpy_d2d{0}, memcpy_h2h{0};
  std::atomic<uint64_t> bytes_h2d{0}, bytes_d2h{0}, bytes_d2d{0};
  std::atomic<uint64_t> memsets{0}, mallocs{0}, frees{0}, host_mallocs{0}, host_frees{0};
  std::atomic<uint64_t> syncs{0}, threads{0}, barriers{0}, library_calls{0};
  std::atomic<uint64_t> collectives{0}, collective_bytes{0};
};
AtomicCounters& ctr() {
  static AtomicCounters* c = new AtomicCounters;
  return *c;
}
// Per device: what counters(device) reports (see runtime.hpp for which counts are attributed).
AtomicCounters& ctr(int device) {
  static AtomicCounters* c = new AtomicCounters[kMaxDevices];
  return c[device];
}

thread_local const char* t_current_work = nullptr;
thread_local int t_device = 0;  // cudaSetDevice is per host thread
std::atomic<const char*> g_running_work{nullptr};  // the item the executor runs (any thread)

// ---- streams, events, graphs ---------------------------------------------------------------------

using WorkFn = std::shared_ptr<std::function<void()>>;

struct Node {  // one recorded unit of a captured graph
  WorkKind kind;
  std::string what;
  WorkFn fn;
  std::shared_ptr<PerLaunch> per_launch;  // set instead of fn: a new instance per launch
};
struct GraphData {
  std::vector<Node> nodes;
};
struct Graph {
  std::shared_ptr<GraphData> data = std::make_shared<GraphData>();
  std::vector<std::unique_ptr<char>> node_handles;  // distinct addresses for cudaGraphGetNodes
};
struct GraphExec {
  std::shared_ptr<const std::vector<Node>> nodes;
};

struct Stream;
struct Capture {
  Graph* graph = nullptr;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  bool active = true;
  bool invalidated = false;
  std::string why;
  unsigned long long id = 0;
  Stream* origin = nullptr;
  std::thread::id thread;  // the thread that began it
};

struct Item {
  uint64_t seq;
  WorkKind kind;
  std::string what;
  WorkFn fn;
  std::function<bool()> ready;  // when set and false, the item waits (a collective whose other ranks have not come)
};

struct Stream {
  unsigned flags = 0;
  int device = 0;  // the device whose context owns the stream (current at creation)
  bool legacy = false;
  bool per_thread = false;  // cudaStreamPerThread of its device
  bool destroyed = false;
  std::string name;
  std::deque<Item> queue;
  std::shared_ptr<Capture> capture;
  uint64_t queried_front = 0;  // cudaStreamQuery: NotReady once per pending front item, then runs
  bool blocking() const { return !legacy && !(flags & cudaStreamNonBlocking); }
};

struct Event {
  unsigned flags = 0;
  int device = 0;  // current device at creation
  std::shared_ptr<Stream> stream;  // stream of the latest record
  uint64_t record_seq = 0;         // 0: never recorded
  uint64_t completed_seq = 0;
  uint64_t queried_seq = 0;
  double time_ms = 0;
  std::shared_ptr<Capture> capture;  // set when last recorded in a capturing stream
};

struct State {
  std::recursive_mutex mu;
  // The default streams, one legacy and one per-thread stream per device.
  std::vector<std::shared_ptr<Stream>> legacy, per_thread;
  std::map<Stream*, std::shared_ptr<Stream>> streams;  // user streams (destroyed ones until drained)
  std::map<Event*, std::shared_ptr<Event>> events;
  std::set<Graph*> graphs;
  std::set<GraphExec*> execs;
  std::vector<std::shared_ptr<Capture>> captures;  // active captures
  uint64_t next_seq = 1;
  unsigned long long next_capture_id = 1;
  uint64_t next_stream_id = 1;
  std::set<std::pair<int, int>> peer_access;  // (device, peer) pairs enabled
  State() {
    for (int d = 0; d < device_count(); ++d) {
      const std::string on = device_count() > 1 ? " of device " + std::to_string(d) : std::string();
      legacy.push_back(std::make_shared<Stream>());
      legacy.back()->legacy = true;
      legacy.back()->device = d;
      legacy.back()->name = "legacy default stream" + on;
      per_thread.push_back(std::make_shared<Stream>());
      per_thread.back()->per_thread = true;
      per_thread.back()->device = d;
      per_thread.back()->name = "per-thread default stream" + on;
    }
  }
};
State& st() {
  static State* s = new State;
  return *s;
}

double now_ms() {
  static const auto start = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

std::string device_name(int d) { return "device " + std::to_string(d); }

Stream* resolve(cudaStream_t h) {
  State& s = st();
  if (h == nullptr || h == cudaStreamLegacy) return s.legacy[current_device()].get();
  if (h == cudaStreamPerThread) return s.per_thread[current_device()].get();
  auto it = s.streams.find(reinterpret_cast<Stream*>(h));
  if (it == s.streams.end() || it->second->destroyed) return nullptr;
  return it->second.get();
}

std::shared_ptr<Stream> shared_of(Stream* p) {
  State& s = st();
  if (p->legacy) return s.legacy[p->device];
  if (p->per_thread) return s.per_thread[p->device];
  return s.streams.at(p);
}

Event* resolve_event(cudaEvent_t h) {
  auto it = st().events.find(reinterpret_cast<Event*>(h));
  return it == st().events.end() ? nullptr : it->second.get();
}

std::vector<Stream*> all_streams() {
  State& s = st();
  std::vector<Stream*> v;
  for (auto& d : s.legacy) v.push_back(d.get());
  for (auto& d : s.per_thread) v.push_back(d.get());
  for (auto& kv : s.streams) v.push_back(kv.first);
  return v;
}

void run_item(Item& it) {
  if (::cudl_emu::sticky_error() != cudaSuccess) return;  // a broken context runs nothing more
  WorkScope scope(it.what.c_str());
  const char* outer = g_running_work.exchange(it.what.c_str());
  if (it.kind == WorkKind::Kernel) detail::count_kernel_launch();
  if (it.kind == WorkKind::Library) detail::count_library_call();
  try {
    (*it.fn)();
  } catch (const std::exception& e) {
    record_error(cudaErrorLaunchFailure, "'" + it.what + "' failed: " + e.what(), true);
  } catch (...) {
    record_error(cudaErrorLaunchFailure, "'" + it.what + "' failed with an unknown exception", true);
  }
  if (it.kind == WorkKind::Kernel || it.kind == WorkKind::Library) detail::check_canaries(it.what.c_str());
  g_running_work.store(outer);
}

void flush_upto(Stream& s, uint64_t seq);

// Runs the front item of `s` after what it implicitly depends on: the legacy stream waits for
// earlier work of every blocking stream, and blocking streams wait for earlier legacy work.
// Returns false (running nothing) when the front item is not ready: the stream waits there.
bool run_front(Stream& s) {
  if (s.queue.front().ready && !s.queue.front().ready()) return false;
  const uint64_t seq = s.queue.front().seq;
  if (s.legacy) {
    for (Stream* t : all_streams())
      if (t != &s && t->device == s.device && t->blocking()) flush_upto(*t, seq);
  } else if (s.blocking()) {
    flush_upto(*st().legacy[s.device], seq);
  }
  if (s.queue.empty() || s.queue.front().seq != seq) return true;
  Item it = std::move(s.queue.front());
  s.queue.pop_front();
  run_item(it);
  return true;
}

void flush_upto(Stream& s, uint64_t seq) {
  while (!s.queue.empty() && s.queue.front().seq <= seq)
    if (!run_front(s)) return;
}

void flush_stream(Stream& s) {
  while (!s.queue.empty())
    if (!run_front(s)) return;
}

void drop_drained_destroyed() {
  State& s = st();
  for (auto it = s.streams.begin(); it != s.streams.end();)
    if (it->second->destroyed && it->second->queue.empty())
      it = s.streams.erase(it);
    else
      ++it;
}

// Whether capture c prohibits potentially unsafe calls from the calling thread (CUDA's rules): the
// thread's own capture unless Relaxed, another thread's only when it is Global (ThreadLocal and
// Relaxed captures of other threads are ignored).
bool prohibits_this_thread(const Capture& c) {
  if (!c.active) return false;
  return c.thread == std::this_thread::get_id() ? c.mode != cudaStreamCaptureModeRelaxed
                                                : c.mode == cudaStreamCaptureModeGlobal;
}

bool capture_prohibits_this_thread() {
  for (auto& c : st().captures)
    if (prohibits_this_thread(*c)) return true;
  return false;
}

void invalidate(Capture& c, const std::string& why) {
  if (!c.invalidated) {
    c.invalidated = true;
    c.why = why;
  }
}

// Ends capture c: detaches every stream that joined it.
void end_capture(const std::shared_ptr<Capture>& c) {
  for (Stream* t : all_streams())
    if (t->capture == c) t->capture.reset();
  c->active = false;
  auto& caps = st().captures;
  caps.erase(std::remove(caps.begin(), caps.end(), c), caps.end());
}

// Queues fn on s (or records it into s's capture). Returns the item's sequence number (0 when
// recorded into a graph).
uint64_t push(Stream& s, WorkKind kind, std::string what, WorkFn fn) {
  if (s.capture) {
    s.capture->graph->data->nodes.push_back(Node{kind, std::move(what), std::move(fn)});
    return 0;
  }
  const uint64_t seq = st().next_seq++;
  s.queue.push_back(Item{seq, kind, std::move(what), std::move(fn)});
  return seq;
}

// Common checks of every call that queues work on a stream.
cudaError_t check_stream_for_work(Stream* s, cudaStream_t h, const char* what) {
  if (!s) return detail::fail(cudaErrorInvalidResourceHandle, std::string(what) + ": invalid stream handle " + hex(h));
  if (s->capture && s->capture->invalidated)
    return detail::fail(cudaErrorStreamCaptureInvalidated,
                        std::string(what) + " on " + s->name + ", whose capture was invalidated: " + s->capture->why);
  if (s->legacy) {
    bool implicit = false;
    for (auto& c : st().captures)
      if (c->active && c->origin && c->origin->blocking()) {
        invalidate(*c, std::string(what) + " on the legacy default stream");
        implicit = true;
      }
    if (implicit)
      return detail::fail(cudaErrorStreamCaptureImplicit,
                          std::string(what) + " on the legacy default stream while a blocking stream is capturing");
  }
  return cudaSuccess;
}

}  // namespace

// ---- runtime.hpp ---------------------------------------------------------------------------------

cudaError_t enqueue(cudaStream_t stream, WorkKind kind, const char* what, std::function<void()> fn) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (cudaError_t e = sticky_error()) return e;
  Stream* s = resolve(stream);
  if (cudaError_t e = check_stream_for_work(s, stream, what ? what : "work")) return e;
  // CUDA: "A kernel launch will fail if it is issued to a stream that is not associated to the
  // current device" (copies, memsets, events and host functions may be issued from any device).
  if ((kind == WorkKind::Kernel || kind == WorkKind::Library) && s->device != t_device)
    return detail::fail(cudaErrorInvalidResourceHandle,
                        std::string(what ? what : "work") + ": launched while device " + std::to_string(t_device) +
                            " is current on " + s->name + ", a stream of device " + std::to_string(s->device));
  push(*s, kind, what ? what : "work", std::make_shared<std::function<void()>>(std::move(fn)));
  return cudaSuccess;
}

cudaError_t enqueue_on(int device, cudaStream_t stream, WorkKind kind, const char* what, std::function<void()> fn,
                       uint64_t* seq) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  const int saved = t_device;
  t_device = device;
  *seq = st().next_seq;  // push() assigns exactly this
  const cudaError_t e = enqueue(stream, kind, what, std::move(fn));
  t_device = saved;
  return e;
}

void run_upto(int device, cudaStream_t stream, uint64_t seq) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  const int saved = t_device;
  t_device = device;
  Stream* s = nullptr;
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) {
    s = resolve(stream);
  } else {
    auto it = st().streams.find(reinterpret_cast<Stream*>(stream));  // destroyed streams still drain
    if (it != st().streams.end()) s = it->second.get();
  }
  t_device = saved;
  if (s) flush_upto(*s, seq);
}

cudaError_t flush(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  Stream* s = resolve(stream);
  if (!s) return detail::fail(cudaErrorInvalidResourceHandle, "flush: invalid stream handle " + hex(stream));
  flush_stream(*s);
  return sticky_error();
}

cudaError_t flush_all() {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  bool again = true;
  while (again) {
    again = false;
    for (Stream* s : all_streams())
      if (!s->queue.empty()) {
        const size_t before = s->queue.size();
        flush_stream(*s);
        again = again || s->queue.size() != before;  // a stream waiting at a collective stays
      }
  }
  drop_drained_destroyed();
  return sticky_error();
}

bool is_capturing(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  Stream* s = resolve(stream);
  return s && s->capture != nullptr;
}

cudaError_t capture_per_launch(cudaStream_t stream, WorkKind kind, const char* what, PerLaunch make) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (cudaError_t e = sticky_error()) return e;
  Stream* s = resolve(stream);
  if (cudaError_t e = check_stream_for_work(s, stream, what ? what : "work")) return e;
  if (!s->capture)
    return detail::fail(cudaErrorIllegalState, std::string(what ? what : "work") + ": " + s->name + " is not capturing");
  s->capture->graph->data->nodes.push_back(
      Node{kind, what ? what : "work", nullptr, std::make_shared<PerLaunch>(std::move(make))});
  return cudaSuccess;
}

int device_count() {
  static const int n = [] {
    const char* env = std::getenv("CUDL_EMU_DEVICES");
    if (!env || !*env) return 1;
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (*end != 0 || v < 1 || v > kMaxDevices) {
      std::fprintf(stderr, "cudl emulator: CUDL_EMU_DEVICES='%s' is not a device count from 1 to %d\n", env,
                   kMaxDevices);
      std::abort();
    }
    return static_cast<int>(v);
  }();
  return n;
}

int current_device() { return t_device; }

bool can_access(int device, int owner) {
  if (device == owner) return true;
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  return st().peer_access.count({device, owner}) != 0;
}

const char* current_work() { return t_current_work; }

WorkScope::WorkScope(const char* what) : previous(t_current_work) { t_current_work = what; }
WorkScope::~WorkScope() { t_current_work = previous; }

void record_error(cudaError_t err, const std::string& detail, bool sticky) {
  if (err == cudaSuccess) return;
  ErrorState& e = errors();
  std::lock_guard<std::mutex> lock(e.mu);
  e.last = err;
  e.last_detail = detail;
  e.detail_by_code[static_cast<int>(err)] = detail;
  if (sticky && e.sticky == cudaSuccess) {
    e.sticky = err;
    g_sticky_set.store(true, std::memory_order_release);
  }
}

cudaError_t sticky_error() {
  if (!g_sticky_set.load(std::memory_order_acquire)) return cudaSuccess;
  ErrorState& e = errors();
  std::lock_guard<std::mutex> lock(e.mu);
  return e.sticky;
}

namespace {
Counters snapshot(const AtomicCounters& c) {
  Counters r;
  r.kernel_launches = c.kernel_launches;
  r.graph_launches = c.graph_launches;
  r.memcpy_h2d = c.memcpy_h2d;
  r.memcpy_d2h = c.memcpy_d2h;
  r.memcpy_d2d = c.memcpy_d2d;
  r.memcpy_h2h = c.memcpy_h2h;
  r.bytes_h2d = c.bytes_h2d;
  r.bytes_d2h = c.bytes_d2h;
  r.bytes_d2d = c.bytes_d2d;
  r.memsets = c.memsets;
  r.mallocs = c.mallocs;
  r.frees = c.frees;
  r.host_mallocs = c.host_mallocs;
  r.host_frees = c.host_frees;
  r.syncs = c.syncs;
  r.threads = c.threads;
  r.barriers = c.barriers;
  r.library_calls = c.library_calls;
  r.collectives = c.collectives;
  r.collective_bytes = c.collective_bytes;
  return r;
}
}  // namespace

Counters counters() { return snapshot(ctr()); }
Counters counters(int device) { return snapshot(ctr(device)); }

void count_collective(int device, uint64_t bytes) {
  for (AtomicCounters* c : {&ctr(), &ctr(device)}) {
    c->collectives++;
    c->collective_bytes += bytes;
  }
}

namespace {
std::atomic<int> g_failing_instantiates{0};
}  // namespace

void fail_next_graph_instantiates(int n) { g_failing_instantiates.store(n); }

bool take_failing_instantiate() {
  int n = g_failing_instantiates.load();
  while (n > 0 && !g_failing_instantiates.compare_exchange_weak(n, n - 1)) {
  }
  return n > 0;
}

void reset_counters() {
  std::vector<AtomicCounters*> all{&ctr()};
  for (int d = 0; d < kMaxDevices; ++d) all.push_back(&ctr(d));
  for (AtomicCounters* cp : all) {
    AtomicCounters& c = *cp;
    for (std::atomic<uint64_t>* a :
         {&c.kernel_launches, &c.graph_launches, &c.memcpy_h2d, &c.memcpy_d2h, &c.memcpy_d2d, &c.memcpy_h2h,
          &c.bytes_h2d, &c.bytes_d2h, &c.bytes_d2d, &c.memsets, &c.mallocs, &c.frees, &c.host_mallocs, &c.host_frees,
          &c.syncs, &c.threads, &c.barriers, &c.library_calls, &c.collectives, &c.collective_bytes})
      a->store(0);
  }
}

void count_kernel(uint64_t threads, uint64_t barrier_crossings) {
  ctr().threads.fetch_add(threads, std::memory_order_relaxed);
  ctr().barriers.fetch_add(barrier_crossings, std::memory_order_relaxed);
}

// ---- emu.hpp ---------------------------------------------------------------------------------------

std::string last_error_detail() {
  ErrorState& e = errors();
  std::lock_guard<std::mutex> lock(e.mu);
  return e.last_detail;
}

void reset_device_state() {
  ErrorState& e = errors();
  std::lock_guard<std::mutex> lock(e.mu);
  e.last = cudaSuccess;
  e.sticky = cudaSuccess;
  e.last_detail.clear();
  e.detail_by_code.clear();
  g_sticky_set.store(false, std::memory_order_release);
}

// ---- internal.hpp ----------------------------------------------------------------------------------

namespace detail {

std::recursive_mutex& api_mutex() { return st().mu; }

const char* running_work() { return g_running_work.load(); }

cudaError_t fail(cudaError_t err, const std::string& detail) {
  record_error(err, detail, false);
  return err;
}

cudaError_t forbid_during_capture(const char* api) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (!capture_prohibits_this_thread()) return cudaSuccess;
  std::string who;
  for (auto& c : st().captures)
    if (prohibits_this_thread(*c)) {
      invalidate(*c, std::string(api) + " called during capture");
      if (who.empty()) who = c->origin ? c->origin->name : "a stream";
    }
  return fail(cudaErrorStreamCaptureUnsupported, std::string(api) + " is not permitted while " + who + " is capturing");
}

cudaError_t flush_blocking() {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  bool again = true;
  while (again) {
    again = false;
    for (Stream* s : all_streams())
      if ((s->legacy || s->blocking()) && !s->queue.empty()) {
        const size_t before = s->queue.size();
        flush_stream(*s);
        again = again || s->queue.size() != before;
      }
  }
  drop_drained_destroyed();
  return sticky_error();
}

void count_copy(CopyDir dir, size_t bytes) {
  AtomicCounters& c = ctr();
  switch (dir) {
    case CopyDir::H2D:
      c.memcpy_h2d++;
      c.bytes_h2d += bytes;
      break;
    case CopyDir::D2H:
      c.memcpy_d2h++;
      c.bytes_d2h += bytes;
      break;
    case CopyDir::D2D:
      c.memcpy_d2d++;
      c.bytes_d2d += bytes;
      break;
    case CopyDir::H2H:
      c.memcpy_h2h++;
      break;
  }
}
void count_memset() { ctr().memsets++; }
void count_malloc(bool device) {
  for (AtomicCounters* c : {&ctr(), &ctr(t_device)}) (device ? c->mallocs : c->host_mallocs)++;
}
void count_free(bool device) {
  for (AtomicCounters* c : {&ctr(), &ctr(t_device)}) (device ? c->frees : c->host_frees)++;
}
void count_sync() {
  ctr().syncs++;
  ctr(t_device).syncs++;
}
void count_kernel_launch() { ctr().kernel_launches++; }
void count_graph_launch(int device) {
  ctr().graph_launches++;
  ctr(device).graph_launches++;
}
void count_library_call() { ctr().library_calls++; }

}  // namespace detail
}  // namespace cudl_emu

// ==== the CUDA runtime API ============================================================================

using cudl_emu::detail::fail;
namespace emu = cudl_emu;

namespace {

// The H100 SXM5 80GB as the emulator presents it.
constexpr size_t kTotalGlobalMem = 80ull << 30;
constexpr int kSmCount = 132;
constexpr size_t kSharedPerSm = 228 * 1024;
constexpr size_t kSharedPerBlock = 48 * 1024;
constexpr size_t kSharedPerBlockOptin = 227 * 1024;

cudaDeviceProp make_props() {
  cudaDeviceProp p;
  std::memset(&p, 0, sizeof p);
  std::snprintf(p.name, sizeof p.name, "NVIDIA H100 80GB HBM3 (cudl emulator)");
  for (int i = 0; i < 16; ++i) p.uuid.bytes[i] = static_cast<char>(0xC0 + i);
  p.totalGlobalMem = kTotalGlobalMem;
  p.sharedMemPerBlock = kSharedPerBlock;
  p.regsPerBlock = 65536;
  p.warpSize = 32;
  p.memPitch = 2147483647;
  p.maxThreadsPerBlock = 1024;
  p.maxThreadsDim[0] = 1024;
  p.maxThreadsDim[1] = 1024;
  p.maxThreadsDim[2] = 64;
  p.maxGridSize[0] = 2147483647;
  p.maxGridSize[1] = 65535;
  p.maxGridSize[2] = 65535;
  p.totalConstMem = 65536;
  p.major = 9;
  p.minor = 0;
  p.textureAlignment = 512;
  p.texturePitchAlignment = 32;
  p.multiProcessorCount = kSmCount;
  p.integrated = 0;
  p.canMapHostMemory = 1;
  p.maxTexture1D = 131072;
  p.maxTexture2D[0] = 131072;
  p.maxTexture2D[1] = 65536;
  p.maxTexture3D[0] = p.maxTexture3D[1] = p.maxTexture3D[2] = 16384;
  p.surfaceAlignment = 512;
  p.concurrentKernels = 1;
  p.ECCEnabled = 1;
  p.pciBusID = 0x1b;
  p.asyncEngineCount = 3;
  p.unifiedAddressing = 1;
  p.memoryBusWidth = 5120;
  p.l2CacheSize = 50 * 1024 * 1024;
  p.persistingL2CacheMaxSize = 32 * 1024 * 1024;
  p.maxThreadsPerMultiProcessor = 2048;
  p.streamPrioritiesSupported = 1;
  p.globalL1CacheSupported = 1;
  p.localL1CacheSupported = 1;
  p.sharedMemPerMultiprocessor = kSharedPerSm;
  p.regsPerMultiprocessor = 65536;
  p.managedMemory = 1;
  p.concurrentManagedAccess = 1;
  p.computePreemptionSupported = 1;
  p.cooperativeLaunch = 1;
  p.sharedMemPerBlockOptin = kSharedPerBlockOptin;
  p.maxBlocksPerMultiProcessor = 32;
  p.accessPolicyMaxWindowSize = 134213632;
  p.reservedSharedMemPerBlock = 1024;
  p.hostRegisterSupported = 1;
  p.memoryPoolsSupported = 1;
  p.clusterLaunch = 1;
  p.hostNumaId = -1;
  return p;
}

cudaError_t check_device(int device, const char* api) {
  if (device < 0 || device >= emu::device_count())
    return fail(cudaErrorInvalidDevice, std::string(api) + ": device " + std::to_string(device) + " (the emulator has " +
                                            std::to_string(emu::device_count()) + " device(s); CUDL_EMU_DEVICES sets it)");
  return cudaSuccess;
}

#define EMU_STICKY()                                               \
  do {                                                             \
    if (cudaError_t sticky_ = emu::sticky_error()) return sticky_; \
  } while (0)

using LockGuard = std::lock_guard<std::recursive_mutex>;

}  // namespace

extern "C" {

// ---- errors ------------------------------------------------------------------------------------

cudaError_t cudaGetLastError(void) {
  auto& e = emu::errors();
  std::lock_guard<std::mutex> lock(e.mu);
  if (e.sticky != cudaSuccess) return e.sticky;
  cudaError_t r = e.last;
  e.last = cudaSuccess;
  return r;
}

cudaError_t cudaPeekAtLastError(void) {
  auto& e = emu::errors();
  std::lock_guard<std::mutex> lock(e.mu);
  return e.sticky != cudaSuccess ? e.sticky : e.last;
}

const char* cudaGetErrorName(cudaError_t error) {
  const emu::ErrorInfo* info = emu::find_error(error);
  return info ? info->name : "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  const emu::ErrorInfo* info = emu::find_error(error);
  const char* base = info ? info->message : "unrecognized error code";
  auto& e = emu::errors();
  std::lock_guard<std::mutex> lock(e.mu);
  auto it = e.detail_by_code.find(static_cast<int>(error));
  if (it == e.detail_by_code.end() || it->second.empty()) return base;
  return e.interned.insert(std::string(base) + " (" + it->second + ")").first->c_str();
}

// ---- device ------------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: count is null");
  *count = emu::device_count();
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop) return fail(cudaErrorInvalidValue, "cudaGetDeviceProperties: prop is null");
  if (cudaError_t e = check_device(device, "cudaGetDeviceProperties")) return e;
  *prop = make_props();
  prop->pciDeviceID = device;
  prop->pciBusID = device;
  if (emu::device_count() > 1) {
    const std::string name = std::string(prop->name) + " #" + std::to_string(device);
    std::snprintf(prop->name, sizeof prop->name, "%s", name.c_str());
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: value is null");
  if (cudaError_t e = check_device(device, "cudaDeviceGetAttribute")) return e;
  static const cudaDeviceProp p = make_props();
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
      *value = p.maxThreadsPerBlock;
      break;
    case cudaDevAttrMaxBlockDimX:
      *value = p.maxThreadsDim[0];
      break;
    case cudaDevAttrMaxBlockDimY:
      *value = p.maxThreadsDim[1];
      break;
    case cudaDevAttrMaxBlockDimZ:
      *value = p.maxThreadsDim[2];
      break;
    case cudaDevAttrMaxGridDimX:
      *value = p.maxGridSize[0];
      break;
    case cudaDevAttrMaxGridDimY:
      *value = p.maxGridSize[1];
      break;
    case cudaDevAttrMaxGridDimZ:
      *value = p.maxGridSize[2];
      break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = static_cast<int>(p.sharedMemPerBlock);
      break;
    case cudaDevAttrTotalConstantMemory:
      *value = static_cast<int>(p.totalConstMem);
      break;
    case cudaDevAttrWarpSize:
      *value = p.warpSize;
      break;
    case cudaDevAttrMaxRegistersPerBlock:
      *value = p.regsPerBlock;
      break;
    case cudaDevAttrMultiProcessorCount:
      *value = p.multiProcessorCount;
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *value = p.major;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = p.minor;
      break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      *value = static_cast<int>(p.sharedMemPerMultiprocessor);
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(p.sharedMemPerBlockOptin);
      break;
    case cudaDevAttrMaxThreadsPerMultiProcessor:
      *value = p.maxThreadsPerMultiProcessor;
      break;
    case cudaDevAttrMaxRegistersPerMultiprocessor:
      *value = p.regsPerMultiprocessor;
      break;
    case cudaDevAttrL2CacheSize:
      *value = p.l2CacheSize;
      break;
    case cudaDevAttrGlobalMemoryBusWidth:
      *value = p.memoryBusWidth;
      break;
    case cudaDevAttrConcurrentKernels:
      *value = 1;
      break;
    case cudaDevAttrUnifiedAddressing:
      *value = 1;
      break;
    case cudaDevAttrMemoryPoolsSupported:
      *value = 1;
      break;
    case cudaDevAttrMaxBlocksPerMultiprocessor:
      *value = p.maxBlocksPerMultiProcessor;
      break;
    case cudaDevAttrIntegrated:
      *value = 0;
      break;
    case cudaDevAttrCooperativeLaunch:
      *value = 1;
      break;
    case cudaDevAttrClockRate:
      *value = 1980000;
      break;  // kHz
    case cudaDevAttrMemoryClockRate:
      *value = 2619000;
      break;  // kHz
    case cudaDevAttrReservedSharedMemoryPerBlock:
      *value = static_cast<int>(p.reservedSharedMemPerBlock);
      break;
    default:
      return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute " + std::to_string(attr) +
                                             " is not emulated (add it to tests/emu/src/runtime.cpp)");
  }
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  EMU_STICKY();
  if (cudaError_t e = check_device(device, "cudaSetDevice")) return e;
  emu::t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue, "cudaGetDevice: device is null");
  *device = emu::t_device;
  return cudaSuccess;
}

cudaError_t cudaDeviceCanAccessPeer(int* canAccessPeer, int device, int peerDevice) {
  if (!canAccessPeer) return fail(cudaErrorInvalidValue, "cudaDeviceCanAccessPeer: canAccessPeer is null");
  if (cudaError_t e = check_device(device, "cudaDeviceCanAccessPeer")) return e;
  if (cudaError_t e = check_device(peerDevice, "cudaDeviceCanAccessPeer")) return e;
  *canAccessPeer = device != peerDevice ? 1 : 0;  // every pair of emulated devices is NVLink-connected
  return cudaSuccess;
}

cudaError_t cudaDeviceEnablePeerAccess(int peerDevice, unsigned int flags) {
  EMU_STICKY();
  if (cudaError_t e = check_device(peerDevice, "cudaDeviceEnablePeerAccess")) return e;
  if (flags != 0) return fail(cudaErrorInvalidValue, "cudaDeviceEnablePeerAccess: flags must be 0");
  if (peerDevice == emu::t_device)
    return fail(cudaErrorInvalidDevice, "cudaDeviceEnablePeerAccess: device " + std::to_string(peerDevice) +
                                            " is the current device");
  LockGuard lock(emu::st().mu);
  if (!emu::st().peer_access.insert({emu::t_device, peerDevice}).second)
    return fail(cudaErrorPeerAccessAlreadyEnabled, "cudaDeviceEnablePeerAccess: device " +
                                                       std::to_string(emu::t_device) + " already accesses device " +
                                                       std::to_string(peerDevice));
  return cudaSuccess;
}

cudaError_t cudaDeviceDisablePeerAccess(int peerDevice) {
  EMU_STICKY();
  if (cudaError_t e = check_device(peerDevice, "cudaDeviceDisablePeerAccess")) return e;
  LockGuard lock(emu::st().mu);
  if (emu::st().peer_access.erase({emu::t_device, peerDevice}) == 0)
    return fail(cudaErrorPeerAccessNotEnabled, "cudaDeviceDisablePeerAccess: device " +
                                                   std::to_string(emu::t_device) + " has no peer access to device " +
                                                   std::to_string(peerDevice));
  return cudaSuccess;
}

cudaError_t cudaSetDeviceFlags(unsigned int) { return cudaSuccess; }
cudaError_t cudaGetDeviceFlags(unsigned int* flags) {
  if (!flags) return fail(cudaErrorInvalidValue, "cudaGetDeviceFlags: flags is null");
  *flags = 0;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue, "cudaDriverGetVersion: null");
  *version = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue, "cudaRuntimeGetVersion: null");
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  EMU_STICKY();
  if (cudaError_t e = emu::detail::forbid_during_capture("cudaDeviceSynchronize")) return e;
  emu::detail::count_sync();
  emu::flush_all();
  emu::detail::check_canaries("cudaDeviceSynchronize", true);
  return emu::sticky_error();
}

// Emulated as: run what is queued, then clear the error state (allocations stay valid).
cudaError_t cudaDeviceReset(void) {
  (void)emu::flush_all();
  emu::reset_device_state();
  return cudaSuccess;
}

// ---- streams -----------------------------------------------------------------------------------

cudaError_t cudaStreamCreateWithPriority(cudaStream_t* pStream, unsigned int flags, int) {
  EMU_STICKY();
  if (!pStream) return fail(cudaErrorInvalidValue, "cudaStreamCreate: pStream is null");
  if (flags & ~static_cast<unsigned>(cudaStreamNonBlocking))
    return fail(cudaErrorInvalidValue, "cudaStreamCreateWithFlags: unknown flags " + std::to_string(flags));
  LockGuard lock(emu::st().mu);
  auto s = std::make_shared<emu::Stream>();
  s->flags = flags;
  s->device = emu::t_device;
  s->name = "stream #" + std::to_string(emu::st().next_stream_id++);
  if (emu::device_count() > 1) s->name += " of device " + std::to_string(s->device);
  emu::st().streams[s.get()] = s;
  *pStream = reinterpret_cast<cudaStream_t>(s.get());
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  return cudaStreamCreateWithPriority(pStream, flags, 0);
}

cudaError_t cudaStreamCreate(cudaStream_t* pStream) { return cudaStreamCreateWithPriority(pStream, 0, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  emu::Stream* s = emu::resolve(stream);
  if (!s || s->legacy || s->per_thread)
    return fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: invalid stream handle " + emu::hex(stream));
  if (s->capture) {
    std::shared_ptr<emu::Capture> c = s->capture;
    emu::invalidate(*c, "cudaStreamDestroy of a capturing stream");
    if (c->origin == s) {  // nobody can end it any more
      emu::end_capture(c);
      emu::st().graphs.erase(c->graph);
      delete c->graph;
      c->graph = nullptr;
    }
    s->capture.reset();
  }
  // Like the real runtime: returns at once; queued work still runs at the next synchronisation.
  s->destroyed = true;
  if (s->queue.empty()) emu::st().streams.erase(s);
  return cudaSuccess;
}

cudaError_t cudaStreamGetFlags(cudaStream_t stream, unsigned int* flags) {
  LockGuard lock(emu::st().mu);
  emu::Stream* s = emu::resolve(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle, "cudaStreamGetFlags: invalid stream");
  if (!flags) return fail(cudaErrorInvalidValue, "cudaStreamGetFlags: flags is null");
  *flags = s->flags;
  return cudaSuccess;
}

cudaError_t cudaStreamGetDevice(cudaStream_t stream, int* device) {
  LockGuard lock(emu::st().mu);
  emu::Stream* s = emu::resolve(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle, "cudaStreamGetDevice: invalid stream");
  if (!device) return fail(cudaErrorInvalidValue, "cudaStreamGetDevice: device is null");
  *device = s->device;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  emu::Stream* s = emu::resolve(stream);
  if (!s)
    return fail(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize: invalid stream handle " + emu::hex(stream));
  if (s->capture) {
    emu::invalidate(*s->capture, "cudaStreamSynchronize on the capturing stream");
    return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamSynchronize on " + s->name + ", which is capturing");
  }
  if (s->legacy) {
    if (cudaError_t e = emu::detail::forbid_during_capture("cudaStreamSynchronize(legacy stream)")) return e;
  }
  emu::detail::count_sync();
  emu::flush_stream(*s);
  emu::detail::check_canaries("cudaStreamSynchronize", true);
  return emu::sticky_error();
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  emu::Stream* s = emu::resolve(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle, "cudaStreamQuery: invalid stream handle " + emu::hex(stream));
  if (s->capture) {
    emu::invalidate(*s->capture, "cudaStreamQuery on the capturing stream");
    return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamQuery on " + s->name + ", which is capturing");
  }
  if (s->queue.empty()) return cudaSuccess;
  // The work is "still running" the first time it is asked about; the next query completes it.
  if (s->queried_front != s->queue.front().seq) {
    s->queried_front = s->queue.front().seq;
    return cudaErrorNotReady;
  }
  emu::flush_stream(*s);
  return emu::sticky_error();
}

cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* userData) {
  if (!fn) return fail(cudaErrorInvalidValue, "cudaLaunchHostFunc: fn is null");
  return emu::enqueue(stream, emu::WorkKind::Host, "cudaLaunchHostFunc", [fn, userData] { fn(userData); });
}

// ---- events ------------------------------------------------------------------------------------

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  EMU_STICKY();
  if (!event) return fail(cudaErrorInvalidValue, "cudaEventCreate: event is null");
  const unsigned known = cudaEventBlockingSync | cudaEventDisableTiming | cudaEventInterprocess;
  if (flags & ~known)
    return fail(cudaErrorInvalidValue, "cudaEventCreateWithFlags: unknown flags " + std::to_string(flags));
  LockGuard lock(emu::st().mu);
  auto ev = std::make_shared<emu::Event>();
  ev->flags = flags;
  ev->device = emu::t_device;
  emu::st().events[ev.get()] = ev;
  *event = reinterpret_cast<cudaEvent_t>(ev.get());
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  if (!emu::resolve_event(event))
    return fail(cudaErrorInvalidResourceHandle, "cudaEventDestroy: invalid event handle " + emu::hex(event));
  // Queued records and waits hold their own references; destroying early is legal.
  emu::st().events.erase(reinterpret_cast<emu::Event*>(event));
  return cudaSuccess;
}

cudaError_t cudaEventRecordWithFlags(cudaEvent_t event, cudaStream_t stream, unsigned int flags) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  emu::Event* ev = emu::resolve_event(event);
  if (!ev) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: invalid event handle " + emu::hex(event));
  emu::Stream* s = emu::resolve(stream);
  if (cudaError_t e = emu::check_stream_for_work(s, stream, "cudaEventRecord")) return e;
  // CUDA: "cudaEventRecord() will fail if the input event and input stream are associated to
  // different devices".
  if (ev->device != s->device)
    return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: the event belongs to device " +
                                                    std::to_string(ev->device) + ", " + s->name + " to device " +
                                                    std::to_string(s->device));
  if (s->capture) {  // a capture-internal dependency: no node, other streams may join via a wait
    ev->capture = s->capture;
    return cudaSuccess;
  }
  std::shared_ptr<emu::Event> keep = emu::st().events.at(ev);
  const uint64_t seq = emu::st().next_seq;  // push() assigns exactly this
  auto fn = std::make_shared<std::function<void()>>([keep, seq] {
    if (seq >= keep->completed_seq) {
      keep->completed_seq = seq;
      keep->time_ms = emu::now_ms();
    }
  });
  emu::push(*s, emu::WorkKind::Event, "cudaEventRecord", fn);
  ev->stream = emu::shared_of(s);
  ev->record_seq = seq;
  ev->capture.reset();
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  return cudaEventRecordWithFlags(event, stream, 0);
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  emu::Event* ev = emu::resolve_event(event);
  if (!ev) return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: invalid event handle " + emu::hex(event));
  if (ev->capture && ev->capture->active)
    return fail(cudaErrorCapturedEvent, "cudaEventSynchronize on an event recorded in a capturing stream");
  emu::detail::count_sync();
  if (ev->record_seq && ev->completed_seq < ev->record_seq) emu::flush_upto(*ev->stream, ev->record_seq);
  emu::detail::check_canaries("cudaEventSynchronize", true);
  return emu::sticky_error();
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  emu::Event* ev = emu::resolve_event(event);
  if (!ev) return fail(cudaErrorInvalidResourceHandle, "cudaEventQuery: invalid event handle " + emu::hex(event));
  if (ev->capture && ev->capture->active)
    return fail(cudaErrorCapturedEvent, "cudaEventQuery on an event recorded in a capturing stream");
  if (ev->record_seq == 0 || ev->completed_seq >= ev->record_seq) return cudaSuccess;
  if (ev->queried_seq != ev->record_seq) {  // "still running" once, then completed
    ev->queried_seq = ev->record_seq;
    return cudaErrorNotReady;
  }
  emu::flush_upto(*ev->stream, ev->record_seq);
  return emu::sticky_error();
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  emu::Event* a = emu::resolve_event(start);
  emu::Event* b = emu::resolve_event(end);
  if (!ms) return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: ms is null");
  if (!a || !b) return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: invalid event handle");
  if (a->device != b->device)
    return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: the events belong to devices " +
                                                    std::to_string(a->device) + " and " + std::to_string(b->device));
  if ((a->flags | b->flags) & cudaEventDisableTiming)
    return fail(cudaErrorInvalidResourceHandle,
                "cudaEventElapsedTime: an event was created with cudaEventDisableTiming");
  if (a->record_seq == 0 || b->record_seq == 0)
    return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event was never recorded");
  if (a->completed_seq < a->record_seq || b->completed_seq < b->record_seq) return cudaErrorNotReady;
  *ms = static_cast<float>(std::max(0.0, b->time_ms - a->time_ms));
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  emu::Event* ev = emu::resolve_event(event);
  if (!ev) return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: invalid event handle " + emu::hex(event));
  emu::Stream* s = emu::resolve(stream);
  if (cudaError_t e = emu::check_stream_for_work(s, stream, "cudaStreamWaitEvent")) return e;
  if (ev->capture && ev->capture->active) {  // fork/join inside a capture
    if (s->capture && s->capture != ev->capture) {
      emu::invalidate(*s->capture, "merge of two capture sequences");
      return fail(cudaErrorStreamCaptureMerge, "cudaStreamWaitEvent would merge two capture sequences");
    }
    s->capture = ev->capture;
    return cudaSuccess;
  }
  if (s->capture) {
    emu::invalidate(*s->capture, "wait on an event recorded outside the capture");
    return fail(cudaErrorStreamCaptureIsolation,
                "cudaStreamWaitEvent: " + s->name + " is capturing but the event was recorded outside the capture");
  }
  if (ev->record_seq == 0) return cudaSuccess;  // never recorded: nothing to wait for
  std::shared_ptr<emu::Stream> producer = ev->stream;
  const uint64_t seq = ev->record_seq;
  emu::push(*s, emu::WorkKind::Event, "cudaStreamWaitEvent",
            std::make_shared<std::function<void()>>([producer, seq] { emu::flush_upto(*producer, seq); }));
  return cudaSuccess;
}

// ---- graphs ------------------------------------------------------------------------------------

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  emu::Stream* s = emu::resolve(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle, "cudaStreamBeginCapture: invalid stream handle");
  if (s->legacy) return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture on the legacy default stream");
  if (s->capture) return fail(cudaErrorIllegalState, "cudaStreamBeginCapture: " + s->name + " is already capturing");
  auto c = std::make_shared<emu::Capture>();
  c->graph = new emu::Graph;
  emu::st().graphs.insert(c->graph);  // visible to cudaGraphGetNodes through cudaStreamGetCaptureInfo
  c->mode = mode;
  c->id = emu::st().next_capture_id++;
  c->origin = s;
  c->thread = std::this_thread::get_id();
  s->capture = c;
  emu::st().captures.push_back(c);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* pGraph) {
  LockGuard lock(emu::st().mu);
  emu::Stream* s = emu::resolve(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle, "cudaStreamEndCapture: invalid stream handle");
  if (!pGraph) return fail(cudaErrorInvalidValue, "cudaStreamEndCapture: pGraph is null");
  if (!s->capture) return fail(cudaErrorIllegalState, "cudaStreamEndCapture: " + s->name + " is not capturing");
  std::shared_ptr<emu::Capture> c = s->capture;
  if (c->origin != s) {
    emu::invalidate(*c, "cudaStreamEndCapture on a stream other than the origin");
    return fail(cudaErrorStreamCaptureUnmatched, "cudaStreamEndCapture: capture was not begun on " + s->name);
  }
  emu::end_capture(c);
  *pGraph = nullptr;
  if (c->invalidated) {
    emu::st().graphs.erase(c->graph);
    delete c->graph;
    c->graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated, "capture invalidated: " + c->why);
  }
  *pGraph = reinterpret_cast<cudaGraph_t>(c->graph);
  return emu::sticky_error();
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* pCaptureStatus) {
  LockGuard lock(emu::st().mu);
  emu::Stream* s = emu::resolve(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle, "cudaStreamIsCapturing: invalid stream handle");
  if (!pCaptureStatus) return fail(cudaErrorInvalidValue, "cudaStreamIsCapturing: null status");
  if (s->legacy && emu::capture_prohibits_this_thread())
    return fail(cudaErrorStreamCaptureImplicit, "cudaStreamIsCapturing on the legacy stream during a capture");
  *pCaptureStatus = !s->capture               ? cudaStreamCaptureStatusNone
                    : s->capture->invalidated ? cudaStreamCaptureStatusInvalidated
                                              : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaStreamGetCaptureInfo(cudaStream_t stream, cudaStreamCaptureStatus* captureStatus_out,
                                     unsigned long long* id_out, cudaGraph_t* graph_out,
                                     const cudaGraphNode_t** dependencies_out, const cudaGraphEdgeData** edgeData_out,
                                     size_t* numDependencies_out) {
  LockGuard lock(emu::st().mu);
  emu::Stream* s = emu::resolve(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle, "cudaStreamGetCaptureInfo: invalid stream handle");
  if (!captureStatus_out) return fail(cudaErrorInvalidValue, "cudaStreamGetCaptureInfo: null status");
  if (s->legacy && emu::capture_prohibits_this_thread())
    return fail(cudaErrorStreamCaptureImplicit, "cudaStreamGetCaptureInfo on the legacy stream during a capture");
  const auto& c = s->capture;
  *captureStatus_out = !c               ? cudaStreamCaptureStatusNone
                       : c->invalidated ? cudaStreamCaptureStatusInvalidated
                                        : cudaStreamCaptureStatusActive;
  if (id_out) *id_out = c ? c->id : 0;
  if (graph_out) *graph_out = c ? reinterpret_cast<cudaGraph_t>(c->graph) : nullptr;
  if (dependencies_out) *dependencies_out = nullptr;
  if (edgeData_out) *edgeData_out = nullptr;
  if (numDependencies_out) *numDependencies_out = 0;
  return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* numNodes) {
  LockGuard lock(emu::st().mu);
  auto* g = reinterpret_cast<emu::Graph*>(graph);
  if (!emu::st().graphs.count(g)) return fail(cudaErrorInvalidValue, "cudaGraphGetNodes: invalid graph");
  if (!numNodes) return fail(cudaErrorInvalidValue, "cudaGraphGetNodes: numNodes is null");
  const size_t n = g->data->nodes.size();
  if (!nodes) {
    *numNodes = n;
    return cudaSuccess;
  }
  while (g->node_handles.size() < n) g->node_handles.emplace_back(new char(0));
  const size_t m = std::min(n, *numNodes);
  for (size_t i = 0; i < m; ++i) nodes[i] = reinterpret_cast<cudaGraphNode_t>(g->node_handles[i].get());
  for (size_t i = m; i < *numNodes; ++i) nodes[i] = nullptr;
  *numNodes = m;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* pGraphExec, cudaGraph_t graph, unsigned long long flags) {
  EMU_STICKY();
  LockGuard lock(emu::st().mu);
  auto* g = reinterpret_cast<emu::Graph*>(graph);
  if (!pGraphExec) return fail(cudaErrorInvalidValue, "cudaGraphInstantiate: pGraphExec is null");
  if (!emu::st().graphs.count(g))
    return fail(cudaErrorInvalidValue, "cudaGraphInstantiate: invalid graph " + emu::hex(graph));
  if (emu::take_failing_instantiate())
    return fail(cudaErrorNotSupported, "cudaGraphInstantiate: failure injected by fail_next_graph_instantiates");
  auto* x = new emu::GraphExec;
  x->nodes = std::make_shared<const std::vector<emu::Node>>(g->data->nodes);  // later graph edits don't leak in
  emu::st().execs.insert(x);
  *pGraphExec = reinterpret_cast<cudaGraphExec_t>(x);
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* pGraphExec, cudaGraph_t graph, unsigned long long flags) {
  return cudaGraphInstantiateWithFlags(pGraphExec, graph, flags);
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream) {
  EMU_STICKY();
  std::vector<std::function<std::string()>> waits;
  {
    LockGuard lock(emu::st().mu);
    auto* x = reinterpret_cast<emu::GraphExec*>(graphExec);
    if (!emu::st().execs.count(x))
      return fail(cudaErrorInvalidResourceHandle, "cudaGraphLaunch: invalid graph exec " + emu::hex(graphExec));
    emu::Stream* s = emu::resolve(stream);
    if (cudaError_t e = emu::check_stream_for_work(s, stream, "cudaGraphLaunch")) return e;
    emu::detail::count_graph_launch(s->device);
    for (const emu::Node& n : *x->nodes) {
      if (s->capture) {  // launched into a capture: the nodes become the outer graph's
        s->capture->graph->data->nodes.push_back(n);
        continue;
      }
      if (!n.per_launch) {
        emu::push(*s, n.kind, n.what, n.fn);
        continue;
      }
      const uint64_t seq = emu::st().next_seq;  // what push() assigns next
      emu::LaunchedWork w = (*n.per_launch)(stream, s->device, seq);
      emu::push(*s, n.kind, n.what, std::make_shared<std::function<void()>>(std::move(w.run)));
      s->queue.back().ready = std::move(w.ready);
      if (w.wait) waits.push_back(std::move(w.wait));
    }
  }
  // Outside the lock: the other ranks' host threads must be able to launch their part meanwhile.
  std::string error;
  for (auto& w : waits)
    if (std::string e = w(); !e.empty() && error.empty()) error = e;
  if (!error.empty()) return fail(cudaErrorLaunchFailure, "cudaGraphLaunch: " + error);
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t graphExec) {
  LockGuard lock(emu::st().mu);
  auto* x = reinterpret_cast<emu::GraphExec*>(graphExec);
  if (!emu::st().execs.erase(x))
    return fail(cudaErrorInvalidResourceHandle, "cudaGraphExecDestroy: invalid graph exec " + emu::hex(graphExec));
  delete x;  // queued replays hold their own references to the work
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  LockGuard lock(emu::st().mu);
  auto* g = reinterpret_cast<emu::Graph*>(graph);
  if (!emu::st().graphs.erase(g))
    return fail(cudaErrorInvalidValue, "cudaGraphDestroy: invalid graph " + emu::hex(graph));
  delete g;
  return cudaSuccess;
}

}  // extern "C"
