"""Decoupled mixup, DM ("Harnessing Hard Mixed Samples with Decoupled Regularizer", NeurIPS 2023;
code Westlake-AI/openmixup: ``soft_mix_cross_entropy`` in openmixup/models/losses/cross_entropy_loss.py, the η
weights and the decoupled term in openmixup/models/heads/cls_mixup_head.py).

Per row i with mixed classes a = target_a[i], b = target_b[i] and mixing ratio λ:
    soft mixup CE      −λ·log p_a − (1 − λ)·log p_b
    decoupled term     η_a·(−log e^{z_a}/(e^{z_a} + Σ_{k∉{a,b}} e^{z_k})) + η_b·(the same for b)
summed and divided by the batch size N (the official avg_factor). η = [eta·f(λ), eta·f(1 − λ)], with
f(x) = thr^(−|idx|)·x^|idx| for x < thr and 1 otherwise under lam_scale="pow", f = 1 under "none"; mode "less" keeps
only the term of the smaller weight (λ < eta_thr: the λ term), "more" only that of the larger one.

official_pairing=True reproduces the official head's batch-level pairing, knowingly:
- a row's decoupled term exists only if the row has as many hot classes (label > 1e-3) as the batch's most mixed
  row; same-class pairs and λ <= 1e-3 (or >= 1 − 1e-3) rows fall back to the plain soft CE;
- the term is skipped for the whole batch when that maximum is one, or when the two hot labels of the first mixed
  row are equal (λ = 0.5 exactly, compared in float32 as the official labels are);
- η[0] = eta·f(λ) goes to the class whose label equals the lower-class-index label of the batch's first mixed row:
  if that row has target_a > target_b, every row's η(λ) goes to its b class and η(1 − λ) to its a class.
official_pairing=False pairs η(λ) with a and η(1 − λ) with b in every row with a ≠ b.

Defaults are the official DM configs' (eta 0.1, "both", "pow", thr 1, idx 1); the head's own default is eta = 0
(the term off). One fused row pass computes the loss and its gradient (kernels: csrc/cpu/class_rows.cpp,
csrc/cuda/class_rows_kernels.cu, triton/class_rows.py; math: csrc/include/regops/class_rows_math.h); the official
pairing becomes per-row coefficients here, with tensor ops only (no host sync, torch.compile traces it).
"""
from __future__ import annotations

import torch

from .. import _checks, _registry
from .._constants import acc_dtype
from .._loader import schema_registered, triton_available
from ..contracts import class_rows as contract
from ..reference import class_rows as reference
from . import _row_grad

OP = "decoupled_mixup_loss"
DTYPES = (torch.float32, torch.float64, torch.bfloat16)
HOT = 1e-3  # the official "hot class" threshold of a mixed label

if schema_registered("mixup_rows"):
    torch.library.register_fake("regops::mixup_rows")(contract.fake_mixup_rows)
    torch.library.register_autograd("regops::mixup_rows", _row_grad.backward_rows,
                                    setup_context=_row_grad.setup_context)

if triton_available():
    from ..triton import class_rows as _triton_class_rows  # noqa: F401  (registers the triton ops)

    torch.library.register_autograd("regops::mixup_rows_triton", _row_grad.backward_rows,
                                    setup_context=_row_grad.setup_context)


def eta_weights(lam: float, eta: float, mode: str, lam_scale: str, lam_idx: float, lam_thr: float,
                eta_thr: float = 0.5) -> tuple[float, float]:
    """[η(λ), η(1 − λ)]: the official head's weights of the two decoupled terms."""
    if mode == "both":
        w = [lam, 1.0 - lam]
    elif mode == "less":
        w = [lam, 0.0] if lam < eta_thr else [0.0, 1.0 - lam]
    else:  # "more"
        w = [lam, 0.0] if lam >= eta_thr else [0.0, 1.0 - lam]
    p = abs(lam_idx)

    def scale(x):
        if lam_scale == "none" or x >= lam_thr:
            return 1.0
        return lam_thr ** (-p) * x ** p

    return tuple(0.0 if x == 0.0 else eta * scale(x) for x in w)


def mixup_coeffs(target_a, target_b, lam: float, eta_a: float, eta_b: float, official_pairing: bool,
                 dtype: torch.dtype) -> torch.Tensor:
    """The per-row [w_a, w_b, e_a, e_b] of the mixup_rows schema."""
    n = target_a.shape[0]
    pair = target_a != target_b
    w = torch.tensor([lam, 1.0 - lam], dtype=dtype, device=target_a.device).expand(n, 2)
    ea = torch.full((n,), eta_a, dtype=dtype, device=target_a.device)
    eb = torch.full((n,), eta_b, dtype=dtype, device=target_a.device)
    if official_pairing:
        lam32 = float(torch.tensor(lam, dtype=torch.float32))
        rest32 = float(torch.tensor(1.0 - lam, dtype=torch.float32))
        two_hot = lam32 > HOT and rest32 > HOT
        if not two_hot or lam32 == rest32:
            on = torch.zeros_like(pair)
        else:
            on = pair
        # the batch's first mixed row decides which class η(λ) goes to
        first = torch.argmax(pair.to(torch.int8)).reshape(1)
        swap = target_a.index_select(0, first) > target_b.index_select(0, first)
        ea, eb = torch.where(swap, eb, ea), torch.where(swap, ea, eb)
    else:
        on = pair
    zero = torch.zeros((), dtype=dtype, device=target_a.device)
    return torch.stack([w[:, 0], w[:, 1], torch.where(on, ea, zero), torch.where(on, eb, zero)], dim=1)


def _check_targets(arg, t, logits):
    _checks.check_tensor(OP, arg, t, ndims=(1,), dtypes=(torch.int64, torch.int32))
    if t.shape[0] != logits.shape[0]:
        _checks.fail(OP, arg, f"shape ({logits.shape[0]},) (one class per row of logits)", f"shape {tuple(t.shape)}")
    if t.device != logits.device:
        _checks.fail(OP, arg, f"device {logits.device} (as logits)", f"device {t.device}", RuntimeError)
    if not torch.compiler.is_compiling() and t.numel() and _checks.check_finite_enabled(t.device):
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= logits.shape[1]:
            _checks.fail(OP, arg, f"class indices in [0, {logits.shape[1]})", f"{lo if lo < 0 else hi}")


def decoupled_mixup_loss(logits: torch.Tensor, target_a: torch.Tensor, target_b: torch.Tensor, lam, *,
                         eta: float = 0.1, mode: str = "both", lam_scale: str = "pow", lam_idx: float = 1.0,
                         lam_thr: float = 1.0, eta_thr: float = 0.5, official_pairing: bool = True,
                         impl=None) -> torch.Tensor:
    """The decoupled mixup loss of a batch of mixed samples (the module docstring has the formula and the official
    quirks): logits (N, C) float32/float64/bfloat16, target_a/target_b (N,) int64 class indices, lam the mixing
    ratio in [0, 1] (a float or a 0-dim tensor). Returns a 0-dim tensor in the accumulation dtype."""
    _checks.check_tensor(OP, "logits", logits, ndims=(2,), dtypes=DTYPES)
    if logits.shape[1] < 1:
        _checks.fail(OP, "logits", "at least one class (N, C >= 1)", f"shape {tuple(logits.shape)}")
    _check_targets("target_a", target_a, logits)
    _check_targets("target_b", target_b, logits)
    lam = _checks.number(OP, "lam", lam, low=0.0, high=1.0, what="a mixing ratio in [0, 1]")
    eta = _checks.number(OP, "eta", eta, low=0.0, what="a finite non-negative weight")
    _checks.check_choice(OP, "mode", mode, ("both", "less", "more"))
    _checks.check_choice(OP, "lam_scale", lam_scale, ("pow", "none"))
    lam_idx = _checks.number(OP, "lam_idx", lam_idx)
    lam_thr = _checks.number(OP, "lam_thr", lam_thr, low=0.0, low_open=True, what="a finite positive threshold")
    eta_thr = _checks.number(OP, "eta_thr", eta_thr)
    chosen = _registry.pick(OP, impl, logits, "logits")
    acc = acc_dtype(logits.dtype)
    n = logits.shape[0]
    if n == 0:
        _checks.fail(OP, "logits", "at least one row (the loss is a batch mean)", f"shape {tuple(logits.shape)}")
    a, b = target_a.long(), target_b.long()
    eta_a, eta_b = eta_weights(lam, eta, mode, lam_scale, lam_idx, lam_thr, eta_thr)
    coeffs = mixup_coeffs(a, b, lam, eta_a, eta_b, bool(official_pairing), acc)
    classes = torch.stack([a, b], dim=1)
    if chosen == "reference":
        rows = reference.mixup_rows(logits, classes, coeffs)
    else:
        want_grad = logits.requires_grad and torch.is_grad_enabled()
        rows = _registry.kernel("class_rows", chosen, "mixup")(logits, classes, coeffs, want_grad)[0]
    _row_grad.check_rows_finite(OP, rows, [("logits", logits)])
    return rows.sum() / n
