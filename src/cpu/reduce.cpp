// cpu/reduce.cpp — CPU reference implementations of the reduce op family (the spec for these ops):
// sum, mean, max (+ first-occurrence indices, NaN wins), variance; their gradients; argmax.
#include "ops/reduce.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "backend/backend.hpp"
#include "ops/common.hpp"

namespace cudl {

namespace {

// True when value v at index i beats the current best (bv, bi) for max: NaN beats every number,
// ties and later NaNs keep the first occurrence.
bool max_beats(float v, int64_t i, float bv, int64_t bi) {
  if (std::isnan(bv)) return std::isnan(v) && i < bi;
  if (std::isnan(v)) return true;
  return v > bv || (v == bv && i < bi);
}

void cpu_reduce(const OpCall& call) {
  const ops::ReduceArgs p = ops::check_reduce_call(call);
  const float* x = p.x.as<float>();
  float* y = p.y.as<float>();
  int64_t* idx = p.indices.as<int64_t>();
  for (int64_t o = 0; o < p.outer; ++o) {
    for (int64_t i = 0; i < p.inner; ++i) {
      auto at = [&](int64_t r) { return x[(o * p.R + r) * p.inner + i]; };
      const int64_t out = o * p.inner + i;
      switch (p.op) {
        case ReduceOp::Sum:
        case ReduceOp::Mean: {
          double s = 0;
          for (int64_t r = 0; r < p.R; ++r) s += at(r);
          y[out] = static_cast<float>(p.op == ReduceOp::Sum ? s : s / static_cast<double>(p.R));
          break;
        }
        case ReduceOp::Var: {
          double s = 0;
          for (int64_t r = 0; r < p.R; ++r) s += at(r);
          const double mean = s / static_cast<double>(p.R);
          double ss = 0;
          for (int64_t r = 0; r < p.R; ++r) ss += (at(r) - mean) * (at(r) - mean);
          y[out] = static_cast<float>(ss / static_cast<double>(p.R - (p.unbiased ? 1 : 0)));
          break;
        }
        case ReduceOp::Max: {
          float best = at(0);
          int64_t bi = 0;
          for (int64_t r = 1; r < p.R; ++r)
            if (max_beats(at(r), r, best, bi)) best = at(r), bi = r;
          y[out] = best;
          if (idx) idx[out] = bi;
          break;
        }
        case ReduceOp::Count:
          break;
      }
    }
  }
}

void cpu_reduce_backward(const OpCall& call) {
  const ops::ReduceArgs p = ops::check_reduce_call(call);
  const float* x = p.x.as<float>();
  const float* dy = p.dy.as<float>();
  const int64_t* idx = p.indices.as<int64_t>();
  float* dx = p.dx.as<float>();
  for (int64_t o = 0; o < p.outer; ++o) {
    for (int64_t i = 0; i < p.inner; ++i) {
      const int64_t out = o * p.inner + i;
      double mean = 0;
      if (p.op == ReduceOp::Var) {
        for (int64_t r = 0; r < p.R; ++r) mean += x[(o * p.R + r) * p.inner + i];
        mean /= static_cast<double>(p.R);
      }
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t e = (o * p.R + r) * p.inner + i;
        double g = 0;
        switch (p.op) {
          case ReduceOp::Sum:
            g = dy[out];
            break;
          case ReduceOp::Mean:
            g = dy[out] / static_cast<double>(p.R);
            break;
          case ReduceOp::Var:
            g = dy[out] * 2.0 * (x[e] - mean) / static_cast<double>(p.R - (p.unbiased ? 1 : 0));
            break;
          case ReduceOp::Max:
            g = idx[out] == r ? dy[out] : 0.0;
            break;
          case ReduceOp::Count:
            break;
        }
        dx[e] = static_cast<float>(g);
      }
    }
  }
}

void cpu_argmax(const OpCall& call) {
  const ops::ReduceArgs p = ops::check_reduce_call(call);
  const float* x = p.x.as<float>();
  int32_t* idx = p.indices.as<int32_t>();
  for (int64_t o = 0; o < p.outer; ++o) {
    for (int64_t i = 0; i < p.inner; ++i) {
      auto at = [&](int64_t r) { return x[(o * p.R + r) * p.inner + i]; };
      float best = at(0);
      int64_t bi = 0;
      for (int64_t r = 1; r < p.R; ++r)
        if (max_beats(at(r), r, best, bi)) best = at(r), bi = r;
      idx[o * p.inner + i] = static_cast<int32_t>(bi);
    }
  }
}

}  // namespace

void register_cpu_reduce_ops(OpTable& t) {
  t.add(OpKind::Reduce, cpu_reduce);
  t.add(OpKind::ReduceBackward, cpu_reduce_backward);
  t.add(OpKind::Argmax, cpu_argmax);
}

}  // namespace cudl
