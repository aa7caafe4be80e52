"""Log-domain Sinkhorn with OTT-JAX's definitions, streamed so that the N×M matrix never exists.

Conventions (docs/notes/ott_sinkhorn_conventions.md has the sources):
- P_ij = exp((f_i + g_j − C_ij)/eps): potentials with respect to the counting measure.
- Start from f = g = 0 (or ``init``); each iteration updates g, then f:
    g_j ← tau_b·(eps·log b_j − eps·LSE_i((f_i − C_ij)/eps)),  f_i ← tau_a·(eps·log a_i − eps·LSE_j((g_j − C_ij)/eps)).
- Convergence: every ``check_every`` iterations, after the f update, the L1 marginal error
  ‖Pᵀ1 − b‖₁ (balanced) or ‖P1 − a·e^{−f/ρa}‖₁ + ‖Pᵀ1 − b·e^{−g/ρb}‖₁ (unbalanced, ρ = eps·τ/(1−τ)), strictly
  below ``tol``. The column marginal comes for free from the next g update (Pᵀ1_j = b_j·e^{(g_j − g'_j/τ_j)/eps}),
  so a check costs no extra pass and no host sync happens between checks.
- reg_ot_cost = div_a + div_b + eps·(Σa·Σb − ΣP) (OTT's dual form; = ⟨P,C⟩ + eps·KL(P‖a⊗b) at convergence),
  ent_reg_cost = reg_ot_cost − eps·(H(a) + H(b)). Where eps dwarfs the costs, that difference cancels in float32;
  the costs are then evaluated again in float64 (see _costs), and a CostPrecisionWarning says when even that fails.
- Gradients (Danskin, OTT's ``use_danskin=True``): the iterations run without autograd; only the final
  potentials (held fixed) and the cost are differentiated. ∂reg_ot_cost/∂C = P.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Union

import torch

from .. import _checks
from ..reference import sinkhorn as reference
from . import _backend
from ._backend import Kernels

COSTS = tuple(reference.COST_IDS)
DEFAULT_EPSILON_SCALE = 0.05
_STAT_CHUNK = 1 << 22  # cost entries per chunk when statistics need a pass over C


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


# ---- argument handling ----

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
        if tau.dim() > 2 or (tau.dim() >= 1 and tau.shape[-1] != n) or (tau.dim() == 2 and tau.shape[0] != B):
            _checks.fail(op, arg, f"a scalar, or shape ({n},) or ({B}, {n})", f"shape {tuple(tau.shape)}")
        t = tau.detach().to(device=like.device, dtype=like.dtype).expand(B, n)
        if not torch.compiler.is_compiling() and bool(((t <= 0) | (t > 1) | t.isnan()).any()):
            _checks.fail(op, arg, "values in (0, 1]", f"min {t.min().item():.6g}, max {t.max().item():.6g}")
        return t, bool((t < 1).any()) if not torch.compiler.is_compiling() else True
    tau = float(tau)
    if not 0 < tau <= 1:
        _checks.fail(op, arg, "a value in (0, 1] (tau = rho/(rho + eps); 1 is balanced)", repr(tau))
    return torch.full((B, n), tau, dtype=like.dtype, device=like.device), tau < 1


def _check_options(op, max_iter, tol, check_every, on_nonconvergence, relative_epsilon):
    if not isinstance(max_iter, int) or max_iter < 1:
        _checks.fail(op, "max_iter", "an int >= 1", repr(max_iter))
    if not isinstance(check_every, int) or check_every < 1:
        _checks.fail(op, "check_every", "an int >= 1", repr(check_every))
    if not (tol >= 0):
        _checks.fail(op, "tol", "a number >= 0", repr(tol))
    _checks.check_choice(op, "on_nonconvergence", on_nonconvergence, ("warn", "raise", "ignore"))
    _checks.check_choice(op, "relative_epsilon", relative_epsilon, (None, "mean", "std"))


# ---- epsilon ----

def sqeuclidean_moments(x: torch.Tensor, y: torch.Tensor):
    """mean and mean-square of C_ij = ‖x_i − y_j‖² over all pairs, per problem, in float64, without C."""
    x, y = x.double(), y.double()
    sx, sy = x.pow(2).sum(-1), y.pow(2).sum(-1)
    mx, my = x.mean(1), y.mean(1)
    mean = sx.mean(1) + sy.mean(1) - 2 * (mx * my).sum(-1)
    # E[C²] = E‖x‖⁴ + E‖y‖⁴ + 2E‖x‖²E‖y‖² + 4E⟨x,y⟩² − 4E[‖x‖²x]·ȳ − 4E[‖y‖²y]·x̄
    Sx = torch.einsum("bni,bnj->bij", x, x) / x.shape[1]
    Sy = torch.einsum("bmi,bmj->bij", y, y) / y.shape[1]
    cross = (Sx * Sy).sum((1, 2))
    tx = (sx[:, :, None] * x).mean(1)
    ty = (sy[:, :, None] * y).mean(1)
    msq = (sx.pow(2).mean(1) + sy.pow(2).mean(1) + 2 * sx.mean(1) * sy.mean(1) + 4 * cross
           - 4 * (tx * my).sum(-1) - 4 * (ty * mx).sum(-1))
    return mean, msq


def cost_moments(x, y, cost: int):
    """(mean C, mean C²) per problem, in float64; streamed over row chunks for the costs with no closed form.

    The chunks are formed in the clouds' dtype (float32: the solve's precision, and OTT's) and summed in float64,
    so both moments come from the same entries and std² = E[C²] − E[C]² keeps its digits; forming the entries in
    float64 cost 5× the time and 2× the memory for a heuristic eps."""
    if cost == reference.SQEUCLIDEAN:
        return sqeuclidean_moments(x, y)
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    rows = max(1, _STAT_CHUNK // max(M, 1))
    s1 = x.new_zeros(B, dtype=torch.float64)
    s2 = x.new_zeros(B, dtype=torch.float64)
    for i in range(0, N, rows):
        if cost == reference.EUCLIDEAN:  # C² first (GEMM form, one temporary), then C in place
            xi = x[:, i:i + rows]
            c = torch.bmm(xi, y.transpose(1, 2)).mul_(-2)
            c.add_(xi.square().sum(-1)[:, :, None]).add_(y.square().sum(-1)[:, None, :]).clamp_min_(0)
            s2 += c.sum((1, 2), dtype=torch.float64)
            s1 += c.sqrt_().sum((1, 2), dtype=torch.float64)
        else:
            c = reference.cost_matrix(x[:, i:i + rows], y, cost)
            s1 += c.sum((1, 2), dtype=torch.float64)
            s2 += c.square_().sum((1, 2), dtype=torch.float64)
    return s1 / (N * M), s2 / (N * M)


def _statistic(mean, msq, which):
    if which == "mean":
        return mean
    return (msq - mean * mean).clamp_min(0).sqrt()  # population std, as OTT's


def resolve_eps(op, eps, relative_epsilon, moments, B, like):
    """(B,) eps in like's dtype: eps absolute; None → 0.05·std(C); with relative_epsilon, (eps or 0.05)·stat(C)."""
    if isinstance(eps, torch.Tensor) and eps.numel() != 1 and relative_epsilon is None:
        if eps.dim() != 1 or eps.numel() != B:
            _checks.fail(op, "eps", f"a number, or a tensor of 1 or {B} values (one per problem)",
                         f"shape {tuple(eps.shape)}")
        if eps.is_complex() or eps.dtype == torch.bool:
            _checks.fail(op, "eps", "a real tensor", _checks.dtype_name(eps.dtype), TypeError)
        e = eps.detach().to(device=like.device, dtype=like.dtype)
        if not torch.compiler.is_compiling() and bool(((e <= 0) | ~torch.isfinite(e)).any()):
            _checks.fail(op, "eps", "positive finite values", f"eps {e.tolist()}")
        return e
    elif eps is not None and relative_epsilon is None:
        if isinstance(eps, torch.Tensor) and torch.compiler.is_compiling():
            return eps.detach().to(device=like.device, dtype=like.dtype).reshape(-1).expand(B)
        value = _checks.number(op, "eps", eps, low=0, low_open=True, what="a positive finite number")
        return torch.full((B,), value, dtype=like.dtype, device=like.device)
    else:
        scale = DEFAULT_EPSILON_SCALE if eps is None else _checks.number(
            op, "eps", eps, low=0, low_open=True, what="a positive finite scale of the cost statistic")
        mean, msq = moments()
        e = (scale * _statistic(mean, msq, relative_epsilon or "std")).to(like.dtype)
    if not torch.compiler.is_compiling() and bool(((e <= 0) | ~torch.isfinite(e)).any()):
        _checks.fail(op, "eps", f"a positive eps ({relative_epsilon or 'std'}(C) is 0 when all costs are equal; "
                     "pass eps= then)", f"eps {e.tolist()}")
    return e


def _schedule(op, eps_schedule, target, diameter_cost):
    """A function it -> (B,) eps for iteration it, and the number of annealing iterations (after which eps = target).

    None: constant. A float s in (0, 1): GeomLoss-style ε-scaling, eps_t = max(c_max·s^t, target), from c_max the
    largest cost (the cloud's diameter). A pair (init, decay): OTT's Epsilon, eps_t = max(init·decay^t, 1)·target."""
    if eps_schedule is None:
        return (lambda it: target), 0
    if isinstance(eps_schedule, (tuple, list)) and len(eps_schedule) == 2:
        init, decay = float(eps_schedule[0]), float(eps_schedule[1])
        if not (init > 0 and 0 < decay <= 1):
            _checks.fail(op, "eps_schedule", "(init > 0, decay in (0, 1])", repr(eps_schedule))
        n = 0 if init <= 1 or decay == 1 else math.ceil(math.log(1 / init) / math.log(decay))
        return (lambda it: target * max(init * decay ** it, 1.0)), n
    s = float(eps_schedule)
    if not 0 < s < 1:
        _checks.fail(op, "eps_schedule", "a scaling factor in (0, 1), or a pair (init, decay)", repr(eps_schedule))
    start = diameter_cost()
    ratio = (start / target).max().item()
    n = 0 if ratio <= 1 else math.ceil(math.log(ratio) / -math.log(s))
    return (lambda it: torch.maximum(start * s ** it, target) if it < n else target), n


# ---- the solve ----

class _PointCloud:
    def __init__(self, x, y, cost, kernels):
        self.x, self.y, self.cost, self.k = x, y, cost, kernels

    def update_f(self, g, log_a, tau_a, eps):
        return self.k.update(self.x, self.y, g, log_a, tau_a, eps, self.cost)

    def update_g(self, f, log_b, tau_b, eps):
        return self.k.update(self.y, self.x, f, log_b, tau_b, eps, self.cost)


class _Dense:
    def __init__(self, C, kernels):
        self.C, self.k = C, kernels

    def update_f(self, g, log_a, tau_a, eps):
        return self.k.update_dense(self.C, g, log_a, tau_a, eps, False)

    def update_g(self, f, log_b, tau_b, eps):
        return self.k.update_dense(self.C, f, log_b, tau_b, eps, True)


def _marginal_error(f, g_old, g_new, a, b, log_a, tau_a, tau_b, eps, unbalanced):
    """L1 marginal error of the state (f, g_old), from the g update g_new it implies (no extra pass)."""
    e = eps[:, None]
    col = torch.where(b > 0, b * torch.exp((g_old - g_new / tau_b) / e), torch.zeros_like(b))
    if not unbalanced:
        return (col - b).abs().sum(1)
    # After an f update, P1_i = a_i·e^{f_i(1 − 1/τ_i)/eps}.
    row = torch.where(a > 0, a * torch.exp(f * (1 - 1 / tau_a) / e), torch.zeros_like(a))
    fit_a = _marginal_fit(a, f, tau_a, e)
    fit_b = _marginal_fit(b, g_old, tau_b, e)
    return (row - fit_a).abs().sum(1) + (col - fit_b).abs().sum(1)


def _marginal_fit(w, pot, tau, e):
    # OTT's grad_of_marginal_fit: w·e^{−pot/ρ}, ρ = eps·τ/(1−τ); w where τ = 1.
    rho_inv = (1 - tau) / (e * tau)
    return torch.where(w > 0, w * torch.exp(-torch.nan_to_num(pot, neginf=0.0) * rho_inv), torch.zeros_like(w))


def _iterate(engine, f, g, a, b, log_a, log_b, tau_a, tau_b, eps_at, n_anneal, target, *, max_iter, tol, check_every,
             unbalanced):
    """The Sinkhorn loop (no autograd). Returns f, g, n_iter (B,), err (B,)."""
    B = f.shape[0]
    active = torch.ones(B, dtype=torch.bool, device=f.device)
    n_iter = torch.full((B,), max_iter, dtype=torch.int64, device=f.device)
    err = torch.full((B,), float("inf"), dtype=f.dtype, device=f.device)
    some_frozen = False
    it = 0
    for it in range(max_iter):
        eps_t = eps_at(it)
        g_new = engine.update_g(f, log_b, tau_b, eps_t)
        if tol > 0 and it > 0 and it % check_every == 0 and it > n_anneal:
            err_now = _marginal_error(f, g, g_new, a, b, log_a, tau_a, tau_b, target, unbalanced)
            err = torch.where(active, err_now, err)
            done = active & (err_now < tol)
            n_iter = torch.where(done, torch.full_like(n_iter, it), n_iter)
            active = active & ~done
            if not torch.compiler.is_compiling():
                if not bool(active.any()):  # the only host sync: every check_every iterations
                    return f, g, n_iter, err
                some_frozen = not bool(active.all())
            else:
                some_frozen = True
        if some_frozen:
            g_new = torch.where(active[:, None], g_new, g)
        g = g_new
        f_new = engine.update_f(g, log_a, tau_a, eps_t)
        f = torch.where(active[:, None], f_new, f) if some_frozen else f_new
    # After max_iter iterations: the error of the final state, through one more g update at the target eps.
    g_next = engine.update_g(f, log_b, tau_b, target)
    err_now = _marginal_error(f, g, g_next, a, b, log_a, tau_a, tau_b, target, unbalanced)
    err = torch.where(active, err_now, err)
    return f, g, n_iter, err


def _dual_costs(f, g, a, b, tau_a, tau_b, eps, mass):
    """OTT's compute_kl_reg_cost with f, g held fixed (differentiable in a, b and, through mass, in C)."""
    e = eps[:, None]

    def div(w, pot, tau):
        pos = w > 0
        unb_side = tau < 1
        log_w = torch.log(torch.where(pos, w, torch.ones_like(w)))  # no 0·(1/0) in the backward at w = 0
        fw = torch.where(pos, pot, torch.zeros_like(pot)) - e * log_w
        bal = w * fw
        rho = e * tau / torch.where(unb_side, 1 - tau, torch.ones_like(tau))
        unb = -w * rho * torch.expm1(-torch.where(unb_side, fw, torch.zeros_like(fw)) / rho)
        return torch.where(pos, torch.where(unb_side, unb, bal), torch.zeros_like(bal)).sum(1)

    reg = div(a, f, tau_a) + div(b, g, tau_b) + eps * (a.sum(1) * b.sum(1) - mass)
    ent = reg - eps * (_entropy(a) + _entropy(b))
    return reg, ent


# Relative error of reg_ot_cost above which the mass is recomputed in float64, and above which a warning says so.
COST_RECOMPUTE_RTOL = 1e-5
COST_WARN_RTOL = 1e-4


def _mass_rounding(f, g, eps, mass, dtype):
    """A bound on |Δ(eps·ΣP)| from rounding in dtype: each row mass exp((f_i − out_i)/eps) carries a relative error
    of about u·(|f_i| + |out_i| + |g_j − c_ij|)/eps + u·log₂M, and eps times it is what the dual form subtracts."""
    spread = 3 * (_finite_abs_max(f) + _finite_abs_max(g)) + 8 * eps.detach().double()
    return torch.finfo(dtype).eps * mass.detach().double().abs() * spread


def _costs(op, f, g, a, b, tau_a, tau_b, eps, mass_fn, cost_scale, balanced):
    """The dual costs, with digits kept where eps dwarfs the costs.

    reg_ot_cost subtracts eps·ΣP from eps·Σa·Σb; the difference is of the order of the costs, so when eps is many
    orders above them the working dtype's rounding of ΣP (about u·eps) swamps it. Then ΣP and the dual form are
    evaluated again in float64 at the same (float32) potentials: the dual is stationary there, so storing the
    potentials in float32 costs only about (u₃₂·|f|)²/eps. If even that leaves fewer than ~4 digits, warn.
    Balanced potentials are first moved to an even split (f − c, g + c: the same plan), since with eps huge the
    solve leaves f̃ = f − eps·log a and g̃ near ±eps·log N, and c·(Σa − Σb) would turn the masses' last-bit
    difference into an error of the order of the costs."""
    mass = mass_fn(f, g, None)
    reg, ent = _dual_costs(f, g, a, b, tau_a, tau_b, eps, mass)
    if torch.compiler.is_compiling():
        return reg, ent
    dtype = reg.dtype
    # Compared with |reg|, or a thousandth of the largest cost where reg is near 0 (x = y); all-zero costs are exact.
    floor = 1e-3 * cost_scale().to(torch.float64)
    scale = torch.maximum(reg.detach().double().abs(), floor)
    err = _mass_rounding(f, g, eps, mass, dtype)
    if not bool(((err > COST_RECOMPUTE_RTOL * scale) & (scale > 0)).any()):
        return reg, ent
    if dtype != torch.float64:
        d = torch.float64
        f64, g64 = f.double(), g.double()
        if balanced:
            f64, g64 = _split_evenly(f64, g64, a.detach().to(d), b.detach().to(d), eps.detach().to(d))
        mass = mass_fn(f64, g64, d)
        reg, ent = _dual_costs(f64, g64, a.to(d), b.to(d), tau_a.to(d), tau_b.to(d), eps.to(d), mass)
        u = torch.finfo(dtype).eps
        stored = (u * (_finite_abs_max(f) + _finite_abs_max(g))).pow(2) / eps.detach().double()
        err = _mass_rounding(f64, g64, eps, mass, d) + stored
        scale = torch.maximum(reg.detach().abs(), floor)
        reg, ent = reg.to(dtype), ent.to(dtype)
    bad = (err > COST_WARN_RTOL * scale) & (scale > 0)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        _checks.warn(f"regops.{op}: eps {eps[i].item():.4g} dwarfs the costs (reg_ot_cost {reg[i].item():.4g}, "
                      f"rounding error up to {err[i].item():.2g}): the costs have few correct digits; lower eps"
                      + ("" if dtype == torch.float64 else " or pass float64 inputs"), CostPrecisionWarning)
    return reg, ent


def _split_evenly(f, g, a, b, eps):
    """(f − c, g + c) with c making the a- and b-weighted means of f̃ = f − eps·log a and g̃ equal."""
    e = eps[:, None]

    def mean_tilde(p, w):
        pos = w > 0
        t = torch.where(pos, p - e * torch.log(torch.where(pos, w, torch.ones_like(w))), torch.zeros_like(p))
        return (w * t).sum(1) / w.sum(1)

    c = 0.5 * (mean_tilde(f, a) - mean_tilde(g, b))
    return f - c[:, None], g + c[:, None]


def _finite_abs_max(p):
    p = p.detach().double()
    return torch.where(torch.isfinite(p), p.abs(), torch.zeros_like(p)).amax(1)


def _entropy(w):
    pos = w > 0
    return -torch.where(pos, w * torch.log(torch.where(pos, w, torch.ones_like(w))), torch.zeros_like(w)).sum(1)


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


def _solve(op, engine, mass_fn, a, b, tau_a, tau_b, unbalanced, eps, eps_at, n_anneal, init, *, max_iter, tol,
           check_every, like, cost_scale):
    B, N, M = a.shape[0], a.shape[1], b.shape[1]
    if not unbalanced and not torch.compiler.is_compiling():
        sa, sb = a.sum(1), b.sum(1)
        if bool(((sa - sb).abs() > 1e-5 * torch.maximum(sa, sb)).any()):
            _checks.fail(op, "b", "the total mass of a for balanced OT (tau_a = tau_b = 1)",
                         f"sums a {sa.tolist()}, b {sb.tolist()}")
    with torch.no_grad():
        ad, bd = a.detach(), b.detach()
        log_a, log_b = torch.log(ad), torch.log(bd)
        f, g = _init_potentials(op, init, B, N, M, like)
        f = torch.where(ad > 0, f, torch.full_like(f, float("-inf")))
        g = torch.where(bd > 0, g, torch.full_like(g, float("-inf")))
        f, g, n_iter, err = _iterate(engine, f, g, ad, bd, log_a, log_b, tau_a, tau_b, eps_at, n_anneal, eps,
                                     max_iter=max_iter, tol=tol, check_every=check_every, unbalanced=unbalanced)
    reg, ent = _costs(op, f, g, a, b, tau_a, tau_b, eps, mass_fn, cost_scale, balanced=not unbalanced)
    return SinkhornOutput(f=f, g=g, reg_ot_cost=reg, ent_reg_cost=ent, n_iter=n_iter, converged=err < tol,
                          marginal_error=err, eps=eps)


def _cloud_mass(x, y, eps, cost, chosen):
    """ΣP on point clouds, differentiable; dtype=float64 recomputes it precisely (Triton is float32 only, so it
    goes to the compiled kernel of that device, or to the reference)."""
    def mass(f, g, dtype):
        if dtype is None:
            return _backend.sinkhorn_mass(x, y, f, g, eps, cost, chosen)
        return _backend.sinkhorn_mass(x.to(dtype), y.to(dtype), f, g, eps.to(dtype), cost,
                                      _backend.precise_impl(chosen, x.device))
    return mass


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


def _centered(x, y, cost):
    """Translation-invariant costs: center both clouds on x's mean, so the dot-product form keeps its digits.
    Returns the shifted clouds (still differentiable) and the shift."""
    m = x.detach().mean(1, keepdim=True)
    if cost == reference.COSINE:
        m = torch.zeros_like(m)
    return x - m, y - m, m


def sinkhorn(x, y, a=None, b=None, *, eps=None, relative_epsilon=None, cost="sqeuclidean", tau_a=1.0, tau_b=1.0,
             max_iter=2000, tol=1e-3, check_every=10, eps_schedule=None, init=None, on_nonconvergence="warn",
             impl=None) -> SinkhornOutput:
    """Entropic OT between point clouds x (N, d) / (B, N, d) and y (M, d) / (B, M, d), streamed (O(N + M) memory).

    a, b: weights (uniform by default). cost: "sqeuclidean" ‖x−y‖² (no ½), "euclidean", "cosine" (1 − cos).
    eps: absolute; None → 0.05·std(C); relative_epsilon "mean"/"std" → (eps or 0.05)·that statistic of C
    (statistics without C, and without gradient). tau_a, tau_b: unbalanced marginals, τ = ρ/(ρ + eps) for a KL
    penalty ρ (scalars or per-point tensors); 1 is balanced. tol: L1 marginal error, checked every check_every
    iterations; tol = 0 runs exactly max_iter iterations (and never warns). eps_schedule: ε-scaling (see
    _schedule). init: a previous SinkhornOutput or (f, g). on_nonconvergence: "warn", "raise" or "ignore".
    """
    return _sinkhorn("ot.sinkhorn", x, y, a, b, eps=eps, relative_epsilon=relative_epsilon, cost=cost, tau_a=tau_a,
                     tau_b=tau_b, max_iter=max_iter, tol=tol, check_every=check_every, eps_schedule=eps_schedule,
                     init=init, on_nonconvergence=on_nonconvergence, impl=impl)


def _sinkhorn(op, x, y, a=None, b=None, *, eps, relative_epsilon, cost, tau_a, tau_b, max_iter, tol, check_every,
              eps_schedule, init, on_nonconvergence, impl) -> SinkhornOutput:
    """sinkhorn(), with errors and warnings naming `op` (the public op that called it)."""
    batched = isinstance(x, torch.Tensor) and x.dim() == 3
    x, y = _prepare_clouds(op, x, y)
    _checks.check_choice(op, "cost", cost, COSTS)
    _check_options(op, max_iter, tol, check_every, on_nonconvergence, relative_epsilon)
    cid = reference.COST_IDS[cost]
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    chosen = _backend.pick(op, impl, x)
    a = _weights(op, "a", a, B, N, x)
    b = _weights(op, "b", b, B, M, x)
    ta, ua = _tau(op, "tau_a", tau_a, B, N, x)
    tb, ub = _tau(op, "tau_b", tau_b, B, M, x)
    xc, yc, shift = _centered(x, y, cid)
    xd, yd = xc.detach().contiguous(), yc.detach().contiguous()
    eps_t = resolve_eps(op, eps, relative_epsilon, lambda: cost_moments(xd, yd, cid), B, x)
    eps_at, n_anneal = _schedule(op, eps_schedule, eps_t, lambda: _max_cost(xd, yd, cid).to(x.dtype))
    kernels = Kernels(chosen)
    if chosen == "reference":  # the oracle materializes C once and iterates densely
        engine = _Dense(reference.cost_matrix(xd, yd, cid), kernels)
    else:
        engine = _PointCloud(xd, yd, cid, kernels)
    mass_fn = _cloud_mass(xc, yc, eps_t, cid, chosen)
    out = _solve(op, engine, mass_fn, a, b, ta, tb, ua or ub, eps_t, eps_at, n_anneal, init, max_iter=max_iter,
                 tol=tol, check_every=check_every, like=x, cost_scale=lambda: _max_cost(xd, yd, cid))
    out._x, out._y, out._a, out._cost, out._impl, out._batched = xd, yd, a.detach(), cid, chosen, batched
    out._shift = shift
    return _finish(op, out, batched, tol, on_nonconvergence)


def sinkhorn_from_cost(C, a=None, b=None, *, eps=None, relative_epsilon=None, tau_a=1.0, tau_b=1.0, max_iter=2000,
                       tol=1e-3, check_every=10, eps_schedule=None, init=None, on_nonconvergence="warn",
                       impl=None) -> SinkhornOutput:
    """The dense path: Sinkhorn on a precomputed cost C (N, M) or (B, N, M). Same options and outputs as
    sinkhorn(); ∂reg_ot_cost/∂C = P."""
    op = "ot.sinkhorn_from_cost"
    batched = isinstance(C, torch.Tensor) and C.dim() == 3
    C = _as_batched(op, "C", C, dims=(2, 3))
    _checks.check_has_data(op, "C", C)
    if C.shape[1] == 0 or C.shape[2] == 0:
        _checks.fail(op, "C", "at least one row and one column", f"shape {tuple(C.shape)}")
    _check_finite(op, "C", C)
    _check_options(op, max_iter, tol, check_every, on_nonconvergence, relative_epsilon)
    C = C.to(_work_dtype(C))
    B, N, M = C.shape
    chosen = _backend.pick(op, impl, C)
    a = _weights(op, "a", a, B, N, C)
    b = _weights(op, "b", b, B, M, C)
    ta, ua = _tau(op, "tau_a", tau_a, B, N, C)
    tb, ub = _tau(op, "tau_b", tau_b, B, M, C)
    Cd = C.detach().contiguous()

    def moments():
        c = Cd.double()
        return c.mean((1, 2)), c.pow(2).mean((1, 2))

    eps_t = resolve_eps(op, eps, relative_epsilon, moments, B, C)
    eps_at, n_anneal = _schedule(op, eps_schedule, eps_t, lambda: Cd.amax((1, 2)) - Cd.amin((1, 2)).clamp_max(0))
    engine = _Dense(Cd, Kernels(chosen))

    def mass_fn(f, g, dtype):
        c, e = (C, eps_t) if dtype is None else (C.to(dtype), eps_t.to(dtype))
        return reference.plan_from_cost(c, f, g, e).sum((1, 2))

    out = _solve(op, engine, mass_fn, a, b, ta, tb, ua or ub, eps_t, eps_at, n_anneal, init, max_iter=max_iter,
                 tol=tol, check_every=check_every, like=C, cost_scale=lambda: Cd.abs().amax((1, 2)))
    out._C, out._a, out._impl, out._batched = Cd, a.detach(), chosen, batched
    return _finish(op, out, batched, tol, on_nonconvergence)


def _max_cost(x, y, cost):
    """An upper bound of C from the clouds' bounding box (the start of ε-scaling)."""
    if cost == reference.COSINE:
        return torch.full((x.shape[0],), 2.0, dtype=torch.float64, device=x.device)
    pts = torch.cat([x, y], 1)
    diam = (pts.amax(1) - pts.amin(1)).double().pow(2).sum(-1).sqrt()
    return diam.pow(2) if cost == reference.SQEUCLIDEAN else diam


# ---- using the solution ----

def _batched_potentials(out):
    f, g = out.f, out.g
    if not out._batched:
        f, g = f[None], g[None]
    eps = out.eps if out._batched else out.eps.reshape(1)
    return f, g, eps


def transport_plan(out: SinkhornOutput) -> torch.Tensor:
    """P (N, M) or (B, N, M), materialized on request: exp((f_i + g_j − C_ij)/eps)."""
    f, g, eps = _batched_potentials(out)
    C = out._C if out._C is not None else reference.cost_matrix(out._x, out._y, out._cost)
    P = reference.plan_from_cost(C, f, g, eps)
    return P if out._batched else P[0]


def apply_plan(out: SinkhornOutput, v: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
    """P·v (transpose=False; v (M,) or (M, k), batched (B, M, k)) or Pᵀ·v (v over the N points), streamed."""
    op = "ot.apply_plan"
    f, g, eps = _batched_potentials(out)
    n_in = f.shape[1] if transpose else g.shape[1]
    _checks.check_tensor(op, "v", v, ndims=(1, 2, 3))
    vec = v.dim() == 1 or (out._batched and v.dim() == 2)
    vb = v.unsqueeze(-1) if vec else v
    vb = vb if vb.dim() == 3 else vb.unsqueeze(0)
    if vb.shape[1] != n_in:
        _checks.fail(op, "v", f"{n_in} rows (the points P is applied over)", f"shape {tuple(v.shape)}")
    if not torch.compiler.is_compiling():
        _checks.check_finite_eager(op, "v", v)
    vb = vb.to(device=f.device, dtype=f.dtype).expand(f.shape[0], -1, -1).contiguous()
    if out._C is not None:
        P = reference.plan_from_cost(out._C, f, g, eps)
        res = torch.bmm(P.transpose(1, 2) if transpose else P, vb)
    else:
        k = Kernels(out._impl)
        if transpose:
            res = k.apply(out._y, out._x, g, f, vb, eps, out._cost)
        else:
            res = k.apply(out._x, out._y, f, g, vb, eps, out._cost)
    if vec:
        res = res[..., 0]
    return res if out._batched else res[0]


def barycentric_map(out: SinkhornOutput, y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """T(x_i) = (P y)_i / a_i: the entropic map of each source point (y: the target points, by default the solve's)."""
    if y is None:
        if out._y is None:
            _checks.fail("ot.barycentric_map", "y", "the target points for a solve from a cost matrix", "None")
        y = out._y + out._shift
        y = y if out._batched else y[0]
    a = out._a if out._batched else out._a[0]
    if not torch.compiler.is_compiling() and bool((a <= 0).any()):
        i = tuple(int(j) for j in (a <= 0).nonzero()[0])
        _checks.fail("ot.barycentric_map", "a", "positive weights (a point of zero mass has no image)",
                     f"a{list(i)} = {float(a[i])}")
    Py = apply_plan(out, y)
    return Py / a[..., None]


def _symmetric_reg_ot_cost(op, x, a, eps, cid, chosen, *, max_iter, tol, check_every, on_nonconvergence):
    """reg_ot_cost of OT(a, a) on one cloud (B, N, d), balanced, with the averaged symmetric update
    f ← ½(f + T(f)) (OTT's symmetric_sinkhorn, GeomLoss): one pass per iteration, and it converges fast.
    The error is ‖P1 − a‖₁ of the state (f, f), free from T(f): P1 = a·e^{(f − T(f))/eps}."""
    xc, _, _ = _centered(x, x, cid)
    xd = xc.detach().contiguous()
    k = Kernels(chosen)
    B = x.shape[0]
    with torch.no_grad():
        ad = a.detach()
        log_a = torch.log(ad)
        ones = torch.ones_like(ad)
        if chosen == "reference":
            C = reference.cost_matrix(xd, xd, cid)
            step = lambda f: k.update_dense(C, f, log_a, ones, eps, False)  # noqa: E731
        else:
            step = lambda f: k.update(xd, xd, f, log_a, ones, eps, cid)  # noqa: E731
        f = torch.where(ad > 0, torch.zeros_like(ad), torch.full_like(ad, float("-inf")))
        active = torch.ones(B, dtype=torch.bool, device=x.device)
        n_iter = torch.full((B,), max_iter, dtype=torch.int64, device=x.device)
        err = torch.full((B,), float("inf"), dtype=ad.dtype, device=x.device)
        for it in range(max_iter + 1):
            t = step(f)
            if it == max_iter or (tol > 0 and it > 0 and it % check_every == 0):
                row = torch.where(ad > 0, ad * torch.exp((f - t) / eps[:, None]), torch.zeros_like(ad))
                now = (row - ad).abs().sum(1)
                err = torch.where(active, now, err)
                done = active & (now < tol)
                n_iter = torch.where(done, torch.full_like(n_iter, it), n_iter)
                active = active & ~done
                if it == max_iter or (not torch.compiler.is_compiling() and not bool(active.any())):
                    break
            f = torch.where(active[:, None], 0.5 * (f + t), f)
    ones = torch.ones_like(a)
    reg, ent = _costs(op, f, f, a, a, ones, ones, eps, _cloud_mass(xc, xc, eps, cid, chosen),
                      lambda: _max_cost(xd, xd, cid), balanced=True)
    out = SinkhornOutput(f=f, g=f, reg_ot_cost=reg, ent_reg_cost=ent, n_iter=n_iter, converged=err < tol,
                         marginal_error=err, eps=eps)
    return _finish(op, out, True, tol, on_nonconvergence).reg_ot_cost


def sinkhorn_divergence(x, y, a=None, b=None, *, eps=None, relative_epsilon=None, cost="sqeuclidean", tau_a=1.0,
                        tau_b=1.0, max_iter=2000, tol=1e-3, check_every=10, eps_schedule=None, init=None,
                        on_nonconvergence="warn", impl=None, static_b=False) -> torch.Tensor:
    """OT(x, y) − ½(OT(x, x) + OT(y, y)) + ½·eps·(Σa − Σb)² on reg_ot_cost (OTT's sinkhorn_divergence).

    All three problems share the eps of C(x, y). static_b drops the y–y term. A 0-dim tensor ((B,) batched).
    The balanced x–x and y–y problems use the averaged symmetric update, as OTT and GeomLoss do."""
    op = "ot.sinkhorn_divergence"
    batched = isinstance(x, torch.Tensor) and x.dim() == 3
    xb, yb = _prepare_clouds(op, x, y)
    _checks.check_choice(op, "cost", cost, COSTS)
    _check_options(op, max_iter, tol, check_every, on_nonconvergence, relative_epsilon)
    cid = reference.COST_IDS[cost]
    B = xb.shape[0]
    xc, yc, _ = _centered(xb.detach(), yb.detach(), cid)
    e = resolve_eps(op, eps, relative_epsilon, lambda: cost_moments(xc, yc, cid), B, xb)
    kw = dict(cost=cost, max_iter=max_iter, tol=tol, check_every=check_every, eps_schedule=eps_schedule,
              on_nonconvergence=on_nonconvergence, impl=impl)
    kw.update(relative_epsilon=None)
    xy = _sinkhorn(op, x, y, a, b, eps=e if batched else e[0], tau_a=tau_a, tau_b=tau_b, init=init, **kw)
    wa = _weights(op, "a", a, B, xb.shape[1], xb)
    wb = _weights(op, "b", b, B, yb.shape[1], xb)

    def self_term(pts, w, tau, orig):
        if isinstance(tau, float) and tau == 1.0 and eps_schedule is None:
            chosen = _backend.pick(op, impl, pts)
            return _symmetric_reg_ot_cost(op, pts, w, e, cid, chosen, max_iter=max_iter, tol=tol,
                                          check_every=check_every, on_nonconvergence=on_nonconvergence)
        out = _sinkhorn(op, orig, orig, w if batched else w[0], w if batched else w[0], eps=e if batched else e[0],
                        tau_a=tau, tau_b=tau, init=None, **kw)
        return out.reg_ot_cost if batched else out.reg_ot_cost[None]

    div = xy.reg_ot_cost - 0.5 * (self_term(xb, wa, tau_a, x) if batched else self_term(xb, wa, tau_a, x)[0])
    if not static_b:
        yy = self_term(yb, wb, tau_b, y)
        div = div - 0.5 * (yy if batched else yy[0])
    mass_term = 0.5 * e * (wa.sum(1) - wb.sum(1)).pow(2)
    return div + (mass_term if batched else mass_term[0])
