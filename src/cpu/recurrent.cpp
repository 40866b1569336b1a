// cpu/recurrent.cpp — CPU reference of the recurrent family (the spec for these ops): RecurrentSequence
// and its backpropagation through time, with the per-step GEMMs through CBLAS and the cell math of
// ops/recurrent.hpp. Rows of a batch never interact, so each op splits the batch into parallel_for
// chunks that run the whole time loop on their own rows (single-threaded GEMMs, no per-step joins);
// du, one GEMM over all steps, runs after the loop on OpenBLAS's own threads.
#include "ops/recurrent.hpp"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "backend/backend.hpp"
#include "cpu/parallel.hpp"

namespace cudl {

namespace {

/// Row-major C (m, n) = A (m, k) · op(B) with leading dimensions; B is (n, k) when tb, else (k, n).
void gemm_ld(bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
             float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.f, a, static_cast<int>(lda), b, static_cast<int>(ldb), 0.f, c,
              static_cast<int>(ldc));
}

/// Chunks of the batch: enough rows per chunk that a step's GEMM is worth a thread.
int batch_chunks(int64_t batch, int64_t hidden) {
  const int64_t by_size = std::max<int64_t>(1, batch * hidden / 1024);
  return static_cast<int>(std::min<int64_t>(cpu_thread_count(), std::min(batch, by_size)));
}

void recurrent_sequence_cpu(const OpCall& call) {
  const ops::RecurrentArgs p = ops::check_recurrent_call(call);
  const int64_t T = p.steps, B = p.batch, H = p.hidden, GH = p.gate_cols();
  const int cell = static_cast<int>(p.cell);
  const float* xp = p.xp.as<float>();
  const float* u = p.u.as<float>();
  const float* bias = p.bias.as<float>();
  float* h = p.h.as<float>();
  float* gates = p.gates.as<float>();
  float* aux = p.aux.as<float>();
  if (B == 0) return;
  SingleThreadedBlas blas;
  parallel_for(B, batch_chunks(B, H), [&](int64_t b0, int64_t b1, int) {
    const int64_t nb = b1 - b0;
    std::vector<float> rec(static_cast<size_t>(nb * GH));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t row = t * B + b0, prev = row - B;  // first row of this chunk at t and at t-1
      if (t > 0) gemm_ld(true, nb, GH, H, h + prev * H, H, u, H, rec.data(), GH);  // rec = h_{t-1}·uᵀ
      for (int64_t r = 0; r < nb; ++r) {
        const float* xr = xp + (row + r) * GH;
        const float* rr = t > 0 ? rec.data() + r * GH : nullptr;
        float* gr = gates ? gates + (row + r) * GH : nullptr;
        for (int64_t j = 0; j < H; ++j) {
          const float hp = t > 0 ? h[(prev + r) * H + j] : 0.f;
          const float cp = t > 0 && aux && p.cell == RecurrentCell::Lstm ? aux[(prev + r) * H + j] : 0.f;
          float a = 0.f;
          h[(row + r) * H + j] = recurrent_math::cell_forward(cell, xr, rr, bias, H, j, hp, cp, gr, &a);
          if (aux) aux[(row + r) * H + j] = a;
        }
      }
    }
  });
}

void recurrent_sequence_backward_cpu(const OpCall& call) {
  const ops::RecurrentArgs p = ops::check_recurrent_call(call);
  const int64_t T = p.steps, B = p.batch, H = p.hidden, GH = p.gate_cols();
  const int cell = static_cast<int>(p.cell);
  const float* u = p.u.as<float>();
  const float* h = p.h.as<float>();
  const float* gates = p.gates.as<float>();
  const float* aux = p.aux.as<float>();
  const float* dh = p.dh.as<float>();
  const float* daux = p.daux.as<float>();
  float* dxp = p.dxp.as<float>();
  // The gradient of rec = h_{t-1}·uᵀ (+ bias_r): dxp itself except for gru, whose rec_h enters through r.
  std::vector<float> drec_buf;
  if (p.cell == RecurrentCell::Gru) drec_buf.resize(static_cast<size_t>(T * B * GH));
  float* drec = p.cell == RecurrentCell::Gru ? drec_buf.data() : dxp;
  if (B > 0) {
    SingleThreadedBlas blas;
    parallel_for(B, batch_chunks(B, H), [&](int64_t b0, int64_t b1, int) {
      const int64_t nb = b1 - b0;
      // Gradients carried to step t-1: through u (dh_gemm), directly (gru's z h_{t-1}) and through c.
      std::vector<float> dh_gemm(static_cast<size_t>(nb * H), 0.f), dh_direct(dh_gemm), dc(dh_gemm);
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t row = t * B + b0, prev = row - B;
        for (int64_t r = 0; r < nb; ++r) {
          const int64_t k = (row + r) * H;
          for (int64_t j = 0; j < H; ++j) {
            const int64_t c = r * H + j;
            const float hp = t > 0 ? h[(prev + r) * H + j] : 0.f;
            const float cp = t > 0 && p.cell == RecurrentCell::Lstm ? aux[(prev + r) * H + j] : 0.f;
            const float dht = dh[k + j] + dh_gemm[c] + dh_direct[c];
            const float dct = dc[c] + (daux ? daux[k + j] : 0.f);
            dh_direct[c] = recurrent_math::cell_backward(cell, gates ? gates + (row + r) * GH : nullptr, h[k + j], hp,
                                                         aux ? aux[k + j] : 0.f, cp, H, j, dht, dct,
                                                         dxp + (row + r) * GH, drec + (row + r) * GH, &dc[c]);
          }
        }
        if (t > 0) gemm_ld(false, nb, H, GH, drec + row * GH, GH, u, H, dh_gemm.data(), H);  // drec_t·u
      }
    });
  }
  if (p.du.defined()) {  // du (GH, H) = Σ_{t≥1} drec_tᵀ·h_{t-1}: one GEMM over (T-1)*B rows
    float* du = p.du.as<float>();
    const int64_t k = (T - 1) * B;
    if (k == 0) {
      std::fill(du, du + GH * H, 0.f);
    } else {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(GH), static_cast<int>(H),
                  static_cast<int>(k), 1.f, drec + B * GH, static_cast<int>(GH), h, static_cast<int>(H), 0.f, du,
                  static_cast<int>(H));
    }
  }
  if (p.dbias.defined()) {  // dbias_r = Σ_rows drec, in double, rows in order (read in memory order)
    std::vector<double> sum(static_cast<size_t>(GH), 0.0);
    for (int64_t r = 0; r < T * B; ++r)
      for (int64_t j = 0; j < GH; ++j) sum[j] += drec[r * GH + j];
    std::copy(sum.begin(), sum.end(), p.dbias.as<float>());
  }
}

}  // namespace

void register_cpu_recurrent_ops(OpTable& t) {
  t.add(OpKind::RecurrentSequence, recurrent_sequence_cpu);
  t.add(OpKind::RecurrentSequenceBackward, recurrent_sequence_backward_cpu);
}

}  // namespace cudl
