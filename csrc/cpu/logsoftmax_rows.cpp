// CPU kernel of the fused log-softmax rows (the preference engine's row math; regops/logsoftmax_math.h has the
// per-element formulas, shared with the CUDA kernel). One thread takes whole rows (torch's OpenMP pool over rows);
// a row is read into the accumulation dtype once, its exponentials go through the vector exp of simd_exp.h.
//   logsoftmax_rows:        per row (logp, ref_logp, kl), the logits untouched.
//   logsoftmax_rows_grad_:  the same, and the row overwritten by d(grad_logp·logp + grad_kl·kl)/dz.
// Ignored rows (target == ignore_index) give 0 for all three and a zero gradient row.
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
#include "regops/logsoftmax_checks.h"
#include "regops/logsoftmax_math.h"
#include "simd_exp.h"

namespace regops {
namespace {

constexpr const char* kOp = kLogsoftmaxOp;

template <typename acc_t>
struct RowResult {
  acc_t logp, ref_logp, kl;
};

template <typename acc_t>
acc_t row_max(const acc_t* x, int64_t n) {
  acc_t m = -std::numeric_limits<acc_t>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

template <typename acc_t>
acc_t row_lse(const acc_t* x, int64_t n) {
  const acc_t m = row_max(x, n);
  if (!std::isfinite(m)) return m;  // an all −inf row (−inf), or a +inf/NaN entry: the caller's check reports it
  return m + std::log(simd::exp_shift_sum(x, n, m));
}

// One row in the accumulation dtype. z may be `out` (in place): each entry is read before it is written.
// p and q are scratch rows of V entries.
template <typename acc_t>
RowResult<acc_t> one_row(const acc_t* z, const acc_t* r, int64_t V, int64_t y, int kl_mode, bool write, acc_t gl,
                         acc_t gk, acc_t* out, acc_t* p, acc_t* q) {
  const acc_t lse = row_lse(z, V);
  RowResult<acc_t> res{z[y] - lse, acc_t(0), acc_t(0)};
  acc_t lse_r = 0;
  bool have_p = false, have_q = false;
  if (kl_mode == lsm::kForwardKl) {
    lse_r = row_lse(r, V);
    res.ref_logp = r[y] - lse_r;
    simd::exp_shift(r, q, V, lse_r);  // q_v
    have_q = true;
    acc_t kl = 0;
    for (int64_t v = 0; v < V; ++v) kl += q[v] * ((r[v] - lse_r) - (z[v] - lse));
    res.kl = kl;
  } else if (kl_mode == lsm::kReverseKl) {
    lse_r = row_lse(r, V);
    res.ref_logp = r[y] - lse_r;
    simd::exp_shift(z, p, V, lse);  // p_v
    have_p = true;
    acc_t kl = 0;
    for (int64_t v = 0; v < V; ++v) kl += p[v] * ((z[v] - lse) - (r[v] - lse_r));
    res.kl = kl;
  }
  if (!write) return res;
  if (!have_p) simd::exp_shift(z, p, V, lse);
  const acc_t kl = res.kl;
  for (int64_t v = 0; v < V; ++v) {
    const acc_t log_p = z[v] - lse;
    const acc_t log_q = kl_mode == lsm::kNoKl ? acc_t(0) : r[v] - lse_r;
    out[v] = lsm::grad_logit<acc_t>(kl_mode, p[v], log_p, have_q ? q[v] : acc_t(0), log_q, kl, v == y, gl, gk);
  }
  return res;
}

template <typename scalar_t>
void run_rows(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor* ref, const at::Tensor* grad_logp,
              const at::Tensor* grad_kl, int kl_mode, int64_t ignore_index, at::Tensor* grad_out, at::Tensor& logp,
              at::Tensor& ref_logp, at::Tensor& kl) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  constexpr bool kDirect = std::is_same_v<scalar_t, acc_t>;  // rows read in place, no conversion
  const int64_t C = logits.size(0), V = logits.size(1);
  const scalar_t* z_all = logits.const_data_ptr<scalar_t>();
  const scalar_t* r_all = ref ? ref->const_data_ptr<scalar_t>() : nullptr;
  const int64_t* y_all = targets.const_data_ptr<int64_t>();
  const acc_t* gl_all = grad_logp ? grad_logp->const_data_ptr<acc_t>() : nullptr;
  const acc_t* gk_all = grad_kl ? grad_kl->const_data_ptr<acc_t>() : nullptr;
  scalar_t* out_all = grad_out ? grad_out->mutable_data_ptr<scalar_t>() : nullptr;
  acc_t* logp_p = logp.mutable_data_ptr<acc_t>();
  acc_t* ref_p = ref_logp.mutable_data_ptr<acc_t>();
  acc_t* kl_p = kl.mutable_data_ptr<acc_t>();
  const int64_t grain = std::max<int64_t>(1, 32768 / V);
  at::parallel_for(0, C, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> zb(kDirect ? 0 : V), rb(kDirect || !r_all ? 0 : V), ob(kDirect ? 0 : V), pb(V),
        qb(kl_mode == lsm::kForwardKl ? V : 0);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t y = y_all[i];
      scalar_t* out_row = out_all ? out_all + i * V : nullptr;
      if (y == ignore_index) {
        logp_p[i] = ref_p[i] = kl_p[i] = 0;
        if (out_row) std::fill(out_row, out_row + V, scalar_t(0));
        continue;
      }
      const acc_t* z;
      const acc_t* r = nullptr;
      acc_t* out;
      if constexpr (kDirect) {
        z = z_all + i * V;
        r = r_all ? r_all + i * V : nullptr;
        out = out_row;
      } else {
        for (int64_t v = 0; v < V; ++v) zb[v] = static_cast<acc_t>(z_all[i * V + v]);
        if (r_all)
          for (int64_t v = 0; v < V; ++v) rb[v] = static_cast<acc_t>(r_all[i * V + v]);
        z = zb.data();
        r = r_all ? rb.data() : nullptr;
        out = ob.data();
      }
      const auto res = one_row<acc_t>(z, r, V, y, kl_mode, out_row != nullptr, gl_all ? gl_all[i] : acc_t(0),
                                      gk_all ? gk_all[i] : acc_t(0), out, pb.data(), qb.data());
      logp_p[i] = res.logp;
      ref_p[i] = res.ref_logp;
      kl_p[i] = res.kl;
      if constexpr (!kDirect) {
        if (out_row)
          for (int64_t v = 0; v < V; ++v) out_row[v] = static_cast<scalar_t>(ob[v]);
      }
    }
  });
}

void check_targets_in_range(const at::Tensor& targets, int64_t V, int64_t ignore_index) {
  const int64_t* y = targets.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    REGOPS_CHECK_VALUE(y[i] == ignore_index || (y[i] >= 0 && y[i] < V), kOp, "targets",
                       "class indices in [0, " + std::to_string(V) + ") or ignore_index " +
                           std::to_string(ignore_index),
                       std::to_string(y[i]) + " at row " + std::to_string(i));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_impl(const at::Tensor& logits, const at::Tensor& targets,
                                                         const c10::optional<at::Tensor>& ref_logits,
                                                         const at::Tensor* grad_logp, const at::Tensor* grad_kl,
                                                         int64_t kl_mode, int64_t ignore_index, at::Tensor* inout) {
  const int64_t C = logits.size(0), V = logits.size(1);
  const auto acc = acc_type(logits.scalar_type());
  auto logp = at::empty({C}, logits.options().dtype(acc));
  auto ref_logp = at::empty({C}, logits.options().dtype(acc));
  auto kl = at::empty({C}, logits.options().dtype(acc));
  if (C == 0) return {logp, ref_logp, kl};
  const auto y = targets.contiguous();
  check_targets_in_range(y, V, ignore_index);
  const auto z = logits.contiguous();
  const auto r = ref_logits.has_value() ? ref_logits->contiguous() : at::Tensor();
  const auto gl = grad_logp ? grad_logp->contiguous() : at::Tensor();
  const auto gk = grad_kl ? grad_kl->contiguous() : at::Tensor();
  // In place when the rows are contiguous already; else through a contiguous copy, copied back.
  at::Tensor out;
  if (inout) out = inout->is_contiguous() ? *inout : at::empty_like(z);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, logits.scalar_type(), "logsoftmax_rows", [&] {
    run_rows<scalar_t>(z, y, r.defined() ? &r : nullptr, gl.defined() ? &gl : nullptr, gk.defined() ? &gk : nullptr,
                       static_cast<int>(kl_mode), ignore_index, inout ? &out : nullptr, logp, ref_logp, kl);
  });
  if (inout && !inout->is_contiguous()) inout->copy_(out);
  return {logp, ref_logp, kl};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> logsoftmax_rows_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                                                   const c10::optional<at::Tensor>& ref_logits,
                                                                   int64_t kl_mode, int64_t ignore_index) {
  check_logsoftmax_rows(logits, targets, ref_logits, kl_mode, c10::DeviceType::CPU);
  return rows_impl(logits, targets, ref_logits, nullptr, nullptr, kl_mode, ignore_index, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> logsoftmax_rows_grad_cpu(
    at::Tensor& logits, const at::Tensor& targets, const c10::optional<at::Tensor>& ref_logits,
    const at::Tensor& grad_logp, const at::Tensor& grad_kl, int64_t kl_mode, int64_t ignore_index) {
  check_logsoftmax_rows_grad(logits, targets, ref_logits, grad_logp, grad_kl, kl_mode, c10::DeviceType::CPU);
  return rows_impl(logits, targets, ref_logits, &grad_logp, &grad_kl, kl_mode, ignore_index, &logits);
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CPU, m) {
  m.impl("logsoftmax_rows", &regops::logsoftmax_rows_cpu);
  m.impl("logsoftmax_rows_grad_", &regops::logsoftmax_rows_grad_cpu);
}
