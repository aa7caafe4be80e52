"""Triton kernels of the classification-side row losses: the schemas of ``regops::mixup_rows`` and
``regops::elr_rows`` (csrc/ops.cpp; the CPU kernels are csrc/cpu/class_rows.cpp, the CUDA ones
csrc/cuda/class_rows_kernels.cu, the per-row math csrc/include/regops/class_rows_math.h).

One program per row, striding over the classes in tiles of BLOCK:
- ``mixup_rows_kernel``: pass 1 the running (max, Σ e^{x − max}) of the non-mixed classes, pass 2 (WRITE) the
  gradient row;
- ``elr_rows_kernel``: pass 1 the row's LSE, pass 2 the five row sums, pass 3 the new buffer row and (WRITE) the
  gradient row.
float32 and bfloat16 rows accumulate in float32, float64 rows in float64. A class index outside [0, C) gives a NaN
loss (the public ops validate them). On CPU tensors the kernels run only under TRITON_INTERPRET=1.

``KERNELS`` lists the compile specs used by ``regops.triton._compile`` to build sm_90 cubins without a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _host
from .._constants import acc_dtype
from ..contracts import class_rows as contract

MAX_BLOCK = 4096
CLAMP_LOW, CLAMP_HIGH = 1e-4, 1.0 - 1e-4


@triton.jit
def _lse_merge(m, s, x_max, x_sum):
    m_new = tl.maximum(m, x_max)
    # empty partials (sum 0, max -inf) must not produce inf - inf; a NaN sum (a NaN logit) must stay NaN, so that
    # the op's finiteness check names it (a "> 0" test would drop it)
    a = tl.where(s != 0, s * tl.exp(m - m_new), 0.0)
    b = tl.where(x_sum != 0, x_sum * tl.exp(x_max - m_new), 0.0)
    return m_new, a + b


@triton.jit
def mixup_rows_kernel(z_ptr, ab_ptr, co_ptr, loss_ptr, g_ptr, C, WRITE: tl.constexpr, BLOCK: tl.constexpr):
    """z (B, C) contiguous; ab (B, 2) int64; co (B, 4), loss (B,) and g (B, C) in the accumulation dtype."""
    row = tl.program_id(0).to(tl.int64)
    acc_ty = loss_ptr.dtype.element_ty
    base = row * C
    a = tl.load(ab_ptr + 2 * row)
    b = tl.load(ab_ptr + 2 * row + 1)
    valid = (a >= 0) & (a < C) & (b >= 0) & (b < C)
    wa = tl.load(co_ptr + 4 * row).to(acc_ty)
    wb = tl.load(co_ptr + 4 * row + 1).to(acc_ty)
    ea = tl.load(co_ptr + 4 * row + 2).to(acc_ty)
    eb = tl.load(co_ptr + 4 * row + 3).to(acc_ty)
    offs = tl.arange(0, BLOCK)
    m = tl.full((), float("-inf"), acc_ty)
    s = tl.zeros((), acc_ty)
    for k0 in range(0, C, BLOCK):
        cols = k0 + offs
        mask = (cols < C) & (cols != a) & (cols != b)
        x = tl.load(z_ptr + base + cols, mask=mask, other=float("-inf")).to(acc_ty)
        x_max = tl.max(x, axis=0)
        x_sum = tl.sum(tl.where(mask, tl.exp(x - tl.where(x_max > float("-inf"), x_max, 0.0)), 0.0), axis=0)
        m, s = _lse_merge(m, s, x_max, x_sum)
    a_safe = tl.where(valid, a, 0)
    b_safe = tl.where(valid, b, 0)
    za = tl.load(z_ptr + base + a_safe).to(acc_ty)
    zb = tl.load(z_ptr + base + b_safe).to(acc_ty)
    one = tl.full((), 1.0, acc_ty)
    ma, sa = _lse_merge(m, s, za, one)
    mb, sb = _lse_merge(m, s, zb, one)
    m_all, s_all = _lse_merge(ma, sa, zb, tl.where(a == b, 0.0, one))
    lse_a = ma + tl.log(sa)
    lse_b = mb + tl.log(sb)
    lse_all = m_all + tl.log(s_all)
    loss = wa * (lse_all - za) + wb * (lse_all - zb) + ea * (lse_a - za) + eb * (lse_b - zb)
    tl.store(loss_ptr + row, tl.where(valid, loss, float("nan")))
    if WRITE:
        for k0 in range(0, C, BLOCK):
            cols = k0 + offs
            mask = cols < C
            zk = tl.load(z_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
            is_a = cols == a
            is_b = cols == b
            g = (wa + wb) * tl.exp(zk - lse_all)
            g -= tl.where(is_a, wa + ea, 0.0)
            g -= tl.where(is_b, wb + eb, 0.0)
            g += tl.where(is_a | ~is_b, ea * tl.exp(zk - lse_a), 0.0)
            g += tl.where(is_b | ~is_a, eb * tl.exp(zk - lse_b), 0.0)
            tl.store(g_ptr + base + cols, g.to(g_ptr.dtype.element_ty), mask=mask)


@triton.jit
def elr_rows_kernel(z_ptr, y_ptr, t_ptr, hp_ptr, loss_ptr, g_ptr, nt_ptr, C, WRITE: tl.constexpr,
                    BLOCK: tl.constexpr):
    """z (B, C) contiguous; y (B,) int64; t, nt, g (B, C), loss (B,) and hp = [beta, lam, clamp low, clamp
    high] in the accumulation dtype (a float argument would be float32 in a float64 kernel)."""
    row = tl.program_id(0).to(tl.int64)
    acc_ty = loss_ptr.dtype.element_ty
    beta = tl.load(hp_ptr)
    lam = tl.load(hp_ptr + 1)
    lo = tl.load(hp_ptr + 2)
    hi = tl.load(hp_ptr + 3)
    base = row * C
    y = tl.load(y_ptr + row)
    valid = (y >= 0) & (y < C)
    offs = tl.arange(0, BLOCK)
    m = tl.full((), float("-inf"), acc_ty)
    s = tl.zeros((), acc_ty)
    for k0 in range(0, C, BLOCK):
        cols = k0 + offs
        mask = cols < C
        x = tl.load(z_ptr + base + cols, mask=mask, other=float("-inf")).to(acc_ty)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.where(mask, tl.exp(x - m_new), 0.0), axis=0)
        m = m_new
    lse = m + tl.log(s)
    s_p = tl.zeros((), acc_ty)
    s_tp = tl.zeros((), acc_ty)
    s_pp = tl.zeros((), acc_ty)
    s_tg = tl.zeros((), acc_ty)
    s_pg = tl.zeros((), acc_ty)
    for k0 in range(0, C, BLOCK):
        cols = k0 + offs
        mask = cols < C
        p = tl.exp(tl.load(z_ptr + base + cols, mask=mask, other=float("-inf")).to(acc_ty) - lse)
        t = tl.load(t_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
        pc = tl.where(mask, tl.minimum(tl.maximum(p, lo), hi), 0.0)
        gp = tl.where((p >= lo) & (p <= hi) & mask, p, 0.0)
        s_p += tl.sum(pc, axis=0)
        s_tp += tl.sum(t * pc, axis=0)
        s_pp += tl.sum(pc * pc, axis=0)
        s_tg += tl.sum(t * gp, axis=0)
        s_pg += tl.sum(pc * gp, axis=0)
    mix = (1.0 - beta) / s_p
    dot = beta * s_tp + mix * s_pp
    big_a = beta * s_tg + mix * s_pg
    y_safe = tl.where(valid, y, 0)
    zy = tl.load(z_ptr + base + y_safe).to(acc_ty)
    loss = lse - zy + lam * tl.log(1.0 - dot)
    coef = lam / (1.0 - dot)
    tl.store(loss_ptr + row, tl.where(valid, loss, float("nan")))
    for k0 in range(0, C, BLOCK):
        cols = k0 + offs
        mask = cols < C
        p = tl.exp(tl.load(z_ptr + base + cols, mask=mask, other=float("-inf")).to(acc_ty) - lse)
        t = tl.load(t_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
        new_t = beta * t + mix * tl.minimum(tl.maximum(p, lo), hi)
        tl.store(nt_ptr + base + cols, new_t, mask=mask)
        if WRITE:
            g_t = tl.where((p >= lo) & (p <= hi), new_t, 0.0)
            g = p - tl.where(cols == y, 1.0, 0.0) - coef * p * (g_t - big_a)
            tl.store(g_ptr + base + cols, g.to(g_ptr.dtype.element_ty), mask=mask)


def _block(C: int) -> int:
    return min(MAX_BLOCK, triton.next_power_of_2(max(int(C), 16)))


def _warps(block: int) -> int:
    return 8 if block >= 2048 else 4


def _mixup_spec(elem, acc, write, block, variant):
    constexprs = {"WRITE": write, "BLOCK": block}
    return {"fn": mixup_rows_kernel,
            "signature": {"z_ptr": elem, "ab_ptr": "*i64", "co_ptr": acc, "loss_ptr": acc, "g_ptr": acc, "C": "i32",
                          **{k: "constexpr" for k in constexprs}},
            "constexprs": constexprs, "num_warps": _warps(block), "variant": variant}


def _elr_spec(elem, acc, write, block, variant):
    constexprs = {"WRITE": write, "BLOCK": block}
    return {"fn": elr_rows_kernel,
            "signature": {"z_ptr": elem, "y_ptr": "*i64", "t_ptr": acc, "hp_ptr": acc, "loss_ptr": acc,
                          "g_ptr": acc, "nt_ptr": acc, "C": "i32",
                          **{k: "constexpr" for k in constexprs}},
            "constexprs": constexprs, "num_warps": _warps(block), "variant": variant}


KERNELS = [
    _mixup_spec("*fp32", "*fp32", True, 1024, None),
    _mixup_spec("*fp32", "*fp32", False, MAX_BLOCK, "loss-only"),
    _mixup_spec("*bf16", "*fp32", True, MAX_BLOCK, "bf16"),
    _mixup_spec("*fp64", "*fp64", True, 128, "fp64"),
    _elr_spec("*fp32", "*fp32", True, 1024, None),
    _elr_spec("*fp32", "*fp32", False, MAX_BLOCK, "loss-only"),
    _elr_spec("*bf16", "*fp32", True, MAX_BLOCK, "bf16"),
    _elr_spec("*fp64", "*fp64", True, 128, "fp64"),
]


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op("regops::mixup_rows_triton", mutates_args=())
def mixup_rows_triton(logits: torch.Tensor, classes: torch.Tensor, coeffs: torch.Tensor,
                      want_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    contract.check_mixup_rows(logits, classes, coeffs, None)
    B, C = logits.shape
    acc = acc_dtype(logits.dtype)
    loss = logits.new_empty((B,), dtype=acc)
    grad = logits.new_empty((B if want_grad else 0, C), dtype=acc)
    if B == 0:
        return loss, grad
    _host.check_device("regops.mixup_rows", logits, mixup_rows_kernel)
    z = logits.contiguous()
    block = _block(C)
    with _host.device_guard(z):
        mixup_rows_kernel[(B,)](z, classes.contiguous(), coeffs.contiguous(), loss, grad if want_grad else loss, C,
                                WRITE=want_grad, BLOCK=block, num_warps=_warps(block))
    return loss, grad


mixup_rows_triton.register_fake(contract.fake_mixup_rows)


@torch.library.custom_op("regops::elr_rows_triton", mutates_args=())
def elr_rows_triton(logits: torch.Tensor, targets: torch.Tensor, buffer_rows: torch.Tensor, beta: float, lam: float,
                    want_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    contract.check_elr_rows(logits, targets, buffer_rows, beta, lam, None)
    B, C = logits.shape
    acc = acc_dtype(logits.dtype)
    loss = logits.new_empty((B,), dtype=acc)
    grad = logits.new_empty((B if want_grad else 0, C), dtype=acc)
    new_rows = logits.new_empty((B, C), dtype=acc)
    if B == 0:
        return loss, grad, new_rows
    _host.check_device("regops.elr_rows", logits, elr_rows_kernel)
    z = logits.contiguous()
    block = _block(C)
    with _host.device_guard(z):
        hp = torch.tensor([beta, lam, CLAMP_LOW, CLAMP_HIGH], dtype=acc).to(z.device)
        elr_rows_kernel[(B,)](z, targets.contiguous(), buffer_rows.contiguous(), hp, loss, grad if want_grad else loss,
                              new_rows, C, WRITE=want_grad, BLOCK=block, num_warps=_warps(block))
    return loss, grad, new_rows


elr_rows_triton.register_fake(contract.fake_elr_rows)
