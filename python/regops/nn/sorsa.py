"""SORSA adapter layer: W = W_res + scale·B·diag(S)·A with A, S, B trainable and W_res frozen."""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks

OP = "SORSALinear"


def randomized_svd(w: torch.Tensor, rank: int, oversample: int, niter: int, seed: int = 0):
    """Top-`rank` thin SVD by randomized range finding (Halko, Martinsson & Tropp 2011, Alg. 4.4): a Gaussian
    sketch, `niter` power iterations re-orthonormalized by QR, then the exact SVD of the small projection.
    Costs (2·niter + 2) products of W with an n×(rank+oversample) block. Seeded, so it is reproducible."""
    k = min(rank + oversample, *w.shape)
    g = torch.Generator(device=w.device).manual_seed(seed)
    omega = torch.randn(w.shape[1], k, generator=g, device=w.device, dtype=w.dtype)
    q = torch.linalg.qr(w @ omega).Q
    for _ in range(niter):
        q = torch.linalg.qr(w.T @ q).Q
        q = torch.linalg.qr(w @ q).Q
    u_small, s, vh = torch.linalg.svd(q.T @ w, full_matrices=False)
    return (q @ u_small)[:, :rank], s[:rank], vh[:rank]


def top_singular_triplets(weight: torch.Tensor, rank: int, init: str, oversample=None, niter: int = 3):
    """(B (out, r), S (r,), A (r, in)) of the top-r singular triplets, W ≈ B diag(S) A.

    init="svd": the exact thin SVD. init="svd_lowrank": randomized SVD with max(10, r/2) extra columns and
    `niter` power iterations: far faster on 4096² weights, close for the top-r where the spectrum has a gap.
    """
    w = weight.detach().to(torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype)
    if init == "svd":
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        return U[:, :rank], S[:rank], Vh[:rank]
    return randomized_svd(w, rank, max(10, rank // 2) if oversample is None else oversample, niter)


class SORSALinear(nn.Module):
    """y = x W_resᵀ + scale·((x Aᵀ)·S) Bᵀ + bias; the out×in product B·diag(S)·A is never formed."""

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = True, alpha=None,
                 device=None, dtype=None):
        super().__init__()
        if not (isinstance(rank, int) and 1 <= rank <= min(in_features, out_features)):
            _checks.fail(OP, "rank", f"an int in [1, {min(in_features, out_features)}]", repr(rank))
        kw = dict(device=device, dtype=dtype)
        self.in_features, self.out_features, self.rank, self.alpha = in_features, out_features, rank, alpha
        self.scale = (alpha / rank) if alpha is not None else 1.0
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **kw), requires_grad=False)  # W_res
        self.bias = nn.Parameter(torch.zeros(out_features, **kw), requires_grad=False) if bias else None
        self.A = nn.Parameter(torch.zeros(rank, in_features, **kw))
        self.S = nn.Parameter(torch.zeros(rank, **kw))
        self.B = nn.Parameter(torch.zeros(out_features, rank, **kw))
        self.merged = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, alpha=None, init: str = "svd") -> "SORSALinear":
        _checks.check_choice(OP, "init", init, ("svd", "svd_lowrank"))
        if not isinstance(linear, nn.Linear):
            _checks.fail(OP, "linear", "an nn.Linear", type(linear).__name__, TypeError)
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None, alpha=alpha,
                    device=w.device, dtype=w.dtype)
        with torch.no_grad():
            B, S, A = top_singular_triplets(w, rank, init)
            layer.A.copy_(A)
            layer.S.copy_(S)
            layer.B.copy_(B)
            low_rank = (B * S) @ A
            layer.weight.copy_((w.detach().to(low_rank.dtype) - layer.scale * low_rank).to(w.dtype))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def sorsa_factors(self) -> tuple:
        """(A, B): what regops.sorsa_regularize_ regularizes (it finds SORSA layers by this method)."""
        return self.A, self.B

    def delta_weight(self) -> torch.Tensor:
        return self.scale * (self.B * self.S) @ self.A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        return y + self.scale * F.linear(F.linear(x, self.A) * self.S, self.B)

    @torch.no_grad()
    def merge(self) -> None:
        """Folds the adapter into W_res for inference (forward is then one GEMM)."""
        if not self.merged:
            self.weight.add_(self.delta_weight().to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight.sub_(self.delta_weight().to(self.weight.dtype))
            self.merged = False

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, scale={self.scale:g}, merged={self.merged}"


def _matches(name: str, module: nn.Module, target_modules) -> bool:
    if target_modules is None:
        return True
    if isinstance(target_modules, str):
        return re.search(target_modules, name) is not None
    for t in target_modules:
        if isinstance(t, type) and isinstance(module, t):
            return True
        if isinstance(t, str) and (name == t or name.split(".")[-1] == t or re.fullmatch(t, name)):
            return True
    return False


def apply_sorsa(model: nn.Module, rank: int, target_modules=None, *, alpha=None, init: str = "svd") -> nn.Module:
    """Replaces the matching nn.Linear layers of `model` in place by SORSALinear and freezes W_res and bias.

    target_modules: None (every nn.Linear), a regex searched in the qualified name, or a list of names
    (full or last component, e.g. ["q_proj", "v_proj"]), full-match regexes or module types.
    """
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(name, m, target_modules)]
    if not targets:
        _checks.fail("apply_sorsa", "target_modules", "at least one matching nn.Linear", repr(target_modules))
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, SORSALinear.from_linear(linear, rank, alpha=alpha, init=init))
    return model
