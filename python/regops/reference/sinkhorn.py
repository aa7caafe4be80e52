"""Dense log-domain Sinkhorn primitives in pure PyTorch: the oracle of the streamed kernels, and the fallback.

They follow the op schemas of ``regops::sinkhorn_*`` (csrc/ops.cpp) and materialize the (B, N, M) cost.
Batched shapes: x (B, N, d), y (B, M, d), potentials (B, N)/(B, M), eps (B,). Costs are OTT-JAX's:
0 sqeuclidean ‖x−y‖² (no ½), 1 euclidean ‖x−y‖, 2 cosine 1 − ⟨x,y⟩/(‖x‖‖y‖ + 1e-8).
"""
from __future__ import annotations

import torch

from .._constants import COSINE, COSINE_RIDGE, EUCLIDEAN, SQEUCLIDEAN  # noqa: F401
_DIFF_LIMIT = 1 << 26  # beyond B·N·M·d elements the squared distance comes from the dot-product form


def sqdist_matrix(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖x_i − y_j‖² (B, N, M): from differences when small (exact at coincident points), else ‖x‖²+‖y‖²−2⟨x,y⟩."""
    if x.shape[0] * x.shape[1] * y.shape[1] * max(x.shape[2], 1) <= _DIFF_LIMIT:
        return (x[:, :, None, :] - y[:, None, :, :]).pow(2).sum(-1)
    sq = x.pow(2).sum(-1)[:, :, None] + y.pow(2).sum(-1)[:, None, :] - 2 * torch.bmm(x, y.transpose(1, 2))
    return sq.clamp_min(0)


def cost_matrix(x: torch.Tensor, y: torch.Tensor, cost: int) -> torch.Tensor:
    if cost == SQEUCLIDEAN:
        return sqdist_matrix(x, y)
    if cost == EUCLIDEAN:
        return sqdist_matrix(x, y).sqrt()
    if cost == COSINE:
        nx, ny = x.norm(dim=-1), y.norm(dim=-1)
        return 1 - torch.bmm(x, y.transpose(1, 2)) / (nx[:, :, None] * ny[:, None, :] + COSINE_RIDGE)
    raise ValueError(f"unknown cost id {cost}")


def _potential(lse, log_w, tau, eps):
    out = tau * eps[:, None] * (log_w - lse)
    return torch.where(log_w == float("-inf"), torch.full_like(out, float("-inf")), out)


def update_dense(C: torch.Tensor, pot, log_w, tau, eps, transpose: bool) -> torch.Tensor:
    """out = tau·(eps·log_w − eps·LSE((pot − C)/eps)) over j (transpose=False) or over i (True)."""
    e = eps[:, None, None]
    if transpose:
        lse = torch.logsumexp((pot[:, :, None] - C) / e, dim=1)
    else:
        lse = torch.logsumexp((pot[:, None, :] - C) / e, dim=2)
    return _potential(lse, log_w, tau, eps)


def update(x, y, pot, log_w, tau, eps, cost: int) -> torch.Tensor:
    return update_dense(cost_matrix(x, y, cost), pot, log_w, tau, eps, False)


def plan(x, y, f, g, eps, cost: int) -> torch.Tensor:
    """P (B, N, M) = exp((f_i + g_j − c_ij)/eps)."""
    return plan_from_cost(cost_matrix(x, y, cost), f, g, eps)


def plan_from_cost(C, f, g, eps) -> torch.Tensor:
    return torch.exp((f[:, :, None] + g[:, None, :] - C) / eps[:, None, None])


def apply(x, y, f, g, v, eps, cost: int) -> torch.Tensor:
    return torch.bmm(plan(x, y, f, g, eps, cost), v)


def cost_grad(x, y, f, g, eps, cost: int) -> torch.Tensor:
    """Σ_j P_ij ∇_x c(x_i, y_j) = Σ_j P_ij (A_ij x_i − W_ij y_j), with sinkhorn_math.h's (A, W)."""
    P = plan(x, y, f, g, eps, cost)
    if cost == SQEUCLIDEAN:
        A = W = 2 * P
    elif cost == EUCLIDEAN:
        dist = sqdist_matrix(x, y).sqrt()
        W = torch.where(dist > 0, P / torch.where(dist > 0, dist, torch.ones_like(dist)), torch.zeros_like(P))
        A = W
    elif cost == COSINE:
        nx, ny = x.norm(dim=-1), y.norm(dim=-1)
        D = nx[:, :, None] * ny[:, None, :] + COSINE_RIDGE
        dot = torch.bmm(x, y.transpose(1, 2))
        W = P / D
        safe_nx = torch.where(nx > 0, nx, torch.ones_like(nx))
        A = torch.where(nx[:, :, None] > 0, P * dot * ny[:, None, :] / (safe_nx[:, :, None] * D * D),
                        torch.zeros_like(P))
    else:
        raise ValueError(f"unknown cost id {cost}")
    return A.sum(2, keepdim=True) * x - torch.bmm(W, y)
