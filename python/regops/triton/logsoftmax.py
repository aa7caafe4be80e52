"""Triton kernel of the fused log-softmax rows: the schemas of ``regops::logsoftmax_rows`` and
``regops::logsoftmax_rows_grad_`` (csrc/ops.cpp; the CPU kernel is csrc/cpu/logsoftmax_rows.cpp, the CUDA one
csrc/cuda/logsoftmax_rows_kernels.cu, the per-element math csrc/include/regops/logsoftmax_math.h).

``logsoftmax_rows_kernel``: one program per row, striding over the vocabulary in tiles of BLOCK:
pass 1 keeps the running (max, Σ e^{x − max}) of the row (and of the reference row), pass 2 sums the KL terms,
pass 3 (WRITE) overwrites the row with d(gl·logp + gk·KL)/dz. float32 and bfloat16 rows accumulate in float32,
float64 rows in float64. An ignored row (or a target outside [0, V)) gives zeros. On CPU tensors the kernel runs
only under TRITON_INTERPRET=1, set before triton is first imported.

``KERNELS`` lists the compile specs used by ``regops.triton._compile`` to build sm_90 cubins without a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _host
from .._constants import acc_dtype
from ..contracts import logsoftmax as contract

OP = "logsoftmax_rows"
MAX_BLOCK = 4096


@triton.jit
def logsoftmax_rows_kernel(z_ptr, r_ptr, y_ptr, gl_ptr, gk_ptr, out_ptr, logp_ptr, ref_ptr, kl_ptr, V, ignore_index,
                           KL_MODE: tl.constexpr, WRITE: tl.constexpr, BLOCK: tl.constexpr):
    """z, r, out (rows, V) contiguous; y (rows,) int64; gl, gk, logp, ref (the reference's logp), kl (rows,) in the
    accumulation dtype."""
    row = tl.program_id(0).to(tl.int64)
    acc_ty = logp_ptr.dtype.element_ty
    base = row * V
    y = tl.load(y_ptr + row)
    valid = (y != ignore_index) & (y >= 0) & (y < V)
    offs = tl.arange(0, BLOCK)
    # pass 1: running max and sum of exponentials
    m_z = tl.full((), float("-inf"), acc_ty)
    s_z = tl.zeros((), acc_ty)
    m_r = tl.full((), float("-inf"), acc_ty)
    s_r = tl.zeros((), acc_ty)
    for v0 in range(0, V, BLOCK):
        cols = v0 + offs
        mask = cols < V
        x = tl.load(z_ptr + base + cols, mask=mask, other=float("-inf")).to(acc_ty)
        m_new = tl.maximum(m_z, tl.max(x, axis=0))
        s_z = s_z * tl.exp(m_z - m_new) + tl.sum(tl.where(mask, tl.exp(x - m_new), 0.0), axis=0)
        m_z = m_new
        if KL_MODE != 0:
            q = tl.load(r_ptr + base + cols, mask=mask, other=float("-inf")).to(acc_ty)
            m_new_r = tl.maximum(m_r, tl.max(q, axis=0))
            s_r = s_r * tl.exp(m_r - m_new_r) + tl.sum(tl.where(mask, tl.exp(q - m_new_r), 0.0), axis=0)
            m_r = m_new_r
    lse_z = m_z + tl.log(s_z)
    lse_r = tl.zeros((), acc_ty)
    if KL_MODE != 0:
        lse_r = m_r + tl.log(s_r)
    # pass 2: the KL sum
    kl = tl.zeros((), acc_ty)
    if KL_MODE != 0:
        for v0 in range(0, V, BLOCK):
            cols = v0 + offs
            mask = cols < V
            log_p = tl.load(z_ptr + base + cols, mask=mask, other=0.0).to(acc_ty) - lse_z
            log_q = tl.load(r_ptr + base + cols, mask=mask, other=0.0).to(acc_ty) - lse_r
            if KL_MODE == 1:
                term = tl.exp(log_q) * (log_q - log_p)
            else:
                term = tl.exp(log_p) * (log_p - log_q)
            kl += tl.sum(tl.where(mask, term, 0.0), axis=0)
    y_safe = tl.where(valid, y, 0)
    zy = tl.load(z_ptr + base + y_safe).to(acc_ty)  # read before pass 3 overwrites the row
    ref_y = tl.zeros((), acc_ty)
    if KL_MODE != 0:
        ref_y = tl.load(r_ptr + base + y_safe).to(acc_ty) - lse_r
    # pass 3: the gradient, in place
    if WRITE:
        gl = tl.load(gl_ptr + row)
        gk = tl.load(gk_ptr + row)
        for v0 in range(0, V, BLOCK):
            cols = v0 + offs
            mask = cols < V
            log_p = tl.load(z_ptr + base + cols, mask=mask, other=0.0).to(acc_ty) - lse_z
            p = tl.exp(log_p)
            g = gl * (tl.where(cols == y, 1.0, 0.0) - p)
            if KL_MODE != 0:
                log_q = tl.load(r_ptr + base + cols, mask=mask, other=0.0).to(acc_ty) - lse_r
                if KL_MODE == 1:
                    g += gk * (p - tl.exp(log_q))
                else:
                    g += gk * p * (log_p - log_q - kl)
            g = tl.where(valid, g, 0.0)
            tl.store(out_ptr + base + cols, g.to(out_ptr.dtype.element_ty), mask=mask)
    zero = tl.zeros((), acc_ty)
    tl.store(logp_ptr + row, tl.where(valid, zy - lse_z, zero))
    tl.store(ref_ptr + row, tl.where(valid, ref_y, zero))
    tl.store(kl_ptr + row, tl.where(valid, kl, zero))


def _block(V: int) -> int:
    return min(MAX_BLOCK, triton.next_power_of_2(max(int(V), 16)))


def _spec(elem, acc, kl_mode, write, block, variant):
    ptr = {"z_ptr": elem, "r_ptr": elem, "y_ptr": "*i64", "gl_ptr": acc, "gk_ptr": acc, "out_ptr": elem,
           "logp_ptr": acc, "ref_ptr": acc, "kl_ptr": acc}
    constexprs = {"KL_MODE": kl_mode, "WRITE": write, "BLOCK": block}
    return {"fn": logsoftmax_rows_kernel,
            "signature": {**ptr, "V": "i32", "ignore_index": "i64", **{k: "constexpr" for k in constexprs}},
            "constexprs": constexprs, "num_warps": 8 if block >= 2048 else 4, "variant": variant}


KERNELS = [
    _spec("*fp32", "*fp32", 0, True, MAX_BLOCK, None),
    _spec("*fp32", "*fp32", 0, False, MAX_BLOCK, "stats"),
    _spec("*bf16", "*fp32", 0, True, MAX_BLOCK, "bf16"),
    _spec("*bf16", "*fp32", 1, True, MAX_BLOCK, "bf16-forward-kl"),
    _spec("*fp32", "*fp32", 1, True, MAX_BLOCK, "forward-kl"),
    _spec("*fp32", "*fp32", 2, True, MAX_BLOCK, "reverse-kl"),
    _spec("*fp64", "*fp64", 1, True, MAX_BLOCK, "fp64"),
    _spec("*fp32", "*fp32", 2, False, 16, "small"),
]


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
def _launch(logits, targets, ref_logits, grad_logp, grad_kl, kl_mode, ignore_index, out):
    n, V = logits.shape
    acc = acc_dtype(logits.dtype)
    logp, ref_logp, kl = (logits.new_empty((n,), dtype=acc) for _ in range(3))
    if n == 0:
        return logp, ref_logp, kl
    _host.check_device(f"regops.{OP}", logits, logsoftmax_rows_kernel)
    z = logits.contiguous()
    y = targets.contiguous()
    r = ref_logits.contiguous() if ref_logits is not None else z
    gl = grad_logp.contiguous() if grad_logp is not None else logp
    gk = grad_kl.contiguous() if grad_kl is not None else logp
    block = _block(V)
    with _host.device_guard(z):
        dst = out if out is not None else z
        logsoftmax_rows_kernel[(n,)](z, r, y, gl, gk, dst, logp, ref_logp, kl, V, ignore_index,
                                     KL_MODE=kl_mode, WRITE=out is not None, BLOCK=block,
                                     num_warps=8 if block >= 2048 else 4)
    return logp, ref_logp, kl


@torch.library.custom_op("regops::logsoftmax_rows_triton", mutates_args=())
def logsoftmax_rows_triton(logits: torch.Tensor, targets: torch.Tensor, ref_logits: torch.Tensor | None,
                           kl_mode: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    contract.check_rows(logits, targets, ref_logits, kl_mode, None)
    return _launch(logits, targets, ref_logits, None, None, kl_mode, ignore_index, None)


logsoftmax_rows_triton.register_fake(contract.fake_rows)


@torch.library.custom_op("regops::logsoftmax_rows_grad_triton", mutates_args=("logits",))
def logsoftmax_rows_grad_triton(logits: torch.Tensor, targets: torch.Tensor, ref_logits: torch.Tensor | None,
                                grad_logp: torch.Tensor, grad_kl: torch.Tensor, kl_mode: int,
                                ignore_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    contract.check_rows_grad(logits, targets, ref_logits, grad_logp, grad_kl, kl_mode, None)
    out = logits if logits.is_contiguous() else torch.empty_like(logits, memory_format=torch.contiguous_format)
    res = _launch(logits, targets, ref_logits, grad_logp, grad_kl, kl_mode, ignore_index, out)
    if out is not logits:
        logits.copy_(out)
    return res


logsoftmax_rows_grad_triton.register_fake(contract.fake_rows_grad)
