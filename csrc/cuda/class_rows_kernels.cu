// CUDA kernels of the classification-side row losses: one block per row, its threads striding over the classes.
// Per-row math: regops/class_rows_math.h (shared with the CPU kernel). CUDA headers only (no ATen).
//   mixup: pass 1 the running LSE of the non-mixed classes; pass 2 the gradient row.
//   ELR:   pass 1 the row's LSE; pass 2 the five row sums; pass 3 the new buffer row and the gradient row.
// Rows whose class indices fall outside [0, C) (the glue's callers validate them) give a NaN loss.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "class_rows_kernels.h"
#include "regops/class_rows_math.h"
#include "row_block.cuh"

namespace regops {
namespace cls_cuda {
namespace {

using row_block::AccOf;
using row_block::block_lse;
using row_block::block_sum;
using row_block::kThreads;
using row_block::kWarps;
using row_block::to_acc;

template <typename A>
__device__ A quiet_nan() {
  return A(0) / A(0);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) mixup_kernel(const T* __restrict__ logits,
                                                          const int64_t* __restrict__ classes,
                                                          const typename AccOf<T>::type* __restrict__ coeffs,
                                                          typename AccOf<T>::type* loss,
                                                          typename AccOf<T>::type* grad, int64_t C) {
  using A = typename AccOf<T>::type;
  __shared__ lsm::Lse<A> shared_lse[kWarps];
  const int64_t row = blockIdx.x;
  const T* z = logits + row * C;
  const int64_t a = classes[2 * row], b = classes[2 * row + 1];
  if (a < 0 || a >= C || b < 0 || b >= C) {
    if (threadIdx.x == 0) loss[row] = quiet_nan<A>();
    return;
  }
  const cls::MixupCoeffs<A> c{coeffs[4 * row], coeffs[4 * row + 1], coeffs[4 * row + 2], coeffs[4 * row + 3]};
  lsm::Lse<A> part{A(0), A(0)};
  for (int64_t k = threadIdx.x; k < C; k += kThreads)
    if (k != a && k != b) part = lsm::lse_push(part, to_acc(z[k]));
  const lsm::Lse<A> rest = block_lse(part, shared_lse);
  const auto r = cls::mixup_row<A>(to_acc(z[a]), to_acc(z[b]), a == b, rest, c);
  if (grad) {
    A* g = grad + row * C;
    for (int64_t k = threadIdx.x; k < C; k += kThreads) g[k] = cls::mixup_grad<A>(to_acc(z[k]), k == a, k == b, r, c);
  }
  if (threadIdx.x == 0) loss[row] = r.loss;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) elr_kernel(const T* __restrict__ logits,
                                                        const int64_t* __restrict__ targets,
                                                        const typename AccOf<T>::type* __restrict__ buffer_rows,
                                                        double beta, double lam, typename AccOf<T>::type* loss,
                                                        typename AccOf<T>::type* grad,
                                                        typename AccOf<T>::type* new_rows, int64_t C) {
  using A = typename AccOf<T>::type;
  __shared__ lsm::Lse<A> shared_lse[kWarps];
  __shared__ A shared_sum[kWarps];
  const int64_t row = blockIdx.x;
  const T* z = logits + row * C;
  const A* t = buffer_rows + row * C;
  A* nt = new_rows + row * C;
  const int64_t y = targets[row];
  if (y < 0 || y >= C) {
    if (threadIdx.x == 0) loss[row] = quiet_nan<A>();
    return;
  }
  lsm::Lse<A> part{A(0), A(0)};
  for (int64_t k = threadIdx.x; k < C; k += kThreads) part = lsm::lse_push(part, to_acc(z[k]));
  const A lse = lsm::lse_value(block_lse(part, shared_lse));
  cls::ElrSums<A> s{A(0), A(0), A(0), A(0), A(0)};
  for (int64_t k = threadIdx.x; k < C; k += kThreads) cls::elr_accumulate(s, lsm::exp_(to_acc(z[k]) - lse), t[k]);
  s.s = block_sum(s.s, shared_sum);
  s.tp = block_sum(s.tp, shared_sum);
  s.pp = block_sum(s.pp, shared_sum);
  s.tg = block_sum(s.tg, shared_sum);
  s.pg = block_sum(s.pg, shared_sum);
  const auto r = cls::elr_row<A>(s, lse, to_acc(z[y]), A(beta), A(lam));
  A* g = grad ? grad + row * C : nullptr;
  for (int64_t k = threadIdx.x; k < C; k += kThreads) {
    const A p = lsm::exp_(to_acc(z[k]) - lse);
    const A new_t = cls::elr_new_target(r, p, t[k]);
    nt[k] = new_t;
    if (g) g[k] = cls::elr_grad(r, p, new_t, k == y);
  }
  if (threadIdx.x == 0) loss[row] = r.loss;
}

template <typename T>
cudaError_t launch_mixup(const void* logits, const int64_t* classes, const void* coeffs, void* loss, void* grad,
                         int64_t B, int64_t C, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  mixup_kernel<T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
      static_cast<const T*>(logits), classes, static_cast<const A*>(coeffs), static_cast<A*>(loss),
      static_cast<A*>(grad), C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_elr(const void* logits, const int64_t* targets, const void* buffer_rows, double beta, double lam,
                       void* loss, void* grad, void* new_rows, int64_t B, int64_t C, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  elr_kernel<T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
      static_cast<const T*>(logits), targets, static_cast<const A*>(buffer_rows), beta, lam, static_cast<A*>(loss),
      static_cast<A*>(grad), static_cast<A*>(new_rows), C);
  return cudaGetLastError();
}

}  // namespace

cudaError_t mixup_rows(Dtype dtype, const void* logits, const int64_t* classes, const void* coeffs, void* loss,
                       void* grad, int64_t B, int64_t C, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32:
      return launch_mixup<float>(logits, classes, coeffs, loss, grad, B, C, stream);
    case Dtype::kFloat64:
      return launch_mixup<double>(logits, classes, coeffs, loss, grad, B, C, stream);
    case Dtype::kBFloat16:
      return launch_mixup<__nv_bfloat16>(logits, classes, coeffs, loss, grad, B, C, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t elr_rows(Dtype dtype, const void* logits, const int64_t* targets, const void* buffer_rows, double beta,
                     double lam, void* loss, void* grad, void* new_rows, int64_t B, int64_t C, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32:
      return launch_elr<float>(logits, targets, buffer_rows, beta, lam, loss, grad, new_rows, B, C, stream);
    case Dtype::kFloat64:
      return launch_elr<double>(logits, targets, buffer_rows, beta, lam, loss, grad, new_rows, B, C, stream);
    case Dtype::kBFloat16:
      return launch_elr<__nv_bfloat16>(logits, targets, buffer_rows, beta, lam, loss, grad, new_rows, B, C, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cls_cuda
}  // namespace regops
