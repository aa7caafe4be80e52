"""ELR, early-learning regularization ("Early-Learning Regularization Prevents Memorization of Noisy Labels",
NeurIPS 2020; code shengliu66/ELR, ``elr_loss`` in ELR/model/loss.py).

Per row i with sample index n = index[i]:
    p̂ = clamp(softmax(z_i), 1e-4, 1 − 1e-4)
    t[n] ← β·t[n] + (1 − β)·sg(p̂)/Σ sg(p̂)          (the buffer row, updated before use, as the official code does)
    L = mean_i CE(z_i, y_i) + λ·mean_i log(1 − ⟨t[n], p̂⟩)
The clamp passes gradient on the closed interval [1e-4, 1 − 1e-4] (torch.clamp's rule); no gradient flows into
the buffer. Official configs: CIFAR-10 symmetric noise β = 0.7, λ = 3 (the defaults here); CIFAR-100 β = 0.9,
λ = 7; CIFAR-10 asymmetric noise β = 0.9, λ = 1 (the official class's own default β = 0.3 is not used by any
config). ELR+ (two networks, mixup, weight averaging) is a different loss, not this op.

Knowing departures: duplicate indices in one batch are rejected (the official indexed assignment keeps one of the
duplicate rows' updates, which one being unspecified); the buffer may be float32 (the official dtype) or float64.
Across ranks, each rank updates the rows of its own samples in its own buffer (the official code is single-GPU);
regops.nn.ELRLoss(process_group=...) all-gathers every rank's updates so that all buffers stay identical.

One fused row pass computes the loss, its gradient and the new buffer rows (kernels: csrc/cpu/class_rows.cpp,
csrc/cuda/class_rows_kernels.cu, triton/class_rows.py; math: csrc/include/regops/class_rows_math.h).
"""
from __future__ import annotations

import torch

from .. import _checks, _registry
from .._constants import acc_dtype
from .._loader import schema_registered, triton_available
from ..contracts import class_rows as contract
from ..reference import class_rows as reference
from . import _row_grad

OP = "elr_loss"
DTYPES = (torch.float32, torch.float64, torch.bfloat16)

if schema_registered("elr_rows"):
    torch.library.register_fake("regops::elr_rows")(contract.fake_elr_rows)
    torch.library.register_autograd("regops::elr_rows", _row_grad.backward_rows,
                                    setup_context=_row_grad.setup_context)

if triton_available():
    from ..triton import class_rows as _triton_class_rows  # noqa: F401  (registers the triton ops)

    torch.library.register_autograd("regops::elr_rows_triton", _row_grad.backward_rows,
                                    setup_context=_row_grad.setup_context)


def _check_index_values(arg, t, high, what, unique):
    if torch.compiler.is_compiling() or not t.numel() or not _checks.check_finite_enabled(t.device):
        return
    lo, hi = torch.aminmax(t)
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= high:
        _checks.fail(OP, arg, f"{what} in [0, {high})", f"{lo if lo < 0 else hi}")
    if unique:
        values, counts = torch.unique(t, return_counts=True)
        if bool((counts > 1).any()):
            _checks.fail(OP, arg, "distinct sample indices within one batch",
                         f"index {int(values[counts > 1][0])} {int(counts.max())} times")


def elr_step(logits, targets, index, buffer, beta: float, lam: float, impl=None):
    """The per-row losses (B,) and the new buffer rows (B, C) in the accumulation dtype, the buffer untouched."""
    _checks.check_tensor(OP, "logits", logits, ndims=(2,), dtypes=DTYPES)
    B, C = logits.shape
    if B == 0:
        _checks.fail(OP, "logits", "at least one row (the loss is a batch mean)", f"shape {tuple(logits.shape)}")
    if C < 1:
        _checks.fail(OP, "logits", "at least one class (B, C >= 1)", f"shape {tuple(logits.shape)}")
    _checks.check_tensor(OP, "buffer", buffer, ndims=(2,), dtypes=(torch.float32, torch.float64))
    if buffer.shape[1] != C:
        _checks.fail(OP, "buffer", f"shape (N, {C}) (one row of C = {C} classes per training sample)",
                     f"shape {tuple(buffer.shape)}")
    for arg, t in (("targets", targets), ("index", index)):
        _checks.check_tensor(OP, arg, t, ndims=(1,), dtypes=(torch.int64, torch.int32))
        if t.shape[0] != B:
            _checks.fail(OP, arg, f"shape ({B},) (one entry per row of logits)", f"shape {tuple(t.shape)}")
    for arg, t in (("targets", targets), ("index", index), ("buffer", buffer)):
        if t.device != logits.device:
            _checks.fail(OP, arg, f"device {logits.device} (as logits)", f"device {t.device}", RuntimeError)
    beta = _checks.number(OP, "beta", beta, low=0.0, what="a momentum in [0, 1)")
    if beta >= 1.0:
        _checks.fail(OP, "beta", "a momentum in [0, 1)", repr(beta))
    lam = _checks.number(OP, "lam", lam)
    _check_index_values("targets", targets, C, "class indices", unique=False)
    _check_index_values("index", index, buffer.shape[0], "sample indices (rows of buffer)", unique=True)
    chosen = _registry.pick(OP, impl, logits, "logits")
    acc = acc_dtype(logits.dtype)
    y, idx = targets.long(), index.long()
    rows_t = buffer.detach().index_select(0, idx).to(acc)
    if chosen == "reference":
        rows, new_rows = reference.elr_rows(logits, y, rows_t, beta, lam)
    else:
        want_grad = logits.requires_grad and torch.is_grad_enabled()
        rows, _, new_rows = _registry.kernel("class_rows", chosen, "elr")(logits, y, rows_t, beta, lam, want_grad)
    _row_grad.check_rows_finite(OP, rows, [("logits", logits), ("buffer", buffer)])
    return rows, new_rows.detach()


def elr_loss(logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor, buffer: torch.Tensor, *,
             beta: float = 0.7, lam: float = 3.0, impl=None) -> torch.Tensor:
    """The ELR loss of a batch (the module docstring has the formula): logits (B, C) float32/float64/bfloat16,
    targets (B,) class indices, index (B,) the samples' rows in buffer, buffer (N_train, C) float32 or float64,
    updated in place (rows `index`) before the loss uses them. Returns a 0-dim tensor in the accumulation dtype.
    regops.nn.ELRLoss holds the buffer."""
    rows, new_rows = elr_step(logits, targets, index, buffer, beta, lam, impl)
    with torch.no_grad():
        buffer.index_copy_(0, index.long(), new_rows.to(buffer.dtype))
    return rows.mean()
