// The argument contract of sinkhorn_update / _update_dense / _cost_grad / _apply (CPU and CUDA glue;
// contracts/sinkhorn.py is the same for Triton and the fake kernels).
#pragma once
#include "regops/checks.h"

namespace regops {

struct SinkhornSizes {
  int64_t B = 0, N = 0, M = 0, d = 0;
};

// x (B, N, d) and y (B, M, d) with M >= 1, float32 or float64, eps (B,) and the cost id: what every streamed op takes.
inline SinkhornSizes check_sinkhorn_clouds(const char* op, const at::Tensor& x, const at::Tensor& y,
                                           const at::Tensor& eps, int64_t cost, c10::DeviceType type) {
  check_dim(op, "x", x, 3, " (B, N, d)");
  check_dtype_in(op, "x", x, {at::kFloat, at::kDouble});
  check_device(op, "x", x, type);
  SinkhornSizes s{x.size(0), x.size(1), 0, x.size(2)};
  check_dim(op, "y", y, 3, " (B, M, d)");
  REGOPS_CHECK_VALUE(y.size(0) == s.B && y.size(2) == s.d, op, "y",
                     "shape (" + std::to_string(s.B) + ", M, " + std::to_string(s.d) + ") (the batch and width of x)",
                     describe(y));
  check_same_dtype(op, "y", y, x, "x");
  check_same_device(op, "y", y, x, "x");
  // An empty y leaves the update's log-sum-exp at -inf: refused by every op.
  REGOPS_CHECK_VALUE(y.size(1) >= 1, op, "y", "at least one point (M >= 1)", describe(y));
  s.M = y.size(1);
  check_like(op, "eps", eps, {s.B}, x, "x");
  REGOPS_CHECK_VALUE(cost >= 0 && cost <= 2, op, "cost", "0 (sqeuclidean), 1 (euclidean) or 2 (cosine)",
                     std::to_string(cost));
  return s;
}

inline SinkhornSizes check_sinkhorn_update(const at::Tensor& x, const at::Tensor& y, const at::Tensor& pot,
                                           const at::Tensor& log_w, const at::Tensor& tau, const at::Tensor& eps,
                                           int64_t cost, c10::DeviceType type) {
  const char* op = "sinkhorn_update";
  const SinkhornSizes s = check_sinkhorn_clouds(op, x, y, eps, cost, type);
  check_like(op, "pot", pot, {s.B, s.M}, x, "x");
  check_like(op, "log_w", log_w, {s.B, s.N}, x, "x");
  check_like(op, "tau", tau, {s.B, s.N}, x, "x");
  return s;
}

// sinkhorn_cost_grad (v = nullptr) and sinkhorn_apply: the potentials f (B, N), g (B, M) and v (B, M, k).
inline SinkhornSizes check_sinkhorn_weighted(const char* op, const at::Tensor& x, const at::Tensor& y,
                                             const at::Tensor& f, const at::Tensor& g, const at::Tensor* v,
                                             const at::Tensor& eps, int64_t cost, c10::DeviceType type) {
  const SinkhornSizes s = check_sinkhorn_clouds(op, x, y, eps, cost, type);
  check_like(op, "f", f, {s.B, s.N}, x, "x");
  check_like(op, "g", g, {s.B, s.M}, x, "x");
  if (v != nullptr) {
    check_dim(op, "v", *v, 3, " (B, M, k)");
    check_like(op, "v", *v, {s.B, s.M, v->size(2)}, x, "x");
  }
  return s;
}

// sinkhorn_update_dense: C (B, N, M); the reduced side (M, or N with transpose) must not be empty.
inline void check_sinkhorn_dense(const at::Tensor& C, const at::Tensor& pot, const at::Tensor& log_w,
                                 const at::Tensor& tau, const at::Tensor& eps, bool transpose, c10::DeviceType type) {
  const char* op = "sinkhorn_update_dense";
  check_dim(op, "cost_matrix", C, 3, " (B, N, M)");
  check_dtype_in(op, "cost_matrix", C, {at::kFloat, at::kDouble});
  check_device(op, "cost_matrix", C, type);
  const int64_t B = C.size(0), out_n = transpose ? C.size(2) : C.size(1), red_n = transpose ? C.size(1) : C.size(2);
  REGOPS_CHECK_VALUE(red_n >= 1, op, "cost_matrix", std::string("at least one ") + (transpose ? "row" : "column"),
                     describe(C));
  check_like(op, "pot", pot, {B, red_n}, C, "cost_matrix");
  check_like(op, "log_w", log_w, {B, out_n}, C, "cost_matrix");
  check_like(op, "tau", tau, {B, out_n}, C, "cost_matrix");
  check_like(op, "eps", eps, {B}, C, "cost_matrix");
}

}  // namespace regops
