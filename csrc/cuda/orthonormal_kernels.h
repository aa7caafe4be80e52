// Launchers of the CUDA orthonormality-penalty kernels (‖X Xᵀ − I‖_F on canonical "rows" matrices).
// Plain C++: raw pointers, int64 sizes and element strides, a stream; no ATen, no cuda_bf16.h, so the
// torch glue and the device code compile separately. Every launcher returns cudaGetLastError() of its
// launches (cudaSuccess when there is nothing to do).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace regops {
namespace ortho_cuda {

// Element type of a tensor handed to a launcher. The accumulation ("acc") type is float for
// kFloat32 and kBFloat16 and double for kFloat64.
enum class Dtype : int { kFloat32 = 0, kFloat64 = 1, kBFloat16 = 2 };

// Forward. mats: X of shape (L, p, q), element (l, i, k) at mats[l*stride_l + i*stride_p + k*stride_q]
// (any strides, e.g. a transposed view), of type `dtype`.
// Writes residual: R = X Xᵀ − I, contiguous (L, p, p), acc type, full symmetric matrix;
// and values: (L,) contiguous, type `dtype`, Σ R² (squared) or sqrt(Σ R²).
cudaError_t orthonormal_penalty_fwd(Dtype dtype, const void* mats, int64_t L, int64_t p, int64_t q,
                                    int64_t stride_l, int64_t stride_p, int64_t stride_q, bool squared,
                                    void* values, void* residual, cudaStream_t stream);

// Backward. grad_values: (L,) of type `grad_values_dtype`, element l at grad_values[l*grad_values_stride].
// mats as in the forward; residual: contiguous (L, p, p) in the acc type of `dtype`.
// workspace: L elements of the acc type (receives the per-matrix coefficient).
// Writes grad (L, p, q), type `dtype`, element (l, i, k) at grad[l*grad_stride_l + i*grad_stride_p + k*grad_stride_q]:
// grad_l = grad_coef(grad_values[l], Σ R_l², squared) · R_l X_l.
cudaError_t orthonormal_penalty_bwd(Dtype dtype, Dtype grad_values_dtype, const void* grad_values,
                                    int64_t grad_values_stride, const void* mats, int64_t L, int64_t p, int64_t q,
                                    int64_t stride_l, int64_t stride_p, int64_t stride_q, const void* residual,
                                    bool squared, void* workspace, void* grad, int64_t grad_stride_l,
                                    int64_t grad_stride_p, int64_t grad_stride_q, cudaStream_t stream);

}  // namespace ortho_cuda
}  // namespace regops
