"""P²OT's semi-relaxed Sinkhorn as the official solver computes it (SemiCurrSinkhornKnopp.forward), written in
the log domain in float64 so that it neither underflows nor overflows: the oracle of the kernel impls.

Official iteration, on Q = exp(−Ĉ/ε) with Ĉ = [C | 0] (N × (K+1)):  a = Pa/(Q b);  b = Pb/(Qᵀ a);  b[:K] = b[:K]^τ.
Here log a, log b replace a, b; the stopping test is the official one made scale-aware (b_change), evaluated
every `check_every` iterations (the kernels' schedule) in float64.
"""
from __future__ import annotations

import torch


def allreduce_logsumexp(lse: torch.Tensor, process_group) -> torch.Tensor:
    """log Σ_ranks exp(lse), elementwise, through two all-reduces (max, then the shifted sum)."""
    import torch.distributed as dist
    m = lse.clone()
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=process_group)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.exp(lse - m_safe)
    dist.all_reduce(s, group=process_group)
    return m_safe + torch.log(s)


def b_change(log_b: torch.Tensor, log_b_prev: torch.Tensor) -> torch.Tensor:
    """The stopping error ‖b − b_prev‖₂ / max(1, ‖b_prev‖₂) in float64, from log b (a 0-dim tensor).

    While ‖b_prev‖ ≤ 1 this is the official absolute test. Confident logits make b astronomically large (the
    official float64 Q underflows there), and then no absolute change can fall below 1e-6: the test becomes
    relative. Computed with a common shift, so neither b overflows."""
    lb, lp = log_b.double(), log_b_prev.double()
    m = torch.maximum(lb.max(), lp.max())
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    diff = torch.linalg.vector_norm(torch.exp(lb - m) - torch.exp(lp - m))
    scale = torch.maximum(torch.exp(-m), torch.linalg.vector_norm(torch.exp(lp - m)))
    return diff / scale


def semi_relaxed_sinkhorn(C_hat, log_row, log_col, tau, eps, log_b0, *, max_iter, tol, check_every=10,
                          process_group=None):
    """Returns (log_a (N,), log_b (Kc,), n_iter, err) in float64. Rows may be sharded over process_group."""
    logQ = -C_hat.double() / eps
    log_row, log_col, tau = log_row.double(), log_col.double(), tau.double()
    log_b = log_b0.double().clone()
    log_a = torch.zeros(C_hat.shape[0], dtype=torch.float64, device=C_hat.device)
    err = torch.tensor(float("inf"), dtype=torch.float64)
    n_iter = max_iter
    for it in range(max_iter):
        log_a = log_row - torch.logsumexp(logQ + log_b[None, :], 1)
        col_lse = torch.logsumexp(logQ + log_a[:, None], 0)
        if process_group is not None:
            col_lse = allreduce_logsumexp(col_lse, process_group)
        new = tau * (log_col - col_lse)
        if (it + 1) % check_every == 0 or it + 1 == max_iter:
            err = b_change(new, log_b)
            if err <= tol:
                log_b = new
                n_iter = it + 1
                break
        log_b = new
    return log_a, log_b, n_iter, err


def plan(C_hat, log_a, log_b, eps):
    return torch.exp(log_a[:, None] + log_b[None, :] - C_hat.double() / eps)
