// The argument contract of repulsion_fwd and repulsion_bwd (CPU and CUDA glue; contracts/repulsion.py is the same
// for Triton and the fake kernels). ATen glue only.
#pragma once
#include <string>
#include <vector>

#include "regops/checks.h"

namespace regops {

inline const std::vector<at::ScalarType> kRepulsionDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf};

inline std::string rep_index(const char* arg, size_t i) { return std::string(arg) + "[" + std::to_string(i) + "]"; }

// params and anchor_means: equal lengths, at least one tensor; params[0] on `type` and of a repulsion dtype;
// params[i] of params[0]'s device and dtype; anchor_means[i] of params[i]'s shape, dtype and device.
// Returns the contiguous params and anchor_means, in that order.
inline std::vector<at::Tensor> check_repulsion_lists(const char* op, at::TensorList params, at::TensorList anchor_means,
                                                     c10::DeviceType type) {
  REGOPS_CHECK_VALUE(params.size() > 0, op, "params", "at least one tensor", "an empty list");
  REGOPS_CHECK_VALUE(anchor_means.size() == params.size(), op, "anchor_means",
                     std::to_string(params.size()) + " tensors (as params)", std::to_string(anchor_means.size()));
  const size_t T = params.size();
  std::vector<at::Tensor> out(2 * T);
  for (size_t i = 0; i < T; ++i) {
    const auto& p = params[i];
    const auto pname = rep_index("params", i);
    if (i == 0) {
      check_device(op, pname, p, type);
      check_dtype_in(op, pname, p, kRepulsionDtypes);
    } else {
      check_same_device(op, pname, p, params[0], "params[0]");
      check_same_dtype(op, pname, p, params[0], "params[0]");
    }
    const auto& m = anchor_means[i];
    const auto mname = rep_index("anchor_means", i);
    REGOPS_CHECK_VALUE(m.sizes() == p.sizes(), op, mname, "shape " + shape_str(p.sizes()) + " (as " + pname + ")",
                       describe(m));
    check_same_dtype(op, mname, m, p, pname.c_str());
    check_same_device(op, mname, m, p, pname.c_str());
    out[i] = p.contiguous();
    out[T + i] = m.contiguous();
  }
  return out;
}

// grad_sums: 1-D, one entry per tensor, in the accumulation dtype of params, on params' device.
inline void check_repulsion_grad(const at::Tensor& grad_sums, at::TensorList params) {
  const char* op = "repulsion_bwd";
  const auto acc = acc_type(params[0].scalar_type());
  REGOPS_CHECK_VALUE(grad_sums.dim() == 1 && grad_sums.size(0) == static_cast<int64_t>(params.size()), op,
                     "grad_sums", "shape (" + std::to_string(params.size()) + ",) (one per param)", describe(grad_sums));
  REGOPS_CHECK_TYPE(grad_sums.scalar_type() == acc, op, "grad_sums",
                    "dtype " + dtype_name(acc) + " (the accumulation dtype of params)", describe(grad_sums));
  check_same_device(op, "grad_sums", grad_sums, params[0], "params[0]");
}

}  // namespace regops
