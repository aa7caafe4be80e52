"""The Sinkhorn kernels of each impl behind one interface, their fake kernels, and the one differentiable op.

Kernels (schemas in csrc/ops.cpp; reference/sinkhorn.py is the oracle), all batched:
  update(x, y, pot, log_w, tau, eps, cost)           one half-update, streamed over y
  update_dense(C, pot, log_w, tau, eps, transpose)   the same on a given cost matrix
  cost_grad(x, y, f, g, eps, cost)                   Σ_j P_ij ∇_x c(x_i, y_j)
  apply(x, y, f, g, v, eps, cost)                    P·v

``regops::sinkhorn_mass`` (ΣP per problem) is what the costs are differentiated through: by the envelope
theorem only the final potentials and the cost are differentiated, so its backward needs the envelope gradients
Σ_j P_ij ∇_x c (and the marginals, for f and g), never the iterations.
"""
from __future__ import annotations

import importlib.util

import torch

from .. import _registry
from ..contracts import sinkhorn as contract
from .._loader import schema_registered, triton_available


if schema_registered("sinkhorn_update"):
    for _role in ("update", "update_dense", "cost_grad", "apply"):
        torch.library.register_fake(f"regops::sinkhorn_{_role}")(getattr(contract, f"fake_{_role}"))

_triton = None
if triton_available() and importlib.util.find_spec("regops.triton.sinkhorn") is not None:
    from ..triton import sinkhorn as _triton  # noqa: F401  (registers the triton ops)


class Kernels:
    """The four kernels of one impl (the registry's SINKHORN engine), plus the row marginal helper."""

    def __init__(self, impl: str):
        self.impl = impl
        self.update = _registry.kernel("sinkhorn", impl, "update")
        self.update_dense = _registry.kernel("sinkhorn", impl, "update_dense")
        self.cost_grad = _registry.kernel("sinkhorn", impl, "cost_grad")
        self.apply = _registry.kernel("sinkhorn", impl, "apply")

    def row_lse_potential(self, x, y, pot, eps, cost):
        """−eps·LSE_j((pot_j − c_ij)/eps): the update with log_w = 0, tau = 1 (gives the row marginals)."""
        zeros = x.new_zeros(x.shape[:2])
        return self.update(x, y, pot, zeros, torch.ones_like(zeros), eps, cost)


def precise_impl(chosen: str, device: torch.device) -> str:
    """The impl that evaluates a float64 pass for `chosen` (Triton is float32 only: the compiled kernel of the
    same device, where there is one)."""
    return _registry.precise_impl(_registry.SINKHORN, chosen, device)


def pick(op: str, impl, t: torch.Tensor) -> str:
    return _registry.pick(op, impl, t, "x")


# ---- the differentiable transport mass ΣP ----

@torch.library.custom_op("regops::sinkhorn_mass", mutates_args=())
def sinkhorn_mass(x: torch.Tensor, y: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: torch.Tensor, cost: int,
                  impl: str) -> torch.Tensor:
    """Σ_ij P_ij per problem (B,), P_ij = exp((f_i + g_j − c(x_i, y_j))/eps), streamed."""
    k = Kernels(impl)
    out = k.row_lse_potential(x, y, g, eps, cost)
    return torch.exp((f - out) / eps[:, None]).sum(1)


@sinkhorn_mass.register_fake
def _(x, y, f, g, eps, cost, impl):
    return x.new_empty((x.shape[0],))


def _mass_setup(ctx, inputs, output):
    x, y, f, g, eps, cost, impl = inputs
    ctx.save_for_backward(x, y, f, g, eps)
    ctx.cost, ctx.impl = cost, impl


def _mass_backward(ctx, grad):
    x, y, f, g, eps = ctx.saved_tensors
    k = Kernels(ctx.impl)
    need = ctx.needs_input_grad
    e = eps[:, None]
    gx = gy = gf = gg = None
    # ∂P_ij/∂x_i = −P_ij ∇_x c/eps; ∂P_ij/∂f_i = P_ij/eps.
    if need[0]:
        gx = k.cost_grad(x, y, f, g, eps, ctx.cost) * (-grad[:, None] / e)[:, :, None]
    if need[1]:
        gy = k.cost_grad(y, x, g, f, eps, ctx.cost) * (-grad[:, None] / e)[:, :, None]
    if need[2]:
        gf = torch.exp((f - k.row_lse_potential(x, y, g, eps, ctx.cost)) / e) * (grad[:, None] / e)
    if need[3]:
        gg = torch.exp((g - k.row_lse_potential(y, x, f, eps, ctx.cost)) / e) * (grad[:, None] / e)
    return gx, gy, gf, gg, None, None, None


sinkhorn_mass.register_autograd(_mass_backward, setup_context=_mass_setup)
