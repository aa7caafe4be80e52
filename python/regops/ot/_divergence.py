"""The Sinkhorn divergence (OTT's sinkhorn_divergence), its self terms by the averaged symmetric update."""
from __future__ import annotations

import torch

from .. import _checks
from .._constants import COST_IDS
from ..reference import sinkhorn as reference
from . import _backend
from ._backend import Kernels
from ._dual import _costs
from ._epsilon import _max_cost, cost_moments, resolve_eps
from ._options import COSTS, SinkhornOutput, _check_options, _finish, _prepare_clouds, _weights
from ._solver import _centered, _cloud_mass, _sinkhorn


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
    cid = COST_IDS[cost]
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
