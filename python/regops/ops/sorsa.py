"""SORSA's orthonormal regularizer: the loss (official calc_ortho) and the in-place gradient step."""
from __future__ import annotations

import math
from collections import defaultdict

import torch

from .. import _checks, _registry
from .._loader import has_compiled_ops
from ..reference import orthonormal as reference
from . import orthonormal

REG_OP = "sorsa_regularize_"

if has_compiled_ops():
    @torch.library.register_fake("regops::orthonormal_grad_accumulate_")
    def _fake_grad_accumulate(mats, grads, scale, squared):
        return mats[0].new_empty((len(mats),), dtype=torch.float64)


def _count(op: str, arg: str, mats) -> int:
    if isinstance(mats, torch.Tensor):
        _checks.check_tensor(op, arg, mats, ndims=(2, 3))
        return 1 if mats.dim() == 2 else mats.shape[0]
    if isinstance(mats, (list, tuple)):
        return len(mats)
    _checks.fail(op, arg, "a tensor or a list of 2-D tensors", type(mats).__name__, TypeError)


def sorsa_ortho_loss(As, Bs, *, impl=None) -> torch.Tensor:
    """(1/(2L)) Σ_l [‖A_l A_lᵀ − I‖_F + ‖B_lᵀ B_l − I‖_F], non-squared: the official calc_ortho.

    As: the (r, in) factors, Bs: the (out, r) factors, each a list of 2-D tensors or a stacked 3-D tensor.
    """
    op = "sorsa_ortho_loss"
    n_a, n_b = _count(op, "As", As), _count(op, "Bs", Bs)
    if n_a != n_b:
        _checks.fail(op, "Bs", f"{n_a} matrices (one per A)", f"{n_b}")
    if n_a == 0:
        _checks.fail(op, "As", "at least one matrix", "none")
    total = orthonormal.penalty(op, "As", As, "rows", False, "sum", impl) + \
        orthonormal.penalty(op, "Bs", Bs, "cols", False, "sum", impl)
    return total / (2 * n_a)


def _sorsa_factors(module):
    """(A, B) of a module that declares them (nn.SORSALinear), else None; ops/ does not import nn/."""
    factors = getattr(module, "sorsa_factors", None)
    return factors() if callable(factors) else None


def _factor_pairs(model_or_params):
    if isinstance(model_or_params, torch.nn.Module):
        return [f for f in map(_sorsa_factors, model_or_params.modules()) if f is not None]
    pairs = []
    for i, item in enumerate(model_or_params):
        if isinstance(item, torch.nn.Module) and _sorsa_factors(item) is not None:
            pairs.append(_sorsa_factors(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            pairs.append(tuple(item))
        else:
            _checks.fail(REG_OP, f"model_or_params[{i}]", "a SORSALinear or an (A, B) pair", type(item).__name__, TypeError)
    return pairs


@torch.no_grad()
def _fail_non_finite(i):
    # the words of the CPU kernel's check (orthonormal_grad_accumulate_), so every impl says the same
    _checks.fail(REG_OP, f"mats[{i}]", "finite values", "a non-finite penalty (the input holds NaN/Inf or overflows); "
                 "no gradient was changed")


def sorsa_regularize_(model_or_params, gamma: float, lr: float, *, impl=None) -> torch.Tensor:
    """Adds ∇((γ/lr)·calc_ortho) into the .grad of every SORSA A and B, as the official trainer does after
    gradient clipping, with no autograd graph. Returns calc_ortho's value (detached) for logging.

    model_or_params: a module (every SORSALinear inside), or a list of SORSALinear modules or (A, B) pairs.
    """
    for name, v in (("gamma", gamma), ("lr", lr)):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            _checks.fail(REG_OP, name, "a finite number", repr(v), TypeError if not isinstance(v, (int, float)) else ValueError)
    if lr <= 0:
        _checks.fail(REG_OP, "lr", "a positive learning rate", repr(lr))
    pairs = _factor_pairs(model_or_params)
    if not pairs:
        _checks.fail(REG_OP, "model_or_params", "at least one SORSA layer or (A, B) pair", "none")
    mats, grads = [], []
    for l, (a, b) in enumerate(pairs):
        for arg, t in ((f"A[{l}]", a), (f"B[{l}]", b)):
            _checks.check_tensor(REG_OP, arg, t, ndims=(2,), dtypes=(torch.float32, torch.float64, torch.bfloat16))
            if t.grad is None:
                t.grad = torch.zeros_like(t)
            if torch._debug_has_internal_overlap(t.grad) == 1:  # an expanded .grad: one element, many places
                _checks.fail(REG_OP, f"{arg}.grad", "a gradient whose elements do not share memory (not an expanded "
                             "tensor)", f"strides {tuple(t.grad.stride())}")
        mats += [a, b.t()]           # the canonical "rows" form: A Aᵀ and (Bᵀ)(Bᵀ)ᵀ = Bᵀ B
        grads += [a.grad, b.grad.t()]
    _checks.check_same(REG_OP, "params", mats)
    scale = float(gamma) / (float(lr) * 2 * len(pairs))
    chosen = _registry.pick(REG_OP, impl, mats[0], "params")
    if chosen == "cpu":
        values = torch.ops.regops.orthonormal_grad_accumulate_(mats, grads, scale, False)
        return values.sum().to(mats[0].dtype) / (2 * len(pairs))
    # Other impls: one batched call per group of equal shapes; every update is computed before any is applied.
    # Under no_grad: the value is returned detached and the .grad tensors stay leaves of no graph, as the compiled
    # kernel's path (run below autograd) leaves them.
    with torch.no_grad():
        groups = defaultdict(list)
        for i, m in enumerate(mats):
            groups[tuple(m.shape)].append(i)
        updates, total = [], 0.0
        for idx in groups.values():
            x = torch.stack([mats[i] for i in idx])
            g = torch.full((len(idx),), scale, dtype=x.dtype, device=x.device)
            if chosen == "reference":
                sumsq, grad = reference.orthonormal_penalty_grad_rows(x, False, g)
                values = sumsq.sqrt()
            else:
                fwd = _registry.kernel("orthonormal", chosen, "fwd")
                bwd = _registry.kernel("orthonormal", chosen, "bwd")
                try:
                    values, residual = fwd(x, False)
                except ValueError:  # the kernel's own finiteness check (NaN/Inf, or a finite input that overflows)
                    values = reference.orthonormal_penalty_rows(x, False)
                    bad = ~torch.isfinite(values)
                    _fail_non_finite(idx[int(bad.nonzero()[0])] if bool(bad.any()) else idx[0])
                grad = bwd(g, x, residual, False)
            bad = ~torch.isfinite(values)
            if _checks.check_finite_enabled(x.device) and bool(bad.any()):
                _fail_non_finite(idx[int(bad.nonzero()[0])])
            total = total + values.sum()
            updates.append((idx, grad))
        for idx, grad in updates:
            torch._foreach_add_([grads[i] for i in idx], list(grad.unbind(0)))
        return (total / (2 * len(pairs))).to(mats[0].dtype)

