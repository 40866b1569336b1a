// tests/test_callbacks.cpp — schedules, reduce-on-plateau, early stopping (stops, restores the best
// weights), model checkpoints (every N, best only), CSV logger.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "cudl/callbacks.hpp"
#include "cudl/checkpoint.hpp"
#include "testing.hpp"

using namespace cudl;

namespace {

Dataset data(int64_t n) { return cudl::testing::separable_blobs(n, 4, 2, 1.f, 0.7f, 5); }

std::unique_ptr<Sequential> model(const std::string& tag) {
  auto m = std::make_unique<Sequential>(
      Shape{4},
      std::vector<LayerPtr>{layers::Dense(DenseOptions(6).activation("tanh").name(tag + "1")),
                            layers::Dense(DenseOptions(2).name(tag + "2"))},
      tag);
  CompileOptions o;
  o.optimizer = optim::Adam(0.05);
  o.metrics = {"accuracy"};
  m->compile(o);
  return m;
}

FitOptions fit(int epochs, std::vector<CallbackPtr> cbs) {
  FitOptions f;
  f.epochs = epochs;
  f.batch_size = 8;
  f.verbose = 0;
  f.callbacks = std::move(cbs);
  return f;
}

std::vector<float> weights(Model& m) {
  std::vector<float> w;
  for (auto& l : m.layers())
    for (auto& [k, t] : l->params()) {
      auto v = t.to_vector<float>();
      w.insert(w.end(), v.begin(), v.end());
    }
  return w;
}

struct Recorder : Callback {
  std::vector<std::vector<float>> weights_after;
  std::vector<double> lrs;
  void on_epoch_end(Model& m, int, const std::map<std::string, double>&) override {
    weights_after.push_back(weights(m));
    lrs.push_back(m.learning_rate());
  }
};

}  // namespace

TEST(Schedules, Values) {
  EXPECT_DOUBLE_EQ(schedules::step(0.1, 0.5, 2)(3), 0.05);
  EXPECT_DOUBLE_EQ(schedules::exponential(1.0, 0.9)(2), 0.81);
  EXPECT_DOUBLE_EQ(schedules::cosine(1.0, 4, 0.0)(0), 1.0);
  EXPECT_NEAR(schedules::cosine(1.0, 4, 0.0)(2), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(schedules::cosine(1.0, 4, 0.1)(9), 0.1);
  auto w = schedules::warmup(0.4, 4, schedules::exponential(0.4, 0.5));
  EXPECT_DOUBLE_EQ(w(0), 0.1);
  EXPECT_DOUBLE_EQ(w(3), 0.4);
  EXPECT_DOUBLE_EQ(w(5), 0.2);
  EXPECT_THROW(schedules::step(0.1, 0.5, 0), Error);
}

TEST(Callbacks, SchedulerSetsTheRateEachEpoch) {
  auto m = model("sched");
  auto rec = std::make_shared<Recorder>();
  m->fit(data(32), fit(3, {std::make_shared<LearningRateScheduler>(schedules::step(0.1, 0.1, 1)), rec}));
  ASSERT_EQ(rec->lrs.size(), 3u);
  EXPECT_NEAR(rec->lrs[0], 0.1, 1e-12);
  EXPECT_NEAR(rec->lrs[2], 0.001, 1e-12);
}

TEST(Callbacks, ReduceLROnPlateauReducesWhenTheMetricStalls) {
  auto m = model("plateau");
  auto rec = std::make_shared<Recorder>();
  // Mode Max on a falling loss: never "improves" after the first epoch.
  auto cb = std::make_shared<ReduceLROnPlateau>("loss", 0.5, 0, 0.0, 0.0, Mode::Max);
  m->fit(data(32), fit(3, {cb, rec}));
  EXPECT_NEAR(rec->lrs[0], 0.05, 1e-12);
  EXPECT_NEAR(rec->lrs[1], 0.025, 1e-12);
  EXPECT_NEAR(rec->lrs[2], 0.0125, 1e-12);
}

TEST(Callbacks, EarlyStoppingStopsAndRestoresBestWeights) {
  auto m = model("early");
  auto rec = std::make_shared<Recorder>();
  auto es = std::make_shared<EarlyStopping>("loss", 1, 0.0, true, Mode::Max);
  History h = m->fit(data(32), fit(10, {rec, es}));
  EXPECT_EQ(h.epochs(), 3) << "best at epoch 0, patience 1: stops after epoch 2";
  EXPECT_EQ(es->stopped_epoch(), 2);
  EXPECT_EQ(es->best_epoch(), 0);
  ASSERT_EQ(rec->weights_after.size(), 3u);
  EXPECT_NE(rec->weights_after[2], rec->weights_after[0]);
  EXPECT_EQ(weights(*m), rec->weights_after[0]) << "weights restored to the best epoch";
  EXPECT_THROW(model("early2")->fit(data(16), fit(1, {std::make_shared<EarlyStopping>("val_loss")})), Error);
}

TEST(Callbacks, ModelCheckpointEveryNAndBestOnly) {
  auto m = model("ckpt");
  const std::string base = "/tmp/cudl-cb-" + std::to_string(::getpid());
  auto every = std::make_shared<ModelCheckpoint>(base + "-e{epoch}.safetensors", "loss", false, 2);
  auto best = std::make_shared<ModelCheckpoint>(base + "-best.safetensors", "loss", true);
  m->fit(data(32), fit(4, {every, best}));
  EXPECT_EQ(every->saves(), 2);
  EXPECT_TRUE(std::ifstream(base + "-e2.safetensors").good());
  EXPECT_TRUE(std::ifstream(base + "-e4.safetensors").good());
  EXPECT_FALSE(std::ifstream(base + "-e3.safetensors").good());
  EXPECT_GE(best->saves(), 1);
  for (const char* s : {"-e2", "-e4", "-best"}) std::remove((base + s + ".safetensors").c_str());
}

TEST(Callbacks, CsvLoggerWritesOneRowPerEpoch) {
  auto m = model("csv");
  const std::string p = "/tmp/cudl-cb-" + std::to_string(::getpid()) + ".csv";
  m->fit(data(32), fit(3, {std::make_shared<CSVLogger>(p)}));
  std::ifstream f(p);
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(f, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0].rfind("epoch,accuracy,epoch_seconds,loss", 0), 0u) << lines[0];
  EXPECT_EQ(lines[3].rfind("3,", 0), 0u) << lines[3];
  std::remove(p.c_str());
}

// 2 + 2 epochs through a checkpoint equal 4 epochs in one fit, for every schedule: the scheduler
// reads the model's global epoch, which the checkpoint stores.
TEST(Schedules, ResumeThroughACheckpointContinuesEverySchedule) {
  const std::vector<std::pair<std::string, Schedule>> all = {
      {"step", schedules::step(0.05, 0.5, 1)},
      {"exponential", schedules::exponential(0.05, 0.7)},
      {"cosine", schedules::cosine(0.05, 4)},
      {"warmup+cosine", schedules::warmup(0.05, 2, schedules::cosine(0.05, 2))}};
  Dataset d = data(48);
  const std::string path = "/tmp/cudl-sched-" + std::to_string(::getpid()) + ".safetensors";
  for (const auto& [name, schedule] : all) {
    auto straight = model("sr");
    auto rec = std::make_shared<Recorder>();
    FitOptions f = fit(4, {std::make_shared<LearningRateScheduler>(schedule), rec});
    f.shuffle = true;
    straight->fit(d, f);

    auto first = model("sr");
    auto rec2 = std::make_shared<Recorder>();
    FitOptions g = fit(2, {std::make_shared<LearningRateScheduler>(schedule), rec2});
    g.shuffle = true;
    first->fit(d, g);
    save_checkpoint(*first, path);
    auto second = model("sr");
    load_checkpoint(*second, path);
    ASSERT_EQ(second->epoch(), 2);
    second->fit(d, g);
    EXPECT_EQ(weights(*second), weights(*straight)) << name;
    EXPECT_EQ(second->learning_rate(), straight->learning_rate()) << name;
    EXPECT_EQ(second->epoch(), 4);
  }
  std::remove(path.c_str());
}

// Model::batch_logs inside on_batch_end: the running means over the epoch so far; the last batch's
// equal the epoch's logs; outside fit it throws.
TEST(Callbacks, BatchLogsAreTheEpochsRunningMeans) {
  auto m = model("bl");
  struct BatchLogs : Callback {
    std::vector<Logs> batches, epochs;
    void on_batch_end(Model& mm, int64_t) override { batches.push_back(mm.batch_logs()); }
    void on_epoch_end(Model&, int, const std::map<std::string, double>& logs) override { epochs.push_back(logs); }
  };
  auto cb = std::make_shared<BatchLogs>();
  m->fit(data(30), fit(2, {cb}));  // batches of 8: 4 per epoch, the last of 6 rows
  ASSERT_EQ(cb->batches.size(), 8u);
  ASSERT_EQ(cb->epochs.size(), 2u);
  for (int e = 0; e < 2; ++e) {
    const Logs& last = cb->batches[4 * e + 3];
    ASSERT_EQ(last.size(), 2u);  // loss, accuracy
    EXPECT_NEAR(last.at("loss"), cb->epochs[e].at("loss"), 1e-6 * std::abs(cb->epochs[e].at("loss")));
    EXPECT_NEAR(last.at("accuracy"), cb->epochs[e].at("accuracy"), 1e-9);
    // After one batch of 8 the accuracy is a multiple of 1/8.
    const double first = cb->batches[4 * e].at("accuracy") * 8;
    EXPECT_NEAR(first, std::round(first), 1e-6);
  }
  EXPECT_THROW(m->batch_logs(), Error);
}
