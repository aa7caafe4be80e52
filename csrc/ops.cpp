// Every regops schema, declared once. Kernels register per dispatch key in cpu/ and cuda/;
// fake kernels and autograd formulas are registered from Python (python/regops/ops/).
#include <torch/library.h>

#ifdef REGOPS_HAVE_BUILD_CONFIG
#include "regops/build_config.h"
#endif

#include <string>

#include "cpu/output_cache.h"

#include <ATen/Parallel.h>

namespace regops {

std::string build_info() {
  // CPU kernels run on torch's intra-op pool (OpenMP in torch's builds).
  std::string s = "threads=" + std::to_string(at::get_num_threads());
#ifdef REGOPS_WITH_CUDA
  s += ";cuda=1";
#else
  s += ";cuda=0";
#endif
#ifdef REGOPS_CUDA_ARCHS
  s += ";cuda_archs=" REGOPS_CUDA_ARCHS;
#endif
  return s;
}

}  // namespace regops

TORCH_LIBRARY(regops, m) {
  m.def("_build_info() -> str", &regops::build_info);
  // The cache of large CPU outputs (cpu/output_cache.h): regops.empty_cache() and its size.
  m.def("_cpu_cache_clear() -> ()", &regops::cpu_cache_clear);
  m.def("_cpu_cache_idle_bytes() -> int", &regops::cpu_cache_idle_bytes);

  // Orthonormality penalty on canonical "rows" matrices X (L, p, q): per-matrix ‖X Xᵀ − I‖_F (or its square).
  // residual = X Xᵀ − I in the accumulation dtype, saved for the backward.
  m.def("orthonormal_penalty_fwd(Tensor mats, bool squared) -> (Tensor values, Tensor residual)");
  m.def("orthonormal_penalty_bwd(Tensor grad_values, Tensor mats, Tensor residual, bool squared) -> Tensor");
  // Multi-tensor: grads[i] += scale · d‖mats[i] mats[i]ᵀ − I‖ / d mats[i], with no autograd graph.
  // Returns the per-matrix penalty values in float64.
  m.def("orthonormal_grad_accumulate_(Tensor[] mats, Tensor(a!)[] grads, float scale, bool squared) -> Tensor");

  // The contrastive engine (ConR, SupCon, focal SupCon; regops/contrastive_math.h has the math).
  // anchors (n, D) are feature rows in float32/float64, L2-normalized inside (as F.normalize, eps 1e-12);
  // candidates (M, D) likewise, or None for the anchors themselves (one process: the symmetric fast path).
  // Anchor i is candidate offset + i. Gradients are with respect to the raw rows.
  // kind: 0 ConR agedb, 1 ConR nyud2 (labels/preds (n, L) float, weights (n,)), 2 SupCon, 3 focal SupCon
  // (labels (n,) int64). Returns the per-anchor losses (n,) and row_stats (n, 4) = [L, alpha, beta, |P|],
  // all the backward needs: it recomputes the similarity tiles, so no N×N tensor ever exists.
  m.def("contrastive_fwd(Tensor anchors, Tensor? candidates, Tensor labels, Tensor? cand_labels, Tensor? preds, "
        "Tensor? cand_preds, Tensor? weights, int kind, int offset, float temperature, float threshold, float push, "
        "float label_norm) -> (Tensor row_loss, Tensor row_stats)");
  // Gradients of Σ_i grad_row_loss_i·row_loss_i: (grad_anchors (n, D), grad_candidates (M, D)); with
  // candidates None, grad_anchors holds the whole gradient and grad_candidates is empty (0, D).
  m.def("contrastive_bwd(Tensor grad_row_loss, Tensor anchors, Tensor? candidates, Tensor labels, "
        "Tensor? cand_labels, Tensor? preds, Tensor? cand_preds, Tensor? weights, Tensor row_stats, int kind, "
        "int offset, float temperature, float threshold, float push, float label_norm) "
        "-> (Tensor grad_anchors, Tensor grad_candidates)");

  // Streamed log-domain Sinkhorn (regops.ot; regops/sinkhorn_math.h has the per-pair math). Point clouds
  // x (B, N, d), y (B, M, d) in float32/float64; every other tensor has their dtype and device. eps (B,) is
  // the entropic regularization of each problem. cost: 0 sqeuclidean ‖x−y‖², 1 euclidean ‖x−y‖,
  // 2 cosine 1 − ⟨x,y⟩/(‖x‖‖y‖ + 1e-8). No N×M tensor is ever formed.
  // One half-update (f from g, or with x and y swapped, g from f), for pot (B, M), log_w and tau (B, N):
  //   out_i = tau_i·(eps·log_w_i − eps·LSE_j((pot_j − c(x_i, y_j))/eps))   (−inf where log_w_i = −inf)
  m.def("sinkhorn_update(Tensor x, Tensor y, Tensor pot, Tensor log_w, Tensor tau, Tensor eps, int cost) -> Tensor");
  // The same on a given cost matrix C (B, N, M): transpose=False reduces over j (pot (B, M), out (B, N));
  // transpose=True over i (pot (B, N), log_w and tau (B, M), out (B, M)), reading C as it is laid out.
  m.def("sinkhorn_update_dense(Tensor cost_matrix, Tensor pot, Tensor log_w, Tensor tau, Tensor eps, "
        "bool transpose) -> Tensor");
  // The envelope gradient Σ_j P_ij ∇_x c(x_i, y_j) (B, N, d), P_ij = exp((f_i + g_j − c(x_i, y_j))/eps).
  m.def("sinkhorn_cost_grad(Tensor x, Tensor y, Tensor f, Tensor g, Tensor eps, int cost) -> Tensor");
  // P·v: out_i = Σ_j P_ij v_j (B, N, k) for v (B, M, k).
  m.def("sinkhorn_apply(Tensor x, Tensor y, Tensor f, Tensor g, Tensor v, Tensor eps, int cost) -> Tensor");

  // P²OT's stabilized kernel-domain scaling, one fused pass over the kernel K (N, Kc) (float32/float64):
  //   row_scale_i = row_target_i / Σ_j K_ij col_scale_j,   col_sum_j = Σ_i K_ij row_scale_i
  // Each row's new scale is applied while the row is in cache: one read of K per Sinkhorn iteration.
  m.def("p2ot_scaling_pass(Tensor kernel, Tensor col_scale, Tensor row_target) -> (Tensor row_scale, Tensor col_sum)");

  // R-AMT gradient dropout (regops/graddrop_math.h has the per-element rule and the Philox counter layout).
  // For every tensor t of the lists (any mix of float32/bfloat16/float16; out[t], grads_task[t] and grads_reg[t]
  // share shape and dtype; out[t] may be grads_task[t]): out = a if P(a, b) > U(seed, t, e) else a·(1 − lam).
  // One call for the whole list. Returns the number of non-finite a or b per tensor, int64 (T,), on the device.
  m.def("graddrop_apply_(Tensor(a!)[] out, Tensor[] grads_task, Tensor[] grads_reg, float lam, int seed) -> Tensor");
  // P = (sgn(a)·(a + b)/(|a| + |b| + 1e-8) + 1)/2 elementwise, in float32, returned in a's dtype.
  m.def("graddrop_keep_prob(Tensor grad_task, Tensor grad_reg) -> Tensor");

  // The preference engine's row math (regops/logsoftmax_math.h): one row of logits (rows, V) per token, in
  // float32/float64/bfloat16, with targets (rows,) int64 in [0, V) or ignore_index. ref_logits (rows, V), the same
  // dtype, is the reference model's logits (or log-probs) of the same token, for kl_mode 1 KL(ref‖π) or
  // 2 KL(π‖ref); None for kl_mode 0. Returns logp = z_y − LSE(z), ref_logp (the same for the reference; 0 for kl_mode 0) and kl per row, in the accumulation dtype;
  // ignored rows give 0. The GEMMs around it stay on torch (python/regops/ops/_fused_linear.py).
  m.def("logsoftmax_rows(Tensor logits, Tensor targets, Tensor? ref_logits, int kl_mode, int ignore_index) "
        "-> (Tensor logp, Tensor ref_logp, Tensor kl)");
  // The same, and logits overwritten in place by d(grad_logp·logp + grad_kl·kl)/dz (grad_* (rows,), accumulation
  // dtype); ignored rows become 0. The reference logits get no gradient.
  m.def("logsoftmax_rows_grad_(Tensor(a!) logits, Tensor targets, Tensor? ref_logits, Tensor grad_logp, "
        "Tensor grad_kl, int kl_mode, int ignore_index) -> (Tensor logp, Tensor ref_logp, Tensor kl)");

  // Classification-side row losses (regops/class_rows_math.h), one row of logits (B, C) per sample in
  // float32/float64/bfloat16; loss (B,) and grad (B, C) = d loss/dz (when want_grad, else
  // (0, C)) in the accumulation dtype. Class indices are int64 in [0, C).
  // Decoupled mixup: classes (B, 2) the two mixed classes [a, b]; coeffs (B, 4) [w_a, w_b, e_a, e_b] (accumulation
  // dtype). loss = −w_a·log p_a − w_b·log p_b − e_a·log q^a_a − e_b·log q^b_b, q^c = softmax over c and the classes
  // other than a and b.
  m.def("mixup_rows(Tensor logits, Tensor classes, Tensor coeffs, bool want_grad) -> (Tensor loss, Tensor grad)");
  // ELR: buffer_rows (B, C), the target-buffer rows before the step (accumulation dtype); beta in [0, 1).
  // new_rows = β·t + (1 − β)·p̂/Σp̂ with p̂ = clamp(softmax(z), 1e-4, 1 − 1e-4);
  // loss = LSE(z) − z_y + lam·log(1 − ⟨new_rows, p̂⟩). No gradient flows into the buffer.
  m.def("elr_rows(Tensor logits, Tensor targets, Tensor buffer_rows, float beta, float lam, bool want_grad) "
        "-> (Tensor loss, Tensor grad, Tensor new_rows)");

  // Parameter repulsion of "Adapt then Unlearn" (regops/repulsion_math.h). params[i] and anchor_means[i] share
  // shape, dtype (one of float32/float64/bfloat16/float16 for the whole list) and device. Returns the per-tensor
  // sums Σ_e (θ_e − φ̄_e)² (T,) in the accumulation dtype (float32 for float32/bfloat16/float16, float64 for
  // float64); the reduction to the loss is Python's (python/regops/ops/repulsion.py). One call for the whole list.
  m.def("repulsion_fwd(Tensor[] params, Tensor[] anchor_means) -> Tensor");
  // d(Σ_i grad_sums_i·sums_i)/dparams: 2·grad_sums_i·(θ_i − φ̄_i) per tensor, in params' dtype, contiguous.
  m.def("repulsion_bwd(Tensor grad_sums, Tensor[] params, Tensor[] anchor_means) -> Tensor[]");

  // Batched spectral norms by power iteration (regops/spectral_math.h). weights[l]: a 2-D matrix (h_l, w_l), one
  // dtype of float32/float64/bfloat16/float16 and one device for the list; u: the power-iteration vectors u_l
  // (h_l,) of all matrices one after the other (sum of h_l,), v likewise (sum of w_l,), in the accumulation dtype.
  // n_power_iterations >= 1 steps of u <- W v / max(|W v|, eps), v <- Wt u / max(|Wt u|, eps) (torch's
  // spectral_norm order), then sigma_l = (Wt u) . v = ut W v. Returns sigma (L,) and the new u, v (same layout,
  // new tensors). One call for the whole list; the vectors travel as two tensors, not 2L.
  m.def("spectral_power(Tensor[] weights, Tensor u, Tensor v, int n_power_iterations, float eps) "
        "-> (Tensor sigma, Tensor u_out, Tensor v_out)");
  // dsigma_l/dW_l with u, v held constant: grad_sigmas[l] * u_l v_lt, in W_l's dtype and shape, contiguous.
  m.def("spectral_outer(Tensor grad_sigmas, Tensor u, Tensor v, Tensor[] weights) -> Tensor[]");
}
