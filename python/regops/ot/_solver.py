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

import torch

from .. import _checks
from .._constants import COSINE, COST_IDS
from ..reference import sinkhorn as reference
from . import _backend
from ._backend import Kernels
from ._dual import _costs
from ._epsilon import _max_cost, _schedule, cost_moments, resolve_eps
from ._iteration import _Dense, _PointCloud, _iterate
from ._options import (COSTS, SinkhornOutput, _as_batched, _check_finite, _check_options, _finish, _init_potentials,
                       _prepare_clouds, _tau, _weights, _work_dtype)


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


def _centered(x, y, cost):
    """Translation-invariant costs: center both clouds on x's mean, so the dot-product form keeps its digits.
    Returns the shifted clouds (still differentiable) and the shift."""
    m = x.detach().mean(1, keepdim=True)
    if cost == COSINE:
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
    cid = COST_IDS[cost]
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
