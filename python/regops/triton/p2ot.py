"""Triton kernel of P²OT's fused scaling pass, float32 only: the schema of ``regops::p2ot_scaling_pass``
(csrc/ops.cpp; the CPU kernel is csrc/cpu/p2ot.cpp, the CUDA one csrc/cuda/p2ot_kernels.cu).

``torch.ops.regops.p2ot_scaling_pass_triton(kernel, col_scale, row_target) -> (row_scale, col_sum)``: for K (N, Kc),
v (Kc,), t (N,): r_i = Σ_j K_ij v_j, u_i = t_i / r_i (r_i = 0 gives ±inf, unguarded), col_j = Σ_i K_ij u_i. One
Sinkhorn iteration for one read of K (the pass is memory-bound).

``p2ot_pass_kernel``: a program owns ITERS consecutive blocks of BLOCK_N rows (ITERS from the sizes only, so that
there are about ``TARGET_PROGRAMS`` programs). For Kc ≤ ``MAX_BLOCK_K`` (SINGLE) the whole (BLOCK_N, BLOCK_K) tile
of K is loaded once: r = Σ_j tile·v, u = t/r (IEEE division), and the program's column accumulator (float64) takes
Σ_rows tile·u (a float32 sum over the block's rows) from the same registers. For wider K (a fallback, not P²OT's
range) grid axis 1 runs over column chunks of BLOCK_K: each program recomputes the full row dots over all chunks,
then accumulates its own chunk, so K is read 1 + Kc/BLOCK_K times. Masked rows use u = 0 and masked columns K = 0,
so they add exact zeros; a zero row of K gives u = inf and NaN column sums (0·inf), as the formula says.

Determinism: no atomics. Each program writes its column partial to a float64 workspace (programs, Kc); the host
sums it over programs with ``torch.sum(0)``, whose order is fixed by the shape. Every order depends on the sizes
only, so two calls give the same bits. On CPU tensors the kernel runs only under TRITON_INTERPRET=1, which must be
set before triton is first imported.

``KERNELS`` lists the compile specs used by ``regops.triton._compile`` to build sm_90 cubins without a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _host
from ..contracts import check_float32_only
from ..contracts import p2ot as contract

OP = "p2ot_scaling_pass"
MAX_BLOCK_K = 1024      # widest K read once (a whole row per tile)
TILE = 4096             # elements of K per tile (BLOCK_N · BLOCK_K; at least 8 rows)
TARGET_PROGRAMS = 1024  # row blocks per program grow until about this many programs


@triton.jit
def p2ot_pass_kernel(K_ptr, v_ptr, t_ptr, u_ptr, ws_ptr, N, Kc, ITERS,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SINGLE: tl.constexpr):
    """K (N, Kc), v (Kc,), t (N,), u (N,) float32, contiguous; ws (programs, Kc) float64. See the module
    docstring."""
    pid = tl.program_id(0)
    cid = tl.program_id(1)
    rn = tl.arange(0, BLOCK_N)
    ck = tl.arange(0, BLOCK_K)
    cols = cid * BLOCK_K + ck
    cmask = cols < Kc
    acc = tl.zeros((BLOCK_K,), dtype=tl.float64)
    if SINGLE:
        v = tl.load(v_ptr + cols, mask=cmask, other=0.0)
    for it in range(0, ITERS):
        rows = (pid * ITERS + it) * BLOCK_N + rn
        rmask = rows < N
        row_off = rows.to(tl.int64) * Kc
        if SINGLE:
            tile = tl.load(K_ptr + row_off[:, None] + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                           other=0.0)
            r = tl.sum(tile * v[None, :], axis=1)
        else:
            r = tl.zeros((BLOCK_N,), dtype=tl.float32)
            for k0 in range(0, Kc, BLOCK_K):
                kk = k0 + ck
                km = kk < Kc
                vk = tl.load(v_ptr + kk, mask=km, other=0.0)
                part = tl.load(K_ptr + row_off[:, None] + kk[None, :], mask=rmask[:, None] & km[None, :],
                               other=0.0)
                r += tl.sum(part * vk[None, :], axis=1)
            tile = tl.load(K_ptr + row_off[:, None] + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                           other=0.0)
        t = tl.load(t_ptr + rows, mask=rmask, other=0.0)
        u = tl.math.div_rn(t, tl.where(rmask, r, 1.0))  # masked rows: 0/1 = 0; r_i = 0: ±inf
        tl.store(u_ptr + rows, u, mask=rmask & (cid == 0))
        acc += tl.sum(tile * u[:, None], axis=0).to(tl.float64)
    tl.store(ws_ptr + pid.to(tl.int64) * Kc + cols, acc, mask=cmask)


# ----------------------------------------------------------------------------------------------
# launch configs, shared by the host code and the compile specs
# ----------------------------------------------------------------------------------------------
def _config(n: int, kc: int):
    """(BLOCK_N, BLOCK_K, SINGLE, num_warps) for K of shape (n, kc)."""
    bk = max(16, min(MAX_BLOCK_K, triton.next_power_of_2(max(int(kc), 1))))
    single = kc <= bk
    bn = max(8, min(128, TILE // bk, triton.next_power_of_2(max(int(n), 1))))
    return bn, bk, single, 8 if bn * bk >= 4096 else 4


def _grid(n: int, kc: int):
    """(programs, chunks, ITERS) for K of shape (n, kc)."""
    bn, bk, single, _ = _config(n, kc)
    nblk = triton.cdiv(n, bn)
    iters = triton.cdiv(nblk, TARGET_PROGRAMS)
    return triton.cdiv(nblk, iters), 1 if single else triton.cdiv(kc, bk), iters


def _spec(n, kc, variant=None, ones=()):
    """`ones`: integer arguments that the launcher's specialization turns into the constexpr 1 (as triton's JIT
    does for an int argument equal to 1)."""
    bn, bk, single, num_warps = _config(n, kc)
    ptrs = {name: "*fp32" for name in ("K_ptr", "v_ptr", "t_ptr", "u_ptr")}
    ptrs["ws_ptr"] = "*fp64"
    ints = {name: "i32" for name in ("N", "Kc", "ITERS")}
    ints.update({name: "constexpr" for name in ones})
    constexprs = {"BLOCK_N": bn, "BLOCK_K": bk, "SINGLE": single}
    return {
        "fn": p2ot_pass_kernel,
        "signature": {**ptrs, **ints, **{name: "constexpr" for name in constexprs}},
        "constexprs": {**constexprs, **{name: 1 for name in ones}},
        "num_warps": num_warps,
        "variant": variant,
    }


KERNELS = [
    _spec(100000, 1001),                                   # P²OT's widest: 8 × 1024 tiles
    _spec(100000, 101, variant="kc101"),                   # 32 × 128
    _spec(37, 17, variant="small"),                        # 64 × 32 (rows clamped to the pow2 of N)
    _spec(300, 2, variant="narrow"),                       # 128 × 16
    _spec(5000, 3000, variant="chunked"),                  # Kc > MAX_BLOCK_K: column chunks
    _spec(1, 1, variant="ones", ones=("N", "Kc", "ITERS")),
]


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
def _check(kernel, col_scale, row_target):
    """The schema's contract, then float32 (this impl's kernels); returns (N, Kc)."""
    contract.check_pass(kernel, col_scale, row_target, None)
    check_float32_only(OP, "kernel", kernel)
    return kernel.shape


@torch.library.custom_op("regops::p2ot_scaling_pass_triton", mutates_args=())
def p2ot_scaling_pass_triton(kernel: torch.Tensor, col_scale: torch.Tensor,
                             row_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, kc = _check(kernel, col_scale, row_target)
    _host.check_device(f"regops.{OP}", kernel, p2ot_pass_kernel)
    if n == 0 or kc == 0:
        # Kc = 0: every r_i is an empty sum (0), so u = t/0; no rows: zero column sums.
        return row_target / 0.0, kernel.new_zeros((kc,))
    K, v, t = kernel.contiguous(), col_scale.contiguous(), row_target.contiguous()
    u = K.new_empty((n,))
    bn, bk, single, num_warps = _config(n, kc)
    programs, chunks, iters = _grid(n, kc)
    ws = torch.empty((programs, kc), dtype=torch.float64, device=K.device)
    with _host.device_guard(K):
        p2ot_pass_kernel[(programs, chunks)](K, v, t, u, ws, n, kc, iters, BLOCK_N=bn, BLOCK_K=bk, SINGLE=single,
                                             num_warps=num_warps)
    return u, ws.sum(0).to(torch.float32)


@p2ot_scaling_pass_triton.register_fake
def _fake(kernel, col_scale, row_target):
    n, kc = _check(kernel, col_scale, row_target)
    return kernel.new_empty((n,)), kernel.new_empty((kc,))
