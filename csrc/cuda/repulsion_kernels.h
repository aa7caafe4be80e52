// Launchers of the CUDA kernels of the parameter repulsion of "Adapt then Unlearn" (the per-element math:
// regops/repulsion_math.h, shared with the CPU kernel). Plain C++: raw pointers to contiguous tensors, int64 sizes,
// a stream; no ATen, so the torch glue (repulsion.cpp) and the device code compile separately.
// Every launcher returns cudaGetLastError() of its launch (cudaSuccess when there is nothing to do).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace regops {
namespace repulsion_cuda {

// Element type of the whole list (float64 accumulates in float64, the others in float32).
enum class Dtype : int32_t { kFloat32 = 0, kFloat64 = 1, kBFloat16 = 2, kFloat16 = 3 };

// One tensor of the list as the kernels read it: theta and mean (and, in the backward, grad) point to `numel`
// contiguous elements; chunk_begin is the index of its first chunk in the concatenation of all chunks.
struct TensorMeta {
  const void* theta;
  const void* mean;
  void* grad;
  int64_t numel;
  int64_t chunk_begin;
};
static_assert(sizeof(TensorMeta) == 40, "TensorMeta is copied to the device as 5 int64 words");

constexpr int kThreads = 256;
constexpr int64_t kElemsPerChunk = 8192;  // one block's work item

inline int64_t chunks_of(int64_t numel) { return (numel + kElemsPerChunk - 1) / kElemsPerChunk; }

// Forward: partials[c] = Σ over chunk c of (θ − φ̄)² (float64 scratch, num_chunks entries), then
// sums[t] = Σ of tensor t's partials in chunk order, written in the accumulation dtype (float or double).
// meta: T TensorMeta; chunk_tensor: num_chunks int32, the tensor of every chunk. All pointers on the device.
cudaError_t forward(Dtype dtype, const TensorMeta* meta, const int32_t* chunk_tensor, int64_t num_chunks, int64_t T,
                    double* partials, void* sums, cudaStream_t stream);

// Backward: grad_t = 2·grad_sums[t]·(θ − φ̄) in the tensor dtype; grad_sums in the accumulation dtype.
cudaError_t backward(Dtype dtype, const TensorMeta* meta, const int32_t* chunk_tensor, int64_t num_chunks,
                     const void* grad_sums, cudaStream_t stream);

}  // namespace repulsion_cuda
}  // namespace regops
