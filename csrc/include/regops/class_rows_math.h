// Per-row math of the classification-side losses (decoupled mixup and ELR), shared by the C++ and the CUDA kernels
// so that the CPU tests also check the CUDA math. CUDA headers only: no ATen here.
//
// Decoupled mixup, one row of logits z (C) with its two mixed classes a, b and coefficients (w_a, w_b, e_a, e_b):
//   rest = every class but a and b; q^c = softmax over {c} ∪ rest
//   loss = −w_a·log p_a − w_b·log p_b − e_a·log q^a_a − e_b·log q^b_b
//   d loss/dz_k = (w_a + w_b)·p_k − (w_a + e_a)·[k = a] − (w_b + e_b)·[k = b] + e_a·q^a_k + e_b·q^b_k
// (q^a_k = 0 for k = b ≠ a). The soft mixup CE is the w terms, the decoupled regularizer the e terms.
//
// ELR, one row of logits z, its target y and its target-buffer row t (before the step):
//   p = softmax(z), p̂ = clamp(p, 1e-4, 1 − 1e-4), g = [1e-4 <= p <= 1 − 1e-4] (clamp's gradient)
//   t' = β·t + (1 − β)·p̂/Σp̂          (the buffer row after the step; no gradient flows into it)
//   loss = LSE(z) − z_y + λ·log(1 − ⟨t', p̂⟩)
//   d loss/dz_k = p_k − [k = y] − λ/(1 − ⟨t', p̂⟩)·p_k·(t'_k·g_k − A),   A = Σ_j t'_j·g_j·p_j
// ⟨t', p̂⟩ and A come from five row sums (S = Σp̂, Σt·p̂, Σp̂², Σt·g·p, Σg·p²), so one pass over the row gives them.
#pragma once
#include "hd.h"
#include "logsoftmax_math.h"

namespace regops {
namespace cls {

using lsm::exp_;
using lsm::log_;
using lsm::Lse;

// ---------------------------------------------------------------- decoupled mixup

template <typename acc_t>
struct MixupCoeffs {
  acc_t wa, wb, ea, eb;
};

template <typename acc_t>
struct MixupRow {
  acc_t loss, lse_all, lse_a, lse_b;
};

// `rest` is the running LSE of the classes other than a and b (empty when C <= 2).
template <typename acc_t>
REGOPS_HD MixupRow<acc_t> mixup_row(acc_t za, acc_t zb, bool same, Lse<acc_t> rest, MixupCoeffs<acc_t> c) {
  const Lse<acc_t> with_a = lsm::lse_push(rest, za);
  const Lse<acc_t> with_b = lsm::lse_push(rest, zb);
  const Lse<acc_t> all = same ? with_a : lsm::lse_push(with_a, zb);
  MixupRow<acc_t> r;
  r.lse_all = lsm::lse_value(all);
  r.lse_a = lsm::lse_value(with_a);
  r.lse_b = lsm::lse_value(with_b);
  r.loss = c.wa * (r.lse_all - za) + c.wb * (r.lse_all - zb) + c.ea * (r.lse_a - za) + c.eb * (r.lse_b - zb);
  return r;
}

// d loss/dz_k for any class k.
template <typename acc_t>
REGOPS_HD acc_t mixup_grad(acc_t zk, bool is_a, bool is_b, const MixupRow<acc_t>& r, MixupCoeffs<acc_t> c) {
  acc_t g = (c.wa + c.wb) * exp_(zk - r.lse_all);
  if (is_a) g -= c.wa + c.ea;
  if (is_b) g -= c.wb + c.eb;
  if (is_a || !is_b) g += c.ea * exp_(zk - r.lse_a);  // k in {a} ∪ rest
  if (is_b || !is_a) g += c.eb * exp_(zk - r.lse_b);  // k in {b} ∪ rest
  return g;
}

// For a class of the rest, d loss/dz_k = e^{z_k − shift}·mixup_rest_scale(shift): one multiply per element once
// the row's exponentials e^{z_k − shift} are at hand (the CPU kernel's fast path; the same formula as mixup_grad).
template <typename acc_t>
REGOPS_HD acc_t mixup_rest_scale(const MixupRow<acc_t>& r, MixupCoeffs<acc_t> c, acc_t shift) {
  return (c.wa + c.wb) * exp_(shift - r.lse_all) + c.ea * exp_(shift - r.lse_a) + c.eb * exp_(shift - r.lse_b);
}

// ---------------------------------------------------------------- ELR

constexpr double kElrClampLow = 1e-4;
constexpr double kElrClampHigh = 1.0 - 1e-4;

template <typename acc_t>
REGOPS_HD acc_t elr_clamp(acc_t p) {
  return p < acc_t(kElrClampLow) ? acc_t(kElrClampLow) : (p > acc_t(kElrClampHigh) ? acc_t(kElrClampHigh) : p);
}

template <typename acc_t>
REGOPS_HD bool elr_unclamped(acc_t p) {
  return p >= acc_t(kElrClampLow) && p <= acc_t(kElrClampHigh);
}

// The five row sums, accumulated one element at a time (and merged across threads by addition).
template <typename acc_t>
struct ElrSums {
  acc_t s, tp, pp, tg, pg;
};

// One element's terms of the five sums.
template <typename acc_t>
REGOPS_HD ElrSums<acc_t> elr_terms(acc_t p, acc_t t) {
  const acc_t pc = elr_clamp(p);
  const acc_t gp = elr_unclamped(p) ? p : acc_t(0);
  return {pc, t * pc, pc * pc, t * gp, pc * gp};
}

template <typename acc_t>
REGOPS_HD void elr_accumulate(ElrSums<acc_t>& a, acc_t p, acc_t t) {
  const ElrSums<acc_t> d = elr_terms(p, t);
  a.s += d.s;
  a.tp += d.tp;
  a.pp += d.pp;
  a.tg += d.tg;
  a.pg += d.pg;
}

template <typename acc_t>
struct ElrRow {
  acc_t loss, dot, A, keep, mix, coef;  // t' = keep·t + mix·p̂; coef = λ/(1 − dot)
};

template <typename acc_t>
REGOPS_HD ElrRow<acc_t> elr_row(ElrSums<acc_t> s, acc_t lse, acc_t zy, acc_t beta, acc_t lam) {
  ElrRow<acc_t> r;
  r.keep = beta;
  r.mix = (acc_t(1) - beta) / s.s;
  r.dot = beta * s.tp + r.mix * s.pp;
  r.A = beta * s.tg + r.mix * s.pg;
  r.loss = lse - zy + lam * log_(acc_t(1) - r.dot);
  r.coef = lam / (acc_t(1) - r.dot);
  return r;
}

template <typename acc_t>
REGOPS_HD acc_t elr_new_target(const ElrRow<acc_t>& r, acc_t p, acc_t t) {
  return r.keep * t + r.mix * elr_clamp(p);
}

template <typename acc_t>
REGOPS_HD acc_t elr_grad(const ElrRow<acc_t>& r, acc_t p, acc_t new_t, bool is_y) {
  const acc_t g = elr_unclamped(p) ? new_t : acc_t(0);
  return p - (is_y ? acc_t(1) : acc_t(0)) - r.coef * p * (g - r.A);
}

}  // namespace cls
}  // namespace regops
