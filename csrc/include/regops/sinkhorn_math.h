// Per-pair math of the streamed log-domain Sinkhorn (regops.ot), shared by the C++ and CUDA kernels so that
// the CPU tests also check the CUDA math. CUDA headers only: no ATen here.
//
// Point clouds x_i (i < N) and y_j (j < M) in R^d. Costs (OTT-JAX's conventions):
//   kSqEuclidean  c = ‖x − y‖²                      (no ½)
//   kEuclidean    c = ‖x − y‖                       (subgradient 0 at x = y)
//   kCosine       c = 1 − ⟨x, y⟩/(‖x‖‖y‖ + 1e-8)
// A kernel either forms ‖x − y‖² from differences (small d; exact) or from the dot product and the squared
// norms (a GEMM tile; then it clamps at 0). Coupling: P_ij = exp((f_i + g_j − c_ij)/eps), potentials with
// respect to the counting measure, as OTT's. Envelope gradient: Σ_j P_ij ∇_x c(x_i, y_j) = Σ_j P_ij (A_ij x_i −
// W_ij y_j), with (A, W) from grad_coefs.
#pragma once
#include <math.h>

#include "hd.h"

namespace regops {
namespace sinkhorn {

enum Cost : int { kSqEuclidean = 0, kEuclidean = 1, kCosine = 2 };
constexpr double kCosineRidge = 1e-8;

REGOPS_HD float sqrt_(float v) { return sqrtf(v); }
REGOPS_HD double sqrt_(double v) { return sqrt(v); }
REGOPS_HD float log_(float v) { return logf(v); }
REGOPS_HD double log_(double v) { return log(v); }
REGOPS_HD float exp_(float v) { return expf(v); }
REGOPS_HD double exp_(double v) { return exp(v); }

// Cost from the squared distance (sqeuclidean, euclidean).
template <typename T>
REGOPS_HD T cost_from_sqdist(int cost, T sqdist) {
  const T s = sqdist > T(0) ? sqdist : T(0);
  return cost == kEuclidean ? sqrt_(s) : s;
}

// Cost from ⟨x, y⟩ and the squared norms sx = ‖x‖², sy = ‖y‖² (nx, ny = the norms, used by the cosine).
template <typename T>
REGOPS_HD T cost_from_dot(int cost, T dot, T sx, T sy, T nx, T ny) {
  if (cost == kCosine) return T(1) - dot / (nx * ny + T(kCosineRidge));
  return cost_from_sqdist(cost, sx + sy - T(2) * dot);
}

// ∇_x c(x, y) = A·x − W·y. sqdist is ‖x − y‖² (euclidean), dot = ⟨x, y⟩ and nx, ny the norms (cosine).
template <typename T>
REGOPS_HD void grad_coefs(int cost, T sqdist, T dot, T nx, T ny, T* A, T* W) {
  if (cost == kSqEuclidean) {
    *A = T(2);
    *W = T(2);
  } else if (cost == kEuclidean) {
    const T dist = sqdist > T(0) ? sqrt_(sqdist) : T(0);
    *A = dist > T(0) ? T(1) / dist : T(0);
    *W = *A;
  } else {
    // c = 1 − dot/D, D = nx·ny + r: ∇_x c = −y/D + dot·ny·(x/nx)/D²; the second term is 0 at x = 0.
    const T D = nx * ny + T(kCosineRidge);
    *W = T(1) / D;
    *A = nx > T(0) ? dot * ny / (nx * D * D) : T(0);
  }
}

// The half-update from a row's log-sum-exp lse_i = LSE_j((pot_j − c_ij)/eps):
//   out_i = tau_i·(eps·log_w_i − eps·lse_i); log_w_i = −inf (a zero weight) gives −inf.
template <typename T>
REGOPS_HD T potential_from_lse(T tau, T eps, T log_w, T lse) {
  if (log_w == -INFINITY) return -INFINITY;
  return tau * eps * (log_w - lse);
}

// Online log-sum-exp: a running (max, Σ e^{v − max}) pair.
template <typename T>
struct Lse {
  T m = -INFINITY;
  T s = T(0);
  REGOPS_HD void add(T v) {
    if (v == -INFINITY) return;
    if (v > m) {
      s = s * exp_(m - v) + T(1);
      m = v;
    } else {
      s += exp_(v - m);
    }
  }
  // Merge a block whose values have max bm and shifted sum bs = Σ e^{v − bm}.
  REGOPS_HD void merge(T bm, T bs) {
    if (bm == -INFINITY) return;
    if (bm > m) {
      s = s * exp_(m - bm) + bs;
      m = bm;
    } else {
      s += bs * exp_(bm - m);
    }
  }
  REGOPS_HD T value() const { return m == -INFINITY ? T(-INFINITY) : m + log_(s); }
};

}  // namespace sinkhorn
}  // namespace regops
