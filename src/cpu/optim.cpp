// cpu/optim.cpp — CPU reference of the optimizer op family (SGD, Adam/AdamW, RMSprop, Adagrad, weight
// penalties, global-norm clipping, dynamic loss scaling): the spec. Element math in f32, step scalars in f64;
// with weight_copies a step also stores each updated parameter rounded to its 16-bit copy.
#include "ops/optim.hpp"

#include <cmath>
#include <vector>

#include "backend/backend.hpp"
#include "core/half.hpp"
#include "ops/common.hpp"

namespace cudl {
namespace {

using op_checks::fail_at;

/// The groups of a checked call as pointers to each group's first tensor.
std::vector<const TensorView*> groups(const OpCall& c) {
  const ops::OptimArgs g = ops::check_optim_call(c);
  std::vector<const TensorView*> out;
  for (int k = 0; k < g.n; ++k) out.push_back(&g.at(k, 0));
  return out;
}

/// A group's 16-bit weight copy (weight_copies), or none: store(i, p) writes round(p) (nearest even).
struct WeightCopy {
  uint16_t* bits = nullptr;
  bool bf16 = false;
  void store(int64_t i, float p) const {
    if (bits) bits[i] = bf16 ? float_to_bf16_bits(p) : float_to_half_bits(p);
  }
};

/// The 16-bit copy of each group's parameter, in the order of groups(c) (none without weight_copies).
std::vector<WeightCopy> weight_copies(const OpCall& c) {
  const ops::OptimArgs g = ops::check_optim_call(c);
  std::vector<WeightCopy> out(static_cast<size_t>(g.n));
  if (!g.weight_copies) return out;
  for (int k = 0; k < g.n; ++k)
    if (g.copy(k).defined()) out[k] = WeightCopy{g.copy(k).as<uint16_t>(), g.copy(k).dtype == DType::bf16};
  return out;
}

struct Hyper {
  float lr;
  double t;
  bool skip;  // skip_on_flag and hyper[2] != 0: the step changes nothing, t included
};

/// lr and t from the (host) hyper tensor, after advancing t when the step's advance_t is set (in
/// f32, as an Increment node would); t must be >= 1 (a device backend cannot check this).
Hyper read_hyper(const OpCall& c) {
  const ops::OptimArgs args = ops::check_optim_call(c);  // hyper is valid before it is read
  float* v = args.hyper.as<float>();
  if (args.skip_on_flag && v[2] != 0) return Hyper{v[0], static_cast<double>(v[1]), true};
  const float t = args.advance_t ? v[1] + 1.f : v[1];
  if (!(t >= 1))
    fail_at(c, detail::concat("step t = hyper[1]", args.advance_t ? " + 1" : "", " must be >= 1 (1-based), got ", t));
  v[1] = t;
  return Hyper{v[0], static_cast<double>(t), false};
}

// groups (param, grad, [momentum_buf when momentum != 0]); torch.optim.SGD:
//   g = grad + wd*p;  buf = (t == 1) ? g : momentum*buf + (1-dampening)*g;
//   g = nesterov ? g + momentum*buf : buf;  p -= lr*g
void sgd_step(const OpCall& c) {
  const Hyper h = read_hyper(c);
  if (h.skip) return;
  const ops::SgdAttrs a = ops::SgdAttrs::from(c.attrs);
  const float momentum = static_cast<float>(a.momentum), dampening = static_cast<float>(a.dampening);
  const float wd = static_cast<float>(a.weight_decay);
  const bool nesterov = a.nesterov;
  const int width = momentum != 0 ? 3 : 2;
  const bool first = h.t == 1;
  const std::vector<WeightCopy> copies = weight_copies(c);
  const std::vector<const TensorView*> gs = groups(c);
  for (size_t k = 0; k < gs.size(); ++k) {
    const TensorView* g = gs[k];
    const WeightCopy& copy = copies[k];
    float* p = g[0].as<float>();
    const float* grad = g[1].as<float>();
    float* buf = width == 3 ? g[2].as<float>() : nullptr;
    for (int64_t i = 0; i < g[0].numel(); ++i) {
      float d = grad[i];
      if (wd != 0) d = d + wd * p[i];
      if (buf) {
        const float b = first ? d : momentum * buf[i] + (1 - dampening) * d;
        buf[i] = b;
        d = nesterov ? d + momentum * b : b;
      }
      p[i] = p[i] - h.lr * d;
      copy.store(i, p[i]);
    }
  }
}

// groups (param, grad, m, v); torch.optim.Adam / AdamW (m and v start at zero):
//   decoupled: p *= 1 - lr*wd, else g += wd*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// With epsilon_hat (Keras's and TensorFlow's Adam), eps is added to sqrt(v) before the bias
// correction: the same formula with eps / sqrt(1 - b2^t) for eps.
void adam_step(const OpCall& c) {
  const Hyper h = read_hyper(c);
  if (h.skip) return;
  const ops::AdamAttrs a = ops::AdamAttrs::from(c.attrs);
  const double b1 = a.beta1, b2 = a.beta2;
  const float wd = static_cast<float>(a.weight_decay);
  const bool decoupled = a.decoupled;
  const float step_size = static_cast<float>(h.lr / (1.0 - std::pow(b1, h.t)));
  const double bc2 = std::sqrt(1.0 - std::pow(b2, h.t));
  const float bc2_sqrt = static_cast<float>(bc2);
  const float eps = static_cast<float>(a.epsilon_hat ? a.eps / bc2 : a.eps);
  const float decay = static_cast<float>(1.0 - static_cast<double>(h.lr) * a.weight_decay);
  const float fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
  const float cb1 = static_cast<float>(1.0 - b1), cb2 = static_cast<float>(1.0 - b2);
  const std::vector<WeightCopy> copies = weight_copies(c);
  const std::vector<const TensorView*> gs = groups(c);
  for (size_t k = 0; k < gs.size(); ++k) {
    const TensorView* g = gs[k];
    const WeightCopy& copy = copies[k];
    float* p = g[0].as<float>();
    const float* grad = g[1].as<float>();
    float* m = g[2].as<float>();
    float* v = g[3].as<float>();
    for (int64_t i = 0; i < g[0].numel(); ++i) {
      float d = grad[i];
      float w = p[i];
      if (decoupled)
        w = w * decay;
      else if (wd != 0)
        d = d + wd * w;
      const float mi = fb1 * m[i] + cb1 * d;
      const float vi = fb2 * v[i] + cb2 * (d * d);
      m[i] = mi;
      v[i] = vi;
      p[i] = w - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
      copy.store(i, p[i]);
    }
  }
}

// groups (param, grad, sq_avg); torch.optim.RMSprop (centered=False, momentum=0):
//   g += wd*p;  sq = alpha*sq + (1-alpha)*g*g;  p -= lr * g / (sqrt(sq) + eps)
// or with eps_in_sqrt (Keras's and TensorFlow's RMSprop) p -= lr * g / sqrt(sq + eps).
void rmsprop_step(const OpCall& c) {
  const Hyper h = read_hyper(c);
  if (h.skip) return;
  const ops::RmspropAttrs a = ops::RmspropAttrs::from(c.attrs);
  const float alpha = static_cast<float>(a.alpha), eps = static_cast<float>(a.eps);
  const float wd = static_cast<float>(a.weight_decay);
  const float calpha = static_cast<float>(1.0 - a.alpha);
  const std::vector<WeightCopy> copies = weight_copies(c);
  const std::vector<const TensorView*> gs = groups(c);
  for (size_t k = 0; k < gs.size(); ++k) {
    const TensorView* g = gs[k];
    const WeightCopy& copy = copies[k];
    float* p = g[0].as<float>();
    const float* grad = g[1].as<float>();
    float* sq = g[2].as<float>();
    for (int64_t i = 0; i < g[0].numel(); ++i) {
      float d = grad[i];
      if (wd != 0) d = d + wd * p[i];
      const float s = alpha * sq[i] + calpha * (d * d);
      sq[i] = s;
      p[i] = p[i] - h.lr * (d / (a.eps_in_sqrt ? std::sqrt(s + eps) : std::sqrt(s) + eps));
      copy.store(i, p[i]);
    }
  }
}

// groups (param, grad, sum); torch.optim.Adagrad (initial accumulator = the sum tensor's contents):
//   g += wd*p;  clr = lr / (1 + (t-1)*lr_decay);  sum += g*g;  p -= clr * g / (sqrt(sum) + eps)
void adagrad_step(const OpCall& c) {
  const Hyper h = read_hyper(c);
  if (h.skip) return;
  const ops::AdagradAttrs a = ops::AdagradAttrs::from(c.attrs);
  const float eps = static_cast<float>(a.eps), wd = static_cast<float>(a.weight_decay);
  const float clr = static_cast<float>(h.lr / (1.0 + (h.t - 1.0) * a.lr_decay));
  const std::vector<WeightCopy> copies = weight_copies(c);
  const std::vector<const TensorView*> gs = groups(c);
  for (size_t k = 0; k < gs.size(); ++k) {
    const TensorView* g = gs[k];
    const WeightCopy& copy = copies[k];
    float* p = g[0].as<float>();
    const float* grad = g[1].as<float>();
    float* sum = g[2].as<float>();
    for (int64_t i = 0; i < g[0].numel(); ++i) {
      float d = grad[i];
      if (wd != 0) d = d + wd * p[i];
      const float s = sum[i] + d * d;
      sum[i] = s;
      p[i] = p[i] - clr * (d / (std::sqrt(s) + eps));
      copy.store(i, p[i]);
    }
  }
}

// in: [hyper] (unused, may be undefined), groups (param, grad): grad += l1*sign(p) + l2*p
void weight_penalty(const OpCall& c) {
  const ops::WeightPenaltyAttrs a = ops::WeightPenaltyAttrs::from(c.attrs);
  const float l1 = static_cast<float>(a.l1), l2 = static_cast<float>(a.l2);
  for (const TensorView* g : groups(c)) {
    const float* p = g[0].as<float>();
    float* grad = g[1].as<float>();
    for (int64_t i = 0; i < g[0].numel(); ++i) {
      const float s = static_cast<float>((p[i] > 0) - (p[i] < 0));
      grad[i] = grad[i] + (l1 * s + l2 * p[i]);
    }
  }
}

// in: grads...   out: total_norm f32[1] = ||all grads||_2; grads *= min(1, max_norm / (norm + 1e-6)) (a NaN norm
// propagates)
void clip_grad_norm(const OpCall& c) {
  const auto gs = groups(c);
  const TensorView out = ops::check_optim_call(c).total_norm;
  const double max_norm = ops::ClipGradNormAttrs::from(c.attrs).max_norm;
  double sum = 0;
  for (const TensorView* g : gs)
    for (int64_t i = 0; i < g->numel(); ++i) sum += static_cast<double>(g->as<float>()[i]) * g->as<float>()[i];
  const float norm = static_cast<float>(std::sqrt(sum));
  out.as<float>()[0] = norm;
  const double ratio = max_norm / (static_cast<double>(norm) + 1e-6);
  const float coef = static_cast<float>(ratio > 1.0 ? 1.0 : ratio);  // NaN norm -> NaN grads, like torch
  for (const TensorView* g : gs)
    for (int64_t i = 0; i < g->numel(); ++i) g->as<float>()[i] *= coef;
}

// in: state [scale, clean, skipped, overflowed], hyper [lr, t, skip flag], grads...; torch's GradScaler:
//   found = any grad non-finite; grads *= f32(1 / f64(scale));
//   found: scale *= backoff, clean = 0, skipped += 1;  else: clean += 1, at the interval scale *= growth
//   (when finite) and clean = 0;  state[3] = hyper[2] = found
void amp_unscale(const OpCall& c) {
  const ops::OptimArgs args = ops::check_optim_call(c);
  const ops::AmpUnscaleAttrs a = ops::AmpUnscaleAttrs::from(c.attrs);
  float* state = args.amp_state.as<float>();
  const float scale = state[0];
  const float inv = static_cast<float>(1.0 / static_cast<double>(scale));
  bool found = false;
  for (const TensorView* g : groups(c)) {
    float* grad = g[0].as<float>();
    for (int64_t i = 0; i < g[0].numel(); ++i) {
      found = found || !std::isfinite(grad[i]);
      grad[i] = grad[i] * inv;
    }
  }
  if (found) {
    state[0] = static_cast<float>(static_cast<double>(scale) * a.backoff);
    state[1] = 0;
    state[2] = state[2] + 1.f;
  } else {
    const float clean = state[1] + 1.f;
    if (clean >= static_cast<float>(a.interval)) {
      const float grown = static_cast<float>(static_cast<double>(scale) * a.growth);
      if (std::isfinite(grown)) state[0] = grown;
      state[1] = 0;
    } else {
      state[1] = clean;
    }
  }
  state[3] = found ? 1.f : 0.f;
  args.hyper.as<float>()[2] = found ? 1.f : 0.f;
}

}  // namespace

void register_cpu_optim_ops(OpTable& t) {
  t.add(OpKind::SgdStep, sgd_step);
  t.add(OpKind::AdamStep, adam_step);
  t.add(OpKind::RmspropStep, rmsprop_step);
  t.add(OpKind::AdagradStep, adagrad_step);
  t.add(OpKind::WeightPenalty, weight_penalty);
  t.add(OpKind::ClipGradNorm, clip_grad_norm);
  t.add(OpKind::AmpUnscale, amp_unscale);
}

}  // namespace cudl
