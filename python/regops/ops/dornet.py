"""DORNet's contrastive ratio loss ("DORNet: A Degradation Oriented and Regularized Network for Blind Depth
Super-Resolution", yanzq95/DORNet at commit 328f14b), reference only: five L1 means, which torch runs as they are."""
from __future__ import annotations

from typing import Sequence

import torch

from .. import _checks, _registry
from .._constants import acc_dtype

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# The official relu1_1..relu5_1 weights (net/CR.py, ContrastLoss.__init__).
DORNET_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
# The official Vgg19 slices of torchvision's vgg19().features (net/CR.py, Vgg19.__init__): each ends after the
# first ReLU of a block.
_VGG19_SLICES = (("relu1_1", 0, 2), ("relu2_1", 2, 7), ("relu3_1", 7, 12), ("relu4_1", 12, 21),
                 ("relu5_1", 21, 30))


def dornet_vgg19_slices() -> tuple:
    """The official feature extractor as data: ``(name, start, stop)`` for each slice of torchvision's
    ``vgg19(...).features`` that ``net/CR.py`` ``Vgg19`` chains (relu1_1 .. relu5_1). No model is built here (no
    weights are downloaded). To rebuild the official extractor::

        vgg = torchvision.models.vgg19(weights=torchvision.models.VGG19_Weights.IMAGENET1K_V1).features.eval()
        slices = [vgg[a:b] for _, a, b in regops.dornet_vgg19_slices()]
        for p in vgg.parameters():
            p.requires_grad_(False)          # frozen, as the official requires_grad=False

        def feats(x):                        # x: (B, 1, H, W) depth, repeated to 3 channels, NOT ImageNet-normalized
            h, out = x.repeat(1, 3, 1, 1), []
            for s in slices:
                h = s(h)
                out.append(h)
            return out
    """
    return _VGG19_SLICES


def _feats(op: str, arg: str, feats) -> list:
    if isinstance(feats, torch.Tensor) or not isinstance(feats, (list, tuple)):
        _checks.fail(op, arg, "a list of per-level feature tensors", type(feats).__name__, TypeError)
    return list(feats)


def contrast_ratio_loss(anchor_feats: Sequence[torch.Tensor], pos_feats: Sequence[torch.Tensor],
                        neg_feats: Sequence[torch.Tensor], *, weights: Sequence[float] = DORNET_WEIGHTS,
                        eps: float = 1e-7, ratio: bool = True, impl=None) -> torch.Tensor:
    """DORNet's contrastive regularizer (``net/CR.py``, ``ContrastLoss.forward``), on feature lists the caller
    extracts (the official: ``dornet_vgg19_slices``, relu1_1..relu5_1 of a frozen ImageNet VGG19 on the depth maps
    repeated to 3 channels, without ImageNet normalization):

        L = Σ_i w_i · mean|a_i − sg(p_i)| / (mean|a_i − sg(n_i)| + eps)

    with sg the stop-gradient (the official ``.detach()`` on the positive and negative features; the anchor gets
    the gradient of both the numerator and the denominator). ``ratio=False`` drops the denominator (the official
    ``ablation=True``; the training scripts use the ratio). In ``train_nyu_rgbdd.py`` the anchor is the re-degraded
    LR depth ``d_lr_``, the positive the input LR depth, the negative the SR output, weighted 0.1 in the total
    loss (the caller's).

    ``anchor_feats``, ``pos_feats``, ``neg_feats``: lists of the same length as ``weights``; level i of the three
    has one shape (any, at least one element). Values in float32 for half inputs. Departures: none; ``weights``
    and ``eps`` are arguments (official defaults)."""
    op = "contrast_ratio_loss"
    a_l, p_l, n_l = (_feats(op, arg, f) for arg, f in
                     (("anchor_feats", anchor_feats), ("pos_feats", pos_feats), ("neg_feats", neg_feats)))
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().reshape(-1).tolist()
    if not isinstance(weights, (list, tuple)):
        _checks.fail(op, "weights", "a sequence of numbers", type(weights).__name__, TypeError)
    w = [_checks.number(op, f"weights[{i}]", v, low=0, what="a finite weight >= 0") for i, v in enumerate(weights)]
    if len(w) == 0:
        _checks.fail(op, "weights", "at least one level", "an empty sequence")
    for arg, f in (("anchor_feats", a_l), ("pos_feats", p_l), ("neg_feats", n_l)):
        if len(f) != len(w):
            _checks.fail(op, arg, f"{len(w)} feature levels (one per weight)", f"{len(f)}")
    if not isinstance(ratio, bool):
        _checks.fail(op, "ratio", "a bool", f"{type(ratio).__name__} {ratio!r}", TypeError)
    eps = _checks.number(op, "eps", eps, low=0, low_open=True, what="a finite eps > 0")
    first = a_l[0]
    _registry.resolve_impl(op, impl, first.device if isinstance(first, torch.Tensor) else torch.device("cpu"))
    for i in range(len(w)):
        for arg, f in (("anchor_feats", a_l), ("pos_feats", p_l), ("neg_feats", n_l)):
            _checks.check_tensor(op, f"{arg}[{i}]", f[i], dtypes=FLOATS)
        for arg, f in (("pos_feats", p_l), ("neg_feats", n_l)):
            if f[i].shape != a_l[i].shape:
                _checks.fail(op, f"{arg}[{i}]", f"shape {tuple(a_l[i].shape)} (as anchor_feats[{i}])",
                             f"shape {tuple(f[i].shape)}")
        if a_l[i].numel() == 0:
            _checks.fail(op, f"anchor_feats[{i}]", "at least one element", f"shape {tuple(a_l[i].shape)}")
    for arg, f in (("anchor_feats", a_l), ("pos_feats", p_l), ("neg_feats", n_l)):
        for i, t in enumerate(f):
            if t.device != first.device:
                _checks.fail(op, f"{arg}[{i}]", f"device {first.device} (as anchor_feats[0])", f"device {t.device}",
                             RuntimeError)
            if t.dtype != first.dtype:
                _checks.fail(op, f"{arg}[{i}]", f"dtype {_checks.dtype_name(first.dtype)} (as anchor_feats[0])",
                             _checks.dtype_name(t.dtype), TypeError)
    for arg, f in (("anchor_feats", a_l), ("pos_feats", p_l), ("neg_feats", n_l)):
        for i, t in enumerate(f):
            _checks.check_finite_eager(op, f"{arg}[{i}]", t.detach())
    acc = acc_dtype(first.dtype)
    loss = None
    for wi, a, p, n in zip(w, a_l, p_l, n_l):
        a = a.to(acc)
        d_ap = (a - p.detach().to(acc)).abs().mean()
        term = d_ap / ((a - n.detach().to(acc)).abs().mean() + eps) if ratio else d_ap
        loss = wi * term if loss is None else loss + wi * term
    return loss
