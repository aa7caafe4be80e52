"""Triton kernels of the batched spectral norms by power iteration (regops.spectral_norm_penalty).

The math is ``csrc/include/regops/spectral_math.h``'s; the semantics are the CPU kernel's (csrc/cpu/spectral.cpp).
Two custom ops, the schemas of the compiled ``spectral_power`` / ``spectral_outer``:

- ``torch.ops.regops.spectral_power_triton(weights, u, v, n_power_iterations, eps) -> (sigma, u_out, v_out)``:
  n_power_iterations steps of a = W v, u = a / max(|a|, eps), t = Wᵀ u, v = t / max(|t|, eps), then σ = t · v;
  σ (L,) and the new u, v in the accumulation dtype (float32 for float32/bfloat16/float16, float64 for float64).
  u is the matrices' u_l one after the other (Σ h_l,), v likewise (Σ w_l,).
- ``torch.ops.regops.spectral_outer_triton(grad_sigmas, u, v, weights) -> grads``: grad_sigmas[l] · u_l v_lᵀ, in
  W_l's dtype and shape, contiguous.

Four kernels, each one launch for the whole list (the contract gives the list one dtype), so a power call is
2·n_power_iterations + 1 launches whatever the number of matrices:

- ``spectral_rows_kernel``: a program owns ROW_BLOCK rows of one matrix, a = W x, looping over the columns. x is
  the raw v on the first step, else the previous step's t, whose norm the program sums on the way (it reads all of
  t anyway) and applies to a: v = t / max(|t|, eps) is never stored between steps.
- ``spectral_cols_kernel``: a program owns COL_BLOCK columns of one matrix, t = Wᵀ u, looping over the rows; it sums
  |a|² on the way (it reads all of a) and scales t by 1 / max(|a|, eps), so u is not stored either.
- ``spectral_finish_kernel``: a program per matrix normalizes the last a and t in place into u and v and writes
  σ = |t|² / max(|t|, eps) (= t · v).
- ``spectral_outer_kernel``: a program owns ROW_BLOCK rows of one gradient, g · u_i · v_j.

a and t live in the output tensors u_out / v_out (v_out starts as a copy of v); the table points at each
matrix's slice of them. The host builds one int64 table
for the call (one host-to-device copy):

    [matrix ptrs (L), u ptrs (L), v ptrs (L), rows (L), cols (L), first row program (L), first column program (L),
     eps (1, float64 bits), matrix of row program (NR), matrix of column program (NC)]

where the matrix pointers are the weights' (power) or the gradients' (outer), and the data pointers are int64
addresses cast with ``.to(tl.pointer_type(...))`` (as in triton/repulsion.py; under TRITON_INTERPRET=1 an address
is a host address). Every output element is reduced in a fixed order (no atomics), so results are deterministic.
bfloat16 gradients are rounded to nearest even on the bits (the interpreter's own float32 -> bfloat16 cast
truncates).

``KERNELS`` lists the compile specs used by ``regops.triton._compile`` to build sm_90 cubins.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _host
from ._jit import _cast_rn
from .._constants import acc_dtype
from ..contracts import spectral as contract

ROW_BLOCK = 16   # rows per program of W v and of the gradient
ROW_CHUNK = 32   # rows per step of the Wᵀ u loop
COL_BLOCK = 64   # columns per program of Wᵀ u
COL_CHUNK = 128  # columns per step of the W v and gradient loops
FINISH_BLOCK = 1024
NUM_WARPS = 4
_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64, torch.bfloat16: tl.bfloat16,
             torch.float16: tl.float16}
_SLOTS = 7  # per-matrix columns of the table before the eps entry


@triton.jit
def _inv_norm(sumsq, eps, ACC: tl.constexpr):
    """1 / max(sqrt(sumsq), eps), F.normalize's factor, IEEE-rounded (tl.sqrt and / are approximate in fp32)."""
    if ACC == tl.float64:
        inv = 1.0 / tl.maximum(tl.sqrt(sumsq), eps)
    else:
        inv = tl.math.div_rn(1.0, tl.maximum(tl.sqrt_rn(sumsq), eps))
    return inv


@triton.jit
def _load_eps(tab_ptr, L, ACC: tl.constexpr):
    return tl.load(tab_ptr + 7 * L).to(tl.float64, bitcast=True).to(ACC)


@triton.jit
def spectral_rows_kernel(tab_ptr, L, map_off, scale_x,
                         DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """a = W x for BLOCK_R rows (module docstring); x = t / max(|t|, eps) when scale_x, else x = t as stored."""
    pid = tl.program_id(0)
    m = tl.load(tab_ptr + map_off + pid)
    h = tl.load(tab_ptr + 3 * L + m)
    w = tl.load(tab_ptr + 4 * L + m)
    blk = pid - tl.load(tab_ptr + 5 * L + m)
    w_p = tl.load(tab_ptr + m).to(tl.pointer_type(DTYPE))
    a_p = tl.load(tab_ptr + L + m).to(tl.pointer_type(ACC))
    t_p = tl.load(tab_ptr + 2 * L + m).to(tl.pointer_type(ACC))
    rows = blk * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    rmask = rows < h
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC)
    sumsq = tl.zeros((BLOCK_C,), dtype=ACC)
    for c0 in range(0, w, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        cmask = cols < w
        x = tl.load(t_p + cols, mask=cmask, other=0.0)
        sumsq += x * x
        tile = tl.load(w_p + rows[:, None] * w + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
        acc += tile.to(ACC) * x[None, :]
    a = tl.sum(acc, axis=1)
    inv = _inv_norm(tl.sum(sumsq, axis=0), _load_eps(tab_ptr, L, ACC), ACC)
    a = tl.where(scale_x != 0, a * inv, a)
    tl.store(a_p + rows, a, mask=rmask)


@triton.jit
def spectral_cols_kernel(tab_ptr, L, map_off,
                         DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """t = Wᵀ u for BLOCK_C columns, u = a / max(|a|, eps) (module docstring)."""
    pid = tl.program_id(0)
    m = tl.load(tab_ptr + map_off + pid)
    h = tl.load(tab_ptr + 3 * L + m)
    w = tl.load(tab_ptr + 4 * L + m)
    blk = pid - tl.load(tab_ptr + 6 * L + m)
    w_p = tl.load(tab_ptr + m).to(tl.pointer_type(DTYPE))
    a_p = tl.load(tab_ptr + L + m).to(tl.pointer_type(ACC))
    t_p = tl.load(tab_ptr + 2 * L + m).to(tl.pointer_type(ACC))
    cols = blk * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    cmask = cols < w
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC)
    sumsq = tl.zeros((BLOCK_R,), dtype=ACC)
    for r0 in range(0, h, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        rmask = rows < h
        a = tl.load(a_p + rows, mask=rmask, other=0.0)
        sumsq += a * a
        tile = tl.load(w_p + rows[:, None] * w + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
        acc += tile.to(ACC) * a[:, None]
    inv = _inv_norm(tl.sum(sumsq, axis=0), _load_eps(tab_ptr, L, ACC), ACC)
    tl.store(t_p + cols, tl.sum(acc, axis=0) * inv, mask=cmask)


@triton.jit
def _normalize_in_place(x_p, n, eps, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """x /= max(|x|, eps) for one vector of n; returns |x|² (before) and the factor."""
    sumsq = tl.zeros((BLOCK,), dtype=ACC)
    for k0 in range(0, n, BLOCK):
        offs = k0 + tl.arange(0, BLOCK).to(tl.int64)
        x = tl.load(x_p + offs, mask=offs < n, other=0.0)
        sumsq += x * x
    ss = tl.sum(sumsq, axis=0)
    inv = _inv_norm(ss, eps, ACC)
    for k0 in range(0, n, BLOCK):
        offs = k0 + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < n
        tl.store(x_p + offs, tl.load(x_p + offs, mask=mask, other=0.0) * inv, mask=mask)
    return ss, inv


@triton.jit
def spectral_finish_kernel(tab_ptr, sigma_ptr, L, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Matrix program_id: u = a / max(|a|, eps), v = t / max(|t|, eps) in place, σ = |t|² / max(|t|, eps)."""
    m = tl.program_id(0)
    h = tl.load(tab_ptr + 3 * L + m)
    w = tl.load(tab_ptr + 4 * L + m)
    a_p = tl.load(tab_ptr + L + m).to(tl.pointer_type(ACC))
    t_p = tl.load(tab_ptr + 2 * L + m).to(tl.pointer_type(ACC))
    eps = _load_eps(tab_ptr, L, ACC)
    _normalize_in_place(a_p, h, eps, ACC, BLOCK)
    ss_t, inv_t = _normalize_in_place(t_p, w, eps, ACC, BLOCK)
    tl.store(sigma_ptr + m, ss_t * inv_t)


@triton.jit
def spectral_outer_kernel(tab_ptr, gs_ptr, L, map_off,
                          DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """grad[i, j] = g · u_i · v_j for BLOCK_R rows of one gradient (g · u_i formed once per row, as the CPU's)."""
    pid = tl.program_id(0)
    m = tl.load(tab_ptr + map_off + pid)
    h = tl.load(tab_ptr + 3 * L + m)
    w = tl.load(tab_ptr + 4 * L + m)
    blk = pid - tl.load(tab_ptr + 5 * L + m)
    g_p = tl.load(tab_ptr + m).to(tl.pointer_type(DTYPE))
    u_p = tl.load(tab_ptr + L + m).to(tl.pointer_type(ACC))
    v_p = tl.load(tab_ptr + 2 * L + m).to(tl.pointer_type(ACC))
    rows = blk * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    rmask = rows < h
    gu = tl.load(gs_ptr + m) * tl.load(u_p + rows, mask=rmask, other=0.0)
    for c0 in range(0, w, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        cmask = cols < w
        res = gu[:, None] * tl.load(v_p + cols, mask=cmask, other=0.0)[None, :]
        offs = rows[:, None] * w + cols[None, :]
        mask = rmask[:, None] & cmask[None, :]
        tl.store(g_p + offs, _cast_rn(res, DTYPE), mask=mask)


_TT_NAME = {tl.float32: "fp32", tl.float64: "fp64", tl.bfloat16: "bf16", tl.float16: "fp16"}


def _acc(dtype):
    return tl.float64 if dtype == tl.float64 else tl.float32


def _spec(fn, signature, constexprs, variant_of):
    return {"fn": fn, "signature": signature, "constexprs": constexprs, "num_warps": NUM_WARPS,
            "variant": None if variant_of == tl.float32 else _TT_NAME[variant_of]}


def _specs():
    specs = []
    for dt in (tl.float32, tl.float64, tl.bfloat16, tl.float16):
        acc = _acc(dt)
        specs.append(_spec(spectral_rows_kernel,
                           {"tab_ptr": "*i64", "L": "i64", "map_off": "i64", "scale_x": "i32", "DTYPE": "constexpr",
                            "ACC": "constexpr", "BLOCK_R": "constexpr", "BLOCK_C": "constexpr"},
                           {"DTYPE": dt, "ACC": acc, "BLOCK_R": ROW_BLOCK, "BLOCK_C": COL_CHUNK}, dt))
        specs.append(_spec(spectral_cols_kernel,
                           {"tab_ptr": "*i64", "L": "i64", "map_off": "i64", "DTYPE": "constexpr",
                            "ACC": "constexpr", "BLOCK_R": "constexpr", "BLOCK_C": "constexpr"},
                           {"DTYPE": dt, "ACC": acc, "BLOCK_R": ROW_CHUNK, "BLOCK_C": COL_BLOCK}, dt))
        specs.append(_spec(spectral_outer_kernel,
                           {"tab_ptr": "*i64", "gs_ptr": f"*{_TT_NAME[acc]}", "L": "i64", "map_off": "i64",
                            "DTYPE": "constexpr", "ACC": "constexpr", "BLOCK_R": "constexpr", "BLOCK_C": "constexpr"},
                           {"DTYPE": dt, "ACC": acc, "BLOCK_R": ROW_BLOCK, "BLOCK_C": COL_CHUNK}, dt))
    for acc in (tl.float32, tl.float64):  # the finish kernel never reads W
        specs.append(_spec(spectral_finish_kernel,
                           {"tab_ptr": "*i64", "sigma_ptr": f"*{_TT_NAME[acc]}", "L": "i64", "ACC": "constexpr",
                            "BLOCK": "constexpr"},
                           {"ACC": acc, "BLOCK": FINISH_BLOCK}, acc))
    return specs


KERNELS = _specs()


def _slices(x, mats, dim):
    """Each matrix's vector as a view of the concatenated x (dim 0: its rows, dim 1: its columns)."""
    return x.split([t.shape[dim] for t in mats])


def _table(mats, us, vs, eps):
    """The int64 table of the call (module docstring) and the offsets of its two program maps, with their sizes."""
    h = torch.tensor([t.shape[0] for t in mats], dtype=torch.int64)
    w = torch.tensor([t.shape[1] for t in mats], dtype=torch.int64)
    row_blocks = (h + (ROW_BLOCK - 1)) // ROW_BLOCK
    col_blocks = (w + (COL_BLOCK - 1)) // COL_BLOCK
    index = torch.arange(len(mats), dtype=torch.int64)
    ptrs = torch.tensor([t.data_ptr() for t in (*mats, *us, *vs)], dtype=torch.int64)
    table = torch.cat([ptrs, h, w, torch.cumsum(row_blocks, 0) - row_blocks, torch.cumsum(col_blocks, 0) - col_blocks,
                       torch.tensor([float(eps)], dtype=torch.float64).view(torch.int64),
                       torch.repeat_interleave(index, row_blocks), torch.repeat_interleave(index, col_blocks)])
    dev = mats[0].device
    if dev.type == "cuda":
        table = table.pin_memory().to(dev, non_blocking=True)
    n_rows, n_cols = int(row_blocks.sum()), int(col_blocks.sum())
    row_map = _SLOTS * len(mats) + 1
    return table, (row_map, n_rows), (row_map + n_rows, n_cols)


@torch.library.custom_op("regops::spectral_power_triton", mutates_args=())
def spectral_power_triton(weights: list[torch.Tensor], u: torch.Tensor, v: torch.Tensor, n_power_iterations: int,
                          eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    op = "spectral_power"
    contract.check_lists(op, weights, u, v, None)
    contract.check_params(op, n_power_iterations, eps)
    _host.check_device("regops." + op, weights[0], spectral_rows_kernel)
    dtype, acc = weights[0].dtype, acc_dtype(weights[0].dtype)
    W = [t.contiguous() for t in weights]
    # a is written before it is read; t starts as the given v (the first W v reads it unscaled)
    u_out = torch.empty_like(u, memory_format=torch.contiguous_format)
    v_out = v.clone(memory_format=torch.contiguous_format)
    table, (row_map, n_rows), (col_map, n_cols) = _table(W, _slices(u_out, W, 0), _slices(v_out, W, 1), eps)
    L = len(W)
    sigma = torch.empty(L, dtype=acc, device=W[0].device)
    tl_dtype, tl_acc = _TL_DTYPE[dtype], _TL_DTYPE[acc]
    with _host.device_guard(sigma):
        for step in range(n_power_iterations):
            spectral_rows_kernel[(n_rows,)](table, L, row_map, int(step > 0), DTYPE=tl_dtype, ACC=tl_acc,
                                            BLOCK_R=ROW_BLOCK, BLOCK_C=COL_CHUNK, num_warps=NUM_WARPS)
            spectral_cols_kernel[(n_cols,)](table, L, col_map, DTYPE=tl_dtype, ACC=tl_acc,
                                            BLOCK_R=ROW_CHUNK, BLOCK_C=COL_BLOCK, num_warps=NUM_WARPS)
        spectral_finish_kernel[(L,)](table, sigma, L, ACC=tl_acc, BLOCK=FINISH_BLOCK, num_warps=NUM_WARPS)
    return sigma, u_out, v_out


spectral_power_triton.register_fake(contract.fake_power)


@torch.library.custom_op("regops::spectral_outer_triton", mutates_args=())
def spectral_outer_triton(grad_sigmas: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                          weights: list[torch.Tensor]) -> list[torch.Tensor]:
    op = "spectral_outer"
    contract.check_lists(op, weights, u, v, None)
    contract.check_grad(grad_sigmas, weights)
    _host.check_device("regops." + op, weights[0], spectral_outer_kernel)
    grads = [torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in weights]
    u, v = u.contiguous(), v.contiguous()  # kept alive here: the table holds raw addresses into them
    table, (row_map, n_rows), _ = _table(grads, _slices(u, grads, 0), _slices(v, grads, 1), 1.0)
    gs = grad_sigmas.contiguous()
    with _host.device_guard(gs):
        spectral_outer_kernel[(n_rows,)](table, gs, len(grads), row_map, DTYPE=_TL_DTYPE[weights[0].dtype],
                                         ACC=_TL_DTYPE[gs.dtype], BLOCK_R=ROW_BLOCK, BLOCK_C=COL_CHUNK,
                                         num_warps=NUM_WARPS)
    return grads


spectral_outer_triton.register_fake(contract.fake_outer)
