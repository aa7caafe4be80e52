"""Orthonormality penalty, pure PyTorch (SORSA's calc_ortho term, batched)."""
from __future__ import annotations

import torch

from .._constants import acc_dtype




def orthonormal_penalty_rows(x: torch.Tensor, squared: bool) -> torch.Tensor:
    """Per-matrix ‖X Xᵀ − I‖_F (or its square) for X of shape (L, p, q); returns (L,) in x.dtype."""
    xa = x.to(acc_dtype(x.dtype))
    gram = torch.bmm(xa, xa.transpose(1, 2))
    eye = torch.eye(x.shape[1], dtype=xa.dtype, device=x.device)
    sumsq = (gram - eye).square().sum(dim=(1, 2))
    if squared:
        return sumsq.to(x.dtype)
    # sqrt has an infinite slope at 0; use the subgradient 0 there, as the kernels do (a NaN stays NaN)
    safe = torch.where(sumsq == 0, torch.ones_like(sumsq), sumsq)
    return torch.where(sumsq == 0, torch.zeros_like(sumsq), safe.sqrt()).to(x.dtype)


def orthonormal_penalty_grad_rows(x: torch.Tensor, squared: bool, grad_values: torch.Tensor):
    """The closed-form gradient, without autograd: returns (sumsq (L,), coef·R X) with R = X Xᵀ − I,
    coef = 4g (squared) or 2g/‖R‖ (0 at R = 0). Used by sorsa_regularize_'s reference path."""
    acc = acc_dtype(x.dtype)
    xa = x.to(acc)
    residual = torch.bmm(xa, xa.transpose(1, 2)) - torch.eye(x.shape[1], dtype=acc, device=x.device)
    sumsq = residual.square().sum(dim=(1, 2))
    g = grad_values.to(acc)
    if squared:
        coef = 4 * g
    else:
        coef = torch.where(sumsq > 0, 2 * g / sumsq.clamp_min(torch.finfo(acc).tiny).sqrt(), torch.zeros_like(g))
    return sumsq, (coef[:, None, None] * torch.bmm(residual, xa)).to(x.dtype)
