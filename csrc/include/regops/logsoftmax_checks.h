// The argument contract of logsoftmax_rows / logsoftmax_rows_grad_ (CPU and CUDA glue; contracts/logsoftmax.py is
// the same for Triton and the fake kernels). Messages name the schema (torch.ops.regops.logsoftmax_rows): the
// public ops check their own arguments first.
#pragma once
#include "regops/checks.h"

namespace regops {

constexpr const char* kLogsoftmaxOp = "logsoftmax_rows";

inline void check_logsoftmax_rows(const at::Tensor& logits, const at::Tensor& targets,
                                  const c10::optional<at::Tensor>& ref_logits, int64_t kl_mode, c10::DeviceType type) {
  const char* op = kLogsoftmaxOp;
  check_dim(op, "logits", logits, 2, " (rows, V)");
  check_float_dtype(op, "logits", logits);
  check_device(op, "logits", logits, type);
  REGOPS_CHECK_VALUE(logits.size(1) >= 1, op, "logits", "at least one vocabulary entry (rows, V >= 1)",
                     describe(logits));
  check_shape(op, "targets", targets, {logits.size(0)});
  check_dtype_in(op, "targets", targets, {at::kLong});
  check_same_device(op, "targets", targets, logits, "logits");
  REGOPS_CHECK_VALUE(kl_mode >= 0 && kl_mode <= 2, op, "kl_mode", "0 (none), 1 (forward) or 2 (reverse)",
                     std::to_string(kl_mode));
  if (kl_mode == 0) {
    REGOPS_CHECK_VALUE(!ref_logits.has_value(), op, "ref_logits", "None for kl_mode 0", describe(*ref_logits));
  } else {
    REGOPS_CHECK_VALUE(ref_logits.has_value(), op, "ref_logits", "a tensor for kl_mode " + std::to_string(kl_mode),
                       "None");
    check_like(op, "ref_logits", *ref_logits, logits.sizes().vec(), logits, "logits");
  }
}

inline void check_logsoftmax_rows_grad(const at::Tensor& logits, const at::Tensor& targets,
                                       const c10::optional<at::Tensor>& ref_logits, const at::Tensor& grad_logp,
                                       const at::Tensor& grad_kl, int64_t kl_mode, c10::DeviceType type) {
  const char* op = kLogsoftmaxOp;
  check_logsoftmax_rows(logits, targets, ref_logits, kl_mode, type);
  const auto acc = acc_type(logits.scalar_type());
  for (const auto& [arg, g] : {std::pair<const char*, const at::Tensor*>{"grad_logp", &grad_logp},
                               std::pair<const char*, const at::Tensor*>{"grad_kl", &grad_kl}}) {
    check_shape(op, arg, *g, {logits.size(0)});
    REGOPS_CHECK_TYPE(g->scalar_type() == acc, op, arg,
                      "dtype " + dtype_name(acc) + " (the accumulation dtype of logits)", describe(*g));
    check_same_device(op, arg, *g, logits, "logits");
  }
}

}  // namespace regops
