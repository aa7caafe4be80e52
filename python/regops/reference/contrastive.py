"""Supervised contrastive losses on one (N, D) batch, pure PyTorch (N×N materialized: the oracle).

s_ij = ⟨z_i, z_j⟩/τ with z the L2-normalized features; positives of i are the j ≠ i with the same label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .orthonormal import acc_dtype


def _log_prob(features, labels, temperature):
    """(logp, positives): logp_ij = s_ij − log Σ_{k≠i} e^{s_ik}, max-shifted."""
    n = features.shape[0]
    z = F.normalize(features.to(acc_dtype(features.dtype)), dim=1)
    s = z @ z.T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    others = s.masked_fill(eye, float("-inf"))
    lse = torch.logsumexp(others, dim=1, keepdim=True)
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # N = 1: no other column at all
    logp = s - lse
    positives = (labels[:, None] == labels[None, :]) & ~eye
    return logp, positives


def supcon_loss_reference(features, labels, temperature: float) -> torch.Tensor:
    """Khosla et al.'s L_out: −mean over anchors of the mean over positives of logp; an anchor without a
    positive contributes 0 (as the current official SupContrast code does)."""
    logp, pos = _log_prob(features, labels, temperature)
    n_pos = pos.sum(1)
    per_anchor = -torch.where(pos, logp, torch.zeros_like(logp)).sum(1) / n_pos.clamp_min(1)
    return per_anchor.mean().to(features.dtype)


def focal_supcon_loss_reference(features, labels, temperature: float) -> torch.Tensor:
    """Core-tuning's focal contrastive loss: −Σ_i [(1/N) Σ_j m_ij (1 − p_ij) logp_ij] / #(anchors with a
    positive), p_ij = e^{logp_ij}; note the 1/N over all columns. 0 when no anchor has a positive."""
    logp, pos = _log_prob(features, labels, temperature)
    n = features.shape[0]
    lp = torch.where(pos, logp, torch.zeros_like(logp))  # masked first, so no inf·0 reaches the backward
    focal = torch.where(pos, (1 - lp.exp()) * lp, torch.zeros_like(lp)).sum(1) / n
    anchors = pos.any(1).sum().clamp_min(1)
    return (-focal.sum() / anchors).to(features.dtype)
