// AVX2+FMA inner loops for the CPU kernels, chosen at run time (the build stays portable: no -mavx2).
// Only our own code sits under the target attribute; no library inline function is compiled for AVX2.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__) && defined(__GNUC__)
#define REGOPS_HAVE_X86_SIMD 1
#include <immintrin.h>
#define REGOPS_AVX2 __attribute__((target("avx2,fma")))

namespace regops {
namespace simd {

inline bool has_avx2_fma() {
  // REGOPS_CPU_NO_SIMD=1 forces the portable loops (the tests check both).
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         std::getenv("REGOPS_CPU_NO_SIMD") == nullptr;
  return ok;
}

template <typename T>
struct Vec;

constexpr int64_t kBlock = 32;  // summands per partial sum in long reductions

template <>
struct Vec<float> {
  using V = __m256;
  static constexpr int W = 8;
  REGOPS_AVX2 static V zero() { return _mm256_setzero_ps(); }
  REGOPS_AVX2 static V load(const float* p) { return _mm256_loadu_ps(p); }
  REGOPS_AVX2 static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  REGOPS_AVX2 static V set1(float v) { return _mm256_set1_ps(v); }
  REGOPS_AVX2 static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  REGOPS_AVX2 static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  REGOPS_AVX2 static V add(V a, V b) { return _mm256_add_ps(a, b); }
  REGOPS_AVX2 static float sum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

template <>
struct Vec<double> {
  using V = __m256d;
  static constexpr int W = 4;
  REGOPS_AVX2 static V zero() { return _mm256_setzero_pd(); }
  REGOPS_AVX2 static V load(const double* p) { return _mm256_loadu_pd(p); }
  REGOPS_AVX2 static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  REGOPS_AVX2 static V set1(double v) { return _mm256_set1_pd(v); }
  REGOPS_AVX2 static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  REGOPS_AVX2 static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  REGOPS_AVX2 static V add(V a, V b) { return _mm256_add_pd(a, b); }
  REGOPS_AVX2 static double sum(V v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};

// R[i, j] += Σ_{k0 ≤ k < k1} X[i, k] X[j, k] (vector part up to kv).
template <typename T>
REGOPS_AVX2 void dot_accumulate(const T* x, int64_t p, int64_t sp, int64_t k0, int64_t kv, int64_t k1, int64_t i,
                                int64_t j, T* R) {
  using S = Vec<T>;
  const T *xi = x + i * sp, *xj = x + j * sp;
  auto a = S::zero();
  for (int64_t k = k0; k < kv; k += S::W) a = S::fma(S::load(xi + k), S::load(xj + k), a);
  T s = S::sum(a);
  for (int64_t k = kv; k < k1; ++k) s += xi[k] * xj[k];
  R[i * p + j] += s;
}

// Lower triangle of G = X Xᵀ for X (p×q) with contiguous rows (row stride sp). The k axis is cut into
// chunks that keep every row's slice in L1; within a chunk, four dot products share each load of row i.
template <typename T>
REGOPS_AVX2 void gram_lower_rows(const T* x, int64_t p, int64_t q, int64_t sp, T* R) {
  using S = Vec<T>;
  constexpr int W = S::W;
  const int64_t kc = std::max<int64_t>(4 * W, ((int64_t{24} << 10) / (static_cast<int64_t>(sizeof(T)) * p)) / W * W);
  std::fill(R, R + p * p, T(0));
  for (int64_t k0 = 0; k0 < q; k0 += kc) {
    const int64_t k1 = std::min(q, k0 + kc);
    const int64_t kv = k0 + (k1 - k0) / W * W;
    // Two rows of G at a time against four: 6 loads feed 8 FMAs (load ports, not FMAs, are the limit).
    // (lambdas do not inherit the target attribute, so the one-pair dot is a function of its own)
    int64_t i = 0;
    for (; i + 1 < p; i += 2) {
      const T *xa = x + i * sp, *xb = xa + sp;
      int64_t j = 0;
      // Blocks may reach above the diagonal (j + 3 > i): those few extra entries are cheaper than dot
      // products one at a time, and nothing reads R above the diagonal.
      for (; j <= i + 1 && j + 4 <= p; j += 4) {
        const T *x0 = x + j * sp, *x1 = x0 + sp, *x2 = x1 + sp, *x3 = x2 + sp;
        auto a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
        auto b0 = S::zero(), b1 = S::zero(), b2 = S::zero(), b3 = S::zero();
        for (int64_t k = k0; k < kv; k += W) {
          const auto va = S::load(xa + k), vb = S::load(xb + k);
          const auto y0 = S::load(x0 + k), y1 = S::load(x1 + k), y2 = S::load(x2 + k), y3 = S::load(x3 + k);
          a0 = S::fma(va, y0, a0), a1 = S::fma(va, y1, a1), a2 = S::fma(va, y2, a2), a3 = S::fma(va, y3, a3);
          b0 = S::fma(vb, y0, b0), b1 = S::fma(vb, y1, b1), b2 = S::fma(vb, y2, b2), b3 = S::fma(vb, y3, b3);
        }
        T sa[4] = {S::sum(a0), S::sum(a1), S::sum(a2), S::sum(a3)};
        T sb[4] = {S::sum(b0), S::sum(b1), S::sum(b2), S::sum(b3)};
        for (int64_t k = kv; k < k1; ++k)
          for (int m = 0; m < 4; ++m) {
            sa[m] += xa[k] * x[(j + m) * sp + k];
            sb[m] += xb[k] * x[(j + m) * sp + k];
          }
        for (int m = 0; m < 4; ++m) {
          R[i * p + j + m] += sa[m];
          R[(i + 1) * p + j + m] += sb[m];
        }
      }
      for (int64_t jj = j; jj <= i; ++jj) dot_accumulate<T>(x, p, sp, k0, kv, k1, i, jj, R);
      for (int64_t jj = j; jj <= i + 1; ++jj) dot_accumulate<T>(x, p, sp, k0, kv, k1, i + 1, jj, R);
    }
    if (i < p)
      for (int64_t j = 0; j <= i; ++j) dot_accumulate<T>(x, p, sp, k0, kv, k1, i, j, R);
  }
}

// o[0:2W] (+)= c · (a0, a1).
template <typename T>
REGOPS_AVX2 void store_scaled(T* o, typename Vec<T>::V a0, typename Vec<T>::V a1, typename Vec<T>::V c, bool accumulate) {
  using S = Vec<T>;
  a0 = S::mul(a0, c), a1 = S::mul(a1, c);
  if (accumulate) a0 = S::add(a0, S::load(o)), a1 = S::add(a1, S::load(o + S::W));
  S::store(o, a0), S::store(o + S::W, a1);
}

// Columns [k, k1) of one output row: out_i (+)= coef · Σ_j R_ij X_j.
template <typename T>
REGOPS_AVX2 void residual_times_row_tail(const T* x, int64_t p, int64_t sp, const T* Ri, T coef, T* oi, int64_t k,
                                         int64_t k1, bool accumulate) {
  using S = Vec<T>;
  constexpr int W = S::W;
  const auto c = S::set1(coef);
  for (; k + W <= k1; k += W) {
    auto a = S::zero();
    for (int64_t j = 0; j < p; ++j) a = S::fma(S::set1(Ri[j]), S::load(x + j * sp + k), a);
    a = S::mul(a, c);
    if (accumulate) a = S::add(a, S::load(oi + k));
    S::store(oi + k, a);
  }
  for (; k < k1; ++k) {
    T s = 0;
    for (int64_t j = 0; j < p; ++j) s += Ri[j] * x[j * sp + k];
    oi[k] = accumulate ? oi[k] + coef * s : coef * s;
  }
}

// out[i, :] (+)= coef · Σ_j R[i, j] X[j, :] for contiguous rows. k is cut into L1-sized chunks (the p row
// slices stay in L1 while every output row of the chunk is formed).
template <typename T>
REGOPS_AVX2 void residual_times_rows(const T* x, int64_t p, int64_t q, int64_t sp, const T* R, T coef, T* out,
                                     int64_t osp, bool accumulate) {
  using S = Vec<T>;
  constexpr int W = S::W;
  const auto c = S::set1(coef);
  const int64_t kc = std::max<int64_t>(4 * W, ((int64_t{24} << 10) / (static_cast<int64_t>(sizeof(T)) * p)) / (4 * W) * (4 * W));
  for (int64_t k0 = 0; k0 < q; k0 += kc) {
    const int64_t k1 = std::min(q, k0 + kc);
    int64_t i4 = 0;
    // Four output rows × 2W columns per register block: 4 broadcasts + 2 loads feed 8 FMAs.
    for (; i4 + 4 <= p; i4 += 4) {
      const T *R0 = R + i4 * p, *R1 = R0 + p, *R2 = R1 + p, *R3 = R2 + p;
      T *o0 = out + i4 * osp, *o1 = o0 + osp, *o2 = o1 + osp, *o3 = o2 + osp;
      int64_t k = k0;
      for (; k + 2 * W <= k1; k += 2 * W) {
        auto a0 = S::zero(), a1 = S::zero(), b0 = S::zero(), b1 = S::zero();
        auto c0 = S::zero(), c1 = S::zero(), d0 = S::zero(), d1 = S::zero();
        for (int64_t j = 0; j < p; ++j) {
          const T* xj = x + j * sp + k;
          const auto y0 = S::load(xj), y1 = S::load(xj + W);
          auto r = S::set1(R0[j]);
          a0 = S::fma(r, y0, a0), a1 = S::fma(r, y1, a1);
          r = S::set1(R1[j]);
          b0 = S::fma(r, y0, b0), b1 = S::fma(r, y1, b1);
          r = S::set1(R2[j]);
          c0 = S::fma(r, y0, c0), c1 = S::fma(r, y1, c1);
          r = S::set1(R3[j]);
          d0 = S::fma(r, y0, d0), d1 = S::fma(r, y1, d1);
        }
        store_scaled<T>(o0 + k, a0, a1, c, accumulate);
        store_scaled<T>(o1 + k, b0, b1, c, accumulate);
        store_scaled<T>(o2 + k, c0, c1, c, accumulate);
        store_scaled<T>(o3 + k, d0, d1, c, accumulate);
      }
      for (int64_t i = i4; i < i4 + 4; ++i) residual_times_row_tail<T>(x, p, sp, R + i * p, coef, out + i * osp, k, k1, accumulate);
    }
    // The last p mod 4 rows, one vector at a time.
    for (int64_t i = i4; i < p; ++i) residual_times_row_tail<T>(x, p, sp, R + i * p, coef, out + i * osp, k0, k1, accumulate);
  }
}

// Lower triangle of G = X Xᵀ for X (p×q) with contiguous columns (X[i, k] = x[i + k·sq]): rank-1
// updates, four rows of G at a time against one vector of columns. Entries above the diagonal that a
// vector chunk also covers are written too; callers read only the lower triangle.
template <typename T>
REGOPS_AVX2 void gram_lower_cols(const T* x, int64_t p, int64_t q, int64_t sq, T* R) {
  using S = Vec<T>;
  constexpr int W = S::W;
  const int64_t pv = p - p % W;
  for (int64_t i0 = 0; i0 < p; i0 += 4) {
    const int64_t ni = p - i0 < 4 ? p - i0 : 4;
    const int64_t i1 = i0 + (ni > 1 ? 1 : 0), i2 = i0 + (ni > 2 ? 2 : 0), i3 = i0 + (ni > 3 ? 3 : 0);
    for (int64_t j0 = 0; j0 < pv && j0 < i0 + ni; j0 += W) {
      auto a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
      // Blocks of kBlock terms are summed apart, then added: rounding grows with q/kBlock + kBlock, not q.
      for (int64_t kb = 0; kb < q; kb += kBlock) {
        auto e0 = S::zero(), e1 = S::zero(), e2 = S::zero(), e3 = S::zero();
        for (int64_t k = kb, ke = std::min(q, kb + kBlock); k < ke; ++k) {
          const T* xk = x + k * sq;
          const auto v = S::load(xk + j0);
          e0 = S::fma(S::set1(xk[i0]), v, e0);
          e1 = S::fma(S::set1(xk[i1]), v, e1);
          e2 = S::fma(S::set1(xk[i2]), v, e2);
          e3 = S::fma(S::set1(xk[i3]), v, e3);
        }
        a0 = S::add(a0, e0), a1 = S::add(a1, e1), a2 = S::add(a2, e2), a3 = S::add(a3, e3);
      }
      // rows beyond p were computed on a duplicate row and are dropped
      S::store(R + i0 * p + j0, a0);
      if (ni > 1) S::store(R + i1 * p + j0, a1);
      if (ni > 2) S::store(R + i2 * p + j0, a2);
      if (ni > 3) S::store(R + i3 * p + j0, a3);
    }
    for (int64_t m = 0; m < ni; ++m) {
      const int64_t i = i0 + m;
      for (int64_t j = pv; j <= i; ++j) {
        T s = 0;
        for (int64_t k = 0; k < q; ++k) s += x[i + k * sq] * x[j + k * sq];
        R[i * p + j] = s;
      }
    }
  }
}

// out[:, k] (+)= coef · R X[:, k] for contiguous columns (X[i, k] = x[i + k·sq], R symmetric p×p).
template <typename T>
REGOPS_AVX2 void residual_times_cols(const T* x, int64_t p, int64_t q, int64_t sq, const T* R, T coef, T* out,
                                     int64_t osq, bool accumulate) {
  using S = Vec<T>;
  constexpr int W = S::W;
  const int64_t pv = p - p % W;
  const auto c = S::set1(coef);
  for (int64_t k = 0; k < q; ++k) {
    const T* xk = x + k * sq;
    T* ok = out + k * osq;
    for (int64_t i0 = 0; i0 < pv; i0 += W) {
      auto a = S::zero();
      for (int64_t jb = 0; jb < p; jb += kBlock) {  // blocked sums, as in gram_lower_cols
        auto e = S::zero();
        for (int64_t j = jb, je = std::min(p, jb + kBlock); j < je; ++j)
          e = S::fma(S::set1(xk[j]), S::load(R + j * p + i0), e);
        a = S::add(a, e);
      }
      a = S::mul(a, c);
      if (accumulate) a = S::add(a, S::load(ok + i0));
      S::store(ok + i0, a);
    }
    for (int64_t i = pv; i < p; ++i) {
      T s = 0;
      for (int64_t j = 0; j < p; ++j) s += R[j * p + i] * xk[j];
      ok[i] = accumulate ? ok[i] + coef * s : coef * s;
    }
  }
}

}  // namespace simd
}  // namespace regops
#else
namespace regops {
namespace simd {
inline bool has_avx2_fma() { return false; }
}  // namespace simd
}  // namespace regops
#endif
