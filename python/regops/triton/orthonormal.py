"""Triton kernels for the orthonormality penalty (canonical "rows" form).

For X of shape (L, p, q) (any strides: the "cols" side arrives as a transposed view) and
R_l = X_l X_lᵀ − I:

- ``torch.ops.regops.orthonormal_penalty_fwd_triton(mats, squared) -> (values, residual)``:
  residual is a contiguous (L, p, p) tensor in the accumulation dtype (float32 for bfloat16,
  else the input dtype), values is (L,) in the input dtype: Σ R² or its square root.
- ``torch.ops.regops.orthonormal_penalty_bwd_triton(grad_values, mats, residual, squared)``:
  coef_l · R_l X_l with coef_l = 4 g_l (squared) or 2 g_l / ‖R_l‖_F (0 where ‖R_l‖_F = 0),
  returned with the shape and strides of ``mats``.

The fwd op has autograd registered (its backward calls the bwd op); residual is marked
non-differentiable. On CPU tensors the kernels run only under TRITON_INTERPRET=1, which must be
set before triton is first imported.

``KERNELS`` lists every @triton.jit kernel of this module with the specs that
``regops.triton._compile`` uses to compile it to a cubin without a GPU.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import _host
from ..contracts import orthonormal as contract
from .._constants import acc_dtype

_OP = "regops.orthonormal_penalty"


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def orthonormal_fwd_kernel(
    x_ptr, res_ptr, part_ptr,
    P, Q,
    stride_xl, stride_xp, stride_xq,
    BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, ALLOW_TF32: tl.constexpr,
):
    """One (BLOCK x BLOCK) tile (ti, tj), tj <= ti, of R_l = X_l X_lᵀ − I.

    Grid (L, T, T) with T = cdiv(P, BLOCK). Writes the tile and its mirror into the contiguous
    (L, P, P) residual and the tile's sum of squares (doubled off the diagonal, which counts the
    mirror) into part[l, ti * T + tj]; upper tiles return at once and leave their zero partial.
    """
    pid_l = tl.program_id(0).to(tl.int64)
    ti = tl.program_id(1)
    tj = tl.program_id(2)
    if tj > ti:
        return
    n_tiles = tl.num_programs(1)
    acc_ty = res_ptr.dtype.element_ty

    rows_i = ti * BLOCK + tl.arange(0, BLOCK)
    rows_j = tj * BLOCK + tl.arange(0, BLOCK)
    ks = tl.arange(0, BLOCK_K)
    mask_i = rows_i < P
    mask_j = rows_j < P
    x_base = x_ptr + pid_l * stride_xl

    acc = tl.zeros((BLOCK, BLOCK), dtype=acc_ty)
    for k0 in range(0, Q, BLOCK_K):
        kk = k0 + ks
        mask_k = kk < Q
        # a = X[rows_i, kk] (BLOCK x BLOCK_K), b = X[rows_j, kk]ᵀ (BLOCK_K x BLOCK)
        # Upcast to the accumulation dtype (a no-op for fp32/fp64): bf16 values are exact in tf32,
        # so the host picks the tf32 dot for bf16 (tensor cores, exact products, fp32 sums). It also
        # sidesteps the interpreter, whose dot multiplies bf16 operands as raw uint16 bit patterns.
        a = tl.load(x_base + rows_i[:, None] * stride_xp + kk[None, :] * stride_xq,
                    mask=mask_i[:, None] & mask_k[None, :], other=0.0).to(acc_ty)
        b = tl.load(x_base + kk[:, None] * stride_xq + rows_j[None, :] * stride_xp,
                    mask=mask_k[:, None] & mask_j[None, :], other=0.0).to(acc_ty)
        if ALLOW_TF32:
            acc = tl.dot(a, b, acc, input_precision="tf32")
        else:
            acc = tl.dot(a, b, acc, input_precision="ieee")

    # Out-of-range entries are exactly 0 (masked loads), and so stay after this masked identity.
    eye = (rows_i[:, None] == rows_j[None, :]) & mask_i[:, None]
    acc = acc - eye.to(acc_ty)

    r_base = res_ptr + pid_l * P * P
    m2 = mask_i[:, None] & mask_j[None, :]
    tl.store(r_base + rows_i[:, None] * P + rows_j[None, :], acc, mask=m2)
    # Mirror (skipped on diagonal tiles, whose own store already covers both halves).
    tl.store(r_base + rows_j[None, :] * P + rows_i[:, None], acc, mask=m2 & (ti != tj))

    sq = tl.sum(tl.sum(acc * acc, axis=1), axis=0)
    if ti != tj:
        sq = sq * 2.0
    tl.store(part_ptr + pid_l * n_tiles * n_tiles + ti * n_tiles + tj, sq)


@triton.jit
def orthonormal_bwd_kernel(
    coef_ptr, res_ptr, x_ptr, out_ptr,
    P, Q,
    stride_xl, stride_xp, stride_xq,
    stride_ol, stride_op, stride_oq,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, ALLOW_TF32: tl.constexpr,
):
    """out[l, rows, cols] = coef[l] · Σ_k R[l, rows, k] X[l, k, cols].

    Grid (L, cdiv(P, BLOCK_P), cdiv(Q, BLOCK_Q)); R is contiguous (L, P, P) in the accumulation
    dtype, X and out have arbitrary strides; X is upcast to the accumulation dtype.
    """
    pid_l = tl.program_id(0).to(tl.int64)
    pi = tl.program_id(1)
    qi = tl.program_id(2)
    acc_ty = res_ptr.dtype.element_ty

    rows = pi * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = qi * BLOCK_Q + tl.arange(0, BLOCK_Q)
    ks = tl.arange(0, BLOCK_K)
    mask_r = rows < P
    mask_c = cols < Q
    r_base = res_ptr + pid_l * P * P
    x_base = x_ptr + pid_l * stride_xl

    acc = tl.zeros((BLOCK_P, BLOCK_Q), dtype=acc_ty)
    for k0 in range(0, P, BLOCK_K):
        kk = k0 + ks
        mask_k = kk < P
        r = tl.load(r_base + rows[:, None] * P + kk[None, :],
                    mask=mask_r[:, None] & mask_k[None, :], other=0.0)
        x = tl.load(x_base + kk[:, None] * stride_xp + cols[None, :] * stride_xq,
                    mask=mask_k[:, None] & mask_c[None, :], other=0.0).to(acc_ty)
        if ALLOW_TF32:
            acc = tl.dot(r, x, acc, input_precision="tf32")
        else:
            acc = tl.dot(r, x, acc, input_precision="ieee")

    c = tl.load(coef_ptr + pid_l)
    out = (acc * c).to(out_ptr.dtype.element_ty)
    o_base = out_ptr + pid_l * stride_ol
    tl.store(o_base + rows[:, None] * stride_op + cols[None, :] * stride_oq, out,
             mask=mask_r[:, None] & mask_c[None, :])


# Launch configs, shared by the host code and the compile specs below.
def _pow2_clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _num_warps(tile_elems: int) -> int:
    # 8 warps keep a 64x64 tile's registers well below 255 (4 warps reach 255 on the IEEE fp32 dot).
    return 8 if tile_elems >= 4096 else 4 if tile_elems >= 1024 else 2


def _fwd_config(fp64: bool, p: int, q: int):
    block = _pow2_clamp(p, 16, 32 if fp64 else 64)
    block_k = _pow2_clamp(q, 16, 16 if fp64 else 32)
    return block, block_k, _num_warps(block * block)


def _bwd_config(fp64: bool, p: int, q: int):
    big = 32 if fp64 else 64
    bp, bq = _pow2_clamp(p, 16, big), _pow2_clamp(q, 16, big)
    bk = _pow2_clamp(p, 16, 16 if fp64 else 32)
    return bp, bq, bk, _num_warps(bp * bq)


# Compile specs for regops.triton._compile: one dict per cubin. Keys: "fn" (the jit function),
# "signature" (every argument name -> triton type string, "constexpr" for constexprs),
# "constexprs" (name -> value), "num_warps", and "variant" (None for the primary spec, whose
# result key is the bare kernel name; else the key is "<name>[<variant>]").
def _fwd_spec(ptr_ty, acc_ptr_ty, p, q, tf32, variant):
    block, block_k, num_warps = _fwd_config(acc_ptr_ty == "*fp64", p, q)
    return {
        "fn": orthonormal_fwd_kernel,
        "signature": {
            "x_ptr": ptr_ty, "res_ptr": acc_ptr_ty, "part_ptr": acc_ptr_ty,
            "P": "i32", "Q": "i32",
            "stride_xl": "i64", "stride_xp": "i32", "stride_xq": "i32",
            "BLOCK": "constexpr", "BLOCK_K": "constexpr", "ALLOW_TF32": "constexpr",
        },
        "constexprs": {"BLOCK": block, "BLOCK_K": block_k, "ALLOW_TF32": tf32},
        "num_warps": num_warps,
        "variant": variant,
    }


def _bwd_spec(ptr_ty, acc_ptr_ty, p, q, tf32, variant):
    bp, bq, bk, num_warps = _bwd_config(acc_ptr_ty == "*fp64", p, q)
    return {
        "fn": orthonormal_bwd_kernel,
        "signature": {
            "coef_ptr": acc_ptr_ty, "res_ptr": acc_ptr_ty, "x_ptr": ptr_ty, "out_ptr": ptr_ty,
            "P": "i32", "Q": "i32",
            "stride_xl": "i64", "stride_xp": "i32", "stride_xq": "i32",
            "stride_ol": "i64", "stride_op": "i32", "stride_oq": "i32",
            "BLOCK_P": "constexpr", "BLOCK_Q": "constexpr", "BLOCK_K": "constexpr",
            "ALLOW_TF32": "constexpr",
        },
        "constexprs": {"BLOCK_P": bp, "BLOCK_Q": bq, "BLOCK_K": bk, "ALLOW_TF32": tf32},
        "num_warps": num_warps,
        "variant": variant,
    }


# (p, q) pick the block sizes the host would use for that shape: 256x256 gives the largest tiles,
# 8x8 the smallest (16x16, 2 warps).
KERNELS = [
    _fwd_spec("*fp32", "*fp32", 256, 256, False, None),
    _fwd_spec("*fp32", "*fp32", 256, 256, True, "fp32-tf32"),
    _fwd_spec("*fp64", "*fp64", 256, 256, False, "fp64"),
    _fwd_spec("*bf16", "*fp32", 256, 256, True, "bf16"),
    _fwd_spec("*fp32", "*fp32", 8, 8, False, "fp32-small"),
    _fwd_spec("*fp64", "*fp64", 8, 8, False, "fp64-small"),
    _bwd_spec("*fp32", "*fp32", 256, 256, False, None),
    _bwd_spec("*fp32", "*fp32", 256, 256, True, "fp32-tf32"),
    _bwd_spec("*fp64", "*fp64", 256, 256, False, "fp64"),
    _bwd_spec("*bf16", "*fp32", 256, 256, True, "bf16"),
    _bwd_spec("*fp32", "*fp32", 8, 8, False, "fp32-small"),
    _bwd_spec("*fp64", "*fp64", 8, 8, False, "fp64-small"),
]


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
def _check_device(t: torch.Tensor) -> None:
    _host.check_device(_OP, t, orthonormal_fwd_kernel)


_device_guard = _host.device_guard


def _allow_tf32(mats: torch.Tensor) -> bool:
    """The kernels' ALLOW_TF32 constexpr (their dots always run on operands upcast to the acc dtype).

    float32: torch.backends.cuda.matmul.allow_tf32 on CUDA tensors, else IEEE fp32.
    bfloat16: always tf32. In the forward every operand is a bf16 value, exact in tf32, so only the
    fp32 summation order differs from an IEEE dot; in the backward the fp32 residual is rounded to
    tf32 (relative 2^-11), below the bf16 rounding of the returned gradient (2^-9).
    float64: never (IEEE fp64).
    """
    if mats.dtype == torch.bfloat16:
        return True
    return bool(mats.is_cuda and mats.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32)


def _check_finite(values: torch.Tensor) -> None:
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        l = int((~finite).nonzero()[0, 0])
        raise ValueError(f"{_OP}: mats: expected finite values, got a non-finite penalty for matrix {l} "
                         "(the input holds NaN/Inf or overflows)")


@torch.library.custom_op("regops::orthonormal_penalty_fwd_triton", mutates_args=())
def orthonormal_penalty_fwd_triton(mats: torch.Tensor, squared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    contract.check_fwd(mats, None)
    _check_device(mats)
    L, p, q = mats.shape
    acc = acc_dtype(mats.dtype)
    residual = torch.empty((L, p, p), dtype=acc, device=mats.device)
    if L == 0 or p == 0:
        return torch.zeros((L,), dtype=mats.dtype, device=mats.device), residual
    block, block_k, num_warps = _fwd_config(acc == torch.float64, p, q)
    n_tiles = triton.cdiv(p, block)
    partials = torch.zeros((L, n_tiles * n_tiles), dtype=acc, device=mats.device)
    with _device_guard(mats):
        orthonormal_fwd_kernel[(L, n_tiles, n_tiles)](
            mats, residual, partials, p, q,
            mats.stride(0), mats.stride(1), mats.stride(2),
            BLOCK=block, BLOCK_K=block_k, ALLOW_TF32=_allow_tf32(mats), num_warps=num_warps,
        )
    sumsq = partials.sum(dim=1)
    values = (sumsq if squared else sumsq.sqrt()).to(mats.dtype)
    if mats.device.type == "cpu" or os.environ.get("REGOPS_CHECK_FINITE", "0") == "1":
        _check_finite(values)
    return values, residual


orthonormal_penalty_fwd_triton.register_fake(contract.fake_fwd)


@torch.library.custom_op("regops::orthonormal_penalty_bwd_triton", mutates_args=())
def orthonormal_penalty_bwd_triton(grad_values: torch.Tensor, mats: torch.Tensor, residual: torch.Tensor,
                                   squared: bool) -> torch.Tensor:
    contract.check_bwd(grad_values, mats, residual, None)
    _check_device(mats)
    L, p, q = mats.shape
    acc = acc_dtype(mats.dtype)
    out = torch.empty_like(mats)
    if out.numel() == 0:
        return out
    residual = residual.contiguous()
    g = grad_values.to(acc)
    if squared:
        coef = 4.0 * g
    else:
        sumsq = residual.square().sum(dim=(1, 2))
        pos = sumsq > 0
        coef = torch.where(pos, 2.0 * g / torch.where(pos, sumsq, torch.ones_like(sumsq)).sqrt(),
                           torch.zeros_like(sumsq))
    coef = coef.contiguous()
    bp, bq, bk, num_warps = _bwd_config(acc == torch.float64, p, q)
    with _device_guard(mats):
        orthonormal_bwd_kernel[(L, triton.cdiv(p, bp), triton.cdiv(q, bq))](
            coef, residual, mats, out, p, q,
            mats.stride(0), mats.stride(1), mats.stride(2),
            out.stride(0), out.stride(1), out.stride(2),
            BLOCK_P=bp, BLOCK_Q=bq, BLOCK_K=bk, ALLOW_TF32=_allow_tf32(mats), num_warps=num_warps,
        )
    return out


orthonormal_penalty_bwd_triton.register_fake(contract.fake_bwd)


# Autograd for these ops is registered in regops/ops/orthonormal.py, shared with the compiled ops.

