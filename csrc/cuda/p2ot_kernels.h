// Launchers of the CUDA kernels of P²OT's fused scaling pass (regops::p2ot_scaling_pass; the CPU kernel is
// csrc/cpu/p2ot.cpp). Plain C++: raw pointers to contiguous tensors, int64 sizes, a stream; no ATen, so the torch
// glue (p2ot.cpp) and the device code compile separately. Every launcher returns cudaGetLastError() of its
// launches (cudaSuccess when there is nothing to do).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace regops {
namespace p2ot_cuda {

// Element type of the floating tensors handed to the launcher (K, v, t, u, col).
enum class Dtype : int { kFloat32 = 0, kFloat64 = 1 };

// Doubles of the workspace scaling_pass needs for K of shape (N, Kc): one column partial per block of rows.
// Depends on the sizes only (so does the summation order: results repeat bit for bit).
int64_t scaling_pass_workspace(int64_t N, int64_t Kc);

// One fused pass over K (N, Kc), row-major contiguous, v (Kc,), t (N,):
//   r_i = Σ_j K_ij v_j,  u_i = t_i / r_i (r_i = 0 gives ±inf, unguarded),  col_j = Σ_i K_ij u_i.
// u (N,), col (Kc,) are written. workspace: scaling_pass_workspace(N, Kc) doubles. N = 0 or Kc = 0 launch
// nothing (the caller fills col with zeros, and u with t/0 for Kc = 0).
cudaError_t scaling_pass(Dtype dtype, const void* K, const void* v, const void* t, void* u, void* col, int64_t N,
                         int64_t Kc, double* workspace, cudaStream_t stream);

}  // namespace p2ot_cuda
}  // namespace regops
