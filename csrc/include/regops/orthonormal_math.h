// Per-element math of the orthonormality penalty ‖X Xᵀ − I‖_F, shared by the C++ and CUDA kernels
// so that the CPU tests also check the CUDA math. CUDA headers only: no ATen here.
#pragma once
#include <math.h>

#include "hd.h"

namespace regops {
namespace ortho {

REGOPS_HD float sqrt_(float v) { return sqrtf(v); }
REGOPS_HD double sqrt_(double v) { return sqrt(v); }

// Entry (i, j) of R = G − I from the Gram entry G_ij.
template <typename acc_t>
REGOPS_HD acc_t residual(acc_t gram, long long i, long long j) {
  return i == j ? gram - acc_t(1) : gram;
}

// Weight of entry (i, j) of the lower triangle in ‖R‖²: off-diagonal entries appear twice.
template <typename acc_t>
REGOPS_HD acc_t lower_weight(long long i, long long j) {
  return i == j ? acc_t(1) : acc_t(2);
}

// Penalty value from Σ R_ij².
template <typename acc_t>
REGOPS_HD acc_t value_from_sumsq(acc_t sumsq, bool squared) {
  return squared ? sumsq : sqrt_(sumsq);
}

// d value / dX = coef · R X, with coef = 4·g for ‖R‖² and 2·g/‖R‖ for ‖R‖.
// At R = 0 the non-squared norm has no gradient; we take the subgradient 0, as the reference does.
template <typename acc_t>
REGOPS_HD acc_t grad_coef(acc_t grad_value, acc_t sumsq, bool squared) {
  if (squared) return acc_t(4) * grad_value;
  return sumsq > acc_t(0) ? acc_t(2) * grad_value / sqrt_(sumsq) : acc_t(0);
}

}  // namespace ortho
}  // namespace regops
