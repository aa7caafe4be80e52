// Launchers of the CUDA kernels of the batched spectral norms (the per-element math: regops/spectral_math.h,
// shared with the CPU kernel). Plain C++: raw pointers to contiguous tensors, int64 sizes, a stream; no ATen, so
// the torch glue (spectral.cpp) and the device code compile separately.
// Every launcher returns cudaGetLastError() of its launch (cudaSuccess when there is nothing to do).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace regops {
namespace spectral_cuda {

// Element type of the weight list (float64 accumulates in float64, the others in float32).
enum class Dtype : int32_t { kFloat32 = 0, kFloat64 = 1, kBFloat16 = 2, kFloat16 = 3 };

// One matrix of the list as the kernels read it. weight: h x w contiguous elements of the list dtype; the
// vectors are contiguous, in the accumulation dtype.
//   power: v_in (w) the start vector (read only); u (h) and v (w) the outputs; grad unused.
//   outer: u (h) and v (w) read only; grad (h x w, the list dtype) the output; chunk_begin the index of the
//          matrix's first chunk of kElemsPerChunk elements in the concatenation of all matrices' chunks.
struct MatrixMeta {
  const void* weight;
  const void* v_in;
  void* u;
  void* v;
  void* grad;
  int64_t h;
  int64_t w;
  int64_t chunk_begin;
};
static_assert(sizeof(MatrixMeta) == 64, "MatrixMeta is copied to the device as 8 int64 words");

constexpr int kThreads = 512;
constexpr int64_t kElemsPerChunk = 8192;  // one block's work item in the outer product

inline int64_t chunks_of(int64_t numel) { return (numel + kElemsPerChunk - 1) / kElemsPerChunk; }

// n_iter >= 1 power-iteration steps per matrix (one block per matrix), then sigma[l] = (Wt u) . v in the
// accumulation dtype (float or double). meta: L MatrixMeta on the device.
cudaError_t power(Dtype dtype, const MatrixMeta* meta, int64_t L, int64_t n_iter, double eps, void* sigma,
                  cudaStream_t stream);

// grad_l = grad_sigmas[l] * u_l v_lt rounded to the list dtype; grad_sigmas (L) in the accumulation dtype.
// num_chunks: the sum of chunks_of(h_l * w_l).
cudaError_t outer(Dtype dtype, const MatrixMeta* meta, int64_t L, int64_t num_chunks, const void* grad_sigmas,
                  cudaStream_t stream);

}  // namespace spectral_cuda
}  // namespace regops
