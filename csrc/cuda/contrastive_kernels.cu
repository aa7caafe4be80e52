// CUDA kernels of the contrastive engine (ConR, SupCon, focal SupCon), FlashAttention-style: the
// similarity s_ij = ⟨a_i, c_j⟩/τ is recomputed tile by tile from the rows and never stored, so the memory is
// O(n·D + M·D + n). The per-element and per-row math is regops/contrastive_math.h, shared with the CPU kernel.
// CUDA headers only (no ATen), so this file compiles in seconds; the torch glue is contrastive.cpp.
//
// Tiles: a block of 16×16 = 256 threads owns a 64×64 tile of S (rows i0.., columns j0..); thread (tx, ty)
// computes the 4×4 entries (ty + 16a, tx + 16b) in registers, over D in steps of 32 from shared-memory tiles
// of a and c (padded rows: no bank conflicts), accumulating in T (fp32 for float, fp64 for double). The tile
// then goes to shared memory, and the element phase (contrastive_math.h's Element, once per entry) switches to
// 4 threads per row: thread t takes row t/4 and the columns ≡ t mod 4, so the per-row state is one RowAcc in
// registers and the element code is instantiated once (not 16 times unrolled: that took nvcc a minute).
//
// Forward:  fwd_kernel     grid (row tiles, column splits). Each thread keeps one online max-shifted RowAcc
//                          (element_max, row_rescale, row_add over its columns); at the end the 4 threads of a
//                          row merge theirs with shuffles (row_merge, fixed order). With one split the row is
//                          finished in place (row_finish); with several, each split writes its partial RowAcc
//                          (7 values per row) to a workspace and
//           finish_kernel  merges the splits of a row in split order and finishes it. Splits (flash-decoding
//                          style, for small n) depend on the sizes only, not on the device, so results are the
//                          same on every GPU.
// Backward: bwd_kernel     one grid of row-tile blocks and column-tile blocks. Every block walks the other
//                          dimension tile by tile, recomputes the S tile, forms dS_ij = g_i·dloss_ds(...) in
//                          shared memory and adds dS·c/τ (row blocks, into the grad_anchors rows they own) or
//                          dSᵀ·a/τ (column blocks, into the grad_candidates rows they own), D in steps of 32
//                          (float) or 16 (double), read-modify-write in global memory. So grad_candidates has
//                          its own blocks over column tiles (a second pass over S in the same launch), not
//                          atomics: each output row has one owner block and a fixed summation order, and the
//                          backward is deterministic. In the symmetric case the glue passes a scratch (n, D)
//                          buffer as grad_candidates and adds it to grad_anchors.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "contrastive_kernels.h"
#include "regops/contrastive_math.h"

namespace regops {
namespace contrastive_cuda {
namespace {

namespace cm = regops::contrastive;

constexpr int kTile = 64;                     // rows and columns of an S tile
constexpr int kSide = 16;                     // the block is kSide × kSide threads
constexpr int kThreads = kSide * kSide;       // 256
constexpr int kMicro = kTile / kSide;         // each thread holds kMicro × kMicro entries of the tile
constexpr int kBK = 32;                       // D step of the similarity tile
constexpr int kKS = kBK + 1;                  // padded row stride of the a/c tiles
constexpr int kSS = kTile + 4;                // row stride of the S/dS tile: the 8 rows × 4 threads of a warp
                                              // hit 32 distinct banks in the row-per-thread phase
constexpr int kSimElems = 2 * kTile * kKS;    // a tile + c tile
constexpr int kPerRow = kThreads / kTile;     // element phase: 4 threads per row of the tile
constexpr int kFwdElems = kTile * kSS > kSimElems ? kTile * kSS : kSimElems;
constexpr int kMaxSplits = 512;               // forward: at most this many column splits
constexpr int kTargetBlocks = 512;            // forward: split the columns until about this many blocks

// Backward D step of the update (dS·c): 32 for float, 16 for double, so that the dS tile and one operand
// tile fit in 48 KiB of static shared memory together (double: 43,520 bytes).
template <typename T>
struct Upd {
  static constexpr int kBD = sizeof(T) == 8 ? 16 : 32;
  static constexpr int kStride = kBD + 1;
  static constexpr int kPer = kBD / kSide;  // output columns per thread
  static constexpr int kSmemElems = kTile * kSS + kTile * kStride;  // dS tile + operand tile
  static_assert(kSmemElems >= kSimElems && kSmemElems * sizeof(T) <= 48 * 1024, "static shared memory");
};

// Kernel arguments: the Problem with typed pointers and T-typed scalars.
template <typename T>
struct Args {
  const T* __restrict__ a;
  const T* __restrict__ c;
  int64_t n, M, D;
  int kind;
  int64_t offset;
  T tau;
  T label_norm;
  cm::ConrParams<T> conr;
  const T* __restrict__ ya;
  const T* __restrict__ yc;
  const T* __restrict__ pa;
  const T* __restrict__ pc;
  const T* __restrict__ w;
  int64_t L;
  const int64_t* __restrict__ la;
  const int64_t* __restrict__ lc;
};

template <typename T>
Args<T> make_args(const Problem& p) {
  Args<T> r;
  r.a = static_cast<const T*>(p.anchors);
  r.c = static_cast<const T*>(p.candidates);
  r.n = p.n;
  r.M = p.M;
  r.D = p.D;
  r.kind = p.kind;
  r.offset = p.offset;
  r.tau = static_cast<T>(p.temperature);
  r.label_norm = static_cast<T>(p.label_norm);
  r.conr.threshold = static_cast<T>(p.threshold);
  r.conr.push = static_cast<T>(p.push);
  r.ya = static_cast<const T*>(p.labels);
  r.yc = static_cast<const T*>(p.cand_labels);
  r.pa = static_cast<const T*>(p.preds);
  r.pc = static_cast<const T*>(p.cand_preds);
  r.w = static_cast<const T*>(p.weights);
  r.L = p.L;
  r.la = p.class_ids;
  r.lc = p.cand_class_ids;
  return r;
}

// The element (i, j) of the anchor's partition sum (contrastive_math.h), from s_ij.
template <bool kConr, typename T>
__device__ __forceinline__ cm::Element<T> element_at(const Args<T>& p, int64_t i, int64_t j, T s) {
  const bool diag = j == p.offset + i;
  if constexpr (kConr) {
    const T ld = cm::label_distance(p.ya + i * p.L, p.yc + j * p.L, p.L, p.label_norm);
    const T pd = cm::label_distance(p.pa + i * p.L, p.pc + j * p.L, p.L, p.label_norm);
    const T w = p.w != nullptr ? p.w[i] : T(1);
    return cm::conr_element(p.kind, s, ld, pd, w, diag, p.conr);
  } else {
    return cm::supcon_element(s, p.la[i] == p.lc[j], diag);
  }
}

// tile[r][k] = x[r0 + r, k0 + k] for r < kTile, k < W (zero outside rows × D); x contiguous (rows, D).
// Consecutive threads walk k, so global loads coalesce; the padded stride keeps the stores conflict-free.
template <int W, int Stride, typename T>
__device__ __forceinline__ void load_tile(T* __restrict__ tile, const T* __restrict__ x, int64_t rows, int64_t D,
                                          int64_t r0, int64_t k0, int tid) {
  static_assert((kTile * W) % kThreads == 0, "tile must split evenly over the block");
#pragma unroll
  for (int it = 0; it < kTile * W / kThreads; ++it) {
    const int e = tid + it * kThreads;
    const int k = e % W, r = e / W;
    const int64_t gr = r0 + r, gk = k0 + k;
    T v = T(0);
    if (gr < rows && gk < D) v = x[gr * D + gk];
    tile[r * Stride + k] = v;
  }
}

// s[a][b] = ⟨a_{i0+ty+16a}, c_{j0+tx+16b}⟩ / τ (0 outside the matrix). Uses the first kSimElems of sm and
// ends with a barrier (when D > 0), so the caller may reuse sm right after.
template <typename T>
__device__ __forceinline__ void sim_tile(T (&s)[kMicro][kMicro], T* sm, const Args<T>& p, int64_t i0, int64_t j0,
                                         int tx, int ty, int tid) {
  T* As = sm;
  T* Cs = sm + kTile * kKS;
#pragma unroll
  for (int a = 0; a < kMicro; ++a)
#pragma unroll
    for (int b = 0; b < kMicro; ++b) s[a][b] = T(0);
  for (int64_t k0 = 0; k0 < p.D; k0 += kBK) {
    load_tile<kBK, kKS>(As, p.a, p.n, p.D, i0, k0, tid);
    load_tile<kBK, kKS>(Cs, p.c, p.M, p.D, j0, k0, tid);
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kBK; ++k) {
      T av[kMicro], cv[kMicro];
#pragma unroll
      for (int a = 0; a < kMicro; ++a) av[a] = As[(ty + kSide * a) * kKS + k];  // 2 addresses per warp
#pragma unroll
      for (int b = 0; b < kMicro; ++b) cv[b] = Cs[(tx + kSide * b) * kKS + k];  // conflict-free
#pragma unroll
      for (int a = 0; a < kMicro; ++a)
#pragma unroll
        for (int b = 0; b < kMicro; ++b) s[a][b] += av[a] * cv[b];
    }
    __syncthreads();
  }
#pragma unroll
  for (int a = 0; a < kMicro; ++a)
#pragma unroll
    for (int b = 0; b < kMicro; ++b) s[a][b] /= p.tau;
}

template <typename T>
__device__ __forceinline__ cm::RowAcc<T> shfl_xor_acc(const cm::RowAcc<T>& r, int mask) {
  cm::RowAcc<T> o;
  o.m = __shfl_xor_sync(0xffffffffu, r.m, mask);
  o.sum = __shfl_xor_sync(0xffffffffu, r.sum, mask);
  o.n_pos = __shfl_xor_sync(0xffffffffu, r.n_pos, mask);
  o.pos_s = __shfl_xor_sync(0xffffffffu, r.pos_s, mask);
  o.pos_e = __shfl_xor_sync(0xffffffffu, r.pos_e, mask);
  o.pos_es = __shfl_xor_sync(0xffffffffu, r.pos_es, mask);
  o.has_neg = __shfl_xor_sync(0xffffffffu, static_cast<int>(r.has_neg), mask) != 0;
  return o;
}

template <typename T>
__device__ __forceinline__ void store_partial(T* __restrict__ dst, const cm::RowAcc<T>& r) {
  dst[0] = r.m;
  dst[1] = r.sum;
  dst[2] = r.n_pos;
  dst[3] = r.pos_s;
  dst[4] = r.pos_e;
  dst[5] = r.pos_es;
  dst[6] = r.has_neg ? T(1) : T(0);
}

template <typename T>
__device__ __forceinline__ cm::RowAcc<T> load_partial(const T* __restrict__ src) {
  cm::RowAcc<T> r;
  r.m = src[0];
  r.sum = src[1];
  r.n_pos = src[2];
  r.pos_s = src[3];
  r.pos_e = src[4];
  r.pos_es = src[5];
  r.has_neg = src[6] != T(0);
  return r;
}

// Stores the thread's 4×4 register block of the S tile into sS (row stride kSS); the caller then switches to the
// row-per-thread layout (element_row) after a barrier.
template <typename T>
__device__ __forceinline__ void store_tile(T* __restrict__ sS, const T (&s)[kMicro][kMicro], int tx, int ty) {
#pragma unroll
  for (int a = 0; a < kMicro; ++a)
#pragma unroll
    for (int b = 0; b < kMicro; ++b) sS[(ty + kSide * a) * kSS + tx + kSide * b] = s[a][b];
}

// grid (row tiles, splits), block (16, 16). Split y walks column tiles [y·tps, min((y+1)·tps, col tiles)).
// Element phase: 4 threads per row (row tid/4), each over the columns ≡ tid mod 4 of the tile, one RowAcc each.
template <typename T, bool kConr>
__global__ void __launch_bounds__(kThreads, 2)
    fwd_kernel(Args<T> p, int64_t tiles_per_split, int splits, T* __restrict__ row_loss, T* __restrict__ row_stats,
               T* __restrict__ partial) {
  __shared__ __align__(16) unsigned char raw[kFwdElems * sizeof(T)];
  T* sm = reinterpret_cast<T*>(raw);
  T* sS = sm;  // [kTile][kSS], aliases the a/c tiles of sim_tile
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kSide + tx;
  const int r = tid / kPerRow, q = tid % kPerRow;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTile, i = i0 + r;
  const bool row_ok = i < p.n;
  const int64_t col_tiles = (p.M + kTile - 1) / kTile;
  const int64_t t_begin = static_cast<int64_t>(blockIdx.y) * tiles_per_split;
  const int64_t t_end = t_begin + tiles_per_split < col_tiles ? t_begin + tiles_per_split : col_tiles;
  const bool focal = p.kind == cm::kFocal;

  cm::RowAcc<T> acc = cm::row_init<T>();
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t j0 = t * kTile;
    {
      T s[kMicro][kMicro];
      sim_tile(s, sm, p, i0, j0, tx, ty, tid);  // ends with a barrier: sS may overwrite the a/c tiles
      store_tile(sS, s, tx, ty);
    }
    __syncthreads();
    if (row_ok) {
      const int64_t left = p.M - j0;
      const int jn = left < kTile ? static_cast<int>(left) : kTile;
#pragma unroll 1
      for (int c = q; c < jn; c += kPerRow) {
        const T sv = sS[r * kSS + c];
        const cm::Element<T> e = element_at<kConr>(p, i, j0 + c, sv);
        const T mx = cm::element_max(e);
        if (mx > acc.m) cm::row_rescale(acc, mx);
        cm::row_add(acc, e, sv, focal);
      }
    }
    __syncthreads();  // the next sim_tile overwrites sS
  }

  // The kPerRow threads of a row are consecutive lanes: a butterfly merges them (a fixed order per row).
#pragma unroll
  for (int mask = 1; mask < kPerRow; mask *= 2) cm::row_merge(acc, shfl_xor_acc(acc, mask));
  if (q != 0 || !row_ok) return;
  if (splits == 1) {
    row_loss[i] = cm::row_finish(p.kind, acc, row_stats + i * cm::kRowStats);
  } else {
    store_partial(partial + (static_cast<int64_t>(blockIdx.y) * p.n + i) * kPartialFields, acc);
  }
}

// One thread per anchor: merges its splits in split order, then finishes the row.
template <typename T>
__global__ void finish_kernel(const T* __restrict__ partial, int splits, int64_t n, int kind, T* __restrict__ row_loss,
                              T* __restrict__ row_stats) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  cm::RowAcc<T> r = cm::row_init<T>();
  for (int sp = 0; sp < splits; ++sp) cm::row_merge(r, load_partial(partial + (sp * n + i) * kPartialFields));
  row_loss[i] = cm::row_finish(kind, r, row_stats + i * cm::kRowStats);
}

// grid (row tiles + column tiles), block (16, 16). Blocks [0, row_tiles) own anchor rows and add dS·c/τ into
// grad_a; the others own candidate rows and add dSᵀ·a/τ into grad_c. Each walks every tile of the other side.
template <typename T, bool kConr>
__global__ void __launch_bounds__(kThreads, 2)
    bwd_kernel(Args<T> p, const T* __restrict__ g, const T* __restrict__ stats, int64_t row_tiles,
               T* __restrict__ grad_a, T* __restrict__ grad_c) {
  using U = Upd<T>;
  __shared__ __align__(16) unsigned char raw[U::kSmemElems * sizeof(T)];
  T* sm = reinterpret_cast<T*>(raw);
  T* dS = sm;                // [kTile][kSS]: S, then dS in place; aliases the a/c tiles of sim_tile
  T* Xs = sm + kTile * kSS;  // [kTile][U::kStride]: the operand rows of the update (after the a/c tiles)
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kSide + tx;
  const int r = tid / kPerRow, q = tid % kPerRow;
  const bool by_cols = static_cast<int64_t>(blockIdx.x) >= row_tiles;  // block-uniform
  const int64_t own0 = (by_cols ? static_cast<int64_t>(blockIdx.x) - row_tiles : static_cast<int64_t>(blockIdx.x)) * kTile;
  const int64_t own_rows = by_cols ? p.M : p.n;
  const int64_t other_rows = by_cols ? p.n : p.M;
  const T* __restrict__ x = by_cols ? p.a : p.c;  // operand: rows of the other side
  T* __restrict__ out = by_cols ? grad_c : grad_a;
  // dS entry (own row o, other row k) of the tile (its rows are anchors, its columns candidates).
  const int os = by_cols ? 1 : kSS, ks = by_cols ? kSS : 1;

  for (int64_t t0 = 0; t0 < other_rows; t0 += kTile) {
    const int64_t i0 = by_cols ? t0 : own0, j0 = by_cols ? own0 : t0;
    {
      T s[kMicro][kMicro];
      sim_tile(s, sm, p, i0, j0, tx, ty, tid);  // ends with a barrier: dS may overwrite the a/c tiles
      store_tile(dS, s, tx, ty);
    }
    __syncthreads();
    // dS_ij = g_i · dℓ_i/ds_ij, row-per-thread layout, in place (each entry read and written by one thread).
    const int64_t i = i0 + r;
    if (i < p.n) {
      const T gi = g[i];
      const T* st = stats + i * cm::kRowStats;
#pragma unroll 1
      for (int c = q; c < kTile; c += kPerRow) {
        const int64_t j = j0 + c;
        T d = T(0);
        if (j < p.M) {
          const T sv = dS[r * kSS + c];
          d = gi * cm::dloss_ds(p.kind, element_at<kConr>(p, i, j, sv), sv, st);
        }
        dS[r * kSS + c] = d;
      }
    } else {
      for (int c = q; c < kTile; c += kPerRow) dS[r * kSS + c] = T(0);
    }
    // (the barrier after the first operand load below orders these dS stores before their reads; D > 0 here)
    for (int64_t d0 = 0; d0 < p.D; d0 += U::kBD) {
      load_tile<U::kBD, U::kStride>(Xs, x, other_rows, p.D, t0, d0, tid);
      __syncthreads();
      T u[kMicro][U::kPer];
#pragma unroll
      for (int a = 0; a < kMicro; ++a)
#pragma unroll
        for (int b = 0; b < U::kPer; ++b) u[a][b] = T(0);
#pragma unroll 8
      for (int k = 0; k < kTile; ++k) {
        T xv[U::kPer];
#pragma unroll
        for (int b = 0; b < U::kPer; ++b) xv[b] = Xs[k * U::kStride + tx + kSide * b];
#pragma unroll
        for (int a = 0; a < kMicro; ++a) {
          const T coef = dS[(ty + kSide * a) * os + k * ks];  // 2 addresses per warp
#pragma unroll
          for (int b = 0; b < U::kPer; ++b) u[a][b] += coef * xv[b];
        }
      }
#pragma unroll
      for (int a = 0; a < kMicro; ++a) {
        const int64_t o = own0 + ty + kSide * a;
        if (o >= own_rows) continue;
#pragma unroll
        for (int b = 0; b < U::kPer; ++b) {
          const int64_t dd = d0 + tx + kSide * b;
          if (dd < p.D) out[o * p.D + dd] += u[a][b] / p.tau;  // this thread is the only writer of (o, dd)
        }
      }
      __syncthreads();  // before Xs is reloaded, and before the next tile's sim_tile overwrites dS
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Column splits of the forward: enough blocks to fill the device, decided by the sizes alone.
struct Split {
  int64_t splits, tiles_per_split;
};

Split fwd_split(int64_t n, int64_t M) {
  const int64_t row_tiles = ceil_div(n, kTile), col_tiles = ceil_div(M, kTile);
  if (col_tiles <= 1 || row_tiles >= kTargetBlocks) return {1, col_tiles};
  int64_t splits = ceil_div(kTargetBlocks, row_tiles);
  if (splits > col_tiles) splits = col_tiles;
  if (splits > kMaxSplits) splits = kMaxSplits;
  const int64_t tps = ceil_div(col_tiles, splits);
  return {ceil_div(col_tiles, tps), tps};  // no empty split
}

bool bad_problem(const Problem& p) {
  return p.n < 0 || p.M < 0 || p.D < 0 || p.anchors == nullptr || p.candidates == nullptr || p.kind < 0 ||
         p.kind > 3 || (cm::is_conr(p.kind) && (p.L < 1 || p.labels == nullptr || p.cand_labels == nullptr ||
                                                 p.preds == nullptr || p.cand_preds == nullptr)) ||
         (!cm::is_conr(p.kind) && (p.class_ids == nullptr || p.cand_class_ids == nullptr));
}

template <typename T>
cudaError_t fwd_impl(const Problem& pr, T* row_loss, T* row_stats, T* workspace, cudaStream_t stream) {
  const Args<T> p = make_args<T>(pr);
  const int64_t row_tiles = ceil_div(p.n, kTile);
  if (row_tiles > INT_MAX) return cudaErrorInvalidValue;
  const Split sp = fwd_split(p.n, p.M);
  if (sp.splits > 1 && workspace == nullptr) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned int>(row_tiles), static_cast<unsigned int>(sp.splits));
  const dim3 block(kSide, kSide);
  const int splits = static_cast<int>(sp.splits);
  if (cm::is_conr(p.kind)) {
    fwd_kernel<T, true><<<grid, block, 0, stream>>>(p, sp.tiles_per_split, splits, row_loss, row_stats, workspace);
  } else {
    fwd_kernel<T, false><<<grid, block, 0, stream>>>(p, sp.tiles_per_split, splits, row_loss, row_stats, workspace);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || splits == 1) return err;
  constexpr int kFinishThreads = 256;
  finish_kernel<T><<<static_cast<unsigned int>(ceil_div(p.n, kFinishThreads)), kFinishThreads, 0, stream>>>(
      workspace, splits, p.n, p.kind, row_loss, row_stats);
  return cudaGetLastError();
}

template <typename T>
cudaError_t bwd_impl(const Problem& pr, const T* g, const T* stats, T* grad_a, T* grad_c, cudaStream_t stream) {
  const Args<T> p = make_args<T>(pr);
  const int64_t row_tiles = ceil_div(p.n, kTile), col_tiles = ceil_div(p.M, kTile);
  if (row_tiles + col_tiles > INT_MAX) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned int>(row_tiles + col_tiles)), block(kSide, kSide);
  if (cm::is_conr(p.kind)) {
    bwd_kernel<T, true><<<grid, block, 0, stream>>>(p, g, stats, row_tiles, grad_a, grad_c);
  } else {
    bwd_kernel<T, false><<<grid, block, 0, stream>>>(p, g, stats, row_tiles, grad_a, grad_c);
  }
  return cudaGetLastError();
}

}  // namespace

int64_t contrastive_fwd_workspace(const Problem& p) {
  if (p.n <= 0) return 0;
  const Split sp = fwd_split(p.n, p.M);
  return sp.splits > 1 ? sp.splits * p.n * kPartialFields : 0;
}

cudaError_t contrastive_fwd(const Problem& p, void* row_loss, void* row_stats, void* workspace, cudaStream_t stream) {
  if (bad_problem(p)) return cudaErrorInvalidValue;
  if (p.n == 0) return cudaSuccess;
  switch (p.dtype) {
    case Dtype::kFloat32:
      return fwd_impl(p, static_cast<float*>(row_loss), static_cast<float*>(row_stats),
                      static_cast<float*>(workspace), stream);
    case Dtype::kFloat64:
      return fwd_impl(p, static_cast<double*>(row_loss), static_cast<double*>(row_stats),
                      static_cast<double*>(workspace), stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t contrastive_bwd(const Problem& p, const void* grad_row_loss, const void* row_stats, void* grad_anchors,
                            void* grad_candidates, cudaStream_t stream) {
  if (bad_problem(p) || grad_candidates == nullptr) return cudaErrorInvalidValue;
  if (p.n == 0 || p.M == 0 || p.D == 0) return cudaSuccess;  // the zero-filled gradients are the answer
  switch (p.dtype) {
    case Dtype::kFloat32:
      return bwd_impl(p, static_cast<const float*>(grad_row_loss), static_cast<const float*>(row_stats),
                      static_cast<float*>(grad_anchors), static_cast<float*>(grad_candidates), stream);
    case Dtype::kFloat64:
      return bwd_impl(p, static_cast<const double*>(grad_row_loss), static_cast<const double*>(row_stats),
                      static_cast<double*>(grad_anchors), static_cast<double*>(grad_candidates), stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace contrastive_cuda
}  // namespace regops
