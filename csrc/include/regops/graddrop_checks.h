// The argument contract of graddrop_apply_ and graddrop_keep_prob (CPU and CUDA glue; contracts/graddrop.py is
// the same for Triton and the fake kernels). ATen glue only.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "regops/checks.h"

namespace regops {

inline const std::vector<at::ScalarType> kGraddropDtypes = {at::kFloat, at::kBFloat16, at::kHalf};

inline std::string at_index(const char* arg, size_t i) { return std::string(arg) + "[" + std::to_string(i) + "]"; }

// graddrop_apply_'s lists: equal lengths, lam in [0, 1], and per index out[i] (on `type`, on out[0]'s device, a
// graddrop dtype, contiguous) with grads_task[i], grads_reg[i] of its device, dtype and shape. Returns the
// contiguous grads_task and grads_reg.
inline std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> check_graddrop_lists(
    at::TensorList out, at::TensorList grads_task, at::TensorList grads_reg, double lam, c10::DeviceType type) {
  const char* op = "graddrop_";
  REGOPS_CHECK_VALUE(grads_task.size() == out.size(), op, "grads_task",
                     std::to_string(out.size()) + " tensors (as out)", std::to_string(grads_task.size()));
  REGOPS_CHECK_VALUE(grads_reg.size() == out.size(), op, "grads_reg",
                     std::to_string(out.size()) + " tensors (as out)", std::to_string(grads_reg.size()));
  REGOPS_CHECK_VALUE(lam >= 0 && lam <= 1, op, "lam", "a value in [0, 1]", num_str(lam));
  const size_t T = out.size();
  std::vector<at::Tensor> a(T), b(T);
  for (size_t i = 0; i < T; ++i) {
    const auto& o = out[i];
    const auto oname = at_index("out", i);
    if (i == 0) {
      check_device(op, oname.c_str(), o, type);
    } else {
      check_same_device(op, oname, o, out[0], "out[0]");
    }
    check_dtype_in(op, oname, o, kGraddropDtypes);
    REGOPS_CHECK_VALUE(o.is_contiguous(), op, oname, "a contiguous tensor (it is written in place)", describe(o));
    for (auto [arg, list] : {std::pair<const char*, at::TensorList>{"grads_task", grads_task}, {"grads_reg", grads_reg}}) {
      const auto& g = list[i];
      const auto name = at_index(arg, i);
      check_same_device(op, name, g, o, oname.c_str());
      check_same_dtype(op, name, g, o, oname.c_str());
      REGOPS_CHECK_VALUE(g.sizes() == o.sizes(), op, name, "shape " + shape_str(o.sizes()) + " (as " + oname + ")",
                         describe(g));
    }
    a[i] = grads_task[i].contiguous();
    b[i] = grads_reg[i].contiguous();
  }
  return {std::move(a), std::move(b)};
}

inline void check_graddrop_pair(const at::Tensor& grad_task, const at::Tensor& grad_reg, c10::DeviceType type) {
  const char* op = "graddrop_keep_prob";
  check_device(op, "grad_task", grad_task, type);
  check_dtype_in(op, "grad_task", grad_task, kGraddropDtypes);
  check_same_dtype(op, "grad_reg", grad_reg, grad_task, "grad_task");
  REGOPS_CHECK_VALUE(grad_reg.sizes() == grad_task.sizes(), op, "grad_reg",
                     "shape " + shape_str(grad_task.sizes()) + " (as grad_task)", describe(grad_reg));
  check_same_device(op, "grad_reg", grad_reg, grad_task, "grad_task");
}

}  // namespace regops
