// Torch glue of the CUDA classification-side row losses (class_rows_kernels.cu): argument checks, contiguous rows,
// output allocation, launch on the current stream. Schemas: csrc/ops.cpp. Class indices are validated by the public
// ops once per call; here only under REGOPS_CHECK_FINITE=1, which costs a host sync.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "class_rows_kernels.h"
#include "regops/checks.h"
#include "regops/class_rows_checks.h"

namespace regops {
namespace {

cls_cuda::Dtype kernel_dtype(at::ScalarType s) {
  return s == at::kFloat ? cls_cuda::Dtype::kFloat32
         : s == at::kDouble ? cls_cuda::Dtype::kFloat64
                            : cls_cuda::Dtype::kBFloat16;
}

void check_in_range_requested(const char* op, const char* arg, const at::Tensor& idx, int64_t C) {
  if (!check_finite_requested()) return;
  REGOPS_CHECK_VALUE(((idx >= 0).logical_and_(idx < C)).all().item<bool>(), op, arg,
                     "class indices in [0, " + std::to_string(C) + ")", "an index outside");
}

std::tuple<at::Tensor, at::Tensor> mixup_rows_cuda(const at::Tensor& logits, const at::Tensor& classes,
                                                   const at::Tensor& coeffs, bool want_grad) {
  check_mixup_rows(logits, classes, coeffs, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t B = logits.size(0), C = logits.size(1);
  const auto acc = acc_type(logits.scalar_type());
  auto loss = at::empty({B}, logits.options().dtype(acc));
  auto grad = at::empty({want_grad ? B : 0, C}, logits.options().dtype(acc));
  if (B == 0) return {loss, grad};
  const auto ab = classes.contiguous();
  check_in_range_requested(kMixupRowsOp, "classes", ab, C);
  const auto z = logits.contiguous();
  const auto co = coeffs.contiguous();
  C10_CUDA_CHECK(cls_cuda::mixup_rows(kernel_dtype(logits.scalar_type()), z.const_data_ptr(),
                                      ab.const_data_ptr<int64_t>(), co.const_data_ptr(), loss.mutable_data_ptr(),
                                      want_grad ? grad.mutable_data_ptr() : nullptr, B, C,
                                      at::cuda::getCurrentCUDAStream().stream()));
  return {loss, grad};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> elr_rows_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                                             const at::Tensor& buffer_rows, double beta, double lam,
                                                             bool want_grad) {
  check_elr_rows(logits, targets, buffer_rows, beta, lam, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t B = logits.size(0), C = logits.size(1);
  const auto acc = acc_type(logits.scalar_type());
  auto loss = at::empty({B}, logits.options().dtype(acc));
  auto grad = at::empty({want_grad ? B : 0, C}, logits.options().dtype(acc));
  auto new_rows = at::empty({B, C}, logits.options().dtype(acc));
  if (B == 0) return {loss, grad, new_rows};
  const auto y = targets.contiguous();
  check_in_range_requested(kElrRowsOp, "targets", y, C);
  const auto z = logits.contiguous();
  const auto t = buffer_rows.contiguous();
  C10_CUDA_CHECK(cls_cuda::elr_rows(kernel_dtype(logits.scalar_type()), z.const_data_ptr(),
                                    y.const_data_ptr<int64_t>(), t.const_data_ptr(), beta, lam,
                                    loss.mutable_data_ptr(), want_grad ? grad.mutable_data_ptr() : nullptr,
                                    new_rows.mutable_data_ptr(), B, C, at::cuda::getCurrentCUDAStream().stream()));
  return {loss, grad, new_rows};
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) {
  m.impl("mixup_rows", &regops::mixup_rows_cuda);
  m.impl("elr_rows", &regops::elr_rows_cuda);
}
