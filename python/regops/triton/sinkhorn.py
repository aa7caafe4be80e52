"""Triton kernels for the streamed log-domain Sinkhorn primitives (regops.ot), float32 only.

The math is that of ``csrc/include/regops/sinkhorn_math.h`` (costs, ``grad_coefs``, ``potential_from_lse``,
the online ``Lse``); the oracle is ``regops.reference.sinkhorn``. Batched point clouds x (B, N, d),
y (B, M, d), potentials (B, N)/(B, M), eps (B,); cost 0 sqeuclidean ‖x−y‖², 1 euclidean ‖x−y‖, 2 cosine
1 − ⟨x,y⟩/(‖x‖‖y‖ + 1e-8). Four custom ops with the schemas of ``regops::sinkhorn_*`` (csrc/ops.cpp):

- ``torch.ops.regops.sinkhorn_update_triton(x, y, pot, log_w, tau, eps, cost) -> (B, N)``:
  out_i = tau_i·(eps·log_w_i − eps·LSE_j((pot_j − c(x_i, y_j))/eps)), −inf where log_w_i = −inf.
- ``torch.ops.regops.sinkhorn_update_dense_triton(cost_matrix, pot, log_w, tau, eps, transpose)``: the same on a
  given C (B, N, M), over j (transpose=False, out (B, N)) or over i (transpose=True, out (B, M)); C is read
  through its strides (any layout, no copy).
- ``torch.ops.regops.sinkhorn_cost_grad_triton(x, y, f, g, eps, cost) -> (B, N, d)``: Σ_j P_ij ∇_x c(x_i, y_j)
  with P_ij = exp((f_i + g_j − c_ij)/eps), as Σ_j P_ij (A_ij x_i − W_ij y_j).
- ``torch.ops.regops.sinkhorn_apply_triton(x, y, f, g, v, eps, cost) -> (B, N, k)``: Σ_j P_ij v_j.

No autograd is registered here (the Python layer, regops/ops, does that). Nothing N×M is ever stored.

One kernel, ``sinkhorn_kernel``, four passes (``MODE``), so that the cost tile and the online log-sum-exp
exist once (the compile check of ``regops.triton._compile`` rejects @triton.jit helpers that are not listed
kernels). A program owns one block of BLOCK_N rows of one problem (grid axis 0 = B × row blocks, so B is not
limited to 65535) and streams the column tiles of BLOCK_M, FlashAttention style:

- the cost tile comes from ``tl.dot`` of the x and y tiles over d in BLOCK_K chunks (d is padded by masking;
  any d works), with ‖x_i‖² computed once per program and ‖y_j‖² per tile from the same chunks;
  sqeuclidean is ‖x‖² + ‖y‖² − 2⟨x,y⟩ clamped at 0, cosine 1 − ⟨x,y⟩/(‖x‖‖y‖ + 1e-8).
- euclidean: the dot form loses the small distances to cancellation (sqrt turns an absolute error δ of
  the squared distance into √δ at coincident points, and 1/‖x−y‖ in the gradient amplifies it further). So
  a tile in which any valid pair has a dot-form squared distance ≤ ``EUCLID_NEAR``·(‖x‖² + ‖y‖²) (1e-2) is
  recomputed exactly from the differences Σ_k (x_ik − y_jk)² (a loop over d, run 0 or d times); coincident
  points then give exactly 0 cost and the 0 subgradient of the header. Tiles whose pairs are all farther apart
  keep the dot form, whose relative error in the distance is ≲ √d·2⁻²⁴/(1e-2) there. (With tf32 the dot
  form's error is ~1e-3·(‖x‖² + ‖y‖²), still below the threshold, so coincident points stay exact.) A squared
  distance below the smallest normal float counts as coincident. For costs 0 and 1 the host also
  centers both clouds on the mean of y (the costs and the gradient are translation invariant), which keeps
  ‖x‖² + ‖y‖², and with it the cancellation, at the scale of the clouds' spread rather than their offset.
- ``MODE_UPDATE`` / ``MODE_DENSE``: v = (pot_j − c_ij)/eps and the online (max, Σ e^{v − max}) per row, then
  ``potential_from_lse``. DENSE reads the C tile through (row, column) strides instead of computing it;
  transpose=True just swaps the strides (rows are then C's columns).
- ``MODE_GRAD``: grid axis 1 = chunks of BLOCK_D output columns. P tile, then Σ_j P_ij A_ij (a row sum) and
  Σ_j P_ij W_ij y_j (``tl.dot`` with the y tile of that chunk); out = x_i·ΣPA − ΣPWy.
- ``MODE_APPLY``: grid axis 1 = chunks of BLOCK_D columns of v; acc += ``tl.dot``(P, v tile).

TF32: every ``tl.dot`` uses ``input_precision="tf32"`` only when ``torch.backends.cuda.matmul.allow_tf32`` is set
at call time (the ``ALLOW_TF32`` constexpr, CUDA only), else "ieee". Accumulation is fp32 throughout. A
program's bases (problem, row block, column tile) are int64 scalars, the offsets inside a tile int32 (int64
for C's arbitrary strides). On CPU tensors the kernels run only under TRITON_INTERPRET=1, which must be set
before triton is first imported.

``KERNELS`` lists the compile specs used by ``regops.triton._compile`` to build sm_90 cubins without a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _host
from ..contracts import check_float32_only
from ..contracts import sinkhorn as contract
from .._constants import COSINE, COST_NAMES, EUCLIDEAN, SQEUCLIDEAN

COSTS = tuple(COST_NAMES)
# relative squared distance at or below which a euclidean tile is recomputed from differences
EUCLID_NEAR = tl.constexpr(1e-2)

MODE_UPDATE, MODE_GRAD, MODE_APPLY, MODE_DENSE = 0, 1, 2, 3


# ----------------------------------------------------------------------------------------------
# kernel
# ----------------------------------------------------------------------------------------------
@triton.jit
def sinkhorn_kernel(
    x_ptr, y_ptr, f_ptr, pot_ptr, logw_ptr, tau_ptr, eps_ptr, v_ptr, out_ptr,
    N, M, D, K, NBLK,
    stride_cb, stride_cr, stride_cc,
    MODE: tl.constexpr, COST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
):
    """One block of BLOCK_N rows of problem b; see the module docstring.

    x (B, N, D), y (B, M, D), f (B, N), pot (B, M) (g in GRAD/APPLY), log_w and tau (B, N), eps (B,),
    v (B, M, K): contiguous. DENSE: x_ptr is C with strides (stride_cb, stride_cr, stride_cc) of its
    (problem, reduced-row, column) axes, N rows and M columns. out: (B, N) for UPDATE/DENSE, (B, N, D) for
    GRAD, (B, N, K) for APPLY, contiguous. Unused pointers get any fp32 tensor.
    """
    pid = tl.program_id(0)
    b = (pid // NBLK).to(tl.int64)
    r0 = (pid % NBLK) * BLOCK_N
    ar_n = tl.arange(0, BLOCK_N)
    ar_m = tl.arange(0, BLOCK_M)
    ks = tl.arange(0, BLOCK_K)
    rmask = (r0 + ar_n) < N
    # Scalar int64 bases of the block (row_base: the first row's index in the flattened (B·N) rows) and
    # int32 offsets inside a tile (at most BLOCK·D, BLOCK·K).
    row_base = b * N + r0
    x_blk = x_ptr + row_base * D
    eps = tl.load(eps_ptr + b)
    inv_eps = 1.0 / eps

    if MODE == 0 or MODE == 3:
        m_run = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        s_run = tl.zeros((BLOCK_N,), dtype=tl.float32)
    else:
        f = tl.load(f_ptr + row_base + ar_n, mask=rmask, other=float("-inf"))
        dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        if MODE == 1:
            dmask = dd < D
            acc_a = tl.zeros((BLOCK_N,), dtype=tl.float32)
        else:
            dmask = dd < K
        acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)

    if MODE != 3:
        # ‖x_i‖² of the block's rows
        sx = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for k0 in tl.range(0, D, BLOCK_K, num_stages=1):
            kk = k0 + ks
            xc = tl.load(x_blk + ar_n[:, None] * D + kk[None, :], mask=rmask[:, None] & (kk < D)[None, :],
                         other=0.0)
            sx += tl.sum(xc * xc, axis=1)
        nx = tl.sqrt(sx)
    else:
        # C's strides may exceed int32 products: the tile's offsets stay int64
        c_tile = (x_ptr + b * stride_cb + r0.to(tl.int64) * stride_cr + ar_n[:, None].to(tl.int64) * stride_cr
                  + ar_m[None, :].to(tl.int64) * stride_cc)  # advanced by a column tile per step
        c_step = tl.cast(stride_cc, tl.int64) * BLOCK_M  # (tl.cast: a stride of 1 arrives as a constexpr)

    for j0 in tl.range(0, M, BLOCK_M, num_stages=1):
        cmask = (j0 + ar_m) < M
        col_base = b * M + j0

        # ---- the cost tile c (BLOCK_N, BLOCK_M), and what the gradient coefficients need
        if MODE == 3:
            c = tl.load(c_tile, mask=rmask[:, None] & cmask[None, :], other=0.0)
            c_tile += c_step
        else:
            y_tile = y_ptr + col_base * D
            dot = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
            sy = tl.zeros((BLOCK_M,), dtype=tl.float32)
            # num_stages=1: pipelining this loop's loads costs registers for little gain
            for k0 in tl.range(0, D, BLOCK_K, num_stages=1):
                kk = k0 + ks
                kmask = kk < D
                xc = tl.load(x_blk + ar_n[:, None] * D + kk[None, :], mask=rmask[:, None] & kmask[None, :],
                             other=0.0)
                yc = tl.load(y_tile + ar_m[None, :] * D + kk[:, None], mask=kmask[:, None] & cmask[None, :],
                             other=0.0)
                if ALLOW_TF32:
                    dot = tl.dot(xc, yc, dot, input_precision="tf32")
                else:
                    dot = tl.dot(xc, yc, dot, input_precision="ieee")
                sy += tl.sum(yc * yc, axis=0)
            if COST == 2:
                ny = tl.sqrt(sy)
                denom = nx[:, None] * ny[None, :] + 1e-8
                c = 1.0 - dot / denom
            else:
                ssum = sx[:, None] + sy[None, :]
                sqd = ssum - 2.0 * dot
                if COST == 1:
                    near = (sqd <= ssum * EUCLID_NEAR) & rmask[:, None] & cmask[None, :]
                    # Exact squared distances from the differences (0 at coincident points) in the tiles that
                    # have a near pair: a loop of 0 or D steps rather than an `if`, whose yielded tile the
                    # compiler would also convert to the dot-operand layout (doubling its registers).
                    n_exact = tl.where(tl.max(near.to(tl.int32)) > 0, D, 0)
                    exact = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
                    for k in tl.range(0, n_exact, num_stages=1):
                        xk = tl.load(x_blk + ar_n * D + k, mask=rmask, other=0.0)
                        yk = tl.load(y_tile + ar_m * D + k, mask=cmask, other=0.0)
                        diff = xk[:, None] - yk[None, :]
                        exact += diff * diff
                    sqd = tl.where(n_exact > 0, exact, sqd)
                sqd = tl.maximum(sqd, 0.0)
                if COST == 1:
                    c = tl.sqrt(sqd)
                else:
                    c = sqd

        pot = tl.load(pot_ptr + col_base + ar_m, mask=cmask, other=float("-inf"))
        if MODE == 0 or MODE == 3:
            # online log-sum-exp of v = (pot_j − c_ij)/eps (the header's Lse::merge of the tile)
            v = (pot[None, :] - c) * inv_eps
            m_new = tl.maximum(m_run, tl.max(v, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            s_run = s_run * tl.exp(m_run - m_safe) + tl.sum(tl.exp(v - m_safe[:, None]), axis=1)
            m_run = m_new
        else:
            p = tl.exp((f[:, None] + pot[None, :] - c) * inv_eps)  # 0 at −inf potentials and masked pairs
            if MODE == 1:
                # grad_coefs: ∇_x c = A·x − W·y
                if COST == 0:
                    w = 2.0 * p
                    acc_a += tl.sum(w, axis=1)
                elif COST == 1:
                    # A = W = 1/‖x − y‖, 0 at coincident points; a squared distance below the smallest normal
                    # float counts as coincident (the GPU's rsqrt/sqrt flush subnormals to 0)
                    pos = sqd >= 1.1754943508222875e-38
                    w = tl.where(pos, p * tl.rsqrt(tl.where(pos, sqd, 1.0)), 0.0)
                    acc_a += tl.sum(w, axis=1)
                else:
                    w = p / denom
                    nx_safe = tl.where(nx > 0.0, nx, 1.0)
                    a = tl.where((nx > 0.0)[:, None], w * dot * ny[None, :] / (nx_safe[:, None] * denom), 0.0)
                    acc_a += tl.sum(a, axis=1)
                rhs = tl.load(y_tile + ar_m[:, None] * D + dd[None, :], mask=cmask[:, None] & dmask[None, :],
                              other=0.0)
            else:
                w = p
                rhs = tl.load(v_ptr + col_base * K + ar_m[:, None] * K + dd[None, :],
                              mask=cmask[:, None] & dmask[None, :], other=0.0)
            if ALLOW_TF32:
                acc = tl.dot(w, rhs, acc, input_precision="tf32")
            else:
                acc = tl.dot(w, rhs, acc, input_precision="ieee")

    if MODE == 0 or MODE == 3:
        # Lse::value, then potential_from_lse
        lse = tl.where(m_run == float("-inf"), float("-inf"), m_run + tl.log(s_run))
        log_w = tl.load(logw_ptr + row_base + ar_n, mask=rmask, other=0.0)
        tau = tl.load(tau_ptr + row_base + ar_n, mask=rmask, other=0.0)
        out = tl.where(log_w == float("-inf"), float("-inf"), tau * eps * (log_w - lse))
        tl.store(out_ptr + row_base + ar_n, out, mask=rmask)
    else:
        omask = rmask[:, None] & dmask[None, :]
        if MODE == 1:
            xd = tl.load(x_blk + ar_n[:, None] * D + dd[None, :], mask=omask, other=0.0)
            acc = xd * acc_a[:, None] - acc
            tl.store(out_ptr + row_base * D + ar_n[:, None] * D + dd[None, :], acc, mask=omask)
        else:
            tl.store(out_ptr + row_base * K + ar_n[:, None] * K + dd[None, :], acc, mask=omask)


# ----------------------------------------------------------------------------------------------
# launch configs, shared by the host code and the compile specs
# ----------------------------------------------------------------------------------------------
def _pow2_clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _config(mode: int, cost: int, n: int, m: int, d: int, k: int = 0):
    """(BLOCK_N, BLOCK_M, BLOCK_K, BLOCK_D, num_warps) for n rows, m columns, d features (k columns of v).

    Picked from ``ptxas -v`` on the sm_90 cubins so that the full-size tiles of every variant in ``KERNELS``
    spill no registers (two clamped mid-size and one 16×16 variant spill 12-28 bytes, a ptxas choice); not
    yet tuned for speed on a GPU. BLOCK_K is 16: the IEEE dots run on FMAs, whose operand layout holds a
    thread's whole K extent. The euclidean update takes 64-column tiles (its registers allow them, and the
    difference pass of a near tile then covers more pairs).
    """
    if mode == MODE_DENSE:
        bn, bm, bd = 64, 32, 16
    elif mode == MODE_UPDATE:
        bn, bm, bd = 64, 64 if cost == EUCLIDEAN else 32, 16
    else:  # GRAD, APPLY: BLOCK_D columns of the output per program
        bn, bm, bd = 64, 32, 64
    bn = _pow2_clamp(n, 16, bn)
    bm = _pow2_clamp(m, 16, bm)
    if mode in (MODE_GRAD, MODE_APPLY):
        bd = _pow2_clamp(d if mode == MODE_GRAD else k, 16, bd)
    tile = bn * max(bm, bd if mode in (MODE_GRAD, MODE_APPLY) else 0)
    return bn, bm, 16, bd, 8 if tile >= 2048 else 4


# Compile specs for regops.triton._compile (one dict per cubin; see orthonormal.py for the keys).
_MODE_NAMES = {MODE_UPDATE: "update", MODE_GRAD: "grad", MODE_APPLY: "apply", MODE_DENSE: "dense"}


def _spec(mode, cost, tf32=False, size=(256, 256, 64, 64), variant=None, ones=()):
    """`ones`: integer arguments that the launcher's specialization turns into the constexpr 1 (as triton's
    JIT does for an int argument equal to 1: D = 1, a unit stride of C, ...)."""
    bn, bm, bk, bd, num_warps = _config(mode, cost, *size)
    ptrs = {name: "*fp32" for name in ("x_ptr", "y_ptr", "f_ptr", "pot_ptr", "logw_ptr", "tau_ptr", "eps_ptr",
                                       "v_ptr", "out_ptr")}
    ints = {name: "i32" for name in ("N", "M", "D", "K", "NBLK", "stride_cr", "stride_cc")}
    ints["stride_cb"] = "i64"
    constexprs = {"MODE": mode, "COST": cost, "BLOCK_N": bn, "BLOCK_M": bm, "BLOCK_K": bk, "BLOCK_D": bd,
                  "ALLOW_TF32": tf32}
    ints.update({name: "constexpr" for name in ones})
    return {
        "fn": sinkhorn_kernel,
        "signature": {**ptrs, **ints, **{name: "constexpr" for name in constexprs}},
        "constexprs": {**constexprs, **{name: 1 for name in ones}},
        "num_warps": num_warps,
        "variant": variant,
    }


def _all_specs():
    specs = []
    for mode in (MODE_UPDATE, MODE_GRAD, MODE_APPLY):
        for cost in COSTS:
            name = f"{_MODE_NAMES[mode]}-{COST_NAMES[cost]}"
            first = mode == MODE_UPDATE and cost == SQEUCLIDEAN
            specs.append(_spec(mode, cost, variant=None if first else name))
            specs.append(_spec(mode, cost, tf32=True, variant=f"{name}-tf32"))
            specs.append(_spec(mode, cost, size=(3, 5, 3, 2), variant=f"{name}-small"))
            specs.append(_spec(mode, cost, size=(37, 200, 17, 5), variant=f"{name}-mid"))
    for mode in (MODE_UPDATE, MODE_GRAD, MODE_APPLY):  # one point per side, one feature, one column of v
        specs.append(_spec(mode, EUCLIDEAN, size=(1, 1, 1, 1), ones=("N", "M", "D", "K", "NBLK"),
                           variant=f"{_MODE_NAMES[mode]}-euclidean-ones"))
    specs.append(_spec(MODE_DENSE, SQEUCLIDEAN, variant="dense"))
    specs.append(_spec(MODE_DENSE, SQEUCLIDEAN, ones=("stride_cc",), variant="dense-rows"))  # contiguous C
    specs.append(_spec(MODE_DENSE, SQEUCLIDEAN, ones=("stride_cr",), variant="dense-cols"))  # C.mT / transpose
    specs.append(_spec(MODE_DENSE, SQEUCLIDEAN, size=(3, 5, 0, 0), variant="dense-small"))
    specs.append(_spec(MODE_DENSE, SQEUCLIDEAN, size=(37, 20, 0, 0), variant="dense-mid"))
    return specs


KERNELS = _all_specs()


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
def _allow_tf32(t: torch.Tensor) -> bool:
    return bool(t.is_cuda and torch.backends.cuda.matmul.allow_tf32)


# The schema's contract (contracts/sinkhorn.py), then float32: this impl's kernels.
def _check_update(x, y, pot, log_w, tau, eps, cost):
    sizes = contract.check_update(x, y, pot, log_w, tau, eps, cost, None)
    check_float32_only("sinkhorn_update", "x", x)
    return sizes


def _check_dense(cost_matrix, pot, log_w, tau, eps, transpose):
    sizes = contract.check_dense(cost_matrix, pot, log_w, tau, eps, transpose, None)
    check_float32_only("sinkhorn_update_dense", "cost_matrix", cost_matrix)
    return sizes


def _check_plan(op, x, y, f, g, eps, cost, v=None):
    sizes = contract.check_weighted(op, x, y, f, g, v, eps, cost, None)
    check_float32_only(op, "x", x)
    return sizes


def _center(x, y, cost):
    """Contiguous clouds; for the (translation invariant) distance costs both are centered on y's mean."""
    if cost != COSINE and y.shape[1] > 0 and y.shape[2] > 0:
        mu = y.mean(dim=1, keepdim=True)
        return (x - mu).contiguous(), (y - mu).contiguous()
    return x.contiguous(), y.contiguous()


def _launch(mode, cost, x, y, f, pot, log_w, tau, eps, v, out, n, m, d, k=0, strides=(0, 0, 0)):
    bsz = eps.shape[0]
    bn, bm, bk, bd, num_warps = _config(mode, cost, n, m, d, k)
    nblk = triton.cdiv(n, bn)
    chunks = triton.cdiv(d, bd) if mode == MODE_GRAD else triton.cdiv(k, bd) if mode == MODE_APPLY else 1
    grid = (bsz * nblk, chunks)
    if grid[0] == 0 or grid[1] == 0:
        return
    with _host.device_guard(out):
        sinkhorn_kernel[grid](
            x, y, f, pot, log_w, tau, eps, v, out,
            n, m, d, k, nblk, *strides,
            MODE=mode, COST=cost, BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk, BLOCK_D=bd,
            ALLOW_TF32=_allow_tf32(out), num_warps=num_warps,
        )


@torch.library.custom_op("regops::sinkhorn_update_triton", mutates_args=())
def sinkhorn_update_triton(x: torch.Tensor, y: torch.Tensor, pot: torch.Tensor, log_w: torch.Tensor,
                           tau: torch.Tensor, eps: torch.Tensor, cost: int) -> torch.Tensor:
    bsz, n, m, d = _check_update(x, y, pot, log_w, tau, eps, cost)
    _host.check_device("regops.sinkhorn_update", x, sinkhorn_kernel)
    out = x.new_empty((bsz, n))
    x, y = _center(x, y, cost)
    eps = eps.contiguous()
    _launch(MODE_UPDATE, cost, x, y, eps, pot.contiguous(), log_w.contiguous(), tau.contiguous(), eps, eps, out,
            n, m, d)
    return out


@sinkhorn_update_triton.register_fake
def _update_fake(x, y, pot, log_w, tau, eps, cost):
    bsz, n, _, _ = _check_update(x, y, pot, log_w, tau, eps, cost)
    return x.new_empty((bsz, n))


@torch.library.custom_op("regops::sinkhorn_update_dense_triton", mutates_args=())
def sinkhorn_update_dense_triton(cost_matrix: torch.Tensor, pot: torch.Tensor, log_w: torch.Tensor,
                                 tau: torch.Tensor, eps: torch.Tensor, transpose: bool) -> torch.Tensor:
    bsz, r, c = _check_dense(cost_matrix, pot, log_w, tau, eps, transpose)
    _host.check_device("regops.sinkhorn_update_dense", cost_matrix, sinkhorn_kernel)
    out = cost_matrix.new_empty((bsz, r))
    sb, sn, sm = cost_matrix.stride()
    strides = (sb, sm, sn) if transpose else (sb, sn, sm)
    eps = eps.contiguous()
    _launch(MODE_DENSE, SQEUCLIDEAN, cost_matrix, eps, eps, pot.contiguous(), log_w.contiguous(), tau.contiguous(),
            eps, eps, out, r, c, 0, strides=strides)
    return out


@sinkhorn_update_dense_triton.register_fake
def _dense_fake(cost_matrix, pot, log_w, tau, eps, transpose):
    bsz, r, _ = _check_dense(cost_matrix, pot, log_w, tau, eps, transpose)
    return cost_matrix.new_empty((bsz, r))


@torch.library.custom_op("regops::sinkhorn_cost_grad_triton", mutates_args=())
def sinkhorn_cost_grad_triton(x: torch.Tensor, y: torch.Tensor, f: torch.Tensor, g: torch.Tensor,
                              eps: torch.Tensor, cost: int) -> torch.Tensor:
    bsz, n, m, d = _check_plan("sinkhorn_cost_grad", x, y, f, g, eps, cost)
    _host.check_device("regops.sinkhorn_cost_grad", x, sinkhorn_kernel)
    out = x.new_empty((bsz, n, d))
    x, y = _center(x, y, cost)
    eps = eps.contiguous()
    _launch(MODE_GRAD, cost, x, y, f.contiguous(), g.contiguous(), eps, eps, eps, eps, out, n, m, d)
    return out


@sinkhorn_cost_grad_triton.register_fake
def _cost_grad_fake(x, y, f, g, eps, cost):
    bsz, n, _, d = _check_plan("sinkhorn_cost_grad", x, y, f, g, eps, cost)
    return x.new_empty((bsz, n, d))


def _check_apply(x, y, f, g, v, eps, cost):
    return (*_check_plan("sinkhorn_apply", x, y, f, g, eps, cost, v), v.shape[2])


@torch.library.custom_op("regops::sinkhorn_apply_triton", mutates_args=())
def sinkhorn_apply_triton(x: torch.Tensor, y: torch.Tensor, f: torch.Tensor, g: torch.Tensor, v: torch.Tensor,
                          eps: torch.Tensor, cost: int) -> torch.Tensor:
    bsz, n, m, d, k = _check_apply(x, y, f, g, v, eps, cost)
    _host.check_device("regops.sinkhorn_apply", x, sinkhorn_kernel)
    out = x.new_zeros((bsz, n, k))
    x, y = _center(x, y, cost)
    eps = eps.contiguous()
    _launch(MODE_APPLY, cost, x, y, f.contiguous(), g.contiguous(), eps, eps, eps, v.contiguous(), out, n, m, d, k)
    return out


@sinkhorn_apply_triton.register_fake
def _apply_fake(x, y, f, g, v, eps, cost):
    bsz, n, _, _, k = _check_apply(x, y, f, g, v, eps, cost)
    return x.new_empty((bsz, n, k))
