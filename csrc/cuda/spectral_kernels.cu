// CUDA kernels of the batched spectral norms (launchers: spectral_kernels.h; math: regops/spectral_math.h). One
// launch covers the whole weight list in each direction.
//
// power: block l owns matrix l and runs all its iterations, the phases separated by __syncthreads:
//   a = W v    one warp per row (coalesced along the row), written into u; the block reduces |a|², u *= 1/|a|;
//   t = Wt u   threads over columns (coalesced along a row), split into row groups when W is narrower than the
//              block, the groups' partials added in shared memory; t is written into v (v's old value is dead
//              by then), the block reduces |t|², v = t/|t|, and after the last step sigma = t . v.
// So the only scratch is shared memory; v_in is read in the first step only, which spares a copy per vector.
// outer: block c owns chunk c (8192 elements of one matrix, found by binary search over chunk_begin).
// Every sum is reduced in a fixed order: the results are deterministic (they differ from the CPU kernel's in the
// last bits, its order being another).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "regops/spectral_math.h"
#include "spectral_kernels.h"

namespace regops {
namespace spectral_cuda {
namespace {

namespace sm = regops::spectral;

constexpr int kWarps = kThreads / 32;

// W is read-only for the whole kernel and read twice per step: the read-only cached path (__ldg).
template <Dtype D>
struct Traits;
template <>
struct Traits<Dtype::kFloat32> {
  using T = float;
  using A = float;
  __device__ static A load(const T* p) { return __ldg(p); }
  __device__ static void store(T* p, A v) { *p = v; }
};
template <>
struct Traits<Dtype::kFloat64> {
  using T = double;
  using A = double;
  __device__ static A load(const T* p) { return __ldg(p); }
  __device__ static void store(T* p, A v) { *p = v; }
};
template <>
struct Traits<Dtype::kBFloat16> {
  using T = uint16_t;
  using A = float;
  __device__ static A load(const T* p) { return __uint_as_float(static_cast<uint32_t>(__ldg(p)) << 16); }
  __device__ static void store(T* p, A v) { *p = __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
};
template <>
struct Traits<Dtype::kFloat16> {
  using T = uint16_t;
  using A = float;
  __device__ static A load(const T* p) { return __half2float(__ushort_as_half(__ldg(p))); }
  __device__ static void store(T* p, A v) { *p = __half_as_ushort(__float2half_rn(v)); }
};

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// The block's sum, in warp order; every thread gets it. shared: kWarps entries.
template <typename A>
__device__ A block_sum(A v, A* shared) {
  v = warp_sum(v);
  __syncthreads();  // shared may still be read from the previous reduction
  if ((threadIdx.x & 31) == 0) shared[threadIdx.x >> 5] = v;
  __syncthreads();
  A r = 0;
  for (int k = 0; k < kWarps; ++k) r += shared[k];
  return r;
}

// Σ_j row_j x_j by one warp (every lane gets it); four independent sums per lane keep loads in flight.
template <Dtype D>
__device__ __forceinline__ typename Traits<D>::A warp_dot(const typename Traits<D>::T* row,
                                                          const typename Traits<D>::A* x, int64_t n, int lane) {
  using Tr = Traits<D>;
  using A = typename Tr::A;
  A s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = lane;
  for (; j + 96 < n; j += 128) {
    s0 += Tr::load(row + j) * x[j];
    s1 += Tr::load(row + j + 32) * x[j + 32];
    s2 += Tr::load(row + j + 64) * x[j + 64];
    s3 += Tr::load(row + j + 96) * x[j + 96];
  }
  for (; j < n; j += 32) s0 += Tr::load(row + j) * x[j];
  return warp_sum((s0 + s1) + (s2 + s3));
}

// Σ_{i ≡ r0 mod stride} W_ij u_i for column j, four rows in flight.
template <Dtype D>
__device__ __forceinline__ typename Traits<D>::A column_dot(const typename Traits<D>::T* W,
                                                            const typename Traits<D>::A* u, int64_t h, int64_t w,
                                                            int64_t j, int64_t r0, int64_t stride) {
  using Tr = Traits<D>;
  using A = typename Tr::A;
  A p0 = 0, p1 = 0, p2 = 0, p3 = 0;
  int64_t i = r0;
  for (; i + 3 * stride < h; i += 4 * stride) {
    p0 += Tr::load(W + i * w + j) * u[i];
    p1 += Tr::load(W + (i + stride) * w + j) * u[i + stride];
    p2 += Tr::load(W + (i + 2 * stride) * w + j) * u[i + 2 * stride];
    p3 += Tr::load(W + (i + 3 * stride) * w + j) * u[i + 3 * stride];
  }
  for (; i < h; i += stride) p0 += Tr::load(W + i * w + j) * u[i];
  return (p0 + p1) + (p2 + p3);
}

// u and v are written and re-read by other threads of the block within the launch: plain (coherent) accesses,
// no __restrict__ on them.
template <Dtype D>
__global__ void __launch_bounds__(kThreads)
    power_kernel(const MatrixMeta* __restrict__ meta, int64_t L, int64_t n_iter, typename Traits<D>::A eps,
                 typename Traits<D>::A* __restrict__ sigma) {
  using Tr = Traits<D>;
  using T = typename Tr::T;
  using A = typename Tr::A;
  __shared__ A red[kWarps];
  __shared__ A part[kThreads];  // the row groups' column partials of Wt u
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  for (int64_t l = blockIdx.x; l < L; l += gridDim.x) {
    const MatrixMeta m = meta[l];
    const T* W = static_cast<const T*>(m.weight);
    A* u = static_cast<A*>(m.u);
    A* v = static_cast<A*>(m.v);
    const A* v_src = static_cast<const A*>(m.v_in);
    const int64_t h = m.h, w = m.w;
    // Wt u's layout: cols columns at a time (a power of two >= 32, at most the block), kThreads / cols row groups
    int cols = 32;
    while (cols < kThreads && cols < w) cols <<= 1;
    const int groups = kThreads / cols, c = tid % cols, r = tid / cols;
    for (int64_t it = 0; it < n_iter; ++it) {
      // a = W v into u
      A usq = 0;
      for (int64_t i = warp; i < h; i += kWarps) {
        const A a = warp_dot<D>(W + i * w, v_src, w, lane);
        if (lane == 0) {
          u[i] = a;
          usq += a * a;
        }
      }
      const A fu = sm::inv_norm(block_sum(usq, red), eps);  // its barriers publish the u writes
      for (int64_t i = tid; i < h; i += kThreads) u[i] *= fu;
      __syncthreads();
      // t = Wt u into v
      A tsq = 0;
      for (int64_t j0 = 0; j0 < w; j0 += cols) {
        const int64_t j = j0 + c;
        const A p = j < w ? column_dot<D>(W, u, h, w, j, r, groups) : A(0);
        if (groups == 1) {
          if (j < w) {
            v[j] = p;
            tsq += p * p;
          }
        } else {
          part[tid] = p;
          __syncthreads();
          if (r == 0 && j < w) {
            A t = 0;
            for (int k = 0; k < groups; ++k) t += part[k * cols + c];
            v[j] = t;
            tsq += t * t;
          }
          __syncthreads();  // part is rewritten by the next column block
        }
      }
      const A fv = sm::inv_norm(block_sum(tsq, red), eps);
      A tv = 0;
      for (int64_t j = tid; j < w; j += kThreads) {
        const A t = v[j];
        const A vj = t * fv;
        v[j] = vj;
        tv += t * vj;
      }
      if (it + 1 == n_iter) {
        const A s = block_sum(tv, red);
        if (tid == 0) sigma[l] = s;
      }
      __syncthreads();  // the next step reads all of v
      v_src = v;
    }
  }
}

template <Dtype D>
__global__ void __launch_bounds__(kThreads)
    outer_kernel(const MatrixMeta* __restrict__ meta, int64_t L, int64_t num_chunks,
                 const typename Traits<D>::A* __restrict__ grad_sigmas) {
  using Tr = Traits<D>;
  using T = typename Tr::T;
  using A = typename Tr::A;
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    // the chunk's matrix: the last with chunk_begin <= c (every matrix has at least one chunk)
    int64_t lo = 0, hi = L - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (meta[mid].chunk_begin <= c) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const MatrixMeta m = meta[lo];
    const int64_t w = m.w, numel = m.h * m.w;
    const int64_t e0 = (c - m.chunk_begin) * kElemsPerChunk;
    const int64_t e1 = e0 + kElemsPerChunk < numel ? e0 + kElemsPerChunk : numel;
    const A* u = static_cast<const A*>(m.u);
    const A* v = static_cast<const A*>(m.v);
    T* g = static_cast<T*>(m.grad);
    const A gs = grad_sigmas[lo];
    // (i, j) of element e, stepped by kThreads without a division per element
    const int64_t di = kThreads / w, dj = kThreads % w;
    int64_t e = e0 + threadIdx.x, i = e / w, j = e - i * w;
    for (; e < e1; e += kThreads) {
      Tr::store(g + e, sm::outer(gs * u[i], v[j]));
      i += di;
      j += dj;
      if (j >= w) {
        j -= w;
        ++i;
      }
    }
  }
}

unsigned grid_of(int64_t n) { return static_cast<unsigned>(n < static_cast<int64_t>(INT_MAX) ? n : INT_MAX); }

template <Dtype D>
cudaError_t power_typed(const MatrixMeta* meta, int64_t L, int64_t n_iter, double eps, void* sigma,
                        cudaStream_t stream) {
  using A = typename Traits<D>::A;
  power_kernel<D><<<grid_of(L), kThreads, 0, stream>>>(meta, L, n_iter, static_cast<A>(eps), static_cast<A*>(sigma));
  return cudaGetLastError();
}

template <Dtype D>
cudaError_t outer_typed(const MatrixMeta* meta, int64_t L, int64_t num_chunks, const void* grad_sigmas,
                        cudaStream_t stream) {
  using A = typename Traits<D>::A;
  outer_kernel<D><<<grid_of(num_chunks), kThreads, 0, stream>>>(meta, L, num_chunks,
                                                                static_cast<const A*>(grad_sigmas));
  return cudaGetLastError();
}

}  // namespace

cudaError_t power(Dtype dtype, const MatrixMeta* meta, int64_t L, int64_t n_iter, double eps, void* sigma,
                  cudaStream_t stream) {
  if (L <= 0 || n_iter <= 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32: return power_typed<Dtype::kFloat32>(meta, L, n_iter, eps, sigma, stream);
    case Dtype::kFloat64: return power_typed<Dtype::kFloat64>(meta, L, n_iter, eps, sigma, stream);
    case Dtype::kBFloat16: return power_typed<Dtype::kBFloat16>(meta, L, n_iter, eps, sigma, stream);
    case Dtype::kFloat16: return power_typed<Dtype::kFloat16>(meta, L, n_iter, eps, sigma, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t outer(Dtype dtype, const MatrixMeta* meta, int64_t L, int64_t num_chunks, const void* grad_sigmas,
                  cudaStream_t stream) {
  if (L <= 0 || num_chunks <= 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32: return outer_typed<Dtype::kFloat32>(meta, L, num_chunks, grad_sigmas, stream);
    case Dtype::kFloat64: return outer_typed<Dtype::kFloat64>(meta, L, num_chunks, grad_sigmas, stream);
    case Dtype::kBFloat16: return outer_typed<Dtype::kBFloat16>(meta, L, num_chunks, grad_sigmas, stream);
    case Dtype::kFloat16: return outer_typed<Dtype::kFloat16>(meta, L, num_chunks, grad_sigmas, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace spectral_cuda
}  // namespace regops
