"""OTT-JAX's MongeGapEstimator fitting loss as a module:
loss = sinkhorn_divergence(T(x), y_target; eps_fit) + λ·monge_gap(x, T(x); eps_reg)."""
from __future__ import annotations

import torch

from .. import _checks
from ..ops.monge_gap import monge_gap
from ..ot import sinkhorn_divergence


class MongeGapLoss(torch.nn.Module):
    """forward(source, mapped, target): the fitting term pulls T(x) = mapped onto target, the Monge gap keeps T
    close to an optimal map. fit_eps / reg_eps: absolute eps, or with *_relative_epsilon ("mean"/"std") a scale
    of that statistic of the cost (the OTT tutorial: fit 0.1·mean C(y, y)-like, reg 0.01·mean C(x, y));
    None gives 0.05·std(C). static_b drops the target–target term of the divergence."""

    def __init__(self, lambda_: float = 1.0, fit_eps=None, reg_eps=None, *, cost: str = "sqeuclidean",
                 fit_relative_epsilon=None, reg_relative_epsilon=None, static_b: bool = False, max_iter: int = 2000,
                 tol: float = 1e-3, on_nonconvergence: str = "warn", impl=None):
        super().__init__()
        self.lambda_ = _checks.number("nn.MongeGapLoss", "lambda_", lambda_, low=0,
                                      what="a finite number >= 0 (the weight of the Monge gap)")
        self.fit = dict(eps=fit_eps, relative_epsilon=fit_relative_epsilon, cost=cost, static_b=static_b,
                        max_iter=max_iter, tol=tol, on_nonconvergence=on_nonconvergence, impl=impl)
        self.reg = dict(eps=reg_eps, relative_epsilon=reg_relative_epsilon, cost=cost, max_iter=max_iter, tol=tol,
                        on_nonconvergence=on_nonconvergence, impl=impl)

    def forward(self, source: torch.Tensor, mapped: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fit = sinkhorn_divergence(mapped, target, **self.fit)
        if self.lambda_ == 0:
            return fit
        return fit + self.lambda_ * monge_gap(source, mapped, **self.reg)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}, fit_eps={self.fit['eps']}, reg_eps={self.reg['eps']}, cost={self.fit['cost']!r}"
