// CUDA kernels of the parameter repulsion of "Adapt then Unlearn" (launchers: repulsion_kernels.h; math:
// regops/repulsion_math.h). One launch covers the whole parameter list: block c owns chunk c (8192 elements of
// one tensor, looked up in chunk_tensor), so a ResNet-50-sized list is ~3.2k blocks in one grid.
//
// Forward: each thread sums its elements' (θ − φ̄)² in the accumulation type, the block reduces through shared
// memory and writes one float64 partial per chunk; a second launch (one thread per tensor) adds a tensor's
// partials in chunk order. No atomics: the result is deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "regops/repulsion_math.h"
#include "repulsion_kernels.h"

namespace regops {
namespace repulsion_cuda {
namespace {

namespace rm = regops::repulsion;

template <Dtype D>
struct Traits;
template <>
struct Traits<Dtype::kFloat32> {
  using T = float;
  using A = float;
  __device__ static A load(const T* p) { return __ldcs(p); }
  __device__ static void store(T* p, A v) { __stcs(p, v); }
};
template <>
struct Traits<Dtype::kFloat64> {
  using T = double;
  using A = double;
  __device__ static A load(const T* p) { return __ldcs(p); }
  __device__ static void store(T* p, A v) { __stcs(p, v); }
};
template <>
struct Traits<Dtype::kBFloat16> {
  using T = uint16_t;
  using A = float;
  __device__ static A load(const T* p) { return __uint_as_float(static_cast<uint32_t>(__ldcs(p)) << 16); }
  __device__ static void store(T* p, A v) { *p = __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
};
template <>
struct Traits<Dtype::kFloat16> {
  using T = uint16_t;
  using A = float;
  __device__ static A load(const T* p) { return __half2float(__ushort_as_half(__ldcs(p))); }
  __device__ static void store(T* p, A v) { *p = __half_as_ushort(__float2half_rn(v)); }
};

template <Dtype D>
__global__ void __launch_bounds__(kThreads)
    fwd_kernel(const TensorMeta* __restrict__ meta, const int32_t* __restrict__ chunk_tensor, int64_t num_chunks,
               double* __restrict__ partials) {
  using Tr = Traits<D>;
  using T = typename Tr::T;
  using A = typename Tr::A;
  __shared__ double red[kThreads / 32];
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const int32_t t = chunk_tensor[c];
    const TensorMeta m = meta[t];
    const int64_t e0 = (c - m.chunk_begin) * kElemsPerChunk;
    const int64_t e1 = e0 + kElemsPerChunk < m.numel ? e0 + kElemsPerChunk : m.numel;
    const T* th = static_cast<const T*>(m.theta);
    const T* mu = static_cast<const T*>(m.mean);
    A s = 0;
    for (int64_t e = e0 + threadIdx.x; e < e1; e += kThreads) s += rm::sq_diff<A>(Tr::load(th + e), Tr::load(mu + e));
    double v = static_cast<double>(s);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0;
      for (int w = 0; w < kThreads / 32; ++w) total += red[w];
      partials[c] = total;
    }
    __syncthreads();
  }
}

template <typename A>
__global__ void combine_kernel(const TensorMeta* __restrict__ meta, int64_t T, int64_t num_chunks,
                               const double* __restrict__ partials, A* __restrict__ sums) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= T) return;
  const int64_t c0 = meta[t].chunk_begin;
  const int64_t c1 = t + 1 < T ? meta[t + 1].chunk_begin : num_chunks;
  double total = 0;
  for (int64_t c = c0; c < c1; ++c) total += partials[c];
  sums[t] = static_cast<A>(total);
}

template <Dtype D>
__global__ void __launch_bounds__(kThreads)
    bwd_kernel(const TensorMeta* __restrict__ meta, const int32_t* __restrict__ chunk_tensor, int64_t num_chunks,
               const typename Traits<D>::A* __restrict__ grad_sums) {
  using Tr = Traits<D>;
  using T = typename Tr::T;
  using A = typename Tr::A;
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const int32_t t = chunk_tensor[c];
    const TensorMeta m = meta[t];
    const int64_t e0 = (c - m.chunk_begin) * kElemsPerChunk;
    const int64_t e1 = e0 + kElemsPerChunk < m.numel ? e0 + kElemsPerChunk : m.numel;
    const T* th = static_cast<const T*>(m.theta);
    const T* mu = static_cast<const T*>(m.mean);
    T* g = static_cast<T*>(m.grad);
    const A two_g = static_cast<A>(2) * grad_sums[t];
    for (int64_t e = e0 + threadIdx.x; e < e1; e += kThreads)
      Tr::store(g + e, rm::grad<A>(two_g, Tr::load(th + e), Tr::load(mu + e)));
  }
}

unsigned grid_of(int64_t num_chunks) {
  return static_cast<unsigned>(num_chunks < static_cast<int64_t>(INT_MAX) ? num_chunks : INT_MAX);
}

template <Dtype D>
cudaError_t forward_typed(const TensorMeta* meta, const int32_t* chunk_tensor, int64_t num_chunks, int64_t T,
                          double* partials, void* sums, cudaStream_t stream) {
  using A = typename Traits<D>::A;
  if (num_chunks > 0) {
    fwd_kernel<D><<<grid_of(num_chunks), kThreads, 0, stream>>>(meta, chunk_tensor, num_chunks, partials);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const int threads = 128;
  combine_kernel<A><<<static_cast<unsigned>((T + threads - 1) / threads), threads, 0, stream>>>(
      meta, T, num_chunks, partials, static_cast<A*>(sums));
  return cudaGetLastError();
}

template <Dtype D>
cudaError_t backward_typed(const TensorMeta* meta, const int32_t* chunk_tensor, int64_t num_chunks,
                           const void* grad_sums, cudaStream_t stream) {
  using A = typename Traits<D>::A;
  if (num_chunks <= 0) return cudaSuccess;
  bwd_kernel<D><<<grid_of(num_chunks), kThreads, 0, stream>>>(meta, chunk_tensor, num_chunks,
                                                             static_cast<const A*>(grad_sums));
  return cudaGetLastError();
}

}  // namespace

cudaError_t forward(Dtype dtype, const TensorMeta* meta, const int32_t* chunk_tensor, int64_t num_chunks, int64_t T,
                    double* partials, void* sums, cudaStream_t stream) {
  if (T <= 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32: return forward_typed<Dtype::kFloat32>(meta, chunk_tensor, num_chunks, T, partials, sums, stream);
    case Dtype::kFloat64: return forward_typed<Dtype::kFloat64>(meta, chunk_tensor, num_chunks, T, partials, sums, stream);
    case Dtype::kBFloat16: return forward_typed<Dtype::kBFloat16>(meta, chunk_tensor, num_chunks, T, partials, sums, stream);
    case Dtype::kFloat16: return forward_typed<Dtype::kFloat16>(meta, chunk_tensor, num_chunks, T, partials, sums, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t backward(Dtype dtype, const TensorMeta* meta, const int32_t* chunk_tensor, int64_t num_chunks,
                     const void* grad_sums, cudaStream_t stream) {
  switch (dtype) {
    case Dtype::kFloat32: return backward_typed<Dtype::kFloat32>(meta, chunk_tensor, num_chunks, grad_sums, stream);
    case Dtype::kFloat64: return backward_typed<Dtype::kFloat64>(meta, chunk_tensor, num_chunks, grad_sums, stream);
    case Dtype::kBFloat16: return backward_typed<Dtype::kBFloat16>(meta, chunk_tensor, num_chunks, grad_sums, stream);
    case Dtype::kFloat16: return backward_typed<Dtype::kFloat16>(meta, chunk_tensor, num_chunks, grad_sums, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace repulsion_cuda
}  // namespace regops
