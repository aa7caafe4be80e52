"""The backward of the row kernels that compute their gradient in the forward pass (mixup_rows, elr_rows): the
saved d loss_i/dz_i rows scaled by the upstream gradient of each row's loss.

It is an op of its own (``regops::row_grad_scale``) so that a double backward through a compiled kernel raises
instead of silently missing the second-order term: the saved rows are constants to autograd."""
from __future__ import annotations

import torch

from .. import _checks
from ._autograd import DOUBLE_BACKWARD

PUBLIC = "decoupled_mixup_loss/elr_loss"


@torch.library.custom_op("regops::row_grad_scale", mutates_args=())
def row_grad_scale(grad_loss: torch.Tensor, row_grad: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """grad_loss (B,) times row_grad (B, C) (the accumulation dtype), rounded once to the logits' dtype. logits is
    read for its dtype only; it is an input so that under create_graph=True the result requires grad and a
    gradient reaching it raises (instead of the result being taken for a constant)."""
    return _scale(grad_loss, row_grad, logits)


def _scale(grad_loss, row_grad, logits):
    return (grad_loss.to(row_grad.dtype)[:, None] * row_grad).to(logits.dtype)


@row_grad_scale.register_fake
def _(grad_loss, row_grad, logits):
    return torch.empty_like(row_grad, dtype=logits.dtype)


def _no_context(ctx, inputs, output):
    pass


def _raise(ctx, grad):
    raise RuntimeError(f"regops.{PUBLIC}: " + DOUBLE_BACKWARD.format(impl="compiled (cpu, cuda, triton)"))


row_grad_scale.register_autograd(_raise, setup_context=_no_context)


def setup_context(ctx, inputs, output):
    """For a row kernel whose output 1 is the gradient rows (or an empty (0, C) tensor without want_grad)."""
    logits = inputs[0]
    grad = output[1]
    ctx.save_for_backward(grad, logits)
    ctx.n_inputs = len(inputs)
    ctx.mark_non_differentiable(*output[1:])
    # the gradient rows and the new buffer rows are not differentiable: without this autograd would fill (B, C)
    # zeros for each of them on every backward
    ctx.set_materialize_grads(False)


def backward_rows(ctx, grad_loss, *_):
    grad, logits = ctx.saved_tensors
    rest = (None,) * (ctx.n_inputs - 1)
    if grad_loss is None:
        return (None,) + rest
    if grad.shape[0] != grad_loss.shape[0]:
        raise RuntimeError(f"regops.{PUBLIC}: the kernel ran without want_grad=True, so it kept no gradient; call "
                           "it with logits that require grad under torch.enable_grad()")
    if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        # a first-order backward: the op exists only to make a double backward raise, so skip its dispatch
        # (~10-20 µs a call, a large share of a small batch's step)
        return (_scale(grad_loss, grad, logits),) + rest
    return (torch.ops.regops.row_grad_scale(grad_loss.contiguous(), grad, logits),) + rest


def check_rows_finite(op: str, rows: torch.Tensor, inputs) -> None:
    """Never a silent NaN, at the cost of B values: a non-finite row loss names the non-finite input entry that
    caused it (inputs: (arg, tensor) pairs), or says that the finite input overflowed. Eager only; on CUDA only
    under REGOPS_CHECK_FINITE=1 (a host sync)."""
    if torch.compiler.is_compiling() or not _checks.check_finite_enabled(rows.device):
        return
    bad = ~torch.isfinite(rows.detach())
    if not bool(bad.any()):
        return
    for arg, t in inputs:
        _checks.check_finite_eager(op, arg, t.detach())
    _checks.fail(op, "logits", "finite per-row losses",
                 f"a non-finite loss {rows[bad][0].item()} at row {int(bad.nonzero()[0])} from finite inputs")
