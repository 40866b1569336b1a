// tests/emu/src/exec.cpp — the SIMT executor: runs a grid's blocks one after another, each block's
// threads as cooperative fibers (boost.context fcontext) with real barrier and warp rendezvous.
//
// Also defines these CUDA runtime functions (the runtime half in runtime.cpp must not):
//   cudaFuncSetAttribute, cudaFuncGetAttributes, cudaFuncSetCacheConfig,
//   cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags, cudaOccupancyAvailableDynamicSMemPerBlock,
//   cudaMemcpyToSymbol, cudaMemcpyFromSymbol, cudaMemcpyToSymbolAsync, cudaMemcpyFromSymbolAsync
// and cudl_emu::schedule / set_schedule (emu.hpp), and __assert_fail (device-side assert).
//
// How a block runs. A "runner" is a fiber (pooled 128 KB stack with a guard page) whose loop
// takes the next not-yet-started thread of the current round and calls the kernel for it. A thread
// that never blocks finishes on the runner, which at once starts the next thread on the same stack
// (no context switch). A thread that blocks (__syncthreads, a warp intrinsic) keeps its runner and
// switches to the scheduler, which then needs another runner for the next thread. A round is the
// list of runnable threads in schedule order (forward / reverse / shuffle); threads released by a
// warp rendezvous join the next round, a barrier release makes a new round of the whole block.
#include <assert.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/context/detail/fcontext.hpp>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "emu/emu.hpp"
#include "emu/kernel.hpp"

namespace cudl_emu {

// --- schedule --------------------------------------------------------------------------------
namespace {

std::mutex g_schedule_mutex;
bool g_schedule_init = false;
Schedule g_schedule;

Schedule parse_schedule(const char* s) {
  Schedule r;
  if (!s || !*s || std::strcmp(s, "forward") == 0) return r;
  if (std::strcmp(s, "reverse") == 0) {
    r.kind = Schedule::Reverse;
    return r;
  }
  if (std::strncmp(s, "shuffle", 7) == 0) {
    r.kind = Schedule::Shuffle;
    r.seed = (s[7] == ':') ? std::strtoull(s + 8, nullptr, 0) : 1;
    return r;
  }
  std::fprintf(stderr, "cudl-emu: CUDL_EMU_SCHEDULE='%s' is not forward|reverse|shuffle:<seed>; using forward\n", s);
  return r;
}

}  // namespace

Schedule schedule() {
  std::lock_guard<std::mutex> lock(g_schedule_mutex);
  if (!g_schedule_init) {
    g_schedule = parse_schedule(std::getenv("CUDL_EMU_SCHEDULE"));
    g_schedule_init = true;
  }
  return g_schedule;
}

void set_schedule(Schedule s) {
  std::lock_guard<std::mutex> lock(g_schedule_mutex);
  g_schedule = s;
  g_schedule_init = true;
}

namespace detail {

using boost::context::detail::fcontext_t;
using boost::context::detail::jump_fcontext;
using boost::context::detail::make_fcontext;
using boost::context::detail::transfer_t;

namespace {

constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kDefaultMaxDynamicShared = 48 * 1024;
constexpr size_t kOptinMaxShared = 232448;  // H100 sharedMemPerBlockOptin (227 KB)

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync:
      return "__syncwarp";
    case WarpOp::ShflIdx:
      return "__shfl_sync";
    case WarpOp::ShflUp:
      return "__shfl_up_sync";
    case WarpOp::ShflDown:
      return "__shfl_down_sync";
    case WarpOp::ShflXor:
      return "__shfl_xor_sync";
    case WarpOp::Ballot:
      return "__ballot_sync";
    case WarpOp::Any:
      return "__any_sync";
    case WarpOp::All:
      return "__all_sync";
    case WarpOp::MatchAny:
      return "__match_any_sync";
    case WarpOp::ReduceAdd:
      return "__reduce_add_sync";
    case WarpOp::ReduceMin:
    case WarpOp::ReduceMinS:
      return "__reduce_min_sync";
    case WarpOp::ReduceMax:
    case WarpOp::ReduceMaxS:
      return "__reduce_max_sync";
    case WarpOp::ReduceAnd:
      return "__reduce_and_sync";
    case WarpOp::ReduceOr:
      return "__reduce_or_sync";
    case WarpOp::ReduceXor:
      return "__reduce_xor_sync";
  }
  return "warp intrinsic";
}

const char* sync_name(int kind) {
  static const char* names[] = {"__syncthreads", "__syncthreads_count", "__syncthreads_and", "__syncthreads_or"};
  return names[kind & 3];
}

bool same_site(const char* f1, int l1, const char* f2, int l2) {
  return l1 == l2 && (f1 == f2 || std::strcmp(f1, f2) == 0);
}

const char* short_file(const char* f) {
  const char* s = std::strrchr(f, '/');
  return s ? s + 1 : f;
}

// --- per-thread and per-block records -----------------------------------------------------------

enum class TState : uint8_t { NotStarted, Running, Runnable, AtBarrier, InWarp, Exited };

struct Runner;

struct EmuThread : ThreadCoords {
  unsigned linear = 0;
  unsigned warp = 0;
  TState state = TState::NotStarted;
  fcontext_t ctx = nullptr;  // suspended context (while blocked / runnable after a rendezvous)
  Runner* runner = nullptr;  // the runner fiber the thread lives on once started
  int pred = 0;              // barrier predicate
  uint64_t value = 0;        // warp collective operand
  int param = 0;             // lane / delta / lane mask
  int width = 32;
  uint64_t result = 0;  // barrier or collective result
};

struct Collective {
  unsigned mask = 0;     // as given by the first lane to arrive
  unsigned arrived = 0;  // lanes waiting in it
  WarpOp op = WarpOp::Sync;
  const char* file = "";
  int line = 0;
};

struct Warp {
  unsigned existing = 0;    // lanes present in the block
  unsigned exited = 0;      // lanes that returned
  unsigned at_barrier = 0;  // lanes waiting at __syncthreads
  unsigned in_coll = 0;     // lanes waiting in a collective
  std::vector<Collective> colls;
};

struct Runner {
  fcontext_t ctx = nullptr;
  char* stack_lo = nullptr;  // lowest usable byte (guard page below)
  size_t stack_size = 0;
};

enum Msg : uintptr_t { kIdle = 1, kBlocked = 2, kDead = 3 };

struct AbortBlock {};

struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

uint64_t mix(uint64_t a, uint64_t b) {
  Rng r{a * 0x9e3779b97f4a7c15ull ^ b};
  return r.next();
}

size_t stack_bytes() {
  static const size_t bytes = [] {
    size_t kb = 128;
    if (const char* e = std::getenv("CUDL_EMU_STACK_KB")) kb = std::max<size_t>(16, std::strtoull(e, nullptr, 10));
    return kb * 1024;
  }();
  return bytes;
}

void runner_entry(transfer_t t);

struct Executor;
thread_local Executor* t_exec = nullptr;

struct Executor : BlockCoords {
  // grid
  const GridLaunch* g = nullptr;
  Schedule sched_cfg;
  uint64_t launch_no = 0;  // hash of the launch (kernel name and shape), seeds shuffles
  // block
  unsigned n = 0;  // threads per block
  std::vector<EmuThread> threads;
  std::vector<Warp> warps;
  std::vector<EmuThread*> round, next;
  size_t pos = 0;
  uint64_t round_no = 0;
  fcontext_t sched = nullptr;    // the scheduler's context while a fiber runs
  EmuThread* running = nullptr;  // thread executing on the current fiber
  Runner* cur_runner = nullptr;  // runner the scheduler last switched to
  unsigned at_barrier = 0;
  const char* bar_file = "";
  int bar_line = 0;
  int bar_kind = 0;
  unsigned exited = 0;
  bool aborting = false;
  cudaError_t err = cudaSuccess;
  std::string err_msg;
  uint64_t block_barriers = 0;  // block-wide barrier crossings in this grid
  // fibers
  std::vector<Runner*> idle;
  std::vector<Runner*> all_runners;
  // dynamic shared memory: the buffer ends at a PROT_NONE page so overruns fault
  char* dyn_map = nullptr;
  size_t dyn_map_bytes = 0;
  size_t dyn_capacity = 0;
  char position[96] = {0};       // current_kernel_position()
  char address_note[160] = {0};  // describe_executor_address()

  ~Executor() {
    if (t_exec == this) t_exec = nullptr;
    for (Runner* r : all_runners) {
      munmap(r->stack_lo - page(), r->stack_size + page());
      delete r;
    }
    if (dyn_map) munmap(dyn_map, dyn_map_bytes);
  }

  static size_t page() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
  }

  Runner* get_runner() {
    if (!idle.empty()) {
      Runner* r = idle.back();
      idle.pop_back();
      return r;
    }
    Runner* r = new Runner;
    r->stack_size = stack_bytes();
    void* m = mmap(nullptr, r->stack_size + page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) {
      std::fprintf(stderr, "cudl-emu: cannot map a %zu-byte fiber stack\n", r->stack_size);
      std::abort();
    }
    mprotect(m, page(), PROT_NONE);  // stack overflow faults instead of corrupting memory
    r->stack_lo = static_cast<char*>(m) + page();
    remake(r);
    all_runners.push_back(r);
    return r;
  }

  void remake(Runner* r) { r->ctx = make_fcontext(r->stack_lo + r->stack_size, r->stack_size, runner_entry); }

  void* dynamic_buffer(size_t bytes) {
    size_t need = (bytes + 255) & ~size_t(255);
    if (need == 0) need = 256;
    if (need > dyn_capacity) {
      if (dyn_map) munmap(dyn_map, dyn_map_bytes);
      size_t body = (need + page() - 1) & ~(page() - 1);
      dyn_map_bytes = body + page();
      void* m = mmap(nullptr, dyn_map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) {
        std::fprintf(stderr, "cudl-emu: cannot map %zu bytes of dynamic shared memory\n", need);
        std::abort();
      }
      dyn_map = static_cast<char*>(m);
      mprotect(dyn_map + body, page(), PROT_NONE);
      dyn_capacity = body;
    }
    // End the buffer exactly at the guard page (16-byte granularity) so overruns fault.
    size_t end_aligned = (bytes + 15) & ~size_t(15);
    if (end_aligned == 0) end_aligned = 16;
    return dyn_map + dyn_capacity - end_aligned;
  }

  // --- reporting ---
  std::string where() const {
    return format("kernel '%s' block (%u,%u,%u)", g->name, block_idx.x, block_idx.y, block_idx.z);
  }
  static std::string tid(const EmuThread* t) {
    return format("thread (%u,%u,%u)", t->thread_idx.x, t->thread_idx.y, t->thread_idx.z);
  }
  void fail(cudaError_t code, const std::string& what) {
    if (!aborting) {
      err = code;
      err_msg = "cudl-emu: " + what;
    }
    aborting = true;
  }
  [[noreturn]] void fail_throw(cudaError_t code, const std::string& what) {
    fail(code, what);
    throw AbortBlock{};
  }
  std::string lanes_desc(unsigned warp, unsigned lanes) const {
    std::string s;
    int shown = 0;
    for (int l = 0; l < 32; ++l) {
      if (!(lanes >> l & 1)) continue;
      if (shown == 4) {
        s += format(" and %d more", __builtin_popcount(lanes) - 4);
        break;
      }
      if (shown++) s += ", ";
      s += tid(&threads[warp * 32 + l]);
    }
    return s;
  }

  // --- scheduling ---
  void order(std::vector<EmuThread*>& v) {
    switch (sched_cfg.kind) {
      case Schedule::Forward:
        if (!std::is_sorted(v.begin(), v.end())) std::sort(v.begin(), v.end());
        break;
      case Schedule::Reverse:
        std::sort(v.begin(), v.end(), [](EmuThread* a, EmuThread* b) { return a > b; });
        break;
      case Schedule::Shuffle: {
        Rng r{mix(mix(sched_cfg.seed, launch_no),
                  mix((uint64_t)block_idx.x << 32 ^ block_idx.y << 16 ^ block_idx.z, ++round_no))};
        for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[r.next() % i]);
        break;
      }
    }
  }

  void handle(transfer_t t) {
    switch ((Msg)(uintptr_t)t.data) {
      case kIdle:
        cur_runner->ctx = t.fctx;
        idle.push_back(cur_runner);
        break;
      case kBlocked:
        running->ctx = t.fctx;
        running->runner = cur_runner;
        break;
      case kDead:  // the thread died inside a noexcept frame (device assert): recycle the stack
        remake(cur_runner);
        idle.push_back(cur_runner);
        break;
    }
  }

  void run_round() {
    while (pos < round.size()) {
      EmuThread* th = round[pos];
      if (th->state == TState::NotStarted) {
        if (aborting) {
          ++pos;
          continue;
        }
        cur_runner = get_runner();
        handle(jump_fcontext(cur_runner->ctx, cur_runner));
      } else if (th->state == TState::Runnable) {
        ++pos;
        cur_runner = th->runner;
        running = th;
        th->state = TState::Running;
        handle(jump_fcontext(th->ctx, nullptr));
      } else {
        ++pos;
      }
    }
  }

  void run_block() {
    // Per-block init.
    at_barrier = 0;
    exited = 0;
    round_no = 0;
    for (Warp& w : warps) {
      w.exited = w.at_barrier = w.in_coll = 0;
      w.colls.clear();
    }
    round.clear();
    next.clear();
    for (unsigned i = 0; i < n; ++i) {
      EmuThread& t = threads[i];
      t.state = TState::NotStarted;
      round.push_back(&t);
    }
    order(round);
    pos = 0;
    for (;;) {
      run_round();
      if (aborting) break;
      if (!next.empty()) {
        round.swap(next);
        next.clear();
        order(round);
        pos = 0;
        continue;
      }
      if (at_barrier > 0 && at_barrier == n) {
        release_barrier();
        continue;
      }
      if (exited == n) return;
      report_deadlock();
      break;
    }
    unwind();
  }

  void release_barrier() {
    int acc = 0;
    if (bar_kind == 2) acc = 1;
    for (unsigned i = 0; i < n; ++i) {
      const int p = threads[i].pred;
      if (bar_kind == 1)
        acc += p;
      else if (bar_kind == 2)
        acc &= p;
      else if (bar_kind == 3)
        acc |= p;
    }
    round.clear();
    for (unsigned i = 0; i < n; ++i) {
      EmuThread& t = threads[i];
      t.result = (uint64_t)(int64_t)acc;
      t.state = TState::Runnable;
      round.push_back(&t);
    }
    for (Warp& w : warps) w.at_barrier = 0;
    at_barrier = 0;
    ++block_barriers;
    order(round);
    pos = 0;
  }

  void report_deadlock() {
    std::string s = format("deadlock in %s:", where().c_str());
    if (at_barrier)
      s += format(" %u of %u threads wait at %s (%s:%d), %u have exited;", at_barrier, n, sync_name(bar_kind),
                  short_file(bar_file), bar_line, exited);
    for (size_t w = 0; w < warps.size(); ++w)
      for (const Collective& c : warps[w].colls)
        s += format(" warp %zu: %s waits in %s (mask 0x%08x, %s:%d) for lanes 0x%08x;", w,
                    lanes_desc((unsigned)w, c.arrived).c_str(), op_name(c.op), c.mask, short_file(c.file), c.line,
                    c.mask & warps[w].existing & ~c.arrived);
    fail(cudaErrorLaunchFailure, s);
  }

  // Resumes every suspended thread with `aborting` set: each throws AbortBlock from its wait,
  // unwinding its stack, and its runner goes back to the idle pool.
  void unwind() {
    for (unsigned i = 0; i < n; ++i) {
      EmuThread& t = threads[i];
      if (t.state == TState::AtBarrier || t.state == TState::InWarp || t.state == TState::Runnable) {
        cur_runner = t.runner;
        running = &t;
        t.state = TState::Running;
        handle(jump_fcontext(t.ctx, nullptr));
      }
    }
  }

  // Called on the fiber when a thread's kernel function has returned (or unwound).
  void on_exit(EmuThread* th) {
    th->state = TState::Exited;
    ++exited;
    Warp& w = warps[th->warp];
    const unsigned bit = 1u << th->lane;
    w.exited |= bit;
    if (aborting) return;
    settle_active_mask(w, nullptr);
    if (at_barrier > 0)
      fail(cudaErrorLaunchFailure,
           format("barrier divergence in %s: %s exited while %u thread(s) wait at %s (%s:%d), e.g. %s", where().c_str(),
                  tid(th).c_str(), at_barrier, sync_name(bar_kind), short_file(bar_file), bar_line,
                  first_at_barrier().c_str()));
    for (const Collective& c : w.colls)
      if (c.mask & bit)
        fail(cudaErrorLaunchFailure,
             format("warp divergence in %s: %s exited while %s wait(s) in %s (mask 0x%08x, %s:%d) that names it",
                    where().c_str(), tid(th).c_str(), lanes_desc(th->warp, c.arrived).c_str(), op_name(c.op), c.mask,
                    short_file(c.file), c.line));
  }

  // Completes a pending __activemask of warp `w` once every live lane has arrived at it or is
  // blocked elsewhere; releases its lanes except `caller`. Returns true when it completed.
  bool settle_active_mask(Warp& w, EmuThread* caller) {
    for (size_t i = 0; i < w.colls.size(); ++i) {
      Collective& c = w.colls[i];
      if (c.op != WarpOp::ActiveMask) continue;
      const unsigned settled = c.arrived | w.exited | w.at_barrier | w.in_coll;
      if ((settled & w.existing) != w.existing) return false;
      const unsigned arrived = c.arrived;
      const unsigned warp = (unsigned)(&w - warps.data());
      for (int l = 0; l < 32; ++l) {
        if (!(arrived >> l & 1)) continue;
        EmuThread& t = threads[warp * 32 + l];
        t.result = arrived;
        if (&t != caller) {
          t.state = TState::Runnable;
          next.push_back(&t);
        }
      }
      w.in_coll &= ~arrived;
      w.colls.erase(w.colls.begin() + i);
      return true;
    }
    return false;
  }

  std::string first_at_barrier() const {
    for (unsigned i = 0; i < n; ++i)
      if (threads[i].state == TState::AtBarrier) return tid(&threads[i]);
    return "none";
  }
  std::string first_exited() const {
    for (unsigned i = 0; i < n; ++i)
      if (threads[i].state == TState::Exited) return tid(&threads[i]);
    return "none";
  }

  // Switches from the current fiber to the scheduler; returns when the scheduler resumes it.
  void suspend(EmuThread* th) {
    transfer_t t = jump_fcontext(sched, (void*)kBlocked);
    sched = t.fctx;
    t_thread = th;
    if (aborting) throw AbortBlock{};
  }
};

// Never destroyed: the main thread's thread_locals are destroyed before static destructors and
// atexit handlers run, and work still queued at exit (a program that never waited for its last
// kernels) is flushed from those (cudaFree in a destructor, the library's exit handler), as a real
// driver completes it. One executor per host thread that ran a kernel.
Executor& executor() {
  static thread_local Executor* ex = new Executor;
  if (!t_exec) t_exec = ex;
  return *ex;
}

// The runner fiber: starts not-yet-started threads of the current round until the next entry
// is a suspended thread (or the round ends), then parks itself as idle.
void runner_entry(transfer_t t) {
  Executor* ex = t_exec;
  ex->sched = t.fctx;
  for (;;) {
    if (!ex->aborting && ex->pos < ex->round.size() && ex->round[ex->pos]->state == TState::NotStarted) {
      EmuThread* th = ex->round[ex->pos++];
      th->state = TState::Running;
      ex->running = th;
      t_thread = th;
      try {
        ex->g->run_thread(ex->g->args);
      } catch (AbortBlock&) {
      } catch (std::exception& e) {
        ex->fail(cudaErrorLaunchFailure,
                 format("%s %s threw a C++ exception: %s", ex->where().c_str(), Executor::tid(th).c_str(), e.what()));
      } catch (...) {
        ex->fail(cudaErrorLaunchFailure,
                 format("%s %s threw a C++ exception", ex->where().c_str(), Executor::tid(th).c_str()));
      }
      t_thread = nullptr;
      ex->on_exit(th);
      continue;
    }
    transfer_t back = jump_fcontext(ex->sched, (void*)kIdle);
    ex->sched = back.fctx;
  }
}

EmuThread* self(const char* what) {
  ThreadCoords* t = t_thread;
  if (!t) not_in_kernel(what);
  return static_cast<EmuThread*>(t);
}

// --- function attributes ---------------------------------------------------------------------
std::mutex g_attr_mutex;
std::unordered_map<const void*, int>& max_dyn_attr() {
  static std::unordered_map<const void*, int> m;
  return m;
}

}  // namespace

// --- entry points used by kernel.hpp -------------------------------------------------------------

}  // namespace detail

const char* current_kernel_position() {
  using namespace detail;
  Executor* ex = t_exec;
  if (!ex || !ex->g) return "";
  const ThreadCoords* t = t_thread;
  if (t)
    std::snprintf(ex->position, sizeof ex->position, "block (%u,%u,%u) thread (%u,%u,%u)", ex->block_idx.x,
                  ex->block_idx.y, ex->block_idx.z, t->thread_idx.x, t->thread_idx.y, t->thread_idx.z);
  else
    std::snprintf(ex->position, sizeof ex->position, "block (%u,%u,%u)", ex->block_idx.x, ex->block_idx.y,
                  ex->block_idx.z);
  return ex->position;
}

const char* describe_executor_address(const void* addr) {
  using namespace detail;
  Executor* ex = t_exec;
  if (!ex) return nullptr;
  const char* a = static_cast<const char*>(addr);
  const size_t pg = Executor::page();
  for (const Runner* r : ex->all_runners) {
    if (a >= r->stack_lo - pg && a < r->stack_lo) {
      std::snprintf(ex->address_note, sizeof ex->address_note,
                    "is in the guard page of an emulated GPU thread's %zu KB stack (stack overflow: deep recursion "
                    "or large local arrays; raise CUDL_EMU_STACK_KB)",
                    r->stack_size / 1024);
      return ex->address_note;
    }
  }
  if (ex->dyn_map && a >= ex->dyn_map + ex->dyn_capacity && a < ex->dyn_map + ex->dyn_map_bytes) {
    std::snprintf(ex->address_note, sizeof ex->address_note,
                  "is %zu bytes past the end of the block's %zu bytes of dynamic shared memory",
                  (size_t)(a - (static_cast<const char*>(ex->dynamic_shared) + (ex->g ? ex->g->shared_bytes : 0))),
                  ex->g ? ex->g->shared_bytes : (size_t)0);
    return ex->address_note;
  }
  return nullptr;
}

namespace detail {

void not_in_kernel(const char* what) {
  std::fprintf(stderr, "cudl-emu: %s used outside a kernel (device-only built-in called from host code)\n", what);
  std::abort();
}

int block_sync(int kind, int predicate, const char* file, int line) {
  EmuThread* th = self(sync_name(kind));
  Executor& ex = *t_exec;
  if (ex.exited > 0)
    ex.fail_throw(cudaErrorLaunchFailure,
                  format("barrier divergence in %s: %s reached %s (%s:%d) but %s has already exited, so the "
                         "barrier can never complete",
                         ex.where().c_str(), Executor::tid(th).c_str(), sync_name(kind), short_file(file), line,
                         ex.first_exited().c_str()));
  if (ex.at_barrier == 0) {
    ex.bar_file = file;
    ex.bar_line = line;
    ex.bar_kind = kind;
  } else if (!same_site(file, line, ex.bar_file, ex.bar_line)) {
    ex.fail_throw(cudaErrorLaunchFailure,
                  format("barrier divergence in %s: %s waits at %s (%s:%d) while %s waits at %s (%s:%d)",
                         ex.where().c_str(), Executor::tid(th).c_str(), sync_name(kind), short_file(file), line,
                         ex.first_at_barrier().c_str(), sync_name(ex.bar_kind), short_file(ex.bar_file), ex.bar_line));
  }
  Warp& w = ex.warps[th->warp];
  const unsigned bit = 1u << th->lane;
  for (const Collective& c : w.colls)
    if (c.mask & bit)
      ex.fail_throw(
          cudaErrorLaunchFailure,
          format("deadlock in %s: %s waits at %s (%s:%d) while %s wait(s) for it in %s (mask 0x%08x, %s:%d)",
                 ex.where().c_str(), Executor::tid(th).c_str(), sync_name(kind), short_file(file), line,
                 ex.lanes_desc(th->warp, c.arrived).c_str(), op_name(c.op), c.mask, short_file(c.file), c.line));
  th->pred = predicate;
  th->state = TState::AtBarrier;
  w.at_barrier |= bit;
  ++ex.at_barrier;
  ex.settle_active_mask(w, nullptr);
  ex.suspend(th);
  return (int)(int64_t)th->result;
}

namespace {

// The lane a shuffle of thread t reads (its own lane when the source is out of its segment).
int shfl_source_lane(WarpOp op, const EmuThread* t) {
  const int lane = (int)t->lane;
  const int segmask = 32 - t->width;
  const int clamp = op == WarpOp::ShflUp ? 0 : 0x1f;
  const int max_lane = (lane & segmask) | (clamp & ~segmask);
  const int min_lane = lane & segmask;
  const int b = t->param;
  int j = lane;
  bool ok = false;
  switch (op) {
    case WarpOp::ShflUp:
      j = lane - b;
      ok = j >= max_lane;
      break;
    case WarpOp::ShflDown:
      j = lane + b;
      ok = j <= max_lane;
      break;
    case WarpOp::ShflXor:
      j = lane ^ b;
      ok = j <= max_lane;
      break;
    default:
      j = min_lane | (b & 0x1f & ~segmask);
      ok = j <= max_lane;
      break;
  }
  if (!ok) j = lane;
  return j;
}

uint64_t shfl_source(WarpOp op, const EmuThread* t, unsigned participating, const Executor& ex) {
  const int j = shfl_source_lane(op, t);
  if (j < 0 || j > 31 || !(participating >> j & 1)) return ~0ull;  // checked in complete(); kept as poison
  return ex.threads[t->warp * 32 + j].value;
}

void complete(Executor& ex, Warp& w, const Collective& c, unsigned warp) {
  const unsigned arrived = c.arrived;
  EmuThread* base = &ex.threads[warp * 32];
  if (c.op == WarpOp::ShflIdx || c.op == WarpOp::ShflUp || c.op == WarpOp::ShflDown || c.op == WarpOp::ShflXor)
    for (int l = 0; l < 32; ++l) {
      if (!(arrived >> l & 1)) continue;
      const int src = shfl_source_lane(c.op, &base[l]);
      if (src == l || (arrived >> src & 1)) continue;
      // The GPU returns an undefined value; a lane reading a thread outside the mask is a bug.
      const bool exists = w.existing >> src & 1;
      ex.fail_throw(cudaErrorLaunchFailure,
                    format("invalid warp intrinsic in %s: %s calls %s (%s:%d) with mask 0x%08x and reads lane %d, "
                           "which %s",
                           ex.where().c_str(), Executor::tid(&base[l]).c_str(), op_name(c.op), short_file(c.file),
                           c.line, c.mask, src,
                           exists ? "is not in the mask (has not arrived)"
                                  : format("does not exist (the block has %u threads)", ex.n).c_str()));
    }
  uint64_t common = 0;
  switch (c.op) {
    case WarpOp::Ballot:
    case WarpOp::Any:
    case WarpOp::All: {
      unsigned ballot = 0;
      for (int l = 0; l < 32; ++l)
        if ((arrived >> l & 1) && base[l].value) ballot |= 1u << l;
      common = c.op == WarpOp::Ballot ? ballot : c.op == WarpOp::Any ? (ballot != 0) : (ballot == arrived);
      break;
    }
    case WarpOp::ReduceAdd:
    case WarpOp::ReduceMin:
    case WarpOp::ReduceMax:
    case WarpOp::ReduceMinS:
    case WarpOp::ReduceMaxS:
    case WarpOp::ReduceAnd:
    case WarpOp::ReduceOr:
    case WarpOp::ReduceXor: {
      bool first = true;
      uint32_t acc = 0;
      for (int l = 0; l < 32; ++l) {
        if (!(arrived >> l & 1)) continue;
        const uint32_t v = (uint32_t)base[l].value;
        if (first) {
          acc = v;
          first = false;
          continue;
        }
        switch (c.op) {
          case WarpOp::ReduceAdd:
            acc += v;
            break;
          case WarpOp::ReduceMin:
            acc = std::min(acc, v);
            break;
          case WarpOp::ReduceMax:
            acc = std::max(acc, v);
            break;
          case WarpOp::ReduceMinS:
            acc = (uint32_t)std::min((int32_t)acc, (int32_t)v);
            break;
          case WarpOp::ReduceMaxS:
            acc = (uint32_t)std::max((int32_t)acc, (int32_t)v);
            break;
          case WarpOp::ReduceAnd:
            acc &= v;
            break;
          case WarpOp::ReduceOr:
            acc |= v;
            break;
          default:
            acc ^= v;
            break;
        }
      }
      common = acc;
      break;
    }
    default:
      break;
  }
  for (int l = 0; l < 32; ++l) {
    if (!(arrived >> l & 1)) continue;
    EmuThread& t = base[l];
    switch (c.op) {
      case WarpOp::ShflIdx:
      case WarpOp::ShflUp:
      case WarpOp::ShflDown:
      case WarpOp::ShflXor:
        t.result = shfl_source(c.op, &t, arrived, ex);
        break;
      case WarpOp::MatchAny: {
        unsigned m = 0;
        for (int k = 0; k < 32; ++k)
          if ((arrived >> k & 1) && base[k].value == t.value) m |= 1u << k;
        t.result = m;
        break;
      }
      default:
        t.result = common;
        break;
    }
  }
  w.in_coll &= ~arrived;
}

}  // namespace

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int param, int width, const char* file, int line) {
  EmuThread* th = self(op_name(op));
  Executor& ex = *t_exec;
  Warp& w = ex.warps[th->warp];
  const unsigned bit = 1u << th->lane;
  if (op == WarpOp::ActiveMask) {
    Collective* am = nullptr;
    for (Collective& k : w.colls)
      if (k.op == WarpOp::ActiveMask) am = &k;
    if (!am) {
      w.colls.push_back(Collective{0, 0, op, file, line});
      am = &w.colls.back();
    }
    am->arrived |= bit;
    w.in_coll |= bit;
    if (ex.settle_active_mask(w, th)) return th->result;
    th->state = TState::InWarp;
    ex.suspend(th);
    return th->result;
  }
  if (!(mask & bit))
    ex.fail_throw(
        cudaErrorLaunchFailure,
        format("invalid warp intrinsic in %s: %s calls %s (%s:%d) with mask 0x%08x that does not include "
               "its own lane %u",
               ex.where().c_str(), Executor::tid(th).c_str(), op_name(op), short_file(file), line, mask, th->lane));
  if (width < 1 || width > 32 || (width & (width - 1)))
    ex.fail_throw(cudaErrorLaunchFailure,
                  format("invalid warp intrinsic in %s: %s calls %s (%s:%d) with width %d "
                         "(must be a power of two up to 32)",
                         ex.where().c_str(), Executor::tid(th).c_str(), op_name(op), short_file(file), line, width));
  if (mask & ~w.existing)
    ex.fail_throw(cudaErrorLaunchFailure,
                  format("invalid warp intrinsic in %s: %s calls %s (%s:%d) with mask 0x%08x naming lane(s) 0x%08x "
                         "that do not exist (the block has %u threads; this warp has lanes 0x%08x)",
                         ex.where().c_str(), Executor::tid(th).c_str(), op_name(op), short_file(file), line, mask,
                         mask & ~w.existing, ex.n, w.existing));
  const unsigned named = mask & w.existing;
  if (named & w.exited)
    ex.fail_throw(cudaErrorLaunchFailure,
                  format("warp divergence in %s: %s calls %s (%s:%d) with mask 0x%08x naming lane(s) that have "
                         "exited: %s",
                         ex.where().c_str(), Executor::tid(th).c_str(), op_name(op), short_file(file), line, mask,
                         ex.lanes_desc(th->warp, named & w.exited).c_str()));
  if (named & w.at_barrier)
    ex.fail_throw(cudaErrorLaunchFailure,
                  format("deadlock in %s: %s calls %s (%s:%d) with mask 0x%08x naming %s, which wait(s) at %s "
                         "(%s:%d)",
                         ex.where().c_str(), Executor::tid(th).c_str(), op_name(op), short_file(file), line, mask,
                         ex.lanes_desc(th->warp, named & w.at_barrier).c_str(), sync_name(ex.bar_kind),
                         short_file(ex.bar_file), ex.bar_line));
  Collective* c = nullptr;
  for (Collective& k : w.colls) {
    if (k.op == WarpOp::ActiveMask) continue;  // its lanes come back once it completes
    if ((k.mask & bit) || (k.arrived & named)) {
      if (k.mask != mask || k.op != op)
        ex.fail_throw(
            cudaErrorLaunchFailure,
            format("warp divergence in %s: %s calls %s (mask 0x%08x, %s:%d) while %s wait(s) in %s (mask "
                   "0x%08x, %s:%d)",
                   ex.where().c_str(), Executor::tid(th).c_str(), op_name(op), mask, short_file(file), line,
                   ex.lanes_desc(th->warp, k.arrived).c_str(), op_name(k.op), k.mask, short_file(k.file), k.line));
      c = &k;
      break;
    }
  }
  if (!c) {
    w.colls.push_back(Collective{mask, 0, op, file, line});
    c = &w.colls.back();
  }
  th->value = value;
  th->param = param;
  th->width = width;
  c->arrived |= bit;
  w.in_coll |= bit;
  if (c->arrived == named) {
    complete(ex, w, *c, th->warp);
    const unsigned others = c->arrived & ~bit;
    for (int l = 0; l < 32; ++l)
      if (others >> l & 1) {
        EmuThread& o = ex.threads[th->warp * 32 + l];
        o.state = TState::Runnable;
        ex.next.push_back(&o);
      }
    w.colls.erase(w.colls.begin() + (c - w.colls.data()));
    return th->result;
  }
  th->state = TState::InWarp;
  ex.settle_active_mask(w, nullptr);
  ex.suspend(th);
  return th->result;
}

void trap(const char* file, int line) {
  EmuThread* th = self("__trap");
  Executor& ex = *t_exec;
  ex.fail_throw(cudaErrorLaunchFailure, format("__trap() in %s %s (%s:%d)", ex.where().c_str(),
                                               Executor::tid(th).c_str(), short_file(file), line));
}

// The max threads per block a kernel was declared with (__launch_bounds__, see kernel.hpp): the
// number of single-byte NOPs at its entry, after an optional endbr64; 0 when it has none.
unsigned declared_launch_bound(const void* kernel) {
  const unsigned char* b = static_cast<const unsigned char*>(kernel);
  if (!b) return 0;
  if (b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && b[3] == 0xfa) b += 4;
  unsigned n = 0;
  while (n <= (unsigned)kMaxThreadsPerBlock && b[n] == 0x90) ++n;
  return n;
}

bool check_param_bytes(const char* name, size_t param_bytes) {
  // CUDA 12.1+ passes up to 32764 bytes of kernel parameters on Volta and newer (the emulated
  // device is sm_90); older toolkits 4096. nvcc rejects a larger block at compile time.
  const size_t limit = CUDART_VERSION >= 12010 ? 32764 : 4096;
  if (param_bytes <= limit) return true;
  record_error(cudaErrorInvalidValue,
               format("cudl-emu: kernel '%s' has a %zu-byte parameter block, over the %zu-byte limit for kernel "
                      "parameters (nvcc: \"Formal parameter space overflowed\")",
                      name, param_bytes, limit),
               false);
  return false;
}

bool check_launch_config(const void* kernel, const char* name, dim3 grid, dim3 block, size_t shared_bytes) {
  const uint64_t threads = (uint64_t)block.x * block.y * block.z;
  std::string why;
  if (block.x == 0 || block.y == 0 || block.z == 0)
    why = "a block dimension is 0";
  else if (block.x > 1024 || block.y > 1024 || block.z > 64)
    why = "block dimensions exceed (1024, 1024, 64)";
  else if (threads > (uint64_t)kMaxThreadsPerBlock)
    why = format("%" PRIu64 " threads per block (max %d)", threads, kMaxThreadsPerBlock);
  else if (grid.x == 0 || grid.y == 0 || grid.z == 0)
    why = "a grid dimension is 0";
  else if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    why = "grid dimensions exceed (2^31-1, 65535, 65535)";
  if (!why.empty()) {
    record_error(cudaErrorInvalidConfiguration,
                 format("cudl-emu: invalid launch configuration of kernel '%s': grid (%u,%u,%u) block (%u,%u,%u): %s",
                        name, grid.x, grid.y, grid.z, block.x, block.y, block.z, why.c_str()),
                 false);
    return false;
  }
  if (const unsigned bound = declared_launch_bound(kernel); bound && threads > bound) {
    // The compiler sized the kernel's registers for `bound` threads: "too many resources requested".
    record_error(cudaErrorLaunchOutOfResources,
                 format("cudl-emu: too many resources requested for launch of kernel '%s': block (%u,%u,%u) has "
                        "%" PRIu64 " threads but the kernel is declared __launch_bounds__(%u)",
                        name, block.x, block.y, block.z, threads, bound),
                 false);
    return false;
  }
  if (shared_bytes > kDefaultMaxDynamicShared) {
    size_t limit = kDefaultMaxDynamicShared;
    {
      std::lock_guard<std::mutex> lock(g_attr_mutex);
      auto it = max_dyn_attr().find(kernel);
      if (it != max_dyn_attr().end()) limit = (size_t)it->second;
    }
    if (shared_bytes > limit) {
      record_error(cudaErrorInvalidValue,
                   format("cudl-emu: kernel '%s' launched with %zu bytes of dynamic shared memory, over its limit of "
                          "%zu bytes (48 KB unless raised with cudaFuncSetAttribute("
                          "cudaFuncAttributeMaxDynamicSharedMemorySize), at most %zu)",
                          name, shared_bytes, limit, kOptinMaxShared),
                   false);
      return false;
    }
  }
  return true;
}

void run_grid(const GridLaunch& g) {
  Executor& ex = executor();
  if (ex.g) {
    std::fprintf(stderr, "cudl-emu: kernel '%s' launched from inside kernel '%s' (not supported)\n", g.name,
                 ex.g->name);
    std::abort();
  }
  ex.g = &g;
  ex.sched_cfg = schedule();
  // Shuffle permutations depend on the seed and on what is launched (kernel name, shape), not on
  // how many launches came before: a failing test reproduces when run alone.
  {
    uint64_t h = 1469598103934665603ull;
    for (const char* c = g.name; *c; ++c) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    for (unsigned v : {g.grid.x, g.grid.y, g.grid.z, g.block.x, g.block.y, g.block.z}) h = mix(h, v);
    ex.launch_no = h;
  }
  ex.block_dim = g.block;
  ex.grid_dim = g.grid;
  ex.n = g.block.x * g.block.y * g.block.z;
  ex.threads.resize(ex.n);
  ex.warps.resize((ex.n + 31) / 32);
  for (unsigned i = 0; i < ex.n; ++i) {
    EmuThread& t = ex.threads[i];
    t.linear = i;
    t.warp = i / 32;
    t.lane = i % 32;
    t.thread_idx = uint3{i % g.block.x, (i / g.block.x) % g.block.y, i / (g.block.x * g.block.y)};
  }
  for (size_t w = 0; w < ex.warps.size(); ++w) {
    const unsigned lanes = std::min<unsigned>(32, ex.n - (unsigned)w * 32);
    ex.warps[w].existing = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
  }
  ex.aborting = false;
  ex.err = cudaSuccess;
  ex.err_msg.clear();
  ex.block_barriers = 0;
  ex.dynamic_shared = ex.dynamic_buffer(g.shared_bytes);
  BlockCoords* prev_block = t_block;
  t_block = &ex;
  WorkScope scope(g.name);

  const uint64_t nblocks = (uint64_t)g.grid.x * g.grid.y * g.grid.z;
  // Block order follows the schedule too: forward, reverse, or a seeded affine permutation.
  uint64_t mul = 1, add = 0;
  if (ex.sched_cfg.kind == Schedule::Shuffle && nblocks > 1) {
    Rng r{mix(ex.sched_cfg.seed, ex.launch_no) ^ 0x5bd1e995};
    auto gcd = [](uint64_t a, uint64_t b) {
      while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
      }
      return a;
    };
    do mul = r.next() % nblocks | 1;
    while (gcd(mul, nblocks) != 1);
    add = r.next() % nblocks;
  }
  uint64_t done_blocks = 0;
  for (uint64_t k = 0; k < nblocks && !ex.aborting; ++k) {
    uint64_t b = k;
    if (ex.sched_cfg.kind == Schedule::Reverse)
      b = nblocks - 1 - k;
    else if (ex.sched_cfg.kind == Schedule::Shuffle)
      b = (uint64_t)(((unsigned __int128)mul * k + add) % nblocks);
    ex.block_idx = uint3{(unsigned)(b % g.grid.x), (unsigned)((b / g.grid.x) % g.grid.y),
                         (unsigned)(b / ((uint64_t)g.grid.x * g.grid.y))};
    if (g.shared_bytes) std::memset(ex.dynamic_shared, 0xff, g.shared_bytes);
    ex.run_block();
    ++done_blocks;
  }
  t_block = prev_block;
  ex.g = nullptr;
  count_kernel(done_blocks * ex.n, ex.block_barriers);
  if (ex.err != cudaSuccess) record_error(ex.err, ex.err_msg, true);
}

}  // namespace detail
}  // namespace cudl_emu

// --- device-side assert ------------------------------------------------------------------------
// A failed assert() inside a kernel records a sticky cudaErrorAssert naming the kernel, block and
// thread, and abandons the grid (as "device-side assert triggered"); on the host it aborts as glibc does.
extern "C" void __assert_fail(const char* expr, const char* file, unsigned line, const char* func) noexcept {
  using namespace cudl_emu::detail;
  ThreadCoords* tc = t_thread;
  if (tc && t_exec && t_exec->g) {
    Executor& ex = *t_exec;
    EmuThread* th = static_cast<EmuThread*>(tc);
    std::fprintf(stderr, "%s:%u: %s: block: [%u,%u,%u], thread: [%u,%u,%u] Assertion `%s` failed.\n", file, line, func,
                 ex.block_idx.x, ex.block_idx.y, ex.block_idx.z, th->thread_idx.x, th->thread_idx.y, th->thread_idx.z,
                 expr);
    ex.fail(cudaErrorAssert, format("device-side assert triggered in %s %s: %s:%u: Assertion `%s` failed",
                                    ex.where().c_str(), Executor::tid(th).c_str(), short_file(file), line, expr));
    t_thread = nullptr;
    th->state = TState::Exited;
    ++ex.exited;
    ex.warps[th->warp].exited |= 1u << th->lane;
    jump_fcontext(ex.sched, (void*)kDead);  // never resumed: the runner's stack is recycled
    std::abort();
  }
  std::fprintf(stderr, "%s: %s:%u: %s: Assertion `%s' failed.\n", program_invocation_short_name, file, line, func,
               expr);
  std::abort();
}

// --- misaligned accesses ------------------------------------------------------------------------
// Emulated kernels are compiled with -fsanitize=alignment (tests/emu/CMakeLists.txt, emucc): every
// load and store through a pointer is checked against its type's alignment (16 for float4, uint4,
// int4, double2; 8 for float2; 4 for float, uchar4; ...). The GPU requires the same natural
// alignment, so inside a kernel a misaligned access records a sticky cudaErrorMisalignedAddress
// ("misaligned address") naming the kernel, thread, type and source line, and abandons the grid. No
// sanitizer runtime is linked: these handlers are the only ones. Outside a kernel it is host UB.
namespace {
struct UbsanLocation {
  const char* file;
  uint32_t line, column;
};
struct UbsanType {
  uint16_t kind, info;
  char name[1];
};
struct UbsanMismatch {
  UbsanLocation loc;
  const UbsanType* type;
  unsigned char log_alignment;
  unsigned char check_kind;
};
const char* ubsan_access(unsigned char kind) {
  static const char* const names[] = {"load of",       "store to",          "reference binding to",
                                      "member access within", "member call on", "constructor call on",
                                      "downcast of",   "downcast of",       "upcast of",
                                      "cast to virtual base of", "_Nonnull binding to", "dynamic operation on"};
  return kind < sizeof names / sizeof names[0] ? names[kind] : "access to";
}
[[noreturn]] void misaligned(const UbsanMismatch* d, uintptr_t ptr) {
  using namespace cudl_emu::detail;
  const size_t align = size_t(1) << d->log_alignment;
  const std::string what = format("%s misaligned address 0x%" PRIxPTR " for type %s, which requires %zu-byte alignment (%s:%u)",
                                  ubsan_access(d->check_kind), ptr, d->type ? d->type->name : "?", align,
                                  short_file(d->loc.file), d->loc.line);
  ThreadCoords* tc = t_thread;
  if (tc && t_exec && t_exec->g) {
    Executor& ex = *t_exec;
    EmuThread* th = static_cast<EmuThread*>(tc);
    ex.fail(cudaErrorMisalignedAddress,
            format("misaligned address in %s %s: %s", ex.where().c_str(), Executor::tid(th).c_str(), what.c_str()));
    t_thread = nullptr;
    th->state = TState::Exited;
    ++ex.exited;
    ex.warps[th->warp].exited |= 1u << th->lane;
    jump_fcontext(ex.sched, (void*)kDead);  // as a device assert: the runner's stack is recycled
    std::abort();
  }
  std::fprintf(stderr, "cudl-emu: host code: %s\n", what.c_str());
  std::abort();
}
}  // namespace

extern "C" void __ubsan_handle_type_mismatch_v1(void* data, uintptr_t ptr) {
  using cudl_emu::detail::short_file;
  const auto* d = static_cast<const UbsanMismatch*>(data);
  if (ptr == 0) {  // only -fsanitize=null reports these; keep the GPU's answer: an illegal address
    std::fprintf(stderr, "cudl-emu: null pointer access at %s:%u\n", short_file(d->loc.file), d->loc.line);
    std::abort();
  }
  misaligned(d, ptr);
}
extern "C" void __ubsan_handle_type_mismatch_v1_abort(void* data, uintptr_t ptr) {
  __ubsan_handle_type_mismatch_v1(data, ptr);
}

// --- CUDA runtime functions about kernels ------------------------------------------------------
extern "C" {

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  using namespace cudl_emu::detail;
  if (!func) {
    cudl_emu::record_error(cudaErrorInvalidDeviceFunction, "cudl-emu: cudaFuncSetAttribute: func is null", false);
    return cudaErrorInvalidDeviceFunction;
  }
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || (size_t)value > kOptinMaxShared) {
      cudl_emu::record_error(
          cudaErrorInvalidValue,
          format("cudl-emu: cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize, %d): over the "
                 "device's %zu-byte opt-in limit",
                 value, kOptinMaxShared),
          false);
      return cudaErrorInvalidValue;
    }
    std::lock_guard<std::mutex> lock(g_attr_mutex);
    max_dyn_attr()[func] = value;
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {
    if (value < -1 || value > 100) {
      cudl_emu::record_error(cudaErrorInvalidValue, "cudl-emu: cudaFuncSetAttribute: carveout not in [-1, 100]", false);
      return cudaErrorInvalidValue;
    }
    return cudaSuccess;
  }
  return cudaSuccess;  // other attributes (cluster shapes, scheduling policy) do not change emulation
}

cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes* attr, const void* func) {
  using namespace cudl_emu::detail;
  if (!attr || !func) {
    cudl_emu::record_error(cudaErrorInvalidValue, "cudl-emu: cudaFuncGetAttributes: null argument", false);
    return cudaErrorInvalidValue;
  }
  std::memset(attr, 0, sizeof *attr);
  const unsigned bound = cudl_emu::detail::declared_launch_bound(func);
  attr->maxThreadsPerBlock = bound ? (int)bound : kMaxThreadsPerBlock;
  attr->numRegs = 32;
  attr->ptxVersion = 90;
  attr->binaryVersion = 90;
  attr->maxDynamicSharedSizeBytes = (int)kDefaultMaxDynamicShared;
  attr->preferredShmemCarveout = -1;
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  auto it = max_dyn_attr().find(func);
  if (it != max_dyn_attr().end()) attr->maxDynamicSharedSizeBytes = it->second;
  return cudaSuccess;
}

cudaError_t cudaFuncSetCacheConfig(const void* func, enum cudaFuncCache) {
  return func ? cudaSuccess : cudaErrorInvalidDeviceFunction;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* num_blocks, const void* func, int block_size,
                                                                   size_t dynamic_smem, unsigned int) {
  if (!num_blocks || !func || block_size <= 0) return cudaErrorInvalidValue;
  // H100: 2048 threads, 32 blocks and 228 KB of shared memory per SM (1 KB reserved per block).
  int by_threads = 2048 / (((block_size + 31) / 32) * 32);
  int by_smem = dynamic_smem ? (int)((228 * 1024) / (dynamic_smem + 1024)) : 32;
  *num_blocks = std::max(0, std::min({by_threads, by_smem, 32}));
  return cudaSuccess;
}

cudaError_t cudaOccupancyAvailableDynamicSMemPerBlock(size_t* bytes, const void* func, int num_blocks, int block_size) {
  if (!bytes || !func || num_blocks <= 0 || block_size <= 0) return cudaErrorInvalidValue;
  size_t per = (228 * 1024) / (size_t)num_blocks;
  *bytes = per > 1024 ? std::min<size_t>(per - 1024, cudl_emu::detail::kOptinMaxShared) : 0;
  return cudaSuccess;
}

// __constant__/__device__ variables are host variables under the emulator: symbol copies are
// queued memcpys (the synchronous forms on the legacy stream, then flushed).
static cudaError_t symbol_copy(void* dst, const void* src, size_t count, cudaMemcpyKind kind, bool to_symbol,
                               cudaStream_t stream, bool sync, const char* api) {
  if (cudaError_t e = cudl_emu::sticky_error()) return e;
  if ((!dst || !src) && count) {
    cudl_emu::record_error(cudaErrorInvalidSymbol, std::string("cudl-emu: ") + api + ": null symbol or pointer", false);
    return cudaErrorInvalidSymbol;
  }
  const bool ok =
      kind == cudaMemcpyDefault || (to_symbol ? (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice)
                                              : (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice));
  if (!ok) {
    cudl_emu::record_error(cudaErrorInvalidMemcpyDirection,
                           std::string("cudl-emu: ") + api + ": invalid copy direction for a symbol", false);
    return cudaErrorInvalidMemcpyDirection;
  }
  if (count == 0) return cudaSuccess;
  if (cudaError_t e =
          cudl_emu::enqueue(stream, cudl_emu::WorkKind::Copy, api, [dst, src, count] { std::memcpy(dst, src, count); }))
    return e;
  return sync ? cudl_emu::flush(stream) : cudaSuccess;
}

cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count, size_t offset,
                               enum cudaMemcpyKind kind) {
  return symbol_copy(symbol ? (char*)symbol + offset : nullptr, src, count, kind, true, nullptr, true,
                     "cudaMemcpyToSymbol");
}
cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t count, size_t offset, enum cudaMemcpyKind kind) {
  return symbol_copy(dst, symbol ? (const char*)symbol + offset : nullptr, count, kind, false, nullptr, true,
                     "cudaMemcpyFromSymbol");
}
cudaError_t cudaMemcpyToSymbolAsync(const void* symbol, const void* src, size_t count, size_t offset,
                                    enum cudaMemcpyKind kind, cudaStream_t stream) {
  return symbol_copy(symbol ? (char*)symbol + offset : nullptr, src, count, kind, true, stream, false,
                     "cudaMemcpyToSymbolAsync");
}
cudaError_t cudaMemcpyFromSymbolAsync(void* dst, const void* symbol, size_t count, size_t offset,
                                      enum cudaMemcpyKind kind, cudaStream_t stream) {
  return symbol_copy(dst, symbol ? (const char*)symbol + offset : nullptr, count, kind, false, stream, false,
                     "cudaMemcpyFromSymbolAsync");
}

}  // extern "C"
