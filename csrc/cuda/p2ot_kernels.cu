// CUDA kernels of P²OT's fused scaling pass (regops::p2ot_scaling_pass): one Sinkhorn iteration on the stabilized
// kernel K (N × Kc), r_i = Σ_j K_ij v_j, u_i = t_i / r_i, col_j = Σ_i K_ij u_i, for one read of K. The pass is
// memory-bound. CUDA headers only (no ATen), so this file compiles in seconds; the torch glue is p2ot.cpp.
//
//   pass_kernel    a block of 8 warps owns 8·rpw consecutive rows (rpw rows per warp, from the sizes only: about
//                  kTargetBlocks blocks, at most 32 rows per warp). Lane l of a warp holds the columns
//                  l + 32k (k < C, C = the power of two with 32·C ≥ Kc: one coalesced 128-byte access per k) of
//                  R rows at a time (R·C = 8 loads in flight per lane for narrow K) in registers: the row dot
//                  products against v (in shared memory) are reduced by xor shuffles (every lane ends with the
//                  same bits), u_i = t_i/r_i, and the lane's column accumulators take K_ij·u_i from the same
//                  registers: K is read once. Accumulation in the element type (over ≤ 32 rows per warp); the
//                  warps' accumulators are then added in warp order, in double, in shared memory, and the block's
//                  partial is written to workspace[block][Kc] (double).
//   finish_kernel  col_j = Σ_blocks workspace[b][j], 32 columns × 16 phases per block: phase p sums the blocks
//                  b ≡ p (mod 16) in order, then the 16 phase sums are added in phase order.
//   Kc > 1024      (a fallback, not P²OT's range): u_kernel computes u (a warp per row), then pass_kernel reads u
//                  instead of the dots, over column chunks of 1024 (grid axis y); K is read twice.
// Determinism: no atomics; every sum has one owner and an order fixed by the sizes, so results repeat bit for bit.
// Rows whose r_i is 0 give u_i = ±inf and NaN column sums (0·inf), as the formula says; masked rows (past N or past
// a warp's range) use u = 0 and masked columns K = 0, so they add exact zeros.
#include <cuda_runtime.h>

#include <cstdint>

#include "p2ot_kernels.h"

namespace regops {
namespace p2ot_cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxC = 32;                 // columns per lane: Kc ≤ 32·kMaxC = 1024 reads K once
constexpr int64_t kTargetBlocks = 1024;   // rows per warp grow until about this many blocks ...
constexpr int64_t kMaxRowsPerWarp = 32;   // ... up to this many (so a warp's fp32 sums stay short)
constexpr int kFinishPhases = 16;
constexpr unsigned kFull = 0xffffffffu;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The launch geometry; a function of (N, Kc) only.
struct Plan {
  int C = 1;          // columns per lane (a power of two ≤ kMaxC)
  int R = 8;          // rows in registers at once per warp
  int rpw = 8;        // rows per warp (a multiple of R)
  int64_t blocks = 0; // row blocks (kWarps·rpw rows each)
  int64_t chunks = 1; // column chunks of 32·C (> 1 only for Kc > 32·kMaxC)
};

Plan make_plan(int64_t N, int64_t Kc) {
  Plan p;
  const int64_t per_lane = ceil_div(Kc, 32);
  p.C = 1;
  while (p.C < kMaxC && p.C < per_lane) p.C *= 2;
  p.R = p.C >= 8 ? 1 : 8 / p.C;
  int64_t rpw = ceil_div(N, kWarps * kTargetBlocks);
  rpw = rpw < 1 ? 1 : (rpw > kMaxRowsPerWarp ? kMaxRowsPerWarp : rpw);
  rpw = ceil_div(rpw, p.R) * p.R;  // R divides 32: still ≤ 32
  p.rpw = static_cast<int>(rpw);
  p.blocks = ceil_div(N, kWarps * rpw);
  p.chunks = ceil_div(Kc, 32 * p.C);
  return p;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(kFull, x, off);
  return x;
}

// See the file comment. kHaveU: u was computed by u_kernel (Kc > 32·kMaxC); read it instead of the dots.
template <typename T, int C, int R, bool kHaveU>
__global__ void __launch_bounds__(kThreads) pass_kernel(const T* __restrict__ K, const T* __restrict__ v,
                                                        const T* __restrict__ t, T* __restrict__ u,
                                                        double* __restrict__ ws, int64_t N, int64_t Kc, int rpw) {
  constexpr int kCols = 32 * C;
  __shared__ T sv[kHaveU ? 1 : kCols];
  __shared__ double sacc[kCols];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * kCols;
  const int ncols = static_cast<int>(Kc - j0 < kCols ? Kc - j0 : kCols);
  if (!kHaveU) {
    for (int c = threadIdx.x; c < kCols; c += kThreads) sv[c] = c < ncols ? v[j0 + c] : T(0);
    __syncthreads();
  }
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * rpw;
  const int64_t row_end = row0 + rpw < N ? row0 + rpw : N;
  const T* Kl = K + j0 + lane;
  T acc[C];
#pragma unroll
  for (int k = 0; k < C; ++k) acc[k] = T(0);

  for (int64_t i = row0; i < row_end; i += R) {
    T x[R][C];
    T ur[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const bool ok = i + r < row_end;
      const T* row = Kl + (i + r) * Kc;
#pragma unroll
      for (int k = 0; k < C; ++k) x[r][k] = (ok && lane + 32 * k < ncols) ? __ldg(row + 32 * k) : T(0);
    }
    if (kHaveU) {
#pragma unroll
      for (int r = 0; r < R; ++r) ur[r] = i + r < row_end ? u[i + r] : T(0);
    } else {
      T d[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        d[r] = T(0);
#pragma unroll
        for (int k = 0; k < C; ++k) d[r] = fma(x[r][k], sv[lane + 32 * k], d[r]);
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
        for (int r = 0; r < R; ++r) d[r] += __shfl_xor_sync(kFull, d[r], off);
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const bool ok = i + r < row_end;
        ur[r] = ok ? __ldg(t + i + r) / d[r] : T(0);  // r_i = 0: ±inf, unguarded
        if (ok && lane == 0) u[i + r] = ur[r];
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int k = 0; k < C; ++k) acc[k] = fma(x[r][k], ur[r], acc[k]);
    }
  }

  // The warps' partials, added in warp order (in double).
  for (int w = 0; w < kWarps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int k = 0; k < C; ++k) {
        const int c = lane + 32 * k;
        sacc[c] = (w == 0 ? 0.0 : sacc[c]) + static_cast<double>(acc[k]);
      }
    }
    __syncthreads();
  }
  double* out = ws + static_cast<int64_t>(blockIdx.x) * Kc + j0;
  for (int c = threadIdx.x; c < ncols; c += kThreads) out[c] = sacc[c];
}

// u_i = t_i / Σ_j K_ij v_j, a warp per row (the Kc > 32·kMaxC path).
template <typename T>
__global__ void __launch_bounds__(kThreads) u_kernel(const T* __restrict__ K, const T* __restrict__ v,
                                                     const T* __restrict__ t, T* __restrict__ u, int64_t N,
                                                     int64_t Kc) {
  const int lane = threadIdx.x & 31;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (i >= N) return;  // a whole warp leaves together
  const T* row = K + i * Kc;
  T d = T(0);
#pragma unroll 8
  for (int64_t j = lane; j < Kc; j += 32) d = fma(__ldg(row + j), __ldg(v + j), d);
  d = warp_sum(d);
  if (lane == 0) u[i] = t[i] / d;
}

// col_j = Σ_b ws[b][j] in a fixed order (see the file comment). Block (32, kFinishPhases).
template <typename T>
__global__ void __launch_bounds__(32 * kFinishPhases) finish_kernel(const double* __restrict__ ws, T* __restrict__ col,
                                                                    int64_t blocks, int64_t Kc) {
  __shared__ double part[kFinishPhases][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * 32 + tx;
  double s = 0.0;
  if (j < Kc) {
#pragma unroll 8
    for (int64_t b = ty; b < blocks; b += kFinishPhases) s += ws[b * Kc + j];
  }
  part[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && j < Kc) {
    double total = part[0][tx];
#pragma unroll
    for (int p = 1; p < kFinishPhases; ++p) total += part[p][tx];
    col[j] = static_cast<T>(total);
  }
}

template <typename T, int C>
void launch_pass(const Plan& p, const T* K, const T* v, const T* t, T* u, double* ws, int64_t N, int64_t Kc,
                 cudaStream_t stream) {
  constexpr int R = C >= 8 ? 1 : 8 / C;
  pass_kernel<T, C, R, false><<<static_cast<unsigned>(p.blocks), kThreads, 0, stream>>>(K, v, t, u, ws, N, Kc, p.rpw);
}

template <typename T>
cudaError_t run(const T* K, const T* v, const T* t, T* u, T* col, int64_t N, int64_t Kc, double* ws,
                cudaStream_t stream) {
  const Plan p = make_plan(N, Kc);
  if (p.blocks > 0x7fffffff || p.chunks > 65535) return cudaErrorInvalidValue;
  if (p.chunks > 1) {
    u_kernel<T><<<static_cast<unsigned>(ceil_div(N, kWarps)), kThreads, 0, stream>>>(K, v, t, u, N, Kc);
    pass_kernel<T, kMaxC, 1, true>
        <<<dim3(static_cast<unsigned>(p.blocks), static_cast<unsigned>(p.chunks)), kThreads, 0, stream>>>(
            K, v, t, u, ws, N, Kc, p.rpw);
  } else {
    switch (p.C) {
      case 1: launch_pass<T, 1>(p, K, v, t, u, ws, N, Kc, stream); break;
      case 2: launch_pass<T, 2>(p, K, v, t, u, ws, N, Kc, stream); break;
      case 4: launch_pass<T, 4>(p, K, v, t, u, ws, N, Kc, stream); break;
      case 8: launch_pass<T, 8>(p, K, v, t, u, ws, N, Kc, stream); break;
      case 16: launch_pass<T, 16>(p, K, v, t, u, ws, N, Kc, stream); break;
      default: launch_pass<T, 32>(p, K, v, t, u, ws, N, Kc, stream); break;
    }
  }
  finish_kernel<T><<<static_cast<unsigned>(ceil_div(Kc, 32)), dim3(32, kFinishPhases), 0, stream>>>(ws, col, p.blocks,
                                                                                                   Kc);
  return cudaGetLastError();
}

}  // namespace

int64_t scaling_pass_workspace(int64_t N, int64_t Kc) {
  if (N <= 0 || Kc <= 0) return 0;
  return make_plan(N, Kc).blocks * Kc;
}

cudaError_t scaling_pass(Dtype dtype, const void* K, const void* v, const void* t, void* u, void* col, int64_t N,
                         int64_t Kc, double* workspace, cudaStream_t stream) {
  if (N <= 0 || Kc <= 0) return cudaGetLastError();
  if (dtype == Dtype::kFloat64) {
    return run(static_cast<const double*>(K), static_cast<const double*>(v), static_cast<const double*>(t),
               static_cast<double*>(u), static_cast<double*>(col), N, Kc, workspace, stream);
  }
  return run(static_cast<const float*>(K), static_cast<const float*>(v), static_cast<const float*>(t),
             static_cast<float*>(u), static_cast<float*>(col), N, Kc, workspace, stream);
}

}  // namespace p2ot_cuda
}  // namespace regops
