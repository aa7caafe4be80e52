"""Triton kernels for the contrastive engine (ConR, SupCon, focal SupCon).

The math is that of ``csrc/include/regops/contrastive_math.h`` (the single source of truth), evaluated on
tiles: anchors a_i (i < n) against candidates c_j (j < M), L2-normalized by the ops themselves (as
F.normalize; the backward goes back through it), s_ij = ⟨a_i, c_j⟩ / τ, anchor i is candidate
``offset + i``. Two custom ops with the schemas of ``regops::contrastive_fwd`` / ``_bwd`` (csrc/ops.cpp):

- ``torch.ops.regops.contrastive_fwd_triton(anchors, candidates, labels, cand_labels, preds, cand_preds,
  weights, kind, offset, temperature, threshold, push, label_norm) -> (row_loss (n,), row_stats (n, 4))``
- ``torch.ops.regops.contrastive_bwd_triton(grad_row_loss, anchors, ..., weights, row_stats, kind, ...)
  -> (grad_anchors (n, D), grad_candidates (M, D) or (0, D))``

Autograd for the fwd op is registered in ``regops/ops/_contrastive.py`` (its backward calls the bwd op).

One kernel, three passes (``MODE``), so that the element math exists once as in the header (the compile
check of ``regops.triton._compile`` rejects @triton.jit helpers that are not listed kernels):

- ``MODE_FWD``: one program per block of anchor rows streams the column tiles, flash-attention style:
  s tile by ``tl.dot`` over D chunks, the elements of ``conr_element``/``supcon_element``, the block max
  ``element_max``, ``row_rescale`` and ``row_add`` on per-row running sums (focal keeps the shifted sums
  pos_e/pos_es), then ``row_finish``: row_loss and row_stats = [L, α, β, |P|]. Nothing n×M is stored;
  row_stats (n, 4) is all the backward gets.
- ``MODE_BWD_ROWS``: grid (row blocks, D chunks). Recomputes each s tile and
  dS_ij = grad_row_loss_i · ``dloss_ds``, and accumulates grad_anchors_i = Σ_j dS_ij c_j / τ.
- ``MODE_BWD_COLS``: the column gradient, accumulated by a second pass over column blocks (no atomics,
  so the result is deterministic): grid (column blocks, D chunks), each program streams the anchor row
  blocks, recomputes the same dS tile and accumulates grad_candidates_j = Σ_i dS_ij a_i / τ. With
  candidates None (the symmetric case) the candidates are the anchors and this pass adds its column
  gradient into grad_anchors, which the row pass wrote before it on the same stream (``ACCUMULATE``);
  grad_candidates is then an empty (0, D) tensor.

A D chunk of the backward holds up to BLOCK_D (128 fp32, 64 fp64) feature columns; a larger D launches
more chunks, each recomputing the similarity tiles over the full D. Tile sizes (``_config``) and
``num_stages=1`` on the inner loops were picked from ``ptxas -v`` on the sm_90 cubins so that the
full-size tiles of every variant in ``KERNELS`` run without register spills; they are not yet tuned for
speed on a GPU.

Dots run with fp32 (fp64) accumulation, ``input_precision="ieee"``; float32 on CUDA uses tf32 only when
``torch.backends.cuda.matmul.allow_tf32`` is set (off by default). Scalars (τ, threshold, push, p) are passed
as a small tensor in the anchors' dtype, since triton passes Python floats as fp32, which would shift fp64
thresholds. Pointer offsets are int64. On CPU tensors the kernels run only under TRITON_INTERPRET=1, which
must be set before triton is first imported.

``KERNELS`` lists the compile specs used by ``regops.triton._compile`` to build sm_90 cubins without a GPU.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from . import _host
from ..contracts import contrastive as contract
from .._constants import CONR_AGEDB, CONR_NYUD2, FOCAL, ROW_STATS, SUPCON

_OP = "regops.contrastive"

MODE_FWD, MODE_BWD_ROWS, MODE_BWD_COLS = 0, 1, 2
# Label distance (ConR): 0 |u − v| (one label column), 1 p = 2, 2 p = 1, 3 p = ±inf (max), 4 any other p.
NORM_ABS, NORM_L2, NORM_L1, NORM_MAX, NORM_P = 0, 1, 2, 3, 4


# ----------------------------------------------------------------------------------------------
# kernel
# ----------------------------------------------------------------------------------------------
@triton.jit
def contrastive_kernel(
    a_ptr, c_ptr, la_ptr, lc_ptr, pa_ptr, pc_ptr, w_ptr, params_ptr,
    g_ptr, stats_ptr, loss_ptr, out_ptr,
    N, M, D, LABEL_LEN, OFFSET,
    stride_an, stride_ad, stride_cn, stride_cd, stride_on, stride_od,
    KIND: tl.constexpr, NORM: tl.constexpr, MODE: tl.constexpr, ACCUMULATE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
):
    """One block of anchor rows (MODE 0, 1) or of candidate columns (MODE 2); see the module docstring.

    a (N, D), c (M, D) with strides; la/lc: (N, LABEL_LEN)/(M, LABEL_LEN) contiguous in the acc dtype (ConR)
    or (N,)/(M,) int64 (SupCon); pa/pc like la/lc (ConR only); w (N,) (ConR only); params: [τ, threshold,
    push, p]; g (N,) the upstream grad of row_loss and stats (N, 4) contiguous (backward); loss (N,) and
    stats are written by MODE 0; out is grad_anchors (MODE 1, and MODE 2 with ACCUMULATE) or
    grad_candidates (MODE 2). Unused pointers get any tensor of the right dtype.
    """
    acc_ty = a_ptr.dtype.element_ty
    IS_CONR: tl.constexpr = KIND <= 1
    temperature = tl.load(params_ptr)
    threshold = tl.load(params_ptr + 1)
    push = tl.load(params_ptr + 2)
    p_norm = tl.load(params_ptr + 3)

    pid = tl.program_id(0)
    ar_r = tl.arange(0, BLOCK_R)
    ar_c = tl.arange(0, BLOCK_C)
    ks = tl.arange(0, BLOCK_K)
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = dd < D

    # The fixed block: rows (MODE 0, 1) or columns (MODE 2); the other side is streamed below.
    if MODE == 2:
        cols = pid * BLOCK_C + ar_c
        n_inner = tl.cdiv(N, BLOCK_R)
        acc = tl.zeros((BLOCK_C, BLOCK_D), dtype=acc_ty)
    else:
        rows = pid * BLOCK_R + ar_r
        n_inner = tl.cdiv(M, BLOCK_C)
        if MODE == 1:
            acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=acc_ty)
        else:
            # RowAcc of each row (row_init)
            m_run = tl.full((BLOCK_R,), float("-inf"), acc_ty)
            sum_run = tl.zeros((BLOCK_R,), dtype=acc_ty)
            npos_run = tl.zeros((BLOCK_R,), dtype=acc_ty)
            poss_run = tl.zeros((BLOCK_R,), dtype=acc_ty)
            pose_run = tl.zeros((BLOCK_R,), dtype=acc_ty)
            poses_run = tl.zeros((BLOCK_R,), dtype=acc_ty)
            nneg_run = tl.zeros((BLOCK_R,), dtype=tl.int32)

    for it in range(0, n_inner):
        if MODE == 2:
            rows = it * BLOCK_R + ar_r
        else:
            cols = it * BLOCK_C + ar_c
        rmask = rows < N
        cmask = cols < M
        rows64 = rows.to(tl.int64)
        cols64 = cols.to(tl.int64)
        valid = rmask[:, None] & cmask[None, :]
        diag = (rows64[:, None] + OFFSET) == cols64[None, :]

        # Elements (conr_element / supcon_element): positive, negative, active, one, and the term's shift
        # from s (term = s + shift: 0 for positives, log c_ij for ConR negatives, −inf when inactive).
        # Computed before s, so that the label tiles are dead while the similarity is accumulated.
        if IS_CONR:
            if NORM == 0:
                ua = tl.load(la_ptr + rows64 * LABEL_LEN, mask=rmask, other=0.0)
                vc = tl.load(lc_ptr + cols64 * LABEL_LEN, mask=cmask, other=0.0)
                ld = tl.abs(ua[:, None] - vc[None, :])
                ua = tl.load(pa_ptr + rows64 * LABEL_LEN, mask=rmask, other=0.0)
                vc = tl.load(pc_ptr + cols64 * LABEL_LEN, mask=cmask, other=0.0)
                pd = tl.abs(ua[:, None] - vc[None, :])
            else:
                ld = tl.zeros((BLOCK_R, BLOCK_C), dtype=acc_ty)
                pd = tl.zeros((BLOCK_R, BLOCK_C), dtype=acc_ty)
                for k in tl.range(0, LABEL_LEN, num_stages=1):
                    ua = tl.load(la_ptr + rows64 * LABEL_LEN + k, mask=rmask, other=0.0)
                    vc = tl.load(lc_ptr + cols64 * LABEL_LEN + k, mask=cmask, other=0.0)
                    dl = tl.abs(ua[:, None] - vc[None, :])
                    ua = tl.load(pa_ptr + rows64 * LABEL_LEN + k, mask=rmask, other=0.0)
                    vc = tl.load(pc_ptr + cols64 * LABEL_LEN + k, mask=cmask, other=0.0)
                    dp = tl.abs(ua[:, None] - vc[None, :])
                    if NORM == 1:
                        ld += dl * dl
                        pd += dp * dp
                    elif NORM == 2:
                        ld += dl
                        pd += dp
                    elif NORM == 3:
                        ld = tl.maximum(ld, dl)
                        pd = tl.maximum(pd, dp)
                    else:  # |d|^p = 2^(p·log2|d|) (0 at d = 0 for p > 0)
                        ld += tl.exp2(p_norm * tl.log2(dl))
                        pd += tl.exp2(p_norm * tl.log2(dp))
                if NORM == 1:  # correctly rounded, as the reference: a tie with the threshold stays one
                    if acc_ty == tl.float64:
                        ld = tl.sqrt(ld)  # IEEE sqrt.rn.f64
                        pd = tl.sqrt(pd)
                    else:
                        ld = tl.sqrt_rn(ld)  # tl.sqrt is the approximate sqrt for fp32
                        pd = tl.sqrt_rn(pd)
                elif NORM == 4:
                    ld = tl.exp2(tl.log2(ld) / p_norm)
                    pd = tl.exp2(tl.log2(pd) / p_norm)
            w = tl.load(w_ptr + rows64, mask=rmask, other=1.0)
            positive = (ld <= threshold) & (diag == 0) & valid
            negative = (ld > threshold) & (pd <= threshold) & valid
            active = positive | negative
            one = valid & (positive == 0)
            if KIND == 0:
                log_c = tl.log(w)[:, None] + push * ld
            else:
                log_c = tl.log(push * w[:, None] * ld)
            shift = tl.where(positive, 0.0, tl.where(negative, log_c, float("-inf")))
        else:
            la = tl.load(la_ptr + rows64, mask=rmask, other=0)
            lc = tl.load(lc_ptr + cols64, mask=cmask, other=0)
            active = valid & (diag == 0)
            positive = active & (la[:, None] == lc[None, :])
            shift = tl.where(active, 0.0, float("-inf")).to(acc_ty)

        # s = A[rows] C[cols]ᵀ / τ  (BLOCK_R, BLOCK_C), over D in BLOCK_K chunks
        s = tl.zeros((BLOCK_R, BLOCK_C), dtype=acc_ty)
        # num_stages=1: software pipelining of this loop's loads doubles the registers and spills
        for k0 in tl.range(0, D, BLOCK_K, num_stages=1):
            kk = k0 + ks
            kmask = kk < D
            a = tl.load(a_ptr + rows64[:, None] * stride_an + kk[None, :] * stride_ad,
                        mask=rmask[:, None] & kmask[None, :], other=0.0)
            c = tl.load(c_ptr + kk[:, None] * stride_cd + cols64[None, :] * stride_cn,
                        mask=kmask[:, None] & cmask[None, :], other=0.0)
            if ALLOW_TF32:
                s = tl.dot(a, c, s, input_precision="tf32")
            else:
                s = tl.dot(a, c, s, input_precision="ieee")
        s = s / temperature

        term = s + shift

        if MODE == 0:
            # element_max, then row_rescale to the block max, then row_add of the whole tile
            e_max = tl.where(active, term, float("-inf"))
            if IS_CONR:
                e_max = tl.where(one & (e_max < 0), 0.0, e_max)
            m_new = tl.maximum(m_run, tl.max(e_max, axis=1))
            same = m_new == m_run
            f = tl.where(same, 1.0, tl.where(m_run == float("-inf"), 0.0, tl.exp(m_run - m_new)))
            poses_run = tl.where(same, poses_run,
                                 tl.where(pose_run == 0, 0.0, f * (poses_run + (m_run - m_new) * pose_run)))
            sum_run = sum_run * f
            pose_run = pose_run * f
            m_run = m_new
            # With m = −inf nothing was added yet: no active finite term and no e⁰ in this row.
            m_safe = tl.where(m_run == float("-inf"), 0.0, m_run)
            add = tl.where(active, tl.exp(term - m_safe[:, None]), 0.0)
            if IS_CONR:
                add += tl.where(one, tl.exp(-m_safe)[:, None], 0.0)
            sum_run += tl.sum(add, axis=1)
            npos_run += tl.sum(positive.to(acc_ty), axis=1)
            poss_run += tl.sum(tl.where(positive, s, 0.0), axis=1)
            if KIND == 3:
                x = tl.where(positive, s - m_safe[:, None], 0.0)
                ex = tl.where(positive, tl.exp(x), 0.0)
                pose_run += tl.sum(ex, axis=1)
                poses_run += tl.sum(ex * x, axis=1)
            if IS_CONR:
                nneg_run += tl.sum(negative.to(tl.int32), axis=1)
        else:
            # dℓ_i/ds_ij (dloss_ds) from the saved [L, α, β], times the upstream grad of row i
            st = stats_ptr + rows64 * 4
            L_i = tl.load(st, mask=rmask, other=0.0)
            alpha = tl.load(st + 1, mask=rmask, other=0.0)
            g = tl.load(g_ptr + rows64, mask=rmask, other=0.0)
            d = tl.where(active & (alpha != 0)[:, None], alpha[:, None] * tl.exp(term - L_i[:, None]), 0.0)
            if KIND == 3:
                x = s - L_i[:, None]
                ex = tl.exp(x)
                d += tl.where(positive, (1.0 - ex) - x * ex, 0.0)
            else:
                beta = tl.load(st + 2, mask=rmask, other=0.0)
                d -= tl.where(positive, beta[:, None], 0.0)
            ds = d * g[:, None]
            if MODE == 1:
                cb = tl.load(c_ptr + cols64[:, None] * stride_cn + dd[None, :] * stride_cd,
                             mask=cmask[:, None] & dmask[None, :], other=0.0)
                if ALLOW_TF32:
                    acc = tl.dot(ds, cb, acc, input_precision="tf32")
                else:
                    acc = tl.dot(ds, cb, acc, input_precision="ieee")
            else:
                ab = tl.load(a_ptr + rows64[:, None] * stride_an + dd[None, :] * stride_ad,
                             mask=rmask[:, None] & dmask[None, :], other=0.0)
                if ALLOW_TF32:
                    acc = tl.dot(tl.trans(ds), ab, acc, input_precision="tf32")
                else:
                    acc = tl.dot(tl.trans(ds), ab, acc, input_precision="ieee")

    if MODE == 0:
        # row_finish
        rmask = rows < N
        rows64 = rows.to(tl.int64)
        L = tl.where(sum_run > 0, m_run + tl.log(tl.where(sum_run > 0, sum_run, 1.0)), 0.0)
        if IS_CONR:
            if KIND == 1:
                denom = npos_run + 1.0
            else:
                denom = npos_run
            ok = (npos_run > 0) & (nneg_run > 0)
            denom = tl.where(ok, denom, 1.0)
            loss = tl.where(ok, (npos_run * L - poss_run) / denom, 0.0)
            alpha = tl.where(ok, npos_run / denom, 0.0)
            beta = tl.where(ok, 1.0 / denom, 0.0)
        elif KIND == 2:
            ok = npos_run > 0
            npos_safe = tl.where(ok, npos_run, 1.0)
            loss = tl.where(ok, L - poss_run / npos_safe, 0.0)
            alpha = tl.where(ok, 1.0, 0.0).to(acc_ty)
            beta = tl.where(ok, 1.0 / npos_safe, 0.0)
        else:
            ok = npos_run > 0
            m_safe = tl.where(m_run == float("-inf"), L, m_run)
            scale = tl.exp(m_safe - L)
            es = poses_run + (m_safe - L) * pose_run
            loss = tl.where(ok, (poss_run - npos_run * L) - scale * es, 0.0)
            alpha = tl.where(ok, -(npos_run - scale * pose_run - scale * es), 0.0)
            beta = tl.zeros((BLOCK_R,), dtype=acc_ty)
        tl.store(loss_ptr + rows64, loss, mask=rmask)
        st = stats_ptr + rows64 * 4
        tl.store(st, L, mask=rmask)
        tl.store(st + 1, alpha, mask=rmask)
        tl.store(st + 2, beta, mask=rmask)
        tl.store(st + 3, npos_run, mask=rmask)
    else:
        acc = acc / temperature
        if MODE == 1:
            rows64 = rows.to(tl.int64)
            omask = (rows < N)[:, None] & dmask[None, :]
            tl.store(out_ptr + rows64[:, None] * stride_on + dd[None, :] * stride_od, acc, mask=omask)
        else:
            cols64 = cols.to(tl.int64)
            omask = (cols < M)[:, None] & dmask[None, :]
            optr = out_ptr + cols64[:, None] * stride_on + dd[None, :] * stride_od
            if ACCUMULATE:
                acc += tl.load(optr, mask=omask, other=0.0)
            tl.store(optr, acc, mask=omask)


# ----------------------------------------------------------------------------------------------
# launch configs, shared by the host code and the compile specs
# ----------------------------------------------------------------------------------------------
def _pow2_clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _config(mode: int, fp64: bool, n: int, m: int, d: int, label_loop: bool = False):
    """(BLOCK_R, BLOCK_C, BLOCK_K, BLOCK_D, num_warps) for a pass over n anchors, m candidates, D = d.

    Chosen so that the full-size tiles spill no registers on sm_90 (ptxas -v over the KERNELS specs; some
    clamped mid-size tiles spill 4-24 bytes at ~100 registers, a ptxas choice). The IEEE dots run
    on FMAs, whose operand layout holds a thread's whole K extent, so BLOCK_K is 16 and the backward's
    gradient dot (K = the streamed side's block) is narrowed where ConR's loop over L > 1 label columns
    (label_loop) keeps more tiles live.
    """
    if mode == MODE_FWD:
        br, bc, bd = 64, 32 if (fp64 or label_loop) else 64, 16
    else:
        inner = 16 if label_loop else 32 if fp64 else 64
        bd = 64 if fp64 else 128
        br, bc = (64, inner) if mode == MODE_BWD_ROWS else (inner, 64)
    br = _pow2_clamp(n, 16, br)
    bc = _pow2_clamp(m, 16, bc)
    bk = 16
    bd = _pow2_clamp(d, 16, bd)
    fixed = bc if mode == MODE_BWD_COLS else br
    tile = max(br * bc, 0 if mode == MODE_FWD else fixed * bd)
    if tile >= 2048:
        num_warps = 8
    else:  # the smallest tiles: ptxas spills a few bytes with 4 warps in the forward, with 2 in the backward
        num_warps = 4 if mode != MODE_FWD or tile >= 512 else 2
    return br, bc, bk, bd, num_warps


def _norm_code(label_len: int, p: float) -> int:
    if label_len == 1:
        return NORM_ABS
    if p == 2.0:
        return NORM_L2
    if p == 1.0:
        return NORM_L1
    if math.isinf(p):
        return NORM_MAX
    return NORM_P


# Compile specs for regops.triton._compile (one dict per cubin; see orthonormal.py for the keys).
def _spec(mode, kind, dtype="fp32", norm=NORM_ABS, accumulate=False, tf32=False, size=(256, 256, 128),
          variant=""):
    fp = f"*{dtype}"
    label = "*i64" if kind in (SUPCON, FOCAL) else fp
    br, bc, bk, bd, num_warps = _config(mode, dtype == "fp64", *size, label_loop=norm != NORM_ABS)
    ptrs = {"a_ptr": fp, "c_ptr": fp, "la_ptr": label, "lc_ptr": label, "pa_ptr": fp, "pc_ptr": fp,
            "w_ptr": fp, "params_ptr": fp, "g_ptr": fp, "stats_ptr": fp, "loss_ptr": fp, "out_ptr": fp}
    ints = {name: "i32" for name in ("N", "M", "D", "LABEL_LEN", "OFFSET", "stride_an", "stride_ad", "stride_cn",
                                     "stride_cd", "stride_on", "stride_od")}
    constexprs = {"KIND": kind, "NORM": norm, "MODE": mode, "ACCUMULATE": accumulate, "BLOCK_R": br,
                  "BLOCK_C": bc, "BLOCK_K": bk, "BLOCK_D": bd, "ALLOW_TF32": tf32}
    return {
        "fn": contrastive_kernel,
        "signature": {**ptrs, **ints, **{name: "constexpr" for name in constexprs}},
        "constexprs": constexprs,
        "num_warps": num_warps,
        "variant": variant or None,
    }


def _all_specs():
    kinds = {CONR_AGEDB: "agedb", CONR_NYUD2: "nyud2", SUPCON: "supcon", FOCAL: "focal"}
    modes = {MODE_FWD: "fwd", MODE_BWD_ROWS: "bwd_rows", MODE_BWD_COLS: "bwd_cols"}
    specs = [_spec(MODE_FWD, SUPCON)]  # the primary spec (bare kernel name)
    for dtype in ("fp32", "fp64"):  # every pass and kind, one label column
        for mode, mname in modes.items():
            for kind, kname in kinds.items():
                if (mode, kind, dtype) != (MODE_FWD, SUPCON, "fp32"):
                    specs.append(_spec(mode, kind, dtype, variant=f"{mname}-{kname}-{dtype}"))
        specs.append(_spec(MODE_BWD_COLS, SUPCON, dtype, accumulate=True, variant=f"bwd_cols-supcon-{dtype}-sym"))
    for mode, mname in modes.items():  # ConR with L > 1 label columns (the label loop, its own tile config)
        specs.append(_spec(mode, CONR_AGEDB, norm=NORM_L2, variant=f"{mname}-agedb-fp32-l2"))
        specs.append(_spec(mode, CONR_AGEDB, norm=NORM_P, variant=f"{mname}-agedb-fp32-p"))
        specs.append(_spec(mode, CONR_NYUD2, "fp64", norm=NORM_L2, variant=f"{mname}-nyud2-fp64-l2"))
        specs.append(_spec(mode, FOCAL, tf32=True, variant=f"{mname}-focal-fp32-tf32"))
        specs.append(_spec(mode, CONR_NYUD2, norm=NORM_L2, tf32=True, variant=f"{mname}-nyud2-fp32-l2-tf32"))
        specs.append(_spec(mode, CONR_AGEDB, size=(8, 8, 3), variant=f"{mname}-agedb-fp32-small"))
        specs.append(_spec(mode, SUPCON, "fp64", size=(8, 8, 3), variant=f"{mname}-supcon-fp64-small"))
    specs.append(_spec(MODE_FWD, CONR_AGEDB, norm=NORM_L1, variant="fwd-agedb-fp32-l1"))
    specs.append(_spec(MODE_FWD, CONR_AGEDB, norm=NORM_MAX, variant="fwd-agedb-fp32-max"))
    return specs


KERNELS = _all_specs()


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
def _check_device(t: torch.Tensor) -> None:
    _host.check_device(_OP, t, contrastive_kernel)


_device_guard = _host.device_guard


def _allow_tf32(t: torch.Tensor) -> bool:
    return bool(t.is_cuda and t.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32)


def _launch(mode, anchors, cands, labels, cand_labels, preds, cand_preds, weights, params, g, stats, loss, out,
            kind, norm, label_len, offset, accumulate=False):
    n, d = anchors.shape
    m = cands.shape[0]
    fp64 = anchors.dtype == torch.float64
    br, bc, bk, bd, num_warps = _config(mode, fp64, n, m, d, label_loop=norm != NORM_ABS)
    if mode == MODE_FWD:
        grid = (triton.cdiv(n, br), 1)
    elif mode == MODE_BWD_ROWS:
        grid = (triton.cdiv(n, br), triton.cdiv(d, bd))
    else:
        grid = (triton.cdiv(m, bc), triton.cdiv(d, bd))
    if grid[0] == 0 or grid[1] == 0:
        return
    with _device_guard(anchors):
        contrastive_kernel[grid](
            anchors, cands, labels, cand_labels, preds, cand_preds, weights, params, g, stats, loss, out,
            n, m, d, label_len, offset,
            anchors.stride(0), anchors.stride(1), cands.stride(0), cands.stride(1), out.stride(0), out.stride(1),
            KIND=kind, NORM=norm, MODE=mode, ACCUMULATE=accumulate, BLOCK_R=br, BLOCK_C=bc, BLOCK_K=bk,
            BLOCK_D=bd, ALLOW_TF32=_allow_tf32(anchors), num_warps=num_warps,
        )


_NORM_EPS = 1e-12  # F.normalize's


def _unit_rows(x):
    """The op's inputs are raw feature rows: z = x / max(‖x‖, eps), as F.normalize, and ‖x‖."""
    norm = torch.linalg.vector_norm(x, dim=1, dtype=torch.float64)  # fp32/bf16: no overflow of the squares
    if x.dtype == torch.float64:  # rows beyond 1e154 overflow float64's squares too: scale them by their max first
        top = x.abs().amax(1)
        scaled = torch.linalg.vector_norm(x / torch.where(top > 0, top, torch.ones_like(top))[:, None], dim=1) * top
        norm = torch.where(torch.isinf(norm), scaled, norm)
    norm = norm.to(x.dtype)
    return x / norm.clamp_min(_NORM_EPS)[:, None], norm


def _unit_rows_backward(g, z, norm):
    """d/dx of ⟨g, x/max(‖x‖, eps)⟩: (g − z⟨z, g⟩)/‖x‖, or g/eps where ‖x‖ ≤ eps."""
    proj = (g - z * (z * g).sum(1, keepdim=True)) / norm.clamp_min(_NORM_EPS)[:, None]
    return torch.where((norm > _NORM_EPS)[:, None], proj, g / _NORM_EPS)


def _prepare(anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind, temperature, threshold,
             push, label_norm):
    """Contiguous operands with the symmetric case resolved, dummies for unused pointers, and the params."""
    dt, dev = anchors.dtype, anchors.device
    cands = anchors if candidates is None else candidates
    labels = labels.contiguous()
    cand_labels = labels if candidates is None else cand_labels.contiguous()
    if kind in (SUPCON, FOCAL):
        preds = cand_preds = weights = anchors  # not read
    else:
        preds = preds.contiguous()
        cand_preds = preds if candidates is None else cand_preds.contiguous()
        weights = torch.ones(anchors.shape[0], dtype=dt, device=dev) if weights is None else weights.contiguous()
    params = torch.tensor([temperature, threshold, push, label_norm], dtype=dt, device=dev)
    return cands, labels, cand_labels, preds, cand_preds, weights, params


@torch.library.custom_op("regops::contrastive_fwd_triton", mutates_args=())
def contrastive_fwd_triton(anchors: torch.Tensor, candidates: Optional[torch.Tensor], labels: torch.Tensor,
                           cand_labels: Optional[torch.Tensor], preds: Optional[torch.Tensor],
                           cand_preds: Optional[torch.Tensor], weights: Optional[torch.Tensor], kind: int,
                           offset: int, temperature: float, threshold: float, push: float,
                           label_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    n, m, d, label_len = contract.check("contrastive_fwd", anchors, candidates, labels, cand_labels, preds, cand_preds,
                                        weights, kind, offset, temperature, threshold, push, label_norm, None)
    _check_device(anchors)
    loss = anchors.new_zeros((n,))
    stats = anchors.new_zeros((n, ROW_STATS))
    if n == 0:
        return loss, stats
    anchors = _unit_rows(anchors)[0]
    candidates = None if candidates is None else _unit_rows(candidates)[0]
    cands, labels, cand_labels, preds, cand_preds, weights, params = _prepare(
        anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind, temperature, threshold, push,
        label_norm)
    _launch(MODE_FWD, anchors, cands, labels, cand_labels, preds, cand_preds, weights, params, loss, stats, loss,
            stats, kind, _norm_code(label_len, label_norm), label_len, offset)
    return loss, stats


contrastive_fwd_triton.register_fake(contract.fake_fwd)


@torch.library.custom_op("regops::contrastive_bwd_triton", mutates_args=())
def contrastive_bwd_triton(grad_row_loss: torch.Tensor, anchors: torch.Tensor, candidates: Optional[torch.Tensor],
                           labels: torch.Tensor, cand_labels: Optional[torch.Tensor],
                           preds: Optional[torch.Tensor], cand_preds: Optional[torch.Tensor],
                           weights: Optional[torch.Tensor], row_stats: torch.Tensor, kind: int, offset: int,
                           temperature: float, threshold: float, push: float,
                           label_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    n, m, d, label_len = contract.check("contrastive_bwd", anchors, candidates, labels, cand_labels, preds, cand_preds,
                                        weights, kind, offset, temperature, threshold, push, label_norm, None)
    contract.check_grads("contrastive_bwd", anchors, grad_row_loss, row_stats)
    _check_device(anchors)
    grad_a = anchors.new_zeros((n, d))
    grad_c = anchors.new_zeros((0, d)) if candidates is None else torch.zeros_like(candidates)
    if n == 0 or d == 0:
        return grad_a, grad_c
    anchors, norm_a = _unit_rows(anchors)
    if candidates is not None:
        candidates, norm_c = _unit_rows(candidates)
    cands, labels, cand_labels, preds, cand_preds, weights, params = _prepare(
        anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind, temperature, threshold, push,
        label_norm)
    g = grad_row_loss.to(anchors.dtype).contiguous()
    stats = row_stats.contiguous()
    norm = _norm_code(label_len, label_norm)
    common = (labels, cand_labels, preds, cand_preds, weights, params, g, stats)
    _launch(MODE_BWD_ROWS, anchors, cands, *common, g, grad_a, kind, norm, label_len, offset)
    if candidates is None:  # the column role of the same rows, added into grad_a
        _launch(MODE_BWD_COLS, anchors, cands, *common, g, grad_a, kind, norm, label_len, offset, accumulate=True)
    elif m > 0:
        _launch(MODE_BWD_COLS, anchors, cands, *common, g, grad_c, kind, norm, label_len, offset)
    grad_a = _unit_rows_backward(grad_a, anchors, norm_a)  # from d/dz to d/d(features)
    if candidates is not None and m > 0:
        grad_c = _unit_rows_backward(grad_c, candidates, norm_c)
    return grad_a, grad_c


contrastive_bwd_triton.register_fake(contract.fake_bwd)
