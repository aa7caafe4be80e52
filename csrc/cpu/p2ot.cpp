// CPU kernel of P²OT's stabilized kernel-domain scaling (schema: csrc/ops.cpp, p2ot_scaling_pass).
//
// One pass over K (N × Kc): for each row, r_i = Σ_j K_ij v_j, u_i = target_i / r_i, and while the row is still in
// L1, col_j += K_ij u_i. That is a whole Sinkhorn iteration (the row update, then the column sums the column
// update needs) for one read of K: the pass is memory-bound. Rows run in fixed chunks whose column partials are
// added in chunk order, so the result does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "regops/checks.h"
#include "regops/hd.h"
#include "regops/p2ot_checks.h"
#include "simd_x86.h"

namespace regops {
namespace {

constexpr int64_t kChunkRows = 256;  // rows per task (and per column partial)
constexpr int64_t kFlushRows = 32;   // rows summed in T before they join the double partial

template <typename T>
REGOPS_ALWAYS_INLINE T dot_scalar(const T* a, const T* b, int64_t n) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += a[j] * b[j];
    s1 += a[j + 1] * b[j + 1];
    s2 += a[j + 2] * b[j + 2];
    s3 += a[j + 3] * b[j + 3];
  }
  for (; j < n; ++j) s0 += a[j] * b[j];
  return (s0 + s1) + (s2 + s3);
}

#ifdef REGOPS_HAVE_X86_SIMD
template <typename T>
REGOPS_AVX2 T dot_avx2(const T* a, const T* b, int64_t n) {
  using S = simd::Vec<T>;
  auto c0 = S::zero(), c1 = S::zero();
  int64_t j = 0;
  for (; j + 2 * S::W <= n; j += 2 * S::W) {
    c0 = S::fma(S::load(a + j), S::load(b + j), c0);
    c1 = S::fma(S::load(a + j + S::W), S::load(b + j + S::W), c1);
  }
  for (; j + S::W <= n; j += S::W) c0 = S::fma(S::load(a + j), S::load(b + j), c0);
  T s = S::sum(S::add(c0, c1));
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}
#endif

// Rows [i0, i1): u, and Σ_i K_ij u_i into part (double, Kc), through acc (T, Kc) every kFlushRows rows.
template <typename T, bool kAvx2>
REGOPS_ALWAYS_INLINE void chunk_impl(const T* K, int64_t Kc, const T* v, const T* target, int64_t i0, int64_t i1,
                                     T* u, T* acc, double* part) {
  for (int64_t j = 0; j < Kc; ++j) acc[j] = 0;
  for (int64_t i = i0; i < i1; ++i) {
    const T* row = K + i * Kc;
    T r;
#ifdef REGOPS_HAVE_X86_SIMD
    if constexpr (kAvx2) {
      r = dot_avx2(row, v, Kc);
    } else {
      r = dot_scalar(row, v, Kc);
    }
#else
    r = dot_scalar(row, v, Kc);
#endif
    const T ui = target[i] / r;  // r = 0 gives inf: the caller sees it and re-stabilizes
    u[i] = ui;
    for (int64_t j = 0; j < Kc; ++j) acc[j] += row[j] * ui;
    if ((i - i0 + 1) % kFlushRows == 0 || i + 1 == i1) {
      for (int64_t j = 0; j < Kc; ++j) {
        part[j] += static_cast<double>(acc[j]);
        acc[j] = 0;
      }
    }
  }
}

#ifdef REGOPS_HAVE_X86_SIMD
template <typename T>
REGOPS_AVX2 void chunk_avx2(const T* K, int64_t Kc, const T* v, const T* t, int64_t i0, int64_t i1, T* u, T* acc,
                            double* part) {
  chunk_impl<T, true>(K, Kc, v, t, i0, i1, u, acc, part);
}
#endif

template <typename T>
void chunk(const T* K, int64_t Kc, const T* v, const T* t, int64_t i0, int64_t i1, T* u, T* acc, double* part) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return chunk_avx2(K, Kc, v, t, i0, i1, u, acc, part);
#endif
  chunk_impl<T, false>(K, Kc, v, t, i0, i1, u, acc, part);
}

std::tuple<at::Tensor, at::Tensor> p2ot_scaling_pass_cpu(const at::Tensor& kernel_, const at::Tensor& col_scale_,
                                                         const at::Tensor& row_target_) {
  check_p2ot_pass(kernel_, col_scale_, row_target_, c10::DeviceType::CPU);
  const int64_t N = kernel_.size(0), Kc = kernel_.size(1);
  const auto K = kernel_.contiguous(), v = col_scale_.contiguous(), target = row_target_.contiguous();
  auto u = at::empty({N}, K.options());
  auto col = at::zeros({Kc}, K.options());
  if (N == 0) return {u, col};
  if (Kc == 0) return {target / 0.0, col};  // r_i = 0: the formula's inf, as the CUDA and Triton kernels give
  const int64_t chunks = (N + kChunkRows - 1) / kChunkRows;
  std::vector<double> parts(chunks * Kc, 0.0);
  AT_DISPATCH_FLOATING_TYPES(K.scalar_type(), "p2ot_scaling_pass_cpu", [&] {
    using T = scalar_t;
    const T *kp = K.data_ptr<T>(), *vp = v.data_ptr<T>(), *tp = target.data_ptr<T>();
    T* up = u.data_ptr<T>();
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / (kChunkRows * Kc));
    at::parallel_for(0, chunks, grain, [&](int64_t c0, int64_t c1) {
      std::vector<T> acc(Kc);
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t i0 = c * kChunkRows, i1 = std::min(N, i0 + kChunkRows);
        chunk(kp, Kc, vp, tp, i0, i1, up, acc.data(), parts.data() + c * Kc);
      }
    });
    T* cp = col.data_ptr<T>();
    at::parallel_for(0, Kc, 256, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        double s = 0;
        for (int64_t c = 0; c < chunks; ++c) s += parts[c * Kc + j];  // chunk order: deterministic
        cp[j] = static_cast<T>(s);
      }
    });
  });
  return {u, col};
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CPU, m) { m.impl("p2ot_scaling_pass", &regops::p2ot_scaling_pass_cpu); }
