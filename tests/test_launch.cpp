// tests/test_launch.cpp — ranks as processes, the parts one process can test: the TCP store (keys
// exchanged between rank 0's server and clients, a get that nobody answers, a store that is not
// there), the launcher's environment (missing and malformed variables named with their values),
// and two ranks joining through the store (threads here, on two emulated devices; the two-process
// run is tests/launch/two_process_mnist.sh).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "cudl/distributed.hpp"
#include "distributed/tcp_store.hpp"
#include "testing.hpp"

using namespace cudl;
using distributed::TcpStore;
using std::chrono::milliseconds;

namespace {

int free_port() {
  return TcpStore::serve(0, "test")->port();  // the kernel's choice, released again
}

TEST(TcpStore, ExchangesKeysBetweenServerAndClients) {
  auto server = TcpStore::serve(0, "rank 0 of 3");
  ASSERT_GT(server->port(), 0);
  std::string got_by_1, got_by_2;
  std::thread t1([&] {
    auto c = TcpStore::connect("127.0.0.1", server->port(), milliseconds(5000), "rank 1 of 3");
    got_by_1 = c->get("id", milliseconds(5000));  // waits: set 100 ms later
    c->set("from 1", std::string("\0binary\xff", 8));
  });
  std::thread t2([&] {
    auto c = TcpStore::connect("localhost", server->port(), milliseconds(5000), "rank 2 of 3");
    got_by_2 = c->get("id", milliseconds(5000));
    EXPECT_EQ(c->get("from 1", milliseconds(5000)), std::string("\0binary\xff", 8)) << "one client to another";
  });
  std::this_thread::sleep_for(milliseconds(100));
  server->set("id", "the id");
  t1.join();
  t2.join();
  EXPECT_EQ(got_by_1, "the id");
  EXPECT_EQ(got_by_2, "the id");
  EXPECT_EQ(server->get("from 1", milliseconds(100)), std::string("\0binary\xff", 8));
}

TEST(TcpStore, AGetThatNobodyAnswersTimesOutNamingTheKeyAndTheStore) {
  auto server = TcpStore::serve(0, "rank 0 of 2");
  auto client = TcpStore::connect("127.0.0.1", server->port(), milliseconds(5000), "rank 1 of 2");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = cudl::testing::error_message([&] { client->get("never", milliseconds(300)); });
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(290));
  EXPECT_NE(e.find("rank 1 of 2: the TCP store at MASTER_ADDR:MASTER_PORT = 127.0.0.1:" +
                   std::to_string(server->port()) + " did not have 'never' within 300 ms"),
            std::string::npos)
      << e;
  const std::string s = cudl::testing::error_message([&] { server->get("never", milliseconds(50)); });
  EXPECT_NE(s.find("rank 0 of 2: no rank set 'never'"), std::string::npos) << s;
}

TEST(TcpStore, NoStoreIsAConnectTimeoutNamingMasterAddrPortAndTheRank) {
  const int port = free_port();
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e =
      cudl::testing::error_message([&] { TcpStore::connect("127.0.0.1", port, milliseconds(300), "rank 1 of 2"); });
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(290));
  EXPECT_NE(e.find("rank 1 of 2 could not connect to the TCP store at MASTER_ADDR:MASTER_PORT = 127.0.0.1:" +
                   std::to_string(port) + " within 300 ms: Connection refused"),
            std::string::npos)
      << e;
  // Rank 0 cannot serve on a port that is taken.
  auto taken = TcpStore::serve(0, "x");
  const std::string busy = cudl::testing::error_message([&] { TcpStore::serve(taken->port(), "rank 0 of 2"); });
  EXPECT_NE(busy.find("rank 0 of 2 cannot serve the TCP store on MASTER_PORT=" + std::to_string(taken->port()) +
                      ": Address already in use"),
            std::string::npos)
      << busy;
}

// Sets the launcher's variables (nullptr: unset) and returns launch_env()'s error, "" when none.
std::string env_error(const char* rank, const char* world, const char* local, const char* addr, const char* port) {
  const char* names[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"};
  const char* values[] = {rank, world, local, addr, port};
  for (int i = 0; i < 5; ++i) values[i] ? setenv(names[i], values[i], 1) : unsetenv(names[i]);
  std::string e = cudl::testing::error_message([] { distributed::launch_env(); });
  for (const char* n : names) unsetenv(n);
  return e;
}

TEST(LaunchEnv, MissingOrMalformedVariablesAreErrorsNamingThem) {
  EXPECT_EQ(env_error("1", "2", "1", "127.0.0.1", "29500"), "<no error>");
  setenv("RANK", "3", 1);
  setenv("WORLD_SIZE", "4", 1);
  setenv("LOCAL_RANK", "1", 1);
  setenv("MASTER_ADDR", "node7", 1);
  setenv("MASTER_PORT", "29501", 1);
  EXPECT_TRUE(distributed::launched());
  const distributed::LaunchEnv e = distributed::launch_env();
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "node7");
  EXPECT_EQ(e.master_port, 29501);
  for (const char* n : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) unsetenv(n);
  EXPECT_FALSE(distributed::launched());
  struct Case {
    std::vector<const char*> env;
    std::string message;
  };
  const Case cases[] = {
      {{nullptr, "2", "0", "h", "1"}, "init_from_env: RANK is not set (a launcher sets RANK, WORLD_SIZE"},
      {{"0", nullptr, "0", "h", "1"}, "init_from_env: WORLD_SIZE is not set"},
      {{"0", "2", nullptr, "h", "1"}, "init_from_env: LOCAL_RANK is not set"},
      {{"0", "2", "0", nullptr, "1"}, "init_from_env: MASTER_ADDR is not set"},
      {{"0", "2", "0", "h", nullptr}, "init_from_env: MASTER_PORT is not set"},
      {{"one", "2", "0", "h", "1"}, "init_from_env: RANK='one' is not an integer"},
      {{"0", "2x", "0", "h", "1"}, "init_from_env: WORLD_SIZE='2x' is not an integer"},
      {{"2", "2", "0", "h", "1"}, "init_from_env: RANK=2 is not below WORLD_SIZE=2 (ranks are 0 .. 1)"},
      {{"-1", "2", "0", "h", "1"}, "init_from_env: RANK=-1 is outside 0..1048576"},
      {{"0", "0", "0", "h", "1"}, "init_from_env: WORLD_SIZE=0 is outside 1..1048576"},
      {{"1", "2", "2", "h", "1"}, "init_from_env: LOCAL_RANK=2 is above RANK=1"},
      {{"0", "2", "0", "", "1"}, "init_from_env: MASTER_ADDR is empty"},
      {{"0", "2", "0", "h", "70000"}, "init_from_env: MASTER_PORT=70000 is outside 1..65535"},
      {{"0", "2", "0", "h", ""}, "init_from_env: MASTER_PORT='' is not an integer"},
  };
  for (const Case& c : cases) {
    const std::string e = env_error(c.env[0], c.env[1], c.env[2], c.env[3], c.env[4]);
    EXPECT_NE(e.find(c.message), std::string::npos) << "expected: " << c.message << "\ngot: " << e;
  }
}

TEST(Launch, TwoRanksJoinThroughTheStoreAndReduce) {
  CUDL_REQUIRE_CUDA();
  if (cuda_device_count() < 2)
    GTEST_SKIP() << "needs 2 CUDA devices (ctest sets CUDL_EMU_DEVICES=2); this run has " << cuda_device_count();
  const int port = free_port();
  std::vector<std::vector<float>> result(2);
  std::vector<std::string> errors(2);
  auto rank_main = [&](int rank) {
    errors[rank] = cudl::testing::error_message([&] {
      distributed::LaunchEnv env;
      env.rank = rank;
      env.world_size = 2;
      env.local_rank = rank;
      env.master_addr = "127.0.0.1";
      env.master_port = port;
      auto comm = distributed::init(env, 30);
      EXPECT_EQ(comm->rank(), rank);
      EXPECT_EQ(comm->size(), 2);
      EXPECT_EQ(comm->device(), Device::cuda(rank));
      Tensor t = Tensor::from_vector(std::vector<float>{1.f + rank, 10.f * (rank + 1)}, Shape{2}, comm->device());
      comm->all_reduce(t);
      result[rank] = t.to(Device::cpu()).to_vector<float>();
    });
  };
  std::thread t1(rank_main, 1);
  rank_main(0);
  t1.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(errors[r], "<no error>") << "rank " << r;
    EXPECT_EQ(result[r], (std::vector<float>{3.f, 30.f})) << "rank " << r;
  }
  // A rank whose store never comes fails naming the store's address and itself.
  distributed::LaunchEnv lonely;
  lonely.rank = 1;
  lonely.world_size = 2;
  lonely.local_rank = 1;
  lonely.master_addr = "127.0.0.1";
  lonely.master_port = free_port();
  const std::string e = cudl::testing::error_message([&] { distributed::init(lonely, 0.3); });
  EXPECT_NE(e.find("rank 1 of 2 could not connect to the TCP store at MASTER_ADDR:MASTER_PORT = 127.0.0.1:" +
                   std::to_string(lonely.master_port) + " within 300 ms"),
            std::string::npos)
      << e;
  lonely.local_rank = 7;
  const std::string d = cudl::testing::error_message([&] { distributed::init(lonely, 0.3); });
  EXPECT_NE(d.find("rank 1 of 2: LOCAL_RANK=7 names cuda:7, but this process sees 2 CUDA device(s)"), std::string::npos)
      << d;
}

}  // namespace
