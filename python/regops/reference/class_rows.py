"""The pure-PyTorch oracle of the classification-side row losses (the schemas mixup_rows / elr_rows of
csrc/ops.cpp), per row, in the accumulation dtype, differentiable by autograd.

Decoupled mixup (Westlake-AI/openmixup: ``soft_mix_cross_entropy`` in openmixup/models/losses/cross_entropy_loss.py
and the decoupled term of openmixup/models/heads/cls_mixup_head.py): per row with mixed classes a, b and
coefficients [w_a, w_b, e_a, e_b],
    −w_a·log p_a − w_b·log p_b + e_a·(LSE_{{a} ∪ rest}(z) − z_a) + e_b·(LSE_{{b} ∪ rest}(z) − z_b),
rest = the classes other than a and b (each mixed class against the non-mixed classes only).

ELR (shengliu66/ELR, ``elr_loss`` in ELR/model/loss.py): p̂ = clamp(softmax(z), 1e-4, 1 − 1e-4),
t' = β·t + (1 − β)·sg(p̂)/Σ sg(p̂), loss = CE(z, y) + λ·log(1 − ⟨t', p̂⟩), t' returned as the new buffer rows.
"""
from __future__ import annotations

import torch

from .._constants import acc_dtype

ELR_CLAMP = (1e-4, 1.0 - 1e-4)


def mixup_rows(logits: torch.Tensor, classes: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    z = logits.to(acc_dtype(logits.dtype))
    a, b = classes[:, :1], classes[:, 1:]
    co = coeffs.to(z.dtype)
    logp = torch.log_softmax(z, dim=1)
    cols = torch.arange(z.shape[1], device=z.device)[None, :]
    rest = (cols != a) & (cols != b)
    neg_inf = torch.finfo(z.dtype).min  # -inf would give NaN gradients in the masked entries
    lse_a = torch.logsumexp(torch.where(rest | (cols == a), z, neg_inf), dim=1)
    lse_b = torch.logsumexp(torch.where(rest | (cols == b), z, neg_inf), dim=1)
    za, zb = z.gather(1, a)[:, 0], z.gather(1, b)[:, 0]
    soft_ce = -(co[:, 0] * logp.gather(1, a)[:, 0] + co[:, 1] * logp.gather(1, b)[:, 0])
    return soft_ce + co[:, 2] * (lse_a - za) + co[:, 3] * (lse_b - zb)


def elr_rows(logits: torch.Tensor, targets: torch.Tensor, buffer_rows: torch.Tensor, beta: float,
             lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    z = logits.to(acc_dtype(logits.dtype))
    p = torch.softmax(z, dim=1).clamp(*ELR_CLAMP)
    sg = p.detach()
    new_rows = beta * buffer_rows.to(z.dtype) + (1.0 - beta) * sg / sg.sum(dim=1, keepdim=True)
    ce = torch.logsumexp(z, dim=1) - z.gather(1, targets[:, None])[:, 0]
    reg = torch.log(1.0 - (new_rows * p).sum(dim=1))
    return ce + lam * reg, new_rows
