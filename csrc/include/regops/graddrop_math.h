// R-AMT's gradient dropout, per element, shared by the C++ and CUDA kernels (the Triton kernel and the torch
// reference, python/regops/reference/graddrop.py, compute the same bits). CUDA headers only.
//
// For tensor t, element e, with a = grad_task, b = grad_reg converted to float32:
//   P = (sgn(a)·(a + b)/(|a| + |b| + 1e-8) + 1)/2       (float32, in exactly this order: no fused multiply-add)
//   U = philox_uniform(seed, t, e)                       (Philox4x32-10, counter-based: no random tensor stored)
//   out = a if P > U else a·(1 − lam)                    (float32, then rounded to the tensor's dtype)
// Philox counter for element e of tensor t: (e >> 2 low word, e >> 2 high word, t, 0), key (seed low, seed high);
// element e takes output word e & 3, and U = (word >> 8)·2^-24 ∈ [0, 1).
#pragma once
#include <math.h>
#include <stdint.h>

#include "hd.h"

namespace regops {
namespace graddrop {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
constexpr float kDenomEps = 1e-8f;

// Philox4x32 with 10 rounds (Random123): c is the counter in, the four output words out.
REGOPS_HD void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
  }
}

// The four uniforms of elements 4·block .. 4·block + 3 of tensor t.
REGOPS_HD void philox_block(uint64_t seed, uint32_t t, uint64_t block, float u[4]) {
  uint32_t c[4] = {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), t, 0u};
  philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  for (int w = 0; w < 4; ++w) u[w] = static_cast<float>(c[w] >> 8) * (1.0f / 16777216.0f);
}

REGOPS_HD float keep_prob(float a, float b) {
  const float s = static_cast<float>((a > 0.0f) - (a < 0.0f));
  const float num = s * (a + b);
  const float den = (fabsf(a) + fabsf(b)) + kDenomEps;
  const float q = num / den;
  return (q + 1.0f) * 0.5f;
}

// out for one element, given its uniform and drop_scale = float(1 − lam).
REGOPS_HD float apply(float a, float b, float u, float drop_scale) {
  return keep_prob(a, b) > u ? a : a * drop_scale;
}

}  // namespace graddrop
}  // namespace regops
