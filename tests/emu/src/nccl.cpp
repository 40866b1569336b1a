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
#include <vector>

#include "emu/runtime.hpp"
#include "internal.hpp"

namespace {

enum class Kind { AllReduce, Broadcast };

struct Call {
  Kind kind = Kind::AllReduce;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;
  ncclDataType_t type = ncclFloat32;
  ncclRedOp_t op = ncclSum;
  int root = 0;
  cudaStream_t stream = nullptr;
  int device = 0;
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

std::string describe(const Call& c) {
  std::string s = c.kind == Kind::AllReduce ? "ncclAllReduce(" : "ncclBroadcast(";
  s += "count " + std::to_string(c.count) + ", " + type_name(c.type);
  if (c.kind == Kind::AllReduce) s += c.op == ncclSum ? ", sum" : c.op == ncclAvg ? ", avg" : ", op " + std::to_string(c.op);
  if (c.kind == Kind::Broadcast) s += ", root " + std::to_string(c.root);
  return s + ")";
}

bool same(const Call& a, const Call& b) {
  return a.kind == b.kind && a.count == b.count && a.type == b.type &&
         (a.kind != Kind::AllReduce || a.op == b.op) && (a.kind != Kind::Broadcast || a.root == b.root);
}

struct Round {
  std::vector<Call> calls;
  std::vector<char> arrived, reached;
  std::vector<uint64_t> seq;
  int n_arrived = 0;
  bool enqueued = false;
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
  std::map<uint64_t, Round> rounds;
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
  uint64_t key;
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

// The stream item of rank `rank` for round `key` (runs with the runtime's lock held).
void run_collective(const std::shared_ptr<Clique>& cl, uint64_t key, int rank) {
  std::unique_lock<std::mutex> lk(cl->mu);
  Round& r = cl->rounds.at(key);
  if (!r.error.empty() || r.done || r.reached[rank]) return;
  r.reached[rank] = 1;
  const Call& c = r.calls[rank];
  const size_t bytes = c.count * type_size(c.type);
  if (c.kind == Kind::AllReduce || rank == c.root) {
    const char* src = static_cast<const char*>(c.send);
    r.data[rank].assign(src, src + bytes);
  }
  for (int j = 0; j < cl->nranks; ++j) {
    if (r.reached[j]) continue;
    const Call cj = r.calls[j];
    const uint64_t sj = r.seq[j];
    lk.unlock();
    cudl_emu::run_upto(cj.device, cj.stream, sj);  // that rank's stream up to its part of the collective
    lk.lock();
  }
  if (r.done) return;
  for (int j = 0; j < cl->nranks; ++j)
    if (!r.reached[j]) return;  // a stream could not get there (a sticky error stopped it)
  std::vector<char> result;
  if (c.kind == Kind::Broadcast) {
    result = r.data[c.root];
  } else {
    std::vector<std::vector<char>> data = r.data;
    const bool avg = c.op == ncclAvg;
    switch (c.type) {
      case ncclFloat32: reduce_into<float>(result, data, c.count, avg); break;
      case ncclFloat64: reduce_into<double>(result, data, c.count, avg); break;
      case ncclInt32: reduce_into<int32_t>(result, data, c.count, avg); break;
      case ncclInt64: reduce_into<int64_t>(result, data, c.count, avg); break;
      default: break;  // refused when called
    }
  }
  for (int j = 0; j < cl->nranks; ++j) std::memcpy(r.calls[j].recv, result.data(), bytes);
  r.done = true;
  r.data.clear();
}

// Waits until round `key` is queued on every rank's stream (or failed).
ncclResult_t wait_round(ncclComm_t comm, const std::shared_ptr<Clique>& cl, uint64_t key, int rank) {
  std::unique_lock<std::mutex> lk(cl->mu);
  Round& r = cl->rounds.at(key);
  const auto deadline = std::chrono::steady_clock::now() + timeout();
  while (!r.enqueued && r.error.empty()) {
    if (cl->cv.wait_until(lk, deadline) == std::cv_status::timeout && !r.enqueued && r.error.empty()) {
      r.error = describe(r.calls[rank]) + " #" + std::to_string(key) + ": rank(s) " + missing(r.arrived) + " of " +
                std::to_string(cl->nranks) + " did not call it within " + std::to_string(timeout().count()) +
                " ms (CUDL_EMU_NCCL_TIMEOUT_MS); rank " + std::to_string(rank) + " waited";
      cl->cv.notify_all();
      return fail(comm, ncclSystemError, r.error);
    }
  }
  if (!r.error.empty()) return fail(comm, ncclInvalidUsage, r.error);
  return ncclSuccess;
}

ncclResult_t submit(ncclComm_t comm, Call c, const char* api) {
  if (!comm) return fail(nullptr, ncclInvalidArgument, std::string(api) + ": comm is null");
  const size_t esize = type_size(c.type);
  if (esize == 0) return fail(comm, ncclInvalidArgument, std::string(api) + ": datatype " + std::to_string(c.type));
  if (c.kind == Kind::AllReduce) {
    const bool fp = c.type == ncclFloat32 || c.type == ncclFloat64;
    const bool integer = c.type == ncclInt32 || c.type == ncclInt64;
    if (!(c.op == ncclSum && (fp || integer)) && !(c.op == ncclAvg && fp))
      return fail(comm, ncclInvalidArgument, std::string(api) + ": " + describe(c) + " is not emulated (sum of " +
                                                 "float32/float64/int32/int64, avg of float32/float64)");
  }
  if (c.kind == Kind::Broadcast && (c.root < 0 || c.root >= comm->clique->nranks))
    return fail(comm, ncclInvalidArgument, std::string(api) + ": root " + std::to_string(c.root) + " of " +
                                               std::to_string(comm->clique->nranks) + " ranks");
  int sd = comm->device;
  if (c.stream && cudaStreamGetDevice(c.stream, &sd) != cudaSuccess) {
    (void)cudaGetLastError();
    return fail(comm, ncclInvalidArgument, std::string(api) + ": invalid stream");
  }
  if (sd != comm->device)
    return fail(comm, ncclInvalidArgument, std::string(api) + ": rank " + std::to_string(comm->rank) +
                                               "'s communicator is on device " + std::to_string(comm->device) +
                                               ", the stream on device " + std::to_string(sd));
  if (cudl_emu::is_capturing(c.stream))
    return fail(comm, ncclInvalidUsage, std::string(api) + ": collectives in a CUDA graph capture are not emulated yet");
  const size_t bytes = c.count * esize;
  const bool sends = c.kind == Kind::AllReduce || c.root == comm->rank;
  for (auto [p, role] : {std::pair<const void*, const char*>{sends ? c.send : nullptr, "sendbuff"}, {c.recv, "recvbuff"}}) {
    if (!p || bytes == 0) continue;
    if (!cudl_emu::is_device_range(p, bytes) || cudl_emu::pointer_device(p) != comm->device)
      return fail(comm, ncclInvalidArgument, std::string(api) + ": " + role + " of rank " +
                                                 std::to_string(comm->rank) + " (" + std::to_string(bytes) +
                                                 " bytes) is not device memory of device " +
                                                 std::to_string(comm->device));
  }
  c.device = comm->device;
  std::shared_ptr<Clique> cl = comm->clique;
  const int n = cl->nranks;
  const uint64_t key = comm->next++;
  bool enqueue_all = false;
  {
    std::lock_guard<std::mutex> lk(cl->mu);
    Round& r = cl->rounds[key];
    if (r.calls.empty()) {
      r.calls.resize(n);
      r.arrived.assign(n, 0);
      r.reached.assign(n, 0);
      r.seq.assign(n, 0);
      r.data.resize(n);
    }
    if (!r.error.empty()) return fail(comm, ncclInvalidUsage, r.error);
    for (int j = 0; j < n; ++j)
      if (r.arrived[j] && !same(r.calls[j], c)) {
        r.error = "collective #" + std::to_string(key) + " differs across ranks: rank " + std::to_string(j) +
                  " called " + describe(r.calls[j]) + ", rank " + std::to_string(comm->rank) + " called " +
                  describe(c);
        cl->cv.notify_all();
        return fail(comm, ncclInvalidUsage, r.error);
      }
    r.calls[comm->rank] = c;
    r.arrived[comm->rank] = 1;
    enqueue_all = ++r.n_arrived == n;
  }
  if (enqueue_all) {
    // Every rank's item goes on its stream under the runtime's lock, so none runs before all are queued.
    std::lock_guard<std::recursive_mutex> runtime_lock(cudl_emu::detail::api_mutex());
    std::vector<uint64_t> seqs(n);
    std::vector<Call> calls;
    {
      std::lock_guard<std::mutex> lk(cl->mu);
      calls = cl->rounds.at(key).calls;
    }
    for (int j = 0; j < n; ++j) {
      cudaError_t e = cudl_emu::enqueue_on(calls[j].device, calls[j].stream, cudl_emu::WorkKind::Library, api,
                                           [cl, key, j] { run_collective(cl, key, j); }, &seqs[j]);
      if (e != cudaSuccess) {
        std::lock_guard<std::mutex> lk(cl->mu);
        Round& r = cl->rounds.at(key);
        r.error = std::string(api) + ": queueing rank " + std::to_string(j) + "'s part failed: " + cudaGetErrorString(e);
        cl->cv.notify_all();
        return fail(comm, ncclUnhandledCudaError, r.error);
      }
    }
    std::lock_guard<std::mutex> lk(cl->mu);
    Round& r = cl->rounds.at(key);
    r.seq = seqs;
    r.enqueued = true;
    cl->cv.notify_all();
  }
  if (t_group > 0) {
    t_pending_rounds.push_back({cl, key, comm->rank});
    return ncclSuccess;
  }
  return wait_round(comm, cl, key, comm->rank);
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
    if (ncclResult_t r = wait_round(nullptr, p.clique, p.key, p.rank); r && !result) result = r;
  return result;
}

}  // extern "C"
