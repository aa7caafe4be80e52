// CPU kernels of the batched spectral norms (math: regops/spectral_math.h; schemas: csrc/ops.cpp; the oracle: the
// grouped mv/bmm iteration of python/regops/ops/spectral.py).
//
// spectral_power runs the power iteration of every matrix of the list in one call. A step reads W twice (W v by
// rows, Wt u by columns); at 512x512 float32 a matrix is 1 MiB, so the second read mostly hits the cache. With
// at least as many matrices as threads each thread takes whole matrices; with fewer, the rows of W v and the
// column blocks of Wt u are shared out instead. Every output element is reduced in a fixed order either way, so
// the result does not depend on the thread count. spectral_outer writes every gradient g_l u_l v_lt in one call,
// into buffers of the output cache (output_cache.h: a fresh gradient per step would page-fault anew).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "regops/checks.h"
#include "regops/spectral_checks.h"
#include "regops/spectral_math.h"
#include "output_cache.h"
#include "simd_x86.h"

namespace regops {
namespace {

using namespace spectral;

constexpr int kLanes = 16;        // independent partial sums of a row dot product (vector registers)
constexpr int64_t kColBlock = 512;  // columns of Wt u per work item when a matrix is shared out
constexpr int64_t kRowBlock = 16;   // gradient rows per work item

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Σ_j w_j x_j in kLanes interleaved partial sums.
template <typename T>
REGOPS_ALWAYS_INLINE acc_t<T> dot_impl(const T* w, const acc_t<T>* x, int64_t n) {
  using A = acc_t<T>;
  A lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += static_cast<A>(w[j + l]) * x[j + l];
  A tail = 0;
  for (; j < n; ++j) tail += static_cast<A>(w[j]) * x[j];
  for (int s = kLanes / 2; s > 0; s /= 2)
    for (int l = 0; l < s; ++l) lane[l] += lane[l + s];
  return lane[0] + tail;
}

// t[c0:c1] += a · w[c0:c1]
template <typename T>
REGOPS_ALWAYS_INLINE void axpy_impl(acc_t<T> a, const T* w, acc_t<T>* t, int64_t c0, int64_t c1) {
  for (int64_t j = c0; j < c1; ++j) t[j] += a * static_cast<acc_t<T>>(w[j]);
}

// o[j] = gu · v[j], rounded to T
template <typename T>
REGOPS_ALWAYS_INLINE void outer_row_impl(acc_t<T> gu, const acc_t<T>* v, T* o, int64_t n) {
  for (int64_t j = 0; j < n; ++j) o[j] = static_cast<T>(outer(gu, v[j]));
}

#ifdef REGOPS_HAVE_X86_SIMD
template <typename T>
REGOPS_AVX2 acc_t<T> dot_avx2(const T* w, const acc_t<T>* x, int64_t n) {
  return dot_impl(w, x, n);
}
template <typename T>
REGOPS_AVX2 void axpy_avx2(acc_t<T> a, const T* w, acc_t<T>* t, int64_t c0, int64_t c1) {
  axpy_impl(a, w, t, c0, c1);
}
template <typename T>
REGOPS_AVX2 void outer_row_avx2(acc_t<T> gu, const acc_t<T>* v, T* o, int64_t n) {
  outer_row_impl(gu, v, o, n);
}
#endif

template <typename T>
acc_t<T> dot(const T* w, const acc_t<T>* x, int64_t n) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return dot_avx2(w, x, n);
#endif
  return dot_impl(w, x, n);
}

template <typename T>
void axpy(acc_t<T> a, const T* w, acc_t<T>* t, int64_t c0, int64_t c1) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return axpy_avx2(a, w, t, c0, c1);
#endif
  axpy_impl(a, w, t, c0, c1);
}

template <typename T>
void outer_row(acc_t<T> gu, const acc_t<T>* v, T* o, int64_t n) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return outer_row_avx2(gu, v, o, n);
#endif
  outer_row_impl(gu, v, o, n);
}

// x *= 1 / max(|x|, eps); the sum of squares in a fixed order.
template <typename A>
void normalize(A* x, int64_t n, A eps) {
  A lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += x[j + l] * x[j + l];
  A s = 0;
  for (; j < n; ++j) s += x[j] * x[j];
  for (int l = 0; l < kLanes; ++l) s += lane[l];
  const A f = inv_norm(s, eps);
  for (j = 0; j < n; ++j) x[j] *= f;
}

// One matrix: n_iter steps on u (h), v (w) in place; returns σ. `shared`: spread the rows and column blocks over
// torch's pool (the caller runs one matrix at a time), else run serially (the caller runs matrices in parallel).
template <typename T>
acc_t<T> power_matrix(const T* W, int64_t h, int64_t w, acc_t<T>* u, acc_t<T>* v, int64_t n_iter, acc_t<T> eps,
                      bool shared) {
  using A = acc_t<T>;
  std::vector<A> t(w);
  const int64_t n_col_blocks = (w + kColBlock - 1) / kColBlock;
  for (int64_t it = 0; it < n_iter; ++it) {
    auto rows = [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) u[i] = dot(W + i * w, v, w);
    };
    auto cols = [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t c0 = b * kColBlock, c1 = std::min(w, c0 + kColBlock);
        std::fill(t.data() + c0, t.data() + c1, A(0));
        for (int64_t i = 0; i < h; ++i) axpy(u[i], W + i * w, t.data(), c0, c1);
      }
    };
    if (shared) {
      at::parallel_for(0, h, std::max<int64_t>(1, 16384 / w), rows);
    } else {
      rows(0, h);
    }
    normalize(u, h, eps);
    if (shared) {
      at::parallel_for(0, n_col_blocks, 1, cols);
    } else {
      cols(0, n_col_blocks);
    }
    std::copy(t.begin(), t.end(), v);
    normalize(v, w, eps);
  }
  // σ = t · v, in the same fixed order
  A lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= w; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += t[j + l] * v[j + l];
  A s = 0;
  for (; j < w; ++j) s += t[j] * v[j];
  for (int l = 0; l < kLanes; ++l) s += lane[l];
  return s;
}

// Offsets of every matrix's u_l and v_l in the concatenated u, v.
std::pair<std::vector<int64_t>, std::vector<int64_t>> vector_offsets(const std::vector<at::Tensor>& W) {
  std::vector<int64_t> ou(W.size() + 1, 0), ov(W.size() + 1, 0);
  for (size_t l = 0; l < W.size(); ++l) {
    ou[l + 1] = ou[l] + W[l].size(0);
    ov[l + 1] = ov[l] + W[l].size(1);
  }
  return {ou, ov};
}

template <typename T>
void power_typed(const std::vector<at::Tensor>& W, at::Tensor& u, at::Tensor& v, int64_t n_iter, double eps,
                 at::Tensor& sigma) {
  using A = acc_t<T>;
  const int64_t L = static_cast<int64_t>(W.size());
  const auto [ou, ov] = vector_offsets(W);
  A* s = sigma.mutable_data_ptr<A>();
  A* up = u.mutable_data_ptr<A>();
  A* vp = v.mutable_data_ptr<A>();
  auto one = [&](int64_t l, bool shared) {
    s[l] = power_matrix<T>(W[l].const_data_ptr<T>(), W[l].size(0), W[l].size(1), up + ou[l], vp + ov[l], n_iter,
                           static_cast<A>(eps), shared);
  };
  if (L >= at::get_num_threads()) {
    at::parallel_for(0, L, 1, [&](int64_t l0, int64_t l1) {
      for (int64_t l = l0; l < l1; ++l) one(l, false);
    });
  } else {
    for (int64_t l = 0; l < L; ++l) one(l, true);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spectral_power_cpu(at::TensorList weights, const at::Tensor& u,
                                                                  const at::Tensor& v, int64_t n_power_iterations,
                                                                  double eps) {
  const char* op = "spectral_power";
  const auto W = check_spectral_lists(op, weights, u, v, c10::DeviceType::CPU);
  check_spectral_params(op, n_power_iterations, eps);
  const auto st = weights[0].scalar_type();
  auto sigma = at::empty({static_cast<int64_t>(weights.size())}, weights[0].options().dtype(acc_type(st)));
  auto u_out = u.clone(at::MemoryFormat::Contiguous);
  auto v_out = v.clone(at::MemoryFormat::Contiguous);
  if (st == at::kFloat) {
    power_typed<float>(W, u_out, v_out, n_power_iterations, eps, sigma);
  } else if (st == at::kDouble) {
    power_typed<double>(W, u_out, v_out, n_power_iterations, eps, sigma);
  } else if (st == at::kBFloat16) {
    power_typed<c10::BFloat16>(W, u_out, v_out, n_power_iterations, eps, sigma);
  } else {
    power_typed<c10::Half>(W, u_out, v_out, n_power_iterations, eps, sigma);
  }
  return {sigma, u_out, v_out};
}

template <typename T>
void outer_typed(const at::Tensor& grad_sigmas, const at::Tensor& u, const at::Tensor& v,
                 const std::vector<at::Tensor>& W, std::vector<at::Tensor>& g) {
  using A = acc_t<T>;
  const auto [ou, ov] = vector_offsets(W);
  std::vector<std::pair<int64_t, int64_t>> items;  // (matrix, first row)
  for (size_t l = 0; l < g.size(); ++l)
    for (int64_t i = 0; i < g[l].size(0); i += kRowBlock) items.emplace_back(static_cast<int64_t>(l), i);
  const auto gs = grad_sigmas.contiguous();
  const A* gp = gs.const_data_ptr<A>();
  const A* up = u.const_data_ptr<A>();
  const A* vp = v.const_data_ptr<A>();
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const auto [l, i0] = items[k];
      const int64_t h = g[l].size(0), w = g[l].size(1);
      const A* ul = up + ou[l];
      T* o = g[l].mutable_data_ptr<T>();
      for (int64_t i = i0; i < std::min(h, i0 + kRowBlock); ++i) outer_row<T>(gp[l] * ul[i], vp + ov[l], o + i * w, w);
    }
  });
}

std::vector<at::Tensor> spectral_outer_cpu(const at::Tensor& grad_sigmas, const at::Tensor& u, const at::Tensor& v,
                                           at::TensorList weights) {
  const auto W = check_spectral_lists("spectral_outer", weights, u, v, c10::DeviceType::CPU);
  check_spectral_grad(grad_sigmas, weights);
  std::vector<at::Tensor> g(W.size());
  for (size_t l = 0; l < W.size(); ++l) g[l] = cached_empty_like(W[l]);  // W[l] is contiguous: so is its gradient
  const auto uc = u.contiguous(), vc = v.contiguous();
  const auto st = weights[0].scalar_type();
  if (st == at::kFloat) {
    outer_typed<float>(grad_sigmas, uc, vc, W, g);
  } else if (st == at::kDouble) {
    outer_typed<double>(grad_sigmas, uc, vc, W, g);
  } else if (st == at::kBFloat16) {
    outer_typed<c10::BFloat16>(grad_sigmas, uc, vc, W, g);
  } else {
    outer_typed<c10::Half>(grad_sigmas, uc, vc, W, g);
  }
  return g;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CPU, m) {
  m.impl("spectral_power", &regops::spectral_power_cpu);
  m.impl("spectral_outer", &regops::spectral_outer_cpu);
}
