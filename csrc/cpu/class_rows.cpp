// CPU kernels of the classification-side row losses (regops/class_rows_math.h has the per-row formulas, shared
// with the CUDA kernels). One thread takes whole rows (torch's pool over rows); a row is read into the
// accumulation dtype once, its exponentials go through the vector exp of simd_exp.h, and loss and gradient come
// out of the same pass: the backward is then one multiply by the upstream gradient. The gradient rows stay in
// the accumulation dtype, so that a bfloat16 gradient is rounded once, after that multiply.
//   mixup_rows: decoupled mixup (soft mixup CE + each mixed class against the non-mixed ones)
//   elr_rows:   ELR (CE + λ·log(1 − ⟨t', p̂⟩)), with the buffer rows' EMA step t' returned
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "regops/checks.h"
#include "regops/class_rows_checks.h"
#include "regops/class_rows_math.h"
#include "simd_exp.h"
#include "simd_x86.h"

namespace regops {
namespace {

template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

int64_t grain_for(int64_t C) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1)); }

void check_in_range(const char* op, const char* arg, const at::Tensor& idx, int64_t C) {
  const int64_t* y = idx.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i) {
    REGOPS_CHECK_VALUE(y[i] >= 0 && y[i] < C, op, arg, "class indices in [0, " + std::to_string(C) + ")",
                       std::to_string(y[i]) + " at entry " + std::to_string(i));
  }
}

// Row reductions in kLanes independent partial results: the compiler vectorizes the lane loop (a single running
// sum or max would stay scalar without -ffast-math).
constexpr int kLanes = 8;

template <typename acc_t>
acc_t row_max(const acc_t* x, int64_t n) {
  acc_t m[kLanes];
  std::fill(m, m + kLanes, -std::numeric_limits<acc_t>::infinity());
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int l = 0; l < kLanes; ++l) m[l] = x[k + l] > m[l] ? x[k + l] : m[l];
  for (; k < n; ++k) m[0] = x[k] > m[0] ? x[k] : m[0];
  return *std::max_element(m, m + kLanes);
}

template <typename acc_t>
acc_t row_sum(const acc_t* x, int64_t n) {
  acc_t s[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int l = 0; l < kLanes; ++l) s[l] += x[k + l];
  for (; k < n; ++k) s[0] += x[k];
  acc_t r = 0;
  for (int l = 0; l < kLanes; ++l) r += s[l];
  return r;
}

// Row i of x in the accumulation dtype: x itself when the dtypes agree, else converted into `buf`.
template <typename scalar_t, typename acc_t>
const acc_t* row_in(const scalar_t* x, int64_t i, int64_t C, std::vector<acc_t>& buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return x + i * C;
  } else {
    for (int64_t k = 0; k < C; ++k) buf[k] = static_cast<acc_t>(x[i * C + k]);
    return buf.data();
  }
}

// ---------------------------------------------------------------- decoupled mixup

template <typename scalar_t>
void mixup_run(const at::Tensor& logits, const at::Tensor& classes, const at::Tensor& coeffs, at::Tensor& loss,
               at::Tensor* grad) {
  using acc_t = acc_of<scalar_t>;
  const int64_t B = logits.size(0), C = logits.size(1);
  const scalar_t* z_all = logits.const_data_ptr<scalar_t>();
  const int64_t* ab = classes.const_data_ptr<int64_t>();
  const acc_t* co = coeffs.const_data_ptr<acc_t>();
  acc_t* loss_p = loss.mutable_data_ptr<acc_t>();
  acc_t* g_all = grad ? grad->mutable_data_ptr<acc_t>() : nullptr;
  at::parallel_for(0, B, grain_for(C), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> zb(std::is_same_v<scalar_t, acc_t> ? 0 : C), e(C);
    for (int64_t i = begin; i < end; ++i) {
      const acc_t* z = row_in<scalar_t, acc_t>(z_all, i, C, zb);
      const int64_t a = ab[2 * i], b = ab[2 * i + 1];
      const cls::MixupCoeffs<acc_t> c{co[4 * i], co[4 * i + 1], co[4 * i + 2], co[4 * i + 3]};
      // The rest's exponentials relative to the rest's own max, so that a dominant mixed class cannot flush them.
      acc_t m = -std::numeric_limits<acc_t>::infinity();
      {  // the max over the classes other than a and b: the row's max around those two entries
        const int64_t lo = std::min(a, b), hi = std::max(a, b);
        m = std::max(m, row_max(z, lo));
        if (hi > lo + 1) m = std::max(m, row_max(z + lo + 1, hi - lo - 1));
        if (hi + 1 < C) m = std::max(m, row_max(z + hi + 1, C - hi - 1));
      }
      lsm::Lse<acc_t> rest{acc_t(0), acc_t(0)};
      if (m > -std::numeric_limits<acc_t>::infinity()) {
        simd::exp_shift(z, e.data(), C, m);
        e[a] = e[b] = acc_t(0);
        rest = {m, row_sum(e.data(), C)};
      }
      const auto row = cls::mixup_row<acc_t>(z[a], z[b], a == b, rest, c);
      loss_p[i] = row.loss;
      if (!g_all) continue;
      acc_t* g = g_all + i * C;
      if (rest.sum > acc_t(0)) {
        const acc_t scale = cls::mixup_rest_scale(row, c, m);
        for (int64_t k = 0; k < C; ++k) g[k] = e[k] * scale;
      } else {
        std::fill(g, g + C, acc_t(0));
      }
      g[a] = cls::mixup_grad(z[a], true, a == b, row, c);
      g[b] = cls::mixup_grad(z[b], a == b, true, row, c);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> mixup_rows_cpu(const at::Tensor& logits, const at::Tensor& classes,
                                                  const at::Tensor& coeffs, bool want_grad) {
  check_mixup_rows(logits, classes, coeffs, c10::DeviceType::CPU);
  const int64_t B = logits.size(0), C = logits.size(1);
  const auto acc = acc_type(logits.scalar_type());
  auto loss = at::empty({B}, logits.options().dtype(acc));
  auto grad = at::empty({want_grad ? B : 0, C}, logits.options().dtype(acc));
  if (B == 0) return {loss, grad};
  const auto ab = classes.contiguous();
  check_in_range(kMixupRowsOp, "classes", ab, C);
  const auto z = logits.contiguous();
  const auto co = coeffs.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, logits.scalar_type(), "mixup_rows", [&] {
    mixup_run<scalar_t>(z, ab, co, loss, want_grad ? &grad : nullptr);
  });
  return {loss, grad};
}

// ---------------------------------------------------------------- ELR

#ifdef REGOPS_HAVE_X86_SIMD
// One float row of ELR in AVX2 (the portable loop below, eight classes per step): max, exponentials and their sum,
// the five sums of class_rows_math.h, then the new buffer row and the gradient. Returns the row's loss.
REGOPS_AVX2 float elr_row_avx2(const float* z, const float* t, float* p, float* nt, float* g, int64_t C, int64_t y,
                               float beta, float lam) {
  using S = simd::Vec<float>;
  const int64_t Cv = C / 8 * 8;
  const __m256 lo = _mm256_set1_ps(cls::kElrClampLow), hi = _mm256_set1_ps(cls::kElrClampHigh);
  __m256 vmax = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t k = 0;
  for (; k < Cv; k += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(z + k));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float m = *std::max_element(lanes, lanes + 8);
  for (; k < C; ++k) m = z[k] > m ? z[k] : m;
  simd::exp_shift(z, p, C, m);
  const float s = row_sum(p, C);
  const float inv = 1.0f / s;
  const __m256 vinv = _mm256_set1_ps(inv);
  __m256 vs = S::zero(), vtp = S::zero(), vpp = S::zero(), vtg = S::zero(), vpg = S::zero();
  for (k = 0; k < Cv; k += 8) {
    const __m256 pk = _mm256_mul_ps(_mm256_loadu_ps(p + k), vinv);
    _mm256_storeu_ps(p + k, pk);
    const __m256 tk = _mm256_loadu_ps(t + k);
    const __m256 pc = _mm256_min_ps(hi, _mm256_max_ps(lo, pk));  // NaN stays NaN (max/min return operand 2)
    const __m256 keep = _mm256_and_ps(_mm256_cmp_ps(pk, lo, _CMP_GE_OQ), _mm256_cmp_ps(pk, hi, _CMP_LE_OQ));
    const __m256 gp = _mm256_and_ps(keep, pk);
    vs = _mm256_add_ps(vs, pc);
    vtp = _mm256_fmadd_ps(tk, pc, vtp);
    vpp = _mm256_fmadd_ps(pc, pc, vpp);
    vtg = _mm256_fmadd_ps(tk, gp, vtg);
    vpg = _mm256_fmadd_ps(pc, gp, vpg);
  }
  cls::ElrSums<float> sums{S::sum(vs), S::sum(vtp), S::sum(vpp), S::sum(vtg), S::sum(vpg)};
  for (; k < C; ++k) {
    p[k] *= inv;
    cls::elr_accumulate(sums, p[k], t[k]);
  }
  const auto row = cls::elr_row<float>(sums, m + std::log(s), z[y], beta, lam);
  const __m256 vkeep = _mm256_set1_ps(row.keep), vmix = _mm256_set1_ps(row.mix);
  const __m256 vcoef = _mm256_set1_ps(row.coef), vA = _mm256_set1_ps(row.A);
  for (k = 0; k < Cv; k += 8) {
    const __m256 pk = _mm256_loadu_ps(p + k);
    const __m256 pc = _mm256_min_ps(hi, _mm256_max_ps(lo, pk));
    const __m256 new_t = _mm256_fmadd_ps(vkeep, _mm256_loadu_ps(t + k), _mm256_mul_ps(vmix, pc));
    _mm256_storeu_ps(nt + k, new_t);
    if (!g) continue;
    const __m256 keep = _mm256_and_ps(_mm256_cmp_ps(pk, lo, _CMP_GE_OQ), _mm256_cmp_ps(pk, hi, _CMP_LE_OQ));
    const __m256 sel = _mm256_and_ps(keep, new_t);
    // p − coef·p·(sel − A)
    _mm256_storeu_ps(g + k, _mm256_fnmadd_ps(_mm256_mul_ps(vcoef, pk), _mm256_sub_ps(sel, vA), pk));
  }
  for (; k < C; ++k) {
    nt[k] = cls::elr_new_target(row, p[k], t[k]);
    if (g) g[k] = cls::elr_grad(row, p[k], nt[k], false);
  }
  if (g) g[y] -= 1.0f;
  return row.loss;
}
#endif


template <typename scalar_t>
void elr_run(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& buffer_rows, double beta,
             double lam, at::Tensor& loss, at::Tensor* grad, at::Tensor& new_rows) {
  using acc_t = acc_of<scalar_t>;
  const int64_t B = logits.size(0), C = logits.size(1);
  const scalar_t* z_all = logits.const_data_ptr<scalar_t>();
  const int64_t* y_all = targets.const_data_ptr<int64_t>();
  const acc_t* t_all = buffer_rows.const_data_ptr<acc_t>();
  acc_t* loss_p = loss.mutable_data_ptr<acc_t>();
  acc_t* nt_all = new_rows.mutable_data_ptr<acc_t>();
  acc_t* g_all = grad ? grad->mutable_data_ptr<acc_t>() : nullptr;
  at::parallel_for(0, B, grain_for(C), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> zb(std::is_same_v<scalar_t, acc_t> ? 0 : C), p(C);
    for (int64_t i = begin; i < end; ++i) {
      const acc_t* z = row_in<scalar_t, acc_t>(z_all, i, C, zb);
      const acc_t* t = t_all + i * C;
      acc_t* nt = nt_all + i * C;
      const int64_t y = y_all[i];
#ifdef REGOPS_HAVE_X86_SIMD
      if constexpr (std::is_same_v<acc_t, float>) {
        if (simd::has_avx2_fma()) {
          loss_p[i] = elr_row_avx2(z, t, p.data(), nt, g_all ? g_all + i * C : nullptr, C, y, float(beta),
                                   float(lam));
          continue;
        }
      }
#endif
      const acc_t m = row_max(z, C);
      simd::exp_shift(z, p.data(), C, m);
      const acc_t s = row_sum(p.data(), C);
      const acc_t inv = acc_t(1) / s;
      // the five sums in kLanes lanes each, one array per sum, so that the lane loop vectorizes
      acc_t ls[kLanes] = {}, ltp[kLanes] = {}, lpp[kLanes] = {}, ltg[kLanes] = {}, lpg[kLanes] = {};
      acc_t* pr = p.data();
      for (int64_t j = 0; j < C; ++j) pr[j] *= inv;
      int64_t k = 0;
      for (; k + kLanes <= C; k += kLanes)
        for (int l = 0; l < kLanes; ++l) {
          const auto d = cls::elr_terms(pr[k + l], t[k + l]);
          ls[l] += d.s;
          ltp[l] += d.tp;
          lpp[l] += d.pp;
          ltg[l] += d.tg;
          lpg[l] += d.pg;
        }
      cls::ElrSums<acc_t> sums{0, 0, 0, 0, 0};
      for (; k < C; ++k) cls::elr_accumulate(sums, pr[k], t[k]);
      for (int l = 0; l < kLanes; ++l) {
        sums.s += ls[l];
        sums.tp += ltp[l];
        sums.pp += lpp[l];
        sums.tg += ltg[l];
        sums.pg += lpg[l];
      }
      const auto row = cls::elr_row<acc_t>(sums, m + std::log(s), z[y], acc_t(beta), acc_t(lam));
      loss_p[i] = row.loss;
      if (!g_all) {
        for (int64_t j = 0; j < C; ++j) nt[j] = cls::elr_new_target(row, p[j], t[j]);
        continue;
      }
      acc_t* g = g_all + i * C;
      for (int64_t j = 0; j < C; ++j) {
        const acc_t new_t = cls::elr_new_target(row, p[j], t[j]);
        nt[j] = new_t;
        g[j] = cls::elr_grad(row, p[j], new_t, false);
      }
      g[y] -= acc_t(1);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> elr_rows_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                                            const at::Tensor& buffer_rows, double beta, double lam,
                                                            bool want_grad) {
  check_elr_rows(logits, targets, buffer_rows, beta, lam, c10::DeviceType::CPU);
  const int64_t B = logits.size(0), C = logits.size(1);
  const auto acc = acc_type(logits.scalar_type());
  auto loss = at::empty({B}, logits.options().dtype(acc));
  auto grad = at::empty({want_grad ? B : 0, C}, logits.options().dtype(acc));
  auto new_rows = at::empty({B, C}, logits.options().dtype(acc));
  if (B == 0) return {loss, grad, new_rows};
  const auto y = targets.contiguous();
  check_in_range(kElrRowsOp, "targets", y, C);
  const auto z = logits.contiguous();
  const auto t = buffer_rows.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, logits.scalar_type(), "elr_rows", [&] {
    elr_run<scalar_t>(z, y, t, beta, lam, loss, want_grad ? &grad : nullptr, new_rows);
  });
  return {loss, grad, new_rows};
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CPU, m) {
  m.impl("mixup_rows", &regops::mixup_rows_cpu);
  m.impl("elr_rows", &regops::elr_rows_cpu);
}
