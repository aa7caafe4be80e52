"""Autograd for every compiled op that has no formula of its own, so that no call falls through to torch's
"autograd kernel was not registered" warning and a silently missing gradient.

- Backward ops (``*_bwd``, ``sinkhorn_cost_grad``): a gradient reaching them is a double backward
  (``create_graph=True``, e.g. a gradient penalty). The compiled kernels are differentiable once, so it raises
  and names the impl that is differentiable twice: the reference.
- Solver steps (``sinkhorn_update*``, ``sinkhorn_apply``, ``p2ot_scaling_pass``, ``graddrop_keep_prob``) run
  where no gradient is wanted; a gradient reaching one raises as well.
- Mutating ops (``orthonormal_grad_accumulate_``, ``graddrop_apply_``) cannot take an autograd formula; their
  Autograd kernel runs them below autograd, so their outputs never require grad (they write gradients, they
  are not differentiated).
"""
from __future__ import annotations

import torch

from .._loader import schema_registered

DOUBLE_BACKWARD = ("double backward (a gradient of this op's gradient, as create_graph=True asks for) is not "
                   "supported by the {impl} kernel; use impl='reference' for second-order terms")
NOT_DIFFERENTIABLE = ("{what} is not differentiable on the {impl} kernel; use impl='reference' for a gradient "
                      "through it")

_LIB = None


def _no_context(ctx, inputs, output):
    pass


def raise_on_backward(qualname: str, public: str, message: str, impl: str) -> None:
    """Register for regops::<qualname> an autograd formula that raises `regops.<public>: <message>`."""
    text = f"regops.{public}: " + message.format(impl=impl)

    def backward(ctx, *grads):
        raise RuntimeError(text)

    torch.library.register_autograd(f"regops::{qualname}", backward, setup_context=_no_context)


def run_below_autograd(name: str) -> None:
    """An Autograd kernel for the mutating op regops::<name>: the op runs with autograd off."""
    global _LIB
    if _LIB is None:
        _LIB = torch.library.Library("regops", "IMPL")
    op = getattr(torch.ops.regops, name).default

    def kernel(*args):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    _LIB.impl(name, kernel, "Autograd")


# (op, public op named in the error, message, what) for the compiled library's ops
_COMPILED = (
    ("orthonormal_penalty_bwd", "orthonormal_penalty", DOUBLE_BACKWARD, None),
    ("contrastive_bwd", "conr_loss/supcon_loss/focal_supcon_loss", DOUBLE_BACKWARD, None),
    ("sinkhorn_cost_grad", "ot.sinkhorn", DOUBLE_BACKWARD, None),
    ("sinkhorn_update", "ot.sinkhorn", NOT_DIFFERENTIABLE, "a Sinkhorn potential update"),
    ("sinkhorn_update_dense", "ot.sinkhorn_from_cost", NOT_DIFFERENTIABLE, "a Sinkhorn potential update"),
    ("sinkhorn_apply", "ot.apply_plan", NOT_DIFFERENTIABLE, "the streamed plan product P·v"),
    ("p2ot_scaling_pass", "p2ot_plan", NOT_DIFFERENTIABLE, "the scaling pass"),
    ("graddrop_keep_prob", "graddrop_keep_prob", NOT_DIFFERENTIABLE, "the keep probability"),
)
_MUTATING = ("orthonormal_grad_accumulate_", "graddrop_apply_")
# the Triton custom ops raise torch's "no autograd formula" by default: these say which op and what to do
_TRITON = tuple((name + "_triton", public, message, what) for name, public, message, what in _COMPILED
                if name not in ("orthonormal_penalty_bwd", "contrastive_bwd")) + (
    ("orthonormal_penalty_bwd_triton", "orthonormal_penalty", DOUBLE_BACKWARD, None),
    ("contrastive_bwd_triton", "conr_loss/supcon_loss/focal_supcon_loss", DOUBLE_BACKWARD, None),
)


def register_all() -> None:
    """Called once by regops/__init__.py, after every op module has registered its ops."""
    for name, public, message, what in _COMPILED:
        if schema_registered(name):
            raise_on_backward(name, public, message.replace("{what}", what or ""), "compiled (cpu, cuda)")
    for name in _MUTATING:
        if schema_registered(name):
            run_below_autograd(name)
    for name, public, message, what in _TRITON:
        if hasattr(torch.ops.regops, name):
            raise_on_backward(name, public, message.replace("{what}", what or ""), "triton")
