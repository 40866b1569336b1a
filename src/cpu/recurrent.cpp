// cpu/recurrent.cpp — CPU reference of the recurrent family (the spec for these ops): RecurrentSequence
// and its backpropagation through time, with the per-step GEMMs through CBLAS and the cell math of
// ops/recurrent.hpp. Rows of a batch never interact, so each op splits the batch into parallel_for
// chunks that run the whole time loop on their own rows (single-threaded GEMMs, no per-step joins);
// du, one GEMM over all steps, runs after the loop, split over the same pool (cpu/blas.hpp).
#include "ops/recurrent.hpp"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "backend/backend.hpp"
#include "cpu/blas.hpp"
#include "cpu/parallel.hpp"
#include "cpu/vmath.hpp"

namespace cudl {

namespace {

// The cell math of ops/recurrent.hpp (recurrent_math::cell_forward / cell_backward), the same
// expressions unit by unit, written as loops over a row's H units with the cell a template argument
// and vmath's sigmoid and tanh (recurrent_math's formulas with a vectorisable exp), so that GCC
// vectorises them. Absent inputs (rec and the state at t = 0, bias_r but for gru, daux) are rows of
// zeros, which is what the shared functions substitute for a null pointer.
constexpr int kSimple = static_cast<int>(RecurrentCell::Simple), kLstm = static_cast<int>(RecurrentCell::Lstm);

template <int Cell>
[[gnu::always_inline]] inline void cell_forward_row_impl(const float* __restrict__ xr, const float* __restrict__ rr, const float* __restrict__ br,
                                                          const float* __restrict__ hp, const float* __restrict__ cp,
                                                          int64_t H, float* __restrict__ h, float* __restrict__ g,
                                                          float* __restrict__ aux) {
  if constexpr (Cell == kSimple) {
    for (int64_t j = 0; j < H; ++j) h[j] = vmath::tanh(xr[j] + (rr[j] + br[j]));
  } else if constexpr (Cell == kLstm) {
    for (int64_t j = 0; j < H; ++j) {
      const float i = vmath::sigmoid(xr[j] + (rr[j] + br[j]));
      const float f = vmath::sigmoid(xr[H + j] + (rr[H + j] + br[H + j]));
      const float gg = vmath::tanh(xr[2 * H + j] + (rr[2 * H + j] + br[2 * H + j]));
      const float o = vmath::sigmoid(xr[3 * H + j] + (rr[3 * H + j] + br[3 * H + j]));
      const float c = f * cp[j] + i * gg;
      g[j] = i, g[H + j] = f, g[2 * H + j] = gg, g[3 * H + j] = o;
      aux[j] = c;
      h[j] = o * vmath::tanh(c);
    }
  } else {
    for (int64_t j = 0; j < H; ++j) {
      const float q = rr[2 * H + j] + br[2 * H + j];
      const float z = vmath::sigmoid(xr[j] + (rr[j] + br[j]));
      const float r = vmath::sigmoid(xr[H + j] + (rr[H + j] + br[H + j]));
      const float n = vmath::tanh(xr[2 * H + j] + r * q);
      g[j] = z, g[H + j] = r, g[2 * H + j] = n;
      aux[j] = q;
      h[j] = z * hp[j] + (1.f - z) * n;
    }
  }
}

/// dh_direct[j] (in: dh_{t} carried, out: gru's direct part of dh_{t-1}), dc[j] (in: dc_t carried,
/// out: dc_{t-1}); dh_gemm, dh and daux are added in as the shared loop does.
template <int Cell>
[[gnu::always_inline]] inline void cell_backward_row_impl(const float* __restrict__ g, const float* __restrict__ h, const float* __restrict__ hp,
                                                           const float* __restrict__ aux, const float* __restrict__ cp,
                                                           const float* __restrict__ dh, const float* __restrict__ daux,
                                                           const float* __restrict__ dh_gemm,
                                                           float* __restrict__ dh_direct, float* __restrict__ dc,
                                                           int64_t H, float* __restrict__ dxp,
                                                           float* __restrict__ drec) {  // gru only: the others' is dxp
  for (int64_t j = 0; j < H; ++j) {
    const float dht = dh[j] + dh_gemm[j] + dh_direct[j];
    const float dct = dc[j] + daux[j];
    if constexpr (Cell == kSimple) {
      const float da = dht * (1.f - h[j] * h[j]);
      dxp[j] = da;  // = drec
      dh_direct[j] = 0.f;
    } else if constexpr (Cell == kLstm) {
      const float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
      const float tc = vmath::tanh(aux[j]);
      const float dcs = dct + dht * o * (1.f - tc * tc);
      const float da_i = dcs * gg * i * (1.f - i), da_f = dcs * cp[j] * f * (1.f - f);
      const float da_g = dcs * i * (1.f - gg * gg), da_o = dht * tc * o * (1.f - o);
      dxp[j] = da_i, dxp[H + j] = da_f, dxp[2 * H + j] = da_g, dxp[3 * H + j] = da_o;  // = drec
      dc[j] = dcs * f;
      dh_direct[j] = 0.f;
    } else {
      const float z = g[j], r = g[H + j], n = g[2 * H + j];
      const float da_n = dht * (1.f - z) * (1.f - n * n);
      const float da_z = dht * (hp[j] - n) * z * (1.f - z);
      const float da_r = da_n * aux[j] * r * (1.f - r);
      dxp[j] = da_z, dxp[H + j] = da_r, dxp[2 * H + j] = da_n;
      drec[j] = da_z, drec[H + j] = da_r, drec[2 * H + j] = da_n * r;
      dh_direct[j] = dht * z;
    }
  }
}

// The row loops, run through vmath::simd: a baseline copy (4 lanes) and an AVX2 copy (8 lanes),
// the same bits.
template <int Cell, bool Backward>
struct CellRow {
  template <typename... Args>
  [[gnu::always_inline]] static void run(Args... args) {
    if constexpr (Backward)
      cell_backward_row_impl<Cell>(args...);
    else
      cell_forward_row_impl<Cell>(args...);
  }
};
template <int Cell, bool Backward, typename... Args>
void cell_row(Args... args) {
  vmath::simd<CellRow<Cell, Backward>>(args...);
}

/// Calls fn(std::integral_constant<int, cell>).
template <typename Fn>
void with_cell(RecurrentCell cell, Fn fn) {
  switch (cell) {
    case RecurrentCell::Simple: return fn(std::integral_constant<int, kSimple>{});
    case RecurrentCell::Lstm: return fn(std::integral_constant<int, kLstm>{});
    case RecurrentCell::Gru: return fn(std::integral_constant<int, static_cast<int>(RecurrentCell::Gru)>{});
  }
}

/// Chunks of the batch: enough rows per chunk that a step's GEMM is worth a thread.
int batch_chunks(int64_t batch, int64_t hidden) {
  const int64_t by_size = std::max<int64_t>(1, batch * hidden / 1024);
  return static_cast<int>(std::min<int64_t>(cpu_thread_count(), std::min(batch, by_size)));
}

void recurrent_sequence_cpu(const OpCall& call) {
  const ops::RecurrentArgs p = ops::check_recurrent_call(call);
  const int64_t T = p.steps, B = p.batch, H = p.hidden, GH = p.gate_cols();
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
    std::vector<float> rec(static_cast<size_t>(nb * GH)), zeros(static_cast<size_t>(GH), 0.f);
    const float* br = bias ? bias : zeros.data();
    with_cell(p.cell, [&](auto cell) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t row = t * B + b0, prev = row - B;  // first row of this chunk at t and at t-1
        if (t > 0) sgemm(false, true, nb, GH, H, h + prev * H, H, u, H, rec.data(), GH);  // rec = h_{t-1}·uᵀ
        for (int64_t r = 0; r < nb; ++r) {
          const bool first = t == 0;
          cell_row<decltype(cell)::value, false>(
              xp + (row + r) * GH, first ? zeros.data() : rec.data() + r * GH, br,
              first ? zeros.data() : h + (prev + r) * H,
              first || p.cell != RecurrentCell::Lstm ? zeros.data() : aux + (prev + r) * H, H, h + (row + r) * H,
              gates ? gates + (row + r) * GH : nullptr, aux ? aux + (row + r) * H : nullptr);  // none: simple
        }
      }
    });
  });
}

void recurrent_sequence_backward_cpu(const OpCall& call) {
  const ops::RecurrentArgs p = ops::check_recurrent_call(call);
  const int64_t T = p.steps, B = p.batch, H = p.hidden, GH = p.gate_cols();
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
      const std::vector<float> zeros(static_cast<size_t>(GH), 0.f);
      with_cell(p.cell, [&](auto cell) {
        for (int64_t t = T - 1; t >= 0; --t) {
          const int64_t row = t * B + b0, prev = row - B;
          for (int64_t r = 0; r < nb; ++r) {
            const int64_t k = (row + r) * H, c = r * H;
            const bool first = t == 0;
            cell_row<decltype(cell)::value, true>(
                gates ? gates + (row + r) * GH : zeros.data(), h + k, first ? zeros.data() : h + (prev + r) * H,
                aux ? aux + k : zeros.data(),
                first || p.cell != RecurrentCell::Lstm ? zeros.data() : aux + (prev + r) * H, dh + k,
                daux ? daux + k : zeros.data(), dh_gemm.data() + c, dh_direct.data() + c, dc.data() + c, H,
                dxp + (row + r) * GH, p.cell == RecurrentCell::Gru ? drec + (row + r) * GH : nullptr);
          }
          if (t > 0) sgemm(false, false, nb, H, GH, drec + row * GH, GH, u, H, dh_gemm.data(), H);  // drec_t·u
        }
      });
    });
  }
  if (p.du.defined()) {  // du (GH, H) = Σ_{t≥1} drec_tᵀ·h_{t-1}: one GEMM over (T-1)*B rows
    float* du = p.du.as<float>();
    const int64_t k = (T - 1) * B;
    sgemm(true, false, GH, H, k, drec + B * GH, GH, h, H, du, H);  // k = 0: zeros
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
