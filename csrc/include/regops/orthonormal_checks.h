// The argument contract of orthonormal_penalty_fwd / _bwd (CPU and CUDA glue; contracts/orthonormal.py is the
// same for Triton and the fake kernels). Messages name the public op, orthonormal_penalty.
#pragma once
#include "regops/checks.h"

namespace regops {

constexpr const char* kOrthonormalOp = "orthonormal_penalty";

inline void check_orthonormal_fwd(const at::Tensor& mats, c10::DeviceType type) {
  const char* op = kOrthonormalOp;
  check_dim(op, "mats", mats, 3, " (L, p, q)");
  check_float_dtype(op, "mats", mats);
  check_device(op, "mats", mats, type);
}

inline void check_orthonormal_bwd(const at::Tensor& grad_values, const at::Tensor& mats, const at::Tensor& residual,
                                  c10::DeviceType type) {
  const char* op = kOrthonormalOp;
  check_orthonormal_fwd(mats, type);
  const int64_t L = mats.size(0), p = mats.size(1);
  check_shape(op, "grad_values", grad_values, {L});
  check_float_dtype(op, "grad_values", grad_values);
  check_same_device(op, "grad_values", grad_values, mats, "mats");
  check_shape(op, "residual", residual, {L, p, p});
  const auto acc = acc_type(mats.scalar_type());
  REGOPS_CHECK_TYPE(residual.scalar_type() == acc, op, "residual",
                    "dtype " + dtype_name(acc) + " (the accumulation dtype of mats)", describe(residual));
  check_same_device(op, "residual", residual, mats, "mats");
}

}  // namespace regops
