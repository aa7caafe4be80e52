// Torch glue of the CUDA kernels of P²OT's fused scaling pass (p2ot_kernels.cu): argument checks, output and
// workspace allocation, launch on the current stream. Schema: csrc/ops.cpp (p2ot_scaling_pass); the CPU kernel:
// csrc/cpu/p2ot.cpp.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // at::cuda::getCurrentCUDAStream, without ATen/cuda/CUDAContext.h's
                                  // cuSPARSE/cuBLAS headers (absent from some CUDA_HOME installs)
#include <torch/library.h>

#include <string>
#include <tuple>

#include "p2ot_kernels.h"
#include "regops/checks.h"

namespace regops {
namespace {

namespace pc = p2ot_cuda;

constexpr const char* kOp = "p2ot_scaling_pass";

// A 1-D tensor of n elements in the dtype and on the device of kernel.
void check_vector(const char* arg, const at::Tensor& t, int64_t n, const at::Tensor& kernel) {
  REGOPS_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, kOp, arg, "shape (" + std::to_string(n) + ",)", describe(t));
  REGOPS_CHECK_TYPE(t.scalar_type() == kernel.scalar_type(), kOp, arg,
                    "dtype " + c10::str(kernel.scalar_type()) + " (as kernel)", describe(t));
  REGOPS_CHECK_DEVICE(t.device() == kernel.device(), kOp, arg, "device " + c10::str(kernel.device()) + " (as kernel)",
                      describe(t));
}

std::tuple<at::Tensor, at::Tensor> p2ot_scaling_pass_cuda(const at::Tensor& kernel, const at::Tensor& col_scale,
                                                          const at::Tensor& row_target) {
  REGOPS_CHECK_VALUE(kernel.dim() == 2, kOp, "kernel", "a 2-D tensor (N, Kc)", describe(kernel));
  const auto st = kernel.scalar_type();
  REGOPS_CHECK_TYPE(st == at::kFloat || st == at::kDouble, kOp, "kernel", "dtype float32 or float64",
                    describe(kernel));
  check_device(kOp, "kernel", kernel, c10::DeviceType::CUDA);
  const int64_t N = kernel.size(0), Kc = kernel.size(1);
  check_vector("col_scale", col_scale, Kc, kernel);
  check_vector("row_target", row_target, N, kernel);
  const c10::cuda::CUDAGuard guard(kernel.device());
  if (N == 0 || Kc == 0) {
    // r_i is an empty sum (0) when Kc = 0: u = t/0, as the formula says; no rows give zero column sums.
    return {row_target.div(0), at::zeros({Kc}, kernel.options())};
  }
  const auto K = kernel.contiguous(), v = col_scale.contiguous(), t = row_target.contiguous();
  auto u = at::empty({N}, K.options());
  auto col = at::empty({Kc}, K.options());
  auto ws = at::empty({pc::scaling_pass_workspace(N, Kc)}, K.options().dtype(at::kDouble));
  C10_CUDA_CHECK(pc::scaling_pass(st == at::kDouble ? pc::Dtype::kFloat64 : pc::Dtype::kFloat32, K.const_data_ptr(),
                                  v.const_data_ptr(), t.const_data_ptr(), u.mutable_data_ptr(), col.mutable_data_ptr(),
                                  N, Kc, ws.mutable_data_ptr<double>(), at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {u, col};
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) { m.impl("p2ot_scaling_pass", &regops::p2ot_scaling_pass_cuda); }
