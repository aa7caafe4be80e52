// Launchers of the CUDA kernels of R-AMT's gradient dropout (the per-element rule and the Philox counter layout:
// regops/graddrop_math.h, shared with the CPU kernel). Plain C++: raw pointers to contiguous tensors, int64 sizes,
// a stream; no ATen, so the torch glue (graddrop.cpp) and the device code compile separately.
// Every launcher returns cudaGetLastError() of its launch (cudaSuccess when there is nothing to do).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace regops {
namespace graddrop_cuda {

// Element type of a tensor (computation is always in float32).
enum class Dtype : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// One tensor t of a graddrop_apply_ list, as the kernel reads it from device memory. a, b and out point to
// `numel` contiguous elements of `dtype` (out may equal a). Its elements are cut into chunks of
// kElemsPerChunk; chunk_begin is the index of its first chunk in the concatenation of all tensors' chunks.
// vec: 1 when a, b and out are all aligned to 4 elements (4-element vector loads and stores).
struct TensorMeta {
  const void* a;
  const void* b;
  void* out;
  int64_t numel;
  int64_t chunk_begin;
  int32_t dtype;  // Dtype
  int32_t vec;
};
static_assert(sizeof(TensorMeta) == 48, "TensorMeta is copied to the device as 6 int64 words");

constexpr int kApplyThreads = 256;      // threads per block
constexpr int kGroupsPerThread = 4;     // 4-element Philox groups per thread per chunk
constexpr int64_t kElemsPerChunk = 4LL * kApplyThreads * kGroupsPerThread;  // 4096: one block's work item

inline int64_t chunks_of(int64_t numel) { return (numel + kElemsPerChunk - 1) / kElemsPerChunk; }

// graddrop_apply_ over a whole list in one launch. meta: T TensorMeta; chunk_tensor: num_chunks int32, the tensor
// of every chunk (chunk c belongs to tensor chunk_tensor[c], local chunk c − meta[t].chunk_begin); counts: T
// int64, zeroed by the caller, to which the kernel adds the number of elements with a non-finite a or b.
// drop_scale = float(1 − lam). All pointers on the current device.
cudaError_t apply(const TensorMeta* meta, const int32_t* chunk_tensor, int64_t num_chunks, int64_t* counts,
                  float drop_scale, uint64_t seed, cudaStream_t stream);

// out[e] = keep_prob(a[e], b[e]) rounded to dtype, for n contiguous elements of dtype.
cudaError_t keep_prob(Dtype dtype, const void* a, const void* b, void* out, int64_t n, cudaStream_t stream);

}  // namespace graddrop_cuda
}  // namespace regops
