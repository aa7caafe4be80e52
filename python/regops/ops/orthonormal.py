"""Orthonormality penalty ‖M Mᵀ − I‖_F / ‖Mᵀ M − I‖_F over a batch or a list of matrices (SORSA).

Every impl works on the canonical "rows" form X = M (side="rows") or X = Mᵀ as a view (side="cols"),
so one kernel serves both sides; the transposed view costs nothing and autograd maps its gradient back.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from .. import _checks, _registry
from .._constants import acc_dtype
from .._loader import has_compiled_ops, triton_available
from ..contracts import orthonormal as contract
from ..reference import orthonormal as reference

OP = "orthonormal_penalty"
DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _setup_context(ctx, inputs, output):
    mats, squared = inputs
    _, residual = output
    ctx.save_for_backward(mats, residual)
    ctx.squared = squared
    ctx.mark_non_differentiable(residual)  # a saved intermediate, not a loss: no gradient flows from it


def _make_backward(bwd_op):
    def backward(ctx, grad_values, _grad_residual):
        mats, residual = ctx.saved_tensors
        if grad_values is None:
            return None, None
        return bwd_op(grad_values.contiguous(), mats, residual, ctx.squared), None
    return backward


if has_compiled_ops():
    torch.library.register_fake("regops::orthonormal_penalty_fwd")(contract.fake_fwd)
    torch.library.register_fake("regops::orthonormal_penalty_bwd")(contract.fake_bwd)
    torch.library.register_autograd(
        "regops::orthonormal_penalty_fwd",
        _make_backward(lambda *a: torch.ops.regops.orthonormal_penalty_bwd(*a)),
        setup_context=_setup_context,
    )

if triton_available():
    from ..triton import orthonormal as _triton_orthonormal  # noqa: F401  (registers the triton ops)

    torch.library.register_autograd(
        "regops::orthonormal_penalty_fwd_triton",
        _make_backward(lambda *a: torch.ops.regops.orthonormal_penalty_bwd_triton(*a)),
        setup_context=_setup_context,
    )


def penalty_rows(x: torch.Tensor, squared: bool, impl) -> torch.Tensor:
    """Per-matrix penalty of X (L, p, q) on its rows, through the chosen impl. Returns (L,)."""
    chosen = _registry.pick(OP, impl, x, "mats")
    if chosen == "reference":
        _checks.check_finite_eager(OP, "mats", x)
        values = reference.orthonormal_penalty_rows(x, squared)
        if not torch.compiler.is_compiling() and _checks.check_finite_enabled(x.device):
            # finite entries whose Gram overflows (1e20 in float32): the kernels' error, not inf or a NaN read as 0
            bad = ~torch.isfinite(values.detach())
            if bool(bad.any()):
                _checks.fail(OP, "mats", "finite values", f"a non-finite penalty for matrix {int(bad.nonzero()[0])} "
                             "(the input holds NaN/Inf or overflows)")
        return values
    return _registry.kernel("orthonormal", chosen, "fwd")(x, squared)[0]


def _check_matrix(arg: str, t) -> None:
    _checks.check_tensor(OP, arg, t, dtypes=DTYPES)
    if any(s == 0 for s in t.shape):
        _checks.fail(OP, arg, "matrices with no zero-size dimension", f"shape {tuple(t.shape)}")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    return values.sum() if reduction == "sum" else values.mean()


def orthonormal_penalty(mats, *, side: str, squared: bool = False, reduction: str = "mean", impl=None) -> torch.Tensor:
    """‖M Mᵀ − I‖_F (side="rows") or ‖Mᵀ M − I‖_F (side="cols") for every matrix M, fused.

    mats: a (L, r, n) tensor, one 2-D tensor (L = 1), or a list of 2-D tensors of any shapes (equal shapes
    are grouped into one batched call). squared=True gives the squared norm. reduction="none" returns the
    per-matrix values in input order. float32, float64 and bfloat16 (accumulated in float32).
    """
    _checks.check_choice(OP, "side", side, ("rows", "cols"))
    _checks.check_choice(OP, "reduction", reduction, ("mean", "sum", "none"))
    if isinstance(mats, torch.Tensor):
        _checks.check_tensor(OP, "mats", mats, ndims=(2, 3), dtypes=DTYPES)
        _check_matrix("mats", mats)
        x = mats.unsqueeze(0) if mats.dim() == 2 else mats
        values = penalty_rows(x if side == "rows" else x.transpose(1, 2), squared, impl)
        return _reduce(values, reduction)
    if not isinstance(mats, (list, tuple)):
        _checks.fail(OP, "mats", "a tensor or a list of 2-D tensors", type(mats).__name__, TypeError)
    if len(mats) == 0:
        _checks.fail(OP, "mats", "at least one matrix", "an empty list")
    for i, m in enumerate(mats):
        _checks.check_tensor(OP, f"mats[{i}]", m, ndims=(2,), dtypes=DTYPES)
        _check_matrix(f"mats[{i}]", m)
    _checks.check_same(OP, "mats", list(mats))
    groups = defaultdict(list)
    for i, m in enumerate(mats):
        groups[tuple(m.shape)].append(i)
    values = [None] * len(mats)
    for idx in groups.values():
        x = torch.stack([mats[i] for i in idx])
        vals = penalty_rows(x if side == "rows" else x.transpose(1, 2), squared, impl)
        for k, i in enumerate(idx):
            values[i] = vals[k]
    return _reduce(torch.stack(values), reduction)
