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
#include "regops/p2ot_checks.h"

namespace regops {
namespace {

namespace pc = p2ot_cuda;

std::tuple<at::Tensor, at::Tensor> p2ot_scaling_pass_cuda(const at::Tensor& kernel, const at::Tensor& col_scale,
                                                          const at::Tensor& row_target) {
  check_p2ot_pass(kernel, col_scale, row_target, c10::DeviceType::CUDA);
  const int64_t N = kernel.size(0), Kc = kernel.size(1);
  const c10::cuda::CUDAGuard guard(kernel.device());
  if (N == 0 || Kc == 0) {
    // r_i is an empty sum (0) when Kc = 0: u = t/0, as the formula says; no rows give zero column sums.
    return {row_target.div(0), at::zeros({Kc}, kernel.options())};
  }
  const auto K = kernel.contiguous(), v = col_scale.contiguous(), t = row_target.contiguous();
  auto u = at::empty({N}, K.options());
  auto col = at::empty({Kc}, K.options());
  auto ws = at::empty({pc::scaling_pass_workspace(N, Kc)}, K.options().dtype(at::kDouble));
  C10_CUDA_CHECK(pc::scaling_pass(K.scalar_type() == at::kDouble ? pc::Dtype::kFloat64 : pc::Dtype::kFloat32, K.const_data_ptr(),
                                  v.const_data_ptr(), t.const_data_ptr(), u.mutable_data_ptr(), col.mutable_data_ptr(),
                                  N, Kc, ws.mutable_data_ptr<double>(), at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {u, col};
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) { m.impl("p2ot_scaling_pass", &regops::p2ot_scaling_pass_cuda); }
