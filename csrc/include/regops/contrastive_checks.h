// The argument contract of contrastive_fwd / contrastive_bwd (CPU and CUDA glue; contracts/contrastive.py is the
// same for Triton and the fake kernels). Returns the inputs contiguous, as the kernels read them.
#pragma once
#include <cmath>
#include <optional>

#include "regops/checks.h"
#include "regops/contrastive_math.h"

namespace regops {

struct ContrastiveInputs {
  at::Tensor a, c, ya, yc, pa, pc, wa;  // c = a, yc = ya, pc = pa when symmetric (candidates is None)
  bool symmetric = true;
  int64_t n = 0, m = 0, d = 0;
};

namespace contrastive_detail {

inline bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// A ConR target of `rows` rows: (rows, L) (L >= 1 when L < 0), in the dtype and on the device of anchors.
inline at::Tensor conr_rows(const char* op, const char* arg, const at::Tensor& t, int64_t rows, int64_t L,
                            const at::Tensor& anchors) {
  REGOPS_CHECK_VALUE(t.dim() == 2 && t.size(0) == rows && (L < 0 ? t.size(1) >= 1 : t.size(1) == L), op, arg,
                     L < 0 ? "shape (" + std::to_string(rows) + ", L) with L >= 1" : "shape " + shape_str({rows, L}),
                     describe(t));
  check_same_dtype(op, arg, t, anchors, "anchors");
  check_same_device(op, arg, t, anchors, "anchors");
  return t.contiguous();
}

// SupCon class ids: (rows,) int64 on the device of anchors.
inline at::Tensor class_ids(const char* op, const char* arg, const at::Tensor& t, int64_t rows,
                            const at::Tensor& anchors) {
  check_shape(op, arg, t, {rows}, " (one class id per row)");
  REGOPS_CHECK_TYPE(t.scalar_type() == at::kLong, op, arg, "dtype int64 (class ids)", describe(t));
  check_same_device(op, arg, t, anchors, "anchors");
  return t.contiguous();
}

}  // namespace contrastive_detail

inline ContrastiveInputs check_contrastive(const char* op, const at::Tensor& anchors,
                                           const std::optional<at::Tensor>& candidates, const at::Tensor& labels,
                                           const std::optional<at::Tensor>& cand_labels,
                                           const std::optional<at::Tensor>& preds,
                                           const std::optional<at::Tensor>& cand_preds,
                                           const std::optional<at::Tensor>& weights, int64_t kind, int64_t offset,
                                           double temperature, double threshold, double push, double label_norm,
                                           c10::DeviceType type) {
  using namespace contrastive_detail;
  check_dim(op, "anchors", anchors, 2, " (n, D)");
  check_dtype_in(op, "anchors", anchors, {at::kFloat, at::kDouble}, " (feature rows in the accumulation dtype)");
  check_device(op, "anchors", anchors, type);
  REGOPS_CHECK_VALUE(kind >= 0 && kind <= 3, op, "kind",
                     "0 (ConR agedb), 1 (ConR nyud2), 2 (SupCon) or 3 (focal SupCon)", std::to_string(kind));
  REGOPS_CHECK_VALUE(std::isfinite(temperature) && temperature > 0, op, "temperature", "a positive finite number",
                     num_str(temperature));
  REGOPS_CHECK_VALUE(anchors.size(1) >= 1, op, "anchors", "at least one column", describe(anchors));
  ContrastiveInputs in;
  in.n = anchors.size(0);
  in.d = anchors.size(1);
  in.a = anchors.contiguous();
  in.symmetric = !given(candidates);
  if (in.symmetric) {
    REGOPS_CHECK_VALUE(offset == 0, op, "offset", "0 when candidates is None", std::to_string(offset));
    in.c = in.a;
  } else {
    const at::Tensor& c = *candidates;
    REGOPS_CHECK_VALUE(c.dim() == 2 && c.size(1) == in.d, op, "candidates",
                       "a 2-D tensor (M, " + std::to_string(in.d) + ") (the width of anchors)", describe(c));
    check_same_dtype(op, "candidates", c, anchors, "anchors");
    check_same_device(op, "candidates", c, anchors, "anchors");
    in.c = c.contiguous();
    REGOPS_CHECK_VALUE(offset >= 0 && offset <= c.size(0) - in.n, op, "offset",
                       "anchors to sit at candidates[offset : offset + n] (0 <= offset <= " +
                           std::to_string(c.size(0) - in.n) + ")",
                       std::to_string(offset));
  }
  in.m = in.c.size(0);
  // With candidates, their labels are required; without, the anchors' own serve (cand_* are then ignored).
  const auto cand_needed = [&](const char* arg, const std::optional<at::Tensor>& t) {
    REGOPS_CHECK_VALUE(in.symmetric || given(t), op, arg, "a tensor (candidates are given)", "None");
  };
  if (contrastive::is_conr(static_cast<int>(kind))) {
    REGOPS_CHECK_VALUE(label_norm > 0, op, "label_norm", "a positive number or inf", num_str(label_norm));
    REGOPS_CHECK_VALUE(std::isfinite(threshold), op, "threshold", "a finite number", num_str(threshold));
    REGOPS_CHECK_VALUE(std::isfinite(push), op, "push", "a finite number", num_str(push));
    in.ya = conr_rows(op, "labels", labels, in.n, -1, anchors);
    const int64_t L = in.ya.size(1);
    REGOPS_CHECK_VALUE(given(preds), op, "preds", "a tensor (ConR needs predictions)", "None");
    in.pa = conr_rows(op, "preds", *preds, in.n, L, anchors);
    cand_needed("cand_labels", cand_labels);
    cand_needed("cand_preds", cand_preds);
    in.yc = in.symmetric ? in.ya : conr_rows(op, "cand_labels", *cand_labels, in.m, L, anchors);
    in.pc = in.symmetric ? in.pa : conr_rows(op, "cand_preds", *cand_preds, in.m, L, anchors);
    REGOPS_CHECK_VALUE(given(weights), op, "weights", "a tensor (ConR needs the anchors' weights)", "None");
    check_shape(op, "weights", *weights, {in.n}, " (one weight per anchor)");
    check_same_dtype(op, "weights", *weights, anchors, "anchors");
    check_same_device(op, "weights", *weights, anchors, "anchors");
    in.wa = weights->contiguous();
  } else {
    in.ya = class_ids(op, "labels", labels, in.n, anchors);
    cand_needed("cand_labels", cand_labels);
    in.yc = in.symmetric ? in.ya : class_ids(op, "cand_labels", *cand_labels, in.m, anchors);
  }
  return in;
}

// contrastive_bwd's own arguments: the upstream gradient (n,) and the forward's row_stats (n, 4).
inline void check_contrastive_grads(const char* op, const at::Tensor& anchors, const at::Tensor& grad_row_loss,
                                    const at::Tensor& row_stats) {
  const int64_t n = anchors.size(0);
  check_shape(op, "grad_row_loss", grad_row_loss, {n});
  check_float_dtype(op, "grad_row_loss", grad_row_loss);
  check_same_device(op, "grad_row_loss", grad_row_loss, anchors, "anchors");
  check_shape(op, "row_stats", row_stats, {n, contrastive::kRowStats});
  check_same_dtype(op, "row_stats", row_stats, anchors, "anchors");
  check_same_device(op, "row_stats", row_stats, anchors, "anchors");
}

}  // namespace regops
