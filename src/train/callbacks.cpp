// train/callbacks.cpp — schedules, reduce-on-plateau, early stopping, checkpoints, CSV logging.
#include "cudl/callbacks.hpp"

#include <cmath>
#include <fstream>

#include "cudl/checkpoint.hpp"
#include "cudl/error.hpp"

namespace cudl {
namespace {

bool maximise(const std::string& monitor, Mode mode) {
  if (mode == Mode::Max) return true;
  if (mode == Mode::Min) return false;
  return monitor.find("acc") != std::string::npos;
}

double monitored(const std::map<std::string, double>& logs, const std::string& name, const char* who) {
  auto it = logs.find(name);
  if (it == logs.end()) {
    std::string have;
    for (const auto& [k, v] : logs) have += (have.empty() ? "" : ", ") + k;
    CUDL_FAIL(who, ": monitored metric '", name, "' is not in the epoch logs (", have, ")");
  }
  return it->second;
}

bool better(double v, double best, double delta, bool max) { return max ? v > best + delta : v < best - delta; }

}  // namespace

namespace schedules {
Schedule step(double lr, double factor, int every) {
  if (every <= 0) CUDL_FAIL("schedules::step: every must be positive, got ", every);
  return [=](int e) { return lr * std::pow(factor, e / every); };
}
Schedule exponential(double lr, double rate) {
  return [=](int e) { return lr * std::pow(rate, e); };
}
Schedule cosine(double lr, int epochs, double min_lr) {
  if (epochs <= 0) CUDL_FAIL("schedules::cosine: epochs must be positive, got ", epochs);
  return [=](int e) {
    if (e >= epochs) return min_lr;
    return min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(M_PI * e / epochs));
  };
}
Schedule warmup(double lr, int warmup_epochs, Schedule after) {
  if (warmup_epochs <= 0) CUDL_FAIL("schedules::warmup: warmup_epochs must be positive, got ", warmup_epochs);
  return [=](int e) {
    if (e < warmup_epochs) return lr * (e + 1) / warmup_epochs;
    return after ? after(e - warmup_epochs) : lr;
  };
}
}  // namespace schedules

// `epoch` is the model's global epoch (fit passes m.epoch()), so a run resumed from a checkpoint
// continues the schedule where the interrupted one was.
void LearningRateScheduler::on_epoch_begin(Model& m, int epoch) { m.set_learning_rate(schedule_(epoch)); }

ReduceLROnPlateau::ReduceLROnPlateau(std::string monitor, double factor, int patience, double min_lr, double min_delta,
                                     Mode mode)
    : monitor_(std::move(monitor)), factor_(factor), min_lr_(min_lr), min_delta_(min_delta), patience_(patience),
      max_(maximise(monitor_, mode)) {
  if (!(factor > 0 && factor < 1)) CUDL_FAIL("ReduceLROnPlateau: factor must be in (0, 1), got ", factor);
}

void ReduceLROnPlateau::on_train_begin(Model&) {
  wait_ = 0;
  has_best_ = false;
}

void ReduceLROnPlateau::on_epoch_end(Model& m, int, const std::map<std::string, double>& logs) {
  const double v = monitored(logs, monitor_, "ReduceLROnPlateau");
  if (!has_best_ || better(v, best_, min_delta_, max_)) {
    best_ = v;
    has_best_ = true;
    wait_ = 0;
    return;
  }
  if (++wait_ > patience_) {
    m.set_learning_rate(std::max(min_lr_, m.learning_rate() * factor_));
    wait_ = 0;
  }
}

EarlyStopping::EarlyStopping(std::string monitor, int patience, double min_delta, bool restore_best_weights, Mode mode)
    : monitor_(std::move(monitor)), patience_(patience), min_delta_(min_delta), restore_(restore_best_weights),
      max_(maximise(monitor_, mode)) {}

void EarlyStopping::on_train_begin(Model&) {
  wait_ = 0;
  stopped_epoch_ = -1;
  best_epoch_ = -1;
  best_weights_.clear();
}

void EarlyStopping::on_epoch_end(Model& m, int epoch, const std::map<std::string, double>& logs) {
  const double v = monitored(logs, monitor_, "EarlyStopping");
  if (best_epoch_ < 0 || better(v, best_, min_delta_, max_)) {
    best_ = v;
    best_epoch_ = epoch;
    wait_ = 0;
    if (restore_) {  // weights and buffers only; optimizer state and counters go on
      best_weights_.clear();
      for (auto& [name, t] : m.state_tensors())
        if (name.rfind("optim.", 0) != 0 && name.rfind("amp.", 0) != 0 && name != "rng")
          best_weights_.emplace_back(name, t.clone());
    }
    return;
  }
  if (++wait_ > patience_) {
    stopped_epoch_ = epoch;
    m.stop_training();
  }
}

void EarlyStopping::on_train_end(Model& m) {
  if (!restore_ || best_weights_.empty() || stopped_epoch_ < 0) return;
  std::map<std::string, Tensor> best(best_weights_.begin(), best_weights_.end());
  for (auto& [name, t] : m.state_tensors()) {
    auto it = best.find(name);
    if (it != best.end()) t.copy_from(it->second);
  }
}

ModelCheckpoint::ModelCheckpoint(std::string path, std::string monitor, bool save_best_only, int every_n_epochs,
                                 Mode mode)
    : path_(std::move(path)), monitor_(std::move(monitor)), best_only_(save_best_only), max_(maximise(monitor_, mode)),
      every_(every_n_epochs) {
  if (every_ <= 0) CUDL_FAIL("ModelCheckpoint: every_n_epochs must be positive, got ", every_);
}

void ModelCheckpoint::on_train_begin(Model&) { has_best_ = false; }

void ModelCheckpoint::on_epoch_end(Model& m, int epoch, const std::map<std::string, double>& logs) {
  if (best_only_) {
    const double v = monitored(logs, monitor_, "ModelCheckpoint");
    if (has_best_ && !better(v, best_, 0, max_)) return;
    best_ = v;
    has_best_ = true;
  } else if ((epoch + 1) % every_ != 0) {
    return;
  }
  std::string p = path_;
  const size_t at = p.find("{epoch}");
  if (at != std::string::npos) p.replace(at, 7, std::to_string(epoch + 1));
  save_checkpoint(m, p);
  ++saves_;
}

void CSVLogger::on_train_begin(Model&) {
  std::ofstream f(path_, std::ios::trunc);
  if (!f) CUDL_FAIL("CSVLogger: cannot write ", path_);
  header_written_ = false;
}

void CSVLogger::on_epoch_end(Model&, int epoch, const std::map<std::string, double>& logs) {
  std::ofstream f(path_, std::ios::app);
  if (!f) CUDL_FAIL("CSVLogger: cannot write ", path_);
  if (!header_written_) {
    f << "epoch";
    for (const auto& [k, v] : logs) f << "," << k;
    f << "\n";
    header_written_ = true;
  }
  f << epoch + 1;
  for (const auto& [k, v] : logs) f << "," << v;
  f << "\n";
}

}  // namespace cudl
