// cpu/pool.cpp — CPU reference implementations of the pool op family (the spec for these ops):
// 2-D max pooling (first maximum in window scan order wins), average pooling, global average.
#include "ops/pool.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/backend.hpp"
#include "cpu/parallel.hpp"
#include "cpu/select.hpp"
#include "cudl/error.hpp"

namespace cudl {

namespace {

using cpu_select::keep_if;

/// One step of the window scan: cell k (value v) replaces the best so far when
/// !isnan(best_v) && (v > best_v || isnan(v)), written as selects that GCC if-converts
/// (data-dependent branches here are mispredicted half the time) and vectorises in the 2x2 loops
/// (with `&` and `|` on the bools instead, GCC 12 vectorises neither).
template <typename Index>
[[gnu::always_inline]] inline void scan_cell(Index k, float v, Index& best, float& best_v) {
  const bool take = best_v == best_v && (v > best_v || v != v);
  best = take ? k : best;
  best_v = take ? v : best_v;
}

/// Flat index (into H*W) of the window's maximum: the first in row-major scan order; a NaN counts
/// as the maximum (the first NaN wins). Padding never wins. -1 when the window has no input cell.
int64_t window_argmax(const float* img, const ops::PoolGeometry& g, int64_t p, int64_t q) {
  int64_t best = -1;
  float best_v = 0;
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t hh = p * g.sh - g.ph + i;
    if (hh < 0 || hh >= g.h) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t ww = q * g.sw - g.pw + j;
      if (ww < 0 || ww >= g.w) continue;
      const float v = img[hh * g.w + ww];
      if (best < 0) {
        best = hh * g.w + ww;
        best_v = v;
      } else {
        scan_cell(hh * g.w + ww, v, best, best_v);
      }
    }
  }
  return best;
}

/// Whether the window is the common 2x2, stride 2, no padding one, which has loops of its own.
bool is_two_by_two(const ops::PoolGeometry& g) {
  return g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
}

/// window_argmax for a 2x2 window a b / c d: the same scan (scan_cell from a), unrolled, so
/// that a loop over windows vectorises. Returns the winner's position 0..3 and its value in `v`.
[[gnu::always_inline]] inline int argmax_2x2(float a, float b, float c, float d, float& v) {
  int k = 0;  // int, not int64_t: the same lane width as the floats
  v = a;
  scan_cell(1, b, k, v);
  scan_cell(2, c, k, v);
  scan_cell(3, d, k, v);
  return k;
}

/// Max pooling 2x2 / stride 2 of one pair of input rows r0, r1 (x row 2p and 2p + 1) into output
/// row y (q windows); argmax (when kArgmax) is the flat index into the image, base = 2p * W.
template <bool kArgmax>
void max_pool_2x2_row(const float* r0, const float* r1, int64_t q_count, int64_t w, int64_t base, float* y,
                      int32_t* am) {
  for (int64_t q = 0; q < q_count; ++q) {
    float v;
    const int k = argmax_2x2(r0[2 * q], r0[2 * q + 1], r1[2 * q], r1[2 * q + 1], v);
    y[q] = v;
    if (kArgmax) am[q] = static_cast<int32_t>(base + 2 * q + (k >> 1) * w + (k & 1));
  }
}

/// Calls fn(img, p, q, k) for every window of every image with k its argmax in image `img`.
template <typename Fn>
void for_each_window_argmax(const float* x, const ops::PoolGeometry& g, Fn fn) {
  for (int64_t img = 0; img < g.n * g.c; ++img) {
    const float* xi = x + img * g.h * g.w;
    for (int64_t p = 0; p < g.p; ++p)
      for (int64_t q = 0; q < g.q; ++q)  // never -1: padding is at most half the kernel
        fn(img, p, q, window_argmax(xi, g, p, q));
  }
}

void max_pool2d(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  const float* x = g.x.as<float>();
  float* y = g.y.as<float>();
  int32_t* am = g.argmax.as<int32_t>();
  if (is_two_by_two(g)) {  // planes (image, channel) are independent: split over threads
    parallel_for(g.n * g.c, cpu_thread_count(), [&](int64_t first, int64_t last, int) {
      for (int64_t img = first; img < last; ++img)
        for (int64_t p = 0; p < g.p; ++p) {
          const float* r0 = x + (img * g.h + 2 * p) * g.w;
          const int64_t o = (img * g.p + p) * g.q;
          if (am)
            max_pool_2x2_row<true>(r0, r0 + g.w, g.q, g.w, 2 * p * g.w, y + o, am + o);
          else
            max_pool_2x2_row<false>(r0, r0 + g.w, g.q, g.w, 2 * p * g.w, y + o, nullptr);
        }
    });
    return;
  }
  for_each_window_argmax(x, g, [&](int64_t img, int64_t p, int64_t q, int64_t k) {
    const int64_t o = (img * g.p + p) * g.q + q;
    y[o] = x[img * g.h * g.w + k];
    if (am) am[o] = static_cast<int32_t>(k);
  });
}

/// max_pool2d_backward for one 2x2 / stride 2 image: every cell of every window written (dy at
/// the argmax, 0 elsewhere), then the odd last column and row that no window covers zeroed.
void max_pool_2x2_backward_image(const float* xi, const float* dyi, const ops::PoolGeometry& g, float* dxi) {
  for (int64_t p = 0; p < g.p; ++p) {
    const float* r0 = xi + 2 * p * g.w;
    const float* r1 = r0 + g.w;
    const float* d = dyi + p * g.q;
    float* o0 = dxi + 2 * p * g.w;
    float* o1 = o0 + g.w;
    for (int64_t q = 0; q < g.q; ++q) {
      float v;
      const int k = argmax_2x2(r0[2 * q], r0[2 * q + 1], r1[2 * q], r1[2 * q + 1], v);
      const float t = d[q] + 0.f;  // what the double sum below gives for one term (-0 becomes +0)
      o0[2 * q] = keep_if(k == 0, t);
      o0[2 * q + 1] = keep_if(k == 1, t);
      o1[2 * q] = keep_if(k == 2, t);
      o1[2 * q + 1] = keep_if(k == 3, t);
    }
    if (g.w % 2) o0[g.w - 1] = o1[g.w - 1] = 0.f;
  }
  if (g.h % 2) std::fill(dxi + (g.h - 1) * g.w, dxi + g.h * g.w, 0.f);
}

// Each window sends its dy to its argmax; contributions to one input cell are summed in window
// (row-major) order.
void max_pool2d_backward(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  const float* x = g.x.as<float>();
  const float* dy = g.dy.as<float>();
  float* dx = g.dx.as<float>();
  const int64_t hw = g.h * g.w;
  if (is_two_by_two(g)) {
    parallel_for(g.n * g.c, cpu_thread_count(), [&](int64_t first, int64_t last, int) {
      for (int64_t img = first; img < last; ++img)
        max_pool_2x2_backward_image(x + img * hw, dy + img * g.p * g.q, g, dx + img * hw);
    });
    return;
  }
  if (g.sh >= g.kh && g.sw >= g.kw) {
    // Windows do not overlap: each cell receives at most one dy, and 0.0 + dy (float) is what the
    // double sum below gives for one term (-0 becomes +0 in both).
    std::fill(dx, dx + g.n * g.c * hw, 0.f);
    for_each_window_argmax(x, g, [&](int64_t img, int64_t p, int64_t q, int64_t k) {
      dx[img * hw + k] = 0.f + dy[(img * g.p + p) * g.q + q];
    });
    return;
  }
  std::vector<double> acc(static_cast<size_t>(hw));
  for (int64_t img = 0; img < g.n * g.c; ++img) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const float* xi = x + img * hw;
    for (int64_t p = 0; p < g.p; ++p)
      for (int64_t q = 0; q < g.q; ++q) acc[window_argmax(xi, g, p, q)] += dy[(img * g.p + p) * g.q + q];
    for (int64_t k = 0; k < hw; ++k) dx[img * hw + k] = static_cast<float>(acc[k]);
  }
}

// Padding counts as zeros: every window divides by kh * kw.
void avg_pool2d(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  const float* x = g.x.as<float>();
  float* y = g.y.as<float>();
  const double area = static_cast<double>(g.kh * g.kw);
  for (int64_t img = 0; img < g.n * g.c; ++img) {
    const float* xi = x + img * g.h * g.w;
    for (int64_t p = 0; p < g.p; ++p)
      for (int64_t q = 0; q < g.q; ++q) {
        double s = 0;
        for (int64_t i = 0; i < g.kh; ++i)
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t hh = p * g.sh - g.ph + i, ww = q * g.sw - g.pw + j;
            if (hh >= 0 && hh < g.h && ww >= 0 && ww < g.w) s += xi[hh * g.w + ww];
          }
        y[(img * g.p + p) * g.q + q] = static_cast<float>(s / area);
      }
  }
}

void avg_pool2d_backward(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  const float* dy = g.dy.as<float>();
  float* dx = g.dx.as<float>();
  const double area = static_cast<double>(g.kh * g.kw);
  std::vector<double> acc(static_cast<size_t>(g.h * g.w));
  for (int64_t img = 0; img < g.n * g.c; ++img) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t p = 0; p < g.p; ++p)
      for (int64_t q = 0; q < g.q; ++q) {
        const double d = dy[(img * g.p + p) * g.q + q] / area;
        for (int64_t i = 0; i < g.kh; ++i)
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t hh = p * g.sh - g.ph + i, ww = q * g.sw - g.pw + j;
            if (hh >= 0 && hh < g.h && ww >= 0 && ww < g.w) acc[hh * g.w + ww] += d;
          }
      }
    for (int64_t k = 0; k < g.h * g.w; ++k) dx[img * g.h * g.w + k] = static_cast<float>(acc[k]);
  }
}

void global_avg_pool(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  const float* x = g.x.as<float>();
  float* y = g.y.as<float>();
  const int64_t hw = g.h * g.w;
  for (int64_t img = 0; img < g.n * g.c; ++img) {
    double s = 0;
    for (int64_t k = 0; k < hw; ++k) s += x[img * hw + k];
    y[img] = static_cast<float>(s / static_cast<double>(hw));
  }
}

void global_avg_pool_backward(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  const float* dy = g.dy.as<float>();
  float* dx = g.dx.as<float>();
  const int64_t hw = g.h * g.w;
  for (int64_t img = 0; img < g.n * g.c; ++img)
    for (int64_t k = 0; k < hw; ++k) dx[img * hw + k] = static_cast<float>(dy[img] / static_cast<double>(hw));
}

}  // namespace

void register_cpu_pool_ops(OpTable& t) {
  t.add(OpKind::MaxPool2d, max_pool2d);
  t.add(OpKind::MaxPool2dBackward, max_pool2d_backward);
  t.add(OpKind::AvgPool2d, avg_pool2d);
  t.add(OpKind::AvgPool2dBackward, avg_pool2d_backward);
  t.add(OpKind::GlobalAvgPool, global_avg_pool);
  t.add(OpKind::GlobalAvgPoolBackward, global_avg_pool_backward);
}

}  // namespace cudl
