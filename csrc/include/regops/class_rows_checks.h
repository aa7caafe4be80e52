// The argument contract of mixup_rows and elr_rows (CPU and CUDA glue; contracts/class_rows.py is the same for
// Triton and the fake kernels). Messages name the schema: the public ops check their own arguments first.
#pragma once
#include <cmath>

#include "regops/checks.h"

namespace regops {

constexpr const char* kMixupRowsOp = "mixup_rows";
constexpr const char* kElrRowsOp = "elr_rows";

inline void check_class_logits(const char* op, const at::Tensor& logits, c10::DeviceType type) {
  check_dim(op, "logits", logits, 2, " (B, C)");
  check_float_dtype(op, "logits", logits);
  check_device(op, "logits", logits, type);
  REGOPS_CHECK_VALUE(logits.size(1) >= 1, op, "logits", "at least one class (B, C >= 1)", describe(logits));
}

inline void check_mixup_rows(const at::Tensor& logits, const at::Tensor& classes, const at::Tensor& coeffs,
                             c10::DeviceType type) {
  const char* op = kMixupRowsOp;
  check_class_logits(op, logits, type);
  check_shape(op, "classes", classes, {logits.size(0), 2}, " (B, 2): the two mixed classes of each row");
  check_dtype_in(op, "classes", classes, {at::kLong});
  check_same_device(op, "classes", classes, logits, "logits");
  check_shape(op, "coeffs", coeffs, {logits.size(0), 4}, " (B, 4): w_a, w_b, e_a, e_b");
  const auto acc = acc_type(logits.scalar_type());
  REGOPS_CHECK_TYPE(coeffs.scalar_type() == acc, op, "coeffs",
                    "dtype " + dtype_name(acc) + " (the accumulation dtype of logits)", describe(coeffs));
  check_same_device(op, "coeffs", coeffs, logits, "logits");
}

inline void check_elr_rows(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& buffer_rows,
                           double beta, double lam, c10::DeviceType type) {
  const char* op = kElrRowsOp;
  check_class_logits(op, logits, type);
  check_shape(op, "targets", targets, {logits.size(0)});
  check_dtype_in(op, "targets", targets, {at::kLong});
  check_same_device(op, "targets", targets, logits, "logits");
  check_shape(op, "buffer_rows", buffer_rows, {logits.size(0), logits.size(1)}, " (B, C), as logits");
  const auto acc = acc_type(logits.scalar_type());
  REGOPS_CHECK_TYPE(buffer_rows.scalar_type() == acc, op, "buffer_rows",
                    "dtype " + dtype_name(acc) + " (the accumulation dtype of logits)", describe(buffer_rows));
  check_same_device(op, "buffer_rows", buffer_rows, logits, "logits");
  REGOPS_CHECK_VALUE(beta >= 0.0 && beta < 1.0, op, "beta", "a value in [0, 1)", num_str(beta));
  REGOPS_CHECK_VALUE(std::isfinite(lam), op, "lam", "a finite number", num_str(lam));
}

}  // namespace regops
