// Launchers of the CUDA kernels of the streamed log-domain Sinkhorn (regops.ot; the per-pair math is
// regops/sinkhorn_math.h, shared with the CPU kernel). Plain C++: raw pointers to contiguous row-major tensors,
// int64 sizes, a stream; no ATen, so the torch glue (sinkhorn.cpp) and the device code compile separately.
// Every launcher returns cudaGetLastError() of its launches (cudaSuccess when there is nothing to do).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace regops {
namespace sinkhorn_cuda {

// Element type of every floating tensor handed to a launcher; it is also the accumulation type.
enum class Dtype : int { kFloat32 = 0, kFloat64 = 1 };

// The two point clouds of a batch of B problems, and one eps per problem. Pointers are to contiguous row-major
// tensors of type `dtype`, all on the current device.
struct Clouds {
  Dtype dtype;
  const void* x;    // (B, N, d)
  const void* y;    // (B, M, d)
  const void* eps;  // (B,)
  int64_t B, N, M, d;
  int cost;  // regops::sinkhorn::Cost: 0 sqeuclidean, 1 euclidean, 2 cosine
};

// Elements (of `dtype`) of the workspace sinkhorn_update needs: the row norms, and the per-split partial
// log-sum-exps when the columns are split across blocks. Depends on the sizes only.
int64_t update_workspace(const Clouds& c);

// out (B, N): out_i = tau_i·(eps·log_w_i − eps·LSE_j((pot_j − c(x_i, y_j))/eps)), −inf where log_w_i = −inf.
// pot (B, M), log_w and tau (B, N). Requires M >= 1 (the glue checks). workspace: update_workspace(c) elements.
cudaError_t update(const Clouds& c, const void* pot, const void* log_w, const void* tau, void* out, void* workspace,
                   cudaStream_t stream);

// Elements of the workspace sinkhorn_cost_grad (k = d) and sinkhorn_apply (k = the width of v) need.
int64_t plan_workspace(const Clouds& c, int64_t k);

// out (B, N, d) = Σ_j P_ij ∇_x c(x_i, y_j), P_ij = exp((f_i + g_j − c(x_i, y_j))/eps). f (B, N), g (B, M).
cudaError_t cost_grad(const Clouds& c, const void* f, const void* g, void* out, void* workspace, cudaStream_t stream);

// out (B, N, k) = Σ_j P_ij v_j for v (B, M, k).
cudaError_t apply(const Clouds& c, const void* f, const void* g, const void* v, int64_t k, void* out, void* workspace,
                  cudaStream_t stream);

// The half-update on a given cost matrix C (B, N, M), row-major. transpose=false: reduces over j, pot (B, M),
// log_w/tau/out (B, N); transpose=true: reduces over i (threads over columns), pot (B, N), log_w/tau/out (B, M).
// The reduced dimension must be >= 1.
cudaError_t update_dense(Dtype dtype, const void* C, int64_t B, int64_t N, int64_t M, const void* pot,
                         const void* log_w, const void* tau, const void* eps, bool transpose, void* out,
                         cudaStream_t stream);

}  // namespace sinkhorn_cuda
}  // namespace regops
