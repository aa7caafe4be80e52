// Torch glue of the CUDA fused log-softmax rows (logsoftmax_rows_kernels.cu): argument checks, contiguous rows,
// output allocation, launch on the current stream. Schemas: csrc/ops.cpp. Targets are validated by the public ops
// (python/regops/ops/preference.py) once per call; here only under REGOPS_CHECK_FINITE=1, which costs a host sync.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "logsoftmax_rows_kernels.h"
#include "regops/checks.h"
#include "regops/logsoftmax_checks.h"

namespace regops {
namespace {

constexpr const char* kOp = kLogsoftmaxOp;

lsm_cuda::Dtype kernel_dtype(at::ScalarType s) {
  return s == at::kFloat ? lsm_cuda::Dtype::kFloat32
         : s == at::kDouble ? lsm_cuda::Dtype::kFloat64
                            : lsm_cuda::Dtype::kBFloat16;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_impl(const at::Tensor& logits, const at::Tensor& targets,
                                                         const c10::optional<at::Tensor>& ref_logits,
                                                         const at::Tensor* grad_logp, const at::Tensor* grad_kl,
                                                         int64_t kl_mode, int64_t ignore_index, at::Tensor* inout) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t C = logits.size(0), V = logits.size(1);
  const auto acc = acc_type(logits.scalar_type());
  auto logp = at::empty({C}, logits.options().dtype(acc));
  auto ref_logp = at::empty({C}, logits.options().dtype(acc));
  auto kl = at::empty({C}, logits.options().dtype(acc));
  if (C == 0) return {logp, ref_logp, kl};
  const auto y = targets.contiguous();
  if (check_finite_requested()) {
    const auto ok = (y == ignore_index).logical_or_((y >= 0).logical_and_(y < V));
    REGOPS_CHECK_VALUE(ok.all().item<bool>(), kOp, "targets",
                       "class indices in [0, " + std::to_string(V) + ") or ignore_index " +
                           std::to_string(ignore_index),
                       "an index outside");
  }
  const auto z = logits.contiguous();
  const auto r = ref_logits.has_value() ? ref_logits->contiguous() : at::Tensor();
  const auto gl = grad_logp ? grad_logp->contiguous() : at::Tensor();
  const auto gk = grad_kl ? grad_kl->contiguous() : at::Tensor();
  at::Tensor out;
  if (inout) out = inout->is_contiguous() ? *inout : at::empty_like(z);
  C10_CUDA_CHECK(lsm_cuda::logsoftmax_rows(
      kernel_dtype(logits.scalar_type()), z.const_data_ptr(), r.defined() ? r.const_data_ptr() : nullptr,
      y.const_data_ptr<int64_t>(), gl.defined() ? gl.const_data_ptr() : nullptr,
      gk.defined() ? gk.const_data_ptr() : nullptr, inout ? out.mutable_data_ptr() : nullptr, logp.mutable_data_ptr(),
      ref_logp.mutable_data_ptr(), kl.mutable_data_ptr(), C, V, static_cast<int>(kl_mode), ignore_index,
      at::cuda::getCurrentCUDAStream().stream()));
  if (inout && !inout->is_contiguous()) inout->copy_(out);
  return {logp, ref_logp, kl};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> logsoftmax_rows_cuda(const at::Tensor& logits,
                                                                    const at::Tensor& targets,
                                                                    const c10::optional<at::Tensor>& ref_logits,
                                                                    int64_t kl_mode, int64_t ignore_index) {
  check_logsoftmax_rows(logits, targets, ref_logits, kl_mode, c10::DeviceType::CUDA);
  return rows_impl(logits, targets, ref_logits, nullptr, nullptr, kl_mode, ignore_index, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> logsoftmax_rows_grad_cuda(
    at::Tensor& logits, const at::Tensor& targets, const c10::optional<at::Tensor>& ref_logits,
    const at::Tensor& grad_logp, const at::Tensor& grad_kl, int64_t kl_mode, int64_t ignore_index) {
  check_logsoftmax_rows_grad(logits, targets, ref_logits, grad_logp, grad_kl, kl_mode, c10::DeviceType::CUDA);
  return rows_impl(logits, targets, ref_logits, &grad_logp, &grad_kl, kl_mode, ignore_index, &logits);
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) {
  m.impl("logsoftmax_rows", &regops::logsoftmax_rows_cuda);
  m.impl("logsoftmax_rows_grad_", &regops::logsoftmax_rows_grad_cuda);
}
