"""ConR (Contrastive Regularizer for Deep Imbalanced Regression), pure PyTorch, max-shifted.

Materializes the N×N similarities: this is the oracle and the fallback, not the fast path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .orthonormal import acc_dtype


def pairwise_label_distance(v: torch.Tensor, p: float) -> torch.Tensor:
    """|v_i − v_j| for (N,) values; the p-norm distance between rows for (N, L)."""
    if v.dim() == 1:
        return (v[:, None] - v[None, :]).abs()
    return torch.cdist(v[None], v[None], p=p)[0]


def conr_loss_reference(features, labels, preds, weights, temperature: float, threshold: float, push: float,
                        variant: str, label_norm: float) -> torch.Tensor:
    acc = acc_dtype(features.dtype)
    n = features.shape[0]
    z = F.normalize(features.to(acc), dim=1)
    s = z @ z.T / temperature
    labels, preds = labels.detach().to(acc), preds.detach().to(acc)
    w = torch.ones(n, dtype=acc, device=features.device) if weights is None else weights.detach().to(acc)
    ld = pairwise_label_distance(labels, label_norm)
    pd = pairwise_label_distance(preds, label_norm)
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    pos = (ld <= threshold) & ~eye
    neg = (ld > threshold) & (pd <= threshold)
    # D_i = Σ_{j∈P} e^{s_ij} + #(non-positive columns)·e⁰ + Σ_{j∈N} c_ij e^{s_ij}, with log c_ij the push term.
    if variant == "agedb":
        log_c = torch.log(w)[:, None] + push * ld
    else:
        log_c = torch.log(push * w[:, None] * ld)
    neg_inf = torch.tensor(float("-inf"), dtype=acc, device=features.device)
    terms = torch.where(pos, s, torch.where(neg, s + log_c, neg_inf))
    n_ones = (~pos).sum(1).to(acc)                               # non-positive columns, the diagonal included
    m = torch.maximum(terms.max(dim=1).values, torch.zeros((), dtype=acc, device=features.device))
    log_d = m + torch.log(torch.exp(terms - m[:, None]).sum(1) + n_ones * torch.exp(-m))
    n_pos = pos.sum(1).to(acc)
    denom = n_pos + 1 if variant == "nyud2" else n_pos
    per_anchor = torch.where(pos, log_d[:, None] - s, torch.zeros_like(s)).sum(1) / denom.clamp_min(1)
    valid = neg.any(1) & pos.any(1)                               # no negative: 0 (official); no positive: 0 (not NaN)
    per_anchor = torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
    if variant == "agedb":
        per_anchor = w * per_anchor
    return per_anchor.mean().to(features.dtype)
