// cpu/attention.cpp — CPU reference of the attention op family (the spec, ops/attention.hpp):
// per batch, head and query row, masked scores, log-sum-exp, dropout-scaled weights; double sums.
// The (batch, head) pairs are split over cpu_thread_count() threads (results independent of the count).
#include <cmath>
#include <limits>
#include <vector>

#include "backend/backend.hpp"
#include "backend/philox.hpp"
#include "cpu/parallel.hpp"
#include "ops/attention.hpp"
#include "ops/common.hpp"

namespace cudl {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

/// What every row of one (b, h) needs: base pointers of the head's rows and the row strides.
struct Head {
  const ops::AttentionArgs& p;
  int64_t b, h;
  uint64_t seed = 0, offset = 0;

  int64_t qk_stride() const { return p.heads * p.d; }
  int64_t v_stride() const { return p.heads * p.dv_dim; }
  const float* q(int64_t i) const { return p.q.as<float>() + (b * p.tq + i) * qk_stride() + h * p.d; }
  const float* k(int64_t j) const { return p.k.as<float>() + (b * p.tk + j) * qk_stride() + h * p.d; }
  const float* v(int64_t j) const { return p.v.as<float>() + (b * p.tk + j) * v_stride() + h * p.dv_dim; }
  int64_t o_offset(int64_t i) const { return (b * p.tq + i) * v_stride() + h * p.dv_dim; }
  bool allowed(int64_t i, int64_t j) const {
    if (p.causal && j > i) return false;
    return !p.has_mask || p.key_mask.as<float>()[b * p.tk + j] != 0.f;
  }
  /// keep_ij / (1 - p): the dropout factor of weight (i, j).
  double drop(int64_t i, int64_t j) const {
    if (!p.has_dropout) return 1.0;
    const uint64_t n = static_cast<uint64_t>(((b * p.heads + h) * p.tq + i) * p.tk + j);
    return philox::keep_element(seed, offset, p.stream, p.threshold, n) ? p.keep_scale : 0.0;
  }
  /// s_j = scale q_i·k_j for allowed keys, -inf otherwise; returns lse_i (-inf when none is allowed),
  /// or without `lse` just whether any key is allowed (0 or -inf: the backward reads lse_i instead).
  double scores(int64_t i, std::vector<double>& s, bool lse = true) const {
    double m = kNegInf;
    for (int64_t j = 0; j < p.tk; ++j) {
      s[j] = kNegInf;
      if (!allowed(i, j)) continue;
      double dot = 0;
      const float* qi = q(i);
      const float* kj = k(j);
      for (int64_t c = 0; c < p.d; ++c) dot += static_cast<double>(qi[c]) * kj[c];
      s[j] = p.scale * dot;
      m = std::max(m, s[j]);
    }
    if (m == kNegInf || !lse) return m == kNegInf ? kNegInf : 0.0;
    double l = 0;
    for (int64_t j = 0; j < p.tk; ++j)
      if (s[j] != kNegInf) l += std::exp(s[j] - m);
    return m + std::log(l);
  }
};

Head head_of(const ops::AttentionArgs& p, int64_t b, int64_t h) {
  Head hd{p, b, h};
  if (p.has_dropout) {
    const int64_t* rng = p.rng.as<int64_t>();
    hd.seed = static_cast<uint64_t>(rng[0]), hd.offset = static_cast<uint64_t>(rng[1]);
  }
  return hd;
}

void cpu_attention(const OpCall& call) {
  const ops::AttentionArgs p = ops::check_attention_call(call);
  float* o = p.o.as<float>();
  float* lse = p.lse.as<float>();
  // Heads never interact: parallel_for chunks of (b, h) pairs, each written by one thread alone.
  parallel_for(p.batch * p.heads, cpu_thread_count(), [&](int64_t bh0, int64_t bh1, int) {
    std::vector<double> s(static_cast<size_t>(p.tk)), acc(static_cast<size_t>(p.dv_dim));
    for (int64_t bh = bh0; bh < bh1; ++bh) {
      const int64_t b = bh / p.heads, h = bh % p.heads;
      const Head hd = head_of(p, b, h);
      for (int64_t i = 0; i < p.tq; ++i) {
        const double l = hd.scores(i, s);
        lse[(b * p.heads + h) * p.tq + i] = static_cast<float>(l);
        std::fill(acc.begin(), acc.end(), 0.0);
        if (l != kNegInf)
          for (int64_t j = 0; j < p.tk; ++j) {
            if (s[j] == kNegInf) continue;
            const double w = std::exp(s[j] - l) * hd.drop(i, j);
            if (w == 0) continue;
            const float* vj = hd.v(j);
            for (int64_t c = 0; c < p.dv_dim; ++c) acc[c] += w * vj[c];
          }
        float* oi = o + hd.o_offset(i);
        for (int64_t c = 0; c < p.dv_dim; ++c) oi[c] = static_cast<float>(acc[c]);
      }
    }
  });
}

void cpu_attention_backward(const OpCall& call) {
  const ops::AttentionArgs p = ops::check_attention_call(call);
  std::vector<double> dq(p.q.numel(), 0.0), dk(p.k.numel(), 0.0), dv(p.v.numel(), 0.0);
  const float* lse = p.lse.as<float>();
  const float* o = p.o.as<float>();
  const float* d_o = p.d_o.as<float>();
  const int64_t qk_stride = p.heads * p.d, v_stride = p.heads * p.dv_dim;
  // Each (b, h) pair sums into its own slices of dq, dk and dv: chunks of pairs run in parallel,
  // every sum in the same order as one thread would take.
  parallel_for(p.batch * p.heads, cpu_thread_count(), [&](int64_t bh0, int64_t bh1, int) {
    std::vector<double> s(static_cast<size_t>(p.tk));
    for (int64_t bh = bh0; bh < bh1; ++bh) {
      const int64_t b = bh / p.heads, h = bh % p.heads;
      const Head hd = head_of(p, b, h);
      for (int64_t i = 0; i < p.tq; ++i) {
        const double l = lse[(b * p.heads + h) * p.tq + i];
        if (l == kNegInf) continue;  // no allowed key: o_i = 0 whatever q, k, v are
        hd.scores(i, s, /*lse=*/false);
        const float* doi = d_o + hd.o_offset(i);
        const float* oi = o + hd.o_offset(i);
        double delta = 0;
        for (int64_t c = 0; c < p.dv_dim; ++c) delta += static_cast<double>(doi[c]) * oi[c];
        const float* qi = hd.q(i);
        double* dqi = dq.data() + (b * p.tq + i) * qk_stride + h * p.d;
        for (int64_t j = 0; j < p.tk; ++j) {
          if (s[j] == kNegInf) continue;
          const double pij = std::exp(s[j] - l), drop = hd.drop(i, j);
          const float* vj = hd.v(j);
          double dp = 0;
          for (int64_t c = 0; c < p.dv_dim; ++c) dp += static_cast<double>(doi[c]) * vj[c];
          double* dvj = dv.data() + (b * p.tk + j) * v_stride + h * p.dv_dim;
          for (int64_t c = 0; c < p.dv_dim; ++c) dvj[c] += pij * drop * doi[c];
          const double ds = pij * (dp * drop - delta) * p.scale;
          const float* kj = hd.k(j);
          double* dkj = dk.data() + (b * p.tk + j) * qk_stride + h * p.d;
          for (int64_t c = 0; c < p.d; ++c) {
            dqi[c] += ds * kj[c];
            dkj[c] += ds * qi[c];
          }
        }
      }
    }
  });
  auto store = [](const TensorView& t, const std::vector<double>& v) {
    if (!t.defined()) return;
    float* out = t.as<float>();
    for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  };
  store(p.dq, dq);
  store(p.dk, dk);
  store(p.dv, dv);
}

}  // namespace

void register_cpu_attention_ops(OpTable& t) {
  t.add(OpKind::Attention, cpu_attention);
  t.add(OpKind::AttentionBackward, cpu_attention_backward);
}

}  // namespace cudl
