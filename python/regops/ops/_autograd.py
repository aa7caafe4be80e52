"""Autograd for every compiled op that has no formula of its own, so that no call falls through to torch's
"autograd kernel was not registered" warning and a silently missing gradient. What each op gets is the
registry's (``Engine.autograd`` in _registry.py):

- "double_backward" (the backward ops): a gradient reaching them is a double backward (``create_graph=True``,
  e.g. a gradient penalty). The compiled kernels are differentiable once, so it raises and names the impl that
  is differentiable twice: the reference.
- "no_grad" (solver steps, run where no gradient is wanted): a gradient reaching one raises as well.
- "mutating" (they write gradients, they are not differentiated): their Autograd kernel runs them below autograd,
  so their outputs never require grad.
"""
from __future__ import annotations

import torch

from .. import _registry
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


def register_all() -> None:
    """Called once by regops/__init__.py, after every op module has registered its ops: each role's treatment is
    the registry's (Engine.autograd)."""
    for engine in _registry.ENGINES:
        for role, rule in engine.autograd.items():
            for impl, label in (("cpu", "compiled (cpu, cuda)"), ("triton", "triton")):
                name = engine.ops.get(impl, {}).get(role)
                if name is None or rule.kind == "formula":
                    continue
                if not (schema_registered(name) if impl == "cpu" else hasattr(torch.ops.regops, name)):
                    continue
                if rule.kind == "mutating":
                    if impl == "cpu":  # a Triton custom_op that mutates runs below autograd already
                        run_below_autograd(name)
                    continue
                message = DOUBLE_BACKWARD if rule.kind == "double_backward" else NOT_DIFFERENTIABLE
                raise_on_backward(name, rule.public, message.replace("{what}", rule.what), label)
