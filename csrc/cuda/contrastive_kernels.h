// Launchers of the CUDA kernels of the contrastive engine (ConR, SupCon, focal SupCon; the math is
// regops/contrastive_math.h). Plain C++: raw pointers to contiguous row-major tensors, int64 sizes, a stream;
// no ATen, so the torch glue (contrastive.cpp) and the device code compile separately. Every launcher returns
// cudaGetLastError() of its launches (cudaSuccess when there is nothing to do).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace regops {
namespace contrastive_cuda {

// Element type of every floating tensor handed to a launcher; it is also the accumulation type.
enum class Dtype : int { kFloat32 = 0, kFloat64 = 1 };

// Fields of one partial row accumulator in the forward workspace (see contrastive_fwd_workspace).
constexpr int kPartialFields = 7;

// The inputs shared by the forward and the backward. Every pointer is to a contiguous row-major tensor of
// type `dtype` unless said otherwise.
struct Problem {
  Dtype dtype;
  const void* anchors;     // (n, D)
  const void* candidates;  // (M, D); the anchors themselves in the symmetric case (then M == n)
  int64_t n, M, D;
  int kind;                // regops::contrastive::Kind
  int64_t offset;          // anchor i is candidate offset + i (no diagonal where that is outside [0, M))
  double temperature, threshold, push, label_norm;
  // ConR (kind 0, 1): label rows (n, L) / (M, L), prediction rows likewise; weights (n,) or nullptr (all 1).
  // In the symmetric case cand_labels/cand_preds may point at labels/preds.
  const void* labels;
  const void* cand_labels;
  const void* preds;
  const void* cand_preds;
  const void* weights;
  int64_t L;
  // SupCon, focal (kind 2, 3): int64 class ids (n,) / (M,).
  const int64_t* class_ids;
  const int64_t* cand_class_ids;
};

// Elements (of `dtype`) of the workspace contrastive_fwd needs for this problem on the current device:
// the per-split partial row statistics when the candidates are split across blocks (0 when not split).
int64_t contrastive_fwd_workspace(const Problem& p);

// Forward. Writes row_loss (n,) and row_stats (n, 4) = [L, alpha, beta, |P|], both of `dtype`.
// workspace: contrastive_fwd_workspace(p) elements of `dtype` (may be nullptr when that is 0).
cudaError_t contrastive_fwd(const Problem& p, void* row_loss, void* row_stats, void* workspace, cudaStream_t stream);

// Backward of Σ_i grad_row_loss_i · row_loss_i. grad_row_loss (n,) and row_stats (n, 4) of `dtype`.
// Adds Σ_j dS_ij c_j/τ into grad_anchors (n, D) and Σ_i dS_ij a_i/τ into grad_candidates (M, D), so both must be
// zero on entry (and distinct buffers). In the symmetric case (candidates are the anchors) the caller passes a
// scratch (n, D) buffer as grad_candidates and adds it to grad_anchors afterwards.
cudaError_t contrastive_bwd(const Problem& p, const void* grad_row_loss, const void* row_stats, void* grad_anchors,
                            void* grad_candidates, cudaStream_t stream);

}  // namespace contrastive_cuda
}  // namespace regops
