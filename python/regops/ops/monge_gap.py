"""The Monge gap (Uscidda & Cuturi, "The Monge Gap: A Regularizer to Learn All Transport Maps"), exact to OTT-JAX's
``monge_gap_from_samples``: M(x, y) = mean_i c(x_i, y_i) − ent_reg_cost(x, y), y_i = T(x_i) row-paired with x_i,
uniform weights, no debiasing. M ≥ eps·log n (the diagonal coupling is feasible). Gradients reach y (and x) by
the envelope theorem through regops.ot.sinkhorn."""
from __future__ import annotations

import torch

from .. import _checks
from .._constants import COSINE_RIDGE, COST_IDS
from ..ot import _solver


def paired_cost(x: torch.Tensor, y: torch.Tensor, cost: str) -> torch.Tensor:
    """c(x_i, y_i) per row (…, n); the euclidean cost takes the subgradient 0 where x_i = y_i."""
    if cost == "sqeuclidean":
        return (x - y).pow(2).sum(-1)
    if cost == "euclidean":
        sq = (x - y).pow(2).sum(-1)
        pos = sq > 0
        return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))
    nx, ny = x.norm(dim=-1), y.norm(dim=-1)
    return 1 - (x * y).sum(-1) / (nx * ny + COSINE_RIDGE)


def monge_gap(x, y, *, cost="sqeuclidean", eps=None, relative_epsilon=None, max_iter=2000, tol=1e-3,
              on_nonconvergence="warn", impl=None) -> torch.Tensor:
    """M = mean_i c(x_i, y_i) − ent_reg_cost(x, y): a 0-dim tensor ((B,) for batched (B, n, d) inputs).

    eps=None gives 0.05·std(C) (OTT ≥ 0.6); relative_epsilon="mean"/"std" scales eps by that statistic of C;
    statistics carry no gradient. The Sinkhorn options are regops.ot.sinkhorn's."""
    op = "monge_gap"
    for arg, t in (("x", x), ("y", y)):
        _checks.check_tensor(op, arg, t, ndims=(2, 3))
    if x.shape != y.shape:
        _checks.fail(op, "y", f"the shape of x {tuple(x.shape)} (y = T(x) is row-paired with x)",
                     f"shape {tuple(y.shape)}")
    _checks.check_choice(op, "cost", cost, tuple(COST_IDS))
    out = _solver._sinkhorn(op, x, y, eps=eps, relative_epsilon=relative_epsilon, cost=cost, tau_a=1.0, tau_b=1.0,
                            max_iter=max_iter, tol=tol, check_every=10, eps_schedule=None, init=None,
                            on_nonconvergence=on_nonconvergence, impl=impl)
    return paired_cost(x.to(out.f.dtype), y.to(out.f.dtype), cost).mean(-1) - out.ent_reg_cost


def monge_gap_map(map_fn, x, **kwargs) -> torch.Tensor:
    """monge_gap(x, map_fn(x), **kwargs)."""
    return monge_gap(x, map_fn(x), **kwargs)
