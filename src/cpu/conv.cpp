// cpu/conv.cpp — CPU reference of the conv op family (the spec for these ops): im2col + CBLAS GEMM
// per image and group (col2im for the data gradient), the batch split over threads (cpu/parallel.hpp).
#include "ops/conv.hpp"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "backend/backend.hpp"
#include "cpu/parallel.hpp"
#include "cudl/error.hpp"

namespace cudl {

// ---------------------------------------------------------------------------------------------
// CPU reference
// ---------------------------------------------------------------------------------------------

namespace {

/// col (Cg*R*S, P*Q) of image n, group gi: col[(c*R + r)*S + s][p*Q + q] = x[n, gi*Cg + c, ih, iw]
/// with ih = p*stride_h - pad_h + r*dil_h (zero outside the image).
void im2col(const ops::Conv2dGeometry& g, const float* x, int64_t n, int64_t gi, float* col) {
  const int64_t Cg = g.Cg(), PQ = g.P * g.Q;
  for (int64_t c = 0; c < Cg; ++c) {
    const float* xc = x + ((n * g.C + gi * Cg + c) * g.H) * g.W;
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        float* row = col + ((c * g.R + r) * g.S + s) * PQ;
        for (int64_t p = 0; p < g.P; ++p) {
          const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h;
          for (int64_t q = 0; q < g.Q; ++q) {
            const int64_t iw = q * g.stride_w - g.pad_w + s * g.dil_w;
            row[p * g.Q + q] = (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) ? xc[ih * g.W + iw] : 0.f;
          }
        }
      }
  }
}

/// The adjoint of im2col: dx[n, gi*Cg + c, ih, iw] += every col entry that im2col read from it.
void col2im_add(const ops::Conv2dGeometry& g, const float* col, int64_t n, int64_t gi, float* dx) {
  const int64_t Cg = g.Cg(), PQ = g.P * g.Q;
  for (int64_t c = 0; c < Cg; ++c) {
    float* dxc = dx + ((n * g.C + gi * Cg + c) * g.H) * g.W;
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        const float* row = col + ((c * g.R + r) * g.S + s) * PQ;
        for (int64_t p = 0; p < g.P; ++p) {
          const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h;
          if (ih < 0 || ih >= g.H) continue;
          for (int64_t q = 0; q < g.Q; ++q) {
            const int64_t iw = q * g.stride_w - g.pad_w + s * g.dil_w;
            if (iw >= 0 && iw < g.W) dxc[ih * g.W + iw] += row[p * g.Q + q];
          }
        }
      }
  }
}

// Threads: every op splits the batch into parallel_for chunks (cpu_thread_count() of them, at
// most one per image), each with its own scratch and its own single-threaded GEMMs. Forward,
// data and bias gradients compute each output element exactly as one thread would, so they
// are bitwise equal for every thread count. The filter gradient sums the batch in fixed image
// blocks (filter_blocks: a function of the shape only) whose partial sums are added in block
// order, so it too is bitwise equal for every thread count.

int conv_chunks(const ops::Conv2dGeometry& g) { return static_cast<int>(std::min<int64_t>(cpu_thread_count(), g.N)); }

void cpu_conv2d(const OpCall& c) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(c);
  const float* x = g.x.as<float>();
  const float* w = g.w.as<float>();
  const float* bias = g.bias.as<float>();
  float* y = g.y.as<float>();
  const int64_t Cg = g.Cg(), Kg = g.Kg(), CRS = Cg * g.R * g.S, PQ = g.P * g.Q;
  SingleThreadedBlas blas;
  parallel_for(g.N, conv_chunks(g), [&](int64_t n0, int64_t n1, int) {
    std::vector<float> col(static_cast<size_t>(CRS * PQ));
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        im2col(g, x, n, gi, col.data());
        // y[n, gi*Kg : (gi+1)*Kg] (Kg, PQ) = w_g (Kg, CRS) · col (CRS, PQ)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(Kg), static_cast<int>(PQ),
                    static_cast<int>(CRS), 1.f, w + gi * Kg * CRS, static_cast<int>(CRS), col.data(),
                    static_cast<int>(PQ), 0.f, y + (n * g.K + gi * Kg) * PQ, static_cast<int>(PQ));
      }
      if (bias || g.relu)
        for (int64_t k = 0; k < g.K; ++k) {
          float* row = y + (n * g.K + k) * PQ;
          const float b = bias ? bias[k] : 0.f;
          for (int64_t i = 0; i < PQ; ++i) {
            const float v = row[i] + b;
            row[i] = g.relu ? (v > 0.f ? v : (v == v ? 0.f : v)) : v;  // relu(NaN) is NaN
          }
        }
    }
  });
}

/// dx = the data gradient of the convolution g for dy (Conv2dBackwardData and Conv2dTranspose);
/// bias (C, may be null) is then added to every dx[n, c] plane.
void backward_data(const ops::Conv2dGeometry& g, const float* dy, const float* w, const float* bias, float* dx) {
  const int64_t Cg = g.Cg(), Kg = g.Kg(), CRS = Cg * g.R * g.S, PQ = g.P * g.Q, CHW = g.C * g.H * g.W;
  SingleThreadedBlas blas;
  parallel_for(g.N, conv_chunks(g), [&](int64_t n0, int64_t n1, int) {
    std::fill(dx + n0 * CHW, dx + n1 * CHW, 0.f);
    std::vector<float> col(static_cast<size_t>(CRS * PQ));
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        // dcol (CRS, PQ) = w_gᵀ (CRS, Kg) · dy[n, group] (Kg, PQ)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(CRS), static_cast<int>(PQ),
                    static_cast<int>(Kg), 1.f, w + gi * Kg * CRS, static_cast<int>(CRS), dy + (n * g.K + gi * Kg) * PQ,
                    static_cast<int>(PQ), 0.f, col.data(), static_cast<int>(PQ));
        col2im_add(g, col.data(), n, gi, dx);
      }
    if (bias)
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t ch = 0; ch < g.C; ++ch) {
          float* plane = dx + (n * g.C + ch) * g.H * g.W;
          for (int64_t i = 0; i < g.H * g.W; ++i) plane[i] += bias[ch];
        }
  });
}

void cpu_conv2d_backward_data(const OpCall& c) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(c);
  backward_data(g, g.dy.as<float>(), g.w.as<float>(), nullptr, g.dx.as<float>());
}

// The transposed convolution is the data gradient of the convolution whose geometry its check returns.
void cpu_conv2d_transpose(const OpCall& c) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(c);
  backward_data(g, g.dy.as<float>(), g.w.as<float>(), g.bias.as<float>(), g.dx.as<float>());
}

/// Image blocks of the filter gradient: at most 16, at least one image each, and their partial
/// dw buffers (blocks - 1 of them beside dw itself) within 64 MiB. A function of the shape
/// only, never of the thread count, so that the sum's order is too.
int64_t filter_blocks(const ops::Conv2dGeometry& g) {
  constexpr int64_t kMaxBlocks = 16, kMaxPartialFloats = int64_t{16} << 20;
  const int64_t dw_floats = g.K * g.Cg() * g.R * g.S;
  return std::max<int64_t>(1, std::min({g.N, kMaxBlocks, 1 + kMaxPartialFloats / dw_floats}));
}

void cpu_conv2d_backward_filter(const OpCall& c) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(c);
  const float* x = g.x.as<float>();
  const float* dy = g.dy.as<float>();
  float* dw = g.dw.as<float>();
  const int64_t Cg = g.Cg(), Kg = g.Kg(), CRS = Cg * g.R * g.S, PQ = g.P * g.Q, KCRS = g.K * CRS;
  const int64_t blocks = filter_blocks(g);
  // Block 0 sums into dw, block b > 0 into partial[b - 1]; then dw += partial[0], partial[1], ...
  std::vector<float> partial(static_cast<size_t>((blocks - 1) * KCRS));
  SingleThreadedBlas blas;
  parallel_for(
      blocks, static_cast<int>(std::min<int64_t>(cpu_thread_count(), blocks)), [&](int64_t b0, int64_t b1, int) {
        std::vector<float> col(static_cast<size_t>(CRS * PQ));
        for (int64_t b = b0; b < b1; ++b) {
          float* sum = b == 0 ? dw : partial.data() + (b - 1) * KCRS;
          for (int64_t n = b * g.N / blocks; n < (b + 1) * g.N / blocks; ++n) {
            const bool first = n == b * g.N / blocks;
            for (int64_t gi = 0; gi < g.groups; ++gi) {
              im2col(g, x, n, gi, col.data());
              // sum_g (Kg, CRS) (+)= dy[n, group] (Kg, PQ) · colᵀ (PQ, CRS)
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(Kg), static_cast<int>(CRS),
                          static_cast<int>(PQ), 1.f, dy + (n * g.K + gi * Kg) * PQ, static_cast<int>(PQ), col.data(),
                          static_cast<int>(PQ), first ? 0.f : 1.f, sum + gi * Kg * CRS, static_cast<int>(CRS));
            }
          }
        }
      });
  for (int64_t b = 1; b < blocks; ++b) {
    const float* p = partial.data() + (b - 1) * KCRS;
    for (int64_t i = 0; i < KCRS; ++i) dw[i] += p[i];
  }
}

void cpu_conv2d_backward_bias(const OpCall& c) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(c);
  const float* dy = g.dy.as<float>();
  float* db = g.db.as<float>();
  const int64_t PQ = g.P * g.Q;
  // Channels, not images, are split: each db[k] is summed in one order whatever the thread count.
  parallel_for(g.K, cpu_thread_count(), [&](int64_t k0, int64_t k1, int) {
    for (int64_t k = k0; k < k1; ++k) {
      double s = 0;
      for (int64_t n = 0; n < g.N; ++n) {
        const float* row = dy + (n * g.K + k) * PQ;
        for (int64_t i = 0; i < PQ; ++i) s += row[i];
      }
      db[k] = static_cast<float>(s);
    }
  });
}

}  // namespace

void register_cpu_conv_ops(OpTable& t) {
  t.add(OpKind::Conv2d, cpu_conv2d);
  t.add(OpKind::Conv2dBackwardData, cpu_conv2d_backward_data);
  t.add(OpKind::Conv2dBackwardFilter, cpu_conv2d_backward_filter);
  t.add(OpKind::Conv2dBackwardBias, cpu_conv2d_backward_bias);
  t.add(OpKind::Conv2dTranspose, cpu_conv2d_transpose);
}

}  // namespace cudl
