// samples/linear_regression — fits y = 3x + 2 (plus noise) with one Dense unit, SGD and MSE, and
// prints the fitted weight and bias.
#include <cstdio>
#include <random>

#include "cudl/cudl.hpp"

int main(int argc, char** argv) {
  try {
    cudl::Device device = argc > 1 ? cudl::Device::parse(argv[1]) : cudl::Device::cpu();
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> ux(-1.f, 1.f);
    std::normal_distribution<float> noise(0.f, 0.05f);
    const int64_t n = 256;
    std::vector<float> x(n), y(n);
    for (int64_t i = 0; i < n; ++i) {
      x[i] = ux(rng);
      y[i] = 3.f * x[i] + 2.f + noise(rng);
    }
    cudl::Dataset data{cudl::Tensor::from_vector(x, cudl::Shape{n, 1}), cudl::Tensor::from_vector(y, cudl::Shape{n, 1})};

    auto dense = cudl::layers::Dense(cudl::DenseOptions(1).name("line"));
    cudl::Sequential model(cudl::Shape{1}, {dense}, "linear_regression");
    cudl::CompileOptions opt;
    opt.optimizer = cudl::optim::SGD(0.1);
    opt.loss = "mse";
    opt.device = device;
    model.compile(opt);
    cudl::FitOptions fit;
    fit.epochs = 30;
    fit.batch_size = 32;
    fit.verbose = 0;
    cudl::History h = model.fit(data, fit);
    const float w = static_cast<float>(dense->params()[0].second.item(0));
    const float b = static_cast<float>(dense->params()[1].second.item(0));
    std::printf("device %s: final mse %.5f, fitted y = %.4f x + %.4f (true: 3x + 2)\n", device.str().c_str(),
                h.metrics["loss"].back(), w, b);
    return 0;
  } catch (const cudl::Error& e) {
    std::fprintf(stderr, "linear_regression: %s\n", e.what());
    return 1;
  }
}
