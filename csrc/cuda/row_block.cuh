// Block-per-row helpers of the CUDA row kernels (logsoftmax_rows, class_rows): the element/accumulation dtypes and
// the block-wide reductions of a 256-thread block. CUDA headers and our own only (no ATen).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "regops/logsoftmax_math.h"

namespace regops {
namespace row_block {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
struct AccOf {
  using type = T;
};
template <>
struct AccOf<__nv_bfloat16> {
  using type = float;
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

// The block's merged running (max, Σ e^{x − max}); every thread gets it. shared: kWarps entries.
template <typename A>
__device__ lsm::Lse<A> block_lse(lsm::Lse<A> v, lsm::Lse<A>* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    lsm::Lse<A> other{__shfl_xor_sync(0xffffffffu, v.max, o), __shfl_xor_sync(0xffffffffu, v.sum, o)};
    v = lsm::lse_merge(v, other);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still be read from a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  lsm::Lse<A> r{A(0), A(0)};
  for (int w = 0; w < kWarps; ++w) r = lsm::lse_merge(r, shared[w]);
  return r;
}

// The block's sum; every thread gets it. shared: kWarps entries.
template <typename A>
__device__ A block_sum(A v, A* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  A r = 0;
  for (int w = 0; w < kWarps; ++w) r += shared[w];
  return r;
}

}  // namespace row_block
}  // namespace regops
