// tests/emu/src/memory.cpp — emulated device memory: guard-paged allocations with NaN fill, slack
// canaries and a use-after-free quarantine, the fault reporter, pinned host memory, memcpy/memset.
#include <cuda_runtime.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "emu/runtime.hpp"
#include "internal.hpp"

namespace cudl_emu {
namespace {

constexpr unsigned char kFill = 0xFF;    // fresh device memory: NaN as f32, f16 and bf16
constexpr unsigned char kCanary = 0xCD;  // slack bytes between an allocation and its guard pages
constexpr size_t kAlign = 16;
constexpr size_t kTotalDeviceBytes = 80ull << 30;
constexpr size_t kQuarantineMaxCount = 4096;         // freed ranges kept PROT_NONE before reuse
constexpr size_t kQuarantineMaxBytes = 64ull << 30;  // of address space (pages are released)

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

struct Alloc {
  uint64_t id = 0;
  int device = 0;        // the device current at allocation
  char* user = nullptr;  // what cudaMalloc returned
  size_t size = 0;       // requested bytes
  size_t rounded = 0;    // size rounded up to kAlign; user + rounded touches the trailing guard page
  char* map = nullptr;   // [guard page][data pages][guard page]
  size_t map_size = 0;
  bool freed = false;
  bool free_pending = false;  // cudaFreeAsync queued
  bool graph_owned = false;   // allocated by a captured cudaMallocAsync: lives as long as the process
  size_t live_index = 0;      // position in Mem::live while not freed
  const char* api = "cudaMalloc";
  char freed_by[96] = {0};  // API or kernel that freed it
  char* data() const { return map + page_size(); }
  size_t data_size() const { return map_size - 2 * page_size(); }
};

enum class HostKind { Pinned, Registered };
struct HostRange {
  size_t size;
  HostKind kind;
};

struct Mem {
  std::mutex mu;
  std::map<uintptr_t, Alloc*> by_map;  // keyed by map start; live, quarantined and graph-owned
  std::vector<Alloc*> live;            // not freed: what the canary checks walk
  std::deque<Alloc*> quarantine;
  size_t quarantine_bytes = 0;
  std::map<uintptr_t, HostRange> host;  // pinned allocations and registered ranges
  uint64_t next_id = 1;
  size_t live_bytes[kMaxDevices] = {};  // per device
};
Mem& mem() {
  static Mem* m = new Mem;  // never destroyed: the fault handler may run during exit
  return *m;
}

// Allocation whose mapping (guard pages included) contains p. Caller holds mem().mu (or is the
// fault handler).
Alloc* find_alloc(uintptr_t p) {
  auto& m = mem().by_map;
  auto it = m.upper_bound(p);
  if (it == m.begin()) return nullptr;
  --it;
  Alloc* a = it->second;
  return p < reinterpret_cast<uintptr_t>(a->map) + a->map_size ? a : nullptr;
}

const HostRange* find_host(uintptr_t p, uintptr_t* start) {
  auto& m = mem().host;
  auto it = m.upper_bound(p);
  if (it == m.begin()) return nullptr;
  --it;
  if (p >= it->first + std::max<size_t>(it->second.size, 1)) return nullptr;
  if (start) *start = it->first;
  return &it->second;
}

std::string alloc_name(const Alloc& a) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%sdevice allocation #%" PRIu64 " (%p, %zu bytes, from %s)", a.freed ? "freed " : "",
                a.id, static_cast<void*>(a.user), a.size, a.api);
  if (device_count() > 1) return std::string(buf) + " on device " + std::to_string(a.device);
  return buf;
}

// Where in or next to allocation a the byte range [p, p+n) lies, for error details; empty if it
// lies inside the live allocation.
std::string range_problem(const Alloc& a, uintptr_t p, size_t n) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(a.user);
  char buf[128];
  if (a.freed) return "lies in " + alloc_name(a) + ", freed by " + a.freed_by;
  if (p < u) {
    std::snprintf(buf, sizeof buf, "starts %zu bytes before the start of ", static_cast<size_t>(u - p));
    return buf + alloc_name(a);
  }
  if (p + n > u + a.size) {
    std::snprintf(buf, sizeof buf, "runs %zu bytes past the end of ", static_cast<size_t>(p + n - (u + a.size)));
    return buf + alloc_name(a);
  }
  return {};
}

void fill_slack(Alloc& a) {
  std::memset(a.data(), kCanary, static_cast<size_t>(a.user - a.data()));
  std::memset(a.user + a.size, kCanary, a.rounded - a.size);
}

void add_live(Alloc* a) {
  a->live_index = mem().live.size();
  mem().live.push_back(a);
}
void remove_live(Alloc* a) {
  auto& v = mem().live;
  v[a->live_index] = v.back();
  v[a->live_index]->live_index = a->live_index;
  v.pop_back();
}

// Bytes of the leading slack checked after every kernel (all of it at syncs and frees).
constexpr size_t kQuickFrontCheck = 64;

// First corrupted slack byte of a (offset relative to the user pointer), or false.
bool slack_corrupted(const Alloc& a, ptrdiff_t* where, bool full = true) {
  const unsigned char* b = reinterpret_cast<const unsigned char*>(a.user + a.size);
  for (size_t i = 0; i < a.rounded - a.size; ++i)
    if (b[i] != kCanary) {
      *where = static_cast<ptrdiff_t>(a.size + i);
      return true;
    }
  const unsigned char* f = reinterpret_cast<const unsigned char*>(a.data());
  const size_t nf_all = static_cast<size_t>(a.user - a.data());
  const size_t nf = full ? nf_all : std::min(nf_all, kQuickFrontCheck);
  f += nf_all - nf;
  // Scan backwards from the user pointer: underflows are most likely just before it.
  size_t i = nf;
  while (i >= 8) {
    uint64_t w;
    std::memcpy(&w, f + i - 8, 8);
    if (w != 0xCDCDCDCDCDCDCDCDull) break;
    i -= 8;
  }
  while (i > 0) {
    if (f[i - 1] != kCanary) {
      *where = -static_cast<ptrdiff_t>(nf - (i - 1));
      return true;
    }
    --i;
  }
  return false;
}

[[noreturn]] void corrupted_report(const Alloc& a, ptrdiff_t where, const char* when) {
  char buf[512];
  if (where >= 0)
    std::snprintf(buf, sizeof buf,
                  "cudl emulator: out-of-bounds write (cudaErrorIllegalAddress) detected %s: the byte %td bytes past "
                  "the end of %s was overwritten\n",
                  when, where - static_cast<ptrdiff_t>(a.size), alloc_name(a).c_str());
  else
    std::snprintf(buf, sizeof buf,
                  "cudl emulator: out-of-bounds write (cudaErrorIllegalAddress) detected %s: the byte %td bytes before "
                  "the start of %s was overwritten\n",
                  when, -where, alloc_name(a).c_str());
  std::fputs(buf, stderr);
  std::fflush(stderr);
  std::abort();
}

// ---- fault handler -------------------------------------------------------------------------------

struct sigaction g_old_segv, g_old_bus;

void on_fault(int sig, siginfo_t* si, void* uctx) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(si->si_addr);
  const char* work = current_work();
  if (!work) work = detail::running_work();
  Mem& m = mem();
  const bool locked = m.mu.try_lock();  // best effort: we abort either way
  Alloc* a = find_alloc(addr);
  const char* executor_note = a ? nullptr : describe_executor_address(si->si_addr);
  const char* position = current_kernel_position();
  if (!a && !work && !executor_note) {  // not ours: let the previous handler / default action take it
    if (locked) m.mu.unlock();
    sigaction(sig, sig == SIGSEGV ? &g_old_segv : &g_old_bus, nullptr);
    return;
  }
  const char* access = "access";
#if defined(__x86_64__)
  const auto* uc = static_cast<const ucontext_t*>(uctx);
  access = (uc->uc_mcontext.gregs[REG_ERR] & 2) ? "write" : "read";
#endif
  char where[320];
  if (executor_note) {
    std::snprintf(where, sizeof where, "%s", executor_note);
  } else if (!a) {
    std::snprintf(where, sizeof where, "is not inside or next to any device allocation");
  } else {
    const uintptr_t u = reinterpret_cast<uintptr_t>(a->user);
    if (a->freed)
      std::snprintf(where, sizeof where, "is %zd bytes into %s, freed by %s (use after free)",
                    static_cast<ssize_t>(addr - u), alloc_name(*a).c_str(), a->freed_by);
    else if (addr < u)
      std::snprintf(where, sizeof where, "is %zu bytes before the start of %s", static_cast<size_t>(u - addr),
                    alloc_name(*a).c_str());
    else
      std::snprintf(where, sizeof where, "is %zu bytes past the end of %s", static_cast<size_t>(addr - (u + a->size)),
                    alloc_name(*a).c_str());
  }
  char pos[128] = "";
  if (position && *position) std::snprintf(pos, sizeof pos, " (%s)", position);
  char buf[768];
  std::snprintf(
      buf, sizeof buf, "cudl emulator: illegal memory access (cudaErrorIllegalAddress) %s%s%s%s: %s at address %p %s\n",
      work ? "in kernel '" : "in host code", work ? work : "", work ? "'" : "", pos, access, si->si_addr, where);
  ssize_t ignored = write(2, buf, std::strlen(buf));
  (void)ignored;
  std::abort();
}

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    static char altstack[64 * 1024];
    stack_t ss{};
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    sigaltstack(&ss, nullptr);
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
  });
}

// ---- allocation ------------------------------------------------------------------------------------

Alloc* allocate_device(size_t size, const char* api) {
  install_fault_handler();
  const size_t pg = page_size();
  const size_t rounded = (size + kAlign - 1) / kAlign * kAlign;
  const size_t data_pages = (rounded + pg - 1) / pg;
  const size_t map_size = (data_pages + 2) * pg;
  void* p = mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  char* map = static_cast<char*>(p);
  mprotect(map, pg, PROT_NONE);
  mprotect(map + map_size - pg, pg, PROT_NONE);
  auto* a = new Alloc;
  a->size = size;
  a->rounded = rounded;
  a->map = map;
  a->map_size = map_size;
  a->user = map + pg + data_pages * pg - rounded;
  a->api = api;
  a->device = current_device();
  std::memset(a->user, kFill, size);
  fill_slack(*a);
  Mem& m = mem();
  std::lock_guard<std::mutex> lock(m.mu);
  a->id = m.next_id++;
  m.by_map[reinterpret_cast<uintptr_t>(map)] = a;
  add_live(a);
  m.live_bytes[a->device] += size;
  return a;
}

// Protects a freed allocation; caller holds mem().mu.
void retire(Alloc* a, const char* by) {
  Mem& m = mem();
  a->freed = true;
  a->free_pending = false;
  remove_live(a);
  std::snprintf(a->freed_by, sizeof a->freed_by, "%s", by);
  m.live_bytes[a->device] -= a->size;
  madvise(a->data(), a->data_size(), MADV_DONTNEED);
  mprotect(a->data(), a->data_size(), PROT_NONE);
  if (a->graph_owned) return;  // its address stays reserved for the graph's next replay
  m.quarantine.push_back(a);
  m.quarantine_bytes += a->map_size;
  while (m.quarantine.size() > kQuarantineMaxCount || m.quarantine_bytes > kQuarantineMaxBytes) {
    Alloc* old = m.quarantine.front();
    m.quarantine.pop_front();
    m.quarantine_bytes -= old->map_size;
    m.by_map.erase(reinterpret_cast<uintptr_t>(old->map));
    munmap(old->map, old->map_size);
    delete old;
  }
}

// Replayed cudaMallocAsync node of a graph: the memory is fresh again.
void revive(Alloc* a) {
  Mem& m = mem();
  std::lock_guard<std::mutex> lock(m.mu);
  if (a->freed) {
    mprotect(a->data(), a->data_size(), PROT_READ | PROT_WRITE);
    a->freed = false;
    a->freed_by[0] = 0;
    add_live(a);
    m.live_bytes[a->device] += a->size;
  }
  std::memset(a->user, kFill, a->size);
  fill_slack(*a);
}

// ---- copies ------------------------------------------------------------------------------------------

const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost:
      return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice:
      return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost:
      return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice:
      return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault:
      return "cudaMemcpyDefault";
  }
  return "an invalid cudaMemcpyKind";
}

std::string range_check(const char* api, const char* role, const void* p, size_t n) {
  Mem& m = mem();
  std::lock_guard<std::mutex> lock(m.mu);
  Alloc* a = find_alloc(reinterpret_cast<uintptr_t>(p));
  if (!a) return {};
  std::string why = range_problem(*a, reinterpret_cast<uintptr_t>(p), n);
  if (why.empty()) return {};
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s: %s range [%p, +%zu) ", api, role, p, n);
  return buf + why;
}

struct CopyPlan {
  detail::CopyDir dir;
  PtrKind dst, src;
};

cudaError_t plan_copy(const char* api, void* dst, const void* src, size_t count, cudaMemcpyKind kind, CopyPlan* plan) {
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
    return detail::fail(cudaErrorInvalidMemcpyDirection, std::string(api) + ": kind " + std::to_string(kind));
  if (!dst || !src) return detail::fail(cudaErrorInvalidValue, std::string(api) + ": null " + (dst ? "src" : "dst"));
  plan->dst = pointer_kind(dst);
  plan->src = pointer_kind(src);
  const bool dst_dev = plan->dst == PtrKind::Device, src_dev = plan->src == PtrKind::Device;
  if (kind != cudaMemcpyDefault) {
    const bool want_src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    const bool want_dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    if (want_src_dev != src_dev || want_dst_dev != dst_dev)
      return detail::fail(cudaErrorInvalidValue, std::string(api) + ": kind " + kind_name(kind) + " but dst " +
                                                     detail::describe_pointer(dst) + " and src " +
                                                     detail::describe_pointer(src));
  }
  plan->dir = src_dev ? (dst_dev ? detail::CopyDir::D2D : detail::CopyDir::D2H)
                      : (dst_dev ? detail::CopyDir::H2D : detail::CopyDir::H2H);
  if (dst_dev) {
    std::string why = range_check(api, "dst", dst, count);
    if (!why.empty()) return detail::fail(cudaErrorInvalidValue, why);
  }
  if (src_dev) {
    std::string why = range_check(api, "src", src, count);
    if (!why.empty()) return detail::fail(cudaErrorInvalidValue, why);
  }
  return cudaSuccess;
}

cudaError_t check_device_range(const char* api, const void* p, size_t n) {
  if (pointer_kind(p) != PtrKind::Device)
    return detail::fail(cudaErrorInvalidValue,
                        std::string(api) + ": " + detail::describe_pointer(p) + " is not device memory");
  std::string why = range_check(api, "destination", p, n);
  if (!why.empty()) return detail::fail(cudaErrorInvalidValue, why);
  return cudaSuccess;
}

#define EMU_STICKY()                                                      \
  do {                                                                    \
    if (cudaError_t sticky_ = ::cudl_emu::sticky_error()) return sticky_; \
  } while (0)

cudaError_t memcpy_async(const char* api, void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                         cudaStream_t stream) {
  EMU_STICKY();
  if (count == 0) return cudaSuccess;
  CopyPlan plan;
  if (cudaError_t e = plan_copy(api, dst, src, count, kind, &plan)) return e;
  const detail::CopyDir dir = plan.dir;
  std::function<void()> body;
  if (plan.src == PtrKind::PageableHost && !is_capturing(stream)) {
    // Pageable source: the runtime stages it before returning, so later host writes don't show.
    // Captured, it is not staged: CUDA accepts the copy into the graph, whose node reads the host
    // buffer each time the graph runs (docs/emulator.md), so the buffer must outlive the graph.
    auto staged =
        std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + count);
    body = [dst, staged, count, dir] {
      std::memmove(dst, staged->data(), count);
      detail::count_copy(dir, count);
    };
  } else {
    body = [dst, src, count, dir] {
      std::memmove(dst, src, count);
      detail::count_copy(dir, count);
    };
  }
  if (cudaError_t e = enqueue(stream, WorkKind::Copy, api, std::move(body))) return e;
  if (plan.dst == PtrKind::PageableHost && !is_capturing(stream)) {
    // Into pageable memory the call returns only once the copy has completed.
    detail::count_sync();
    return flush(stream);
  }
  return cudaSuccess;
}

cudaError_t memcpy_sync(const char* api, void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  EMU_STICKY();
  CopyPlan plan;
  if (count > 0)
    if (cudaError_t e = plan_copy(api, dst, src, count, kind, &plan)) return e;
  if (cudaError_t e = detail::forbid_during_capture(api)) return e;
  if (cudaError_t e = detail::flush_blocking()) return e;
  detail::count_sync();
  if (count == 0) return cudaSuccess;
  WorkScope scope(api);
  std::memmove(dst, src, count);
  detail::count_copy(plan.dir, count);
  return sticky_error();
}

}  // namespace

// ---- runtime.hpp -----------------------------------------------------------------------------------

PtrKind pointer_kind(const void* p) {
  Mem& m = mem();
  std::lock_guard<std::mutex> lock(m.mu);
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  if (find_alloc(u)) return PtrKind::Device;
  if (find_host(u, nullptr)) return PtrKind::PinnedHost;
  return PtrKind::PageableHost;
}

bool is_device_range(const void* p, size_t bytes) {
  Mem& m = mem();
  std::lock_guard<std::mutex> lock(m.mu);
  Alloc* a = find_alloc(reinterpret_cast<uintptr_t>(p));
  return a && range_problem(*a, reinterpret_cast<uintptr_t>(p), bytes).empty();
}

namespace detail {

std::string describe_pointer(const void* p) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%p", p);
  Mem& m = mem();
  std::lock_guard<std::mutex> lock(m.mu);
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  if (Alloc* a = find_alloc(u)) {
    std::string why = range_problem(*a, u, 1);
    return std::string(buf) + " (device memory: " + (why.empty() ? "inside " + alloc_name(*a) : why) + ")";
  }
  uintptr_t start = 0;
  if (const HostRange* h = find_host(u, &start))
    return std::string(buf) + (h->kind == HostKind::Pinned ? " (pinned host memory)" : " (registered host memory)");
  return std::string(buf) + " (pageable host memory)";
}

void check_canaries(const char* what, bool full) {
  Mem& m = mem();
  std::lock_guard<std::mutex> lock(m.mu);
  for (const Alloc* a : m.live) {
    ptrdiff_t where = 0;
    if (slack_corrupted(*a, &where, full)) {
      std::string when = full ? std::string("at ") + what : std::string("after '") + what + "' ran";
      corrupted_report(*a, where, when.c_str());
    }
  }
}

cudaError_t free_device(void* p, const char* api) {
  Mem& m = mem();
  std::lock_guard<std::mutex> lock(m.mu);
  Alloc* a = find_alloc(reinterpret_cast<uintptr_t>(p));
  if (!a || a->user != p) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s: %p is not the start of a device allocation", api, p);
    return fail(cudaErrorInvalidValue,
                a ? std::string(buf) + "; it " + range_problem(*a, reinterpret_cast<uintptr_t>(p), 1) : buf);
  }
  if (a->freed) return fail(cudaErrorInvalidValue, std::string(api) + ": double free of " + alloc_name(*a));
  ptrdiff_t where = 0;
  if (slack_corrupted(*a, &where)) corrupted_report(*a, where, (std::string("at ") + api).c_str());
  const char* by = current_work();
  retire(a, by ? by : api);
  count_free(true);
  return cudaSuccess;
}

size_t live_device_bytes() {
  std::lock_guard<std::mutex> lock(mem().mu);
  return mem().live_bytes[current_device()];
}

}  // namespace detail

int pointer_device(const void* p) {
  Mem& m = mem();
  std::lock_guard<std::mutex> lock(m.mu);
  const Alloc* a = find_alloc(reinterpret_cast<uintptr_t>(p));
  return a && !a->freed ? a->device : -1;
}

namespace detail {

bool check_pointer_args(const char* name, int device, const void* const* ptrs, size_t n) {
  if (device_count() == 1) return true;
  for (size_t i = 0; i < n; ++i) {
    if (!ptrs[i]) continue;
    const int owner = pointer_device(ptrs[i]);
    if (owner < 0 || can_access(device, owner)) continue;
    record_error(cudaErrorIllegalAddress,
                 "kernel '" + std::string(name) + "' runs on device " + std::to_string(device) + " but argument " +
                     std::to_string(i) + " is " + describe_pointer(ptrs[i]) + " on device " + std::to_string(owner) +
                     ", without peer access from device " + std::to_string(device) + " (cudaDeviceEnablePeerAccess)",
                 true);
    return false;
  }
  return true;
}

}  // namespace detail
}  // namespace cudl_emu

// ==== the CUDA runtime API ============================================================================

namespace emu = cudl_emu;
using emu::detail::fail;

extern "C" {

// ---- device memory -----------------------------------------------------------------------------

cudaError_t cudaMalloc(void** devPtr, size_t size) {
  EMU_STICKY();
  if (!devPtr) return fail(cudaErrorInvalidValue, "cudaMalloc: devPtr is null");
  if (cudaError_t e = emu::detail::forbid_during_capture("cudaMalloc")) return e;
  *devPtr = nullptr;
  if (size == 0) return cudaSuccess;
  if (size > emu::kTotalDeviceBytes - emu::detail::live_device_bytes())
    return fail(cudaErrorMemoryAllocation,
                "cudaMalloc: " + std::to_string(size) + " bytes exceed the free device memory");
  emu::Alloc* a = emu::allocate_device(size, "cudaMalloc");
  if (!a) return fail(cudaErrorMemoryAllocation, "cudaMalloc: mmap of " + std::to_string(size) + " bytes failed");
  emu::detail::count_malloc(true);
  *devPtr = a->user;
  return cudaSuccess;
}

cudaError_t cudaFree(void* devPtr) {
  EMU_STICKY();
  if (!devPtr) return cudaSuccess;
  if (cudaError_t e = emu::detail::forbid_during_capture("cudaFree")) return e;
  // cudaFree synchronises the device implicitly: queued work that uses the memory runs first.
  emu::detail::count_sync();
  if (cudaError_t e = emu::flush_all()) return e;
  return emu::detail::free_device(devPtr, "cudaFree");
}

cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t hStream) {
  EMU_STICKY();
  if (!devPtr) return fail(cudaErrorInvalidValue, "cudaMallocAsync: devPtr is null");
  *devPtr = nullptr;
  if (size == 0) return cudaSuccess;
  if (size > emu::kTotalDeviceBytes - emu::detail::live_device_bytes())
    return fail(cudaErrorMemoryAllocation,
                "cudaMallocAsync: " + std::to_string(size) + " bytes exceed the free device memory");
  const bool capturing = emu::is_capturing(hStream);
  emu::Alloc* a = emu::allocate_device(size, "cudaMallocAsync");
  if (!a) return fail(cudaErrorMemoryAllocation, "cudaMallocAsync: mmap failed");
  if (capturing) {
    // A graph allocation: one fixed address for every replay, fresh (0xFF) at each replay.
    a->graph_owned = true;
    if (cudaError_t e = emu::enqueue(hStream, emu::WorkKind::Host, "cudaMallocAsync", [a] {
          emu::revive(a);
          emu::detail::count_malloc(true);
        }))
      return e;
    *devPtr = a->user;
    return cudaSuccess;
  }
  emu::detail::count_malloc(true);
  *devPtr = a->user;
  return cudaSuccess;
}

cudaError_t cudaFreeAsync(void* devPtr, cudaStream_t hStream) {
  EMU_STICKY();
  if (!devPtr) return cudaSuccess;
  {
    emu::Mem& m = emu::mem();
    std::lock_guard<std::mutex> lock(m.mu);
    emu::Alloc* a = emu::find_alloc(reinterpret_cast<uintptr_t>(devPtr));
    if (!a || a->user != devPtr)
      return fail(cudaErrorInvalidValue, "cudaFreeAsync: " + emu::detail::describe_pointer(devPtr) +
                                             " is not the start of a device allocation");
    if (a->freed || a->free_pending)
      return fail(cudaErrorInvalidValue, "cudaFreeAsync: double free of " + emu::alloc_name(*a));
    if (!a->graph_owned) a->free_pending = true;
  }
  return emu::enqueue(hStream, emu::WorkKind::Host, "cudaFreeAsync", [devPtr] {
    if (cudaError_t e = emu::detail::free_device(devPtr, "cudaFreeAsync")) (void)e;  // recorded by free_device
  });
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  EMU_STICKY();
  if (!free || !total) return fail(cudaErrorInvalidValue, "cudaMemGetInfo: null argument");
  *total = emu::kTotalDeviceBytes;
  *free = emu::kTotalDeviceBytes - emu::detail::live_device_bytes();
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  EMU_STICKY();
  if (!attributes) return fail(cudaErrorInvalidValue, "cudaPointerGetAttributes: attributes is null");
  std::memset(attributes, 0, sizeof *attributes);
  attributes->device = emu::current_device();
  emu::Mem& m = emu::mem();
  std::lock_guard<std::mutex> lock(m.mu);
  const uintptr_t u = reinterpret_cast<uintptr_t>(ptr);
  emu::Alloc* a = emu::find_alloc(u);
  if (a && !a->freed) {
    attributes->type = cudaMemoryTypeDevice;
    attributes->device = a->device;
    attributes->devicePointer = const_cast<void*>(ptr);
  } else if (emu::find_host(u, nullptr)) {
    attributes->type = cudaMemoryTypeHost;
    attributes->devicePointer = const_cast<void*>(ptr);
    attributes->hostPointer = const_cast<void*>(ptr);
  } else {
    attributes->type = cudaMemoryTypeUnregistered;
    attributes->device = -2;
  }
  return cudaSuccess;
}

// ---- pinned host memory ----------------------------------------------------------------------------

cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int flags) {
  EMU_STICKY();
  if (!pHost) return fail(cudaErrorInvalidValue, "cudaHostAlloc: pHost is null");
  const size_t pg = emu::page_size();
  void* p = nullptr;
  if (posix_memalign(&p, pg, std::max<size_t>((size + pg - 1) / pg * pg, pg)) != 0)
    return fail(cudaErrorMemoryAllocation, "cudaHostAlloc: " + std::to_string(size) + " bytes");
  {
    std::lock_guard<std::mutex> lock(emu::mem().mu);
    emu::mem().host[reinterpret_cast<uintptr_t>(p)] = emu::HostRange{size, emu::HostKind::Pinned};
  }
  emu::detail::count_malloc(false);
  *pHost = p;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaHostAlloc(ptr, size, cudaHostAllocDefault); }

cudaError_t cudaFreeHost(void* ptr) {
  EMU_STICKY();
  if (!ptr) return cudaSuccess;
  // Queued copies may still target the buffer: like the real call, wait for the device first.
  emu::detail::count_sync();
  if (cudaError_t e = emu::flush_all()) return e;
  {
    std::lock_guard<std::mutex> lock(emu::mem().mu);
    auto it = emu::mem().host.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == emu::mem().host.end() || it->second.kind != emu::HostKind::Pinned)
      return fail(cudaErrorInvalidValue,
                  "cudaFreeHost: " + std::string(it == emu::mem().host.end() ? "pointer" : "registered range") +
                      " was not returned by cudaMallocHost/cudaHostAlloc");
    emu::mem().host.erase(it);
  }
  std::free(ptr);
  emu::detail::count_free(false);
  return cudaSuccess;
}

cudaError_t cudaHostRegister(void* ptr, size_t size, unsigned int flags) {
  EMU_STICKY();
  if (!ptr || size == 0) return fail(cudaErrorInvalidValue, "cudaHostRegister: null pointer or zero size");
  std::lock_guard<std::mutex> lock(emu::mem().mu);
  auto& host = emu::mem().host;
  const uintptr_t b = reinterpret_cast<uintptr_t>(ptr);
  auto it = host.lower_bound(b);
  bool overlap = it != host.end() && it->first < b + size;
  if (it != host.begin()) {
    auto prev = std::prev(it);
    overlap = overlap || prev->first + prev->second.size > b;
  }
  if (overlap)
    return fail(cudaErrorHostMemoryAlreadyRegistered, "cudaHostRegister: range overlaps registered/pinned memory");
  host[b] = emu::HostRange{size, emu::HostKind::Registered};
  return cudaSuccess;
}

cudaError_t cudaHostUnregister(void* ptr) {
  EMU_STICKY();
  std::lock_guard<std::mutex> lock(emu::mem().mu);
  auto& host = emu::mem().host;
  auto it = host.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == host.end() || it->second.kind != emu::HostKind::Registered)
    return fail(cudaErrorHostMemoryNotRegistered,
                "cudaHostUnregister: pointer was not registered with cudaHostRegister");
  host.erase(it);
  return cudaSuccess;
}

cudaError_t cudaHostGetDevicePointer(void** pDevice, void* pHost, unsigned int flags) {
  EMU_STICKY();
  if (!pDevice) return fail(cudaErrorInvalidValue, "cudaHostGetDevicePointer: pDevice is null");
  if (emu::pointer_kind(pHost) != emu::PtrKind::PinnedHost)
    return fail(cudaErrorInvalidValue,
                "cudaHostGetDevicePointer: " + emu::detail::describe_pointer(pHost) + " is not pinned");
  *pDevice = pHost;
  return cudaSuccess;
}

// ---- copies and memsets ------------------------------------------------------------------------

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return emu::memcpy_sync("cudaMemcpy", dst, src, count, kind);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  return emu::memcpy_async("cudaMemcpyAsync", dst, src, count, kind, stream);
}

namespace {
// cudaMemcpyPeer(Async): both pointers device memory of the named devices.
cudaError_t check_peer_copy(const char* api, void* dst, int dstDevice, const void* src, int srcDevice, size_t count) {
  int n = 0;
  (void)cudaGetDeviceCount(&n);
  for (int d : {dstDevice, srcDevice})
    if (d < 0 || d >= n)
      return fail(cudaErrorInvalidDevice, std::string(api) + ": device " + std::to_string(d) + " (the emulator has " +
                                              std::to_string(n) + " device(s))");
  if (count == 0) return cudaSuccess;
  if (cudaError_t e = emu::check_device_range(api, dst, count)) return e;
  if (cudaError_t e = emu::check_device_range(api, src, count)) return e;
  const int dd = emu::pointer_device(dst), sd = emu::pointer_device(src);
  if (dd != dstDevice || sd != srcDevice)
    return fail(cudaErrorInvalidValue, std::string(api) + ": dst is on device " + std::to_string(dd) + " (said " +
                                           std::to_string(dstDevice) + "), src on device " + std::to_string(sd) +
                                           " (said " + std::to_string(srcDevice) + ")");
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemcpyPeer(void* dst, int dstDevice, const void* src, int srcDevice, size_t count) {
  EMU_STICKY();
  if (cudaError_t e = check_peer_copy("cudaMemcpyPeer", dst, dstDevice, src, srcDevice, count)) return e;
  return emu::memcpy_sync("cudaMemcpyPeer", dst, src, count, cudaMemcpyDeviceToDevice);
}

cudaError_t cudaMemcpyPeerAsync(void* dst, int dstDevice, const void* src, int srcDevice, size_t count,
                                cudaStream_t stream) {
  EMU_STICKY();
  if (cudaError_t e = check_peer_copy("cudaMemcpyPeerAsync", dst, dstDevice, src, srcDevice, count)) return e;
  return emu::memcpy_async("cudaMemcpyPeerAsync", dst, src, count, cudaMemcpyDeviceToDevice, stream);
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t stream) {
  EMU_STICKY();
  if (width > dpitch || width > spitch)
    return fail(cudaErrorInvalidPitchValue, "cudaMemcpy2DAsync: width exceeds a pitch");
  for (size_t r = 0; r < height; ++r)
    if (cudaError_t e = emu::memcpy_async("cudaMemcpy2DAsync", static_cast<char*>(dst) + r * dpitch,
                                          static_cast<const char*>(src) + r * spitch, width, kind, stream))
      return e;
  return cudaSuccess;
}

cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind) {
  EMU_STICKY();
  if (width > dpitch || width > spitch) return fail(cudaErrorInvalidPitchValue, "cudaMemcpy2D: width exceeds a pitch");
  for (size_t r = 0; r < height; ++r)
    if (cudaError_t e = emu::memcpy_sync("cudaMemcpy2D", static_cast<char*>(dst) + r * dpitch,
                                         static_cast<const char*>(src) + r * spitch, width, kind))
      return e;
  return cudaSuccess;
}

cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  EMU_STICKY();
  if (count == 0) return cudaSuccess;
  if (cudaError_t e = emu::check_device_range("cudaMemset", devPtr, count)) return e;
  if (cudaError_t e = emu::detail::forbid_during_capture("cudaMemset")) return e;
  if (cudaError_t e = emu::detail::flush_blocking()) return e;
  emu::detail::count_sync();
  emu::WorkScope scope("cudaMemset");
  std::memset(devPtr, value, count);
  emu::detail::count_memset();
  return emu::sticky_error();
}

cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream) {
  EMU_STICKY();
  if (count == 0) return cudaSuccess;
  if (cudaError_t e = emu::check_device_range("cudaMemsetAsync", devPtr, count)) return e;
  return emu::enqueue(stream, emu::WorkKind::Memset, "cudaMemsetAsync", [devPtr, value, count] {
    std::memset(devPtr, value, count);
    emu::detail::count_memset();
  });
}

}  // extern "C"
