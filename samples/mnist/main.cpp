// samples/mnist — cudl-mnist: trains an MLP or a small CNN on MNIST / Fashion-MNIST on the GPU
// when one works, else on the CPU reference backend (and says why), and reports test accuracy.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>

#include "../common/sample_util.hpp"
#include "args.hpp"
#include "cudl/checkpoint.hpp"
#include "cudl/cudl.hpp"
#include "models.hpp"

int main(int argc, char** argv) {
  const mnist::Args a = mnist::parse(argc, argv);
  // Output paths are checked before any data is read or any step runs.
  sample::require_writable(mnist::kProgram, "--save", a.save);
  sample::require_writable(mnist::kProgram, "--csv", a.csv);
  if (!a.csv.empty()) sample::require_writable(mnist::kProgram, "--plot", a.plot);
  try {
    const bool fashion = a.dataset == "fashion";
    cudl::Dataset train, test;
    if (!sample::load_mnist_sets(mnist::kProgram, a.data, a.limit, fashion, &train, &test)) return 1;
    // A test set that the trained model could not read is found now, not after training.
    auto sample_shape = [](const cudl::Tensor& x) {
      return cudl::Shape(std::vector<int64_t>(x.shape().dims().begin() + 1, x.shape().dims().end()));
    };
    if (sample_shape(test.x) != sample_shape(train.x) || test.x.dtype() != train.x.dtype())
      throw cudl::Error("the test images are " + test.x.shape().str() + " " + cudl::dtype_name(test.x.dtype()) +
                        " but the training images are " + train.x.shape().str() + " " +
                        cudl::dtype_name(train.x.dtype()) + " (" + a.data + ")");
    // One rank (comm null: the single device) or rank comm->rank() of a data-parallel run; only
    // rank 0 prints and writes files (save_checkpoint itself writes on rank 0 only).
    auto train_rank = [&](const std::shared_ptr<cudl::distributed::Communicator>& comm) {
      const bool lead = !comm || comm->rank() == 0;
      cudl::Device device = comm ? comm->device() : sample::pick_device(mnist::kProgram, a.device);
      cudl::Sequential model = mnist::build(a.model);
      sample::compile_classifier(model, a.optimizer == "adam" ? cudl::optim::Adam(a.lr) : cudl::optim::SGD(a.lr, 0.9),
                                 device, a.seed, a.resume, lead, a.precision, comm);
      model.set_profiling(a.profile);
      cudl::FitOptions fit;
      // --epochs is the total: a resumed run trains the epochs the checkpoint had not reached, and the
      // schedule (over all of them, read at the model's global epoch) continues where it stopped.
      fit.epochs = static_cast<int>(std::max<int64_t>(0, a.epochs - model.epoch()));
      fit.batch_size = a.batch;
      fit.seed = a.seed;
      fit.augment = a.augment;
      fit.data_placement = a.placement == "device"   ? cudl::DataPlacement::Device
                           : a.placement == "stream" ? cudl::DataPlacement::Stream
                                                     : cudl::DataPlacement::Auto;
      if (a.schedule == "cosine")
        fit.callbacks.push_back(std::make_shared<cudl::LearningRateScheduler>(cudl::schedules::cosine(a.lr, a.epochs)));
      fit.validation_split = train.size() >= 12000 ? 5000.0 / train.size() : 0.1;
      if (lead)
        std::printf("training on %lld images (%lld held out for validation), testing on %lld\n",
                    static_cast<long long>(train.size() - static_cast<int64_t>(train.size() * fit.validation_split)),
                    static_cast<long long>(train.size() * fit.validation_split), static_cast<long long>(test.size()));
      cudl::History h = model.fit(train, fit);
      if (lead && model.plan_report().precision == cudl::Precision::f16)  // read once, after training
        std::printf("loss scale %g, skipped steps %lld\n", model.loss_scale(),
                    static_cast<long long>(model.skipped_steps()));
      cudl::EvalResult r = model.evaluate(test, 1000);
      if (lead) std::printf("test loss %.4f, test accuracy %.2f%%\n", r.metrics["loss"], 100.0 * r.metrics["accuracy"]);
      if (lead) sample::write_history(a.csv, a.plot, h);
      if (!a.save.empty()) {
        cudl::save_checkpoint(model, a.save);
        if (lead) std::printf("checkpoint: %s\n", a.save.c_str());
      }
      if (a.profile && lead)
        std::printf("\nper-op profile (%s):\n%s", device.str().c_str(), model.profile_table().c_str());
    };
    sample::run_ranks(mnist::kProgram, a.devices, a.device, a.batch, train_rank);
    return 0;
  } catch (const cudl::Error& e) {
    std::fprintf(stderr, "cudl-mnist: %s\n", e.what());
    return 1;
  }
}
