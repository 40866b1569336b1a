// cpu/matmul.cpp — CPU reference of the matmul family (the spec for these ops): Matmul (batched,
// transposes, broadcast b), Linear (x·wᵀ + b, ReLU / tanh-GELU) and LinearBackward; GEMMs via cpu/blas.hpp,
// the GELU through cpu/vmath.hpp (vectorised).
#include "ops/matmul.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/backend.hpp"
#include "cpu/blas.hpp"
#include "cpu/parallel.hpp"
#include "cpu/vmath.hpp"
#include "ops/common.hpp"
#include "cudl/error.hpp"

namespace cudl {

// ---------------------------------------------------------------------------------------------
// Reference implementations

namespace {

void matmul_cpu(const OpCall& call) {
  const ops::MatmulArgs p = ops::check_matmul_call(call);
  const float* a = p.a.as<float>();
  const float* b = p.b.as<float>();
  float* c = p.c.as<float>();
  for (int64_t bi = 0; bi < p.batch; ++bi)
    sgemm_packed(p.trans_a, p.trans_b, p.m, p.n, p.k, a + bi * p.m * p.k, b + (p.broadcast_b ? 0 : bi * p.k * p.n),
             c + bi * p.m * p.n);
}

// The GELU loops, run through vmath::simd (a baseline and an AVX2 copy, the same bits).
struct GeluLoop {
  [[gnu::always_inline]] static void run(float* y, int64_t n) {
    for (int64_t j = 0; j < n; ++j) y[j] = vmath::gelu_tanh(y[j]);
  }
};
struct GeluGradLoop {
  [[gnu::always_inline]] static void run(const float* __restrict__ dy, const float* __restrict__ pre,
                                         float* __restrict__ d, int64_t n) {
    for (int64_t i = 0; i < n; ++i) d[i] = vmath::gelu_tanh_grad(dy[i], pre[i]);
  }
};

void linear_cpu(const OpCall& call) {
  const ops::LinearArgs p = ops::check_linear_call(call);
  const float* x = p.x.as<float>();
  const float* w = p.w.as<float>();
  const float* bias = p.bias.as<float>();
  float* y = p.y.as<float>();
  float* pre = p.pre.as<float>();
  uint8_t* mask = p.mask.as<uint8_t>();
  const int64_t mask_ld = relu_mask_row_bytes(p.out);
  if (mask) std::fill(mask, mask + p.rows * mask_ld, uint8_t{0});
  sgemm_packed(false, true, p.rows, p.out, p.in, x, w, y);  // y = x · wᵀ
  // The epilogue, one loop per kind over each row (vectorised): v = y + b, then act(v); rows split
  // over threads when there are enough of them (each element on its own: any split, same bits).
  parallel_for(p.rows, elementwise_chunks(p.rows * p.out), [&](int64_t r0, int64_t r1, int) {
  for (int64_t r = r0; r < r1; ++r) {
    float* yr = y + r * p.out;
    if (bias)
      for (int64_t j = 0; j < p.out; ++j) yr[j] += bias[j];
    else
      for (int64_t j = 0; j < p.out; ++j) yr[j] += 0.f;  // as y + 0 does on the GPU: -0 becomes +0
    switch (p.epilogue) {
      case Epilogue::None:
        break;
      case Epilogue::Relu:
        if (mask) {
          uint8_t* mr = mask + r * mask_ld;
          for (int64_t j = 0; j < p.out; ++j)
            mr[j / 8] |= static_cast<uint8_t>((yr[j] > 0.f ? 1u : 0u) << (j % 8));
        }
        for (int64_t j = 0; j < p.out; ++j) yr[j] = matmul_math::relu(yr[j]);
        break;
      case Epilogue::Gelu: {
        float* pr = pre ? pre + r * p.out : nullptr;
        if (pr) std::copy(yr, yr + p.out, pr);
        // matmul_math::gelu_tanh's function, through vmath's exp (see vmath::gelu_parts).
        vmath::simd<GeluLoop>(yr, p.out);
        break;
      }
    }
  }
  });
}

/// db[j] = Σ_r g[r, j] over a row-major (rows, cols) matrix, summed in double in row order (rows
/// outer, so the matrix is read in memory order: long matrices like a sequence's T*B rows).
void column_sums(const float* g, int64_t rows, int64_t cols, float* db) {
  std::vector<double> s(static_cast<size_t>(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) s[j] += g[r * cols + j];
  for (int64_t j = 0; j < cols; ++j) db[j] = static_cast<float>(s[j]);
}

void linear_backward_cpu(const OpCall& call) {
  const ops::LinearBackwardArgs p = ops::check_linear_backward_call(call);
  const float* dy = p.dy.as<float>();
  const int64_t n = p.rows * p.out;
  // dpre = dy ⊙ act'(·)
  std::vector<float> dpre_buf;
  const float* dpre = dy;
  if (p.epilogue != Epilogue::None) {
    const float* act = p.act.as<float>();
    dpre_buf.resize(static_cast<size_t>(n));
    float* d = dpre_buf.data();
    parallel_for(n, elementwise_chunks(n), [&](int64_t i0, int64_t i1, int) {
      if (p.epilogue == Epilogue::Relu)
        for (int64_t i = i0; i < i1; ++i) d[i] = matmul_math::relu_grad(dy[i], act[i]);
      else
        vmath::simd<GeluGradLoop>(dy + i0, act + i0, d + i0, i1 - i0);
    });
    dpre = d;
  }
  if (p.has_dx) {  // dx (rows, in) = dpre (rows, out) · w (out, in)
    float* dx = p.dx.as<float>();
    sgemm_packed(false, false, p.rows, p.in, p.out, dpre, p.w.as<float>(), dx);
    if (p.dx_relu) {  // through the relu below: keep dx where its pre-activation was > 0
      const uint8_t* mask = p.mask.as<uint8_t>();
      const int64_t ld = relu_mask_row_bytes(p.in);
      for (int64_t r = 0; r < p.rows; ++r)
        for (int64_t j = 0; j < p.in; ++j)
          dx[r * p.in + j] = ((mask[r * ld + j / 8] >> (j % 8)) & 1u) ? dx[r * p.in + j] : 0.f;
      if (p.has_db_below) column_sums(dx, p.rows, p.in, p.db_below.as<float>());
    }
  }
  if (p.has_dw)  // dw (out, in) = dpreᵀ · x (rows, in)
    sgemm_packed(true, false, p.out, p.in, p.rows, dpre, p.x.as<float>(), p.dw.as<float>());
  if (p.has_db) column_sums(dpre, p.rows, p.out, p.db.as<float>());
}

}  // namespace

void register_cpu_matmul_ops(OpTable& t) {
  t.add(OpKind::Matmul, matmul_cpu);
  t.add(OpKind::Linear, linear_cpu);
  t.add(OpKind::LinearBackward, linear_backward_cpu);
}

}  // namespace cudl
