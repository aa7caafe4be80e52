"""The Sinkhorn solvers' arguments and result: checks and canonical (batched) forms, warnings, SinkhornOutput."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

from .. import _checks
from .._constants import COST_IDS


COSTS = tuple(COST_IDS)


class NonConvergenceWarning(RuntimeWarning):
    """A regops OT solver stopped at max_iter with its marginal error at or above tol."""


class CostPrecisionWarning(RuntimeWarning):
    """eps dwarfs the costs so far that reg_ot_cost / ent_reg_cost keep fewer than ~4 correct digits, even with the
    mass ΣP recomputed in float64 (see _costs)."""


class SinkhornNotConverged(RuntimeError):
    """Raised with on_nonconvergence="raise" when the marginal error is still at or above tol."""


@dataclass
class SinkhornOutput:
    """The result of one (or a batch of) Sinkhorn solves. Batched inputs give a leading batch dim everywhere.

    f, g: the potentials (detached). reg_ot_cost, ent_reg_cost: differentiable costs (OTT's definitions).
    n_iter: iterations run; converged: marginal_error < tol; eps: the entropic regularization used."""
    f: torch.Tensor
    g: torch.Tensor
    reg_ot_cost: torch.Tensor
    ent_reg_cost: torch.Tensor
    n_iter: Union[int, torch.Tensor]
    converged: Union[bool, torch.Tensor]
    marginal_error: torch.Tensor
    eps: torch.Tensor
    # What transport_plan / apply_plan need (detached, batched form).
    _x: Optional[torch.Tensor] = None
    _y: Optional[torch.Tensor] = None
    _C: Optional[torch.Tensor] = None
    _a: Optional[torch.Tensor] = None
    _shift: Optional[torch.Tensor] = None  # the solve centered the clouds on this point
    _cost: int = 0
    _impl: str = "reference"
    _batched: bool = False


def _as_batched(op, arg, t, *, dims):
    _checks.check_tensor(op, arg, t, ndims=dims)
    if not t.is_floating_point():
        _checks.fail(op, arg, "a floating-point tensor", f"dtype {_checks.dtype_name(t.dtype)}", TypeError)
    return t if t.dim() == max(dims) else t.unsqueeze(0)


def _work_dtype(t):
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def _check_finite(op, arg, t):
    if not torch.compiler.is_compiling():
        _checks.check_finite_eager(op, arg, t)


def _weights(op, arg, w, B, n, like):
    """Marginal weights as (B, n) in like's dtype: uniform 1/n by default."""
    if w is None:
        return torch.full((B, n), 1.0 / n, dtype=like.dtype, device=like.device)
    _checks.check_tensor(op, arg, w, ndims=(1, 2))
    if w.is_complex():  # .to(like.dtype) would drop the imaginary part
        _checks.fail(op, arg, "real weights", f"dtype {_checks.dtype_name(w.dtype)}", TypeError)
    if w.device != like.device:
        _checks.fail(op, arg, f"device {like.device} (as the points)", f"device {w.device}", RuntimeError)
    if w.shape[-1] != n or (w.dim() == 2 and w.shape[0] != B):
        _checks.fail(op, arg, f"shape ({n},) or ({B}, {n})", f"shape {tuple(w.shape)}")
    w = w.to(like.dtype).expand(B, n)
    if not torch.compiler.is_compiling():
        _check_finite(op, arg, w)
        if bool((w < 0).any()):
            _checks.fail(op, arg, "non-negative weights", f"min {w.min().item():.6g}")
        sums = w.sum(1)
        if bool((sums <= 0).any()):
            _checks.fail(op, arg, "weights with a positive sum", f"sums {sums.tolist()}")
    return w


def _tau(op, arg, tau, B, n, like):
    if isinstance(tau, torch.Tensor):
        if tau.is_complex():
            _checks.fail(op, arg, "real values in (0, 1]", f"dtype {_checks.dtype_name(tau.dtype)}", TypeError)
        if tau.dim() > 2 or (tau.dim() >= 1 and tau.shape[-1] != n) or (tau.dim() == 2 and tau.shape[0] != B):
            _checks.fail(op, arg, f"a scalar, or shape ({n},) or ({B}, {n})", f"shape {tuple(tau.shape)}")
        t = tau.detach().to(device=like.device, dtype=like.dtype).expand(B, n)
        if not torch.compiler.is_compiling() and bool(((t <= 0) | (t > 1) | t.isnan()).any()):
            _checks.fail(op, arg, "values in (0, 1]", f"min {t.min().item():.6g}, max {t.max().item():.6g}")
        return t, bool((t < 1).any()) if not torch.compiler.is_compiling() else True
    # a number: a string was float()'s to convert, a bool passed as 1
    tau = _checks.number(op, arg, tau, low=0, low_open=True, high=1,
                         what="a value in (0, 1] (tau = rho/(rho + eps); 1 is balanced)")
    return torch.full((B, n), tau, dtype=like.dtype, device=like.device), tau < 1


def _check_options(op, max_iter, tol, check_every, on_nonconvergence, relative_epsilon):
    for arg, v in (("max_iter", max_iter), ("check_every", check_every)):
        if isinstance(v, bool):  # an int to isinstance: max_iter=True ran one iteration
            _checks.fail(op, arg, "an int >= 1", f"bool {v!r}", TypeError)
        if not isinstance(v, int) or v < 1:
            _checks.fail(op, arg, "an int >= 1", repr(v))
    if isinstance(tol, bool) or not isinstance(tol, (int, float, torch.Tensor, torch.SymInt, torch.SymFloat)):
        _checks.fail(op, "tol", "a number >= 0", f"{type(tol).__name__} {tol!r}", TypeError)
    if not (tol >= 0):
        _checks.fail(op, "tol", "a number >= 0", repr(tol))
    _checks.check_choice(op, "on_nonconvergence", on_nonconvergence, ("warn", "raise", "ignore"))
    _checks.check_choice(op, "relative_epsilon", relative_epsilon, (None, "mean", "std"))


def _prepare_clouds(op, x, y):
    for arg, t in (("x", x), ("y", y)):
        _as_batched(op, arg, t, dims=(2, 3))
        _checks.check_has_data(op, arg, t)
        _check_finite(op, arg, t)  # before batching, so the index names the caller's element
    x = _as_batched(op, "x", x, dims=(2, 3))
    y = _as_batched(op, "y", y, dims=(2, 3))
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        _checks.fail(op, "y", f"points of dimension {x.shape[2]} in a batch of {x.shape[0]} (as x)",
                     f"shape {tuple(y.shape)}")
    if x.device != y.device:
        _checks.fail(op, "y", f"device {x.device} (as x)", f"device {y.device}", RuntimeError)
    if x.dtype != y.dtype:
        _checks.fail(op, "y", f"dtype {_checks.dtype_name(x.dtype)} (as x)", f"dtype {_checks.dtype_name(y.dtype)}",
                     TypeError)
    for arg, t in (("x", x), ("y", y)):
        if t.shape[1] == 0:
            _checks.fail(op, arg, "at least one point", f"shape {tuple(t.shape)}")
        if t.shape[2] == 0:
            _checks.fail(op, arg, "points of dimension >= 1", f"shape {tuple(t.shape)}")
    dt = _work_dtype(x)
    return x.to(dt), y.to(dt)


def _init_potentials(op, init, B, N, M, like):
    if init is None:
        return like.new_zeros(B, N), like.new_zeros(B, M)
    if isinstance(init, SinkhornOutput):
        f0, g0 = init.f, init.g
    else:
        if not (isinstance(init, (tuple, list)) and len(init) == 2):
            _checks.fail(op, "init", "None, a SinkhornOutput or a pair (f, g)", type(init).__name__, TypeError)
        f0, g0 = init
    f0 = torch.as_tensor(f0).detach().to(device=like.device, dtype=like.dtype)
    g0 = torch.as_tensor(g0).detach().to(device=like.device, dtype=like.dtype)
    if f0.dim() not in (1, 2) or g0.dim() not in (1, 2) or f0.shape[-1] != N or g0.shape[-1] != M \
            or (f0.dim() == 2 and f0.shape[0] not in (1, B)) or (g0.dim() == 2 and g0.shape[0] not in (1, B)):
        _checks.fail(op, "init", f"potentials of shapes ({N},) and ({M},) (or batched, ({B}, {N}) and ({B}, {M}))",
                     f"shapes {tuple(f0.shape)} and {tuple(g0.shape)}")
    # −inf marks a zero weight (a previous solution's f there); NaN and +inf are never potentials.
    for name, p in (("init f", f0), ("init g", g0)):
        if not torch.compiler.is_compiling() and bool((torch.isnan(p) | (p == math.inf)).any()):
            _checks.fail(op, "init", "potentials without NaN or +inf", f"{name} with {p[~(p < math.inf)][0].item()}")
    return f0.expand(B, N).clone(), g0.expand(B, M).clone()


def _finish(op, out, batched, tol, on_nonconvergence):
    """Unbatch, and apply the non-convergence rule. Non-finite potentials always raise."""
    if not torch.compiler.is_compiling():
        if not bool(torch.isfinite(out.reg_ot_cost).all()):
            raise FloatingPointError(f"regops.{op}: the solve produced a non-finite cost "
                                     f"({out.reg_ot_cost.tolist()}); this is a bug, please report it with the inputs")
        if tol > 0 and on_nonconvergence != "ignore" and not bool(out.converged.all()):
            msg = (f"regops.{op}: did not converge: marginal error {out.marginal_error.max().item():.3e} >= tol {tol:g} "
                   f"after {int(out.n_iter.max())} iterations (eps {out.eps.min().item():.4g}); raise max_iter or eps, "
                   "or pass eps_schedule")
            if on_nonconvergence == "raise":
                raise SinkhornNotConverged(msg)
            _checks.warn(msg, NonConvergenceWarning)
    if not batched:
        out.f, out.g = out.f[0], out.g[0]
        out.reg_ot_cost, out.ent_reg_cost = out.reg_ot_cost[0], out.ent_reg_cost[0]
        out.marginal_error, out.eps = out.marginal_error[0], out.eps[0]
        if not torch.compiler.is_compiling():
            out.n_iter, out.converged = int(out.n_iter[0]), bool(out.converged[0])
        else:
            out.n_iter, out.converged = out.n_iter[0], out.converged[0]
    return out
