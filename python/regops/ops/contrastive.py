"""supcon_loss and focal_supcon_loss (issue 3's pairwise engine will give them fused kernels; today the
reference serves every call and a named kernel impl raises)."""
from __future__ import annotations

import math

import torch

from .. import _checks
from .._loader import resolve_impl
from ..reference.contrastive import focal_supcon_loss_reference, supcon_loss_reference

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
SUPCON_KERNELS: dict = {}
FOCAL_KERNELS: dict = {}


def _validate(op, features, labels, temperature):
    _checks.check_tensor(op, "features", features, ndims=(2,), dtypes=DTYPES)
    n = features.shape[0]
    if n == 0:
        _checks.fail(op, "features", "at least one row", f"shape {tuple(features.shape)}")
    _checks.check_tensor(op, "labels", labels, ndims=(1,))
    if labels.shape[0] != n:
        _checks.fail(op, "labels", f"shape ({n},) (one per feature row)", f"shape {tuple(labels.shape)}")
    if labels.device != features.device:
        _checks.fail(op, "labels", f"device {features.device} (as features)", f"device {labels.device}", RuntimeError)
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        _checks.fail(op, "temperature", "a positive finite number", repr(temperature))
    _checks.check_finite_eager(op, "features", features)


def supcon_loss(features, labels, *, temperature: float = 0.07, impl=None) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the mean over positives outside the log) on features
    (N, D) and labels (N,); stack the views yourself. Anchors without a positive contribute 0."""
    _validate("supcon_loss", features, labels, temperature)
    resolve_impl("supcon_loss", impl, features.device, SUPCON_KERNELS)
    return supcon_loss_reference(features, labels.detach(), float(temperature))


def focal_supcon_loss(features, labels, *, temperature: float = 0.07, impl=None) -> torch.Tensor:
    """Core-tuning's focal contrastive loss on features (N, D) and labels (N,)."""
    _validate("focal_supcon_loss", features, labels, temperature)
    resolve_impl("focal_supcon_loss", impl, features.device, FOCAL_KERNELS)
    return focal_supcon_loss_reference(features, labels.detach(), float(temperature))
