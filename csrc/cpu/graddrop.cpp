// CPU kernels of R-AMT's gradient dropout (math: regops/graddrop_math.h; schemas: csrc/ops.cpp).
//
// graddrop_apply_ is one call for a whole list of tensors: every tensor is cut into chunks of 2^16 elements and
// all chunks of all tensors run on torch's pool at once (no per-tensor launches). The uniforms come from
// Philox4x32-10 inside the loop, 8 counters per AVX2 vector (32 elements), so no random tensor is ever stored:
// the pass reads a and b and writes out, and that traffic is its bound.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "regops/checks.h"
#include "regops/graddrop_math.h"
#include "regops/graddrop_checks.h"
#include "simd_x86.h"

namespace regops {
namespace {

using namespace graddrop;

constexpr int64_t kChunk = 1 << 16;  // elements per work item (a multiple of 64: the AVX2 blocks stay aligned)

template <typename T>
inline float to_f(T v) {
  return static_cast<float>(v);
}
template <typename T>
inline T from_f(float v) {
  return static_cast<T>(v);
}

// Elements [e0, e1) of tensor t, one at a time through the header's functions. Returns the non-finite count.
template <typename T>
int64_t run_scalar(const T* a, const T* b, T* out, int64_t e0, int64_t e1, uint32_t t, uint64_t seed, float drop) {
  int64_t bad = 0;
  float u[4];
  int64_t group = -1;
  for (int64_t e = e0; e < e1; ++e) {
    if ((e >> 2) != group) {
      group = e >> 2;
      philox_block(seed, t, static_cast<uint64_t>(group), u);
    }
    const float av = to_f(a[e]), bv = to_f(b[e]);
    bad += !(std::isfinite(av) && std::isfinite(bv));
    out[e] = from_f<T>(apply(av, bv, u[e & 3], drop));
  }
  return bad;
}

#ifdef REGOPS_HAVE_X86_SIMD
REGOPS_AVX2 inline void mulhilo8(__m256i m, __m256i x, __m256i* hi, __m256i* lo) {
  const __m256i pe = _mm256_mul_epu32(x, m);                         // 64-bit products of the even lanes
  const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);  // ... of the odd lanes
  *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

// U = (w >> 8)·2^-24: exact in float32.
REGOPS_AVX2 inline __m256 word_to_uniform(__m256i w) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w, 8)), _mm256_set1_ps(1.0f / 16777216.0f));
}

// Word w of groups 0..7 (four vectors) to the uniforms of their 32 elements in element order (4g + w).
REGOPS_AVX2 inline void transpose_uniforms(__m256i c0, __m256i c1, __m256i c2, __m256i c3, __m256 E[4]) {
  const __m256 U0 = word_to_uniform(c0), U1 = word_to_uniform(c1), U2 = word_to_uniform(c2),
               U3 = word_to_uniform(c3);
  const __m256 t0 = _mm256_unpacklo_ps(U0, U1), t1 = _mm256_unpackhi_ps(U0, U1);
  const __m256 t2 = _mm256_unpacklo_ps(U2, U3), t3 = _mm256_unpackhi_ps(U2, U3);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  E[0] = _mm256_permute2f128_ps(s0, s1, 0x20);
  E[1] = _mm256_permute2f128_ps(s2, s3, 0x20);
  E[2] = _mm256_permute2f128_ps(s0, s1, 0x31);
  E[3] = _mm256_permute2f128_ps(s2, s3, 0x31);
}

// Uniforms of the 64 elements of groups g0 .. g0 + 15 of tensor t, in element order, as eight 8-float vectors.
// Two independent 8-lane Philox streams run interleaved: one alone is bound by the multiply latency.
REGOPS_AVX2 inline void philox_uniforms64(uint64_t seed, uint32_t t, uint64_t g0, __m256 E[8]) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i base = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(g0)));
  // g0 is a multiple of 16, so adding lane (+8) never carries into the high word
  __m256i a0 = _mm256_add_epi32(base, lane), b0 = _mm256_add_epi32(a0, _mm256_set1_epi32(8));
  __m256i a1 = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(g0 >> 32))), b1 = a1;
  __m256i a2 = _mm256_set1_epi32(static_cast<int32_t>(t)), b2 = a2;
  __m256i a3 = _mm256_setzero_si256(), b3 = a3;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int32_t>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int32_t>(kPhiloxM1));
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const __m256i vk0 = _mm256_set1_epi32(static_cast<int32_t>(k0)), vk1 = _mm256_set1_epi32(static_cast<int32_t>(k1));
    __m256i ahi0, alo0, ahi1, alo1, bhi0, blo0, bhi1, blo1;
    mulhilo8(m0, a0, &ahi0, &alo0);
    mulhilo8(m0, b0, &bhi0, &blo0);
    mulhilo8(m1, a2, &ahi1, &alo1);
    mulhilo8(m1, b2, &bhi1, &blo1);
    a0 = _mm256_xor_si256(_mm256_xor_si256(ahi1, a1), vk0);
    b0 = _mm256_xor_si256(_mm256_xor_si256(bhi1, b1), vk0);
    a2 = _mm256_xor_si256(_mm256_xor_si256(ahi0, a3), vk1);
    b2 = _mm256_xor_si256(_mm256_xor_si256(bhi0, b3), vk1);
    a1 = alo1;
    b1 = blo1;
    a3 = alo0;
    b3 = blo0;
  }
  transpose_uniforms(a0, a1, a2, a3, E);
  transpose_uniforms(b0, b1, b2, b3, E + 4);
}

// 8 elements: out = P > U ? a : a·drop, in the header's order of float operations. Returns the non-finite mask.
REGOPS_AVX2 inline __m256 apply8(__m256 a, __m256 b, __m256 u, __m256 drop, __m256* out) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256 s = _mm256_sub_ps(_mm256_and_ps(_mm256_cmp_ps(a, zero, _CMP_GT_OQ), one),
                                 _mm256_and_ps(_mm256_cmp_ps(a, zero, _CMP_LT_OQ), one));
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 num = _mm256_mul_ps(s, _mm256_add_ps(a, b));
  const __m256 den = _mm256_add_ps(_mm256_add_ps(_mm256_and_ps(a, abs_mask), _mm256_and_ps(b, abs_mask)),
                                   _mm256_set1_ps(kDenomEps));
  const __m256 p = _mm256_mul_ps(_mm256_add_ps(_mm256_div_ps(num, den), one), _mm256_set1_ps(0.5f));
  *out = _mm256_blendv_ps(_mm256_mul_ps(a, drop), a, _mm256_cmp_ps(p, u, _CMP_GT_OQ));
  // finite: x·0 == 0 (inf·0 and nan·0 are nan)
  const __m256 fin = _mm256_and_ps(_mm256_cmp_ps(_mm256_mul_ps(a, zero), zero, _CMP_EQ_OQ),
                                   _mm256_cmp_ps(_mm256_mul_ps(b, zero), zero, _CMP_EQ_OQ));
  return fin;
}

template <typename T>
REGOPS_AVX2 int64_t run_avx2(const T* a, const T* b, T* out, int64_t e0, int64_t e1, uint32_t t, uint64_t seed,
                             float drop_f) {
  int64_t bad = 0;
  const __m256 drop = _mm256_set1_ps(drop_f);
  int64_t e = e0;
  for (; e + 64 <= e1; e += 64) {
    __m256 E[8];
    philox_uniforms64(seed, t, static_cast<uint64_t>(e >> 2), E);
    for (int k = 0; k < 8; ++k) {
      const int64_t o = e + 8 * k;
      __m256 av, bv, res;
      if constexpr (std::is_same_v<T, float>) {
        av = _mm256_loadu_ps(a + o);
        bv = _mm256_loadu_ps(b + o);
      } else {
        alignas(32) float fa[8], fb[8];
        for (int i = 0; i < 8; ++i) {
          fa[i] = to_f(a[o + i]);
          fb[i] = to_f(b[o + i]);
        }
        av = _mm256_load_ps(fa);
        bv = _mm256_load_ps(fb);
      }
      const __m256 fin = apply8(av, bv, E[k], drop, &res);
      bad += 8 - __builtin_popcount(_mm256_movemask_ps(fin));
      if constexpr (std::is_same_v<T, float>) {
        _mm256_storeu_ps(out + o, res);
      } else {
        alignas(32) float fr[8];
        _mm256_store_ps(fr, res);
        for (int i = 0; i < 8; ++i) out[o + i] = from_f<T>(fr[i]);
      }
    }
  }
  return bad + run_scalar(a, b, out, e, e1, t, seed, drop_f);
}
#endif

template <typename T>
int64_t run(const T* a, const T* b, T* out, int64_t e0, int64_t e1, uint32_t t, uint64_t seed, float drop) {
#ifdef REGOPS_HAVE_X86_SIMD
  if (simd::has_avx2_fma()) return run_avx2(a, b, out, e0, e1, t, seed, drop);
#endif
  return run_scalar(a, b, out, e0, e1, t, seed, drop);
}

at::Tensor graddrop_apply_cpu(at::TensorList out, at::TensorList grads_task, at::TensorList grads_reg, double lam,
                              int64_t seed) {
  const auto inputs = check_graddrop_lists(out, grads_task, grads_reg, lam, c10::DeviceType::CPU);
  const std::vector<at::Tensor>&a = inputs.first, &b = inputs.second;  // contiguous grads_task, grads_reg
  const size_t T = out.size();
  // Work items: (tensor, first element) for every chunk of every tensor.
  std::vector<std::pair<uint32_t, int64_t>> items;
  for (size_t i = 0; i < T; ++i)
    for (int64_t e = 0; e < out[i].numel(); e += kChunk) items.emplace_back(static_cast<uint32_t>(i), e);
  std::vector<int64_t> bad(items.size(), 0);
  const float drop = static_cast<float>(1.0 - lam);
  const uint64_t useed = static_cast<uint64_t>(seed);
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t w = i0; w < i1; ++w) {
      const auto [t, e0] = items[w];
      const int64_t e1 = std::min(out[t].numel(), e0 + kChunk);
      const auto st = out[t].scalar_type();
      if (st == at::kFloat) {
        bad[w] = run(a[t].data_ptr<float>(), b[t].data_ptr<float>(), out[t].data_ptr<float>(), e0, e1, t, useed, drop);
      } else if (st == at::kBFloat16) {
        bad[w] = run(a[t].data_ptr<c10::BFloat16>(), b[t].data_ptr<c10::BFloat16>(), out[t].data_ptr<c10::BFloat16>(),
                     e0, e1, t, useed, drop);
      } else {
        bad[w] = run(a[t].data_ptr<c10::Half>(), b[t].data_ptr<c10::Half>(), out[t].data_ptr<c10::Half>(), e0, e1, t,
                     useed, drop);
      }
    }
  });
  auto counts = at::zeros({static_cast<int64_t>(T)}, at::kLong);
  auto* c = counts.data_ptr<int64_t>();
  for (size_t w = 0; w < items.size(); ++w) c[items[w].first] += bad[w];
  return counts;
}

at::Tensor graddrop_keep_prob_cpu(const at::Tensor& grad_task, const at::Tensor& grad_reg) {
  check_graddrop_pair(grad_task, grad_reg, c10::DeviceType::CPU);
  const auto a = grad_task.contiguous().to(at::kFloat), b = grad_reg.contiguous().to(at::kFloat);
  auto p = at::empty_like(a);
  const float *ap = a.data_ptr<float>(), *bp = b.data_ptr<float>();
  float* pp = p.data_ptr<float>();
  at::parallel_for(0, a.numel(), 1 << 16, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) pp[e] = keep_prob(ap[e], bp[e]);
  });
  return p.to(grad_task.scalar_type());
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CPU, m) {
  m.impl("graddrop_apply_", &regops::graddrop_apply_cpu);
  m.impl("graddrop_keep_prob", &regops::graddrop_keep_prob_cpu);
}
