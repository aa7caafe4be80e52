"""ConR: the contrastive regularizer of "ConR: Contrastive Regularizer for Deep Imbalanced Regression".

Semantics are the official code's (BorealisAI/ConR), with two documented departures: an anchor with no
positive contributes 0 (the official code gives NaN), and every sum is max-shifted (equal in value).
The fused O(N)-memory kernels are issue 3's remaining work; today every impl name but "reference" raises.
"""
from __future__ import annotations

import math

import torch

from .. import _checks
from .._loader import resolve_impl
from ..reference.conr import conr_loss_reference

OP = "conr_loss"
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
KERNELS: dict = {}  # impl -> compiled/Triton op; filled as the kernels land
# The official training values: agedb/imdb (τ, ω, push) and nyud2.
VARIANT_DEFAULTS = {"agedb": (0.07, 1.0, 0.01), "nyud2": (0.2, 0.2, 0.2)}


def _check_targets(arg: str, t, n: int, features: torch.Tensor) -> torch.Tensor:
    _checks.check_tensor(OP, arg, t, ndims=(1, 2))
    if t.shape[0] != n:
        _checks.fail(OP, arg, f"{n} rows (one per feature row)", f"shape {tuple(t.shape)}")
    if t.device != features.device:
        _checks.fail(OP, arg, f"device {features.device} (as features)", f"device {t.device}", RuntimeError)
    if not t.is_floating_point():
        t = t.to(features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32)
    _checks.check_finite_eager(OP, arg, t)
    return t


def conr_loss(features, labels, preds, weights=None, *, temperature=None, threshold=None, push=None,
              variant: str = "agedb", label_norm: float = 2, impl=None) -> torch.Tensor:
    """ConR on a batch: features (N, D); labels and preds (N,) or (N, L) (rows compared by the
    `label_norm`-norm); weights (N,) per-sample weights (LDS) or None. None hyper-parameters resolve to the
    variant's official values. Gradient flows to features only. For depth maps (nyud2), pass per-image means
    of labels, preds and weights, as the official code computes them."""
    _checks.check_choice(OP, "variant", variant, tuple(VARIANT_DEFAULTS))
    _checks.check_tensor(OP, "features", features, ndims=(2,), dtypes=DTYPES)
    n = features.shape[0]
    if n == 0:
        _checks.fail(OP, "features", "at least one row", f"shape {tuple(features.shape)}")
    labels = _check_targets("labels", labels, n, features)
    preds = _check_targets("preds", preds, n, features)
    if labels.shape != preds.shape:
        _checks.fail(OP, "preds", f"the shape of labels {tuple(labels.shape)}", f"shape {tuple(preds.shape)}")
    if weights is not None:
        _checks.check_tensor(OP, "weights", weights, ndims=(1,))
        if weights.shape[0] != n:
            _checks.fail(OP, "weights", f"shape ({n},)", f"shape {tuple(weights.shape)}")
        _checks.check_finite_eager(OP, "weights", weights)
    tau, omega, push_default = VARIANT_DEFAULTS[variant]
    temperature = tau if temperature is None else temperature
    threshold = omega if threshold is None else threshold
    push = push_default if push is None else push
    for name, v in (("temperature", temperature), ("threshold", threshold), ("push", push), ("label_norm", label_norm)):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            _checks.fail(OP, name, "a finite number", repr(v))
    if temperature <= 0:
        _checks.fail(OP, "temperature", "a positive number", repr(temperature))
    _checks.check_finite_eager(OP, "features", features)
    resolve_impl(OP, impl, features.device, KERNELS)  # only the reference exists yet: a named kernel raises
    return conr_loss_reference(features, labels, preds, weights, float(temperature), float(threshold), float(push),
                               variant, float(label_norm))
