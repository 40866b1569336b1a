// tests/test_data_parallel.cpp — data-parallel training with ranks as threads on emulated devices
// (ctest runs it with CUDL_EMU_DEVICES=4): the sharded sampler, parameters broadcast from rank 0,
// the same weights as one device for the same global batch and seed (N = 2 and 4), bitwise the
// same run to run, metrics over all ranks, rank-0-only checkpoints, and each rank's step counters
// (one graph launch, no allocation, no host synchronisation, all-reduce bytes == gradient bytes),
// with ranks as threads and, for the counters, as two processes (this program started again).
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <vector>

#include "cudl/checkpoint.hpp"
#include "cudl/distributed.hpp"
#include "distributed/tcp_store.hpp"
#include "graph/executor.hpp"
#include "ops/collective.hpp"
#include "testing.hpp"
#include "train/model_internals.hpp"

#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif

extern char** environ;

using namespace cudl;

namespace {

TEST(Shard, RanksGetDisjointSlicesOfEveryGlobalBatch) {
  std::vector<int32_t> order(50);
  for (int i = 0; i < 50; ++i) order[i] = (i * 7) % 50;  // some permutation
  std::set<int32_t> seen;
  for (int r = 0; r < 4; ++r) {
    const std::vector<int32_t> rows = distributed::shard(order, 12, r, 4);
    ASSERT_EQ(rows.size(), 4u * 3u) << "4 full global batches of 12 (2 rows dropped), 3 rows each";
    for (int s = 0; s < 4; ++s)
      for (int j = 0; j < 3; ++j) EXPECT_EQ(rows[s * 3 + j], order[s * 12 + r * 3 + j]) << "rank " << r;
    for (int32_t v : rows) EXPECT_TRUE(seen.insert(v).second) << "row " << v << " given twice";
  }
  EXPECT_EQ(seen.size(), 48u);
  EXPECT_NE(cudl::testing::error_message([&] { distributed::shard(order, 10, 0, 4); }).find("multiple of the 4 ranks"),
            std::string::npos);
}

class DataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    CUDL_REQUIRE_CUDA();
    if (cuda_device_count() < 4)
      GTEST_SKIP() << "needs 4 CUDA devices (ctest sets CUDL_EMU_DEVICES=4); this run has " << cuda_device_count();
  }
};

constexpr int64_t kRows = 96, kGlobalBatch = 16;  // 6 steps per epoch

Dataset blobs() { return cudl::testing::separable_blobs(kRows, 8, 3, 2.f, 0.5f, 7); }

Sequential mlp() { return Sequential(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)}, "dp"); }

CompileOptions options(Device device, uint64_t seed = 5) {
  return cudl::testing::classifier_options(device, optim::SGD(0.1, 0.9), seed);
}

struct Trained {
  std::vector<float> weights;
  History history;
};

Trained train_one_device() {
  Sequential m = mlp();
  m.compile(options(Device::cuda(0)));
  Trained r;
  r.history = m.fit(blobs(), cudl::testing::quiet_fit(2, kGlobalBatch, 3));
  r.weights = cudl::testing::flat_weights(m);
  return r;
}

// Trains on `n` ranks; returns each rank's weights and history. `seed_of_rank` gives rank r its
// own initialisation seed (the broadcast from rank 0 must make them all rank 0's).
std::vector<Trained> train_ranks(int n, bool seed_of_rank = false) {
  std::vector<Trained> runs(n);
  distributed::World(n).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
    Sequential m = mlp();
    CompileOptions o = options(comm->device(), seed_of_rank ? 100 + comm->rank() : 5);
    o.communicator = comm;
    m.compile(o);
    Trained& r = runs[comm->rank()];
    r.history = m.fit(blobs(), cudl::testing::quiet_fit(2, kGlobalBatch, 3));
    r.weights = cudl::testing::flat_weights(m);
  });
  return runs;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double scale = std::max(1.0, std::fabs(static_cast<double>(want[i])));
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    worst = std::max(worst, diff / scale);
    if (diff > rtol * scale && bad++ < 5)
      ADD_FAILURE() << what << ": weight " << i << " is " << got[i] << ", one device has " << want[i];
  }
  EXPECT_EQ(bad, 0) << what;
  std::printf("%s: largest difference from one device %.3g (relative, floor 1)\n", what.c_str(), worst);
}

TEST_F(DataParallel, TwoAndFourRanksEndWithTheWeightsOfOneDevice) {
  const Trained one = train_one_device();
  ASSERT_LT(one.history.metrics.at("loss").back(), one.history.metrics.at("loss").front()) << "it learns";
  for (int n : {2, 4}) {
    const std::vector<Trained> runs = train_ranks(n);
    for (int r = 0; r < n; ++r) {
      const std::string what = std::to_string(n) + " ranks, rank " + std::to_string(r);
      EXPECT_EQ(runs[r].weights, runs[0].weights) << what << ": every rank ends with the same bits";
      expect_close(runs[r].weights, one.weights, 1e-5, what);
      // Metrics over every rank's rows: the epoch's loss and accuracy of the one-device run.
      for (const char* k : {"loss", "accuracy"}) {
        const auto& got = runs[r].history.metrics.at(k);
        const auto& want = one.history.metrics.at(k);
        ASSERT_EQ(got.size(), want.size()) << what << " " << k;
        for (size_t e = 0; e < want.size(); ++e)
          EXPECT_NEAR(got[e], want[e], 1e-5 * std::max(1.0, std::fabs(want[e]))) << what << " " << k << " epoch " << e;
      }
    }
    if (n == 2) {  // the reduction order is fixed: the same bits run to run
      const std::vector<Trained> again = train_ranks(n);
      EXPECT_EQ(again[0].weights, runs[0].weights) << "2 ranks, run to run";
      EXPECT_EQ(again[1].weights, runs[1].weights) << "2 ranks, run to run";
    }
  }
}

// A model with two inputs (the features split 5 + 3, joined by a Concatenate) on two ranks: every
// input of a rank's batch is gathered with the same rows of its shard, so it ends with the weights
// of the single-input model on one device, started from the same weights.
TEST_F(DataParallel, TwoInputsAreShardedAlikeAndEndWithTheWeightsOfOneDevice) {
  // Inputs a (5 features) and b (3), both labelled row % 3; the whole rows are a's then b's features.
  Dataset split;
  const Dataset a5 = cudl::testing::separable_blobs(kRows, 5, 3, 2.f, 0.5f, 7);
  split.xs = {a5.x, cudl::testing::separable_blobs(kRows, 3, 3, 2.f, 0.5f, 8).x};
  split.y = a5.y;
  const std::vector<float> fa = split.xs[0].to_vector<float>(), fb = split.xs[1].to_vector<float>();
  std::vector<float> rows;
  for (int64_t i = 0; i < kRows; ++i) {
    rows.insert(rows.end(), fa.begin() + i * 5, fa.begin() + (i + 1) * 5);
    rows.insert(rows.end(), fb.begin() + i * 3, fb.begin() + (i + 1) * 3);
  }
  const Dataset whole{Tensor::from_vector(rows, Shape{kRows, 8}), split.y};
  Sequential one = mlp();
  one.compile(options(Device::cuda(0)));
  const std::vector<Tensor> initial = one.get_weights();
  one.fit(whole, cudl::testing::quiet_fit(2, kGlobalBatch, 3));
  const std::vector<float> want = cudl::testing::flat_weights(one);
  std::vector<std::vector<float>> got(2);
  distributed::World(2).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
    Var a = Input(Shape{5}, DType::f32, "a"), b = Input(Shape{3}, DType::f32, "b");
    Var h = (*layers::Dense(16, "relu"))((*layers::Concatenate())({a, b}));
    Model m({a, b}, {(*layers::Dense(3))(h)}, "dp_split");
    CompileOptions o = options(comm->device());
    o.communicator = comm;
    m.compile(o);
    m.set_weights(initial);  // every rank: the one-device model's start
    m.fit(split, cudl::testing::quiet_fit(2, kGlobalBatch, 3));
    got[comm->rank()] = cudl::testing::flat_weights(m);
  });
  EXPECT_EQ(got[1], got[0]) << "both ranks end with the same bits";
  expect_close(got[0], want, 1e-5, "two inputs, 2 ranks");
}

// Small buckets: the gradients go in several all-reduces, the first started while the backward
// pass still runs; the result is still one device's.
TEST_F(DataParallel, BucketsStartDuringTheBackwardPassAndGiveTheSameWeights) {
  const Trained one = train_one_device();
  std::vector<Trained> runs(2);
  std::vector<int> first_bucket(2, -1), last_backward(2, -1), buckets(2, 0);
  distributed::World(2).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
    comm->set_bucket_bytes(256);  // the MLP's 780 gradient bytes: logits (204), dense1 kernel, dense1 bias
    Sequential m = mlp();
    CompileOptions o = options(comm->device());
    o.communicator = comm;
    m.compile(o);
    const int r = comm->rank();
    auto exec = detail::ModelInternals::training_step(m, blobs(), kGlobalBatch / 2, graph::ExecutorOptions{});
    const auto& nodes = exec->graph().nodes();
    for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
      if (nodes[i].op == OpKind::AllReduce && nodes[i].attrs.i[2] == 1) {
        if (first_bucket[r] < 0) first_bucket[r] = i;
        ++buckets[r];
      } else if (nodes[i].phase == graph::Phase::Backward && !nodes[i].is_view()) {
        last_backward[r] = i;
      }
    }
    runs[r].history = m.fit(blobs(), cudl::testing::quiet_fit(2, kGlobalBatch, 3));
    runs[r].weights = cudl::testing::flat_weights(m);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(buckets[r], 3) << "rank " << r;
    EXPECT_GE(first_bucket[r], 0) << "rank " << r;
    EXPECT_LT(first_bucket[r], last_backward[r])
        << "rank " << r << ": the first bucket starts before the backward pass ends";
    EXPECT_EQ(runs[r].weights, runs[0].weights);
    expect_close(runs[r].weights, one.weights, 1e-5, "3 buckets, rank " + std::to_string(r));
  }
}

TEST_F(DataParallel, ParametersAreBroadcastFromRankZeroAtCompile) {
  std::vector<std::vector<float>> before(2), after(2);
  distributed::World(2).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
    const int r = comm->rank();
    Sequential solo = mlp();  // what rank r's seed alone gives
    solo.compile(options(comm->device(), 100 + r));
    before[r] = cudl::testing::flat_weights(solo);
    Sequential m = mlp();
    CompileOptions o = options(comm->device(), 100 + r);
    o.communicator = comm;
    m.compile(o);
    after[r] = cudl::testing::flat_weights(m);
  });
  ASSERT_NE(before[0], before[1]) << "planted: the ranks initialise differently";
  EXPECT_EQ(after[0], before[0]);
  EXPECT_EQ(after[1], before[0]) << "rank 1 starts from rank 0's parameters";
  // And training from different seeds still ends in lockstep.
  const std::vector<Trained> runs = train_ranks(2, /*seed_of_rank=*/true);
  EXPECT_EQ(runs[1].weights, runs[0].weights);
}

// Synchronised batch norm: a BatchNorm between a Dense (N, C) or a Conv2d (N, C, H, W) and the
// rest, with the same global batch as one device.
Sequential bn_model(bool conv, bool synchronized) {
  using namespace layers;
  if (conv)
    return Sequential(Shape{2, 2, 2},
                      {Conv2d(Conv2dOptions(4, 1).use_bias(false)), BatchNorm(0.1f, 1e-5f, "bn", synchronized),
                       Activation("relu"), Flatten(), Dense(3)},
                      "bn_cnn");
  return Sequential(Shape{8}, {Dense(16), BatchNorm(0.1f, 1e-5f, "bn", synchronized), Activation("relu"), Dense(3)},
                    "bn_mlp");
}

Dataset bn_data(bool conv) {
  Dataset d = blobs();
  if (conv) d.x = d.x.reshape(Shape{kRows, 2, 2, 2});
  return d;
}

// Parameters, then buffers (the running statistics).
std::vector<float> flat_state(Model& m) {
  std::vector<float> w = cudl::testing::flat_weights(m);
  for (auto& l : m.layers())
    for (auto& [k, t] : l->buffers()) {
      auto v = t.to(Device::cpu()).to_vector<float>();
      w.insert(w.end(), v.begin(), v.end());
    }
  return w;
}

std::vector<std::vector<float>> train_bn_ranks(int n, bool conv, bool synchronized, int* whole_reduces = nullptr) {
  std::vector<std::vector<float>> state(n);
  distributed::World(n).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
    Sequential m = bn_model(conv, synchronized);
    CompileOptions o = options(comm->device());
    o.communicator = comm;
    m.compile(o);
    if (whole_reduces && comm->rank() == 0) {
      auto exec = detail::ModelInternals::training_step(m, bn_data(conv), kGlobalBatch / n, graph::ExecutorOptions{});
      *whole_reduces = 0;
      for (const graph::Node& node : exec->graph().nodes())
        if (node.op == OpKind::AllReduce && node.attrs.i[2] == static_cast<int>(ops::AllReduceStage::kWhole))
          ++*whole_reduces;
    }
    m.fit(bn_data(conv), cudl::testing::quiet_fit(2, kGlobalBatch, 3));
    state[comm->rank()] = flat_state(m);
  });
  return state;
}

TEST_F(DataParallel, SynchronizedBatchNormRanksEndWithTheStateOfOneDeviceOverTheGlobalBatch) {
  for (bool conv : {false, true}) {
    const std::string model = conv ? "conv + batch norm" : "dense + batch norm";
    Sequential single = bn_model(conv, true);  // one device: plain batch norm over the global batch
    single.compile(options(Device::cuda(0)));
    single.fit(bn_data(conv), cudl::testing::quiet_fit(2, kGlobalBatch, 3));
    const std::vector<float> one = flat_state(single);
    for (int n : {2, 4}) {
      int whole = -1;
      const auto runs = train_bn_ranks(n, conv, true, &whole);
      EXPECT_EQ(whole, 2) << model << ": the statistics in the forward pass, the sums in the backward pass";
      for (int r = 0; r < n; ++r) {
        const std::string what = model + ", " + std::to_string(n) + " ranks, rank " + std::to_string(r);
        EXPECT_EQ(runs[r], runs[0]) << what << ": every rank ends with the same bits";
        expect_close(runs[r], one, 1e-5, "synchronized " + what);
      }
      if (n == 2) EXPECT_EQ(train_bn_ranks(2, conv, true), runs) << model << ": run to run";
    }
    // Without synchronisation each rank normalises its own 8 rows: not one device's result.
    const auto own = train_bn_ranks(2, conv, false);
    double worst = 0;
    for (size_t i = 0; i < one.size(); ++i)
      worst = std::max(worst, std::fabs(static_cast<double>(own[0][i]) - one[i]) /
                                  std::max(1.0, std::fabs(static_cast<double>(one[i]))));
    EXPECT_GT(worst, 1e-4) << model << ": per-rank batch norm should differ from one device";
    std::printf("%s, not synchronized: largest difference from one device %.3g\n", model.c_str(), worst);
  }
  // 16-bit activations: an error naming the layer (synchronised batch norm is f32 only).
  const std::string e = cudl::testing::error_message([&] {
    distributed::World(2).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
      Sequential m = bn_model(false, true);
      CompileOptions o = options(comm->device());
      o.communicator = comm;
      o.precision = Precision::bf16;
      m.compile(o);
      m.fit(bn_data(false), cudl::testing::quiet_fit(1, kGlobalBatch, 3));
    });
  });
  EXPECT_NE(e.find("bn"), std::string::npos) << e;
  EXPECT_NE(e.find("synchronized batch norm needs f32 activations"), std::string::npos) << e;
}

#if defined(CUDL_EMULATED)
// Per rank: counters of the rank's device between the ends of steps `at` and `at + 1`.
class StepWindow : public Callback {
 public:
  StepWindow(int64_t at, int device) : at_(at), device_(device) {}
  void on_batch_end(Model&, int64_t step) override {
    if (step != at_ && step != at_ + 1) return;
    (void)cudl_emu::flush_all();  // the step's queued work (and its collectives) have run
    (step == at_ ? before : after) = cudl_emu::counters(device_);
  }
  cudl_emu::Counters before, after;

 private:
  int64_t at_;
  int device_;
};
#endif

TEST_F(DataParallel, EachRankStepIsOneGraphLaunchWithoutAllocationsOrSyncs) {
#if defined(CUDL_EMULATED)
  for (int n : {2, 4}) {
    std::vector<cudl_emu::Counters> step(n);
    std::vector<size_t> grad_bytes(n);
    distributed::World(n).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
      Sequential m = mlp();
      CompileOptions o = options(comm->device());
      o.communicator = comm;
      m.compile(o);
      auto window = std::make_shared<StepWindow>(3, comm->device().index());  // steps 1-2: eager, capture
      FitOptions f = cudl::testing::quiet_fit(1, kGlobalBatch, 3);
      f.callbacks = {window};
      m.fit(blobs(), f);
      const int r = comm->rank();
      grad_bytes[r] = m.plan_report().grad_bytes;
      cudl_emu::Counters& c = step[r];
      c.graph_launches = window->after.graph_launches - window->before.graph_launches;
      c.mallocs = window->after.mallocs - window->before.mallocs;
      c.host_mallocs = window->after.host_mallocs - window->before.host_mallocs;
      c.syncs = window->after.syncs - window->before.syncs;
      c.collectives = window->after.collectives - window->before.collectives;
      c.collective_bytes = window->after.collective_bytes - window->before.collective_bytes;
    });
    const size_t params = (8 * 16 + 16 + 16 * 3 + 3) * sizeof(float);
    for (int r = 0; r < n; ++r) {
      const std::string what = std::to_string(n) + " ranks, rank " + std::to_string(r);
      EXPECT_EQ(grad_bytes[r], params) << what;
      EXPECT_EQ(step[r].graph_launches, 1u) << what;
      EXPECT_EQ(step[r].mallocs, 0u) << what;
      EXPECT_EQ(step[r].host_mallocs, 0u) << what;
      EXPECT_EQ(step[r].syncs, 0u) << what;
      EXPECT_EQ(step[r].collective_bytes, params) << what << ": all-reduce bytes per step == gradient bytes";
      EXPECT_EQ(step[r].collectives, 1u) << what << ": the 4 gradients are adjacent, one bucket";
    }
  }
#else
  GTEST_SKIP() << "reads the emulator's per-device counters (an emulated build)";
#endif
}

#if defined(CUDL_EMULATED)
// Per rank: the counters of the rank's device at the end of every step.
class EveryStep : public Callback {
 public:
  explicit EveryStep(int device) : device_(device) {}
  void on_batch_end(Model&, int64_t) override {
    (void)cudl_emu::flush_all();  // the step's queued work (and its collectives) have run
    at_end.push_back(cudl_emu::counters(device_));
  }
  std::vector<cudl_emu::Counters> at_end;

 private:
  int device_;
};

// One rank of the two-process job: joins through the TCP store (init), trains one epoch of the
// test MLP (6 steps) and checks its own counters for every step after the first three (eager,
// capture, first replay): 1 graph launch, no device or pinned allocation, no host synchronisation,
// one all-reduce carrying exactly the gradient bytes. A failure names the rank and the step.
void process_rank_checks_its_steps(const distributed::LaunchEnv& env) {
  std::shared_ptr<distributed::Communicator> comm = distributed::init(env, 60);
  ASSERT_EQ(comm->rank(), env.rank);
  ASSERT_EQ(comm->size(), 2);
  Sequential m = mlp();
  CompileOptions o = options(comm->device());
  o.communicator = comm;
  m.compile(o);
  auto steps = std::make_shared<EveryStep>(comm->device().index());
  FitOptions f = cudl::testing::quiet_fit(1, kGlobalBatch, 3);
  f.callbacks = {steps};
  m.fit(blobs(), f);
  const size_t params = (8 * 16 + 16 + 16 * 3 + 3) * sizeof(float);
  EXPECT_EQ(m.plan_report().grad_bytes, params);
  ASSERT_EQ(steps->at_end.size(), static_cast<size_t>(kRows / kGlobalBatch));
  for (size_t s = 3; s < steps->at_end.size(); ++s) {
    const cudl_emu::Counters &a = steps->at_end[s - 1], &b = steps->at_end[s];
    const std::string what = "process rank " + std::to_string(env.rank) + " of 2, step " + std::to_string(s + 1);
    EXPECT_EQ(b.graph_launches - a.graph_launches, 1u) << what;
    EXPECT_EQ(b.mallocs - a.mallocs, 0u) << what;
    EXPECT_EQ(b.host_mallocs - a.host_mallocs, 0u) << what;
    EXPECT_EQ(b.syncs - a.syncs, 0u) << what;
    EXPECT_EQ(b.collectives - a.collectives, 1u) << what << ": one bucket";
    EXPECT_EQ(b.collective_bytes - a.collective_bytes, params) << what << ": all-reduce bytes per step == gradient bytes";
  }
  std::printf("process rank %d: steps 4-%zu each 1 graph launch, 0 allocations, 0 syncs, %zu all-reduce bytes\n",
              env.rank, steps->at_end.size(), params);
}
#endif

// Rank 1 of the two-process test below, started by it in a second process (RANK=1 set).
TEST(DataParallelProcesses, Rank1) {
  if (!std::getenv("CUDL_TEST_DP_RANK1"))
    GTEST_SKIP() << "rank 1 of the two-process test: started by it (CUDL_TEST_DP_RANK1 unset)";
#if defined(CUDL_EMULATED)
  process_rank_checks_its_steps(distributed::launch_env());
#endif
}

TEST_F(DataParallel, EachProcessRankStepIsOneGraphLaunchWithoutAllocationsOrSyncs) {
#if defined(CUDL_EMULATED)
  // Rank 0 here, rank 1 this program again (its Rank1 test) as a second process, on cuda:1, with
  // the launcher's variables as scripts/cudlrun sets them.
  const int port = distributed::TcpStore::serve(0, "test")->port();  // the kernel's choice, released again
  std::vector<std::string> env_strings = {"CUDL_TEST_DP_RANK1=1", "RANK=1", "WORLD_SIZE=2", "LOCAL_RANK=1",
                                          "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string self = "/proc/self/exe", filter = "--gtest_filter=DataParallelProcesses.Rank1";
  char* argv[] = {self.data(), filter.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, envp.data()), 0);
  distributed::LaunchEnv env;
  env.rank = 0;
  env.world_size = 2;
  env.local_rank = 0;
  env.master_addr = "127.0.0.1";
  env.master_port = port;
  const std::string error = cudl::testing::error_message([&] { process_rank_checks_its_steps(env); });
  EXPECT_EQ(error, "<no error>") << "rank 0";
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank 1's process failed (its output is above)";
#else
  GTEST_SKIP() << "reads the emulator's per-device counters (an emulated build)";
#endif
}

TEST_F(DataParallel, CheckpointsAreWrittenByRankZeroAndLoadOnOneDevice) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "cudl_dp_checkpoint";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<float> trained;
  distributed::World(2).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
    Sequential m = mlp();
    CompileOptions o = options(comm->device());
    o.communicator = comm;
    m.compile(o);
    m.fit(blobs(), cudl::testing::quiet_fit(1, kGlobalBatch, 3));
    save_checkpoint(m, (dir / ("rank" + std::to_string(comm->rank()) + ".safetensors")).string());
    save_checkpoint(m, (dir / "shared.safetensors").string());
    if (comm->rank() == 0) trained = cudl::testing::flat_weights(m);
  });
  EXPECT_TRUE(std::filesystem::exists(dir / "rank0.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir / "rank1.safetensors")) << "only rank 0 writes";
  Sequential single = mlp();
  single.compile(options(Device::cuda(0), 99));
  load_checkpoint(single, (dir / "shared.safetensors").string());
  EXPECT_EQ(cudl::testing::flat_weights(single), trained);
  std::filesystem::remove_all(dir);
}

TEST_F(DataParallel, MistakesAreErrorsNamingTheRankAndValues) {
  const std::string wrong_device = cudl::testing::error_message([&] {
    distributed::World(2).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
      Sequential m = mlp();
      CompileOptions o = options(Device::cuda(3));  // not the communicator's device
      o.communicator = comm;
      m.compile(o);
    });
  });
  EXPECT_NE(wrong_device.find("rank 0 of 2"), std::string::npos) << wrong_device;
  EXPECT_NE(wrong_device.find("compiled for cuda:3 but the communicator of rank 0 is on cuda:0"), std::string::npos)
      << wrong_device;
  const std::string batch = cudl::testing::error_message([&] {
    distributed::World(4).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
      Sequential m = mlp();
      CompileOptions o = options(comm->device());
      o.communicator = comm;
      m.compile(o);
      m.fit(blobs(), cudl::testing::quiet_fit(1, 10, 3));
    });
  });
  EXPECT_NE(batch.find("the global batch 10 (batch_size 10, 96 rows) must be a multiple of the 4 ranks"),
            std::string::npos)
      << batch;
  // Planted bug: rank 1 builds another model. Its parameters do not match rank 0's at the first
  // broadcast: an error on both ranks naming both calls, not a hang.
  const std::string other_model = cudl::testing::error_message([&] {
    distributed::World(2).run([&](const std::shared_ptr<distributed::Communicator>& comm) {
      Sequential m(Shape{8}, {layers::Dense(comm->rank() == 0 ? 16 : 17, "relu"), layers::Dense(3)}, "dp");
      CompileOptions o = options(comm->device());
      o.communicator = comm;
      m.compile(o);
    });
  });
  EXPECT_NE(other_model.find("differs across ranks"), std::string::npos) << other_model;
  EXPECT_NE(other_model.find("ncclBroadcast(count 512, uint8, root 0)"), std::string::npos) << other_model;
  EXPECT_NE(other_model.find("ncclBroadcast(count 544, uint8, root 0)"), std::string::npos) << other_model;
  EXPECT_NE(cudl::testing::error_message([] { distributed::World(5); }).find("5 ranks need 5 CUDA devices"),
            std::string::npos);
}

}  // namespace
