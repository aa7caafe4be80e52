// CPU kernels of the streamed log-domain Sinkhorn (math: regops/sinkhorn_math.h; schemas: csrc/ops.cpp).
//
// Every op reduces, for each row x_i, over the columns y_j in tiles: a tile of ⟨x_i, y_j⟩ (or of ‖x_i − y_j‖²
// for the euclidean cost) is filled by plain loops for small d or by one GEMM for large d, turned into
// u_ij = (pot_j − c_ij)/eps minus a per-row constant, and consumed at once: an online log-sum-exp for the
// updates, exp(u + f/eps) times y or v (a GEMM) for the gradient and P·v. Nothing N×M is ever stored; per task
// one tile. Tasks are (batch, row block) pairs, run in parallel on torch's intra-op pool.
//
// Precision: the squared euclidean cost uses the dot-product form ‖x‖² + ‖y‖² − 2⟨x, y⟩ (the Python layer
// centers both clouds first). The euclidean cost needs ‖x − y‖ exact near 0 (its subgradient there is 0), so
// the GEMM path recomputes from differences every entry whose dot-product form lost most of its digits.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "regops/checks.h"
#include "regops/sinkhorn_checks.h"
#include "regops/sinkhorn_math.h"
#include "simd_exp.h"
#include "tile_blas.h"

namespace regops {
namespace {

using namespace sinkhorn;

constexpr int64_t kLoopMaxDim = 12;  // up to this d, tiles are filled by loops; above, by a GEMM (measured crossover)
constexpr int64_t kLoopRows = 16, kLoopCols = 1024;  // loop tiles: y's column chunk (d × 1024) stays in L1/L2
constexpr int64_t kGemmRows = 256, kGemmCols = 512;

// One batch element of a pass that reduces over y for each row of x.
template <typename T>
struct Pass {
  const T *x, *y;  // (N, d), (M, d)
  int64_t N, M, d;
  int cost;
  T eps, inv_eps;
  bool gemm;
  const T *xs, *ys, *nx, *ny;  // squared norms; norms (cosine)
  const T* yT;                 // y transposed (d, M), loop path only
  const T* h;                  // column term of u: sqeuclidean (pot − ‖y‖²)/eps, euclidean pot/eps, cosine (pot − 1)/eps
  int64_t rows() const { return gemm ? kGemmRows : kLoopRows; }
  int64_t cols() const { return gemm ? kGemmCols : kLoopCols; }
  // u_ij = (pot_j − c_ij)/eps − row_const(i)
  T row_const(int64_t i) const { return cost == kSqEuclidean ? -xs[i] * inv_eps : T(0); }
};

// q (ni × nj) = ⟨x_i, y_j⟩, or ‖x_i − y_j‖² for the euclidean cost.
template <typename T>
REGOPS_ALWAYS_INLINE void fill_q(const Pass<T>& p, int64_t i0, int64_t ni, int64_t j0, int64_t nj, T* q) {
  const int64_t d = p.d;
  if (p.gemm) {
    tile_blas::gemm_xyt<T>(ni, nj, d, T(1), p.x + i0 * d, p.y + j0 * d, q);
    if (p.cost != kEuclidean) return;
    // Where ‖x‖² + ‖y‖² − 2⟨x,y⟩ cancelled to below 2^14 ulps of its terms, take the differences instead.
    const T fix = T(16384) * std::numeric_limits<T>::epsilon();
    for (int64_t r = 0; r < ni; ++r) {
      const T xs = p.xs[i0 + r];
      const T* xi = p.x + (i0 + r) * d;
      T* qr = q + r * nj;
      for (int64_t c = 0; c < nj; ++c) {
        const T scale = xs + p.ys[j0 + c];
        T s = scale - T(2) * qr[c];
        if (s <= fix * scale) {
          const T* yj = p.y + (j0 + c) * d;
          s = 0;
          for (int64_t k = 0; k < d; ++k) s += (xi[k] - yj[k]) * (xi[k] - yj[k]);
        }
        qr[c] = s;
      }
    }
    return;
  }
  for (int64_t r = 0; r < ni; ++r) {
    const T* xi = p.x + (i0 + r) * d;
    T* qr = q + r * nj;
    for (int64_t c = 0; c < nj; ++c) qr[c] = 0;
    for (int64_t k = 0; k < d; ++k) {
      const T xk = xi[k];
      const T* yk = p.yT + k * p.M + j0;
      if (p.cost == kEuclidean) {
        for (int64_t c = 0; c < nj; ++c) {
          const T t = xk - yk[c];
          qr[c] += t * t;
        }
      } else {
        for (int64_t c = 0; c < nj; ++c) qr[c] += xk * yk[c];
      }
    }
  }
}

// u_c = (pot_j − c_ij)/eps − row_const(i) from q_c, for one row i over columns j0..j0+nj.
template <typename T>
REGOPS_ALWAYS_INLINE void q_to_u(const Pass<T>& p, int64_t i, int64_t j0, int64_t nj, const T* q, T* u) {
  const T* h = p.h + j0;
  const T ie = p.inv_eps;
  if (p.cost == kSqEuclidean) {
    const T s = T(2) * ie;
    for (int64_t c = 0; c < nj; ++c) u[c] = h[c] + s * q[c];
  } else if (p.cost == kEuclidean) {
    for (int64_t c = 0; c < nj; ++c) u[c] = h[c] - ie * std::sqrt(q[c] > T(0) ? q[c] : T(0));
  } else {
    const T nxi = p.nx[i];
    const T* ny = p.ny + j0;
    for (int64_t c = 0; c < nj; ++c) u[c] = h[c] + ie * q[c] / (nxi * ny[c] + T(kCosineRidge));
  }
}

template <typename T>
T row_max_scalar(const T* u, int64_t n) {
  T m = -INFINITY;
  for (int64_t c = 0; c < n; ++c) m = u[c] > m ? u[c] : m;
  return m;
}

#ifdef REGOPS_HAVE_X86_SIMD
REGOPS_AVX2 float row_max_avx2(const float* u, int64_t n) {
  __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(u + c));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(u + c + 8));
  }
  alignas(32) float buf[8];
  _mm256_store_ps(buf, _mm256_max_ps(m0, m1));
  float m = row_max_scalar(buf, 8);
  for (; c < n; ++c) m = u[c] > m ? u[c] : m;
  return m;
}
#endif

template <typename T>
T row_max(const T* u, int64_t n) {
#ifdef REGOPS_HAVE_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (simd::has_avx2_fma()) return row_max_avx2(u, n);
  }
#endif
  return row_max_scalar(u, n);
}

// ---- the three tile loops, compiled twice: for AVX2+FMA (chosen at run time) and portable ----

// out_i = tau_i·(eps·log_w_i − eps·LSE_j u_ij) for rows i0..i0+ni.
template <typename T>
REGOPS_ALWAYS_INLINE void update_rows_impl(const Pass<T>& p, int64_t i0, int64_t ni, const T* log_w, const T* tau,
                                           T* out, T* q) {
  const int64_t bj = p.cols();
  Lse<T> acc[kGemmRows > kLoopRows ? kGemmRows : kLoopRows];
  for (int64_t j0 = 0; j0 < p.M; j0 += bj) {
    const int64_t nj = std::min(bj, p.M - j0);
    fill_q(p, i0, ni, j0, nj, q);
    for (int64_t r = 0; r < ni; ++r) {
      T* u = q + r * nj;
      q_to_u(p, i0 + r, j0, nj, u, u);
      const T m = row_max(u, nj);
      if (m == -INFINITY) continue;
      acc[r].merge(m, simd::exp_shift_sum(u, nj, m));
    }
  }
  for (int64_t r = 0; r < ni; ++r) {
    const int64_t i = i0 + r;
    out[i] = potential_from_lse(tau[i], p.eps, log_w[i], acc[r].value() + p.row_const(i));
  }
}

// Rows i0..i0+ni of Σ_j P_ij ∇_x c(x_i, y_j) (grad=true) or of Σ_j P_ij v_j (v (M, k)), into out (zeroed).
template <typename T>
REGOPS_ALWAYS_INLINE void weighted_rows_impl(const Pass<T>& p, int64_t i0, int64_t ni, const T* f, const T* v,
                                             int64_t k, bool grad, T* out, T* q, T* e) {
  const int64_t bj = p.cols();
  T a[kGemmRows > kLoopRows ? kGemmRows : kLoopRows] = {};
  for (int64_t j0 = 0; j0 < p.M; j0 += bj) {
    const int64_t nj = std::min(bj, p.M - j0);
    fill_q(p, i0, ni, j0, nj, q);
    for (int64_t r = 0; r < ni; ++r) {
      const int64_t i = i0 + r;
      T* er = e + r * nj;
      const T* qr = q + r * nj;
      q_to_u(p, i, j0, nj, qr, er);
      // P_ij = exp(u_ij + row_const + f_i/eps); f_i = −inf (a zero weight) gives a zero row.
      simd::exp_shift(er, er, nj, -(p.row_const(i) + f[i] * p.inv_eps));
      if (!grad) continue;
      T asum = 0;
      if (p.cost == kSqEuclidean) {
        for (int64_t c = 0; c < nj; ++c) asum += er[c];
        a[r] += T(2) * asum;
      } else if (p.cost == kEuclidean) {
        for (int64_t c = 0; c < nj; ++c) {
          const T dist = std::sqrt(qr[c] > T(0) ? qr[c] : T(0));
          er[c] = dist > T(0) ? er[c] / dist : T(0);
          asum += er[c];
        }
        a[r] += asum;
      } else {
        const T nxi = p.nx[i];
        const T* ny = p.ny + j0;
        for (int64_t c = 0; c < nj; ++c) {
          T A, W;
          grad_coefs<T>(kCosine, T(0), qr[c], nxi, ny[c], &A, &W);
          asum += A * er[c];
          er[c] *= W;
        }
        a[r] += asum;
      }
    }
    if (grad) {
      tile_blas::gemm_acc_ey<T>(ni, nj, p.d, p.cost == kSqEuclidean ? T(-2) : T(-1), e, p.y + j0 * p.d,
                                out + i0 * p.d);
    } else {
      tile_blas::gemm_acc_ey<T>(ni, nj, k, T(1), e, v + j0 * k, out + i0 * k);
    }
  }
  if (grad) {
    for (int64_t r = 0; r < ni; ++r) {
      const T* xi = p.x + (i0 + r) * p.d;
      T* o = out + (i0 + r) * p.d;
      for (int64_t c = 0; c < p.d; ++c) o[c] += a[r] * xi[c];
    }
  }
}

// Dense twin, transpose=false: rows of C; u_j = (pot_j − C_ij)/eps.
template <typename T>
REGOPS_ALWAYS_INLINE void dense_rows_impl(const T* C, int64_t M, const T* pot, T inv_eps, T* u, Lse<T>* acc) {
  for (int64_t j0 = 0; j0 < M; j0 += kLoopCols) {
    const int64_t nj = std::min(kLoopCols, M - j0);
    for (int64_t c = 0; c < nj; ++c) u[c] = (pot[j0 + c] - C[j0 + c]) * inv_eps;
    const T m = row_max(u, nj);
    if (m != -INFINITY) acc->merge(m, simd::exp_shift_sum(u, nj, m));
  }
}

// Dense twin, transpose=true: columns j0..j0+nj of C (N × ld), two passes over the rows (max, then sum).
template <typename T>
REGOPS_ALWAYS_INLINE void dense_cols_impl(const T* C, int64_t N, int64_t ld, int64_t j0, int64_t nj, const T* pot,
                                          T inv_eps, T* m, T* s, T* u) {
  for (int64_t c = 0; c < nj; ++c) {
    m[c] = -INFINITY;
    s[c] = 0;
  }
  for (int64_t i = 0; i < N; ++i) {
    const T* Ci = C + i * ld + j0;
    const T pi = pot[i];
    for (int64_t c = 0; c < nj; ++c) {
      const T t = (pi - Ci[c]) * inv_eps;
      m[c] = t > m[c] ? t : m[c];
    }
  }
  for (int64_t c = 0; c < nj; ++c)
    if (m[c] == -INFINITY) m[c] = 0;  // an all −inf column sums to 0
  for (int64_t i = 0; i < N; ++i) {
    const T* Ci = C + i * ld + j0;
    const T pi = pot[i];
    for (int64_t c = 0; c < nj; ++c) u[c] = (pi - Ci[c]) * inv_eps - m[c];
    simd::exp_shift(u, u, nj, T(0));
    for (int64_t c = 0; c < nj; ++c) s[c] += u[c];
  }
}

#ifdef REGOPS_HAVE_X86_SIMD
// The hot loop of the solver, float32 with small d: u for one row over a column chunk in one pass (into buf,
// with its max alongside), then Σ e^{u − max}; no tile of q is written. The same formulas as fill_q + q_to_u.
REGOPS_AVX2 void fused_row_chunk_avx2(const Pass<float>& p, int64_t i, int64_t j0, int64_t nj, float* buf,
                                      Lse<float>* acc) {
  const int64_t d = p.d;
  const float* xi = p.x + i * d;
  const float* yT = p.yT + j0;
  const float* h = p.h + j0;
  const float ie = p.inv_eps;
  const int64_t nv = nj & ~int64_t(7);
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  if (p.cost == kSqEuclidean) {
    float coef[kLoopMaxDim];
    for (int64_t k = 0; k < d; ++k) coef[k] = 2.0f * ie * xi[k];
    for (int64_t c = 0; c < nv; c += 8) {
      __m256 u = _mm256_loadu_ps(h + c);
      for (int64_t k = 0; k < d; ++k)
        u = _mm256_fmadd_ps(_mm256_broadcast_ss(coef + k), _mm256_loadu_ps(yT + k * p.M + c), u);
      _mm256_storeu_ps(buf + c, u);
      vmax = _mm256_max_ps(vmax, u);
    }
  } else if (p.cost == kEuclidean) {
    const __m256 vie = _mm256_set1_ps(ie), zero = _mm256_setzero_ps();
    for (int64_t c = 0; c < nv; c += 8) {
      __m256 s = zero;
      for (int64_t k = 0; k < d; ++k) {
        const __m256 t = _mm256_sub_ps(_mm256_broadcast_ss(xi + k), _mm256_loadu_ps(yT + k * p.M + c));
        s = _mm256_fmadd_ps(t, t, s);
      }
      const __m256 u = _mm256_fnmadd_ps(vie, _mm256_sqrt_ps(_mm256_max_ps(s, zero)), _mm256_loadu_ps(h + c));
      _mm256_storeu_ps(buf + c, u);
      vmax = _mm256_max_ps(vmax, u);
    }
  } else {
    const __m256 vie = _mm256_set1_ps(ie), vnx = _mm256_set1_ps(p.nx[i]), ridge = _mm256_set1_ps(float(kCosineRidge));
    const float* ny = p.ny + j0;
    for (int64_t c = 0; c < nv; c += 8) {
      __m256 dot = _mm256_setzero_ps();
      for (int64_t k = 0; k < d; ++k)
        dot = _mm256_fmadd_ps(_mm256_broadcast_ss(xi + k), _mm256_loadu_ps(yT + k * p.M + c), dot);
      const __m256 den = _mm256_fmadd_ps(vnx, _mm256_loadu_ps(ny + c), ridge);
      const __m256 u = _mm256_fmadd_ps(vie, _mm256_div_ps(dot, den), _mm256_loadu_ps(h + c));
      _mm256_storeu_ps(buf + c, u);
      vmax = _mm256_max_ps(vmax, u);
    }
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float m = row_max_scalar(lanes, 8);
  if (nv < nj) {  // the tail through the tile path's formulas
    float q[8];
    fill_q(p, i, 1, j0 + nv, nj - nv, q);
    q_to_u(p, i, j0 + nv, nj - nv, q, buf + nv);
    for (int64_t c = nv; c < nj; ++c) m = buf[c] > m ? buf[c] : m;
  }
  if (m != -INFINITY) acc->merge(m, simd::exp_shift_sum_avx2(buf, nj, m));
}

// The GEMM path, float32: u = (pot − c)/eps − row_const from the tile q of ⟨x, y⟩ (sqeuclidean, cosine) or
// ‖x − y‖² (euclidean) and its max in one pass, into u. Returns the max.
REGOPS_AVX2 float q_to_u_max_avx2(const Pass<float>& p, int64_t i, int64_t j0, int64_t nj, const float* q, float* u) {
  const float* h = p.h + j0;
  const __m256 vie = _mm256_set1_ps(p.inv_eps), zero = _mm256_setzero_ps();
  const int64_t nv = nj & ~int64_t(7);
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  if (p.cost == kSqEuclidean) {
    const __m256 s = _mm256_set1_ps(2.0f * p.inv_eps);
    for (int64_t c = 0; c < nv; c += 8) {
      const __m256 v = _mm256_fmadd_ps(s, _mm256_loadu_ps(q + c), _mm256_loadu_ps(h + c));
      _mm256_storeu_ps(u + c, v);
      vmax = _mm256_max_ps(vmax, v);
    }
  } else if (p.cost == kEuclidean) {
    for (int64_t c = 0; c < nv; c += 8) {
      const __m256 v = _mm256_fnmadd_ps(vie, _mm256_sqrt_ps(_mm256_max_ps(_mm256_loadu_ps(q + c), zero)),
                                        _mm256_loadu_ps(h + c));
      _mm256_storeu_ps(u + c, v);
      vmax = _mm256_max_ps(vmax, v);
    }
  } else {
    const __m256 vnx = _mm256_set1_ps(p.nx[i]), ridge = _mm256_set1_ps(float(kCosineRidge));
    const float* ny = p.ny + j0;
    for (int64_t c = 0; c < nv; c += 8) {
      const __m256 den = _mm256_fmadd_ps(vnx, _mm256_loadu_ps(ny + c), ridge);
      const __m256 v = _mm256_fmadd_ps(vie, _mm256_div_ps(_mm256_loadu_ps(q + c), den), _mm256_loadu_ps(h + c));
      _mm256_storeu_ps(u + c, v);
      vmax = _mm256_max_ps(vmax, v);
    }
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float m = row_max_scalar(lanes, 8);
  if (nv < nj) {
    q_to_u(p, i, j0 + nv, nj - nv, q + nv, u + nv);
    for (int64_t c = nv; c < nj; ++c) m = u[c] > m ? u[c] : m;
  }
  return m;
}

REGOPS_AVX2 void update_rows_gemm_avx2(const Pass<float>& p, int64_t i0, int64_t ni, const float* log_w,
                                       const float* tau, float* out, float* q) {
  Lse<float> acc[kGemmRows];
  for (int64_t j0 = 0; j0 < p.M; j0 += kGemmCols) {
    const int64_t nj = std::min(kGemmCols, p.M - j0);
    fill_q(p, i0, ni, j0, nj, q);
    for (int64_t r = 0; r < ni; ++r) {
      float* u = q + r * nj;
      const float m = q_to_u_max_avx2(p, i0 + r, j0, nj, u, u);
      if (m != -INFINITY) acc[r].merge(m, simd::exp_shift_sum_avx2(u, nj, m));
    }
  }
  for (int64_t r = 0; r < ni; ++r) {
    const int64_t i = i0 + r;
    out[i] = potential_from_lse(tau[i], p.eps, log_w[i], acc[r].value() + p.row_const(i));
  }
}

REGOPS_AVX2 void update_rows_fused_avx2(const Pass<float>& p, int64_t i0, int64_t ni, const float* log_w,
                                        const float* tau, float* out, float* buf) {
  Lse<float> acc[kLoopRows];
  for (int64_t j0 = 0; j0 < p.M; j0 += kLoopCols) {  // y's chunk stays in cache across the rows
    const int64_t nj = std::min(kLoopCols, p.M - j0);
    for (int64_t r = 0; r < ni; ++r) fused_row_chunk_avx2(p, i0 + r, j0, nj, buf, &acc[r]);
  }
  for (int64_t r = 0; r < ni; ++r) {
    const int64_t i = i0 + r;
    out[i] = potential_from_lse(tau[i], p.eps, log_w[i], acc[r].value() + p.row_const(i));
  }
}
#endif

#ifdef REGOPS_HAVE_X86_SIMD
template <typename T>
REGOPS_AVX2 void update_rows_avx2(const Pass<T>& p, int64_t i0, int64_t ni, const T* lw, const T* tau, T* out, T* q) {
  update_rows_impl(p, i0, ni, lw, tau, out, q);
}
template <typename T>
REGOPS_AVX2 void weighted_rows_avx2(const Pass<T>& p, int64_t i0, int64_t ni, const T* f, const T* v, int64_t k,
                                    bool grad, T* out, T* q, T* e) {
  weighted_rows_impl(p, i0, ni, f, v, k, grad, out, q, e);
}
template <typename T>
REGOPS_AVX2 void dense_rows_avx2(const T* C, int64_t M, const T* pot, T inv_eps, T* u, Lse<T>* acc) {
  dense_rows_impl(C, M, pot, inv_eps, u, acc);
}
template <typename T>
REGOPS_AVX2 void dense_cols_avx2(const T* C, int64_t N, int64_t ld, int64_t j0, int64_t nj, const T* pot, T inv_eps,
                                 T* m, T* s, T* u) {
  dense_cols_impl(C, N, ld, j0, nj, pot, inv_eps, m, s, u);
}
#endif

template <typename T>
void update_rows(const Pass<T>& p, int64_t i0, int64_t ni, const T* lw, const T* tau, T* out, T* q) {
#ifdef REGOPS_HAVE_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (simd::has_avx2_fma()) {
      return p.gemm ? update_rows_gemm_avx2(p, i0, ni, lw, tau, out, q) : update_rows_fused_avx2(p, i0, ni, lw, tau, out, q);
    }
  }
  if (simd::has_avx2_fma()) return update_rows_avx2(p, i0, ni, lw, tau, out, q);
#endif
  update_rows_impl(p, i0, ni, lw, tau, out, q);
}
template <typename T>
void weighted_rows(const Pass<T>& p, int64_t i0, int64_t ni, const T* f, const T* v, int64_t k, bool grad, T* out,
                   T* q, T* e) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return weighted_rows_avx2(p, i0, ni, f, v, k, grad, out, q, e);
#endif
  weighted_rows_impl(p, i0, ni, f, v, k, grad, out, q, e);
}
template <typename T>
void dense_rows(const T* C, int64_t M, const T* pot, T inv_eps, T* u, Lse<T>* acc) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return dense_rows_avx2(C, M, pot, inv_eps, u, acc);
#endif
  dense_rows_impl(C, M, pot, inv_eps, u, acc);
}
template <typename T>
void dense_cols(const T* C, int64_t N, int64_t ld, int64_t j0, int64_t nj, const T* pot, T inv_eps, T* m, T* s,
                T* u) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return dense_cols_avx2(C, N, ld, j0, nj, pot, inv_eps, m, s, u);
#endif
  dense_cols_impl(C, N, ld, j0, nj, pot, inv_eps, m, s, u);
}

// ---- preparation: norms, y transposed, the column term ----

template <typename T>
struct Prepared {
  int64_t B, N, M, d;
  int cost;
  bool gemm;
  std::vector<T> xs, ys, nx, ny, yT, h;
  const T *x, *y, *eps;

  Pass<T> pass(int64_t b) const {
    Pass<T> p;
    p.x = x + b * N * d;
    p.y = y + b * M * d;
    p.N = N;
    p.M = M;
    p.d = d;
    p.cost = cost;
    p.eps = eps[b];
    p.inv_eps = T(1) / eps[b];
    p.gemm = gemm;
    p.xs = xs.data() + b * N;
    p.ys = ys.data() + b * M;
    p.nx = cost == kCosine ? nx.data() + b * N : nullptr;
    p.ny = cost == kCosine ? ny.data() + b * M : nullptr;
    p.yT = gemm ? nullptr : yT.data() + b * M * d;
    p.h = h.data() + b * M;
    return p;
  }
};

template <typename T>
void squared_norms(const T* x, int64_t rows, int64_t d, T* out) {
  at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(d, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T s = 0;
      for (int64_t k = 0; k < d; ++k) s += x[i * d + k] * x[i * d + k];
      out[i] = s;
    }
  });
}

// pot: the potential on y (B, M).
template <typename T>
Prepared<T> prepare(const at::Tensor& x, const at::Tensor& y, const at::Tensor& pot, const at::Tensor& eps, int cost) {
  Prepared<T> P;
  P.B = x.size(0);
  P.N = x.size(1);
  P.M = y.size(1);
  P.d = x.size(2);
  P.cost = cost;
  P.gemm = P.d > kLoopMaxDim;
  P.x = x.data_ptr<T>();
  P.y = y.data_ptr<T>();
  P.eps = eps.data_ptr<T>();
  const int64_t BN = P.B * P.N, BM = P.B * P.M;
  P.xs.resize(BN);
  P.ys.resize(BM);
  squared_norms(P.x, BN, P.d, P.xs.data());
  squared_norms(P.y, BM, P.d, P.ys.data());
  if (cost == kCosine) {
    P.nx.resize(BN);
    P.ny.resize(BM);
    for (int64_t i = 0; i < BN; ++i) P.nx[i] = std::sqrt(P.xs[i]);
    for (int64_t j = 0; j < BM; ++j) P.ny[j] = std::sqrt(P.ys[j]);
  }
  if (!P.gemm) {
    P.yT.resize(BM * P.d);
    for (int64_t b = 0; b < P.B; ++b)
      for (int64_t j = 0; j < P.M; ++j)
        for (int64_t k = 0; k < P.d; ++k) P.yT[(b * P.d + k) * P.M + j] = P.y[(b * P.M + j) * P.d + k];
  }
  P.h.resize(BM);
  const T* g = pot.data_ptr<T>();
  for (int64_t b = 0; b < P.B; ++b) {
    const T ie = T(1) / P.eps[b];
    for (int64_t j = 0; j < P.M; ++j) {
      const int64_t bj = b * P.M + j;
      const T shift = cost == kSqEuclidean ? P.ys[bj] : cost == kCosine ? T(1) : T(0);
      P.h[bj] = (g[bj] - shift) * ie;
    }
  }
  return P;
}

// Tasks (batch, row block) over torch's pool; each task gets its own scratch tiles.
template <typename T, typename F>
void for_row_blocks(const Prepared<T>& P, int64_t tiles, F&& body) {
  const int64_t bi = P.gemm ? kGemmRows : kLoopRows;
  const int64_t blocks = (P.N + bi - 1) / bi;
  const int64_t tasks = P.B * blocks;
  // Grain: about 2^18 pairs per chunk of tasks, so small problems stay on one thread.
  const int64_t pairs_per_task = bi * std::max<int64_t>(P.M, 1) * std::max<int64_t>(P.d, 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(pairs_per_task, 1));
  at::parallel_for(0, tasks, grain, [&](int64_t t0, int64_t t1) {
    const int64_t bj = P.gemm ? kGemmCols : kLoopCols;
    std::vector<T> scratch(tiles * bi * bj);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / blocks, i0 = (t % blocks) * bi;
      body(P.pass(b), b, i0, std::min(bi, P.N - i0), scratch.data(), scratch.data() + bi * bj);
    }
  });
}

// ---- the ops ----

at::Tensor sinkhorn_update_cpu(const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& pot_,
                               const at::Tensor& log_w_, const at::Tensor& tau_, const at::Tensor& eps_, int64_t cost) {
  const auto s = check_sinkhorn_update(x_, y_, pot_, log_w_, tau_, eps_, cost, c10::DeviceType::CPU);
  const int64_t B = s.B, N = s.N, M = s.M;
  const auto x = x_.contiguous(), y = y_.contiguous(), pot = pot_.contiguous(), log_w = log_w_.contiguous(),
             tau = tau_.contiguous(), eps = eps_.contiguous();
  auto out = at::empty({B, N}, x.options());
  if (N == 0 || B == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sinkhorn_update_cpu", [&] {
    using T = scalar_t;
    const auto P = prepare<T>(x, y, pot, eps, static_cast<int>(cost));
    const T *lw = log_w.data_ptr<T>(), *tw = tau.data_ptr<T>();
    T* o = out.data_ptr<T>();
    for_row_blocks(P, 1, [&](const Pass<T>& p, int64_t b, int64_t i0, int64_t ni, T* q, T*) {
      update_rows(p, i0, ni, lw + b * N, tw + b * N, o + b * N, q);
    });
  });
  return out;
}

at::Tensor weighted_rows_op(const char* op, const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& f_,
                            const at::Tensor& g_, const at::Tensor* v_, const at::Tensor& eps_, int64_t cost) {
  const auto s = check_sinkhorn_weighted(op, x_, y_, f_, g_, v_, eps_, cost, c10::DeviceType::CPU);
  const int64_t B = s.B, N = s.N, M = s.M, d = s.d;
  const int64_t k = v_ != nullptr ? v_->size(2) : d;
  at::Tensor v;
  if (v_ != nullptr) v = v_->contiguous();
  const auto x = x_.contiguous(), y = y_.contiguous(), f = f_.contiguous(), g = g_.contiguous(),
             eps = eps_.contiguous();
  auto out = at::zeros({B, N, k}, x.options());
  if (N == 0 || B == 0 || k == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sinkhorn_weighted_rows_cpu", [&] {
    using T = scalar_t;
    const auto P = prepare<T>(x, y, g, eps, static_cast<int>(cost));
    const T* fp = f.data_ptr<T>();
    const T* vp = v_ != nullptr ? v.data_ptr<T>() : nullptr;
    T* o = out.data_ptr<T>();
    for_row_blocks(P, 2, [&](const Pass<T>& p, int64_t b, int64_t i0, int64_t ni, T* q, T* e) {
      weighted_rows(p, i0, ni, fp + b * N, vp ? vp + b * M * k : nullptr, k, v_ == nullptr, o + b * N * k, q, e);
    });
  });
  return out;
}

at::Tensor sinkhorn_cost_grad_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& f, const at::Tensor& g,
                                  const at::Tensor& eps, int64_t cost) {
  return weighted_rows_op("sinkhorn_cost_grad", x, y, f, g, nullptr, eps, cost);
}

at::Tensor sinkhorn_apply_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& f, const at::Tensor& g,
                              const at::Tensor& v, const at::Tensor& eps, int64_t cost) {
  return weighted_rows_op("sinkhorn_apply", x, y, f, g, &v, eps, cost);
}

at::Tensor sinkhorn_update_dense_cpu(const at::Tensor& C_, const at::Tensor& pot_, const at::Tensor& log_w_,
                                     const at::Tensor& tau_, const at::Tensor& eps_, bool transpose) {
  check_sinkhorn_dense(C_, pot_, log_w_, tau_, eps_, transpose, c10::DeviceType::CPU);
  const int64_t B = C_.size(0), N = C_.size(1), M = C_.size(2);
  const int64_t out_n = transpose ? M : N;
  const auto C = C_.contiguous(), pot = pot_.contiguous(), log_w = log_w_.contiguous(), tau = tau_.contiguous(),
             eps = eps_.contiguous();
  auto out = at::empty({B, out_n}, C.options());
  if (B == 0 || out_n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(C.scalar_type(), "sinkhorn_update_dense_cpu", [&] {
    using T = scalar_t;
    const T *c = C.data_ptr<T>(), *pp = pot.data_ptr<T>(), *lw = log_w.data_ptr<T>(), *tw = tau.data_ptr<T>(),
            *ep = eps.data_ptr<T>();
    T* o = out.data_ptr<T>();
    if (!transpose) {
      const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / M);
      at::parallel_for(0, B * N, grain, [&](int64_t r0, int64_t r1) {
        std::vector<T> u(std::min(kLoopCols, M));
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b = r / N;
          Lse<T> acc;
          dense_rows(c + r * M, M, pp + b * M, T(1) / ep[b], u.data(), &acc);
          o[r] = potential_from_lse(tw[r], ep[b], lw[r], acc.value());
        }
      });
    } else {
      constexpr int64_t bj = 256;
      const int64_t blocks = (M + bj - 1) / bj;
      const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / (bj * N));
      at::parallel_for(0, B * blocks, grain, [&](int64_t t0, int64_t t1) {
        std::vector<T> m(bj), s(bj), u(bj);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t b = t / blocks, j0 = (t % blocks) * bj, nj = std::min(bj, M - j0);
          dense_cols(c + b * N * M, N, M, j0, nj, pp + b * N, T(1) / ep[b], m.data(), s.data(), u.data());
          for (int64_t cc = 0; cc < nj; ++cc) {
            const int64_t j = b * M + j0 + cc;
            const T lse = s[cc] > T(0) ? m[cc] + std::log(s[cc]) : T(-INFINITY);
            o[j] = potential_from_lse(tw[j], ep[b], lw[j], lse);
          }
        }
      });
    }
  });
  return out;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CPU, m) {
  m.impl("sinkhorn_update", &regops::sinkhorn_update_cpu);
  m.impl("sinkhorn_update_dense", &regops::sinkhorn_update_dense_cpu);
  m.impl("sinkhorn_cost_grad", &regops::sinkhorn_cost_grad_cpu);
  m.impl("sinkhorn_apply", &regops::sinkhorn_apply_cpu);
}
