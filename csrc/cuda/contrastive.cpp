// Torch glue of the CUDA kernels of the pairwise contrastive engine (contrastive_kernels.cu): argument checks,
// output allocation, launch on the current stream. The kernels see only raw pointers to contiguous rows.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // at::cuda::getCurrentCUDAStream, without ATen/cuda/CUDAContext.h's
                                  // cuSPARSE/cuBLAS headers (absent from some CUDA_HOME installs)
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>

#include "contrastive_kernels.h"
#include "regops/checks.h"

namespace regops {
namespace {

namespace cc = contrastive_cuda;

constexpr const char* kFwd = "contrastive_fwd";
constexpr const char* kBwd = "contrastive_bwd";
constexpr int64_t kStats = 4;  // columns of row_stats: [L, alpha, beta, |P|]
constexpr double kNormEps = 1e-12;  // F.normalize's

// d/dx of ⟨g, x/max(‖x‖, eps)⟩ from z = x/max(‖x‖, eps): (g − z⟨z, g⟩)/‖x‖, or g/eps where ‖x‖ ≤ eps.
at::Tensor unit_rows_backward(const at::Tensor& g, const at::Tensor& z, const at::Tensor& norm) {
  const auto proj = (g - z * (z * g).sum(1, true)) / norm.clamp_min(kNormEps).unsqueeze(1);
  return at::where((norm > kNormEps).unsqueeze(1), proj, g / kNormEps);
}

bool is_conr(int64_t kind) { return kind == 0 || kind == 1; }

// On CUDA the finiteness check costs a host sync, so it runs only on request (as regops._checks says).
bool check_finite_requested() {
  const char* v = std::getenv("REGOPS_CHECK_FINITE");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

std::string shape_str(int64_t a) { return "shape (" + std::to_string(a) + ")"; }
std::string shape_str(int64_t a, int64_t b) {
  return "shape (" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// The contiguous inputs (kept alive while the kernels run) and the kernels' view of them.
struct Prepared {
  at::Tensor a, c, y, yc, pr, pc, w;
  at::Tensor norm_a, norm_c;  // ‖row‖ of the raw inputs; a and c hold the normalized rows
  cc::Problem p{};
  bool symmetric = false;
};

void check_anchors(const char* op, const at::Tensor& anchors) {
  check_dim(op, "anchors", anchors, 2);
  const auto s = anchors.scalar_type();
  REGOPS_CHECK_TYPE(s == at::kFloat || s == at::kDouble, op, "anchors",
                    "dtype float32 or float64 (L2-normalized rows in the accumulation dtype)", describe(anchors));
  check_device(op, "anchors", anchors, c10::DeviceType::CUDA);
}

// A second tensor must sit on the very device of anchors: the kernels dereference its pointer there.
void check_same_device(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& anchors) {
  REGOPS_CHECK_DEVICE(t.device() == anchors.device(), op, arg,
                      "device " + c10::str(anchors.device()) + " (as anchors)", describe(t));
}

void check_same_dtype(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& anchors) {
  REGOPS_CHECK_TYPE(t.scalar_type() == anchors.scalar_type(), op, arg,
                    "dtype " + c10::str(anchors.scalar_type()) + " (as anchors)", describe(t));
}

// A float row tensor of ConR: (rows, L) in the dtype of anchors, on its device; returned contiguous.
at::Tensor conr_rows(const char* op, const char* arg, const at::Tensor& t, int64_t rows, int64_t L,
                     const at::Tensor& anchors) {
  REGOPS_CHECK_VALUE(t.dim() == 2 && t.size(0) == rows && (L < 0 ? t.size(1) >= 1 : t.size(1) == L), op, arg,
                     L < 0 ? "shape (" + std::to_string(rows) + ", L) with L >= 1" : shape_str(rows, L), describe(t));
  check_same_dtype(op, arg, t, anchors);
  check_same_device(op, arg, t, anchors);
  return t.contiguous();
}

// Class ids of SupCon: (rows,) int64 on the device of anchors; returned contiguous.
at::Tensor class_ids(const char* op, const char* arg, const at::Tensor& t, int64_t rows, const at::Tensor& anchors) {
  REGOPS_CHECK_VALUE(t.dim() == 1 && t.size(0) == rows, op, arg, shape_str(rows) + " (one class id per row)",
                     describe(t));
  REGOPS_CHECK_TYPE(t.scalar_type() == at::kLong, op, arg, "dtype int64 (class ids)", describe(t));
  check_same_device(op, arg, t, anchors);
  return t.contiguous();
}

// Checks every input of the op (the device of anchors first; the caller holds a CUDAGuard on it).
Prepared prepare(const char* op, const at::Tensor& anchors, const std::optional<at::Tensor>& candidates,
                 const at::Tensor& labels, const std::optional<at::Tensor>& cand_labels,
                 const std::optional<at::Tensor>& preds, const std::optional<at::Tensor>& cand_preds,
                 const std::optional<at::Tensor>& weights, int64_t kind, int64_t offset, double temperature,
                 double threshold, double push, double label_norm) {
  Prepared r;
  const int64_t n = anchors.size(0), D = anchors.size(1);
  REGOPS_CHECK_VALUE(kind >= 0 && kind <= 3, op, "kind",
                     "0 (ConR agedb), 1 (ConR nyud2), 2 (SupCon) or 3 (focal SupCon)", std::to_string(kind));
  REGOPS_CHECK_VALUE(std::isfinite(temperature) && temperature > 0, op, "temperature", "a positive finite number",
                     std::to_string(temperature));
  REGOPS_CHECK_VALUE(D >= 1, op, "anchors", "at least one column", describe(anchors));
  r.a = anchors.contiguous();
  r.symmetric = !(candidates.has_value() && candidates->defined());
  int64_t M = n;
  if (r.symmetric) {
    REGOPS_CHECK_VALUE(offset == 0, op, "offset", "0 when candidates is None", std::to_string(offset));
    r.c = r.a;
  } else {
    const at::Tensor& c = *candidates;
    REGOPS_CHECK_VALUE(c.dim() == 2 && c.size(1) == D, op, "candidates",
                       "a 2-D tensor (M, " + std::to_string(D) + ") (the width of anchors)", describe(c));
    check_same_dtype(op, "candidates", c, anchors);
    check_same_device(op, "candidates", c, anchors);
    r.c = c.contiguous();
    M = c.size(0);
    REGOPS_CHECK_VALUE(offset >= 0 && offset <= M - n, op, "offset",
                       "anchors to sit at candidates[offset : offset + n] (0 <= offset <= " +
                           std::to_string(M - n) + ")",
                       std::to_string(offset));
  }
  const auto given = [](const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); };
  // The candidates' labels: required with candidates; in the symmetric case the anchors' own (as the CPU
  // kernel, cand_labels/cand_preds are then ignored).
  const auto cand_needed = [&](const char* arg, const std::optional<at::Tensor>& t) {
    REGOPS_CHECK_VALUE(r.symmetric || given(t), op, arg, "a tensor (candidates are given)", "None");
  };

  cc::Problem& p = r.p;
  p.dtype = anchors.scalar_type() == at::kDouble ? cc::Dtype::kFloat64 : cc::Dtype::kFloat32;
  p.n = n;
  p.M = M;
  p.D = D;
  p.kind = static_cast<int>(kind);
  p.offset = offset;
  p.temperature = temperature;
  p.threshold = threshold;
  p.push = push;
  p.label_norm = label_norm;
  if (is_conr(kind)) {
    REGOPS_CHECK_VALUE(label_norm > 0, op, "label_norm", "a positive number or inf", std::to_string(label_norm));
    REGOPS_CHECK_VALUE(std::isfinite(threshold), op, "threshold", "a finite number", std::to_string(threshold));
    REGOPS_CHECK_VALUE(std::isfinite(push), op, "push", "a finite number", std::to_string(push));
    r.y = conr_rows(op, "labels", labels, n, -1, anchors);
    const int64_t L = r.y.size(1);
    REGOPS_CHECK_VALUE(given(preds), op, "preds", "a tensor (ConR needs predictions)", "None");
    r.pr = conr_rows(op, "preds", *preds, n, L, anchors);
    cand_needed("cand_labels", cand_labels);
    cand_needed("cand_preds", cand_preds);
    r.yc = r.symmetric ? r.y : conr_rows(op, "cand_labels", *cand_labels, M, L, anchors);
    r.pc = r.symmetric ? r.pr : conr_rows(op, "cand_preds", *cand_preds, M, L, anchors);
    REGOPS_CHECK_VALUE(given(weights), op, "weights", "a tensor (ConR needs the anchors' weights)", "None");
    const at::Tensor& w = *weights;
    REGOPS_CHECK_VALUE(w.dim() == 1 && w.size(0) == n, op, "weights", shape_str(n) + " (one weight per anchor)",
                       describe(w));
    check_same_dtype(op, "weights", w, anchors);
    check_same_device(op, "weights", w, anchors);
    r.w = w.contiguous();
    p.L = L;
    p.labels = r.y.const_data_ptr();
    p.cand_labels = r.yc.const_data_ptr();
    p.preds = r.pr.const_data_ptr();
    p.cand_preds = r.pc.const_data_ptr();
    p.weights = r.w.const_data_ptr();
  } else {
    r.y = class_ids(op, "labels", labels, n, anchors);
    cand_needed("cand_labels", cand_labels);
    r.yc = r.symmetric ? r.y : class_ids(op, "cand_labels", *cand_labels, M, anchors);
    p.class_ids = r.y.const_data_ptr<int64_t>();
    p.cand_class_ids = r.yc.const_data_ptr<int64_t>();
  }
  // The op's rows are raw features: normalize them as F.normalize does (eps 1e-12).
  // Norms summed in double, as the CPU kernel does: finite rows of any magnitude keep their direction.
  r.norm_a = at::linalg_vector_norm(r.a, 2, {1}, false, at::kDouble).to(r.a.scalar_type());
  r.a = r.a / r.norm_a.clamp_min(kNormEps).unsqueeze(1);
  if (r.symmetric) {
    r.c = r.a;
    r.norm_c = r.norm_a;
  } else {
    r.norm_c = at::linalg_vector_norm(r.c, 2, {1}, false, at::kDouble).to(r.c.scalar_type());
    r.c = r.c / r.norm_c.clamp_min(kNormEps).unsqueeze(1);
  }
  p.anchors = r.a.const_data_ptr();
  p.candidates = r.c.const_data_ptr();
  return r;
}

std::tuple<at::Tensor, at::Tensor> contrastive_fwd_cuda(
    const at::Tensor& anchors, const std::optional<at::Tensor>& candidates, const at::Tensor& labels,
    const std::optional<at::Tensor>& cand_labels, const std::optional<at::Tensor>& preds,
    const std::optional<at::Tensor>& cand_preds, const std::optional<at::Tensor>& weights, int64_t kind, int64_t offset,
    double temperature, double threshold, double push, double label_norm) {
  check_anchors(kFwd, anchors);
  const c10::cuda::CUDAGuard guard(anchors.device());
  const Prepared r = prepare(kFwd, anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind, offset,
                             temperature, threshold, push, label_norm);
  const int64_t n = r.p.n;
  auto row_loss = at::empty({n}, r.a.options());
  auto row_stats = at::empty({n, kStats}, r.a.options());
  if (n == 0) return {row_loss, row_stats};
  const int64_t ws_elems = cc::contrastive_fwd_workspace(r.p);
  at::Tensor ws;
  if (ws_elems > 0) ws = at::empty({ws_elems}, r.a.options());  // per-split partial row statistics

  C10_CUDA_CHECK(cc::contrastive_fwd(r.p, row_loss.mutable_data_ptr(), row_stats.mutable_data_ptr(),
                                     ws.defined() ? ws.mutable_data_ptr() : nullptr,
                                     at::cuda::getCurrentCUDAStream().stream()));

  if (check_finite_requested()) {
    const auto finite = at::isfinite(row_loss);
    if (!finite.all().item<bool>()) {
      const int64_t bad = at::logical_not(finite).nonzero()[0][0].item<int64_t>();  // first bad anchor
      REGOPS_CHECK_VALUE(false, kFwd, "anchors", "finite values",
                         "a non-finite loss for anchor " + std::to_string(bad) +
                             " (the input holds NaN/Inf or overflows)");
    }
  }
  return {row_loss, row_stats};
}

std::tuple<at::Tensor, at::Tensor> contrastive_bwd_cuda(
    const at::Tensor& grad_row_loss, const at::Tensor& anchors, const std::optional<at::Tensor>& candidates,
    const at::Tensor& labels, const std::optional<at::Tensor>& cand_labels, const std::optional<at::Tensor>& preds,
    const std::optional<at::Tensor>& cand_preds, const std::optional<at::Tensor>& weights, const at::Tensor& row_stats,
    int64_t kind, int64_t offset, double temperature, double threshold, double push, double label_norm) {
  check_anchors(kBwd, anchors);
  const c10::cuda::CUDAGuard guard(anchors.device());
  const Prepared r = prepare(kBwd, anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind, offset,
                             temperature, threshold, push, label_norm);
  const int64_t n = r.p.n, M = r.p.M, D = r.p.D;
  REGOPS_CHECK_VALUE(grad_row_loss.dim() == 1 && grad_row_loss.size(0) == n, kBwd, "grad_row_loss", shape_str(n),
                     describe(grad_row_loss));
  check_float_dtype(kBwd, "grad_row_loss", grad_row_loss);
  check_same_device(kBwd, "grad_row_loss", grad_row_loss, anchors);
  REGOPS_CHECK_VALUE(row_stats.dim() == 2 && row_stats.size(0) == n && row_stats.size(1) == kStats, kBwd,
                     "row_stats", shape_str(n, kStats), describe(row_stats));
  check_same_dtype(kBwd, "row_stats", row_stats, anchors);
  check_same_device(kBwd, "row_stats", row_stats, anchors);
  // The kernels read both in the dtype of anchors (the accumulation dtype), contiguous.
  const auto g = grad_row_loss.to(anchors.scalar_type()).contiguous();
  const auto stats = row_stats.contiguous();

  auto grad_a = at::zeros({n, D}, r.a.options());  // the kernels add into zeroed gradients
  // Symmetric: the candidates' part goes to a scratch buffer, added to grad_a below; grad_candidates is empty.
  auto grad_c = at::zeros({M, D}, r.a.options());
  C10_CUDA_CHECK(cc::contrastive_bwd(r.p, g.const_data_ptr(), stats.const_data_ptr(), grad_a.mutable_data_ptr(),
                                     grad_c.mutable_data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  if (r.symmetric) {
    grad_a.add_(grad_c);
    return {unit_rows_backward(grad_a, r.a, r.norm_a), at::empty({0, D}, r.a.options())};
  }
  return {unit_rows_backward(grad_a, r.a, r.norm_a), unit_rows_backward(grad_c, r.c, r.norm_c)};
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CUDA, m) {
  m.impl("contrastive_fwd", &regops::contrastive_fwd_cuda);
  m.impl("contrastive_bwd", &regops::contrastive_bwd_cuda);
}
