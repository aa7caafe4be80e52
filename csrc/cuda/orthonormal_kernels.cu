// CUDA kernels of the orthonormality penalty ‖X Xᵀ − I‖_F on canonical "rows" matrices X (L, p, q).
// CUDA headers only (no ATen), so this file compiles in seconds; the torch glue is orthonormal.cpp.
//
// Forward:  gram_residual_kernel  one 32×32 tile of R = X Xᵀ − I per block, lower-triangle tiles only,
//                                 each written twice (tile and mirror) so R comes out full and symmetric;
//           sumsq_kernel          one block per matrix: Σ R² over the lower triangle (weighted), values.
// Backward: sumsq_kernel          one block per matrix: coef = grad_coef(g, Σ R², squared) into a workspace;
//           grad_kernel           one 32×32 tile of coef · R X per block.
// All reductions run in a fixed order (no atomics), so results are deterministic.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "orthonormal_kernels.h"
#include "regops/orthonormal_math.h"

namespace regops {
namespace ortho_cuda {
namespace {

constexpr int kTile = 32;                       // edge of an output tile and of the k step
constexpr int kRowsPerPass = 8;                 // blockDim.y: a block is 32 × 8 threads
constexpr int kThreads = kTile * kRowsPerPass;  // 256
constexpr int kPerThread = kTile / kRowsPerPass;  // each thread owns 4 rows of one tile column
constexpr int64_t kMaxGridY = 65535;            // gridDim.y limit; larger batches loop over l

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

__device__ __forceinline__ void store(float* dst, float v) { *dst = v; }
__device__ __forceinline__ void store(double* dst, double v) { *dst = v; }
__device__ __forceinline__ void store(__nv_bfloat16* dst, float v) { *dst = __float2bfloat16(v); }
// A float64 grad_values may meet float accumulation (bf16/f32 mats): round once, here.
__device__ __forceinline__ float acc_cast(double v, float) { return static_cast<float>(v); }
__device__ __forceinline__ float acc_cast(float v, float) { return v; }
__device__ __forceinline__ double acc_cast(float v, double) { return v; }
__device__ __forceinline__ double acc_cast(double v, double) { return v; }

// Loads tile[r][c] = M[r0 + r, c0 + c] (zero outside nrows × ncols) from a strided matrix, converted to
// the acc type. Consecutive threads walk the index whose stride is the unit one (row_fast: the row index,
// as in a transposed "cols" view; else the column index), so global loads coalesce either way. The +1
// padding keeps both the row-wise and the column-wise shared stores free of bank conflicts.
template <typename T, typename A>
__device__ __forceinline__ void load_tile(A (*tile)[kTile + 1], const T* __restrict__ m, int64_t nrows,
                                          int64_t ncols, int64_t srow, int64_t scol, int64_t r0, int64_t c0,
                                          bool row_fast, int tid) {
#pragma unroll
  for (int it = 0; it < kTile * kTile / kThreads; ++it) {
    const int e = tid + it * kThreads;
    const int fast = e % kTile, slow = e / kTile;
    const int r = row_fast ? fast : slow;
    const int c = row_fast ? slow : fast;
    const int64_t gr = r0 + r, gc = c0 + c;
    A v = A(0);
    if (gr < nrows && gc < ncols) v = to_acc(m[gr * srow + gc * scol]);
    tile[r][c] = v;
  }
}

// Block-wide sum, fixed order: shuffle within warps, then warp 0 adds the warp sums. Valid in thread 0.
// Starts with a barrier so that a loop over matrices may call it again without racing on `warp_sums`.
template <typename A>
__device__ __forceinline__ A block_sum(A v) {
  __shared__ A warp_sums[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  __syncthreads();
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  A s = A(0);
  if (warp == 0) {
    s = lane < nwarps ? warp_sums[lane] : A(0);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) s += __shfl_down_sync(0xffffffffu, s, off);
  }
  return s;
}

// Σ R² of one contiguous symmetric p×p residual, read from the lower triangle only (off-diagonal
// entries weighted 2). Warps take rows round-robin and lanes walk a row, so reads coalesce.
// Forward and backward both use it, so the backward's ‖R‖ is bit-identical to the forward's.
template <typename A>
__device__ A lower_sumsq(const A* __restrict__ R, int64_t p) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  A s = A(0);
  for (int64_t i = warp; i < p; i += nwarps) {
    const A* row = R + i * p;
    for (int64_t j = lane; j <= i; j += 32) {
      const A r = row[j];
      s += ortho::lower_weight<A>(i, j) * r * r;
    }
  }
  return block_sum(s);
}

// Lower-triangle tile t (row-major over ti >= tj) -> (ti, tj). The float estimate is corrected exactly.
__device__ __forceinline__ void decode_lower_tile(int64_t t, int64_t& ti, int64_t& tj) {
  ti = static_cast<int64_t>((sqrt(8.0 * static_cast<double>(t) + 1.0) - 1.0) * 0.5);
  while (ti > 0 && ti * (ti + 1) / 2 > t) --ti;
  while ((ti + 1) * (ti + 2) / 2 <= t) ++ti;
  tj = t - ti * (ti + 1) / 2;
}

// grid (lower-triangle tiles, min(L, 65535)), block (32, 8). G tile = X[rows i0..] · X[rows j0..]ᵀ over k.
// On a diagonal tile both operands are the same rows, so only one tile is loaded; the products
// a_i·a_j and a_j·a_i are then bitwise equal, so the diagonal tile is exactly symmetric too.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gram_residual_kernel(const T* __restrict__ X, int64_t L, int64_t p, int64_t q, int64_t sl, int64_t sp,
                         int64_t sq, bool row_fast, typename AccOf<T>::type* __restrict__ R) {
  using A = typename AccOf<T>::type;
  __shared__ A As[kTile][kTile + 1];
  __shared__ A Bs[kTile][kTile + 1];
  int64_t ti, tj;
  decode_lower_tile(blockIdx.x, ti, tj);
  const bool diag = ti == tj;
  const int64_t i0 = ti * kTile, j0 = tj * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTile + tx;
  A(*Bt)[kTile + 1] = diag ? As : Bs;

  for (int64_t l = blockIdx.y; l < L; l += gridDim.y) {
    const T* Xl = X + l * sl;
    A acc[kPerThread];
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) acc[m] = A(0);

    for (int64_t k0 = 0; k0 < q; k0 += kTile) {
      load_tile(As, Xl, p, q, sp, sq, i0, k0, row_fast, tid);
      if (!diag) load_tile(Bs, Xl, p, q, sp, sq, j0, k0, row_fast, tid);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTile; ++kk) {
        const A b = Bt[tx][kk];  // conflict-free thanks to the padding
#pragma unroll
        for (int m = 0; m < kPerThread; ++m) acc[m] += As[ty + m * kRowsPerPass][kk] * b;  // broadcast
      }
      __syncthreads();
    }

    A* Rl = R + l * p * p;
    // Tile (i, j): threads along j, coalesced.
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int64_t i = i0 + ty + m * kRowsPerPass, j = j0 + tx;
      if (i < p && j < p) Rl[i * p + j] = ortho::residual(acc[m], i, j);
    }
    if (!diag) {  // block-uniform branch, so the barriers inside are safe
      // Mirror (j, i): stage the tile in shared memory and write it transposed, again threads along
      // the contiguous index. As is free: the k loop ended with a barrier.
#pragma unroll
      for (int m = 0; m < kPerThread; ++m) As[ty + m * kRowsPerPass][tx] = acc[m];
      __syncthreads();
#pragma unroll
      for (int m = 0; m < kPerThread; ++m) {
        const int r = ty + m * kRowsPerPass;
        const int64_t j = j0 + r, i = i0 + tx;
        if (i < p && j < p) Rl[j * p + i] = ortho::residual(As[tx][r], j, i);
      }
      __syncthreads();  // before the next matrix reloads As
    }
  }
}

// Forward values: one block per matrix (looping when L exceeds the grid).
template <typename T>
__global__ void values_kernel(const typename AccOf<T>::type* __restrict__ R, int64_t L, int64_t p, bool squared,
                              T* __restrict__ values) {
  using A = typename AccOf<T>::type;
  for (int64_t l = blockIdx.x; l < L; l += gridDim.x) {
    const A s = lower_sumsq(R + l * p * p, p);
    if (threadIdx.x == 0) store(values + l, ortho::value_from_sumsq(s, squared));
  }
}

// Backward coefficient per matrix. The squared penalty needs no norm, so its reduction is skipped.
template <typename A, typename G>
__global__ void coef_kernel(const G* __restrict__ grad_values, int64_t gv_stride, const A* __restrict__ R,
                            int64_t L, int64_t p, bool squared, A* __restrict__ coef) {
  for (int64_t l = blockIdx.x; l < L; l += gridDim.x) {
    const A s = squared ? A(0) : lower_sumsq(R + l * p * p, p);  // `squared` is grid-uniform
    if (threadIdx.x == 0) coef[l] = ortho::grad_coef(acc_cast(to_acc(grad_values[l * gv_stride]), A(0)), s, squared);
  }
}

// grid (p-tiles × q-tiles, min(L, 65535)), block (32, 8). Out tile = coef · R[rows i0..] · X[:, cols j0..].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    grad_kernel(const typename AccOf<T>::type* __restrict__ R, const typename AccOf<T>::type* __restrict__ coef,
                const T* __restrict__ X, int64_t L, int64_t p, int64_t q, int64_t sl, int64_t sp, int64_t sq,
                bool x_row_fast, T* __restrict__ out, int64_t gl, int64_t gp, int64_t gq, bool out_row_fast,
                int64_t tiles_q) {
  using A = typename AccOf<T>::type;
  __shared__ A Rs[kTile][kTile + 1];
  __shared__ A Xs[kTile][kTile + 1];
  const int64_t ti = blockIdx.x / tiles_q, tj = blockIdx.x % tiles_q;
  const int64_t i0 = ti * kTile, j0 = tj * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTile + tx;

  for (int64_t l = blockIdx.y; l < L; l += gridDim.y) {
    const A* Rl = R + l * p * p;
    const T* Xl = X + l * sl;
    A acc[kPerThread];
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) acc[m] = A(0);

    for (int64_t k0 = 0; k0 < p; k0 += kTile) {
      load_tile(Rs, Rl, p, p, p, int64_t(1), i0, k0, /*row_fast=*/false, tid);  // R rows are contiguous
      load_tile(Xs, Xl, p, q, sp, sq, k0, j0, x_row_fast, tid);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTile; ++kk) {
        const A b = Xs[kk][tx];
#pragma unroll
        for (int m = 0; m < kPerThread; ++m) acc[m] += Rs[ty + m * kRowsPerPass][kk] * b;
      }
      __syncthreads();
    }

    const A c = coef[l];
    T* Ol = out + l * gl;
    if (!out_row_fast) {  // output columns contiguous: threads along j
#pragma unroll
      for (int m = 0; m < kPerThread; ++m) {
        const int64_t i = i0 + ty + m * kRowsPerPass, j = j0 + tx;
        if (i < p && j < q) store(Ol + i * gp + j * gq, c * acc[m]);
      }
    } else {  // output rows contiguous (a "cols" view): stage, then threads along i
#pragma unroll
      for (int m = 0; m < kPerThread; ++m) Rs[ty + m * kRowsPerPass][tx] = acc[m];
      __syncthreads();
#pragma unroll
      for (int m = 0; m < kPerThread; ++m) {
        const int r = ty + m * kRowsPerPass;
        const int64_t i = i0 + tx, j = j0 + r;
        if (i < p && j < q) store(Ol + i * gp + j * gq, c * Rs[tx][r]);
      }
      __syncthreads();
    }
  }
}

int64_t abs64(int64_t v) { return v < 0 ? -v : v; }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Threads of a one-block-per-matrix reduction: enough warps for the rows, at most 1024.
int reduce_threads(int64_t p) {
  if (p <= 32) return 32;
  if (p <= 128) return 128;
  if (p <= 512) return 256;
  return 1024;
}

unsigned int reduce_blocks(int64_t L) { return static_cast<unsigned int>(L < (1 << 30) ? L : (1 << 30)); }

template <typename T>
cudaError_t fwd_impl(const T* X, int64_t L, int64_t p, int64_t q, int64_t sl, int64_t sp, int64_t sq, bool squared,
                     T* values, typename AccOf<T>::type* R, cudaStream_t stream) {
  if (L <= 0) return cudaSuccess;
  if (p > 0) {
    const int64_t tiles = ceil_div(p, kTile), lower = tiles * (tiles + 1) / 2;
    if (lower > INT_MAX) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned int>(lower), static_cast<unsigned int>(L < kMaxGridY ? L : kMaxGridY));
    const bool row_fast = abs64(sp) < abs64(sq);
    gram_residual_kernel<T><<<grid, dim3(kTile, kRowsPerPass), 0, stream>>>(X, L, p, q, sl, sp, sq, row_fast, R);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  // p == 0 still needs values (= 0); the reduction then reads nothing.
  values_kernel<T><<<reduce_blocks(L), reduce_threads(p), 0, stream>>>(R, L, p, squared, values);
  return cudaGetLastError();
}

template <typename A, typename G>
cudaError_t coef_impl(const void* gv, int64_t gv_stride, const A* R, int64_t L, int64_t p, bool squared, A* coef,
                      cudaStream_t stream) {
  coef_kernel<A, G><<<reduce_blocks(L), squared ? 32 : reduce_threads(p), 0, stream>>>(
      static_cast<const G*>(gv), gv_stride, R, L, p, squared, coef);
  return cudaGetLastError();
}

template <typename T>
cudaError_t bwd_impl(Dtype gv_dtype, const void* gv, int64_t gv_stride, const T* X, int64_t L, int64_t p, int64_t q,
                     int64_t sl, int64_t sp, int64_t sq, const typename AccOf<T>::type* R, bool squared,
                     typename AccOf<T>::type* coef, T* out, int64_t gl, int64_t gp, int64_t gq, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  if (L <= 0 || p <= 0 || q <= 0) return cudaSuccess;  // empty gradient
  cudaError_t err;
  switch (gv_dtype) {
    case Dtype::kFloat32: err = coef_impl<A, float>(gv, gv_stride, R, L, p, squared, coef, stream); break;
    case Dtype::kFloat64: err = coef_impl<A, double>(gv, gv_stride, R, L, p, squared, coef, stream); break;
    case Dtype::kBFloat16: err = coef_impl<A, __nv_bfloat16>(gv, gv_stride, R, L, p, squared, coef, stream); break;
    default: return cudaErrorInvalidValue;
  }
  if (err != cudaSuccess) return err;
  const int64_t tiles_p = ceil_div(p, kTile), tiles_q = ceil_div(q, kTile);
  if (tiles_p * tiles_q > INT_MAX) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned int>(tiles_p * tiles_q),
                  static_cast<unsigned int>(L < kMaxGridY ? L : kMaxGridY));
  grad_kernel<T><<<grid, dim3(kTile, kRowsPerPass), 0, stream>>>(R, coef, X, L, p, q, sl, sp, sq,
                                                                 abs64(sp) < abs64(sq), out, gl, gp, gq,
                                                                 abs64(gp) < abs64(gq), tiles_q);
  return cudaGetLastError();
}

}  // namespace

cudaError_t orthonormal_penalty_fwd(Dtype dtype, const void* mats, int64_t L, int64_t p, int64_t q, int64_t stride_l,
                                    int64_t stride_p, int64_t stride_q, bool squared, void* values, void* residual,
                                    cudaStream_t stream) {
  switch (dtype) {
    case Dtype::kFloat32:
      return fwd_impl(static_cast<const float*>(mats), L, p, q, stride_l, stride_p, stride_q, squared,
                      static_cast<float*>(values), static_cast<float*>(residual), stream);
    case Dtype::kFloat64:
      return fwd_impl(static_cast<const double*>(mats), L, p, q, stride_l, stride_p, stride_q, squared,
                      static_cast<double*>(values), static_cast<double*>(residual), stream);
    case Dtype::kBFloat16:
      return fwd_impl(static_cast<const __nv_bfloat16*>(mats), L, p, q, stride_l, stride_p, stride_q, squared,
                      static_cast<__nv_bfloat16*>(values), static_cast<float*>(residual), stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t orthonormal_penalty_bwd(Dtype dtype, Dtype grad_values_dtype, const void* grad_values,
                                    int64_t grad_values_stride, const void* mats, int64_t L, int64_t p, int64_t q,
                                    int64_t stride_l, int64_t stride_p, int64_t stride_q, const void* residual,
                                    bool squared, void* workspace, void* grad, int64_t grad_stride_l,
                                    int64_t grad_stride_p, int64_t grad_stride_q, cudaStream_t stream) {
  switch (dtype) {
    case Dtype::kFloat32:
      return bwd_impl(grad_values_dtype, grad_values, grad_values_stride, static_cast<const float*>(mats), L, p, q,
                      stride_l, stride_p, stride_q, static_cast<const float*>(residual), squared,
                      static_cast<float*>(workspace), static_cast<float*>(grad), grad_stride_l, grad_stride_p,
                      grad_stride_q, stream);
    case Dtype::kFloat64:
      return bwd_impl(grad_values_dtype, grad_values, grad_values_stride, static_cast<const double*>(mats), L, p, q,
                      stride_l, stride_p, stride_q, static_cast<const double*>(residual), squared,
                      static_cast<double*>(workspace), static_cast<double*>(grad), grad_stride_l, grad_stride_p,
                      grad_stride_q, stream);
    case Dtype::kBFloat16:
      return bwd_impl(grad_values_dtype, grad_values, grad_values_stride, static_cast<const __nv_bfloat16*>(mats), L,
                      p, q, stride_l, stride_p, stride_q, static_cast<const float*>(residual), squared,
                      static_cast<float*>(workspace), static_cast<__nv_bfloat16*>(grad), grad_stride_l,
                      grad_stride_p, grad_stride_q, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace ortho_cuda
}  // namespace regops
