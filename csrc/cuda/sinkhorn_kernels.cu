// CUDA kernels of the streamed log-domain Sinkhorn (regops.ot), FlashAttention-style: the cost c(x_i, y_j) is
// recomputed tile by tile from the point clouds and never stored, so the memory is O((N + M)·d). The per-pair
// math (costs, gradient coefficients, the online log-sum-exp, the potential) is regops/sinkhorn_math.h, shared
// with the CPU kernel. CUDA headers only (no ATen), so this file compiles in seconds; the torch glue is
// sinkhorn.cpp.
//
// Tiles: a block of 16×16 = 256 threads owns rows [i0, i0 + 64) of x of one problem b and walks the columns
// (rows of y) in tiles of 64. Thread (tx, ty) holds the 4×4 entries (ty + 16a, tx + 16b) of the 64×64 cost tile
// in registers, accumulated over d in steps of kBK (32 float, 16 double) from shared-memory tiles of x and y
// stored [row][k] (a 144-byte row stride: the 16 rows tx + 16b read by a half-warp hit distinct banks, and the
// 16-byte vector loads along k stay aligned); a short last step (d % kBK, and every step for d < kBK) loops only
// over its own width rounded up to the vector (zero padding). sqeuclidean and cosine accumulate ⟨x, y⟩ and use
// the row norms (computed once per launch into the workspace); euclidean accumulates Σ (x − y)² from
// differences, so coincident points give exactly 0.
//
//   update_kernel  per entry v = (pot_j − c_ij)/eps; each thread folds its 4 columns of each of its 4 rows into
//                  one running Lse (max, Σ e^{v − max}) per row; at the end the 16 threads of a row (one
//                  half-warp) merge theirs with xor shuffles in a fixed pattern. With one column split the row
//                  is finished in place (potential_from_lse); with several (small B·N: flash-decoding), each
//                  split writes its (max, sum) to the workspace and update_finish merges the splits in split
//                  order. Splits depend on the sizes only.
//   plan_kernel    (cost_grad, apply) per entry P_ij = exp((f_i + g_j − c_ij)/eps) and Q_ij = P_ij·W_ij (grad,
//                  grad_coefs) or P_ij (apply), stored in shared memory over the (then free) x/y tiles; then
//                  out_tile += Q·V_tile with V = y (grad) or v (apply), output columns in chunks of kDC (64 float,
//                  32 double) held in registers (thread: rows ty + 16a, columns 4tx.. or 2tx..). Wider outputs
//                  take several passes over the columns (the cost tile is recomputed per pass). grad adds
//                  x_i·Σ_j P_ij A_ij (a per-row scalar reduced over the half-warp). Splits as above, summed in
//                  split order by plan_finish.
//   dense kernels  update_dense on a given C: transpose=false, one warp (or one block, for few rows) per row of
//                  C; transpose=true, threads over 32 columns × 8 row phases (coalesced row reads), the 8 partial
//                  Lse of a column merged in order through shared memory.
// Determinism: every sum has one owner thread and a fixed order (no atomics), so results repeat bit for bit.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "regops/sinkhorn_math.h"
#include "sinkhorn_kernels.h"

namespace regops {
namespace sinkhorn_cuda {
namespace {

namespace sm = regops::sinkhorn;

constexpr int kSide = 16;                 // the block is kSide × kSide threads
constexpr int kThreads = kSide * kSide;   // 256
constexpr int kTM = 4;                    // rows of the tile per thread
constexpr int kTN = 4;                    // columns of the tile per thread
constexpr int kBM = kSide * kTM;          // 64 rows of x per block
constexpr int kBN = kSide * kTN;          // 64 rows of y per tile
constexpr int kColData = 3;               // per tile column: pot (or g), ‖y‖², ‖y‖
constexpr int64_t kTargetBlocks = 512;    // split the columns until about this many blocks
constexpr int64_t kMinTilesPerSplit = 4;  // ... but keep at least this many column tiles per split
constexpr int64_t kMaxSplits = 256;

template <typename T>
struct Cfg {
  static constexpr int kVec = 16 / sizeof(T);       // elements per 16-byte vector load
  static constexpr int kBK = sizeof(T) == 8 ? 16 : 32;  // d step of the cost tile
  static constexpr int kLdK = kBK + kVec;            // row stride of the x/y tiles (144 bytes)
  static constexpr int kLdQ = kBN + kVec;            // row stride of the Q tile
  static constexpr int kDC = sizeof(T) == 8 ? 32 : 64;  // output columns per pass of plan_kernel
  static constexpr int kCPT = kDC / kSide;           // ... per thread
  static constexpr int kLdV = kDC + kVec;            // row stride of the V tile
  static constexpr int kXY = 2 * kBM * kLdK;         // x tile + y tile
  static constexpr int kQ = kBM * kLdQ;
  static constexpr int kRegionA = kXY > kQ ? kXY : kQ;  // plan_kernel: Q aliases the x/y tiles
  static constexpr size_t kUpdateSmem = (kXY + kColData * kBN) * sizeof(T);
  static constexpr size_t kPlanSmem = (kRegionA + kBN * kLdV + kColData * kBN) * sizeof(T);
  static_assert(kBK % kVec == 0 && kCPT % kVec == 0 && kBN % kVec == 0, "vector loads");
  static_assert(kBM * kBK % kThreads == 0 && kBN * kDC % kThreads == 0, "tile loads");
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ void ld16(const float* p, float* v) {
  const float4 t = *reinterpret_cast<const float4*>(p);
  v[0] = t.x;
  v[1] = t.y;
  v[2] = t.z;
  v[3] = t.w;
}
__device__ __forceinline__ void ld16(const double* p, double* v) {
  const double2 t = *reinterpret_cast<const double2*>(p);
  v[0] = t.x;
  v[1] = t.y;
}
// n consecutive elements from a 16-byte aligned shared-memory address.
template <int n, typename T>
__device__ __forceinline__ void ldv(const T* p, T* v) {
  constexpr int per = 16 / sizeof(T);
#pragma unroll
  for (int q = 0; q < n / per; ++q) ld16(p + q * per, v + q * per);
}

// Folds a block of values into a running Lse: the max is raised once for the block, then one exp per value.
// (−inf values add 0; NaN propagates through the sum.)
template <typename T, int n>
__device__ __forceinline__ void fold(sm::Lse<T>& l, const T (&v)[n]) {
  T bm = v[0];
#pragma unroll
  for (int u = 1; u < n; ++u) bm = v[u] > bm ? v[u] : bm;
  if (bm > l.m) {
    l.s *= sm::exp_(l.m - bm);  // l.m = −inf: l.s is 0 and stays 0
    l.m = bm;
  }
  if (l.m == -INFINITY) return;
#pragma unroll
  for (int u = 0; u < n; ++u) l.s += sm::exp_(v[u] - l.m);
}

// Merges the Lse of the 16 threads of a half-warp (lanes differing in the low 4 bits), fixed xor pattern.
template <typename T>
__device__ __forceinline__ void merge_half_warp(sm::Lse<T>& l) {
#pragma unroll
  for (int off = kSide / 2; off >= 1; off >>= 1) {
    const T om = __shfl_xor_sync(0xffffffffu, l.m, off);
    const T os = __shfl_xor_sync(0xffffffffu, l.s, off);
    l.merge(om, os);
  }
}

// Sum over the 16 threads of a half-warp; every lane gets the same bits (the butterfly adds commute).
template <typename T>
__device__ __forceinline__ T sum_half_warp(T v) {
#pragma unroll
  for (int off = kSide / 2; off >= 1; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Rows [r0, r0 + kBM) of a (rows, d) matrix, columns [k0, k0 + kc), into S[row][k] for k below kc rounded up to
// the vector width (zero padding; padded rows are zero too).
template <typename T>
__device__ __forceinline__ void load_rows(T* S, const T* __restrict__ src, int64_t rows, int d, int64_t r0, int k0,
                                          int kc, int tid) {
  constexpr int BK = Cfg<T>::kBK, LD = Cfg<T>::kLdK, V = Cfg<T>::kVec;
  if (kc == BK) {
#pragma unroll
    for (int r = 0; r < kBM * BK / kThreads; ++r) {
      const int e = tid + r * kThreads, row = e / BK, k = e % BK;  // a warp reads contiguous k: coalesced
      S[row * LD + k] = r0 + row < rows ? src[(r0 + row) * d + k0 + k] : T(0);
    }
  } else {
    const int kcp = (kc + V - 1) / V * V;
    for (int e = tid; e < kBM * kcp; e += kThreads) {
      const int row = e / kcp, k = e - row * kcp;
      S[row * LD + k] = (r0 + row < rows && k < kc) ? src[(r0 + row) * d + k0 + k] : T(0);
    }
  }
}

// One vector step of k (kVec values) of the cost tile.
template <typename T, bool kDiff>
__device__ __forceinline__ void micro_step(T (&acc)[kTM][kTN], const T* Xs, const T* Ys, int k, int tx, int ty) {
  constexpr int LD = Cfg<T>::kLdK, V = Cfg<T>::kVec;
  T xa[kTM][V], yb[kTN][V];
#pragma unroll
  for (int a = 0; a < kTM; ++a) ldv<V>(Xs + (ty + kSide * a) * LD + k, xa[a]);
#pragma unroll
  for (int b = 0; b < kTN; ++b) ldv<V>(Ys + (tx + kSide * b) * LD + k, yb[b]);
#pragma unroll
  for (int u = 0; u < V; ++u)
#pragma unroll
    for (int a = 0; a < kTM; ++a)
#pragma unroll
      for (int b = 0; b < kTN; ++b) {
        if (kDiff) {
          const T t = xa[a][u] - yb[b][u];
          acc[a][b] = fma(t, t, acc[a][b]);
        } else {
          acc[a][b] = fma(xa[a][u], yb[b][u], acc[a][b]);
        }
      }
}

// acc = ⟨x_i, y_j⟩ (or ‖x_i − y_j‖² with kDiff) for the thread's entries of the tile (i0, j0). Ends with a
// barrier when d > 0, so the x/y tiles may be overwritten afterwards.
template <typename T, bool kDiff>
__device__ __forceinline__ void cost_tile(T (&acc)[kTM][kTN], T* Xs, T* Ys, const T* __restrict__ xb,
                                          const T* __restrict__ yb, int64_t N, int64_t M, int d, int64_t i0,
                                          int64_t j0, int tx, int ty, int tid) {
  constexpr int BK = Cfg<T>::kBK, V = Cfg<T>::kVec;
#pragma unroll
  for (int a = 0; a < kTM; ++a)
#pragma unroll
    for (int b = 0; b < kTN; ++b) acc[a][b] = T(0);
  for (int k0 = 0; k0 < d; k0 += BK) {
    const int kc = d - k0 < BK ? d - k0 : BK;
    load_rows(Xs, xb, N, d, i0, k0, kc, tid);
    load_rows(Ys, yb, M, d, j0, k0, kc, tid);
    __syncthreads();
    // Not unrolled: one step has 16·kVec independent FMAs, enough to hide the shared-memory latency, and the
    // code (and nvcc's time) stays small.
#pragma unroll 1
    for (int k = 0; k < kc; k += V) micro_step<T, kDiff>(acc, Xs, Ys, k, tx, ty);
    __syncthreads();
  }
}

// The cost of an entry from its accumulator: the squared distance (kDiff, the euclidean cost) or the dot product.
template <typename T, bool kDiff>
__device__ __forceinline__ T entry_cost(int cost, T acc, T sx, T sy, T nx, T ny) {
  if (kDiff) return sm::cost_from_sqdist(cost, acc);
  return sm::cost_from_dot(cost, acc, sx, sy, nx, ny);
}

// Splits of the columns: enough blocks to fill the device, decided by the sizes alone.
struct Split {
  int64_t splits, tiles_per_split;
};

Split col_split(int64_t blocks, int64_t col_tiles) {
  if (col_tiles <= 1 || blocks <= 0 || blocks >= kTargetBlocks) return {1, col_tiles < 1 ? 1 : col_tiles};
  int64_t s = ceil_div(kTargetBlocks, blocks);
  const int64_t cap = ceil_div(col_tiles, kMinTilesPerSplit);
  if (s > cap) s = cap;
  if (s > kMaxSplits) s = kMaxSplits;
  if (s < 1) s = 1;
  const int64_t tps = ceil_div(col_tiles, s);
  return {ceil_div(col_tiles, tps), tps};  // no empty split
}

// ---------------------------------------------------------------------------------------------------------------
// Row norms ‖row‖² (one warp per row).

template <typename T>
__global__ void sqnorm_kernel(const T* __restrict__ x, int64_t rows, int d, T* __restrict__ out) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // uniform per warp
  T s = T(0);
  for (int k = lane; k < d; k += 32) {
    const T v = x[row * d + k];
    s = fma(v, v, s);
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) out[row] = s;
}

template <typename T>
cudaError_t launch_sqnorm(const T* x, int64_t rows, int d, T* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  constexpr int kWarps = 8;
  const int64_t blocks = ceil_div(rows, kWarps);
  if (blocks > INT_MAX) return cudaErrorInvalidValue;
  sqnorm_kernel<T><<<static_cast<unsigned int>(blocks), kWarps * 32, 0, stream>>>(x, rows, d, out);
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// sinkhorn_update

template <typename T>
struct UpdArgs {
  const T* __restrict__ x;
  const T* __restrict__ y;
  const T* __restrict__ pot;
  const T* __restrict__ log_w;
  const T* __restrict__ tau;
  const T* __restrict__ eps;
  const T* __restrict__ sx;  // (B, N) ‖x_i‖² (unused by the euclidean cost)
  const T* __restrict__ sy;  // (B, M)
  T* __restrict__ out;
  T* __restrict__ part_m;  // (splits, B, N) when split
  T* __restrict__ part_s;
  int64_t B, N, M;
  int d, cost;
  int64_t row_blocks, col_tiles, tiles_per_split;
  int splits;
};

// grid (B·row_blocks, splits), 256 threads. kDiff: the euclidean cost (from differences); else sqeuclidean or
// cosine (from the dot product), p.cost says which.
template <typename T, bool kDiff>
__global__ void __launch_bounds__(kThreads, 2) update_kernel(const UpdArgs<T> p) {
  using C = Cfg<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Xs = reinterpret_cast<T*>(smem_raw);
  T* Ys = Xs + kBM * C::kLdK;
  T* colP = Ys + kBM * C::kLdK;
  T* colS = colP + kBN;
  T* colN = colS + kBN;
  const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
  const int64_t b = blockIdx.x / p.row_blocks;
  const int64_t i0 = (blockIdx.x % p.row_blocks) * kBM;
  const int split = blockIdx.y;
  const T eps = p.eps[b], inv_eps = T(1) / eps;
  const T* __restrict__ xb = p.x + b * p.N * p.d;
  const T* __restrict__ yb = p.y + b * p.M * p.d;
  const T* __restrict__ pot = p.pot + b * p.M;
  T rs[kTM], rn[kTM];
#pragma unroll
  for (int a = 0; a < kTM; ++a) {
    const int64_t i = i0 + ty + kSide * a;
    rs[a] = (!kDiff && i < p.N) ? p.sx[b * p.N + i] : T(0);
    rn[a] = sm::sqrt_(rs[a]);
  }
  sm::Lse<T> lse[kTM];
  const int64_t t_begin = split * p.tiles_per_split;
  const int64_t t_end = t_begin + p.tiles_per_split < p.col_tiles ? t_begin + p.tiles_per_split : p.col_tiles;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t j0 = t * kBN;
    __syncthreads();  // the previous tile's column data is read no more
    if (tid < kBN) {
      const int64_t j = j0 + tid;
      const bool ok = j < p.M;
      colP[tid] = ok ? pot[j] : T(-INFINITY);  // padding columns add nothing
      if (!kDiff) {
        const T s = ok ? p.sy[b * p.M + j] : T(0);
        colS[tid] = s;
        colN[tid] = sm::sqrt_(s);
      }
    }
    __syncthreads();
    T acc[kTM][kTN];
    cost_tile<T, kDiff>(acc, Xs, Ys, xb, yb, p.N, p.M, p.d, i0, j0, tx, ty, tid);
#pragma unroll
    for (int a = 0; a < kTM; ++a) {
      T v[kTN];
#pragma unroll
      for (int bb = 0; bb < kTN; ++bb) {
        const int j = tx + kSide * bb;
        const T c = entry_cost<T, kDiff>(p.cost, acc[a][bb], rs[a], colS[j], rn[a], colN[j]);
        v[bb] = (colP[j] - c) * inv_eps;  // pot_j = −inf (also the padding): −inf
      }
      fold(lse[a], v);
    }
  }
  // All 256 threads are here: the half-warp of a row merges its 16 partial Lse.
#pragma unroll
  for (int a = 0; a < kTM; ++a) merge_half_warp(lse[a]);
  if (tx != 0) return;
#pragma unroll
  for (int a = 0; a < kTM; ++a) {
    const int64_t i = i0 + ty + kSide * a;
    if (i >= p.N) continue;
    const int64_t o = b * p.N + i;
    if (p.splits == 1) {
      p.out[o] = sm::potential_from_lse(p.tau[o], eps, p.log_w[o], lse[a].value());
    } else {
      const int64_t w = static_cast<int64_t>(split) * p.B * p.N + o;
      p.part_m[w] = lse[a].m;
      p.part_s[w] = lse[a].s;
    }
  }
}

// One thread per row: merges its splits in split order, then finishes the row.
template <typename T>
__global__ void update_finish(const T* __restrict__ part_m, const T* __restrict__ part_s, int splits, int64_t B,
                              int64_t N, const T* __restrict__ log_w, const T* __restrict__ tau,
                              const T* __restrict__ eps, T* __restrict__ out) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= B * N) return;
  sm::Lse<T> l;
  for (int s = 0; s < splits; ++s) l.merge(part_m[s * B * N + o], part_s[s * B * N + o]);
  out[o] = sm::potential_from_lse(tau[o], eps[o / N], log_w[o], l.value());
}

template <typename T, bool kDiff>
cudaError_t launch_update(const UpdArgs<T>& p, const Split& sp, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(p.B * p.row_blocks), static_cast<unsigned int>(sp.splits));
  constexpr size_t smem = Cfg<T>::kUpdateSmem;
  static_assert(smem <= 48 * 1024, "update_kernel: static limit of dynamic shared memory");
  update_kernel<T, kDiff><<<grid, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t update_impl(const Clouds& c, const T* pot, const T* log_w, const T* tau, T* out, T* ws,
                        cudaStream_t stream) {
  UpdArgs<T> p{};
  p.x = static_cast<const T*>(c.x);
  p.y = static_cast<const T*>(c.y);
  p.pot = pot;
  p.log_w = log_w;
  p.tau = tau;
  p.eps = static_cast<const T*>(c.eps);
  p.B = c.B;
  p.N = c.N;
  p.M = c.M;
  p.d = static_cast<int>(c.d);
  p.cost = c.cost;
  p.out = out;
  p.row_blocks = ceil_div(c.N, kBM);
  p.col_tiles = ceil_div(c.M, kBN);
  const Split sp = col_split(c.B * p.row_blocks, p.col_tiles);
  p.tiles_per_split = sp.tiles_per_split;
  p.splits = static_cast<int>(sp.splits);
  if (c.B * p.row_blocks > INT_MAX) return cudaErrorInvalidValue;
  T* sx = ws;
  T* sy = ws + c.B * c.N;
  p.sx = sx;
  p.sy = sy;
  p.part_m = sy + c.B * c.M;
  p.part_s = p.part_m + sp.splits * c.B * c.N;
  cudaError_t err = cudaSuccess;
  if (c.cost != sm::kEuclidean) {
    if ((err = launch_sqnorm(p.x, c.B * c.N, p.d, sx, stream)) != cudaSuccess) return err;
    if ((err = launch_sqnorm(p.y, c.B * c.M, p.d, sy, stream)) != cudaSuccess) return err;
  }
  err = c.cost == sm::kEuclidean ? launch_update<T, true>(p, sp, stream) : launch_update<T, false>(p, sp, stream);
  if (err != cudaSuccess || p.splits == 1) return err;
  constexpr int kFinishThreads = 256;
  update_finish<T><<<static_cast<unsigned int>(ceil_div(c.B * c.N, kFinishThreads)), kFinishThreads, 0, stream>>>(
      p.part_m, p.part_s, p.splits, c.B, c.N, log_w, tau, p.eps, out);
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// sinkhorn_cost_grad, sinkhorn_apply

template <typename T>
struct PlanArgs {
  const T* __restrict__ x;
  const T* __restrict__ y;
  const T* __restrict__ f;
  const T* __restrict__ g;
  const T* __restrict__ v;  // (B, M, K): y for the gradient
  const T* __restrict__ eps;
  const T* __restrict__ sx;
  const T* __restrict__ sy;
  T* __restrict__ out;   // (B, N, K)
  T* __restrict__ part;  // (splits, B, N, K) when split
  int64_t B, N, M;
  int d, K, cost;
  bool grad;
  int64_t row_blocks, col_tiles, tiles_per_split;
  int splits;
};

// grid (B·row_blocks, splits), 256 threads. p.grad: out = x_i·Σ_j P_ij A_ij − Σ_j P_ij W_ij y_j (v = y); else
// Σ_j P_ij v_j. kDiff as in update_kernel.
template <typename T, bool kDiff>
__global__ void __launch_bounds__(kThreads, 2) plan_kernel(const PlanArgs<T> p) {
  using C = Cfg<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Xs = reinterpret_cast<T*>(smem_raw);
  T* Ys = Xs + kBM * C::kLdK;
  T* Qs = Xs;  // [kBM][kLdQ], written once the cost tile is done with the x/y tiles
  T* Vs = Xs + C::kRegionA;  // [kBN][kLdV]
  T* colG = Vs + kBN * C::kLdV;
  T* colS = colG + kBN;
  T* colN = colS + kBN;
  const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
  const int64_t b = blockIdx.x / p.row_blocks;
  const int64_t i0 = (blockIdx.x % p.row_blocks) * kBM;
  const int split = blockIdx.y;
  const int cost = p.cost;
  const bool grad = p.grad;
  const T inv_eps = T(1) / p.eps[b];
  const T* __restrict__ xb = p.x + b * p.N * p.d;
  const T* __restrict__ yb = p.y + b * p.M * p.d;
  const T* __restrict__ vb = p.v + b * p.M * p.K;
  T rf[kTM], rs[kTM], rn[kTM];
#pragma unroll
  for (int a = 0; a < kTM; ++a) {
    const int64_t i = i0 + ty + kSide * a;
    const bool ok = i < p.N;
    rf[a] = ok ? p.f[b * p.N + i] : T(-INFINITY);  // padding rows: P = 0
    rs[a] = (!kDiff && ok) ? p.sx[b * p.N + i] : T(0);
    rn[a] = sm::sqrt_(rs[a]);
  }
  const int64_t t_begin = split * p.tiles_per_split;
  const int64_t t_end = t_begin + p.tiles_per_split < p.col_tiles ? t_begin + p.tiles_per_split : p.col_tiles;
  for (int c0 = 0; c0 < p.K; c0 += C::kDC) {
    const int dc = p.K - c0 < C::kDC ? p.K - c0 : C::kDC;
    T o[kTM][C::kCPT];
    T ra[kTM];
#pragma unroll
    for (int a = 0; a < kTM; ++a) {
      ra[a] = T(0);
#pragma unroll
      for (int q = 0; q < C::kCPT; ++q) o[a][q] = T(0);
    }
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t j0 = t * kBN;
      __syncthreads();  // the previous tile's Q, V and column data are read no more
      if (tid < kBN) {
        const int64_t j = j0 + tid;
        const bool ok = j < p.M;
        colG[tid] = ok ? p.g[b * p.M + j] : T(-INFINITY);  // padding columns: P = 0
        if (!kDiff) {
          const T s = ok ? p.sy[b * p.M + j] : T(0);
          colS[tid] = s;
          colN[tid] = sm::sqrt_(s);
        }
      }
      // V tile: rows j0.. of v, columns [c0, c0 + dc), zero padded.
#pragma unroll
      for (int r = 0; r < kBN * C::kDC / kThreads; ++r) {
        const int e = tid + r * kThreads, jr = e / C::kDC, cc = e % C::kDC;
        const int64_t j = j0 + jr;
        Vs[jr * C::kLdV + cc] = (j < p.M && cc < dc) ? vb[j * p.K + c0 + cc] : T(0);
      }
      __syncthreads();
      T acc[kTM][kTN];
      cost_tile<T, kDiff>(acc, Xs, Ys, xb, yb, p.N, p.M, p.d, i0, j0, tx, ty, tid);  // ends with a barrier
#pragma unroll
      for (int a = 0; a < kTM; ++a)
#pragma unroll
        for (int bb = 0; bb < kTN; ++bb) {
          const int j = tx + kSide * bb;
          const T cij = entry_cost<T, kDiff>(cost, acc[a][bb], rs[a], colS[j], rn[a], colN[j]);
          const T P = sm::exp_((rf[a] + colG[j] - cij) * inv_eps);
          T q = P;
          if (grad) {
            T A, W;
            sm::grad_coefs(cost, acc[a][bb], acc[a][bb], rn[a], colN[j], &A, &W);
            if (P != T(0)) {  // padding and zero-weight entries add nothing (A, W may be anything there)
              ra[a] += P * A;
              q = P * W;
            }
          }
          Qs[(ty + kSide * a) * C::kLdQ + j] = q;
        }
      __syncthreads();
      // o += Q·V over the tile's kBN columns.
#pragma unroll 4
      for (int jj = 0; jj < kBN; jj += C::kVec) {
        T qa[kTM][C::kVec];
#pragma unroll
        for (int a = 0; a < kTM; ++a) ldv<C::kVec>(Qs + (ty + kSide * a) * C::kLdQ + jj, qa[a]);
#pragma unroll
        for (int u = 0; u < C::kVec; ++u) {
          T vv[C::kCPT];
          ldv<C::kCPT>(Vs + (jj + u) * C::kLdV + tx * C::kCPT, vv);
#pragma unroll
          for (int a = 0; a < kTM; ++a)
#pragma unroll
            for (int q = 0; q < C::kCPT; ++q) o[a][q] = fma(qa[a][u], vv[q], o[a][q]);
        }
      }
    }
    if (grad) {
#pragma unroll
      for (int a = 0; a < kTM; ++a) ra[a] = sum_half_warp(ra[a]);
    }
#pragma unroll
    for (int a = 0; a < kTM; ++a) {
      const int64_t i = i0 + ty + kSide * a;
      if (i >= p.N) continue;
      const int64_t row = b * p.N + i;
      T* __restrict__ dst = p.splits == 1 ? p.out + row * p.K
                                          : p.part + (static_cast<int64_t>(split) * p.B * p.N + row) * p.K;
#pragma unroll
      for (int q = 0; q < C::kCPT; ++q) {
        const int cc = tx * C::kCPT + q;
        if (cc >= dc) continue;
        dst[c0 + cc] = grad ? ra[a] * xb[i * p.d + c0 + cc] - o[a][q] : o[a][q];
      }
    }
  }
}

// out = Σ_s part[s] in split order.
template <typename T>
__global__ void plan_finish(const T* __restrict__ part, int splits, int64_t total, T* __restrict__ out) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T s = part[e];
    for (int k = 1; k < splits; ++k) s += part[k * total + e];
    out[e] = s;
  }
}

template <typename T, bool kDiff>
cudaError_t launch_plan(const PlanArgs<T>& p, const Split& sp, cudaStream_t stream) {
  constexpr size_t smem = Cfg<T>::kPlanSmem;
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(plan_kernel<T, kDiff>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned int>(p.B * p.row_blocks), static_cast<unsigned int>(sp.splits));
  plan_kernel<T, kDiff><<<grid, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t plan_impl(const Clouds& c, const T* f, const T* g, const T* v, int64_t K, bool grad, T* out, T* ws,
                      cudaStream_t stream) {
  const int64_t total = c.B * c.N * K;
  if (total == 0) return cudaSuccess;
  if (c.M == 0) return cudaMemsetAsync(out, 0, total * sizeof(T), stream);  // an empty sum; +0.0 is all zero bits
  PlanArgs<T> p{};
  p.x = static_cast<const T*>(c.x);
  p.y = static_cast<const T*>(c.y);
  p.f = f;
  p.g = g;
  p.v = grad ? p.y : v;
  p.eps = static_cast<const T*>(c.eps);
  p.B = c.B;
  p.N = c.N;
  p.M = c.M;
  p.d = static_cast<int>(c.d);
  p.K = static_cast<int>(K);
  p.cost = c.cost;
  p.grad = grad;
  p.out = out;
  p.row_blocks = ceil_div(c.N, kBM);
  p.col_tiles = ceil_div(c.M, kBN);
  if (c.B * p.row_blocks > INT_MAX) return cudaErrorInvalidValue;
  const Split sp = col_split(c.B * p.row_blocks, p.col_tiles);
  p.tiles_per_split = sp.tiles_per_split;
  p.splits = static_cast<int>(sp.splits);
  T* sx = ws;
  T* sy = ws + c.B * c.N;
  p.sx = sx;
  p.sy = sy;
  p.part = sy + c.B * c.M;
  cudaError_t err = cudaSuccess;
  const bool diff = c.cost == sm::kEuclidean;
  if (!diff) {
    if ((err = launch_sqnorm(p.x, c.B * c.N, p.d, sx, stream)) != cudaSuccess) return err;
    if ((err = launch_sqnorm(p.y, c.B * c.M, p.d, sy, stream)) != cudaSuccess) return err;
  }
  err = diff ? launch_plan<T, true>(p, sp, stream) : launch_plan<T, false>(p, sp, stream);
  if (err != cudaSuccess || p.splits == 1) return err;
  constexpr int kFinishThreads = 256;
  int64_t blocks = ceil_div(total, kFinishThreads);
  if (blocks > 65535) blocks = 65535;
  plan_finish<T><<<static_cast<unsigned int>(blocks), kFinishThreads, 0, stream>>>(p.part, p.splits, total, out);
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// sinkhorn_update_dense

// transpose=false: TPR threads per row of C (32: one warp; kThreads: the whole block), reading it along j.
template <typename T, int TPR>
__global__ void __launch_bounds__(kThreads) dense_rows_kernel(const T* __restrict__ Cm, int64_t B, int64_t N,
                                                                  int64_t M, const T* __restrict__ pot,
                                                                  const T* __restrict__ log_w,
                                                                  const T* __restrict__ tau,
                                                                  const T* __restrict__ eps, T* __restrict__ out) {
  constexpr int kRowsPerBlock = kThreads / TPR;
  constexpr int kUnroll = 4;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / TPR;
  const int lane = threadIdx.x % TPR;
  const bool ok = r < B * N;
  sm::Lse<T> l;
  const int64_t b = ok ? r / N : 0;
  if (ok) {
    const T inv_eps = T(1) / eps[b];
    const T* __restrict__ row = Cm + r * M;
    const T* __restrict__ pb = pot + b * M;
    int64_t j = lane;
    for (; j + (kUnroll - 1) * TPR < M; j += kUnroll * TPR) {
      T v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) v[u] = (pb[j + u * TPR] - row[j + u * TPR]) * inv_eps;
      fold(l, v);
    }
    for (; j < M; j += TPR) {
      const T v[1] = {(pb[j] - row[j]) * inv_eps};
      fold(l, v);
    }
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    const T om = __shfl_xor_sync(0xffffffffu, l.m, off);
    const T os = __shfl_xor_sync(0xffffffffu, l.s, off);
    l.merge(om, os);
  }
  if (TPR > 32) {
    constexpr int kWarps = kThreads / 32;
    __shared__ T wm[kWarps], wsum[kWarps];
    const int warp = threadIdx.x / 32;
    if (lane % 32 == 0) {
      wm[warp] = l.m;
      wsum[warp] = l.s;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    sm::Lse<T> t;
    for (int w = 0; w < kWarps; ++w) t.merge(wm[w], wsum[w]);
    l = t;
  } else if (lane != 0) {
    return;
  }
  if (ok) out[r] = sm::potential_from_lse(tau[r], eps[b], log_w[r], l.value());
}

// transpose=true: block of 32 columns × 8 row phases; grid B·ceil(M/32). Thread (c, ph) folds the rows
// i ≡ ph (mod 8) of column j (a warp reads 32 consecutive entries of a row); the 8 phases merge in order.
template <typename T>
__global__ void __launch_bounds__(kThreads) dense_cols_kernel(const T* __restrict__ Cm, int64_t N, int64_t M,
                                                              int64_t col_blocks, const T* __restrict__ pot,
                                                              const T* __restrict__ log_w, const T* __restrict__ tau,
                                                              const T* __restrict__ eps, T* __restrict__ out) {
  constexpr int kCols = 32, kPhases = kThreads / kCols, kUnroll = 4;
  __shared__ T pm[kPhases][kCols], ps[kPhases][kCols];
  const int cx = threadIdx.x % kCols, ph = threadIdx.x / kCols;
  const int64_t b = blockIdx.x / col_blocks;
  const int64_t j = (blockIdx.x % col_blocks) * kCols + cx;
  const bool ok = j < M;
  const T inv_eps = T(1) / eps[b];
  const T* __restrict__ Cb = Cm + b * N * M;
  const T* __restrict__ pb = pot + b * N;
  sm::Lse<T> l;
  if (ok) {
    int64_t i = ph;
    for (; i + (kUnroll - 1) * kPhases < N; i += kUnroll * kPhases) {
      T v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t ii = i + u * kPhases;
        v[u] = (pb[ii] - Cb[ii * M + j]) * inv_eps;
      }
      fold(l, v);
    }
    for (; i < N; i += kPhases) {
      const T v[1] = {(pb[i] - Cb[i * M + j]) * inv_eps};
      fold(l, v);
    }
  }
  pm[ph][cx] = l.m;
  ps[ph][cx] = l.s;
  __syncthreads();
  if (ph != 0 || !ok) return;
  for (int w = 1; w < kPhases; ++w) l.merge(pm[w][cx], ps[w][cx]);
  const int64_t o = b * M + j;
  out[o] = sm::potential_from_lse(tau[o], eps[b], log_w[o], l.value());
}

template <typename T>
cudaError_t dense_impl(const T* Cm, int64_t B, int64_t N, int64_t M, const T* pot, const T* log_w, const T* tau,
                       const T* eps, bool transpose, T* out, cudaStream_t stream) {
  if (transpose) {
    const int64_t col_blocks = ceil_div(M, 32);
    const int64_t blocks = B * col_blocks;
    if (blocks > INT_MAX) return cudaErrorInvalidValue;
    dense_cols_kernel<T><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(Cm, N, M, col_blocks, pot,
                                                                                     log_w, tau, eps, out);
    return cudaGetLastError();
  }
  const int64_t rows = B * N;
  if (rows < 1024) {  // few rows: a block per row
    if (rows > INT_MAX) return cudaErrorInvalidValue;
    dense_rows_kernel<T, kThreads><<<static_cast<unsigned int>(rows), kThreads, 0, stream>>>(Cm, B, N, M, pot, log_w,
                                                                                             tau, eps, out);
  } else {
    const int64_t blocks = ceil_div(rows, kThreads / 32);
    if (blocks > INT_MAX) return cudaErrorInvalidValue;
    dense_rows_kernel<T, 32><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(Cm, B, N, M, pot, log_w,
                                                                                         tau, eps, out);
  }
  return cudaGetLastError();
}

// A pointer may be null only where its tensor is empty (as torch's empty tensors are).
bool missing(const void* p, int64_t elems) { return p == nullptr && elems > 0; }

bool bad_clouds(const Clouds& c) {
  return c.B < 0 || c.N < 0 || c.M < 0 || c.d < 0 || c.d > INT_MAX || c.cost < 0 || c.cost > 2 ||
         missing(c.x, c.B * c.N * c.d) || missing(c.y, c.B * c.M * c.d) || missing(c.eps, c.B);
}

}  // namespace

int64_t update_workspace(const Clouds& c) {
  const int64_t row_blocks = ceil_div(c.N, kBM), col_tiles = ceil_div(c.M, kBN);
  const Split sp = col_split(c.B * row_blocks, col_tiles);
  return c.B * c.N + c.B * c.M + (sp.splits > 1 ? 2 * sp.splits * c.B * c.N : 0);
}

int64_t plan_workspace(const Clouds& c, int64_t k) {
  const int64_t row_blocks = ceil_div(c.N, kBM), col_tiles = ceil_div(c.M, kBN);
  const Split sp = col_split(c.B * row_blocks, col_tiles);
  return c.B * c.N + c.B * c.M + (sp.splits > 1 ? sp.splits * c.B * c.N * k : 0);
}

cudaError_t update(const Clouds& c, const void* pot, const void* log_w, const void* tau, void* out, void* workspace,
                   cudaStream_t stream) {
  if (bad_clouds(c) || c.M < 1 || missing(pot, c.B * c.M) || missing(log_w, c.B * c.N) ||
      missing(tau, c.B * c.N) || missing(out, c.B * c.N) || workspace == nullptr)
    return cudaErrorInvalidValue;
  if (c.B == 0 || c.N == 0) return cudaSuccess;
  switch (c.dtype) {
    case Dtype::kFloat32:
      return update_impl(c, static_cast<const float*>(pot), static_cast<const float*>(log_w),
                         static_cast<const float*>(tau), static_cast<float*>(out), static_cast<float*>(workspace),
                         stream);
    case Dtype::kFloat64:
      return update_impl(c, static_cast<const double*>(pot), static_cast<const double*>(log_w),
                         static_cast<const double*>(tau), static_cast<double*>(out), static_cast<double*>(workspace),
                         stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t cost_grad(const Clouds& c, const void* f, const void* g, void* out, void* workspace, cudaStream_t stream) {
  if (bad_clouds(c) || missing(f, c.B * c.N) || missing(g, c.B * c.M) || missing(out, c.B * c.N * c.d) ||
      workspace == nullptr)
    return cudaErrorInvalidValue;
  switch (c.dtype) {
    case Dtype::kFloat32:
      return plan_impl(c, static_cast<const float*>(f), static_cast<const float*>(g), static_cast<const float*>(nullptr),
                       c.d, true, static_cast<float*>(out), static_cast<float*>(workspace), stream);
    case Dtype::kFloat64:
      return plan_impl(c, static_cast<const double*>(f), static_cast<const double*>(g),
                       static_cast<const double*>(nullptr), c.d, true, static_cast<double*>(out),
                       static_cast<double*>(workspace), stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t apply(const Clouds& c, const void* f, const void* g, const void* v, int64_t k, void* out, void* workspace,
                  cudaStream_t stream) {
  if (bad_clouds(c) || k < 0 || k > INT_MAX || missing(f, c.B * c.N) || missing(g, c.B * c.M) ||
      missing(v, c.B * c.M * k) || missing(out, c.B * c.N * k) || workspace == nullptr)
    return cudaErrorInvalidValue;
  switch (c.dtype) {
    case Dtype::kFloat32:
      return plan_impl(c, static_cast<const float*>(f), static_cast<const float*>(g), static_cast<const float*>(v), k,
                       false, static_cast<float*>(out), static_cast<float*>(workspace), stream);
    case Dtype::kFloat64:
      return plan_impl(c, static_cast<const double*>(f), static_cast<const double*>(g), static_cast<const double*>(v),
                       k, false, static_cast<double*>(out), static_cast<double*>(workspace), stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t update_dense(Dtype dtype, const void* C, int64_t B, int64_t N, int64_t M, const void* pot,
                         const void* log_w, const void* tau, const void* eps, bool transpose, void* out,
                         cudaStream_t stream) {
  const int64_t kept = transpose ? M : N, reduced = transpose ? N : M;
  if (B < 0 || N < 0 || M < 0 || reduced < 1 || missing(C, B * N * M) || missing(pot, B * reduced) ||
      missing(log_w, B * kept) || missing(tau, B * kept) || missing(eps, B) || missing(out, B * kept))
    return cudaErrorInvalidValue;
  if (B == 0 || kept == 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32:
      return dense_impl(static_cast<const float*>(C), B, N, M, static_cast<const float*>(pot),
                        static_cast<const float*>(log_w), static_cast<const float*>(tau),
                        static_cast<const float*>(eps), transpose, static_cast<float*>(out), stream);
    case Dtype::kFloat64:
      return dense_impl(static_cast<const double*>(C), B, N, M, static_cast<const double*>(pot),
                        static_cast<const double*>(log_w), static_cast<const double*>(tau),
                        static_cast<const double*>(eps), transpose, static_cast<double*>(out), stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace sinkhorn_cuda
}  // namespace regops
