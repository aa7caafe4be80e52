"""Locally Regularized Neural Differential Equations (Pal, Edelman, Rackauckas, ICML 2023): the local error
estimate of one adaptive Runge-Kutta step at a random time, as a penalty. Reference only: the cost is the
seven calls of the user's f, which regops cannot fuse.

Official code: avik-pal/LocalRegNeuralDE.jl (read at 043d700).
- ``src/perform_step.jl``, ``_perform_step(integrator, ::Tsit5ConstantCache, p, ...)``: one Tsit5 step of size
  dt from (t, uprev): k1 = integrator.fsalfirst = f(uprev, t), k2..k6 at t + c_i·dt, u = uprev + dt·Σ a7i k_i,
  k7 = f(u, t + dt), utilde = dt·Σ btilde_i k_i, EEst = sqrt(Σ (utilde / (abstol + max(|uprev|, |u|)·reltol))²
  / length(u)), and the value returned is EEst·dt.
- The integrator is built under ``@non_differentiable``, so uprev, dt, t, fsalfirst (k1), abstol and reltol are
  constants: gradients reach the parameters only through k2..k7 and u (DiffEqFlux's
  ``ext/DiffEqFluxOrdinaryDiffEqTsit5Ext.jl`` rrule says so explicitly with ignore_derivatives).
- ``src/layers/neural_ode.jl``: the time is ``rand()·(t_end − t0) + t0`` (``:unbiased``, the default);
  dt is the solver's automatic initial step for a fresh integrator at that time.
- ``src/config.jl`` (SolverConfig): abstol = reltol = 5e-2 by default (the experiments override them:
  MNIST 1.4e-8, CIFAR-10 1e-4). The training loss is task loss + w_reg·penalty with w_reg decayed
  exponentially from 100 to 10; that schedule is the caller's, not part of this op.

Tableaus: Tsit5 from OrdinaryDiffEq ``lib/OrdinaryDiffEqTsit5/src/tsit_tableaus.jl`` (Tsit5ConstantCacheActual;
diffrax ``_solver/tsit5.py`` holds the same values); Dopri5 from torchdiffeq ``_impl/dopri5.py`` (= diffrax) with
the classic Dormand-Prince embedded weights (OrdinaryDiffEq DP5), not torchdiffeq's Shampine weights.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .. import _checks, _registry
from .._constants import acc_dtype

# One explicit 7-stage FSAL tableau: c (7), the strictly lower rows a[1..6] (row 6 = b, so stage 7 is f(u)),
# b (the propagated 5th-order solution) and btilde = b̂ − b (embedded minus main; only |utilde| matters).
_TSIT5_C = (0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0)
_TSIT5_A = (
    (),
    (0.161,),
    (-0.008480655492356989, 0.335480655492357),
    (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
    (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
    (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383),
    (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774),
)
_TSIT5_BTILDE = (-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
                 0.5823571654525552, -0.45808210592918697, 0.015151515151515152)

_DOPRI5_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DOPRI5_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DOPRI5_BHAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DOPRI5_BTILDE = tuple(bh - b for bh, b in zip(_DOPRI5_BHAT, _DOPRI5_A[6] + (0.0,)))

TABLEAUS = {
    "tsit5": (_TSIT5_C, _TSIT5_A, _TSIT5_BTILDE),
    "dopri5": (_DOPRI5_C, _DOPRI5_A, _DOPRI5_BTILDE),
}


def _scalar(op: str, arg: str, v, *, nonzero: bool) -> torch.Tensor | float:
    """t or dt: a real number or a 0-dim real tensor, finite (and nonzero for dt). Tensors stay tensors (so
    detach="none" can differentiate through them); their values are checked eagerly, not under torch.compile."""
    what = "a finite nonzero step (a number or 0-dim tensor)" if nonzero else "a finite time (a number or 0-dim tensor)"
    if isinstance(v, torch.Tensor):
        if v.dim() != 0 or v.dtype == torch.bool or v.is_complex():
            _checks.fail(op, arg, what, f"a tensor of shape {tuple(v.shape)} and dtype {_checks.dtype_name(v.dtype)}",
                         TypeError)
        if not torch.compiler.is_compiling() and v.device.type != "meta":
            x = float(v.detach().item())
            if not math.isfinite(x) or (nonzero and x == 0.0):
                _checks.fail(op, arg, what, repr(x))
        return v
    x = _checks.number(op, arg, v, what=what)
    if nonzero and x == 0.0:
        _checks.fail(op, arg, what, repr(v))
    return x


def _call_f(op: str, f, t: torch.Tensor, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    out = f(t, y)
    if not isinstance(out, torch.Tensor):
        _checks.fail(op, "f", "f(t, y) to return a torch.Tensor", type(out).__name__, TypeError)
    if out.shape != like.shape:
        _checks.fail(op, "f", f"f(t, y) to return y's shape {tuple(like.shape)}", f"shape {tuple(out.shape)}")
    if out.dtype != like.dtype:
        _checks.fail(op, "f", f"f(t, y) to return y's dtype {_checks.dtype_name(like.dtype)}",
                     f"dtype {_checks.dtype_name(out.dtype)}", TypeError)
    if out.device != like.device:
        _checks.fail(op, "f", f"f(t, y) to return a tensor on y's device {like.device}", f"device {out.device}",
                     RuntimeError)
    return out


def _rk_step(op: str, f, t, y0: torch.Tensor, dt, solver: str, k1_no_grad: bool):
    """One step of the 7-stage FSAL pair: (u, utilde, k1..k7). t, dt: 0-dim tensors in the time dtype."""
    c, a, btilde = TABLEAUS[solver]

    def time(ci):
        return (t + ci * dt).to(y0.dtype) if ci else t.to(y0.dtype)

    if k1_no_grad:
        with torch.no_grad():
            k1 = _call_f(op, f, time(0.0), y0, y0)
    else:
        k1 = _call_f(op, f, time(0.0), y0, y0)
    ks = [k1]
    u = y0
    for i in range(1, 7):
        incr = sum(aij * kj for aij, kj in zip(a[i], ks) if aij != 0.0)
        yi = y0 + dt.to(y0.dtype) * incr
        if i == 6:
            u = yi  # a7 = b: the last stage is evaluated at the new solution (FSAL)
        ks.append(_call_f(op, f, time(c[i]), yi, y0))
    utilde = dt.to(y0.dtype) * sum(bt * k for bt, k in zip(btilde, ks))
    return u, utilde, ks


def local_error_penalty(f: Callable, t, y: torch.Tensor, dt, *, solver: str = "tsit5", atol: float = 5e-2,
                        rtol: float = 5e-2, detach: str = "official", impl=None) -> torch.Tensor:
    """The local error estimate of one adaptive step of size ``dt`` from ``(t, y)``, as LocalRegNeuralDE's
    ``:error_estimate`` regularizer (``src/perform_step.jl``, ``_perform_step`` for Tsit5):

        k1 = f(t, y), k_i = f(t + c_i·dt, y + dt·Σ_j a_ij k_j) (i = 2..6), u = y + dt·Σ b_i k_i, k7 = f(t + dt, u),
        utilde = dt·Σ_i btilde_i k_i,
        penalty = |dt| · sqrt( mean over all elements of (utilde / (atol + max(|y|, |u|)·rtol))² ).

    ``f(t, y)`` is torchdiffeq-style: ``t`` a 0-dim tensor of y's dtype on y's device, ``y`` a tensor of y's shape;
    it must return a tensor of y's shape, dtype and device. ``y`` is the whole state, batch included: the mean
    runs over every element, as the official ``length(u)`` does. ``t`` and ``dt`` are numbers or 0-dim tensors
    (``sample_regularization_time`` draws t as the official ``:unbiased`` mode does; dt is the caller's, where
    the official code takes the solver's automatic initial step at t). Returns a 0-dim tensor in y's dtype (the
    reduction runs in float32 for float16/bfloat16 states).

    ``solver``: "tsit5" (the official one, the only one it has) or "dopri5" (regops' addition: Dormand-Prince
    with the classic embedded weights b̂ = 5179/57600, 0, 7571/16695, 393/640, −92097/339200, 187/2100, 1/40 of
    OrdinaryDiffEq's DP5 and Hairer's DOPRI5, not torchdiffeq's Shampine weights).
    ``atol``, ``rtol``: the error tolerances of the scale (official default 5e-2 each); both finite and > 0, so
    the scale is positive and a zero state gives a finite value.
    ``detach``: "official" (the default) treats y, t, dt and k1 = f(t, y) as constants, as the official
    integrator built under ``@non_differentiable`` does: k1 runs under no_grad, y gets no gradient and the
    gradient reaches f's parameters through k2..k7 and u (u also in the scale); "none" differentiates through
    everything (y, tensor t and dt, k1).

    Departures from the official code:
    - the penalty is multiplied by |dt| (DiffEqFlux's version), not the signed dt, so a backward step (dt < 0)
      gives a nonnegative penalty; for dt > 0 it is the official value. dt must be finite and nonzero;
    - where the error estimate is exactly zero the gradient of the square root is taken as 0 (the official
      autodiff gives NaN there);
    - dt is the caller's, not the solver's automatic initial step; dopri5 is offered besides Tsit5.
    """
    op = "local_error_penalty"
    _checks.check_choice(op, "solver", solver, tuple(TABLEAUS))
    _checks.check_choice(op, "detach", detach, ("official", "none"))
    _checks.check_tensor(op, "y", y)
    _registry.resolve_impl(op, impl, y.device)  # the reference only: a named kernel impl raises
    if not callable(f):
        _checks.fail(op, "f", "a callable f(t, y)", type(f).__name__, TypeError)
    if not y.is_floating_point():
        _checks.fail(op, "y", "a floating-point tensor", _checks.dtype_name(y.dtype), TypeError)
    if y.numel() == 0:
        _checks.fail(op, "y", "a non-empty state", f"shape {tuple(y.shape)}")
    t = _scalar(op, "t", t, nonzero=False)
    dt = _scalar(op, "dt", dt, nonzero=True)
    atol = _checks.number(op, "atol", atol, low=0, low_open=True, what="a finite positive tolerance")
    rtol = _checks.number(op, "rtol", rtol, low=0, low_open=True, what="a finite positive tolerance")
    _checks.check_finite_eager(op, "y", y.detach())

    acc = acc_dtype(y.dtype)
    official = detach == "official"
    # the times in float64 where the state is float64, else float32 (then cast to y's dtype for f)
    tdtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    t = torch.as_tensor(t, dtype=tdtype, device=y.device) if not isinstance(t, torch.Tensor) \
        else t.to(device=y.device, dtype=tdtype)
    dt = torch.as_tensor(dt, dtype=tdtype, device=y.device) if not isinstance(dt, torch.Tensor) \
        else dt.to(device=y.device, dtype=tdtype)
    y0 = y
    if official:
        t, dt, y0 = t.detach(), dt.detach(), y.detach()

    u, utilde, _ = _rk_step(op, f, t, y0, dt, solver, k1_no_grad=official)
    scale = atol + torch.maximum(y0.to(acc).abs(), u.to(acc).abs()) * rtol
    ratio = utilde.to(acc) / scale
    # the RMS of ratio/unit times unit, unit a power of two near its largest entry: tiny tolerances make the ratios
    # huge, and their squares would overflow (1e20² in float32); the scaling is exact, so where the unscaled squares
    # stay finite the result is bit for bit theirs. unit is a constant of the gradient (the RMS is homogeneous).
    peak = ratio.detach().abs().amax()
    unit = torch.where((peak > 0) & (peak < float("inf")), torch.exp2(torch.floor(torch.log2(peak))),
                       torch.ones_like(peak))
    ms = (ratio / unit).square().mean()
    pos = ms > 0
    # sqrt with a zero subgradient at 0 (the double where keeps the unselected branch's gradient finite)
    root = torch.where(pos, torch.where(pos, ms, torch.ones_like(ms)).sqrt(), torch.zeros_like(ms)) * unit
    return (dt.abs().to(acc) * root).to(y.dtype)


def sample_regularization_time(t0, t1, generator: Optional[torch.Generator] = None, *, impl=None) -> float:
    """The time of the regularization step, t ~ U[t0, t1) (``src/layers/neural_ode.jl``, the default
    ``:unbiased`` mode: ``rand()·(t_end − t0) + t0``). Returns a Python float (the official value is a Float64
    scalar), drawn in float64 from ``generator`` (torch's default generator when None) on the generator's
    device. t0 < t1, both finite. The official ``:biased`` mode (a time the solver saved) needs the solve's
    times and is the caller's."""
    op = "sample_regularization_time"
    _registry.resolve_impl(op, impl, torch.device("cpu"))
    a = _checks.number(op, "t0", t0, what="a finite start time")
    b = _checks.number(op, "t1", t1, what="a finite end time")
    if not b > a:
        _checks.fail(op, "t1", f"an end time greater than t0 = {a!r}", repr(t1))
    if not math.isfinite(b - a):
        _checks.fail(op, "t1", f"an interval t1 - t0 that is finite in float64 (t0 = {a!r})", repr(t1))
    if generator is not None and not isinstance(generator, torch.Generator):
        _checks.fail(op, "generator", "a torch.Generator or None", type(generator).__name__, TypeError)
    device = generator.device if generator is not None else torch.device("cpu")
    r = float(torch.rand((), generator=generator, dtype=torch.float64, device=device).item())
    t = r * (b - a) + a
    return min(t, math.nextafter(b, a))  # rounding of r·(b − a) + a must not reach t1
