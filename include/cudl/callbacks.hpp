// cudl/callbacks.hpp — fit() callbacks: learning-rate schedules (written to device memory, so a
// replayed CUDA graph uses the new rate), reduce-on-plateau, early stopping with best-weight
// restore, model checkpoints, CSV logging.
#pragma once

#include <functional>
#include <limits>
#include <memory>
#include <string>

#include "cudl/model.hpp"

namespace cudl {

/// A learning rate as a function of the epoch (0-based).
using Schedule = std::function<double(int epoch)>;

namespace schedules {
/// lr * factor^(floor(epoch / every)).
CUDL_API Schedule step(double lr, double factor, int every);
/// lr * rate^epoch.
CUDL_API Schedule exponential(double lr, double rate);
/// Cosine from lr to min_lr over `epochs`, then min_lr.
CUDL_API Schedule cosine(double lr, int epochs, double min_lr = 0);
/// Linear warm-up from lr/warmup_epochs to lr over `warmup_epochs`, then `after` (shifted by the
/// warm-up), or constant lr when `after` is empty.
CUDL_API Schedule warmup(double lr, int warmup_epochs, Schedule after = {});
}  // namespace schedules

/// Sets the learning rate at the start of every epoch from a schedule.
class CUDL_API LearningRateScheduler : public Callback {
 public:
  explicit LearningRateScheduler(Schedule s) : schedule_(std::move(s)) {}
  void on_epoch_begin(Model& m, int epoch) override;

 private:
  Schedule schedule_;
};

/// Which way a monitored metric improves: "auto" picks max for names containing "acc".
enum class Mode { Auto, Min, Max };

class CUDL_API ReduceLROnPlateau : public Callback {
 public:
  ReduceLROnPlateau(std::string monitor = "val_loss", double factor = 0.1, int patience = 10, double min_lr = 0,
                    double min_delta = 1e-4, Mode mode = Mode::Auto);
  void on_train_begin(Model&) override;
  void on_epoch_end(Model& m, int epoch, const std::map<std::string, double>& logs) override;

 private:
  std::string monitor_;
  double factor_, min_lr_, min_delta_;
  int patience_, wait_ = 0;
  bool max_;
  double best_ = 0;
  bool has_best_ = false;
};

class CUDL_API EarlyStopping : public Callback {
 public:
  EarlyStopping(std::string monitor = "val_loss", int patience = 0, double min_delta = 0,
                bool restore_best_weights = false, Mode mode = Mode::Auto);
  void on_train_begin(Model&) override;
  void on_epoch_end(Model& m, int epoch, const std::map<std::string, double>& logs) override;
  void on_train_end(Model& m) override;
  /// Epoch (0-based) at which training stopped, or -1.
  int stopped_epoch() const { return stopped_epoch_; }
  int best_epoch() const { return best_epoch_; }

 private:
  std::string monitor_;
  int patience_, wait_ = 0, stopped_epoch_ = -1, best_epoch_ = -1;
  double min_delta_;
  bool restore_, max_;
  double best_ = 0;
  std::vector<std::pair<std::string, Tensor>> best_weights_;
};

/// Saves a checkpoint every `every_n_epochs` epochs, or only when `monitor` improves
/// (save_best_only). "{epoch}" in the path is replaced by the 1-based epoch number.
class CUDL_API ModelCheckpoint : public Callback {
 public:
  ModelCheckpoint(std::string path, std::string monitor = "val_loss", bool save_best_only = false,
                  int every_n_epochs = 1, Mode mode = Mode::Auto);
  void on_train_begin(Model&) override;
  void on_epoch_end(Model& m, int epoch, const std::map<std::string, double>& logs) override;
  int saves() const { return saves_; }

 private:
  std::string path_, monitor_;
  bool best_only_, max_;
  int every_, saves_ = 0;
  bool has_best_ = false;
  double best_ = 0;
};

/// Appends one CSV row per epoch (epoch, then the logs in name order) to `path`.
class CUDL_API CSVLogger : public Callback {
 public:
  explicit CSVLogger(std::string path) : path_(std::move(path)) {}
  void on_train_begin(Model&) override;
  void on_epoch_end(Model& m, int epoch, const std::map<std::string, double>& logs) override;

 private:
  std::string path_;
  bool header_written_ = false;
};

}  // namespace cudl
