"""supcon_loss and focal_supcon_loss on the contrastive engine (ops/_contrastive.py)."""
from __future__ import annotations

import torch

from .. import _checks
from . import _contrastive

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _validate(op, features, labels, process_group=None) -> torch.Tensor:
    n = _contrastive.check_features(op, features, DTYPES)
    _checks.check_tensor(op, "labels", labels, ndims=(1,))
    if labels.shape[0] != n:
        _checks.fail(op, "labels", f"shape ({n},) (one per feature row)", f"shape {tuple(labels.shape)}")
    if labels.device != features.device:
        _checks.fail(op, "labels", f"device {features.device} (as features)", f"device {labels.device}", RuntimeError)
    labels = labels.detach()
    if labels.is_complex():
        _checks.fail(op, "labels", "real labels (class ids or values)", f"dtype {_checks.dtype_name(labels.dtype)}",
                     TypeError)
    if labels.is_floating_point():
        if torch.compiler.is_compiling():
            _checks.fail(op, "labels", "integer class ids under torch.compile", f"dtype {labels.dtype}", TypeError)
        _checks.check_finite_eager(op, "labels", labels)
        if process_group is None:
            labels = torch.unique(labels, return_inverse=True)[1]  # equal values, equal ids
        else:  # ids from the labels of every rank, so that equal values get equal ids across ranks too
            everyone = _contrastive._gather(labels, process_group, grad=False)
            rank = _contrastive._world(process_group)[1]
            n = labels.shape[0]
            labels = torch.unique(everyone, return_inverse=True)[1][rank * n:(rank + 1) * n]
    return labels.to(torch.int64).contiguous()


def _loss(op, kind, features, labels, temperature, process_group, impl):
    temperature = _checks.number(op, "temperature", temperature, low=0, low_open=True, what="a positive finite number")
    labels = _validate(op, features, labels, process_group)
    rows, n_pos, world, m = _contrastive.row_losses(op, kind, features, labels, None, None,
                                                 temperature=temperature, process_group=process_group,
                                                 impl=impl)
    return _contrastive.reduce_loss(kind, rows, n_pos, None, world, m, process_group).to(features.dtype)


def supcon_loss(features, labels, *, temperature: float = 0.07, process_group=None, impl=None) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the mean over positives outside the log) on features
    (N, D) and labels (N,); stack the views yourself. Anchors without a positive contribute 0.
    With `process_group`, candidates come from every rank (see regops.conr_loss)."""
    return _loss("supcon_loss", _contrastive.SUPCON, features, labels, temperature, process_group, impl)


def focal_supcon_loss(features, labels, *, temperature: float = 0.07, process_group=None, impl=None) -> torch.Tensor:
    """Core-tuning's focal contrastive loss on features (N, D) and labels (N,):
    −Σ_i [(1/N) Σ_{j∈P_i} (1 − p_ij)·log p_ij] / #(anchors with a positive)."""
    return _loss("focal_supcon_loss", _contrastive.FOCAL, features, labels, temperature, process_group, impl)
