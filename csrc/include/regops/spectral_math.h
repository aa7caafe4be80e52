// Batched spectral norms by power iteration, per element, shared by the C++ and CUDA kernels. CUDA headers only.
//
// For W (h x w), u (h), v (w), accumulated in Acc (float32 for float32/bfloat16/float16 weights, float64 for
// float64), one step is torch.nn.utils.parametrizations.spectral_norm's:
//   a = W v,  u = a / max(|a|, eps)          (F.normalize)
//   t = Wt u, v = t / max(|t|, eps)
// and sigma = t . v (= ut W v: the third product of torch's loop is not needed). Its gradient with u, v
// constant: dsigma/dW_ij = u_i v_j.
#pragma once
#include <math.h>

#include "hd.h"

namespace regops {
namespace spectral {

REGOPS_HD float sqrt_(float v) { return sqrtf(v); }
REGOPS_HD double sqrt_(double v) { return sqrt(v); }

// The factor that F.normalize applies to a vector with squared norm sumsq: 1 / max(sqrt(sumsq), eps).
template <typename Acc>
REGOPS_HD Acc inv_norm(Acc sumsq, Acc eps) {
  const Acc n = sqrt_(sumsq);
  return Acc(1) / (n > eps ? n : eps);
}

// grad W_ij = g·u_i·v_j, with gu = g·u_i formed once per row.
template <typename Acc>
REGOPS_HD Acc outer(Acc gu, Acc v) {
  return gu * v;
}

}  // namespace spectral
}  // namespace regops
