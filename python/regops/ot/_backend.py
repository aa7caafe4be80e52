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

from .. import _checks
from .._loader import has_kernel, resolve_impl, schema_registered, triton_available
from ..reference import sinkhorn as reference

OP = "sinkhorn"
KERNELS = {"cpu": "sinkhorn_update", "cuda": "sinkhorn_update", "triton": "sinkhorn_update_triton"}
TRITON_DTYPES = (torch.float32,)


if schema_registered("sinkhorn_update"):
    @torch.library.register_fake("regops::sinkhorn_update")
    def _fake_update(x, y, pot, log_w, tau, eps, cost):
        return x.new_empty((x.shape[0], x.shape[1]))

    @torch.library.register_fake("regops::sinkhorn_update_dense")
    def _fake_update_dense(cost_matrix, pot, log_w, tau, eps, transpose):
        b, n, m = cost_matrix.shape
        return cost_matrix.new_empty((b, m if transpose else n))

    @torch.library.register_fake("regops::sinkhorn_cost_grad")
    def _fake_cost_grad(x, y, f, g, eps, cost):
        return torch.empty_like(x)

    @torch.library.register_fake("regops::sinkhorn_apply")
    def _fake_apply(x, y, f, g, v, eps, cost):
        return x.new_empty((x.shape[0], x.shape[1], v.shape[2]))

_triton = None
if triton_available() and importlib.util.find_spec("regops.triton.sinkhorn") is not None:
    from ..triton import sinkhorn as _triton  # noqa: F401  (registers the triton ops)


class Kernels:
    """The four kernels of one impl."""

    def __init__(self, impl: str):
        self.impl = impl
        if impl == "reference":
            self.update, self.update_dense = reference.update, reference.update_dense
            self.cost_grad, self.apply = reference.cost_grad, reference.apply
        elif impl == "triton":
            ops = torch.ops.regops
            self.update, self.update_dense = ops.sinkhorn_update_triton, ops.sinkhorn_update_dense_triton
            self.cost_grad, self.apply = ops.sinkhorn_cost_grad_triton, ops.sinkhorn_apply_triton
        else:
            ops = torch.ops.regops
            self.update, self.update_dense = ops.sinkhorn_update, ops.sinkhorn_update_dense
            self.cost_grad, self.apply = ops.sinkhorn_cost_grad, ops.sinkhorn_apply

    def row_lse_potential(self, x, y, pot, eps, cost):
        """−eps·LSE_j((pot_j − c_ij)/eps): the update with log_w = 0, tau = 1 (gives the row marginals)."""
        zeros = x.new_zeros(x.shape[:2])
        return self.update(x, y, pot, zeros, torch.ones_like(zeros), eps, cost)


def precise_impl(chosen: str, device: torch.device) -> str:
    """The impl that evaluates a float64 pass for `chosen`: itself, except Triton (float32 only), which hands it to
    the compiled kernel of the same device where there is one."""
    if chosen != "triton":
        return chosen
    compiled = {"cpu": "cpu", "cuda": "cuda"}.get(device.type)
    return compiled if compiled and has_kernel("sinkhorn_update", device.type.upper()) else "reference"


@torch._dynamo.assume_constant_result
def _resolve(op: str, impl, device_type: str) -> str:
    return resolve_impl(op, impl, torch.device(device_type), KERNELS)


def pick(op: str, impl, t: torch.Tensor) -> str:
    chosen = _resolve(op, impl, t.device.type)
    if chosen == "triton" and t.dtype not in TRITON_DTYPES:
        if impl == "triton":
            _checks.fail(op, "x", "dtype float32 for impl='triton'", _checks.dtype_name(t.dtype), TypeError)
        chosen = "reference"
    return chosen


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
