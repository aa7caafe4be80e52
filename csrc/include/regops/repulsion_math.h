// Parameter repulsion ("Adapt then Unlearn"), per element, shared by the C++ and CUDA kernels. CUDA headers only.
//
// For tensor p with parameters θ and the per-tensor mean φ̄ of the anchor sets (python/regops/ops/repulsion.py):
//   sum_p   = Σ_e (θ_e − φ̄_e)²        accumulated in Acc (float32 for float32/bfloat16/float16, float64 for float64)
//   grad_pe = 2·g_p·(θ_e − φ̄_e)       g_p = dL/dsum_p, rounded to the tensor's dtype
#pragma once
#include "hd.h"

namespace regops {
namespace repulsion {

template <typename Acc>
REGOPS_HD Acc sq_diff(Acc theta, Acc mean) {
  const Acc d = theta - mean;
  return d * d;
}

// two_g = 2·g_p, computed once per tensor.
template <typename Acc>
REGOPS_HD Acc grad(Acc two_g, Acc theta, Acc mean) {
  return two_g * (theta - mean);
}

}  // namespace repulsion
}  // namespace regops
