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
#include "sinkhorn_kernels.h"

namespace regops {
namespace {

namespace sk = sinkhorn_cuda;

constexpr const char* kUpdate = "sinkhorn_update";
constexpr const char* kDense = "sinkhorn_update_dense";
constexpr const char* kGrad = "sinkhorn_cost_grad";
constexpr const char* kApply = "sinkhorn_apply";

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t k = 0; k < s.size(); ++k) r += (k ? ", " : "") + std::to_string(s[k]);
  return r + (s.size() == 1 ? ",)" : ")");
}

sk::Dtype dtype_of(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? sk::Dtype::kFloat64 : sk::Dtype::kFloat32;
}

// The first tensor of an op: `dim`-D, float32 or float64, on a CUDA device.
void check_lead(const char* op, const char* arg, const at::Tensor& t, int64_t dim) {
  check_dim(op, arg, t, dim);
  const auto s = t.scalar_type();
  REGOPS_CHECK_TYPE(s == at::kFloat || s == at::kDouble, op, arg, "dtype float32 or float64", describe(t));
  check_device(op, arg, t, c10::DeviceType::CUDA);
}

void check_dtype_device(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& ref,
                        const char* ref_arg) {
  REGOPS_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, arg,
                    "dtype " + c10::str(ref.scalar_type()) + " (as " + ref_arg + ")", describe(t));
  REGOPS_CHECK_DEVICE(t.device() == ref.device(), op, arg, "device " + c10::str(ref.device()) + " (as " + ref_arg + ")",
                      describe(t));
}

// A tensor of the given shape in the dtype and on the device of ref; returned contiguous.
at::Tensor shaped(const char* op, const char* arg, const at::Tensor& t, const std::vector<int64_t>& shape,
                  const char* what, const at::Tensor& ref, const char* ref_arg) {
  REGOPS_CHECK_VALUE(t.sizes() == at::IntArrayRef(shape), op, arg, "shape " + shape_str(shape) + what, describe(t));
  check_dtype_device(op, arg, t, ref, ref_arg);
  return t.contiguous();
}

void check_cost(const char* op, int64_t cost) {
  REGOPS_CHECK_VALUE(cost >= 0 && cost <= 2, op, "cost", "0 (sqeuclidean), 1 (euclidean) or 2 (cosine)",
                     std::to_string(cost));
}

// x (B, N, d) and y (B, M, d), both contiguous, with the op's eps (B,) and cost.
struct Clouds {
  at::Tensor x, y, eps;
  sk::Clouds c{};
};

Clouds clouds(const char* op, const at::Tensor& x, const at::Tensor& y, const at::Tensor& eps, int64_t cost) {
  Clouds r;
  check_cost(op, cost);
  const int64_t B = x.size(0), N = x.size(1), d = x.size(2);
  check_dim(op, "y", y, 3);
  REGOPS_CHECK_VALUE(y.size(0) == B && y.size(2) == d, op, "y",
                     "shape (" + std::to_string(B) + ", M, " + std::to_string(d) + ") (the batch and width of x)",
                     describe(y));
  check_dtype_device(op, "y", y, x, "x");
  // An empty y leaves the update's log-sum-exp at -inf; every op refuses it, as the CPU kernel does.
  REGOPS_CHECK_VALUE(y.size(1) >= 1, op, "y", "at least one point (M >= 1)", describe(y));
  r.eps = shaped(op, "eps", eps, {B}, " (one eps per problem)", x, "x");
  r.x = x.contiguous();
  r.y = y.contiguous();
  sk::Clouds& c = r.c;
  c.dtype = dtype_of(x);
  c.x = r.x.const_data_ptr();
  c.y = r.y.const_data_ptr();
  c.eps = r.eps.const_data_ptr();
  c.B = B;
  c.N = N;
  c.M = y.size(1);
  c.d = d;
  c.cost = static_cast<int>(cost);
  return r;
}

at::Tensor workspace(int64_t elems, const at::Tensor& like) {
  return at::empty({std::max<int64_t>(elems, 1)}, like.options());
}

at::Tensor sinkhorn_update_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& pot, const at::Tensor& log_w,
                                const at::Tensor& tau, const at::Tensor& eps, int64_t cost) {
  check_lead(kUpdate, "x", x, 3);
  const c10::cuda::CUDAGuard guard(x.device());
  const Clouds r = clouds(kUpdate, x, y, eps, cost);
  const int64_t B = r.c.B, N = r.c.N, M = r.c.M;
  const auto p = shaped(kUpdate, "pot", pot, {B, M}, " (B, M): one potential per point of y", x, "x");
  const auto lw = shaped(kUpdate, "log_w", log_w, {B, N}, " (B, N): one log-weight per point of x", x, "x");
  const auto t = shaped(kUpdate, "tau", tau, {B, N}, " (B, N)", x, "x");
  auto out = at::empty({B, N}, r.x.options());
  if (B == 0 || N == 0) return out;
  auto ws = workspace(sk::update_workspace(r.c), r.x);
  C10_CUDA_CHECK(sk::update(r.c, p.const_data_ptr(), lw.const_data_ptr(), t.const_data_ptr(), out.mutable_data_ptr(),
                            ws.mutable_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor sinkhorn_update_dense_cuda(const at::Tensor& cost_matrix, const at::Tensor& pot, const at::Tensor& log_w,
                                      const at::Tensor& tau, const at::Tensor& eps, bool transpose) {
  const char* op = kDense;
  check_lead(op, "cost_matrix", cost_matrix, 3);
  const c10::cuda::CUDAGuard guard(cost_matrix.device());
  const at::Tensor& C = cost_matrix;
  const int64_t B = C.size(0), N = C.size(1), M = C.size(2);
  // transpose=false reduces over the columns j (pot along them), else over the rows i.
  const int64_t reduced = transpose ? N : M, kept = transpose ? M : N;
  const char* cm = "cost_matrix";
  const auto p = shaped(op, "pot", pot, {B, reduced},
                        transpose ? " (B, N): one potential per row of cost_matrix (transpose=True)"
                                  : " (B, M): one potential per column of cost_matrix (transpose=False)",
                        C, cm);
  const char* kept_what = transpose ? " (B, M) (transpose=True)" : " (B, N) (transpose=False)";
  const auto lw = shaped(op, "log_w", log_w, {B, kept}, kept_what, C, cm);
  const auto t = shaped(op, "tau", tau, {B, kept}, kept_what, C, cm);
  const auto e = shaped(op, "eps", eps, {B}, " (one eps per problem)", C, cm);
  REGOPS_CHECK_VALUE(reduced >= 1, op, cm,
                     transpose ? "at least one row (N >= 1: the log-sum-exp over no rows is -inf)"
                               : "at least one column (M >= 1: the log-sum-exp over no columns is -inf)",
                     describe(C));
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
  check_lead(kGrad, "x", x, 3);
  const c10::cuda::CUDAGuard guard(x.device());
  const Clouds r = clouds(kGrad, x, y, eps, cost);
  const int64_t B = r.c.B, N = r.c.N, M = r.c.M, d = r.c.d;
  const auto fc = shaped(kGrad, "f", f, {B, N}, " (B, N): the potential of x", x, "x");
  const auto gc = shaped(kGrad, "g", g, {B, M}, " (B, M): the potential of y", x, "x");
  auto out = at::empty({B, N, d}, r.x.options());
  if (out.numel() == 0) return out;
  auto ws = workspace(sk::plan_workspace(r.c, d), r.x);
  C10_CUDA_CHECK(sk::cost_grad(r.c, fc.const_data_ptr(), gc.const_data_ptr(), out.mutable_data_ptr(),
                               ws.mutable_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor sinkhorn_apply_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& f, const at::Tensor& g,
                               const at::Tensor& v, const at::Tensor& eps, int64_t cost) {
  check_lead(kApply, "x", x, 3);
  const c10::cuda::CUDAGuard guard(x.device());
  const Clouds r = clouds(kApply, x, y, eps, cost);
  const int64_t B = r.c.B, N = r.c.N, M = r.c.M;
  const auto fc = shaped(kApply, "f", f, {B, N}, " (B, N): the potential of x", x, "x");
  const auto gc = shaped(kApply, "g", g, {B, M}, " (B, M): the potential of y", x, "x");
  check_dim(kApply, "v", v, 3);
  REGOPS_CHECK_VALUE(v.size(0) == B && v.size(1) == M, kApply, "v",
                     "shape (" + std::to_string(B) + ", " + std::to_string(M) + ", k) (one row per point of y)",
                     describe(v));
  check_dtype_device(kApply, "v", v, x, "x");
  const auto vc = v.contiguous();
  const int64_t k = v.size(2);
  auto out = at::empty({B, N, k}, r.x.options());
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
