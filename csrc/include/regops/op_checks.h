// Argument checks of the ops whose CPU and CUDA glue take the same arguments (graddrop_apply_,
// graddrop_keep_prob, p2ot_scaling_pass): written once, so both devices say the same things. ATen glue only.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "regops/checks.h"

namespace regops {

inline bool graddrop_dtype(at::ScalarType s) { return s == at::kFloat || s == at::kBFloat16 || s == at::kHalf; }

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
  REGOPS_CHECK_VALUE(lam >= 0 && lam <= 1, op, "lam", "a value in [0, 1]", std::to_string(lam));
  const size_t T = out.size();
  std::vector<at::Tensor> a(T), b(T);
  for (size_t i = 0; i < T; ++i) {
    const auto& o = out[i];
    const auto oname = at_index("out", i);
    if (i == 0) {
      check_device(op, oname.c_str(), o, type);
    } else {
      REGOPS_CHECK_DEVICE(o.device() == out[0].device(), op, oname,
                          "device " + c10::str(out[0].device()) + " (as out[0])", describe(o));
    }
    REGOPS_CHECK_TYPE(graddrop_dtype(o.scalar_type()), op, oname, "dtype float32, bfloat16 or float16", describe(o));
    REGOPS_CHECK_VALUE(o.is_contiguous(), op, oname, "a contiguous tensor (it is written in place)", describe(o));
    for (auto [arg, list] : {std::pair<const char*, at::TensorList>{"grads_task", grads_task}, {"grads_reg", grads_reg}}) {
      const auto& g = list[i];
      const auto name = at_index(arg, i);
      REGOPS_CHECK_DEVICE(g.device() == o.device(), op, name, "device " + c10::str(o.device()) + " (as out)",
                          describe(g));
      REGOPS_CHECK_TYPE(g.scalar_type() == o.scalar_type(), op, name,
                        "dtype " + c10::str(o.scalar_type()) + " (as " + oname + ")", describe(g));
      REGOPS_CHECK_VALUE(g.sizes() == o.sizes(), op, name, "shape " + c10::str(o.sizes()) + " (as " + oname + ")",
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
  REGOPS_CHECK_TYPE(graddrop_dtype(grad_task.scalar_type()), op, "grad_task", "dtype float32, bfloat16 or float16",
                    describe(grad_task));
  REGOPS_CHECK_TYPE(grad_reg.scalar_type() == grad_task.scalar_type(), op, "grad_reg",
                    "dtype " + c10::str(grad_task.scalar_type()) + " (as grad_task)", describe(grad_reg));
  REGOPS_CHECK_VALUE(grad_reg.sizes() == grad_task.sizes(), op, "grad_reg",
                     "shape " + c10::str(grad_task.sizes()) + " (as grad_task)", describe(grad_reg));
  REGOPS_CHECK_DEVICE(grad_reg.device() == grad_task.device(), op, "grad_reg",
                      "device " + c10::str(grad_task.device()) + " (as grad_task)", describe(grad_reg));
}

// p2ot_scaling_pass: kernel (N, Kc) float32/float64 on `type`; col_scale (Kc,), row_target (N,) like it.
inline void check_p2ot_pass(const at::Tensor& kernel, const at::Tensor& col_scale, const at::Tensor& row_target,
                            c10::DeviceType type) {
  const char* op = "p2ot_scaling_pass";
  REGOPS_CHECK_VALUE(kernel.dim() == 2, op, "kernel", "a 2-D tensor (N, Kc)", describe(kernel));
  const auto st = kernel.scalar_type();
  REGOPS_CHECK_TYPE(st == at::kFloat || st == at::kDouble, op, "kernel", "dtype float32 or float64", describe(kernel));
  check_device(op, "kernel", kernel, type);
  for (auto [arg, t, n] : {std::tuple<const char*, const at::Tensor*, int64_t>{"col_scale", &col_scale, kernel.size(1)},
                           {"row_target", &row_target, kernel.size(0)}}) {
    REGOPS_CHECK_VALUE(t->dim() == 1 && t->size(0) == n, op, arg, "shape (" + std::to_string(n) + ",)", describe(*t));
    REGOPS_CHECK_TYPE(t->scalar_type() == st, op, arg, "dtype " + c10::str(st) + " (as kernel)", describe(*t));
    REGOPS_CHECK_DEVICE(t->device() == kernel.device(), op, arg,
                        "device " + c10::str(kernel.device()) + " (as kernel)", describe(*t));
  }
}

}  // namespace regops
