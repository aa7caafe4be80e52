// Torch glue of the CUDA kernels of the streamed log-domain Sinkhorn (sinkhorn_kernels.cu): argument checks,
// output and workspace allocation, launch on the current stream. The kernels see only raw pointers to contiguous
// rows. Schemas and semantics: csrc/ops.cpp; the oracle: python/regops/reference/sinkhorn.py.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // at::cuda::getCurrentCUDAStream, without ATen/cuda/CUDAContext.h's
                                  // cuSPARSE/cuBLAS headers (absent from some CUDA_HOME installs)
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "regops/checks.h"
#include "regops/sinkhorn_checks.h"
#include "sinkhorn_kernels.h"

namespace regops {
namespace {

namespace sk = sinkhorn_cuda;

sk::Dtype dtype_of(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? sk::Dtype::kFloat64 : sk::Dtype::kFloat32;
}

// The kernels' view of checked clouds x (B, N, d), y (B, M, d) and eps (B,), all contiguous (kept alive here).
struct Clouds {
  at::Tensor x, y, eps;
  sk::Clouds c{};
};

Clouds clouds(const SinkhornSizes& s, const at::Tensor& x, const at::Tensor& y, const at::Tensor& eps, int64_t cost) {
  Clouds r;
  r.x = x.contiguous();
  r.y = y.contiguous();
  r.eps = eps.contiguous();
  sk::Clouds& c = r.c;
  c.dtype = dtype_of(x);
  c.x = r.x.const_data_ptr();
  c.y = r.y.const_data_ptr();
  c.eps = r.eps.const_data_ptr();
  c.B = s.B;
  c.N = s.N;
  c.M = s.M;
  c.d = s.d;
  c.cost = static_cast<int>(cost);
  return r;
}

at::Tensor workspace(int64_t elems, const at::Tensor& like) {
  return at::empty({std::max<int64_t>(elems, 1)}, like.options());
}

at::Tensor sinkhorn_update_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& pot, const at::Tensor& log_w,
                                const at::Tensor& tau, const at::Tensor& eps, int64_t cost) {
  const auto s = check_sinkhorn_update(x, y, pot, log_w, tau, eps, cost, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  const Clouds r = clouds(s, x, y, eps, cost);
  const auto p = pot.contiguous(), lw = log_w.contiguous(), t = tau.contiguous();
  auto out = at::empty({s.B, s.N}, r.x.options());
  if (s.B == 0 || s.N == 0) return out;
  auto ws = workspace(sk::update_workspace(r.c), r.x);
  C10_CUDA_CHECK(sk::update(r.c, p.const_data_ptr(), lw.const_data_ptr(), t.const_data_ptr(), out.mutable_data_ptr(),
                            ws.mutable_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor sinkhorn_update_dense_cuda(const at::Tensor& C, const at::Tensor& pot, const at::Tensor& log_w,
                                      const at::Tensor& tau, const at::Tensor& eps, bool transpose) {
  check_sinkhorn_dense(C, pot, log_w, tau, eps, transpose, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(C.device());
  const int64_t B = C.size(0), N = C.size(1), M = C.size(2);
  const int64_t kept = transpose ? M : N;  // transpose=false reduces over the columns j, else over the rows i
  const auto p = pot.contiguous(), lw = log_w.contiguous(), t = tau.contiguous(), e = eps.contiguous();
  auto out = at::empty({B, kept}, C.options());
  if (B == 0 || kept == 0) return out;
  const auto Cc = C.contiguous();  // read in its row-major layout either way (no transposed copy)
  C10_CUDA_CHECK(sk::update_dense(dtype_of(Cc), Cc.const_data_ptr(), B, N, M, p.const_data_ptr(), lw.const_data_ptr(),
                                  t.const_data_ptr(), e.const_data_ptr(), transpose, out.mutable_data_ptr(),
                                  at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor sinkhorn_cost_grad_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& f, const at::Tensor& g,
                                   const at::Tensor& eps, int64_t cost) {
  const auto s = check_sinkhorn_weighted("sinkhorn_cost_grad", x, y, f, g, nullptr, eps, cost, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  const Clouds r = clouds(s, x, y, eps, cost);
  const auto fc = f.contiguous(), gc = g.contiguous();
  auto out = at::empty({s.B, s.N, s.d}, r.x.options());
  if (out.numel() == 0) return out;
  auto ws = workspace(sk::plan_workspace(r.c, s.d), r.x);
  C10_CUDA_CHECK(sk::cost_grad(r.c, fc.const_data_ptr(), gc.const_data_ptr(), out.mutable_data_ptr(),
                               ws.mutable_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor sinkhorn_apply_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& f, const at::Tensor& g,
                               const at::Tensor& v, const at::Tensor& eps, int64_t cost) {
  const auto s = check_sinkhorn_weighted("sinkhorn_apply", x, y, f, g, &v, eps, cost, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  const Clouds r = clouds(s, x, y, eps, cost);
  const auto fc = f.contiguous(), gc = g.contiguous(), vc = v.contiguous();
  const int64_t k = v.size(2);
  auto out = at::empty({s.B, s.N, k}, r.x.options());
  if (out.numel() == 0) return out;
  auto ws = workspace(sk::plan_workspace(r.c, k), r.x);
  C10_CUDA_CHECK(sk::apply(r.c, fc.const_data_ptr(), gc.const_data_ptr(), vc.const_data_ptr(), k,
                           out.mutable_data_ptr(), ws.mutable_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) {
  m.impl("sinkhorn_update", &regops::sinkhorn_update_cuda);
  m.impl("sinkhorn_update_dense", &regops::sinkhorn_update_dense_cuda);
  m.impl("sinkhorn_cost_grad", &regops::sinkhorn_cost_grad_cuda);
  m.impl("sinkhorn_apply", &regops::sinkhorn_apply_cuda);
}
