// Launcher of the CUDA fused log-softmax rows (the preference engine's row math). Plain C++: raw pointers, int64
// sizes, a stream; no ATen, so the torch glue (logsoftmax_rows.cpp) and the device code compile separately.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace regops {
namespace lsm_cuda {

// Element type of logits / ref_logits / out. The accumulation ("acc") type of logp, lse, kl, grad_logp and grad_kl
// is float for kFloat32 and kBFloat16 and double for kFloat64.
enum class Dtype : int { kFloat32 = 0, kFloat64 = 1, kBFloat16 = 2 };

// logits, ref_logits (nullable unless kl_mode > 0) and out (nullable: no gradient) are contiguous (rows, V); out may
// be logits (in place). targets (rows,) int64; grad_logp, grad_kl (rows,) acc type (read only when out is set).
// Writes logp, ref_logp (the reference's log-prob of the target; 0 for kl_mode 0), kl (rows,) acc type. A row whose target is ignore_index, or outside [0, V) (the glue's callers
// validate targets), gives 0 everywhere.
cudaError_t logsoftmax_rows(Dtype dtype, const void* logits, const void* ref_logits, const int64_t* targets,
                            const void* grad_logp, const void* grad_kl, void* out, void* logp, void* ref_logp, void* kl,
                            int64_t rows, int64_t V, int kl_mode, int64_t ignore_index, cudaStream_t stream);

}  // namespace lsm_cuda
}  // namespace regops
