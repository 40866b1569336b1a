// cpu/norm.cpp — CPU reference implementations of the norm op family (the spec for these ops):
// batch norm (train with batch statistics and running averages, inference, backward), layer norm.
#include "ops/norm.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/backend.hpp"
#include "cpu/parallel.hpp"
#include "cudl/error.hpp"

namespace cudl {

namespace {

// x (N, C, S): channel c of sample n is the contiguous row x + (n * C + c) * S.
template <typename Args>
inline int64_t bn_row(const Args& p, int64_t n, int64_t c) {
  return (n * p.c + c) * p.spatial;
}

// Per-channel sums are taken in double in kLanes partial sums: element s of every row goes to
// lane s % kLanes, and the lanes are added pairwise at the end. The order is fixed (it depends
// only on the shape), and independent lanes let the compiler vectorise the loop, which one
// running double sum (a chain of dependent adds) does not allow.
constexpr int kLanes = 8;

struct LaneSum {
  double lane[kLanes] = {};
  double total() const {
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
};

/// Calls fn(j, s) for s in [0, n) with j = s % kLanes, in blocks of kLanes.
template <typename Fn>
[[gnu::always_inline]] inline void for_each_lane(int64_t n, Fn fn) {
  int64_t s = 0;
  for (; s + kLanes <= n; s += kLanes)
    for (int j = 0; j < kLanes; ++j) fn(j, s + j);
  for (int j = 0; s < n; ++s, ++j) fn(j, s);
}

/// y = (x - mean) invstd g + b over channel c's rows.
template <typename Args>
void normalize_channel(const Args& p, const float* x, float* y, int64_t c, double mean, double invstd, double g,
                       double b) {
  for (int64_t n = 0; n < p.n; ++n) {
    const float* xr = x + bn_row(p, n, c);
    float* yr = y + bn_row(p, n, c);
    for (int64_t s = 0; s < p.spatial; ++s) yr[s] = static_cast<float>((xr[s] - mean) * invstd * g + b);
  }
}

/// Channel c's running statistics: r = (1 - momentum) r + momentum * batch.
inline void update_running(const TensorView& running_mean, const TensorView& running_var, int64_t c, double momentum,
                           double mean, double unbiased_var) {
  float* rm = running_mean.as<float>();
  float* rv = running_var.as<float>();
  rm[c] = static_cast<float>((1 - momentum) * rm[c] + momentum * mean);
  rv[c] = static_cast<float>((1 - momentum) * rv[c] + momentum * unbiased_var);
}

/// Channel c's sums of dy and of dy * xhat, xhat = (x - mu) is.
template <typename Args>
void channel_dy_sums(const Args& p, const float* x, const float* dy, int64_t c, double mu, double is, double* sum_dy,
                     double* sum_dy_xhat) {
  LaneSum dy_lanes, dy_xhat_lanes;
  for (int64_t n = 0; n < p.n; ++n) {
    const float* xr = x + bn_row(p, n, c);
    const float* dyr = dy + bn_row(p, n, c);
    // Two loops over the row (still in L1 for the second): GCC 12 vectorises neither sum
    // when both are in one loop.
    for_each_lane(p.spatial, [&](int j, int64_t s) { dy_lanes.lane[j] += dyr[s]; });
    for_each_lane(p.spatial, [&](int j, int64_t s) { dy_xhat_lanes.lane[j] += dyr[s] * ((xr[s] - mu) * is); });
  }
  *sum_dy = dy_lanes.total();
  *sum_dy_xhat = dy_xhat_lanes.total();
}

/// Channel c's dx = k (dy - mean_dy - xhat mean_dy_xhat), xhat = (x - mu) is.
template <typename Args>
void channel_dx(const Args& p, const float* x, const float* dy, float* dx, int64_t c, double mu, double is, double k,
                double mean_dy, double mean_dy_xhat) {
  for (int64_t n = 0; n < p.n; ++n) {
    const float* xr = x + bn_row(p, n, c);
    const float* dyr = dy + bn_row(p, n, c);
    float* dxr = dx + bn_row(p, n, c);
    for (int64_t s = 0; s < p.spatial; ++s) {
      const double xhat = (xr[s] - mu) * is;
      dxr[s] = static_cast<float>(k * (dyr[s] - mean_dy - xhat * mean_dy_xhat));
    }
  }
}

// Batch statistics per channel (two passes, double), normalisation, running-stat update:
// r = (1 - momentum) r + momentum * batch, running_var with the unbiased variance var * M / (M - 1)
// (M = N * spatial; when M == 1 the unbiased variance is taken as 0, keeping running_var finite).
void batch_norm_train(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  const float* x = p.x.as<float>();
  const float* gamma = p.gamma.as<float>();
  const float* beta = p.beta.as<float>();
  float* y = p.y.as<float>();
  const double m = static_cast<double>(p.per_channel());
  // Channels are independent: split over threads, the same arithmetic for any thread count.
  parallel_for(p.c, cpu_thread_count(), [&](int64_t c_begin, int64_t c_end, int) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      LaneSum sum;
      for (int64_t n = 0; n < p.n; ++n) {
        const float* xr = x + bn_row(p, n, c);
        for_each_lane(p.spatial, [&](int j, int64_t s) { sum.lane[j] += xr[s]; });
      }
      const double mean = sum.total() / m;
      LaneSum sq_lanes;
      for (int64_t n = 0; n < p.n; ++n) {
        const float* xr = x + bn_row(p, n, c);
        for_each_lane(p.spatial, [&](int j, int64_t s) {
          const double d = xr[s] - mean;
          sq_lanes.lane[j] += d * d;
        });
      }
      const double sq = sq_lanes.total();
      const double var = sq / m;
      const double invstd = 1 / std::sqrt(var + p.eps);
      normalize_channel(p, x, y, c, mean, invstd, gamma ? gamma[c] : 1.0, beta ? beta[c] : 0.0);
      if (p.has_saved) {
        p.saved_mean.as<float>()[c] = static_cast<float>(mean);
        p.saved_invstd.as<float>()[c] = static_cast<float>(invstd);
      }
      if (p.has_running) update_running(p.running_mean, p.running_var, c, p.momentum, mean, m > 1 ? sq / (m - 1) : 0.0);
    }
  });
}

void batch_norm_inference(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  const float* x = p.x.as<float>();
  const float* gamma = p.gamma.as<float>();
  const float* beta = p.beta.as<float>();
  const float* rm = p.running_mean.as<float>();
  const float* rv = p.running_var.as<float>();
  float* y = p.y.as<float>();
  for (int64_t c = 0; c < p.c; ++c) {
    const double invstd = 1 / std::sqrt(static_cast<double>(rv[c]) + p.eps);
    normalize_channel(p, x, y, c, rm[c], invstd, gamma ? gamma[c] : 1.0, beta ? beta[c] : 0.0);
  }
}

// The data gradient of batch_norm_inference (a frozen BatchNorm): dx = dy gamma / sqrt(running_var + eps),
// the per-channel factor in double as in the forward.
void batch_norm_inference_backward(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  const float* gamma = p.gamma.as<float>();
  const float* rv = p.running_var.as<float>();
  const float* dy = p.dy.as<float>();
  float* dx = p.dx.as<float>();
  for (int64_t c = 0; c < p.c; ++c) {
    const double scale = (gamma ? gamma[c] : 1.0) / std::sqrt(static_cast<double>(rv[c]) + p.eps);
    for (int64_t n = 0; n < p.n; ++n) {
      const float* dyr = dy + bn_row(p, n, c);
      float* dxr = dx + bn_row(p, n, c);
      for (int64_t s = 0; s < p.spatial; ++s) dxr[s] = static_cast<float>(dyr[s] * scale);
    }
  }
}

// xhat = (x - mean) invstd; dbeta = sum dy; dgamma = sum dy xhat;
// dx = gamma invstd (dy - dbeta / M - xhat dgamma / M).
void batch_norm_backward(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  const float* x = p.x.as<float>();
  const float* gamma = p.gamma.as<float>();
  const float* mean = p.saved_mean.as<float>();
  const float* invstd = p.saved_invstd.as<float>();
  const float* dy = p.dy.as<float>();
  const double m = static_cast<double>(p.per_channel());
  parallel_for(p.c, cpu_thread_count(), [&](int64_t c_begin, int64_t c_end, int) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      const double mu = mean[c], is = invstd[c];
      double sum_dy, sum_dy_xhat;
      channel_dy_sums(p, x, dy, c, mu, is, &sum_dy, &sum_dy_xhat);
      if (p.has_dgamma) p.dgamma.as<float>()[c] = static_cast<float>(sum_dy_xhat);
      if (p.has_dbeta) p.dbeta.as<float>()[c] = static_cast<float>(sum_dy);
      if (p.has_dx) {
        const double k = (gamma ? gamma[c] : 1.0) * is;
        // Both means hoisted: xhat * (sum_dy_xhat / M) differs from (xhat * sum_dy_xhat) / M by an
        // ulp of a double, invisible in the float result, and saves a division per element.
        channel_dx(p, x, dy, p.dx.as<float>(), c, mu, is, k, sum_dy / m, sum_dy_xhat / m);
      }
    }
  });
}

// ---- synchronised batch norm: this rank's sums, the normalisation from all ranks' sums ----

// stats = (sum(x - k), sum((x - k)^2), M) per channel, in double lanes as batch_norm_train's sums.
void batch_norm_stats(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  const float* x = p.x.as<float>();
  const float* shift = p.shift.as<float>();
  float* stats = p.stats.as<float>();
  parallel_for(p.c, cpu_thread_count(), [&](int64_t c_begin, int64_t c_end, int) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      const double k = shift ? shift[c] : 0.0;
      LaneSum sum, sq;
      for (int64_t n = 0; n < p.n; ++n) {
        const float* xr = x + bn_row(p, n, c);
        for_each_lane(p.spatial, [&](int j, int64_t s) {
          const double d = xr[s] - k;
          sum.lane[j] += d;
          sq.lane[j] += d * d;
        });
      }
      stats[c] = static_cast<float>(sum.total());
      stats[p.c + c] = static_cast<float>(sq.total());
      stats[2 * p.c + c] = static_cast<float>(p.per_channel());
    }
  });
}

// batch_norm_train's normalisation and running-stat update with the statistics of `stats`.
void batch_norm_apply(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  const float* x = p.x.as<float>();
  const float* gamma = p.gamma.as<float>();
  const float* beta = p.beta.as<float>();
  const float* stats = p.stats.as<float>();
  const float* shift = p.shift.as<float>();
  float* y = p.y.as<float>();
  for (int64_t c = 0; c < p.c; ++c) {
    const double m = stats[2 * p.c + c], d = stats[c] / m;
    const double mean = (shift ? shift[c] : 0.0) + d;  // read before running_mean (maybe the shift) changes
    const double var = std::max(0.0, stats[p.c + c] / m - d * d);
    const double invstd = 1 / std::sqrt(var + p.eps);
    normalize_channel(p, x, y, c, mean, invstd, gamma ? gamma[c] : 1.0, beta ? beta[c] : 0.0);
    if (p.saved_mean.defined()) {
      p.saved_mean.as<float>()[c] = static_cast<float>(mean);
      p.saved_invstd.as<float>()[c] = static_cast<float>(invstd);
    }
    if (p.running_mean.defined())
      update_running(p.running_mean, p.running_var, c, p.momentum, mean, m > 1 ? var * m / (m - 1) : 0.0);
  }
}

// sums = (sum dy, sum dy xhat) over this rank's rows; dgamma / dbeta the same sums.
void batch_norm_backward_reduce(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  const float* x = p.x.as<float>();
  const float* mean = p.saved_mean.as<float>();
  const float* invstd = p.saved_invstd.as<float>();
  const float* dy = p.dy.as<float>();
  float* sums = p.sums.as<float>();
  for (int64_t c = 0; c < p.c; ++c) {
    double sum_dy, sum_dy_xhat;
    channel_dy_sums(p, x, dy, c, mean[c], invstd[c], &sum_dy, &sum_dy_xhat);
    sums[c] = static_cast<float>(sum_dy);
    sums[p.c + c] = static_cast<float>(sum_dy_xhat);
    if (p.dgamma.defined()) p.dgamma.as<float>()[c] = sums[p.c + c];
    if (p.dbeta.defined()) p.dbeta.as<float>()[c] = sums[c];
  }
}

// dx = gamma invstd (dy - sums[0]/M - xhat sums[1]/M), M = stats[2] (every rank's count).
void batch_norm_backward_apply(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  const float* x = p.x.as<float>();
  const float* gamma = p.gamma.as<float>();
  const float* mean = p.saved_mean.as<float>();
  const float* invstd = p.saved_invstd.as<float>();
  const float* dy = p.dy.as<float>();
  const float* sums = p.sums.as<float>();
  const float* stats = p.stats.as<float>();
  float* dx = p.dx.as<float>();
  for (int64_t c = 0; c < p.c; ++c) {
    const double mu = mean[c], is = invstd[c], m = stats[2 * p.c + c];
    channel_dx(p, x, dy, dx, c, mu, is, (gamma ? gamma[c] : 1.0) * is, sums[c] / m, sums[p.c + c] / m);
  }
}

// Per row: mean, biased variance (two passes), rstd = 1 / sqrt(var + eps), y = xhat * gamma + beta.
void layer_norm(const OpCall& call) {
  const ops::LayerNormArgs p = ops::check_layer_norm_call(call);
  const float* x = p.x.as<float>();
  const float* gamma = p.gamma.as<float>();
  const float* beta = p.beta.as<float>();
  float* y = p.y.as<float>();
  parallel_for(p.rows, elementwise_chunks(p.rows * p.d), [&](int64_t r0, int64_t r1, int) {  // rows are independent
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * p.d;
    double sum = 0;
    for (int64_t j = 0; j < p.d; ++j) sum += xr[j];
    const double mean = sum / static_cast<double>(p.d);
    double sq = 0;
    for (int64_t j = 0; j < p.d; ++j) sq += (xr[j] - mean) * (xr[j] - mean);
    const double rstd = 1 / std::sqrt(sq / static_cast<double>(p.d) + p.eps);
    for (int64_t j = 0; j < p.d; ++j)
      y[r * p.d + j] = static_cast<float>((xr[j] - mean) * rstd * (gamma ? gamma[j] : 1.0) + (beta ? beta[j] : 0.0));
    if (p.has_stats) {
      p.mean.as<float>()[r] = static_cast<float>(mean);
      p.rstd.as<float>()[r] = static_cast<float>(rstd);
    }
  }
  });
}

// g = dy * gamma; dx = rstd (g - mean_j(g) - xhat mean_j(g xhat)); dgamma = sum_rows dy xhat;
// dbeta = sum_rows dy.
void layer_norm_backward(const OpCall& call) {
  const ops::LayerNormArgs p = ops::check_layer_norm_call(call);
  const float* x = p.x.as<float>();
  const float* gamma = p.gamma.as<float>();
  const float* mean = p.mean.as<float>();
  const float* rstd = p.rstd.as<float>();
  const float* dy = p.dy.as<float>();
  std::vector<double> dgamma(static_cast<size_t>(p.d), 0.0), dbeta(static_cast<size_t>(p.d), 0.0);
  for (int64_t r = 0; r < p.rows; ++r) {
    const int64_t o = r * p.d;
    double mean_g = 0, mean_gx = 0;
    for (int64_t j = 0; j < p.d; ++j) {
      const double xhat = (x[o + j] - static_cast<double>(mean[r])) * rstd[r];
      const double g = dy[o + j] * (gamma ? gamma[j] : 1.0);
      mean_g += g;
      mean_gx += g * xhat;
      dgamma[j] += dy[o + j] * xhat;
      dbeta[j] += dy[o + j];
    }
    mean_g /= static_cast<double>(p.d);
    mean_gx /= static_cast<double>(p.d);
    if (p.has_dx) {
      float* dx = p.dx.as<float>();
      for (int64_t j = 0; j < p.d; ++j) {
        const double xhat = (x[o + j] - static_cast<double>(mean[r])) * rstd[r];
        const double g = dy[o + j] * (gamma ? gamma[j] : 1.0);
        dx[o + j] = static_cast<float>(rstd[r] * (g - mean_g - xhat * mean_gx));
      }
    }
  }
  for (int64_t j = 0; j < p.d; ++j) {
    if (p.has_dgamma) p.dgamma.as<float>()[j] = static_cast<float>(dgamma[j]);
    if (p.has_dbeta) p.dbeta.as<float>()[j] = static_cast<float>(dbeta[j]);
  }
}

}  // namespace

void register_cpu_norm_ops(OpTable& t) {
  t.add(OpKind::BatchNormTrain, batch_norm_train);
  t.add(OpKind::BatchNormInference, batch_norm_inference);
  t.add(OpKind::BatchNormBackward, batch_norm_backward);
  t.add(OpKind::BatchNormInferenceBackward, batch_norm_inference_backward);
  t.add(OpKind::BatchNormStats, batch_norm_stats);
  t.add(OpKind::BatchNormApply, batch_norm_apply);
  t.add(OpKind::BatchNormBackwardReduce, batch_norm_backward_reduce);
  t.add(OpKind::BatchNormBackwardApply, batch_norm_backward_apply);
  t.add(OpKind::LayerNorm, layer_norm);
  t.add(OpKind::LayerNormBackward, layer_norm_backward);
}

}  // namespace cudl
