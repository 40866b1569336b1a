// tests/emu/src/nccl.cpp — an emulated NCCL subset for the emulated devices of one process: ranks
// are host threads (ncclCommInitRank) or communicators driven from one thread inside a group
// (ncclCommInitAll + ncclGroupStart/End). ncclGetUniqueId, ncclCommInitRank/InitAll, ncclAllReduce
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

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "emu/runtime.hpp"
#include "internal.hpp"

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

struct Clique {
  int nranks = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<char> joined;
  int n_joined = 0;
  std::map<uint64_t, std::shared_ptr<Round>> rounds;  // until done
};

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

struct ncclComm {
  std::shared_ptr<Clique> clique;
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
  std::vector<char> result;
  if (c.kind == Kind::Broadcast) {
    result = r.data[c.root];
  } else if (c.kind == Kind::AllGather) {
    for (int j = 0; j < n; ++j) result.insert(result.end(), r.data[j].begin(), r.data[j].end());
  } else {
    const bool avg = c.op == ncclAvg;
    const size_t total = c.kind == Kind::ReduceScatter ? c.count * n : c.count;
    switch (c.type) {
      case ncclFloat32: reduce_into<float>(result, r.data, total, avg); break;
      case ncclFloat64: reduce_into<double>(result, r.data, total, avg); break;
      case ncclInt32: reduce_into<int32_t>(result, r.data, total, avg); break;
      case ncclInt64: reduce_into<int64_t>(result, r.data, total, avg); break;
      default: break;  // refused when called
    }
  }
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
  const int n = comm->clique->nranks;
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
    if (cudaError_t e = cudl_emu::capture_per_launch(c.stream, cudl_emu::WorkKind::Library, api, std::move(make)))
      return fail(comm, ncclUnhandledCudaError, std::string(api) + ": recording into the capture failed: " +
                                                    cudaGetErrorString(e));
    return ncclSuccess;
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
  static const uint64_t salt = std::random_device{}();
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "cudl-emu-nccl:%llx:%llu", static_cast<unsigned long long>(salt),
                static_cast<unsigned long long>(counter++));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (!comm) return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: comm is null");
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: rank " + std::to_string(rank) + " of " +
                                                  std::to_string(nranks) + " ranks");
  const std::string key(id.internal, sizeof id.internal);
  std::shared_ptr<Clique> cl;
  {
    std::lock_guard<std::mutex> g(g_mu);
    auto& slot = cliques()[key];
    if (!slot) {
      slot = std::make_shared<Clique>();
      slot->nranks = nranks;
      slot->joined.assign(nranks, 0);
    }
    cl = slot;
  }
  auto c = std::make_unique<ncclComm>();
  c->clique = cl;
  c->rank = rank;
  if (cudaGetDevice(&c->device) != cudaSuccess) return fail(nullptr, ncclUnhandledCudaError, "ncclCommInitRank: cudaGetDevice");
  {
    std::lock_guard<std::mutex> lk(cl->mu);
    if (cl->nranks != nranks)
      return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: rank " + std::to_string(rank) + " says " +
                                                    std::to_string(nranks) + " ranks, the first rank said " +
                                                    std::to_string(cl->nranks));
    if (cl->joined[rank])
      return fail(nullptr, ncclInvalidUsage, "ncclCommInitRank: rank " + std::to_string(rank) + " joined twice");
    cl->joined[rank] = 1;
    ++cl->n_joined;
    cl->cv.notify_all();
  }
  if (t_group > 0) {
    t_pending_inits.push_back(cl);
  } else if (ncclResult_t r = wait_joined(cl)) {
    return r;
  }
  *comm = c.release();
  return ncclSuccess;
}

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  if (!comms || ndev < 1) return fail(nullptr, ncclInvalidArgument, "ncclCommInitAll: comms null or ndev < 1");
  int count = 0;
  (void)cudaGetDeviceCount(&count);
  auto cl = std::make_shared<Clique>();
  cl->nranks = ndev;
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
    comms[i]->rank = i;
    comms[i]->device = devlist ? devlist[i] : i;
  }
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  return comm ? ncclSuccess : fail(nullptr, ncclInvalidArgument, "ncclCommFinalize: comm is null");
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
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
  *count = comm->clique->nranks;
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
