// Vector exponentials for the CPU kernels: e^{t_j − m} over arrays, AVX2 when the CPU has it (chosen at run
// time, as simd_x86.h), else std::exp. The float kernel is the Cephes expf polynomial (max error ~2 ulp);
// inputs below −88 (−inf included) give exactly 0, which the callers rely on for masked entries.
#pragma once
#include <cmath>
#include <cstdint>

#include "simd_x86.h"

namespace regops {
namespace simd {

#ifdef REGOPS_HAVE_X86_SIMD
REGOPS_AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln 2 in two parts: r exact
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n through the exponent bits; n = −127 (x = −88) gives the bit pattern of 0.
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

REGOPS_AVX2 inline float exp_shift_sum_avx2(const float* t, int64_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    a0 = _mm256_add_ps(a0, exp8(_mm256_sub_ps(_mm256_loadu_ps(t + j), vm)));
    a1 = _mm256_add_ps(a1, exp8(_mm256_sub_ps(_mm256_loadu_ps(t + j + 8), vm)));
  }
  for (; j + 8 <= n; j += 8) a0 = _mm256_add_ps(a0, exp8(_mm256_sub_ps(_mm256_loadu_ps(t + j), vm)));
  float s = Vec<float>::sum(_mm256_add_ps(a0, a1));
  if (j < n) {  // the tail through one masked vector, so every entry gets the same exp
    alignas(32) float buf[8];
    for (int k = 0; k < 8; ++k) buf[k] = j + k < n ? t[j + k] - m : -INFINITY;
    s += Vec<float>::sum(exp8(_mm256_load_ps(buf)));
  }
  return s;
}

REGOPS_AVX2 inline void exp_shift_avx2(const float* t, float* out, int64_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(out + j, exp8(_mm256_sub_ps(_mm256_loadu_ps(t + j), vm)));
  if (j < n) {
    alignas(32) float buf[8];
    for (int k = 0; k < 8; ++k) buf[k] = j + k < n ? t[j + k] - m : -INFINITY;
    _mm256_store_ps(buf, exp8(_mm256_load_ps(buf)));
    for (int k = 0; j + k < n; ++k) out[j + k] = buf[k];
  }
}
#endif

// Σ_j e^{t_j − m}
inline float exp_shift_sum(const float* t, int64_t n, float m) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (has_avx2_fma()) return exp_shift_sum_avx2(t, n, m);
#endif
  float s = 0;
  for (int64_t j = 0; j < n; ++j) s += std::exp(t[j] - m);
  return s;
}
inline double exp_shift_sum(const double* t, int64_t n, double m) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += std::exp(t[j] - m);
  return s;
}

// out_j = e^{t_j − m}
inline void exp_shift(const float* t, float* out, int64_t n, float m) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (has_avx2_fma()) return exp_shift_avx2(t, out, n, m);
#endif
  for (int64_t j = 0; j < n; ++j) out[j] = std::exp(t[j] - m);
}
inline void exp_shift(const double* t, double* out, int64_t n, double m) {
  for (int64_t j = 0; j < n; ++j) out[j] = std::exp(t[j] - m);
}

}  // namespace simd
}  // namespace regops
