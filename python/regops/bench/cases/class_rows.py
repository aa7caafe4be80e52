"""Decoupled mixup and ELR, fwd+bwd, at B = 256 and C in {100, 1000, 32000} (--quick: 100 and 1000): the fused row
kernels against the eager official formulation (openmixup's head: one-hot labels, log-softmax, the soft CE and a
masked log-softmax per decoupled term; ELR's elr_loss: softmax, clamp, the indexed buffer update, CE and the
regularizer), and regops' own pure-PyTorch reference."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import regops
from regops import _registry

from ..harness import Case

B = 256
LAM, ETA = 0.3, 0.1
N_TRAIN = 4 * B


def _dm_setup(C, device):
    def setup():
        g = torch.Generator().manual_seed(C)
        z = torch.randn(B, C, generator=g).to(device).requires_grad_()
        ya = torch.randint(0, C, (B,), generator=g).to(device)
        yb = torch.randint(0, C, (B,), generator=g).to(device)
        return z, ya, yb
    return setup


def dm_official(s):
    """openmixup's mixup head with the decoupled term (eta 0.1, "both", pow with thr 1, idx 1), eager."""
    z, ya, yb = s
    N, C = z.shape
    label = LAM * F.one_hot(ya, C).float() + (1 - LAM) * F.one_hot(yb, C).float()
    loss = (-label * F.log_softmax(z, dim=-1)).sum() / N
    hot = label > 1e-3
    counts = hot.sum(1)
    k = counts.max()
    rows = counts == k
    first = rows.nonzero()[0, 0]
    lam_k = label[first][hot[first]]
    eta_w = [ETA * LAM, ETA * (1 - LAM)]
    for i in range(int(k)):
        mask = ~hot | (label == lam_k[i])
        logp = z.masked_fill(~mask, float("-inf")).log_softmax(dim=-1)
        term = -(logp * (label == lam_k[i])).nan_to_num(0.0).sum(1)
        loss = loss + eta_w[i] * (term * rows).sum() / N
    loss.backward()
    z.grad = None


def dm_fused(impl):
    def run(s):
        z, ya, yb = s
        regops.decoupled_mixup_loss(z, ya, yb, LAM, eta=ETA, impl=impl).backward()
        z.grad = None
    return run


def _elr_setup(C, device):
    def setup():
        g = torch.Generator().manual_seed(C)
        z = torch.randn(B, C, generator=g).to(device).requires_grad_()
        y = torch.randint(0, C, (B,), generator=g).to(device)
        idx = torch.randperm(N_TRAIN, generator=g)[:B].to(device)
        return z, y, idx, torch.zeros(N_TRAIN, C, device=device)
    return setup


def elr_official(s):
    """ELR's elr_loss (beta 0.7, lambda 3), eager, its buffer updated by indexed assignment."""
    z, y, idx, target = s
    y_pred = F.softmax(z, dim=1).clamp(1e-4, 1.0 - 1e-4)
    y_pred_ = y_pred.data.detach()
    target[idx] = 0.7 * target[idx] + 0.3 * (y_pred_ / y_pred_.sum(dim=1, keepdim=True))
    loss = F.cross_entropy(z, y) + 3.0 * (1 - (target[idx] * y_pred).sum(dim=1)).log().mean()
    loss.backward()
    z.grad = None


def elr_fused(impl):
    def run(s):
        z, y, idx, target = s
        regops.elr_loss(z, y, idx, target, beta=0.7, lam=3.0, impl=impl).backward()
        z.grad = None
    return run


def cases(quick: bool, device: torch.device) -> list[Case]:
    impls = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    out = []
    for C in ([100, 1000] if quick else [100, 1000, 32000]):
        size = f"{B}x{C}"
        elems = B * C
        for op, setup, official, fused, n_ref in (
                ("decoupled_mixup_loss", _dm_setup(C, device), dm_official, dm_fused, 12),
                ("elr_loss", _elr_setup(C, device), elr_official, elr_fused, 10)):
            out.append(Case(op, size, "official", setup, official, predicted_bytes=n_ref * 4 * elems,
                            note="eager official formulation"))
            out.append(Case(op, size, "reference", setup, fused("reference"), predicted_bytes=n_ref * 4 * elems))
            for impl in impls:
                ok, why = _registry.available(op, impl, device)
                out.append(Case(op, size, impl, setup, fused(impl), predicted_bytes=6 * 4 * elems,
                                skip=None if ok else why))
    return out
