"""Per-anchor losses of the contrastive family, pure PyTorch, N×M materialized: the oracle.

Anchors za (n, D) against candidates zc (M, D), both L2-normalized in the accumulation dtype; anchor i is
candidate ``offset + i``. One process passes the same rows twice (offset 0); across ranks the candidates are
the rows of every rank. Each function returns (row_loss (n,), n_pos (n,)); ops/_contrastive.py reduces them.
"""
from __future__ import annotations

import torch


NORM_EPS = 1e-12  # F.normalize's


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """F.normalize(x, dim=1) = x / max(‖x‖, 1e-12), safe for huge finite rows: with m the largest |entry| of a
    row whose ‖x‖² could overflow (m > max^¼; other rows keep F.normalize's arithmetic exactly), and m a
    constant for autograd, x / max(‖x‖, ε) = (x/m) / max(‖x/m‖, ε/m), and ‖x/m‖² cannot overflow."""
    big = torch.finfo(x.dtype).max ** 0.25
    m = x.detach().abs().amax(1, keepdim=True)
    scale = torch.where(m > big, m, torch.ones_like(m))
    y = x / scale
    return y / torch.maximum(torch.linalg.vector_norm(y, dim=1, keepdim=True), NORM_EPS / scale)


def _diagonal(n: int, m: int, offset: int, device) -> torch.Tensor:
    return torch.arange(n, device=device)[:, None] + offset == torch.arange(m, device=device)[None, :]


def label_distance(u: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """|u_i − v_j| for (·, 1) rows, the p-norm of u_i − v_j for (·, L) rows (computed directly, not through
    cdist's matmul form, so a distance equal to the threshold is compared exactly)."""
    if u.shape[1] == 1:
        return (u - v.T).abs()
    return torch.linalg.vector_norm(u[:, None, :] - v[None, :, :], ord=p, dim=-1)


def conr_rows(za, zc, offset, ya, yc, pa, pc, wa, *, nyud2: bool, temperature: float, threshold: float,
              push: float, label_norm: float):
    """ConR per anchor: (1/denom) Σ_{j∈P_i} (log D_i − s_ij), 0 without a positive or without a negative.
    D_i = Σ_P e^s + Σ_N c_ij e^s + #(non-positive columns)·e⁰ (negatives add both), log c_ij = log w_i + push·ld (agedb) or
    log(push·w_i·ld) (nyud2); denom = |P_i| (agedb) or |P_i| + 1 (nyud2)."""
    n, m = za.shape[0], zc.shape[0]
    s = za @ zc.T / temperature
    ld = label_distance(ya, yc, label_norm)
    pd = label_distance(pa, pc, label_norm)
    pos = (ld <= threshold) & ~_diagonal(n, m, offset, za.device)
    neg = (ld > threshold) & (pd <= threshold)
    log_c = torch.log(push * wa[:, None] * ld) if nyud2 else torch.log(wa)[:, None] + push * ld
    terms = torch.where(pos, s, torch.where(neg, s + log_c, torch.full_like(s, float("-inf"))))
    n_pos = pos.sum(1)
    log_ones = torch.log((m - n_pos).to(s.dtype))[:, None]  # every non-positive column adds e⁰, the diagonal too
    log_d = torch.logsumexp(torch.cat([terms, log_ones], dim=1), dim=1)
    denom = (n_pos + 1 if nyud2 else n_pos).clamp_min(1).to(s.dtype)
    rows = torch.where(pos, log_d[:, None] - s, torch.zeros_like(s)).sum(1) / denom
    valid = pos.any(1) & neg.any(1)
    return torch.where(valid, rows, torch.zeros_like(rows)), n_pos


def supcon_rows(za, zc, offset, la, lc, *, temperature: float, focal: bool):
    """logp_ij = s_ij − log Σ_{k≠i} e^{s_ik}; positives: same label, j ≠ i.
    SupCon: −(1/|P_i|) Σ_P logp (0 without a positive). Focal: Σ_P (1 − e^{logp})·logp."""
    n, m = za.shape[0], zc.shape[0]
    s = za @ zc.T / temperature
    diag = _diagonal(n, m, offset, za.device)
    lse = torch.logsumexp(s.masked_fill(diag, float("-inf")), dim=1, keepdim=True)
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # a single candidate: no other column
    logp = s - lse
    pos = (la[:, None] == lc[None, :]) & ~diag
    n_pos = pos.sum(1)
    lp = torch.where(pos, logp, torch.zeros_like(logp))  # masked first: no inf·0 reaches the backward
    if focal:
        rows = torch.where(pos, (1 - lp.exp()) * lp, torch.zeros_like(lp)).sum(1)
    else:
        rows = -lp.sum(1) / n_pos.clamp_min(1).to(s.dtype)
    return rows, n_pos
