// CPU kernels of the parameter repulsion of "Adapt then Unlearn" (math: regops/repulsion_math.h; schemas:
// csrc/ops.cpp; the oracle: python/regops/reference/repulsion.py).
//
// Both ops are one call for a whole parameter list: every tensor is cut into chunks of 2^16 elements and all
// chunks of all tensors run on torch's pool at once. repulsion_fwd reads θ and φ̄ once (8 B per float32 element)
// and writes one partial sum per chunk; the chunk partials of a tensor are added in float64, in chunk order, so
// the result does not depend on the number of threads. repulsion_bwd reads θ and φ̄ and writes the gradient.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "regops/checks.h"
#include "regops/repulsion_checks.h"
#include "regops/repulsion_math.h"
#include "output_cache.h"
#include "simd_x86.h"

namespace regops {
namespace {

using namespace repulsion;

constexpr int64_t kChunk = 1 << 16;
constexpr int kLanes = 16;  // independent partial sums per chunk (the compiler keeps them in vector registers)

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
inline acc_t<T> to_acc(T v) {
  return static_cast<acc_t<T>>(v);
}

// Σ_{e0 ≤ e < e1} (θ_e − φ̄_e)², in kLanes interleaved partial sums added at the end.
template <typename T>
REGOPS_ALWAYS_INLINE acc_t<T> chunk_sum_impl(const T* th, const T* mu, int64_t e0, int64_t e1) {
  using A = acc_t<T>;
  A lane[kLanes] = {};
  int64_t e = e0;
  for (; e + kLanes <= e1; e += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] += sq_diff<A>(to_acc(th[e + j]), to_acc(mu[e + j]));
  A tail = 0;
  for (; e < e1; ++e) tail += sq_diff<A>(to_acc(th[e]), to_acc(mu[e]));
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  return lane[0] + tail;
}

template <typename T>
REGOPS_ALWAYS_INLINE void chunk_grad_impl(const T* th, const T* mu, T* g, int64_t e0, int64_t e1, acc_t<T> two_g) {
  using A = acc_t<T>;
  for (int64_t e = e0; e < e1; ++e) g[e] = static_cast<T>(grad<A>(two_g, to_acc(th[e]), to_acc(mu[e])));
}

#ifdef REGOPS_HAVE_X86_SIMD
// float32/float64: four vector accumulators of d·d (fused multiply-add), d = θ − φ̄ (θ + (−1)·φ̄: exact).
template <typename T>
REGOPS_AVX2 acc_t<T> chunk_sum_avx2(const T* th, const T* mu, int64_t e0, int64_t e1) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    using S = simd::Vec<T>;
    const auto neg = S::set1(static_cast<T>(-1));
    auto a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
    int64_t e = e0;
    for (; e + 4 * S::W <= e1; e += 4 * S::W) {
      const auto d0 = S::fma(S::load(mu + e), neg, S::load(th + e));
      const auto d1 = S::fma(S::load(mu + e + S::W), neg, S::load(th + e + S::W));
      const auto d2 = S::fma(S::load(mu + e + 2 * S::W), neg, S::load(th + e + 2 * S::W));
      const auto d3 = S::fma(S::load(mu + e + 3 * S::W), neg, S::load(th + e + 3 * S::W));
      a0 = S::fma(d0, d0, a0);
      a1 = S::fma(d1, d1, a1);
      a2 = S::fma(d2, d2, a2);
      a3 = S::fma(d3, d3, a3);
    }
    return S::sum(S::add(S::add(a0, a1), S::add(a2, a3))) + chunk_sum_impl(th, mu, e, e1);
  } else {
    return chunk_sum_impl(th, mu, e0, e1);
  }
}
template <typename T>
REGOPS_AVX2 void chunk_grad_avx2(const T* th, const T* mu, T* g, int64_t e0, int64_t e1, acc_t<T> two_g) {
  chunk_grad_impl(th, mu, g, e0, e1, two_g);
}
#endif

template <typename T>
acc_t<T> chunk_sum(const T* th, const T* mu, int64_t e0, int64_t e1) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return chunk_sum_avx2(th, mu, e0, e1);
#endif
  return chunk_sum_impl(th, mu, e0, e1);
}

template <typename T>
void chunk_grad(const T* th, const T* mu, T* g, int64_t e0, int64_t e1, acc_t<T> two_g) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return chunk_grad_avx2(th, mu, g, e0, e1, two_g);
#endif
  chunk_grad_impl(th, mu, g, e0, e1, two_g);
}

// (tensor, first element) of every chunk of every tensor.
std::vector<std::pair<int64_t, int64_t>> work_items(const std::vector<at::Tensor>& x, size_t T) {
  std::vector<std::pair<int64_t, int64_t>> items;
  for (size_t i = 0; i < T; ++i)
    for (int64_t e = 0; e < x[i].numel(); e += kChunk) items.emplace_back(static_cast<int64_t>(i), e);
  return items;
}

template <typename T>
void fwd_typed(const std::vector<at::Tensor>& x, size_t n, at::Tensor& sums) {
  const auto items = work_items(x, n);
  std::vector<double> part(items.size(), 0.0);
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t w = i0; w < i1; ++w) {
      const auto [t, e0] = items[w];
      const int64_t e1 = std::min(x[t].numel(), e0 + kChunk);
      part[w] = static_cast<double>(chunk_sum(x[t].const_data_ptr<T>(), x[n + t].const_data_ptr<T>(), e0, e1));
    }
  });
  std::vector<double> total(n, 0.0);
  for (size_t w = 0; w < items.size(); ++w) total[items[w].first] += part[w];
  auto* s = sums.data_ptr<acc_t<T>>();
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<acc_t<T>>(total[i]);
}

template <typename T>
void bwd_typed(const std::vector<at::Tensor>& x, size_t n, const at::Tensor& grad_sums, std::vector<at::Tensor>& g) {
  const auto items = work_items(x, n);
  const auto gs = grad_sums.contiguous();
  const auto* gp = gs.const_data_ptr<acc_t<T>>();
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t w = i0; w < i1; ++w) {
      const auto [t, e0] = items[w];
      const int64_t e1 = std::min(x[t].numel(), e0 + kChunk);
      chunk_grad(x[t].const_data_ptr<T>(), x[n + t].const_data_ptr<T>(), g[t].mutable_data_ptr<T>(), e0, e1,
                 static_cast<acc_t<T>>(2) * gp[t]);
    }
  });
}

at::Tensor repulsion_fwd_cpu(at::TensorList params, at::TensorList anchor_means) {
  const auto x = check_repulsion_lists("repulsion_fwd", params, anchor_means, c10::DeviceType::CPU);
  const size_t n = params.size();
  const auto st = params[0].scalar_type();
  auto sums = at::empty({static_cast<int64_t>(n)}, params[0].options().dtype(acc_type(st)));
  if (st == at::kFloat) {
    fwd_typed<float>(x, n, sums);
  } else if (st == at::kDouble) {
    fwd_typed<double>(x, n, sums);
  } else if (st == at::kBFloat16) {
    fwd_typed<c10::BFloat16>(x, n, sums);
  } else {
    fwd_typed<c10::Half>(x, n, sums);
  }
  return sums;
}

std::vector<at::Tensor> repulsion_bwd_cpu(const at::Tensor& grad_sums, at::TensorList params,
                                          at::TensorList anchor_means) {
  const auto x = check_repulsion_lists("repulsion_bwd", params, anchor_means, c10::DeviceType::CPU);
  check_repulsion_grad(grad_sums, params);
  const size_t n = params.size();
  std::vector<at::Tensor> g(n);
  // the gradients are large outputs: reuse mapped pages (output_cache.h)
  for (size_t i = 0; i < n; ++i) g[i] = cached_empty_like(x[i]);
  const auto st = params[0].scalar_type();
  if (st == at::kFloat) {
    bwd_typed<float>(x, n, grad_sums, g);
  } else if (st == at::kDouble) {
    bwd_typed<double>(x, n, grad_sums, g);
  } else if (st == at::kBFloat16) {
    bwd_typed<c10::BFloat16>(x, n, grad_sums, g);
  } else {
    bwd_typed<c10::Half>(x, n, grad_sums, g);
  }
  return g;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CPU, m) {
  m.impl("repulsion_fwd", &regops::repulsion_fwd_cpu);
  m.impl("repulsion_bwd", &regops::repulsion_bwd_cpu);
}
