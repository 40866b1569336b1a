// tests/emu/src/nccl.cpp — an emulated NCCL subset on emulated devices: ranks are host threads of
// one process (ncclCommInitRank), communicators driven from one thread inside a group
// (ncclCommInitAll + ncclGroupStart/End), or processes of one machine, one rank each (the
// transport over local sockets below "Ranks as processes"). ncclGetUniqueId, ncclCommInitRank/InitAll, ncclAllReduce
// (sum, avg), ncclBroadcast, group calls, and the checks that turn a hang into an error: ranks that
// call different collectives (or different counts, types, ops, roots) in the same position fail
// with ncclInvalidUsage naming both calls, and a rank that never comes fails the others with
// ncclSystemError after CUDL_EMU_NCCL_TIMEOUT_MS (default 60000), naming the missing ranks.
//
// A collective is queued on every rank's stream once all ranks have called it (the host call
// returns then, or at ncclGroupEnd inside a group). When the first of those stream items runs it
// runs the other ranks' streams up to their items (streams execute lazily), so the reduction sees
// every rank's send buffer as its stream reached the collective, in rank order (deterministic),
// and writes every receive buffer.
#include <cuda_runtime.h>
#include <nccl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "emu/runtime.hpp"
#include "internal.hpp"
#include "src/distributed/socket_io.hpp"  // the framing the library's TCP store uses too

namespace {

enum class Kind { AllReduce, Broadcast, AllGather, ReduceScatter };

struct Call {
  Kind kind = Kind::AllReduce;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;  // AllGather: per rank sent; ReduceScatter: per rank received
  ncclDataType_t type = ncclFloat32;
  ncclRedOp_t op = ncclSum;
  int root = 0;
  cudaStream_t stream = nullptr;
  int device = 0;
  bool replay = false;  // a replay of a collective captured into a CUDA graph
};

const char* type_name(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: return "int8";
    case ncclUint8: return "uint8";
    case ncclInt32: return "int32";
    case ncclUint32: return "uint32";
    case ncclInt64: return "int64";
    case ncclUint64: return "uint64";
    case ncclFloat16: return "float16";
    case ncclFloat32: return "float32";
    case ncclFloat64: return "float64";
    case ncclBfloat16: return "bfloat16";
    default: return "unknown type";
  }
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;
  }
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::AllReduce: return "ncclAllReduce";
    case Kind::Broadcast: return "ncclBroadcast";
    case Kind::AllGather: return "ncclAllGather";
    case Kind::ReduceScatter: return "ncclReduceScatter";
  }
  return "?";
}

bool reduces(Kind k) { return k == Kind::AllReduce || k == Kind::ReduceScatter; }

std::string describe(const Call& c) {
  std::string s = std::string(kind_name(c.kind)) + "(";
  s += c.kind == Kind::AllGather ? "sendcount " : c.kind == Kind::ReduceScatter ? "recvcount " : "count ";
  s += std::to_string(c.count) + ", " + type_name(c.type);
  if (reduces(c.kind)) s += c.op == ncclSum ? ", sum" : c.op == ncclAvg ? ", avg" : ", op " + std::to_string(c.op);
  if (c.kind == Kind::Broadcast) s += ", root " + std::to_string(c.root);
  return s + ")";
}

bool same(const Call& a, const Call& b) {
  return a.kind == b.kind && a.count == b.count && a.type == b.type && (!reduces(a.kind) || a.op == b.op) &&
         (a.kind != Kind::Broadcast || a.root == b.root);
}

// Bytes a rank sends and receives.
size_t send_bytes(const Call& c, int nranks) {
  const size_t b = c.count * type_size(c.type);
  return c.kind == Kind::ReduceScatter ? b * nranks : b;
}
size_t recv_bytes(const Call& c, int nranks) {
  const size_t b = c.count * type_size(c.type);
  return c.kind == Kind::AllGather ? b * nranks : b;
}

struct Round {
  uint64_t key = 0;
  std::vector<Call> calls;
  std::vector<char> arrived, queued, reached;
  std::vector<uint64_t> seq;
  int n_arrived = 0;
  bool enqueued = false;  // every rank's item is on its stream
  bool done = false;
  std::string error;
  std::vector<std::vector<char>> data;
};

struct ProcRound {  // one collective of ranks as processes, at the hub
  std::vector<Call> calls;
  std::vector<char> arrived, have;
  int n_arrived = 0, n_have = 0;
  bool go = false;  // every rank called it: each may queue its part
  bool run_sent = false;
  std::string error;
  std::vector<std::vector<char>> data;
  std::chrono::steady_clock::time_point deadline;
};

struct Clique {
  int nranks = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<char> joined;
  int n_joined = 0;
  std::map<uint64_t, std::shared_ptr<Round>> rounds;  // until done
  // Ranks as processes (some rank joined through this process's socket): the hub's state.
  bool processes = false;
  std::vector<int> fds;    // the hub's end of each rank's connection (-1: not connected)
  std::vector<char> gone;  // the rank's connection closed
  std::vector<long> pids;  // the process of each rank
  std::string join_error;  // the ranks joined, but not as the transport allows
  std::map<uint64_t, ProcRound> prounds;
  bool watchdog = false;
};

std::shared_ptr<Clique> new_clique(int nranks) {
  auto cl = std::make_shared<Clique>();
  cl->nranks = nranks;
  cl->joined.assign(nranks, 0);
  cl->fds.assign(nranks, -1);
  cl->gone.assign(nranks, 0);
  cl->pids.assign(nranks, 0);
  return cl;
}

std::mutex g_mu;
std::map<std::string, std::shared_ptr<Clique>>& cliques() {
  static auto* m = new std::map<std::string, std::shared_ptr<Clique>>;
  return *m;
}

thread_local std::string t_last_error;
thread_local int t_group = 0;
struct PendingRound {
  std::shared_ptr<Clique> clique;
  std::shared_ptr<Round> round;
  int rank;
};
thread_local std::vector<PendingRound> t_pending_rounds;
thread_local std::vector<std::shared_ptr<Clique>> t_pending_inits;

std::chrono::milliseconds timeout() {
  const char* env = std::getenv("CUDL_EMU_NCCL_TIMEOUT_MS");
  long ms = env && *env ? std::strtol(env, nullptr, 10) : 60000;
  return std::chrono::milliseconds(ms > 0 ? ms : 60000);
}

ncclResult_t fail(ncclComm_t comm, ncclResult_t r, const std::string& msg);

std::string missing(const std::vector<char>& present) {
  std::string s;
  for (size_t i = 0; i < present.size(); ++i)
    if (!present[i]) s += (s.empty() ? "" : ", ") + std::to_string(i);
  return s;
}

}  // namespace

namespace {
struct ProcLink;
}

struct ncclComm {
  std::shared_ptr<Clique> clique;  // ranks as threads (and the hub's process)
  std::shared_ptr<ProcLink> proc;  // ranks as processes: this rank's connection to the hub
  int nranks = 0;
  int rank = 0;
  int device = 0;
  uint64_t next = 0;  // position of the next collective of this rank
  std::string last_error;
};

namespace {

ncclResult_t fail(ncclComm_t comm, ncclResult_t r, const std::string& msg) {
  t_last_error = msg;
  if (comm) comm->last_error = msg;
  return r;
}

template <typename T>
void reduce_into(std::vector<char>& out, const std::vector<std::vector<char>>& data, size_t count, bool avg) {
  out.resize(count * sizeof(T));
  for (size_t i = 0; i < count; ++i) {
    T acc{};
    for (const auto& d : data) {  // rank order: the same sum on every run
      T v;
      std::memcpy(&v, d.data() + i * sizeof(T), sizeof(T));
      acc = static_cast<T>(acc + v);
    }
    if (avg) acc = static_cast<T>(acc / static_cast<T>(data.size()));
    std::memcpy(out.data() + i * sizeof(T), &acc, sizeof(T));
  }
}

// The collective's result from every rank's contribution (data[r]: what rank r sent), in rank order.
std::vector<char> combine(const Call& c, int n, const std::vector<std::vector<char>>& data) {
  std::vector<char> result;
  if (c.kind == Kind::Broadcast) {
    result = data[c.root];
  } else if (c.kind == Kind::AllGather) {
    for (int j = 0; j < n; ++j) result.insert(result.end(), data[j].begin(), data[j].end());
  } else {
    const bool avg = c.op == ncclAvg;
    const size_t total = c.kind == Kind::ReduceScatter ? c.count * n : c.count;
    switch (c.type) {
      case ncclFloat32: reduce_into<float>(result, data, total, avg); break;
      case ncclFloat64: reduce_into<double>(result, data, total, avg); break;
      case ncclInt32: reduce_into<int32_t>(result, data, total, avg); break;
      case ncclInt64: reduce_into<int64_t>(result, data, total, avg); break;
      default: break;  // refused when called
    }
  }
  return result;
}

// The stream item of rank `rank` for round `r` (runs with the runtime's lock held).
void run_collective(const std::shared_ptr<Clique>& cl, const std::shared_ptr<Round>& rp, int rank) {
  std::unique_lock<std::mutex> lk(cl->mu);
  Round& r = *rp;
  if (!r.error.empty() || r.done || r.reached[rank]) return;
  if (!r.enqueued) {  // a replayed graph ran before another rank launched its part: it cannot wait here
    r.error = describe(r.calls[rank]) + " #" + std::to_string(r.key) + ": rank " + std::to_string(rank) +
              "'s part ran before rank(s) " + missing(r.queued) + " launched theirs (launch each rank's graph " +
              "from its own host thread, or all of them inside ncclGroupStart/End, before synchronising)";
    cl->cv.notify_all();
    return;
  }
  r.reached[rank] = 1;
  const Call& c = r.calls[rank];
  const int n = cl->nranks;
  cudl_emu::count_collective(c.device, send_bytes(c, n));
  if (c.kind != Kind::Broadcast || rank == c.root) {
    const char* src = static_cast<const char*>(c.send);
    r.data[rank].assign(src, src + send_bytes(c, n));
  }
  for (int j = 0; j < n; ++j) {
    if (r.reached[j]) continue;
    const Call cj = r.calls[j];
    const uint64_t sj = r.seq[j];
    lk.unlock();
    cudl_emu::run_upto(cj.device, cj.stream, sj);  // that rank's stream up to its part of the collective
    lk.lock();
  }
  if (r.done) return;
  for (int j = 0; j < n; ++j)
    if (!r.reached[j]) return;  // a stream could not get there (a sticky error stopped it)
  std::vector<char> result = combine(c, n, r.data);
  const size_t rb = recv_bytes(c, n);
  for (int j = 0; j < n; ++j) {
    const size_t offset = c.kind == Kind::ReduceScatter ? rb * j : 0;  // rank j's chunk
    std::memcpy(r.calls[j].recv, result.data() + offset, rb);
  }
  r.done = true;
  r.data.clear();
  cl->rounds.erase(r.key);
}

// Waits until round `r` is queued on every rank's stream (or failed). Empty when it is.
std::string wait_round(const std::shared_ptr<Clique>& cl, const std::shared_ptr<Round>& rp, int rank,
                       ncclResult_t* code) {
  std::unique_lock<std::mutex> lk(cl->mu);
  Round& r = *rp;
  const auto deadline = std::chrono::steady_clock::now() + timeout();
  while (!r.enqueued && r.error.empty()) {
    if (cl->cv.wait_until(lk, deadline) == std::cv_status::timeout && !r.enqueued && r.error.empty()) {
      r.error = describe(r.calls[rank]) + " #" + std::to_string(r.key) + ": rank(s) " + missing(r.arrived) + " of " +
                std::to_string(cl->nranks) + " did not " + (r.calls[rank].replay ? "launch" : "call") +
                " it within " + std::to_string(timeout().count()) + " ms (CUDL_EMU_NCCL_TIMEOUT_MS); rank " +
                std::to_string(rank) + " waited";
      cl->cv.notify_all();
      *code = ncclSystemError;
      return r.error;
    }
  }
  *code = r.error.empty() ? ncclSuccess : ncclInvalidUsage;
  return r.error;
}

ncclResult_t wait_round(ncclComm_t comm, const std::shared_ptr<Clique>& cl, const std::shared_ptr<Round>& rp,
                        int rank) {
  ncclResult_t code = ncclSuccess;
  std::string e = wait_round(cl, rp, rank, &code);
  return e.empty() ? ncclSuccess : fail(comm, code, e);
}

// Rank `rank` arrives at its next collective `c`. A replay (`c.replay`) has already queued its item
// (`seq`); an eager call's item is queued once every rank has arrived, by the last one. Returns the
// round, or null with `*error` set.
std::shared_ptr<Round> arrive(ncclComm_t comm, const Call& c, uint64_t seq, const char* api, ncclResult_t* code,
                              std::string* error) {
  std::shared_ptr<Clique> cl = comm->clique;
  const int n = cl->nranks;
  const uint64_t key = comm->next++;
  std::shared_ptr<Round> rp;
  bool enqueue_all = false;
  {
    std::lock_guard<std::mutex> lk(cl->mu);
    auto& slot = cl->rounds[key];
    if (!slot) {
      slot = std::make_shared<Round>();
      slot->key = key;
      slot->calls.resize(n);
      slot->arrived.assign(n, 0);
      slot->queued.assign(n, 0);
      slot->reached.assign(n, 0);
      slot->seq.assign(n, 0);
      slot->data.resize(n);
    }
    rp = slot;
    Round& r = *rp;
    if (!r.error.empty()) {
      *code = ncclInvalidUsage;
      *error = r.error;
      return nullptr;
    }
    for (int j = 0; j < n; ++j)
      if (r.arrived[j] && !same(r.calls[j], c)) {
        r.error = "collective #" + std::to_string(key) + " differs across ranks: rank " + std::to_string(j) +
                  " called " + describe(r.calls[j]) + ", rank " + std::to_string(comm->rank) + " called " +
                  describe(c);
        cl->cv.notify_all();
        *code = ncclInvalidUsage;
        *error = r.error;
        return nullptr;
      }
    r.calls[comm->rank] = c;
    r.arrived[comm->rank] = 1;
    if (c.replay) {
      r.queued[comm->rank] = 1;
      r.seq[comm->rank] = seq;
    }
    enqueue_all = ++r.n_arrived == n;
  }
  if (enqueue_all) {
    // The eager ranks' items go on their streams under the runtime's lock, so none runs before all are queued.
    std::lock_guard<std::recursive_mutex> runtime_lock(cudl_emu::detail::api_mutex());
    std::vector<Call> calls;
    std::vector<char> queued;
    {
      std::lock_guard<std::mutex> lk(cl->mu);
      calls = rp->calls;
      queued = rp->queued;
    }
    std::vector<uint64_t> seqs(n, 0);
    for (int j = 0; j < n; ++j) {
      if (queued[j]) continue;
      cudaError_t e = cudl_emu::enqueue_on(calls[j].device, calls[j].stream, cudl_emu::WorkKind::Library, api,
                                           [cl, rp, j] { run_collective(cl, rp, j); }, &seqs[j]);
      if (e != cudaSuccess) {
        std::lock_guard<std::mutex> lk(cl->mu);
        rp->error = std::string(api) + ": queueing rank " + std::to_string(j) + "'s part failed: " + cudaGetErrorString(e);
        cl->cv.notify_all();
        *code = ncclUnhandledCudaError;
        *error = rp->error;
        return nullptr;
      }
    }
    std::lock_guard<std::mutex> lk(cl->mu);
    for (int j = 0; j < n; ++j)
      if (!queued[j]) {
        rp->seq[j] = seqs[j];
        rp->queued[j] = 1;
      }
    rp->enqueued = true;
    cl->cv.notify_all();
  }
  return rp;
}

// Records a collective's node into the capture on c.stream: every launch of the graph calls make.
ncclResult_t record_per_launch(ncclComm_t comm, const Call& c, const char* api, cudl_emu::PerLaunch make) {
  if (cudaError_t e = cudl_emu::capture_per_launch(c.stream, cudl_emu::WorkKind::Library, api, std::move(make)))
    return fail(comm, ncclUnhandledCudaError,
                std::string(api) + ": recording into the capture failed: " + cudaGetErrorString(e));
  return ncclSuccess;
}

// ---- Ranks as processes on one machine -------------------------------------------------------
// ncclGetUniqueId starts (once per process) a listener on an abstract Unix socket named after the
// process ("cudl-emu-nccl.<pid>.<salt>"); the id carries that pid and salt. A rank whose process is
// not the id's connects there (HELLO), and the id's process becomes the hub of that communicator:
// its ranks connect to it too (ATTACH). Every collective is then two exchanges with the hub: at the
// call, ARRIVE (the call's description; the hub checks it against the other ranks' and answers GO
// once all have called it, or ERROR naming both calls); when the rank's stream item runs, DATA (its
// send buffer; the hub asks the ranks still missing to RUN their streams up to their part, reduces
// in rank order and answers RESULT). The hub's watchdog fails a round that a rank has not reached
// within CUDL_EMU_NCCL_TIMEOUT_MS, naming the ranks, and a rank whose connection closes fails the
// rounds it had not done its part of.

enum MsgType : uint32_t { kHello = 1, kAttach, kJoined, kJoinFail, kArrive, kGo, kData, kResult, kRun, kError };

struct MsgHeader {
  uint32_t type;
  int32_t rank;
  uint64_t key;  // the collective's position (HELLO: the number of ranks)
  uint64_t len;  // payload bytes
};

struct WireCall {  // what ARRIVE carries
  int32_t kind, type, op, root;
  uint64_t count;
  int32_t replay;
};

WireCall to_wire(const Call& c) {
  return WireCall{static_cast<int32_t>(c.kind),
                  static_cast<int32_t>(c.type),
                  static_cast<int32_t>(c.op),
                  c.root,
                  c.count,
                  c.replay ? 1 : 0};
}
Call from_wire(const WireCall& w) {
  Call c;
  c.kind = static_cast<Kind>(w.kind);
  c.type = static_cast<ncclDataType_t>(w.type);
  c.op = static_cast<ncclRedOp_t>(w.op);
  c.root = w.root;
  c.count = w.count;
  c.replay = w.replay != 0;
  return c;
}

using cudl::net::read_all;
using cudl::net::write_all;

bool send_msg(int fd, MsgType type, int rank, uint64_t key, const void* data = nullptr, size_t len = 0) {
  MsgHeader h{type, rank, key, len};
  return write_all(fd, &h, sizeof h) && (len == 0 || write_all(fd, data, len));
}
bool read_msg(int fd, MsgHeader* h, std::vector<char>* payload) {
  if (!read_all(fd, h, sizeof *h)) return false;
  if (h->len > (uint64_t(1) << 40)) return false;
  payload->resize(h->len);
  return h->len == 0 || read_all(fd, payload->data(), h->len);
}
std::vector<char> error_payload(ncclResult_t code, const std::string& msg) {
  std::vector<char> p(sizeof(int32_t) + msg.size());
  const int32_t c = code;
  std::memcpy(p.data(), &c, sizeof c);
  std::memcpy(p.data() + sizeof c, msg.data(), msg.size());
  return p;
}

sockaddr_un socket_address(long pid, unsigned long long salt, socklen_t* len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  // Abstract namespace (leading NUL): no file to create or clean up.
  int n = std::snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "cudl-emu-nccl.%ld.%llx", pid, salt);
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return a;
}
std::string socket_name(long pid, unsigned long long salt) {
  return "@cudl-emu-nccl." + std::to_string(pid) + "." + [&] {
    char b[32];
    std::snprintf(b, sizeof b, "%llx", salt);
    return std::string(b);
  }();
}

std::string rank_list(const std::vector<char>& present, bool want) {
  std::string s;
  for (size_t i = 0; i < present.size(); ++i)
    if (static_cast<bool>(present[i]) == want) s += (s.empty() ? "" : ", ") + std::to_string(i);
  return s;
}

// The hub (cl->mu held from here to the listener).
void hub_send(Clique& cl, int rank, MsgType type, uint64_t key, const std::vector<char>& p = {}) {
  if (cl.fds[rank] >= 0 && !cl.gone[rank]) (void)send_msg(cl.fds[rank], type, rank, key, p.data(), p.size());
}

void hub_fail(Clique& cl, uint64_t key, ProcRound& r, ncclResult_t code, const std::string& msg) {
  r.error = msg;
  r.data.clear();
  for (int j = 0; j < cl.nranks; ++j) hub_send(cl, j, kError, key, error_payload(code, msg));
}

ProcRound& hub_round(Clique& cl, uint64_t key) {
  ProcRound& r = cl.prounds[key];
  if (r.calls.empty()) {
    r.calls.resize(cl.nranks);
    r.arrived.assign(cl.nranks, 0);
    r.have.assign(cl.nranks, 0);
    r.data.resize(cl.nranks);
  }
  return r;
}

std::string gone_message(Clique& cl, int j, const Call& c, uint64_t key) {
  return describe(c) + " #" + std::to_string(key) + ": rank " + std::to_string(j) + " of " + std::to_string(cl.nranks) +
         " (process " + std::to_string(cl.pids[j]) +
         ") closed its connection before doing its part (it exited or failed)";
}

void hub_arrive(Clique& cl, int j, uint64_t key, const Call& c) {
  ProcRound& r = hub_round(cl, key);
  if (!r.error.empty()) {
    hub_send(cl, j, kError, key, error_payload(ncclInvalidUsage, r.error));
    return;
  }
  for (int i = 0; i < cl.nranks; ++i)
    if (r.arrived[i] && !same(r.calls[i], c)) {
      hub_fail(cl, key, r, ncclInvalidUsage,
               "collective #" + std::to_string(key) + " differs across ranks: rank " + std::to_string(i) + " called " +
                   describe(r.calls[i]) + ", rank " + std::to_string(j) + " called " + describe(c));
      return;
    }
  for (int i = 0; i < cl.nranks; ++i)
    if (cl.gone[i] && !r.arrived[i]) return hub_fail(cl, key, r, ncclSystemError, gone_message(cl, i, c, key));
  r.calls[j] = c;
  r.arrived[j] = 1;
  if (r.n_arrived++ == 0) r.deadline = std::chrono::steady_clock::now() + timeout();
  if (r.n_arrived == cl.nranks) {
    r.go = true;
    r.deadline = std::chrono::steady_clock::now() + timeout();
    for (int i = 0; i < cl.nranks; ++i) hub_send(cl, i, kGo, key);
  }
}

void hub_data(Clique& cl, int j, uint64_t key, std::vector<char>&& bytes) {
  ProcRound& r = hub_round(cl, key);
  if (!r.error.empty()) {
    hub_send(cl, j, kError, key, error_payload(ncclInvalidUsage, r.error));
    return;
  }
  if (!r.go || r.have[j]) return;  // cannot happen with a well-behaved client
  r.have[j] = 1;
  r.data[j] = std::move(bytes);
  const int n = cl.nranks;
  if (++r.n_have == n) {
    const Call& c = r.calls[0];
    std::vector<char> result = combine(c, n, r.data);
    const size_t rb = recv_bytes(c, n);
    for (int i = 0; i < n; ++i) {
      const size_t offset = c.kind == Kind::ReduceScatter ? rb * i : 0;
      hub_send(cl, i, kResult, key, std::vector<char>(result.begin() + offset, result.begin() + offset + rb));
    }
    cl.prounds.erase(key);
    return;
  }
  if (!r.run_sent) {  // the other ranks' streams are lazy: ask them to run up to their part
    r.run_sent = true;
    for (int i = 0; i < n; ++i)
      if (!r.have[i]) hub_send(cl, i, kRun, key);
  }
}

void hub_gone(Clique& cl, int j) {
  cl.gone[j] = 1;
  for (auto& [key, r] : cl.prounds)
    if (r.error.empty() && (!r.arrived[j] || !r.have[j])) {
      const Call& c = r.calls[r.arrived[j] ? j : 0];
      hub_fail(cl, key, r, ncclSystemError, gone_message(cl, j, c, key));
    }
}

void hub_watchdog(std::shared_ptr<Clique> cl) {
  std::unique_lock<std::mutex> lk(cl->mu);
  for (;;) {
    cl->cv.wait_for(lk, std::chrono::milliseconds(20));
    bool all_gone = true;
    for (int j = 0; j < cl->nranks; ++j) all_gone = all_gone && cl->gone[j];
    if (all_gone) break;
    const auto now = std::chrono::steady_clock::now();
    for (auto& [key, r] : cl->prounds) {
      if (!r.error.empty() || r.n_arrived == 0 || now < r.deadline) continue;
      int first = 0;
      while (!r.arrived[first]) ++first;
      const Call& c = r.calls[first];
      const std::string ms = std::to_string(timeout().count()) + " ms (CUDL_EMU_NCCL_TIMEOUT_MS)";
      if (!r.go)
        hub_fail(*cl, key, r, ncclSystemError,
                 describe(c) + " #" + std::to_string(key) + ": rank(s) " + rank_list(r.arrived, false) + " of " +
                     std::to_string(cl->nranks) + " did not " + (c.replay ? "launch" : "call") + " it within " + ms +
                     "; rank(s) " + rank_list(r.arrived, true) + " waited (ranks as processes)");
      else
        hub_fail(*cl, key, r, ncclSystemError,
                 describe(c) + " #" + std::to_string(key) + ": the stream(s) of rank(s) " + rank_list(r.have, false) +
                     " of " + std::to_string(cl->nranks) + " did not reach it within " + ms + "; rank(s) " +
                     rank_list(r.have, true) + " waited (ranks as processes)");
    }
  }
}

// Sends JOINED to the ranks that joined from other processes once every rank has joined (or
// JOINFAIL when they cannot form a communicator of processes).
void hub_maybe_joined(Clique& cl) {
  if (!cl.processes || cl.n_joined != cl.nranks) return;
  std::map<long, int> by_pid;
  for (int j = 0; j < cl.nranks && cl.join_error.empty(); ++j) {
    auto [it, fresh] = by_pid.emplace(cl.pids[j], j);
    if (!fresh)
      cl.join_error = "ncclCommInitRank: ranks " + std::to_string(it->second) + " and " + std::to_string(j) +
                      " are both in process " + std::to_string(cl.pids[j]) +
                      ", and other ranks are other processes: with ranks as processes, each process holds one rank";
  }
  for (int j = 0; j < cl.nranks; ++j)
    if (cl.fds[j] >= 0)
      (void)send_msg(cl.fds[j], cl.join_error.empty() ? kJoined : kJoinFail, j, 0, cl.join_error.data(),
                     cl.join_error.size());
  cl.cv.notify_all();
}

// One connection to the hub: HELLO (a rank of another process joins) or ATTACH (a rank of this
// process, after joining), then the rank's ARRIVE and DATA messages until it closes.
void hub_connection(int fd) {
  MsgHeader h{};
  std::vector<char> p;
  if (!read_msg(fd, &h, &p) || (h.type != kHello && h.type != kAttach) || p.size() < 128 + sizeof(int64_t)) {
    ::close(fd);
    return;
  }
  const std::string key(p.data(), 128);
  int64_t pid = 0;
  std::memcpy(&pid, p.data() + 128, sizeof pid);
  const int rank = h.rank;
  const int nranks = static_cast<int>(h.key);
  std::shared_ptr<Clique> cl;
  {
    std::lock_guard<std::mutex> g(g_mu);
    auto& slot = cliques()[key];
    if (!slot && h.type == kHello) slot = new_clique(nranks);
    cl = slot;
  }
  {
    std::lock_guard<std::mutex> lk(cl ? cl->mu : g_mu);
    std::string bad;
    if (!cl)
      bad = "ncclCommInitRank: no communicator for this id in process " + std::to_string(getpid());
    else if (cl->nranks != nranks)
      bad = "ncclCommInitRank: rank " + std::to_string(rank) + " says " + std::to_string(nranks) +
            " ranks, the first rank said " + std::to_string(cl->nranks);
    else if (rank < 0 || rank >= nranks)
      bad = "ncclCommInitRank: rank " + std::to_string(rank) + " of " + std::to_string(nranks) + " ranks";
    else if (h.type == kHello && cl->joined[rank])
      bad = "ncclCommInitRank: rank " + std::to_string(rank) + " joined twice";
    if (!bad.empty()) {
      (void)send_msg(fd, kJoinFail, rank, 0, bad.data(), bad.size());
      ::close(fd);
      return;
    }
    cl->fds[rank] = fd;
    if (h.type == kHello) {
      cl->pids[rank] = pid;
      cl->joined[rank] = 1;
      ++cl->n_joined;
      cl->processes = true;
      if (!cl->watchdog) {
        cl->watchdog = true;
        std::thread(hub_watchdog, cl).detach();
      }
      hub_maybe_joined(*cl);
    }
    cl->cv.notify_all();
  }
  while (read_msg(fd, &h, &p)) {
    std::lock_guard<std::mutex> lk(cl->mu);
    if (h.type == kArrive && p.size() == sizeof(WireCall)) {
      WireCall w;
      std::memcpy(&w, p.data(), sizeof w);
      hub_arrive(*cl, rank, h.key, from_wire(w));
    } else if (h.type == kData) {
      hub_data(*cl, rank, h.key, std::move(p));
      p = {};
    }
  }
  std::lock_guard<std::mutex> lk(cl->mu);
  hub_gone(*cl, rank);
  cl->fds[rank] = -1;
  ::close(fd);
  cl->cv.notify_all();
}

struct Listener {
  long pid = 0;
  unsigned long long salt = 0;
  std::string error;  // why it could not listen
};

const Listener& listener() {
  static Listener* l = [] {
    auto* l = new Listener;
    l->pid = getpid();
    l->salt = std::random_device{}();
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = 0;
    sockaddr_un a = socket_address(l->pid, l->salt, &len);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd, 64) != 0) {
      l->error = "cannot listen on " + socket_name(l->pid, l->salt) + ": " + std::strerror(errno);
      if (fd >= 0) ::close(fd);
      return l;
    }
    std::thread([fd] {
      for (;;) {
        int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          return;
        }
        std::thread(hub_connection, c).detach();
      }
    }).detach();
    return l;
  }();
  return *l;
}

// The id: "cudl-emu-nccl:<salt>:<counter>:<pid>", NUL-padded to 128 bytes.
bool parse_id(const ncclUniqueId& id, unsigned long long* salt, long* pid) {
  char buf[sizeof id.internal + 1] = {};
  std::memcpy(buf, id.internal, sizeof id.internal);
  unsigned long long counter = 0;
  return std::sscanf(buf, "cudl-emu-nccl:%llx:%llu:%ld", salt, &counter, pid) == 3;
}

// This rank's side of the transport: the connection to the hub, a reader that files the hub's
// answers, and a runner that runs this rank's stream up to a collective when the hub asks.
struct ProcLink {
  int fd = -1;
  int rank = 0, nranks = 0;
  std::string hub;  // "process <pid> (@cudl-emu-nccl...)"
  std::mutex mu, write_mu;
  std::condition_variable cv;
  // One collective of this rank, until both its host side (the call or launch) and its stream
  // item are done; the hub's messages for it arrive in order (GO before RUN and RESULT).
  struct Slot {
    bool go = false, has_result = false, queued = false;
    bool host_done = false, item_done = false;
    ncclResult_t code = ncclSuccess;
    std::string error;
    std::vector<char> result;
    cudaStream_t stream = nullptr;
    int device = 0;
    uint64_t seq = 0;
  };
  std::map<uint64_t, Slot> slots;
  std::vector<uint64_t> runs;

  // (mu held) A slot that is gone has finished both sides.
  bool finished(uint64_t key) const {
    auto it = slots.find(key);
    return it == slots.end() || it->second.item_done;
  }
  void mark_done(uint64_t key, bool host) {  // (mu held)
    auto it = slots.find(key);
    if (it == slots.end()) return;
    (host ? it->second.host_done : it->second.item_done) = true;
    if (it->second.host_done && it->second.item_done) slots.erase(it);
  }
  bool closed = false, stopping = false;
  std::thread reader, runner;

  bool send(MsgType type, uint64_t key, const void* data = nullptr, size_t len = 0) {
    std::lock_guard<std::mutex> g(write_mu);
    return send_msg(fd, type, rank, key, data, len);
  }

  void read_loop() {
    MsgHeader h{};
    std::vector<char> p;
    while (read_msg(fd, &h, &p)) {
      std::lock_guard<std::mutex> lk(mu);
      if (h.type == kRun) {  // not slots[]: a part that already ran has no slot any more
        runs.push_back(h.key);
        cv.notify_all();
        continue;
      }
      Slot& s = slots[h.key];
      if (h.type == kGo) {
        s.go = true;
      } else if (h.type == kResult) {
        s.result = std::move(p);
        p = {};
        s.has_result = true;
      } else if (h.type == kError && p.size() >= sizeof(int32_t)) {
        int32_t code = 0;
        std::memcpy(&code, p.data(), sizeof code);
        s.code = static_cast<ncclResult_t>(code);
        s.error.assign(p.data() + sizeof code, p.size() - sizeof code);
      }
      cv.notify_all();
    }
    std::lock_guard<std::mutex> lk(mu);
    closed = true;
    cv.notify_all();
  }

  void run_loop() {
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      cv.wait(lk, [&] { return stopping || !runs.empty(); });
      if (stopping) return;
      const uint64_t key = runs.front();
      runs.erase(runs.begin());
      // An eager call queues its part after GO: wait until it has (or the part already ran).
      cv.wait(lk, [&] {
        return stopping || closed || finished(key) || slots.at(key).queued || !slots.at(key).error.empty();
      });
      if (stopping) return;
      if (finished(key) || !slots.at(key).queued) continue;
      const Slot s = slots.at(key);
      lk.unlock();
      cudl_emu::run_upto(s.device, s.stream, s.seq);
      lk.lock();
    }
  }

  // Waits (mu held) until pred, an error for `key`, or the connection closes; the error, if any.
  template <typename Pred>
  std::string wait(std::unique_lock<std::mutex>& lk, uint64_t key, ncclResult_t* code, Pred pred) {
    // The hub's watchdog names the missing ranks after the timeout; this one only covers a hub that
    // stopped answering.
    const auto deadline = std::chrono::steady_clock::now() + timeout() + std::chrono::seconds(10);
    for (;;) {
      Slot& s = slots[key];
      if (!s.error.empty()) {
        *code = s.code;
        return s.error;
      }
      if (pred(s)) return {};
      if (closed) {
        *code = ncclRemoteError;
        return "collective #" + std::to_string(key) + " of rank " + std::to_string(rank) +
               ": the connection to the emulated NCCL hub in " + hub + " closed (that process exited or failed)";
      }
      if (cv.wait_until(lk, deadline) == std::cv_status::timeout && !pred(slots[key]) && slots[key].error.empty()) {
        *code = ncclSystemError;
        return "collective #" + std::to_string(key) + " of rank " + std::to_string(rank) +
               ": no answer from the emulated NCCL hub in " + hub;
      }
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stopping = true;
      cv.notify_all();
    }
    ::shutdown(fd, SHUT_RDWR);
    if (reader.joinable()) reader.join();
    if (runner.joinable()) runner.join();
    ::close(fd);
  }
};

// Connects rank `rank` to the hub of process `pid` and sends HELLO or ATTACH; for HELLO, waits
// until every rank has joined. Empty when it worked, else why not (and *code).
std::string proc_connect(ProcLink& link, const ncclUniqueId& id, long pid, unsigned long long salt, bool attach,
                         ncclResult_t* code) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout();
  const std::string where = "rank " + std::to_string(link.rank) + " of " + std::to_string(link.nranks);
  link.hub = "process " + std::to_string(pid) + " (" + socket_name(pid, salt) + ")";
  std::string why;
  for (;;) {
    link.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = 0;
    sockaddr_un a = socket_address(pid, salt, &len);
    if (link.fd >= 0 && ::connect(link.fd, reinterpret_cast<sockaddr*>(&a), len) == 0) break;
    why = std::strerror(errno);
    if (link.fd >= 0) ::close(link.fd);
    link.fd = -1;
    if (std::chrono::steady_clock::now() > deadline) {
      *code = ncclSystemError;
      return "ncclCommInitRank: " + where + " could not reach the emulated NCCL of " + link.hub + " within " +
             std::to_string(timeout().count()) + " ms (CUDL_EMU_NCCL_TIMEOUT_MS): " + why;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::vector<char> hello(128 + sizeof(int64_t));
  std::memcpy(hello.data(), id.internal, 128);
  const int64_t self = getpid();
  std::memcpy(hello.data() + 128, &self, sizeof self);
  if (!send_msg(link.fd, attach ? kAttach : kHello, link.rank, static_cast<uint64_t>(link.nranks), hello.data(),
                hello.size())) {
    *code = ncclSystemError;
    return "ncclCommInitRank: " + where + ": the connection to " + link.hub + " failed";
  }
  if (!attach) {
    pollfd pf{link.fd, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    MsgHeader h{};
    std::vector<char> p;
    if (::poll(&pf, 1, static_cast<int>(std::max<long long>(left.count(), 0))) != 1) {
      *code = ncclSystemError;
      return "ncclCommInitRank: " + where + ": the other ranks did not all join within " +
             std::to_string(timeout().count()) + " ms (CUDL_EMU_NCCL_TIMEOUT_MS; the hub is " + link.hub + ")";
    }
    if (!read_msg(link.fd, &h, &p) || h.type != kJoined) {
      *code = h.type == kJoinFail ? ncclInvalidUsage : ncclSystemError;
      return h.type == kJoinFail ? std::string(p.begin(), p.end())
                                 : "ncclCommInitRank: " + where + ": " + link.hub + " closed the connection";
    }
  }
  link.reader = std::thread([&link] { link.read_loop(); });
  link.runner = std::thread([&link] { link.run_loop(); });
  return {};
}

// Gives comm (rank, nranks set) its connection to the hub of process pid.
ncclResult_t connect_link(ncclComm& comm, const ncclUniqueId& id, long pid, unsigned long long salt, bool attach) {
  auto link = std::make_shared<ProcLink>();
  link->rank = comm.rank;
  link->nranks = comm.nranks;
  ncclResult_t code = ncclSuccess;
  std::string e = proc_connect(*link, id, pid, salt, attach, &code);
  if (!e.empty()) {
    if (link->fd >= 0) ::close(link->fd);
    return fail(nullptr, code, e);
  }
  comm.proc = std::move(link);
  return ncclSuccess;
}

// The stream item of a collective of ranks as processes (runs with the runtime's lock held).
void proc_item(const std::shared_ptr<ProcLink>& link, const Call& c, uint64_t key) {
  std::unique_lock<std::mutex> lk(link->mu);
  if (!link->slots[key].error.empty()) {  // the call (or launch) has failed already
    link->mark_done(key, false);
    return;
  }
  lk.unlock();
  const int n = link->nranks;
  cudl_emu::count_collective(c.device, send_bytes(c, n));
  const bool sends = c.kind != Kind::Broadcast || link->rank == c.root;
  link->send(kData, key, sends ? c.send : nullptr, sends ? send_bytes(c, n) : 0);
  lk.lock();
  ncclResult_t code = ncclSuccess;
  std::string e = link->wait(lk, key, &code, [](const ProcLink::Slot& s) { return s.has_result; });
  if (!e.empty()) {
    link->mark_done(key, false);
    lk.unlock();
    cudl_emu::record_error(cudaErrorLaunchFailure, e, true);
    return;
  }
  const std::vector<char> result = std::move(link->slots[key].result);
  link->mark_done(key, false);
  link->cv.notify_all();
  lk.unlock();
  std::memcpy(c.recv, result.data(), std::min(result.size(), recv_bytes(c, n)));
}

ncclResult_t proc_submit(ncclComm_t comm, const Call& c, const char* api) {
  std::shared_ptr<ProcLink> link = comm->proc;
  if (cudl_emu::is_capturing(c.stream)) {
    cudl_emu::PerLaunch make = [comm, link, c](cudaStream_t stream, int device, uint64_t seq) {
      Call call = c;
      call.stream = stream;
      call.device = device;
      call.replay = true;
      const uint64_t key = comm->next++;
      {
        std::lock_guard<std::mutex> lk(link->mu);
        ProcLink::Slot& s = link->slots[key];
        s.stream = stream;
        s.device = device;
        s.seq = seq;
        s.queued = true;
        link->cv.notify_all();
      }
      const WireCall w = to_wire(call);
      link->send(kArrive, key, &w, sizeof w);
      cudl_emu::LaunchedWork work;
      work.run = [link, call, key] { proc_item(link, call, key); };
      work.ready = [link, key] {
        std::lock_guard<std::mutex> lk(link->mu);
        if (link->finished(key)) return true;
        const ProcLink::Slot& s = link->slots.at(key);
        return s.go || !s.error.empty() || link->closed;
      };
      work.wait = [comm, link, key]() -> std::string {
        std::unique_lock<std::mutex> lk(link->mu);
        ncclResult_t code = ncclSuccess;
        std::string e = link->wait(lk, key, &code, [](const ProcLink::Slot& s) { return s.go; });
        link->mark_done(key, true);
        if (!e.empty()) comm->last_error = e;
        return e;
      };
      return work;
    };
    return record_per_launch(comm, c, api, std::move(make));
  }
  const uint64_t key = comm->next++;
  const WireCall w = to_wire(c);
  link->send(kArrive, key, &w, sizeof w);
  {
    std::unique_lock<std::mutex> lk(link->mu);
    ncclResult_t code = ncclSuccess;
    std::string e = link->wait(lk, key, &code, [](const ProcLink::Slot& s) { return s.go; });
    link->slots[key].host_done = true;
    if (!e.empty()) return fail(comm, code, e);
  }
  uint64_t seq = 0;
  cudaError_t e = cudl_emu::enqueue_on(
      c.device, c.stream, cudl_emu::WorkKind::Library, api, [link, c, key] { proc_item(link, c, key); }, &seq);
  std::lock_guard<std::mutex> lk(link->mu);
  ProcLink::Slot& s = link->slots[key];
  if (e != cudaSuccess) {
    s.error =
        std::string(api) + ": queueing rank " + std::to_string(comm->rank) + "'s part failed: " + cudaGetErrorString(e);
    link->cv.notify_all();
    return fail(comm, ncclUnhandledCudaError, s.error);
  }
  s.stream = c.stream;
  s.device = c.device;
  s.seq = seq;
  s.queued = true;
  link->cv.notify_all();
  return ncclSuccess;
}

ncclResult_t submit(ncclComm_t comm, Call c, const char* api) {
  if (!comm) return fail(nullptr, ncclInvalidArgument, std::string(api) + ": comm is null");
  const size_t esize = type_size(c.type);
  if (esize == 0) return fail(comm, ncclInvalidArgument, std::string(api) + ": datatype " + std::to_string(c.type));
  if (reduces(c.kind)) {
    const bool fp = c.type == ncclFloat32 || c.type == ncclFloat64;
    const bool integer = c.type == ncclInt32 || c.type == ncclInt64;
    if (!(c.op == ncclSum && (fp || integer)) && !(c.op == ncclAvg && fp))
      return fail(comm, ncclInvalidArgument, std::string(api) + ": " + describe(c) + " is not emulated (sum of " +
                                                 "float32/float64/int32/int64, avg of float32/float64)");
  }
  const int n = comm->nranks;
  if (c.kind == Kind::Broadcast && (c.root < 0 || c.root >= n))
    return fail(comm, ncclInvalidArgument, std::string(api) + ": root " + std::to_string(c.root) + " of " +
                                               std::to_string(n) + " ranks");
  int sd = comm->device;
  if (c.stream && cudaStreamGetDevice(c.stream, &sd) != cudaSuccess) {
    (void)cudaGetLastError();
    return fail(comm, ncclInvalidArgument, std::string(api) + ": invalid stream");
  }
  if (sd != comm->device)
    return fail(comm, ncclInvalidArgument, std::string(api) + ": rank " + std::to_string(comm->rank) +
                                               "'s communicator is on device " + std::to_string(comm->device) +
                                               ", the stream on device " + std::to_string(sd));
  const bool sends = c.kind != Kind::Broadcast || c.root == comm->rank;
  for (auto [p, bytes, role] : {std::tuple<const void*, size_t, const char*>{sends ? c.send : nullptr,
                                                                             send_bytes(c, n), "sendbuff"},
                                {c.recv, recv_bytes(c, n), "recvbuff"}}) {
    if (!p || bytes == 0) continue;
    if (!cudl_emu::is_device_range(p, bytes) || cudl_emu::pointer_device(p) != comm->device)
      return fail(comm, ncclInvalidArgument, std::string(api) + ": " + role + " of rank " +
                                                 std::to_string(comm->rank) + " (" + std::to_string(bytes) +
                                                 " bytes) is not device memory of device " +
                                                 std::to_string(comm->device));
  }
  c.device = comm->device;
  if (comm->proc) return proc_submit(comm, c, api);
  if (cudl_emu::is_capturing(c.stream)) {
    // Captured: each launch of the graph is a new collective of this communicator, in launch order.
    cudl_emu::PerLaunch make = [comm, c, api](cudaStream_t stream, int device, uint64_t seq) {
      Call call = c;
      call.stream = stream;
      call.device = device;
      call.replay = true;
      ncclResult_t code = ncclSuccess;
      std::string error;
      std::shared_ptr<Round> rp = arrive(comm, call, seq, api, &code, &error);
      cudl_emu::LaunchedWork w;
      if (!rp) {
        comm->last_error = error;
        w.run = [] {};
        w.wait = [error] { return error; };
        return w;
      }
      std::shared_ptr<Clique> cl = comm->clique;
      const int rank = comm->rank;
      w.run = [cl, rp, rank] { run_collective(cl, rp, rank); };
      w.ready = [cl, rp] {  // every rank has launched its part, or the round failed
        std::lock_guard<std::mutex> lk(cl->mu);
        return rp->enqueued || !rp->error.empty();
      };
      w.wait = [comm, cl, rp, rank]() -> std::string {
        if (t_group > 0) {  // one thread launching several ranks' graphs: waited for at ncclGroupEnd
          t_pending_rounds.push_back({cl, rp, rank});
          return {};
        }
        ncclResult_t code = ncclSuccess;
        std::string e = wait_round(cl, rp, rank, &code);
        if (!e.empty()) comm->last_error = e;
        return e;
      };
      return w;
    };
    return record_per_launch(comm, c, api, std::move(make));
  }
  ncclResult_t code = ncclSuccess;
  std::string error;
  std::shared_ptr<Round> rp = arrive(comm, c, 0, api, &code, &error);
  if (!rp) return fail(comm, code, error);
  if (t_group > 0) {
    t_pending_rounds.push_back({comm->clique, rp, comm->rank});
    return ncclSuccess;
  }
  return wait_round(comm, comm->clique, rp, comm->rank);
}

ncclResult_t wait_joined(const std::shared_ptr<Clique>& cl) {
  std::unique_lock<std::mutex> lk(cl->mu);
  if (!cl->cv.wait_for(lk, timeout(), [&] { return cl->n_joined == cl->nranks; }))
    return fail(nullptr, ncclSystemError,
                "ncclCommInitRank: rank(s) " + missing(cl->joined) + " of " + std::to_string(cl->nranks) +
                    " did not join within " + std::to_string(timeout().count()) + " ms (CUDL_EMU_NCCL_TIMEOUT_MS)");
  return ncclSuccess;
}

}  // namespace

extern "C" {

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_error.c_str() : t_last_error.c_str(); }

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return fail(nullptr, ncclInvalidArgument, "ncclGetVersion: version is null");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return fail(nullptr, ncclInvalidArgument, "ncclGetUniqueId: uniqueId is null");
  static std::atomic<uint64_t> counter{1};
  const Listener& l = listener();  // ranks of other processes join through it
  if (!l.error.empty()) return fail(nullptr, ncclSystemError, "ncclGetUniqueId: " + l.error);
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "cudl-emu-nccl:%llx:%llu:%ld", l.salt,
                static_cast<unsigned long long>(counter++), l.pid);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (!comm) return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: comm is null");
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: rank " + std::to_string(rank) + " of " +
                                                  std::to_string(nranks) + " ranks");
  unsigned long long salt = 0;
  long pid = 0;
  if (!parse_id(id, &salt, &pid))
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: the unique id is not one ncclGetUniqueId made");
  auto c = std::make_unique<ncclComm>();
  c->rank = rank;
  c->nranks = nranks;
  if (cudaGetDevice(&c->device) != cudaSuccess)
    return fail(nullptr, ncclUnhandledCudaError, "ncclCommInitRank: cudaGetDevice");
  if (pid != static_cast<long>(getpid())) {  // a rank of another process than the id's: ranks as processes
    if (t_group > 0)
      return fail(nullptr, ncclInvalidUsage,
                  "ncclCommInitRank: rank " + std::to_string(rank) +
                      " joins another process's communicator inside a group (not emulated)");
    if (ncclResult_t r = connect_link(*c, id, pid, salt, false)) return r;
    *comm = c.release();
    return ncclSuccess;
  }
  const std::string key(id.internal, sizeof id.internal);
  std::shared_ptr<Clique> cl;
  {
    std::lock_guard<std::mutex> g(g_mu);
    auto& slot = cliques()[key];
    if (!slot) slot = new_clique(nranks);
    cl = slot;
  }
  c->clique = cl;
  {
    std::lock_guard<std::mutex> lk(cl->mu);
    if (cl->nranks != nranks)
      return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: rank " + std::to_string(rank) + " says " +
                                                    std::to_string(nranks) + " ranks, the first rank said " +
                                                    std::to_string(cl->nranks));
    if (cl->joined[rank])
      return fail(nullptr, ncclInvalidUsage, "ncclCommInitRank: rank " + std::to_string(rank) + " joined twice");
    cl->joined[rank] = 1;
    cl->pids[rank] = getpid();
    ++cl->n_joined;
    hub_maybe_joined(*cl);
    cl->cv.notify_all();
  }
  if (t_group > 0) {
    t_pending_inits.push_back(cl);
  } else if (ncclResult_t r = wait_joined(cl)) {
    std::lock_guard<std::mutex> lk(cl->mu);
    for (int j = 0; j < cl->nranks; ++j)  // the ranks of other processes learn it too
      if (cl->fds[j] >= 0) (void)send_msg(cl->fds[j], kJoinFail, j, 0, t_last_error.data(), t_last_error.size());
    return r;
  }
  bool processes = false;
  {
    std::lock_guard<std::mutex> lk(cl->mu);
    processes = cl->processes;
    if (!cl->join_error.empty()) return fail(nullptr, ncclInvalidUsage, cl->join_error);
  }
  if (processes) {  // some rank joined from another process: this one talks to the hub (here) too
    if (t_group > 0)
      return fail(nullptr, ncclInvalidUsage, "ncclCommInitRank: ranks as processes inside a group (not emulated)");
    if (ncclResult_t r = connect_link(*c, id, pid, salt, true)) return r;
  }
  *comm = c.release();
  return ncclSuccess;
}

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  if (!comms || ndev < 1) return fail(nullptr, ncclInvalidArgument, "ncclCommInitAll: comms null or ndev < 1");
  int count = 0;
  (void)cudaGetDeviceCount(&count);
  auto cl = new_clique(ndev);
  cl->joined.assign(ndev, 1);
  cl->n_joined = ndev;
  for (int i = 0; i < ndev; ++i) {
    const int d = devlist ? devlist[i] : i;
    if (d < 0 || d >= count)
      return fail(nullptr, ncclInvalidArgument, "ncclCommInitAll: device " + std::to_string(d) + " of " +
                                                    std::to_string(count));
  }
  for (int i = 0; i < ndev; ++i) {
    comms[i] = new ncclComm;
    comms[i]->clique = cl;
    comms[i]->nranks = ndev;
    comms[i]->rank = i;
    comms[i]->device = devlist ? devlist[i] : i;
  }
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  return comm ? ncclSuccess : fail(nullptr, ncclInvalidArgument, "ncclCommFinalize: comm is null");
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm && comm->proc) comm->proc->stop();
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  if (!comm || !asyncError) return fail(comm, ncclInvalidArgument, "ncclCommGetAsyncError: null argument");
  *asyncError = ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!comm || !count) return fail(comm, ncclInvalidArgument, "ncclCommCount: null argument");
  *count = comm->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (!comm || !device) return fail(comm, ncclInvalidArgument, "ncclCommCuDevice: null argument");
  *device = comm->device;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!comm || !rank) return fail(comm, ncclInvalidArgument, "ncclCommUserRank: null argument");
  *rank = comm->rank;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return submit(comm, Call{Kind::AllReduce, sendbuff, recvbuff, count, datatype, op, 0, stream, 0}, "ncclAllReduce");
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  return submit(comm, Call{Kind::Broadcast, sendbuff, recvbuff, count, datatype, ncclSum, root, stream, 0},
                "ncclBroadcast");
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  return submit(comm, Call{Kind::AllGather, sendbuff, recvbuff, sendcount, datatype, ncclSum, 0, stream, 0},
                "ncclAllGather");
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return submit(comm, Call{Kind::ReduceScatter, sendbuff, recvbuff, recvcount, datatype, op, 0, stream, 0},
                "ncclReduceScatter");
}

ncclResult_t ncclGroupStart() {
  ++t_group;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (t_group == 0) return fail(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--t_group > 0) return ncclSuccess;
  std::vector<std::shared_ptr<Clique>> inits;
  inits.swap(t_pending_inits);
  std::vector<PendingRound> rounds;
  rounds.swap(t_pending_rounds);
  ncclResult_t result = ncclSuccess;
  for (auto& cl : inits)
    if (ncclResult_t r = wait_joined(cl); r && !result) result = r;
  for (auto& p : rounds)
    if (ncclResult_t r = wait_round(nullptr, p.clique, p.round, p.rank); r && !result) result = r;
  return result;
}

}  // extern "C"
