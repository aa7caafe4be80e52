// Per-element and per-row math of the contrastive engine (ConR, SupCon, focal SupCon), shared by
// the C++ and CUDA kernels so that the CPU tests also check the CUDA math. CUDA headers only: no ATen here.
//
// Anchors a_i (i < n) against candidates c_j (j < M); anchor i is candidate `offset + i` (its diagonal).
// s_ij = ⟨a_i, c_j⟩ / τ on L2-normalized rows. Each kind defines what every element adds to the anchor's
// log-partition L_i (ConR's log D_i, SupCon's log Σ_{k≠i} e^{s_ik}): see Element. Per anchor the kernels return
//   row_loss_i   (ConR: valid·(|P|·logD − Σ_P s)/denom; SupCon: valid·(lse − Σ_P s/|P|); focal: Σ_P f(s − lse))
//   row_stats_i = [L_i, α_i, β_i, |P_i|]
// and the backward needs only those:  dℓ_i/ds_ij = α_i·active·e^{term_ij − L_i} + positive·pos_coef
// with pos_coef = −β_i (ConR, SupCon) or f'(s_ij − L_i) (focal), f(x) = (1 − eˣ)·x.
#pragma once
#include <math.h>

#include "hd.h"

namespace regops {
namespace contrastive {

enum Kind : int { kConrAgedb = 0, kConrNyud2 = 1, kSupcon = 2, kFocal = 3 };
constexpr int kRowStats = 4;  // columns of row_stats

REGOPS_HD bool is_conr(int kind) { return kind == kConrAgedb || kind == kConrNyud2; }

REGOPS_HD float exp_(float v) { return expf(v); }
REGOPS_HD double exp_(double v) { return exp(v); }
REGOPS_HD float log_(float v) { return logf(v); }
REGOPS_HD double log_(double v) { return log(v); }
REGOPS_HD float pow_(float a, float b) { return powf(a, b); }
REGOPS_HD double pow_(double a, double b) { return pow(a, b); }
REGOPS_HD float sqrt_(float v) { return sqrtf(v); }
REGOPS_HD double sqrt_(double v) { return sqrt(v); }

template <typename T>
REGOPS_HD T neg_inf() { return -INFINITY; }

// Distance between label rows u, v of length len: |u − v| for len 1, else the p-norm of u − v
// (p = 2: sqrt of the sum of squares; p = inf: max; p = 1: sum of |·|), as the reference computes it.
template <typename T>
REGOPS_HD T label_distance(const T* u, const T* v, long long len, T p) {
  if (len == 1) return fabs(u[0] - v[0]);
  T acc = 0;
  if (p == T(2)) {
    for (long long k = 0; k < len; ++k) { const T d = u[k] - v[k]; acc += d * d; }
    return sqrt_(acc);
  }
  if (p == T(1)) {
    for (long long k = 0; k < len; ++k) acc += fabs(u[k] - v[k]);
    return acc;
  }
  if (isinf(p)) {
    for (long long k = 0; k < len; ++k) acc = fmax(acc, fabs(u[k] - v[k]));
    return acc;
  }
  for (long long k = 0; k < len; ++k) acc += pow_(fabs(u[k] - v[k]), p);
  return pow_(acc, T(1) / p);
}

// ConR hyper-parameters and the per-anchor push prefactor.
template <typename T>
struct ConrParams {
  T threshold, push;
};

// What one element (i, j) adds to the anchor's partition sum: e^{term} when active (the gradient flows
// through it), plus e⁰ = 1 when `one` (ConR's non-positive columns, the diagonal included).
template <typename T>
struct Element {
  T term;
  bool active;
  bool one;
  bool positive;
  bool negative;  // ConR only: a "negative" pair (its anchor is valid only with one)
};

// ConR element from s_ij, the label distance ld, the prediction distance pd and the anchor weight w_i.
// pos: ld ≤ ω, j ≠ i. neg: ld > ω, pd ≤ ω. D_i = Σ_pos e^s + Σ_neg c_ij e^s + #(non-positive columns)·e⁰,
// log c_ij = log w_i + push·ld (agedb) or log(push·w_i·ld) (nyud2).
template <typename T>
REGOPS_HD Element<T> conr_element(int kind, T s, T ld, T pd, T w_i, bool diag, ConrParams<T> p) {
  Element<T> e;
  e.positive = ld <= p.threshold && !diag;
  e.negative = ld > p.threshold && pd <= p.threshold;
  e.active = e.positive || e.negative;
  e.one = !e.positive;
  if (e.positive) {
    e.term = s;
  } else if (e.negative) {
    e.term = kind == kConrAgedb ? s + (log_(w_i) + p.push * ld) : s + log_(p.push * w_i * ld);
  } else {
    e.term = neg_inf<T>();
  }
  return e;
}

// SupCon / focal element: every j ≠ i adds e^{s_ij}; positives share the anchor's label.
template <typename T>
REGOPS_HD Element<T> supcon_element(T s, bool same_label, bool diag) {
  Element<T> e;
  e.active = !diag;
  e.one = false;
  e.positive = same_label && !diag;
  e.negative = false;
  e.term = diag ? neg_inf<T>() : s;
  return e;
}

// The largest exponent the element adds (−inf when it adds nothing): the block max of the online sums.
template <typename T>
REGOPS_HD T element_max(const Element<T>& e) {
  const T t = e.active ? e.term : neg_inf<T>();
  return e.one && t < T(0) ? T(0) : t;
}

// Online (max-shifted) statistics of one anchor row. Every field is mergeable (merge()).
template <typename T>
struct RowAcc {
  T m;         // running max of the exponents added so far (−inf when none yet)
  T sum;       // Σ e^{exponent − m}
  T n_pos;     // |P_i|
  T pos_s;     // Σ_P s_ij
  T pos_e;     // Σ_P e^{s − m}            (focal)
  T pos_es;    // Σ_P e^{s − m}·(s − m)    (focal)
  bool has_neg;
};

template <typename T>
REGOPS_HD RowAcc<T> row_init() {
  RowAcc<T> r;
  r.m = neg_inf<T>();
  r.sum = r.n_pos = r.pos_s = r.pos_e = r.pos_es = T(0);
  r.has_neg = false;
  return r;
}

// Moves the shift of r to m_new ≥ r.m.
template <typename T>
REGOPS_HD void row_rescale(RowAcc<T>& r, T m_new) {
  if (m_new == r.m) return;
  const T f = r.m == neg_inf<T>() ? T(0) : exp_(r.m - m_new);
  r.sum *= f;
  // Σ e^{s−m'}(s−m') = f·[Σ e^{s−m}(s−m) + (m − m')·Σ e^{s−m}]
  r.pos_es = r.pos_e == T(0) ? T(0) : f * (r.pos_es + (r.m - m_new) * r.pos_e);
  r.pos_e *= f;
  r.m = m_new;
}

// Adds one element whose term is ≤ r.m (callers rescale to the block max first).
template <typename T>
REGOPS_HD void row_add(RowAcc<T>& r, const Element<T>& e, T s, bool focal) {
  if (e.active) r.sum += exp_(e.term - r.m);
  if (e.one) r.sum += exp_(-r.m);
  if (e.positive) {
    r.n_pos += T(1);
    r.pos_s += s;
    if (focal) {
      const T x = exp_(s - r.m);
      r.pos_e += x;
      r.pos_es += x * (s - r.m);
    }
  }
  r.has_neg = r.has_neg || e.negative;
}

template <typename T>
REGOPS_HD void row_merge(RowAcc<T>& a, RowAcc<T> b) {
  const T m = a.m > b.m ? a.m : b.m;
  if (m == neg_inf<T>()) {  // neither added an exponential: only counts to merge
    a.n_pos += b.n_pos;
    a.pos_s += b.pos_s;
    a.has_neg = a.has_neg || b.has_neg;
    return;
  }
  row_rescale(a, m);
  row_rescale(b, m);
  a.sum += b.sum;
  a.n_pos += b.n_pos;
  a.pos_s += b.pos_s;
  a.pos_e += b.pos_e;
  a.pos_es += b.pos_es;
  a.has_neg = a.has_neg || b.has_neg;
}

// Final per-anchor loss and the saved statistics [L, α, β, |P|] (see the header comment).
template <typename T>
REGOPS_HD T row_finish(int kind, const RowAcc<T>& r, T* stats) {
  // L = m + log(sum); with nothing contributing (SupCon with one candidate) L = 0, as the reference.
  const T L = r.sum > T(0) ? r.m + log_(r.sum) : T(0);
  T loss = 0, alpha = 0, beta = 0;
  if (is_conr(kind)) {
    const T denom = kind == kConrNyud2 ? r.n_pos + T(1) : r.n_pos;
    if (r.n_pos > T(0) && r.has_neg) {  // no negative: 0 (official); no positive: 0 (official: NaN)
      loss = (r.n_pos * L - r.pos_s) / denom;
      alpha = r.n_pos / denom;
      beta = T(1) / denom;
    }
  } else if (kind == kSupcon) {
    if (r.n_pos > T(0)) {
      loss = L - r.pos_s / r.n_pos;
      alpha = T(1);
      beta = T(1) / r.n_pos;
    }
  } else {  // focal: Σ_P f(s − L) and F = Σ_P f'(s − L), through the shifted sums
    if (r.n_pos > T(0)) {
      const T scale = exp_(r.m - L);
      const T es = r.pos_es + (r.m - L) * r.pos_e;  // Σ_P e^{s−m}(s − L)
      loss = (r.pos_s - r.n_pos * L) - scale * es;
      alpha = -(r.n_pos - scale * r.pos_e - scale * es);
    }
  }
  stats[0] = L;
  stats[1] = alpha;
  stats[2] = beta;
  stats[3] = r.n_pos;
  return loss;
}

// dℓ_i/ds_ij from the element, the anchor's saved statistics and ex = e^{term_ij − L_i} (0 when inactive):
// the CPU kernel computes ex in vector passes, the CUDA kernel through dloss_ds below.
template <typename T>
REGOPS_HD T dloss_ds_exp(int kind, const Element<T>& e, T s, const T* stats, T ex) {
  T d = e.active ? stats[1] * ex : T(0);
  if (e.positive) {
    if (kind == kFocal) {
      const T x = s - stats[0];
      const T ep = exp_(x);
      d += (T(1) - ep) - x * ep;  // f'(logp)
    } else {
      d -= stats[2];
    }
  }
  return d;
}

template <typename T>
REGOPS_HD T dloss_ds(int kind, const Element<T>& e, T s, const T* stats) {
  const T ex = e.active && stats[1] != T(0) ? exp_(e.term - stats[0]) : T(0);
  return dloss_ds_exp(kind, e, s, stats, ex);
}

}  // namespace contrastive
}  // namespace regops
