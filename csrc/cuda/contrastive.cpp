// Torch glue of the CUDA kernels of the contrastive engine (contrastive_kernels.cu): argument checks,
// output allocation, launch on the current stream. The kernels see only raw pointers to contiguous rows.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // at::cuda::getCurrentCUDAStream, without ATen/cuda/CUDAContext.h's
                                  // cuSPARSE/cuBLAS headers (absent from some CUDA_HOME installs)
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <string>
#include <tuple>

#include "contrastive_kernels.h"
#include "regops/checks.h"
#include "regops/contrastive_checks.h"

namespace regops {
namespace {

namespace cc = contrastive_cuda;

constexpr const char* kFwd = "contrastive_fwd";
constexpr const char* kBwd = "contrastive_bwd";
constexpr int64_t kStats = contrastive::kRowStats;  // [L, alpha, beta, |P|]
constexpr double kNormEps = 1e-12;  // F.normalize's

// d/dx of ⟨g, x/max(‖x‖, eps)⟩ from z = x/max(‖x‖, eps): (g − z⟨z, g⟩)/‖x‖, or g/eps where ‖x‖ ≤ eps.
at::Tensor unit_rows_backward(const at::Tensor& g, const at::Tensor& z, const at::Tensor& norm) {
  const auto proj = (g - z * (z * g).sum(1, true)) / norm.clamp_min(kNormEps).unsqueeze(1);
  return at::where((norm > kNormEps).unsqueeze(1), proj, g / kNormEps);
}

// The contiguous inputs (kept alive while the kernels run) and the kernels' view of them.
struct Prepared {
  at::Tensor a, c, y, yc, pr, pc, w;
  at::Tensor norm_a, norm_c;  // ‖row‖ of the raw inputs; a and c hold the normalized rows
  cc::Problem p{};
  bool symmetric = false;
};

// Checks every input of the op (the device of anchors first; the caller holds a CUDAGuard on it).
Prepared prepare(const char* op, const at::Tensor& anchors, const std::optional<at::Tensor>& candidates,
                 const at::Tensor& labels, const std::optional<at::Tensor>& cand_labels,
                 const std::optional<at::Tensor>& preds, const std::optional<at::Tensor>& cand_preds,
                 const std::optional<at::Tensor>& weights, int64_t kind, int64_t offset, double temperature,
                 double threshold, double push, double label_norm) {
  Prepared r;
  const ContrastiveInputs in = check_contrastive(op, anchors, candidates, labels, cand_labels, preds, cand_preds,
                                                 weights, kind, offset, temperature, threshold, push, label_norm,
                                                 c10::DeviceType::CUDA);
  r.symmetric = in.symmetric;
  r.a = in.a;
  r.c = in.c;
  r.y = in.ya;
  r.yc = in.yc;
  cc::Problem& p = r.p;
  p.dtype = anchors.scalar_type() == at::kDouble ? cc::Dtype::kFloat64 : cc::Dtype::kFloat32;
  p.n = in.n;
  p.M = in.m;
  p.D = in.d;
  p.kind = static_cast<int>(kind);
  p.offset = offset;
  p.temperature = temperature;
  p.threshold = threshold;
  p.push = push;
  p.label_norm = label_norm;
  if (contrastive::is_conr(static_cast<int>(kind))) {
    r.pr = in.pa;
    r.pc = in.pc;
    r.w = in.wa;
    p.L = in.ya.size(1);
    p.labels = r.y.const_data_ptr();
    p.cand_labels = r.yc.const_data_ptr();
    p.preds = r.pr.const_data_ptr();
    p.cand_preds = r.pc.const_data_ptr();
    p.weights = r.w.const_data_ptr();
  } else {
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
  check_device(kFwd, "anchors", anchors, c10::DeviceType::CUDA);  // before the guard takes its device
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

  check_finite_result(kFwd, "anchors", row_loss, "loss for anchor");
  return {row_loss, row_stats};
}

std::tuple<at::Tensor, at::Tensor> contrastive_bwd_cuda(
    const at::Tensor& grad_row_loss, const at::Tensor& anchors, const std::optional<at::Tensor>& candidates,
    const at::Tensor& labels, const std::optional<at::Tensor>& cand_labels, const std::optional<at::Tensor>& preds,
    const std::optional<at::Tensor>& cand_preds, const std::optional<at::Tensor>& weights, const at::Tensor& row_stats,
    int64_t kind, int64_t offset, double temperature, double threshold, double push, double label_norm) {
  check_device(kBwd, "anchors", anchors, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(anchors.device());
  const Prepared r = prepare(kBwd, anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind, offset,
                             temperature, threshold, push, label_norm);
  check_contrastive_grads(kBwd, anchors, grad_row_loss, row_stats);
  const int64_t n = r.p.n, M = r.p.M, D = r.p.D;
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
