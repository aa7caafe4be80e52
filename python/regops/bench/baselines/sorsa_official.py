"""The official SORSA orthonormal regularizer, computed the way its code computes it (our own rewrite).

SORSA's calc_ortho walks the model's parameters one at a time: for every A (r, in) it builds an identity,
forms A Aᵀ − I and adds torch.norm(·, p="fro") to a Python float; for every B (out, r) the same with
Bᵀ B − I; the sum is divided by the number of matrices. Gradients come from autograd. These functions keep
that per-matrix loop (one small GEMM, one identity and one norm per matrix), since its cost is what the
regops kernels are compared against.
"""
from __future__ import annotations

import torch


def _gram_residual_norm(m: torch.Tensor, rows: bool) -> torch.Tensor:
    k = m.shape[0] if rows else m.shape[1]
    eye = torch.eye(k, device=m.device)  # a fresh identity per matrix, as in the official loop
    gram = m @ m.T if rows else m.T @ m
    return torch.norm(gram - eye, p="fro")


def penalty_rows_sum(mats) -> torch.Tensor:
    """Σ_i ‖M_i M_iᵀ − I‖_F over a sequence of 2-D tensors, one matrix at a time."""
    total = 0.0
    for m in mats:
        total += _gram_residual_norm(m, rows=True)
    return total


def calc_ortho(pairs) -> torch.Tensor:
    """(1/(2L)) Σ_l [‖A_l A_lᵀ − I‖_F + ‖B_lᵀ B_l − I‖_F] for (A, B) pairs: the official loss."""
    total, count = 0.0, 0
    for a, b in pairs:
        total += _gram_residual_norm(a, rows=True)
        total += _gram_residual_norm(b, rows=False)
        count += 2
    return total / count
