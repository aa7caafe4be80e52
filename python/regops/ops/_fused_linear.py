"""The chunked fused-linear engine: linear head → log-softmax → {gather, KL to a reference}, without the logits.

A *head* gives the logits of N token rows: ``x (N, H) @ weight (V, H)ᵀ`` or, with ``weight=None``, ``x (N, V)``
itself. The engine walks the rows whose target is not ``ignore_index`` in chunks: a chunk's logits exist only while
it is processed (the GEMMs stay on torch/BLAS), and the row math (LSE, gather, KL, the logit gradient written in
place) is one kernel of the chosen impl (the registry's "fused_linear" engine). Per valid row it returns
logp_t = log π(y_t) and, with a reference head and a kl_mode, kl_t (1: KL(π_ref‖π), 2: KL(π‖π_ref)) and the
reference's own log π_ref(y_t). The reference is a constant: it never gets a gradient. Ignored rows give 0.

Three torch.library ops, opaque to torch.compile (their chunk loop is data-dependent), carry it to autograd:

- ``regops::fused_linear_logprobs`` → (logp, kl, ref_logp, dlogp_dx): differentiable; its backward is a second pass that
  recomputes each chunk's logits (``regops::fused_linear_logprobs_backward``), so any loss written in torch on
  logp/kl works, with O(chunk) memory, at one extra logits GEMM. With ``save_dlogp_dx`` (no KL, a frozen head)
  the forward also keeps d logp_t/d x_t (N, H), and the backward is a row scaling: no second pass.
- ``regops::fused_linear_linear_loss`` → (loss, logp, kl, dx, dweight): for a loss Σ_t a_t·logp_t + b_t·kl_t with
  the coefficients known up front (SFT, the KL penalty): one pass, the gradients computed in the forward
  (as Liger-Kernel does), dweight accumulated in float32 (float64 for float64) whatever the input dtype.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _registry
from .._constants import acc_dtype
from .._loader import schema_registered, triton_available
from ..contracts import logsoftmax as contract
from ._autograd import DOUBLE_BACKWARD

if schema_registered("logsoftmax_rows"):
    torch.library.register_fake("regops::logsoftmax_rows")(contract.fake_rows)
    torch.library.register_fake("regops::logsoftmax_rows_grad_")(contract.fake_rows_grad)

if triton_available():
    from ..triton import logsoftmax as _triton_logsoftmax  # noqa: F401  (registers the triton ops)

ENGINE = "fused_linear"
CHUNK_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 26}  # logits per chunk: 32 MiB of float32 on the CPU


def default_chunk_rows(vocab: int, device: torch.device) -> int:
    per = CHUNK_ELEMENTS.get(device.type, 1 << 23)
    return int(max(8, min(8192, per // max(vocab, 1))))


def _logits(x, weight, rows):
    xr = x.index_select(0, rows)
    if weight is None:
        return xr  # index_select copies: the kernel may overwrite it
    return xr @ weight.t()


def _ref_logits(ref_x, ref_weight, rows, like):
    if ref_x is None:
        return None
    q = _logits(ref_x, ref_weight, rows)
    return q if q.dtype == like.dtype else q.to(like.dtype)


def _chunks(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


def _valid_rows(targets, ignore_index):
    return (targets != ignore_index).nonzero().squeeze(1)


def _scatter_rows(values, rows, n):
    out = values.new_zeros((n,))
    out.index_copy_(0, rows, values)
    return out


def _pass(impl, x, weight, targets, ref_x, ref_weight, kl_mode, ignore_index, chunk, coef_logp=None, coef_kl=None,
          need_dx=False, need_dweight=False, save_dlogp_dx=False):
    """One sweep over the valid rows. Without coefficients: statistics only. With them (length N, accumulation
    dtype): also dx (N, H) (or (N, V) for a logits head) and dweight (V, H) in the accumulation dtype.
    save_dlogp_dx: the coefficients are 1 and 0; dx is then d logp_t/d x_t per row."""
    n = x.shape[0]
    acc = acc_dtype(x.dtype)
    rows_all = _valid_rows(targets, ignore_index)
    logp = x.new_zeros((n,), dtype=acc)
    kl = x.new_zeros((n,), dtype=acc)
    ref_logp = x.new_zeros((n,), dtype=acc)
    write = coef_logp is not None or save_dlogp_dx
    dx = x.new_zeros(x.shape) if (write and (need_dx or save_dlogp_dx)) else None
    dweight = (weight.new_zeros(weight.shape, dtype=acc) if (write and need_dweight and weight is not None) else None)
    stats_op = _registry.kernel(ENGINE, impl, "stats")
    grad_op = _registry.kernel(ENGINE, impl, "grad")
    for start, end in _chunks(rows_all.numel(), chunk):
        rows = rows_all[start:end]
        z = _logits(x, weight, rows)
        y = targets.index_select(0, rows)
        q = _ref_logits(ref_x, ref_weight, rows, z)
        if not write:
            lp, rl, k = stats_op(z, y, q, kl_mode, ignore_index)
        else:
            if save_dlogp_dx:
                a = torch.ones(rows.shape, dtype=acc, device=x.device)
                b = torch.zeros_like(a)
            else:
                a, b = coef_logp.index_select(0, rows), coef_kl.index_select(0, rows)
            lp, rl, k = grad_op(z, y, q, a, b, kl_mode, ignore_index)  # z is now d(a·logp + b·kl)/dz
            if dx is not None:
                dx.index_copy_(0, rows, z @ weight if weight is not None else z)
            if dweight is not None:
                xr = x.index_select(0, rows)
                dweight.addmm_(z.t().to(acc), xr.to(acc))
        logp.index_copy_(0, rows, lp)
        kl.index_copy_(0, rows, k)
        ref_logp.index_copy_(0, rows, rl)
    return logp, kl, ref_logp, dx, dweight


def _empty(like):
    return like.new_empty((0,))


# ---- double backward: the kernels' gradients are differentiable once, and say so ----

PUBLIC = "fused_linear_preference_loss/rrpo_loss/kl_to_reference"


def _double_backward_error(impl: str) -> RuntimeError:
    label = "triton" if impl == "triton" else "compiled (cpu, cuda)"
    return RuntimeError(f"regops.{PUBLIC}: " + DOUBLE_BACKWARD.format(impl=label))


def _scale(scale, grad, like):
    """scale (0-dim, or (N,): one per row) times grad, in the accumulation dtype, rounded once to like's dtype."""
    acc = acc_dtype(like.dtype)
    s = scale.to(acc)
    return ((s[:, None] if s.dim() == 1 else s) * grad.to(acc)).to(like.dtype)


class _GradScale(torch.autograd.Function):
    """A gradient the forward computed (rows or a whole tensor) times the upstream scale, differentiable once:
    `like` (the tensor it is the gradient of) is an input so that under create_graph=True the result requires grad
    and a gradient reaching it raises. The saved gradient is a constant to autograd: a second derivative through it
    would silently miss its own derivative (a zero, or a wrong value where the scale carries a graph)."""

    @staticmethod
    def forward(ctx, scale, grad, like, impl):
        ctx.impl = impl
        return _scale(scale, grad, like)

    @staticmethod
    def backward(ctx, _grad):
        raise _double_backward_error(ctx.impl)


def _scaled_grad(scale, grad, like, impl):
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return _GradScale.apply(scale, grad, like, impl)  # create_graph=True: a double backward must raise
    # a first-order backward (or a compiled one, whose double backward AOTAutograd refuses itself)
    return _scale(scale, grad, like)


# ---- regops::fused_linear_logprobs: logp/kl per row, differentiable (the backward recomputes) ----

@torch.library.custom_op("regops::fused_linear_logprobs", mutates_args=())
def fused_linear_logprobs(x: torch.Tensor, weight: Optional[torch.Tensor], targets: torch.Tensor,
                          ref_x: Optional[torch.Tensor], ref_weight: Optional[torch.Tensor], kl_mode: int,
                          ignore_index: int, chunk_size: int, impl: str,
                          save_dlogp_dx: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    logp, kl, ref_logp, dx, _ = _pass(impl, x, weight, targets, ref_x, ref_weight, kl_mode, ignore_index, chunk_size,
                            save_dlogp_dx=save_dlogp_dx)
    return logp, kl, ref_logp, dx if dx is not None else _empty(x)


@fused_linear_logprobs.register_fake
def _(x, weight, targets, ref_x, ref_weight, kl_mode, ignore_index, chunk_size, impl, save_dlogp_dx):
    acc = acc_dtype(x.dtype)
    n = x.shape[0]
    return (x.new_empty((n,), dtype=acc), x.new_empty((n,), dtype=acc), x.new_empty((n,), dtype=acc),
            x.new_empty(x.shape) if save_dlogp_dx else x.new_empty((0,)))


@torch.library.custom_op("regops::fused_linear_logprobs_backward", mutates_args=())
def fused_linear_logprobs_backward(grad_logp: torch.Tensor, grad_kl: torch.Tensor, x: torch.Tensor,
                                   weight: Optional[torch.Tensor], targets: torch.Tensor,
                                   ref_x: Optional[torch.Tensor], ref_weight: Optional[torch.Tensor], kl_mode: int,
                                   ignore_index: int, chunk_size: int, impl: str, need_dx: bool,
                                   need_dweight: bool) -> tuple[torch.Tensor, torch.Tensor]:
    acc = acc_dtype(x.dtype)
    _, _, _, dx, dweight = _pass(impl, x, weight, targets, ref_x, ref_weight, kl_mode, ignore_index, chunk_size,
                              coef_logp=grad_logp.to(acc).contiguous(), coef_kl=grad_kl.to(acc).contiguous(),
                              need_dx=need_dx, need_dweight=need_dweight)
    return (dx if dx is not None else _empty(x),
            dweight.to(weight.dtype) if dweight is not None else _empty(x))


@fused_linear_logprobs_backward.register_fake
def _(grad_logp, grad_kl, x, weight, targets, ref_x, ref_weight, kl_mode, ignore_index, chunk_size, impl, need_dx,
      need_dweight):
    return (x.new_empty(x.shape) if need_dx else x.new_empty((0,)),
            weight.new_empty(weight.shape) if (need_dweight and weight is not None) else x.new_empty((0,)))


def _logprobs_backward_setup(ctx, inputs, output):
    ctx.impl = inputs[10]


def _logprobs_backward_backward(ctx, *grads):
    raise _double_backward_error(ctx.impl)


fused_linear_logprobs_backward.register_autograd(_logprobs_backward_backward, setup_context=_logprobs_backward_setup)


def _logprobs_setup(ctx, inputs, output):
    x, weight, targets, ref_x, ref_weight, kl_mode, ignore_index, chunk_size, impl, save_dlogp_dx = inputs
    dlogp_dx = output[3]
    ctx.save_for_backward(x, weight, targets, ref_x, ref_weight, dlogp_dx)
    ctx.args = (kl_mode, ignore_index, chunk_size, impl, save_dlogp_dx)
    ctx.mark_non_differentiable(output[2], dlogp_dx)


def _logprobs_backward(ctx, grad_logp, grad_kl, _grad_ref_logp, _grad_dlogp_dx):
    x, weight, targets, ref_x, ref_weight, dlogp_dx = ctx.saved_tensors
    kl_mode, ignore_index, chunk_size, impl, save_dlogp_dx = ctx.args
    need_dx, need_dweight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    acc = acc_dtype(x.dtype)
    if grad_logp is None:
        grad_logp = x.new_zeros((x.shape[0],), dtype=acc)
    if grad_kl is None:
        grad_kl = x.new_zeros((x.shape[0],), dtype=acc)
    dx = dweight = None
    if save_dlogp_dx and not need_dweight:
        if need_dx:
            dx = _scaled_grad(grad_logp, dlogp_dx, x, impl)
    elif need_dx or need_dweight:
        dx, dweight = torch.ops.regops.fused_linear_logprobs_backward(
            grad_logp, grad_kl, x, weight, targets, ref_x, ref_weight, kl_mode, ignore_index, chunk_size, impl,
            need_dx, need_dweight)
        dx = dx if need_dx else None
        dweight = dweight if need_dweight else None
    return dx, dweight, None, None, None, None, None, None, None, None


fused_linear_logprobs.register_autograd(_logprobs_backward, setup_context=_logprobs_setup)


# ---- regops::fused_linear_linear_loss: Σ a·logp + b·kl with the gradients computed in the forward ----

@torch.library.custom_op("regops::fused_linear_linear_loss", mutates_args=())
def fused_linear_linear_loss(x: torch.Tensor, weight: Optional[torch.Tensor], targets: torch.Tensor,
                             ref_x: Optional[torch.Tensor], ref_weight: Optional[torch.Tensor],
                             coef_logp: torch.Tensor, coef_kl: torch.Tensor, kl_mode: int, ignore_index: int,
                             chunk_size: int, impl: str, need_dx: bool, need_dweight: bool
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    acc = acc_dtype(x.dtype)
    a, b = coef_logp.to(acc).contiguous(), coef_kl.to(acc).contiguous()
    if need_dx or need_dweight:
        logp, kl, _, dx, dweight = _pass(impl, x, weight, targets, ref_x, ref_weight, kl_mode, ignore_index,
                                         chunk_size, coef_logp=a, coef_kl=b, need_dx=need_dx, need_dweight=need_dweight)
    else:
        logp, kl, _, dx, dweight = _pass(impl, x, weight, targets, ref_x, ref_weight, kl_mode, ignore_index,
                                         chunk_size)
    loss = (a * logp).sum() + (b * kl).sum()
    return (loss, logp, kl, dx if dx is not None else _empty(x),
            dweight.to(weight.dtype) if dweight is not None else _empty(x))


@fused_linear_linear_loss.register_fake
def _(x, weight, targets, ref_x, ref_weight, coef_logp, coef_kl, kl_mode, ignore_index, chunk_size, impl, need_dx,
      need_dweight):
    acc = acc_dtype(x.dtype)
    n = x.shape[0]
    return (x.new_empty((), dtype=acc), x.new_empty((n,), dtype=acc), x.new_empty((n,), dtype=acc),
            x.new_empty(x.shape) if need_dx else x.new_empty((0,)),
            weight.new_empty(weight.shape) if (need_dweight and weight is not None) else x.new_empty((0,)))


def _linear_setup(ctx, inputs, output):
    ctx.need = (inputs[-2], inputs[-1])
    ctx.impl = inputs[10]
    # x and weight only link the scaled gradients to the graph, so that a double backward reaches the raising op
    ctx.save_for_backward(output[3], output[4], inputs[0], inputs[1])
    ctx.mark_non_differentiable(output[1], output[2], output[3], output[4])


def _linear_backward(ctx, grad_loss, *_):
    dx, dweight, x, weight = ctx.saved_tensors
    need_dx, need_dweight = ctx.need
    gx = gw = None
    if grad_loss is not None:
        if need_dx and ctx.needs_input_grad[0]:
            gx = _scaled_grad(grad_loss, dx, x, ctx.impl)
        if need_dweight and ctx.needs_input_grad[1]:
            gw = _scaled_grad(grad_loss, dweight, weight, ctx.impl)
    return gx, gw, None, None, None, None, None, None, None, None, None, None, None


fused_linear_linear_loss.register_autograd(_linear_backward, setup_context=_linear_setup)
