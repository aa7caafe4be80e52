// The argument contract of spectral_power and spectral_outer (CPU and CUDA glue; contracts/spectral.py is the same
// for Triton and the fake kernels). ATen glue only.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "regops/checks.h"

namespace regops {

inline const std::vector<at::ScalarType> kSpectralDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf};

inline std::string spec_index(const char* arg, size_t i) { return std::string(arg) + "[" + std::to_string(i) + "]"; }

// weights: at least one non-empty 2-D matrix, weights[0] on `type` and of a spectral dtype, the others of its dtype
// and device; u (sum of h_l,) and v (sum of w_l,): the vectors of all matrices one after the other, in the
// accumulation dtype on that device. Returns the contiguous weights.
inline std::vector<at::Tensor> check_spectral_lists(const char* op, at::TensorList weights, const at::Tensor& u,
                                                    const at::Tensor& v, c10::DeviceType type) {
  REGOPS_CHECK_VALUE(weights.size() > 0, op, "weights", "at least one matrix", "an empty list");
  std::vector<at::Tensor> out(weights.size());
  int64_t rows = 0, cols = 0;
  for (size_t l = 0; l < weights.size(); ++l) {
    const auto& W = weights[l];
    const auto wname = spec_index("weights", l);
    if (l == 0) {
      check_device(op, wname, W, type);
      check_dtype_in(op, wname, W, kSpectralDtypes);
    } else {
      check_same_device(op, wname, W, weights[0], "weights[0]");
      check_same_dtype(op, wname, W, weights[0], "weights[0]");
    }
    check_dim(op, wname, W, 2, " (out, in): a weight viewed as a matrix");
    REGOPS_CHECK_VALUE(W.numel() > 0, op, wname, "a non-empty matrix", describe(W));
    rows += W.size(0);
    cols += W.size(1);
    out[l] = W.contiguous();
  }
  const auto acc = acc_type(weights[0].scalar_type());
  const int64_t len[2] = {rows, cols};
  const at::Tensor* vec[2] = {&u, &v};
  for (int k = 0; k < 2; ++k) {
    const char* name = k == 0 ? "u" : "v";
    const auto& x = *vec[k];
    REGOPS_CHECK_VALUE(x.dim() == 1 && x.size(0) == len[k], op, name,
                       "shape (" + std::to_string(len[k]) + ",) (the " + (k == 0 ? "row" : "column") +
                           " counts of the weights added up)",
                       describe(x));
    REGOPS_CHECK_TYPE(x.scalar_type() == acc, op, name,
                      "dtype " + dtype_name(acc) + " (the accumulation dtype of the weights)", describe(x));
    check_same_device(op, name, x, weights[0], "weights[0]");
  }
  return out;
}

inline void check_spectral_params(const char* op, int64_t n_power_iterations, double eps) {
  REGOPS_CHECK_VALUE(n_power_iterations >= 1, op, "n_power_iterations", "an int >= 1",
                     std::to_string(n_power_iterations));
  REGOPS_CHECK_VALUE(std::isfinite(eps) && eps > 0.0, op, "eps", "a finite number > 0", num_str(eps));
}

// grad_sigmas: (L,) in the accumulation dtype of the weights, on their device.
inline void check_spectral_grad(const at::Tensor& grad_sigmas, at::TensorList weights) {
  const char* op = "spectral_outer";
  const auto acc = acc_type(weights[0].scalar_type());
  REGOPS_CHECK_VALUE(grad_sigmas.dim() == 1 && grad_sigmas.size(0) == static_cast<int64_t>(weights.size()), op,
                     "grad_sigmas", "shape (" + std::to_string(weights.size()) + ",) (one per weight)",
                     describe(grad_sigmas));
  REGOPS_CHECK_TYPE(grad_sigmas.scalar_type() == acc, op, "grad_sigmas",
                    "dtype " + dtype_name(acc) + " (the accumulation dtype of the weights)", describe(grad_sigmas));
  check_same_device(op, "grad_sigmas", grad_sigmas, weights[0], "weights[0]");
}

}  // namespace regops
