// Torch glue of the CUDA orthonormality-penalty kernels: argument checks, output allocation, launch on
// the current stream. The kernels themselves (orthonormal_kernels.cu) see only raw pointers and strides.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // at::cuda::getCurrentCUDAStream, without ATen/cuda/CUDAContext.h's
                                  // cuSPARSE/cuBLAS headers (absent from some CUDA_HOME installs)
#include <torch/library.h>

#include <string>
#include <tuple>

#include "orthonormal_kernels.h"
#include "regops/checks.h"
#include "regops/orthonormal_checks.h"

namespace regops {
namespace {

constexpr const char* kOp = kOrthonormalOp;

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

std::tuple<at::Tensor, at::Tensor> orthonormal_penalty_fwd_cuda(const at::Tensor& mats, bool squared) {
  check_orthonormal_fwd(mats, c10::DeviceType::CUDA);
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

  check_finite_result(kOp, "mats", values, "penalty for matrix");
  return {values, residual};
}

at::Tensor orthonormal_penalty_bwd_cuda(const at::Tensor& grad_values, const at::Tensor& mats,
                                        const at::Tensor& residual, bool squared) {
  check_orthonormal_bwd(grad_values, mats, residual, c10::DeviceType::CUDA);
  const int64_t L = mats.size(0), p = mats.size(1), q = mats.size(2);
  const auto acc = acc_type(mats.scalar_type());

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
