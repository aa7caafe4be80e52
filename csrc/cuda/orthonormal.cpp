// Torch glue of the CUDA orthonormality-penalty kernels: argument checks, output allocation, launch on
// the current stream. The kernels themselves (orthonormal_kernels.cu) see only raw pointers and strides.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // at::cuda::getCurrentCUDAStream, without ATen/cuda/CUDAContext.h's
                                  // cuSPARSE/cuBLAS headers (absent from some CUDA_HOME installs)
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>

#include "orthonormal_kernels.h"
#include "regops/checks.h"

namespace regops {
namespace {

constexpr const char* kOp = "orthonormal_penalty";  // the same op name as the CPU kernel's messages

ortho_cuda::Dtype kernel_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return ortho_cuda::Dtype::kFloat32;
    case at::kDouble: return ortho_cuda::Dtype::kFloat64;
    case at::kBFloat16: return ortho_cuda::Dtype::kBFloat16;
    default: break;
  }
  TORCH_CHECK(false, "regops.", kOp, ": internal error: no CUDA kernel for dtype ", s);
  return ortho_cuda::Dtype::kFloat32;  // unreachable
}

// On CUDA the finiteness check costs a host sync, so it runs only on request (as regops._checks says).
bool check_finite_requested() {
  const char* v = std::getenv("REGOPS_CHECK_FINITE");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

void check_mats(const at::Tensor& mats) {
  check_dim(kOp, "mats", mats, 3);
  check_float_dtype(kOp, "mats", mats);
  check_device(kOp, "mats", mats, c10::DeviceType::CUDA);
}

// A second tensor must sit on the very device of mats: the kernels dereference its pointer there.
void check_same_device(const char* arg, const at::Tensor& t, const at::Tensor& mats) {
  REGOPS_CHECK_DEVICE(t.device() == mats.device(), kOp, arg, "device " + c10::str(mats.device()) + " (as mats)",
                      describe(t));
}

std::tuple<at::Tensor, at::Tensor> orthonormal_penalty_fwd_cuda(const at::Tensor& mats, bool squared) {
  check_mats(mats);
  const c10::cuda::CUDAGuard guard(mats.device());
  const int64_t L = mats.size(0), p = mats.size(1), q = mats.size(2);
  const auto acc = acc_type(mats.scalar_type());
  auto values = at::empty({L}, mats.options());
  auto residual = at::empty({L, p, p}, mats.options().dtype(acc));
  if (L == 0) return {values, residual};

  C10_CUDA_CHECK(ortho_cuda::orthonormal_penalty_fwd(
      kernel_dtype(mats.scalar_type()), mats.const_data_ptr(), L, p, q, mats.stride(0), mats.stride(1),
      mats.stride(2), squared, values.mutable_data_ptr(), residual.mutable_data_ptr(),
      at::cuda::getCurrentCUDAStream().stream()));

  if (check_finite_requested()) {
    const auto finite = at::isfinite(values);
    if (!finite.all().item<bool>()) {
      const int64_t bad = at::logical_not(finite).nonzero()[0][0].item<int64_t>();  // first bad matrix
      REGOPS_CHECK_VALUE(false, kOp, "mats", "finite values",
                         "a non-finite penalty for matrix " + std::to_string(bad) +
                             " (the input holds NaN/Inf or overflows)");
    }
  }
  return {values, residual};
}

at::Tensor orthonormal_penalty_bwd_cuda(const at::Tensor& grad_values, const at::Tensor& mats,
                                        const at::Tensor& residual, bool squared) {
  check_mats(mats);
  const int64_t L = mats.size(0), p = mats.size(1), q = mats.size(2);
  REGOPS_CHECK_VALUE(grad_values.dim() == 1 && grad_values.size(0) == L, kOp, "grad_values",
                     "shape (" + std::to_string(L) + ")", describe(grad_values));
  check_float_dtype(kOp, "grad_values", grad_values);
  check_same_device("grad_values", grad_values, mats);
  REGOPS_CHECK_VALUE(residual.dim() == 3 && residual.size(0) == L && residual.size(1) == p && residual.size(2) == p,
                     kOp, "residual",
                     "shape (" + std::to_string(L) + ", " + std::to_string(p) + ", " + std::to_string(p) + ")",
                     describe(residual));
  const auto acc = acc_type(mats.scalar_type());
  REGOPS_CHECK_TYPE(residual.scalar_type() == acc, kOp, "residual", "dtype " + c10::str(acc) + " (the accumulation dtype of mats)",
                    describe(residual));
  check_same_device("residual", residual, mats);

  const c10::cuda::CUDAGuard guard(mats.device());
  // Same shape and strides as mats (empty_like keeps the strides of a dense view, e.g. a transpose);
  // the kernel writes through whatever strides it got.
  auto grad = at::empty_like(mats);
  if (grad.numel() == 0) return grad;
  const auto R = residual.contiguous();                  // the kernels read R as contiguous (L, p, p)
  auto coef = at::empty({L}, mats.options().dtype(acc));  // per-matrix coefficient, written by the kernel

  C10_CUDA_CHECK(ortho_cuda::orthonormal_penalty_bwd(
      kernel_dtype(mats.scalar_type()), kernel_dtype(grad_values.scalar_type()), grad_values.const_data_ptr(),
      grad_values.stride(0), mats.const_data_ptr(), L, p, q, mats.stride(0), mats.stride(1), mats.stride(2),
      R.const_data_ptr(), squared, coef.mutable_data_ptr(), grad.mutable_data_ptr(), grad.stride(0), grad.stride(1),
      grad.stride(2), at::cuda::getCurrentCUDAStream().stream()));
  return grad;
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) {
  m.impl("orthonormal_penalty_fwd", &regops::orthonormal_penalty_fwd_cuda);
  m.impl("orthonormal_penalty_bwd", &regops::orthonormal_penalty_bwd_cuda);
}
