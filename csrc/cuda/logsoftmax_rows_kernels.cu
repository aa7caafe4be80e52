// CUDA kernel of the fused log-softmax rows: one block per row, its threads striding over the vocabulary. Per-element
// math: regops/logsoftmax_math.h (shared with the CPU kernel). CUDA headers only (no ATen): compiles in seconds.
//   pass 1: each thread's running (max, Σ e^{x − max}) of z (and of the reference row), merged across the block;
//   pass 2 (a KL is asked for): Σ_v of the KL term, block sum;
//   pass 3 (a gradient is asked for): the row overwritten by d(gl·logp + gk·KL)/dz.
// The row is read two or three times; at V = 32000 it stays in L2 between passes.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "logsoftmax_rows_kernels.h"
#include "row_block.cuh"
#include "regops/logsoftmax_math.h"

namespace regops {
namespace lsm_cuda {
namespace {

using row_block::AccOf;
using row_block::block_lse;
using row_block::block_sum;
using row_block::kThreads;
using row_block::kWarps;
using row_block::store;
using row_block::to_acc;

template <typename T>
__global__ void __launch_bounds__(kThreads) rows_kernel(const T* __restrict__ logits, const T* __restrict__ ref,
                                                         const int64_t* __restrict__ targets,
                                                         const typename AccOf<T>::type* __restrict__ grad_logp,
                                                         const typename AccOf<T>::type* __restrict__ grad_kl, T* out,
                                                         typename AccOf<T>::type* logp,
                                                         typename AccOf<T>::type* ref_logp,
                                                         typename AccOf<T>::type* kl, int64_t V, int kl_mode,
                                                         int64_t ignore_index) {
  using A = typename AccOf<T>::type;
  __shared__ lsm::Lse<A> shared_lse[kWarps];
  __shared__ A shared_sum[kWarps];
  const int64_t row = blockIdx.x;
  const T* z = logits + row * V;
  const T* r = ref ? ref + row * V : nullptr;
  T* o = out ? out + row * V : nullptr;
  const int64_t y = targets[row];
  if (y == ignore_index || y < 0 || y >= V) {
    if (threadIdx.x == 0) logp[row] = ref_logp[row] = kl[row] = A(0);
    if (o)
      for (int64_t v = threadIdx.x; v < V; v += kThreads) store(o + v, A(0));
    return;
  }
  lsm::Lse<A> sz{A(0), A(0)}, sr{A(0), A(0)};
  for (int64_t v = threadIdx.x; v < V; v += kThreads) {
    sz = lsm::lse_push(sz, to_acc(z[v]));
    if (kl_mode != lsm::kNoKl) sr = lsm::lse_push(sr, to_acc(r[v]));
  }
  const A lse_z = lsm::lse_value(block_lse(sz, shared_lse));
  const A lse_r = kl_mode != lsm::kNoKl ? lsm::lse_value(block_lse(sr, shared_lse)) : A(0);
  A kl_row = 0;
  if (kl_mode != lsm::kNoKl) {
    A part = 0;
    for (int64_t v = threadIdx.x; v < V; v += kThreads)
      part += lsm::kl_term<A>(kl_mode, to_acc(z[v]) - lse_z, to_acc(r[v]) - lse_r);
    kl_row = block_sum(part, shared_sum);
  }
  // Every thread read z[y] (and its row) before any thread writes: the reductions above end with __syncthreads.
  const A zy = to_acc(z[y]);
  const A ry = kl_mode != lsm::kNoKl ? to_acc(r[y]) : A(0);
  __syncthreads();
  if (o) {
    const A gl = grad_logp[row], gk = grad_kl[row];
    for (int64_t v = threadIdx.x; v < V; v += kThreads) {
      const A log_p = to_acc(z[v]) - lse_z;
      const A log_q = kl_mode != lsm::kNoKl ? to_acc(r[v]) - lse_r : A(0);
      const A q = kl_mode == lsm::kForwardKl ? lsm::exp_(log_q) : A(0);
      store(o + v, lsm::grad_logit<A>(kl_mode, lsm::exp_(log_p), log_p, q, log_q, kl_row, v == y, gl, gk));
    }
  }
  if (threadIdx.x == 0) {
    logp[row] = zy - lse_z;
    ref_logp[row] = kl_mode != lsm::kNoKl ? ry - lse_r : A(0);
    kl[row] = kl_row;
  }
}

template <typename T>
cudaError_t launch(const void* logits, const void* ref, const int64_t* targets, const void* grad_logp,
                   const void* grad_kl, void* out, void* logp, void* ref_logp, void* kl, int64_t rows, int64_t V,
                   int kl_mode, int64_t ignore_index, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  // One block per row; grid.x takes up to 2^31 − 1 rows, more than any chunk the engine hands over.
  rows_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      static_cast<const T*>(logits), static_cast<const T*>(ref), targets, static_cast<const A*>(grad_logp),
      static_cast<const A*>(grad_kl), static_cast<T*>(out), static_cast<A*>(logp), static_cast<A*>(ref_logp),
      static_cast<A*>(kl), V, kl_mode, ignore_index);
  return cudaGetLastError();
}

}  // namespace

cudaError_t logsoftmax_rows(Dtype dtype, const void* logits, const void* ref_logits, const int64_t* targets,
                            const void* grad_logp, const void* grad_kl, void* out, void* logp, void* ref_logp, void* kl,
                            int64_t rows, int64_t V, int kl_mode, int64_t ignore_index, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32:
      return launch<float>(logits, ref_logits, targets, grad_logp, grad_kl, out, logp, ref_logp, kl, rows, V, kl_mode,
                           ignore_index, stream);
    case Dtype::kFloat64:
      return launch<double>(logits, ref_logits, targets, grad_logp, grad_kl, out, logp, ref_logp, kl, rows, V, kl_mode,
                            ignore_index, stream);
    case Dtype::kBFloat16:
      return launch<__nv_bfloat16>(logits, ref_logits, targets, grad_logp, grad_kl, out, logp, ref_logp, kl, rows, V,
                                   kl_mode, ignore_index, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace lsm_cuda
}  // namespace regops
