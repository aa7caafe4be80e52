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


def _check_penalties(op: str, arg: str, values: torch.Tensor) -> None:
    # finite entries whose Gram overflows (1e20 in float32): the kernels' error, not inf or a NaN read as 0
    bad = ~torch.isfinite(values.detach())
    if bool(bad.any()):
        _checks.fail(op, arg, "finite values", f"a non-finite penalty for matrix {int(bad.nonzero()[0])} "
                     "(the input holds NaN/Inf or overflows)")


def penalty_rows(x: torch.Tensor, squared: bool, impl, op: str = OP, arg: str = "mats") -> torch.Tensor:
    """Per-matrix penalty of X (L, p, q) on its rows, through the chosen impl. Returns (L,). Errors name `op`'s
    `arg` (the public op that called it)."""
    chosen = _registry.pick(op, impl, x, arg)
    if chosen == "reference":
        _checks.check_finite_eager(op, arg, x)
        values = reference.orthonormal_penalty_rows(x, squared)
        if not torch.compiler.is_compiling() and _checks.check_finite_enabled(x.device):
            _check_penalties(op, arg, values)
        return values
    fwd = _registry.kernel("orthonormal", chosen, "fwd")
    if torch.compiler.is_compiling():
        return fwd(x, squared)[0]
    try:
        return fwd(x, squared)[0]
    except ValueError as exc:
        # the kernels' finiteness check names orthonormal_penalty's mats and no entry: say what the reference says
        if "expected finite values" not in str(exc):
            raise
        _checks.check_finite_eager(op, arg, x)
        with torch.no_grad():
            _check_penalties(op, arg, reference.orthonormal_penalty_rows(x.detach(), squared))
        raise


def _check_matrix(op: str, arg: str, t) -> None:
    _checks.check_tensor(op, arg, t, dtypes=DTYPES)
    if any(s == 0 for s in t.shape):
        _checks.fail(op, arg, "matrices with no zero-size dimension", f"shape {tuple(t.shape)}")


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
    return penalty(OP, "mats", mats, side, squared, reduction, impl)


def penalty(op: str, arg: str, mats, side: str, squared: bool, reduction: str, impl) -> torch.Tensor:
    """orthonormal_penalty of `mats`, its errors naming `op`'s `arg` (sorsa_ortho_loss's As and Bs)."""
    if isinstance(mats, torch.Tensor):
        _checks.check_tensor(op, arg, mats, ndims=(2, 3), dtypes=DTYPES)
        _check_matrix(op, arg, mats)
        x = mats.unsqueeze(0) if mats.dim() == 2 else mats
        values = penalty_rows(x if side == "rows" else x.transpose(1, 2), squared, impl, op, arg)
        return _reduce(values, reduction)
    if not isinstance(mats, (list, tuple)):
        _checks.fail(op, arg, "a tensor or a list of 2-D tensors", type(mats).__name__, TypeError)
    if len(mats) == 0:
        _checks.fail(op, arg, "at least one matrix", "an empty list")
    for i, m in enumerate(mats):
        _checks.check_tensor(op, f"{arg}[{i}]", m, ndims=(2,), dtypes=DTYPES)
        _check_matrix(op, f"{arg}[{i}]", m)
    _checks.check_same(op, arg, list(mats))
    groups = defaultdict(list)
    for i, m in enumerate(mats):
        groups[tuple(m.shape)].append(i)
    values = [None] * len(mats)
    for idx in groups.values():
        x = torch.stack([mats[i] for i in idx])
        vals = penalty_rows(x if side == "rows" else x.transpose(1, 2), squared, impl, op, arg)
        for k, i in enumerate(idx):
            values[i] = vals[k]
    return _reduce(torch.stack(values), reduction)
