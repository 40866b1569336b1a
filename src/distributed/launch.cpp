// distributed/launch.cpp — ranks as processes: the launcher's environment (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and joining the job through rank 0's TCP store.
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <string>

#include "backend/communicator.hpp"
#include "cudl/distributed.hpp"
#include "cudl/error.hpp"
#include "distributed/tcp_store.hpp"

namespace cudl::distributed {
namespace {

constexpr const char* kHint =
    " (a launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT: scripts/cudlrun, torchrun, or "
    "under Slurm/mpirun as docs/distributed.md shows)";

std::string env_or_fail(const char* name) {
  const char* v = std::getenv(name);
  if (!v) CUDL_FAIL("init_from_env: ", name, " is not set", kHint);
  return v;
}

long env_int(const char* name, long lo, long hi) {
  const std::string v = env_or_fail(name);
  errno = 0;
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE)
    CUDL_FAIL("init_from_env: ", name, "='", v, "' is not an integer", kHint);
  if (x < lo || x > hi) CUDL_FAIL("init_from_env: ", name, "=", x, " is outside ", lo, "..", hi);
  return x;
}

}  // namespace

bool launched() { return std::getenv("RANK") || std::getenv("WORLD_SIZE"); }

LaunchEnv launch_env() {
  LaunchEnv e;
  e.world_size = static_cast<int>(env_int("WORLD_SIZE", 1, 1 << 20));
  e.rank = static_cast<int>(env_int("RANK", 0, 1 << 20));
  if (e.rank >= e.world_size)
    CUDL_FAIL("init_from_env: RANK=", e.rank, " is not below WORLD_SIZE=", e.world_size, " (ranks are 0 .. ",
              e.world_size - 1, ")");
  e.local_rank = static_cast<int>(env_int("LOCAL_RANK", 0, 1 << 20));
  if (e.local_rank > e.rank)
    CUDL_FAIL("init_from_env: LOCAL_RANK=", e.local_rank, " is above RANK=", e.rank,
              " (the rank on this machine cannot exceed the rank in the job)");
  e.master_addr = env_or_fail("MASTER_ADDR");
  if (e.master_addr.empty()) CUDL_FAIL("init_from_env: MASTER_ADDR is empty (the host name or address of rank 0)");
  e.master_port = static_cast<int>(env_int("MASTER_PORT", 1, 65535));
  return e;
}

std::shared_ptr<Communicator> init(const LaunchEnv& env, double timeout_seconds) {
  const std::string who = "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size);
  if (env.world_size < 1 || env.rank < 0 || env.rank >= env.world_size)
    CUDL_FAIL("distributed::init: rank ", env.rank, " of ", env.world_size);
  if (env.local_rank < 0 || env.local_rank >= cuda_device_count())
    CUDL_FAIL("distributed::init: ", who, ": LOCAL_RANK=", env.local_rank, " names cuda:", env.local_rank,
              ", but this process sees ", cuda_device_count(), " CUDA device(s)",
              cuda_device_count() == 0 ? " (" + cuda_unavailable_reason() + ")"
                                       : std::string(" (one process per GPU: LOCAL_RANK 0 .. devices-1)"));
  if (!(timeout_seconds > 0)) CUDL_FAIL("distributed::init: timeout_seconds must be > 0, got ", timeout_seconds);
  const auto timeout = std::chrono::milliseconds(static_cast<long long>(timeout_seconds * 1000));
  CommunicatorId id{};
  std::unique_ptr<TcpStore> store;  // kept until every rank has joined (then all have read the id)
  if (env.world_size > 1) {
    if (env.rank == 0) {
      store = TcpStore::serve(env.master_port, who);
      id = cuda_communicator_id();
      store->set("cudl/nccl_unique_id", std::string(id.data(), id.size()));
    } else {
      store = TcpStore::connect(env.master_addr, env.master_port, timeout, who);
      const std::string v = store->get("cudl/nccl_unique_id", timeout);
      if (v.size() != id.size())
        CUDL_FAIL(who, ": the NCCL unique id from the TCP store has ", v.size(), " bytes, not ", id.size());
      std::copy(v.begin(), v.end(), id.begin());
    }
  } else {
    id = cuda_communicator_id();
  }
  return std::shared_ptr<Communicator>(
      new Communicator(make_cuda_communicator(id, env.world_size, env.rank, env.local_rank)));
}

std::shared_ptr<Communicator> init_from_env(double timeout_seconds) { return init(launch_env(), timeout_seconds); }

}  // namespace cudl::distributed
