// Launchers of the CUDA classification-side row losses (decoupled mixup, ELR). Plain C++: raw pointers, int64
// sizes, a stream; no ATen, so the torch glue (class_rows.cpp) and the device code compile separately.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace regops {
namespace cls_cuda {

// Element type of logits. The accumulation ("acc") type of coeffs, loss, grad, buffer rows and new rows is
// float for kFloat32 and kBFloat16 and double for kFloat64.
enum class Dtype : int { kFloat32 = 0, kFloat64 = 1, kBFloat16 = 2 };

// logits (B, C) contiguous; classes (B, 2) int64 in [0, C) (the glue's callers validate them); coeffs (B, 4) acc.
// Writes loss (B,) acc and, when grad is not null, grad (B, C) acc.
cudaError_t mixup_rows(Dtype dtype, const void* logits, const int64_t* classes, const void* coeffs, void* loss,
                       void* grad, int64_t B, int64_t C, cudaStream_t stream);

// logits (B, C); targets (B,) int64 in [0, C); buffer_rows (B, C) acc. Writes loss (B,) acc, new_rows (B, C) acc and,
// when grad is not null, grad (B, C) acc.
cudaError_t elr_rows(Dtype dtype, const void* logits, const int64_t* targets, const void* buffer_rows, double beta,
                     double lam, void* loss, void* grad, void* new_rows, int64_t B, int64_t C, cudaStream_t stream);

}  // namespace cls_cuda
}  // namespace regops
