"""ConR as the official code computes it (BorealisAI/ConR: agedb-dir/imdb-wiki-dir loss.py, nyud2-dir ConR.py),
re-expressed: the same N×N temporaries, the Python loop that clears the diagonal, exp without a max shift.
This is the 'official' speed baseline and, where it is finite, a second oracle for the tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def conr_official(features, labels, preds, weights, *, temperature, threshold, push, variant="agedb"):
    """labels, preds: (N,) scalars; weights: (N,) or None. Gives NaN where an anchor has no positive."""
    n = features.shape[0]
    q = F.normalize(features, dim=1)
    k = F.normalize(features, dim=1)
    y = labels.reshape(n, 1)
    p = preds.reshape(n, 1)
    w = torch.ones(n, 1, dtype=features.dtype, device=features.device) if weights is None else weights.reshape(n, 1)
    label_dist = torch.abs(y - y.T)
    pred_dist = torch.abs(p - p.T)
    positives = label_dist.le(threshold)
    negatives = (~label_dist.le(threshold)) * pred_dist.le(threshold)
    for i in range(n):  # as the official code does it
        positives[i][i] = 0
    sim = torch.einsum("nc,kc->nk", [q, k]) / temperature
    pos = sim * positives
    neg = sim * negatives
    if variant == "agedb":
        push_w = w * torch.exp(label_dist * push)
        denom = positives.sum(1)
    else:  # nyud2: linear push weight; the positive count includes the anchor itself
        push_w = label_dist * w * push
        denom = label_dist.le(threshold).sum(1)
    neg_sum = (push_w * torch.exp(neg) * negatives).sum(1)
    has_neg = negatives.sum(1).bool()
    per_anchor = (-torch.log(torch.exp(pos) / (torch.exp(pos).sum(1) + neg_sum).unsqueeze(-1)) * positives).sum(1) / denom
    if variant == "agedb":
        return (w * (per_anchor * has_neg).unsqueeze(-1)).mean()
    return (per_anchor * has_neg).unsqueeze(-1).mean()
