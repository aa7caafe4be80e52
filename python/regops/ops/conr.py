"""ConR: the contrastive regularizer of "ConR: Contrastive Regularizer for Deep Imbalanced Regression".

Semantics are the official code's (BorealisAI/ConR), with two documented departures: an anchor with no
positive contributes 0 (the official code gives NaN), and every sum is max-shifted (equal in value).
The kernels are the contrastive engine's (ops/_contrastive.py): the similarity is streamed in tiles
and only O(N) row statistics are saved, never an N×N tensor.
"""
from __future__ import annotations

import torch

from .. import _checks
from .._constants import acc_dtype
from . import _contrastive

OP = "conr_loss"
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# The official training values: agedb/imdb (τ, ω, push) and nyud2.
VARIANT_DEFAULTS = {"agedb": (0.07, 1.0, 0.01), "nyud2": (0.2, 0.2, 0.2)}


def _check_targets(arg: str, t, n: int, features: torch.Tensor) -> torch.Tensor:
    _checks.check_tensor(OP, arg, t, ndims=(1, 2))
    if t.shape[0] != n:
        _checks.fail(OP, arg, f"{n} rows (one per feature row)", f"shape {tuple(t.shape)}")
    if t.device != features.device:
        _checks.fail(OP, arg, f"device {features.device} (as features)", f"device {t.device}", RuntimeError)
    if t.is_complex():  # the cast below would drop the imaginary part
        _checks.fail(OP, arg, "real values", f"dtype {_checks.dtype_name(t.dtype)}", TypeError)
    if not t.is_floating_point():
        t = t.to(features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32)
    _checks.check_finite_eager(OP, arg, t)
    return t


def conr_loss(features, labels, preds, weights=None, *, temperature=None, threshold=None, push=None,
              variant: str = "agedb", label_norm: float = 2, process_group=None, impl=None) -> torch.Tensor:
    """ConR on a batch: features (N, D); labels and preds (N,) or (N, L) (rows compared by the
    `label_norm`-norm); weights (N,) per-sample weights (LDS) or None. None hyper-parameters resolve to the
    variant's official values. Gradient flows to features only. For depth maps (nyud2), pass per-image means
    of labels, preds and weights, as the official code computes them.

    With `process_group`, anchors are this rank's rows and candidates the rows of every rank (equal row counts
    per rank); the value is this rank's share, and the mean over ranks equals the loss of the whole batch."""
    _checks.check_choice(OP, "variant", variant, tuple(VARIANT_DEFAULTS))
    n = _contrastive.check_features(OP, features, DTYPES)
    labels = _check_targets("labels", labels, n, features)
    preds = _check_targets("preds", preds, n, features)
    if labels.shape != preds.shape:
        _checks.fail(OP, "preds", f"the shape of labels {tuple(labels.shape)}", f"shape {tuple(preds.shape)}")
    if weights is not None:
        _checks.check_tensor(OP, "weights", weights, ndims=(1,))
        if weights.shape[0] != n:
            _checks.fail(OP, "weights", f"shape ({n},)", f"shape {tuple(weights.shape)}")
        if weights.device != features.device:
            _checks.fail(OP, "weights", f"device {features.device} (as features)", f"device {weights.device}", RuntimeError)
        if weights.is_complex():  # was torch's "lt_cpu" not implemented for 'ComplexFloat'
            _checks.fail(OP, "weights", "real weights", f"dtype {_checks.dtype_name(weights.dtype)}", TypeError)
        _checks.check_finite_eager(OP, "weights", weights)
    tau, omega, push_default = VARIANT_DEFAULTS[variant]
    temperature = tau if temperature is None else temperature
    threshold = omega if threshold is None else threshold
    push = push_default if push is None else push
    temperature = _checks.number(OP, "temperature", temperature, low=0, low_open=True, what="a positive number")
    threshold = _checks.number(OP, "threshold", threshold)
    push = _checks.number(OP, "push", push)
    if isinstance(label_norm, bool) or not isinstance(label_norm, (int, float)):
        _checks.fail(OP, "label_norm", "a positive number or inf", f"{type(label_norm).__name__} {label_norm!r}",
                     TypeError)
    if not label_norm > 0:
        _checks.fail(OP, "label_norm", "a positive number or inf", repr(label_norm))
    if variant == "nyud2" and push < 0:
        _checks.fail(OP, "push", "a number >= 0 for variant 'nyud2' (its log(push·w·d) needs it)", repr(push))
    if weights is not None and not torch.compiler.is_compiling() and _checks.check_finite_enabled(weights.device) \
            and bool((weights < 0).any()):
        _checks.fail(OP, "weights", "weights >= 0 (their log enters the denominator)", f"min {weights.min().item()}")
    acc = acc_dtype(features.dtype)
    as_rows = lambda t: t.detach().to(acc).reshape(n, -1).contiguous()  # noqa: E731  (n,) -> (n, 1)
    w = weights.detach().to(acc).contiguous() if weights is not None else None
    kind = _contrastive.CONR_AGEDB if variant == "agedb" else _contrastive.CONR_NYUD2
    rows, n_pos, world, m = _contrastive.row_losses(
        OP, kind, features, as_rows(labels), as_rows(preds), w, temperature=float(temperature),
        threshold=float(threshold), push=float(push), label_norm=float(label_norm), process_group=process_group,
        impl=impl)
    loss = _contrastive.reduce_loss(kind, rows, n_pos, w, world, m, process_group)
    return loss.to(features.dtype)
