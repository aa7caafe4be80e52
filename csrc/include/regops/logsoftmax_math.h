// Per-element math of the fused log-softmax rows (the preference engine), shared by the C++ and the CUDA kernels
// so that the CPU tests also check the CUDA math. CUDA headers only: no ATen here.
//
// One row: policy logits z (V), optionally reference logits r (V) of the same token, a target y (or ignored).
//   lse = LSE(z), logp = z_y − lse, p = softmax(z);   lse_r = LSE(r), q = softmax(r)
//   kl_mode 1 (forward, RRPO's and demonstration-regularized RL's):  KL(q‖p) = Σ_v q_v (log q_v − log p_v)
//   kl_mode 2 (reverse):                                            KL(p‖q) = Σ_v p_v (log p_v − log q_v)
// The gradient of gl·logp + gk·KL with respect to z_v (the reference gets none):
//   gl·([v = y] − p_v) + gk·(p_v − q_v)                       (forward)
//   gl·([v = y] − p_v) + gk·p_v·(log p_v − log q_v − KL)      (reverse)
#pragma once
#include <math.h>

#include "hd.h"

namespace regops {
namespace lsm {

enum KlMode : int { kNoKl = 0, kForwardKl = 1, kReverseKl = 2 };

REGOPS_HD float exp_(float v) { return expf(v); }
REGOPS_HD double exp_(double v) { return exp(v); }
REGOPS_HD float log_(float v) { return logf(v); }
REGOPS_HD double log_(double v) { return log(v); }

// The running (max, Σ e^{x − max}) of a row, one element (or one partial pair) at a time. −inf entries are empty.
template <typename acc_t>
struct Lse {
  acc_t max;
  acc_t sum;
};

template <typename acc_t>
REGOPS_HD Lse<acc_t> lse_merge(Lse<acc_t> a, Lse<acc_t> b) {
  if (b.sum == acc_t(0)) return a;
  if (a.sum == acc_t(0)) return b;
  if (a.max >= b.max) return {a.max, a.sum + b.sum * exp_(b.max - a.max)};
  return {b.max, b.sum + a.sum * exp_(a.max - b.max)};
}

template <typename acc_t>
REGOPS_HD Lse<acc_t> lse_push(Lse<acc_t> a, acc_t x) {
  return lse_merge(a, Lse<acc_t>{x, acc_t(1)});
}

template <typename acc_t>
REGOPS_HD acc_t lse_value(Lse<acc_t> a) {
  return a.max + log_(a.sum);
}

// One element's term of the KL sum, from both log-probabilities.
template <typename acc_t>
REGOPS_HD acc_t kl_term(int kl_mode, acc_t log_p, acc_t log_q) {
  if (kl_mode == kForwardKl) return exp_(log_q) * (log_q - log_p);
  if (kl_mode == kReverseKl) return exp_(log_p) * (log_p - log_q);
  return acc_t(0);
}

// d(gl·logp + gk·KL)/dz_v from p_v = e^{log_p}, q_v = e^{log_q} and the row's KL.
template <typename acc_t>
REGOPS_HD acc_t grad_logit(int kl_mode, acc_t p, acc_t log_p, acc_t q, acc_t log_q, acc_t kl, bool is_target,
                           acc_t gl, acc_t gk) {
  acc_t g = gl * ((is_target ? acc_t(1) : acc_t(0)) - p);
  if (kl_mode == kForwardKl) g += gk * (p - q);
  if (kl_mode == kReverseKl) g += gk * p * (log_p - log_q - kl);
  return g;
}

}  // namespace lsm
}  // namespace regops
