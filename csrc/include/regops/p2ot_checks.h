// The argument contract of p2ot_scaling_pass (CPU and CUDA glue; contracts/p2ot.py is the same for Triton and the
// fake kernels).
#pragma once
#include "regops/checks.h"

namespace regops {

// p2ot_scaling_pass: kernel (N, Kc) float32/float64 on `type`; col_scale (Kc,), row_target (N,) like it.
inline void check_p2ot_pass(const at::Tensor& kernel, const at::Tensor& col_scale, const at::Tensor& row_target,
                            c10::DeviceType type) {
  const char* op = "p2ot_scaling_pass";
  check_dim(op, "kernel", kernel, 2, " (N, Kc)");
  check_dtype_in(op, "kernel", kernel, {at::kFloat, at::kDouble});
  check_device(op, "kernel", kernel, type);
  check_like(op, "col_scale", col_scale, {kernel.size(1)}, kernel, "kernel");
  check_like(op, "row_target", row_target, {kernel.size(0)}, kernel, "kernel");
}

}  // namespace regops
