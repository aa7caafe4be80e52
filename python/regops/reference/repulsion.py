"""Parameter repulsion of "Adapt then Unlearn" (Tiwary et al.) in plain PyTorch, float64: the oracle of the tests
and the fallback of impl="reference".

Official code: atriguha/Adapt_Unlearn, ``calc_difference_param_new`` in
``Unlearning/Unlearning_MNIST/train_different_losses.py`` (the loss kinds in ``train`` of the same file). For
params θ_p (p ∈ P) and K anchor models φ_{k,p} (the negatively adapted generators):

    R = (Σ_p Σ_k mean((φ_{k,p} − θ_p)²)) / |P| / 2 · K        normalize="official" (the code's ``value/2*len(...)``:
                                                             Python reads it as (value/2)·K)
    R = (Σ_p Σ_k mean((φ_{k,p} − θ_p)²)) / |P|                normalize="mean"

    inverse: γ/R      exp: 100·exp(−γR)      neg_l2: −γR     (the code's val_factor = 1/γ)
"""
from __future__ import annotations

import torch

KINDS = ("inverse", "exp", "neg_l2")
NORMALIZE = ("official", "mean")
EXP_SCALE = 100.0  # the official code's hard-coded factor of the exp loss


def scale(normalize: str, n_tensors: int, k: int) -> float:
    """The factor that turns Σ_p Σ_k mean(...) into R."""
    return (k / 2.0 if normalize == "official" else 1.0) / n_tensors


def official_distance(params, anchor_sets, normalize: str = "official") -> torch.Tensor:
    """R by the literal loop over the K anchor sets (a list of K lists of tensors), in float64."""
    k = len(anchor_sets)
    total = 0
    for p_i, theta in enumerate(params):
        for anchors in anchor_sets:
            total = total + torch.mean((anchors[p_i].double() - theta.double()) ** 2)
    return total * scale(normalize, len(params), k)


def anchor_stats(anchor_sets):
    """Per tensor: the mean φ̄_p over the K sets (float64) and c_p = Σ_k mean((φ_{k,p} − φ̄_p)²) (0-dim, float64)."""
    means, consts = [], []
    for p_i in range(len(anchor_sets[0])):
        stack = torch.stack([a[p_i].detach().double() for a in anchor_sets])
        mean = stack.mean(0)
        means.append(mean)
        # a 0-dim tensor, not a float: under torch.compile a Python number would be a constant of the graph
        consts.append(((stack - mean) ** 2).reshape(len(anchor_sets), -1).mean(1).sum() if mean.numel()
                      else mean.new_zeros(()))
    return means, consts


def distance_from_means(params, means, const_total, k: int, normalize: str) -> torch.Tensor:
    """R from the per-tensor anchor means: Σ_k mean((φ_k − θ)²) = K·mean((θ − φ̄)²) + c_p; float64."""
    total = sum(k * torch.mean((theta.double() - mean.double()) ** 2) for theta, mean in zip(params, means))
    return (total + const_total) * scale(normalize, len(params), k)


def loss(r: torch.Tensor, kind: str, gamma: float) -> torch.Tensor:
    if kind == "inverse":
        return gamma / r
    if kind == "exp":
        return EXP_SCALE * torch.exp(-gamma * r)
    return -gamma * r


def param_repulsion(params, anchor_sets, kind: str = "inverse", gamma: float = 1.0,
                    normalize: str = "official") -> torch.Tensor:
    """The official loss, float64."""
    return loss(official_distance(params, anchor_sets, normalize), kind, gamma)


