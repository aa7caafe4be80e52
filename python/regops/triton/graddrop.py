"""Triton kernel of R-AMT's gradient dropout (regops.graddrop_), bit-identical to the torch reference.

The per-element rule, the Philox4x32-10 counter layout and keep_prob's order of operations are those of
``csrc/include/regops/graddrop_math.h``; the oracle is ``regops.reference.graddrop``. Two custom ops:

- ``torch.ops.regops.graddrop_apply_triton(out, grads_task, grads_reg, lam, seed) -> counts``: for every
  tensor t of the lists and flat (row-major) element e, with a, b = grads_task[t][e], grads_reg[t][e] in
  float32: out[t][e] = a if P(a, b) > U(seed, t, e) else a·float32(1 − lam), rounded to out[t]'s dtype.
  Mutates ``out`` (out[t] may be grads_task[t]); returns int64 (T,) counts of the elements whose a or b is
  non-finite, on the device, without a host sync.
- ``torch.ops.regops.graddrop_keep_prob_triton(grad_task, grad_reg) -> P``: P elementwise in float32, returned
  in grad_task's dtype.

One kernel, ``graddrop_kernel``, three passes (``MODE``), since the compile check of ``regops.triton._compile``
admits no @triton.jit helpers: MODE_APPLY, MODE_KEEP_PROB and MODE_PHILOX (the raw Philox words of given
counters and keys, for the known-answer test only).

Launches (MODE_APPLY): the tensors are grouped by dtype and each group takes ONE launch over its flattened
element space. A program owns BLOCK consecutive elements of one tensor. The host builds one int64 table for
the whole call (one host-to-device copy); a group's slice of it is

    [seed low word, seed high word, out ptrs (G), task ptrs (G), reg ptrs (G), numels (G),
     first program (G), list index t (G), tensor of program (NP)]

for G tensors and NP = Σ_t cdiv(numel_t, BLOCK) programs. A program reads its tensor i from the last
section, its block from ``pid − first[i]``, and the data pointers as int64 addresses cast with
``.to(tl.pointer_type(DTYPE))`` (this works under TRITON_INTERPRET=1 too, where an address is a host
address). When every address of the group is 16-byte aligned (``ALIGNED``) the kernel says so to the compiler,
which then vectorizes the loads and stores. The per-tensor non-finite count is one int64 atomic add per
program that saw a non-finite value.

Philox in Triton: uint32 words, ``tl.umulhi`` for the high and a wrapping uint32 multiply for the low word of
each product, 10 rounds unrolled with ``tl.static_range``. A program computes the BLOCK/4 counter groups
(e0/4 + k, e0 a multiple of BLOCK) once, turns each word into U = (word >> 8)·2^-24, and interleaves the four
(BLOCK/4,) uniforms into the (BLOCK,) of its elements with ``tl.join`` + ``tl.reshape`` (element 4g + w
takes word w of group g). keep_prob divides with ``tl.math.div_rn`` (IEEE round-to-nearest; Triton's ``/`` is
approximate on CUDA) and has no multiply feeding an add, so no FMA contraction can change its bits.
bfloat16 is converted to and from float32 on the bits (a shift; round to nearest even by the usual integer
trick, NaN to 0x7FC0): the same integer code on every backend, and the interpreter's own float32 -> bfloat16
cast truncates (Triton 3.8), which would not give the reference's bits.

On CPU tensors the kernel runs only under TRITON_INTERPRET=1, which must be set before triton is first
imported. ``KERNELS`` lists the compile specs used by ``regops.triton._compile`` to build sm_90 cubins.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _host
from ._jit import _cast_rn
from ..contracts import graddrop as contract

MODE_APPLY, MODE_KEEP_PROB, MODE_PHILOX = 0, 1, 2
BLOCK = 1024          # elements per program (a multiple of 4: a program owns whole Philox groups)
NUM_WARPS = 4
_TL_DTYPE = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
_MASK32 = 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------
# kernel
# ----------------------------------------------------------------------------------------------
@triton.jit
def graddrop_kernel(
    tab_ptr, cnt_ptr, x_ptr, y_ptr, o_ptr,
    n, G, drop_scale,
    MODE: tl.constexpr, DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
):
    """See the module docstring.

    MODE_APPLY: tab_ptr is the group's int64 table slice (G tensors of dtype DTYPE), cnt_ptr the int64 (T,)
    counts; x/y/o_ptr and n unused. MODE_KEEP_PROB: o = P(x, y) for n elements (contiguous). MODE_PHILOX:
    x_ptr is int64 (n, 6) rows (c0, c1, c2, c3, k0, k1), o_ptr int64 (n, 4) the output words; BLOCK rows per
    program. Unused pointers get any tensor.
    """
    pid = tl.program_id(0)
    QB: tl.constexpr = BLOCK // 4
    if MODE == 0:
        i = tl.load(tab_ptr + 2 + 6 * G + pid)                 # the program's tensor, in the group
        tg = tl.load(tab_ptr + 2 + 5 * G + i)                  # its index t in the lists
        numel = tl.load(tab_ptr + 2 + 3 * G + i)
        blk = pid - tl.load(tab_ptr + 2 + 4 * G + i)
        e0 = blk * BLOCK                                       # int64 (table entries are int64)
        grp = e0 // 4 + tl.arange(0, QB).to(tl.int64)
        c0 = (grp & 0xFFFFFFFF).to(tl.uint32)
        c1 = (grp >> 32).to(tl.uint32)
        c2 = tl.zeros((QB,), tl.uint32) + tg.to(tl.uint32)
        c3 = tl.zeros((QB,), tl.uint32)
        k0 = tl.zeros((QB,), tl.uint32) + tl.load(tab_ptr).to(tl.uint32)
        k1 = tl.zeros((QB,), tl.uint32) + tl.load(tab_ptr + 1).to(tl.uint32)
    elif MODE == 2:
        rows = pid.to(tl.int64) * QB + tl.arange(0, QB)
        rmask = rows < n
        c0 = tl.load(x_ptr + rows * 6, mask=rmask, other=0).to(tl.uint32)
        c1 = tl.load(x_ptr + rows * 6 + 1, mask=rmask, other=0).to(tl.uint32)
        c2 = tl.load(x_ptr + rows * 6 + 2, mask=rmask, other=0).to(tl.uint32)
        c3 = tl.load(x_ptr + rows * 6 + 3, mask=rmask, other=0).to(tl.uint32)
        k0 = tl.load(x_ptr + rows * 6 + 4, mask=rmask, other=0).to(tl.uint32)
        k1 = tl.load(x_ptr + rows * 6 + 5, mask=rmask, other=0).to(tl.uint32)

    if MODE != 1:
        # Philox4x32-10 (graddrop_math.h's philox4x32_10), on uint32 words
        m0 = tl.full((QB,), 0xD2511F53, tl.uint32)
        m1 = tl.full((QB,), 0xCD9E8D57, tl.uint32)
        w0 = tl.full((QB,), 0x9E3779B9, tl.uint32)
        w1 = tl.full((QB,), 0xBB67AE85, tl.uint32)
        for r in tl.static_range(10):
            if r > 0:
                k0 = k0 + w0
                k1 = k1 + w1
            hi0 = tl.umulhi(m0, c0)
            lo0 = m0 * c0
            hi1 = tl.umulhi(m1, c2)
            lo1 = m1 * c2
            n0 = hi1 ^ c1 ^ k0
            n2 = hi0 ^ c3 ^ k1
            c0 = n0
            c1 = lo1
            c2 = n2
            c3 = lo0

    if MODE == 2:
        tl.store(o_ptr + rows * 4, c0.to(tl.int64), mask=rmask)
        tl.store(o_ptr + rows * 4 + 1, c1.to(tl.int64), mask=rmask)
        tl.store(o_ptr + rows * 4 + 2, c2.to(tl.int64), mask=rmask)
        tl.store(o_ptr + rows * 4 + 3, c3.to(tl.int64), mask=rmask)
    else:
        if MODE == 0:
            offs = e0 + tl.arange(0, BLOCK)
            lim = numel
            a_addr = tl.load(tab_ptr + 2 + G + i)
            b_addr = tl.load(tab_ptr + 2 + 2 * G + i)
            o_addr = tl.load(tab_ptr + 2 + i)
            a_p = a_addr.to(tl.pointer_type(DTYPE))
            b_p = b_addr.to(tl.pointer_type(DTYPE))
            o_p = o_addr.to(tl.pointer_type(DTYPE))
            if ALIGNED:
                a_p = tl.multiple_of(a_p, 16)
                b_p = tl.multiple_of(b_p, 16)
                o_p = tl.multiple_of(o_p, 16)
        else:
            e0 = pid.to(tl.int64) * BLOCK
            offs = e0 + tl.arange(0, BLOCK)
            lim = n
            a_p = x_ptr
            b_p = y_ptr
            o_p = o_ptr
        mask = offs < lim
        # a full block loads and stores unmasked: the mask of an unknown length would stop the vectorization
        full = e0 + BLOCK <= lim
        if full:
            av = tl.load(a_p + offs)
            bv = tl.load(b_p + offs)
        else:
            av = tl.load(a_p + offs, mask=mask, other=0.0)
            bv = tl.load(b_p + offs, mask=mask, other=0.0)
        if DTYPE == tl.bfloat16:
            # bfloat16 <-> float32 by hand, on the bits (see the module docstring)
            a = (av.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
            b = (bv.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
        else:
            a = av.to(tl.float32)
            b = bv.to(tl.float32)
        # keep_prob, in graddrop_math.h's order of operations
        s = (a > 0.0).to(tl.float32) - (a < 0.0).to(tl.float32)
        num = s * (a + b)
        den = (tl.abs(a) + tl.abs(b)) + 1e-8
        p = (tl.math.div_rn(num, den) + 1.0) * 0.5
        if MODE == 1:
            res = p
        else:
            # U of the group's four words, interleaved: element 4g + w takes word w of group g
            scale = 1.0 / 16777216.0
            u0 = (c0 >> 8).to(tl.float32) * scale
            u1 = (c1 >> 8).to(tl.float32) * scale
            u2 = (c2 >> 8).to(tl.float32) * scale
            u3 = (c3 >> 8).to(tl.float32) * scale
            u = tl.reshape(tl.join(tl.join(u0, u2), tl.join(u1, u3)), (BLOCK,))
            res = tl.where(p > u, a, a * drop_scale)
            bad = ((tl.abs(a) < float("inf")) & (tl.abs(b) < float("inf"))) == 0
            nbad = tl.sum((bad & mask).to(tl.int32), axis=0)
            if nbad > 0:
                tl.atomic_add(cnt_ptr + tg, nbad.to(tl.int64))
        resv = _cast_rn(res, DTYPE)
        if full:
            tl.store(o_p + offs, resv)
        else:
            tl.store(o_p + offs, resv, mask=mask)


# ----------------------------------------------------------------------------------------------
# compile specs (regops.triton._compile)
# ----------------------------------------------------------------------------------------------
_TT_NAME = {tl.float32: "fp32", tl.bfloat16: "bf16", tl.float16: "fp16"}


def _spec(mode, dtype, aligned=True, variant=None):
    io = f"*{_TT_NAME[dtype]}"
    return {
        "fn": graddrop_kernel,
        # as the host launches them: keep_prob passes its input for the unused pointers, the others int64 tensors
        "signature": {**{name: io if mode == MODE_KEEP_PROB else "*i64"
                         for name in ("tab_ptr", "cnt_ptr", "x_ptr", "y_ptr", "o_ptr")},
                      "n": "i64", "G": "i32", "drop_scale": "fp32",
                      "MODE": "constexpr", "DTYPE": "constexpr", "ALIGNED": "constexpr", "BLOCK": "constexpr"},
        "constexprs": {"MODE": mode, "DTYPE": dtype, "ALIGNED": aligned, "BLOCK": BLOCK},
        "num_warps": NUM_WARPS,
        "variant": variant,
    }


def _all_specs():
    specs = []
    for dt in (tl.float32, tl.bfloat16, tl.float16):
        name = _TT_NAME[dt]
        specs.append(_spec(MODE_APPLY, dt, variant=None if dt == tl.float32 else f"apply-{name}"))
        specs.append(_spec(MODE_APPLY, dt, aligned=False, variant=f"apply-{name}-unaligned"))
        specs.append(_spec(MODE_KEEP_PROB, dt, variant=f"keep_prob-{name}"))
    specs.append(_spec(MODE_PHILOX, tl.float32, variant="philox"))
    return specs


KERNELS = _all_specs()


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
_APPLY = "graddrop_"
_KEEP = "graddrop_keep_prob"


def _build_table(out, task, reg, seed):
    """The int64 table of the whole call (see the module docstring) and, per dtype group, (dtype, slice
    offset, G, NP, aligned)."""
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    groups = {}
    for t, a in enumerate(task):
        if a.numel() > 0:
            groups.setdefault(a.dtype, []).append(t)
    parts, launches, off = [], [], 0
    for dtype, ts in groups.items():
        g = len(ts)
        numel = torch.tensor([task[t].numel() for t in ts], dtype=torch.int64)
        blocks = (numel + (BLOCK - 1)) // BLOCK
        first = torch.cumsum(blocks, 0) - blocks
        nprog = int(blocks.sum())
        addrs = [[x[t].data_ptr() for t in ts] for x in (out, task, reg)]
        aligned = all(p % 16 == 0 for row in addrs for p in row)
        head = torch.tensor([k0, k1, *addrs[0], *addrs[1], *addrs[2]], dtype=torch.int64)
        prog = torch.repeat_interleave(torch.arange(g, dtype=torch.int64), blocks)
        part = torch.cat([head, numel, first, torch.tensor(ts, dtype=torch.int64), prog])
        parts.append(part)
        launches.append((dtype, off, g, nprog, aligned))
        off += part.numel()
    return (torch.cat(parts) if parts else None), launches


@torch.library.custom_op("regops::graddrop_apply_triton", mutates_args=("out",),
                         schema="(Tensor(a!)[] out, Tensor[] grads_task, Tensor[] grads_reg, float lam, int seed) "
                                "-> Tensor")
def graddrop_apply_triton(out: list[torch.Tensor], grads_task: list[torch.Tensor], grads_reg: list[torch.Tensor],
                          lam: float, seed: int) -> torch.Tensor:
    contract.check_lists(out, grads_task, grads_reg, lam, None)
    if not out:
        return torch.zeros(0, dtype=torch.int64)
    dev = out[0].device
    _host.check_device("regops." + _APPLY, grads_task[0], graddrop_kernel)
    counts = torch.zeros(len(grads_task), dtype=torch.int64, device=dev)
    # inputs in row-major order (the flat element index e); the copies live until the launches are queued
    task = [a.contiguous() for a in grads_task]
    reg = [b.contiguous() for b in grads_reg]
    table, launches = _build_table(out, task, reg, int(seed))
    if table is None:
        return counts
    if dev.type == "cuda":
        table = table.pin_memory().to(dev, non_blocking=True)
    drop = float(torch.tensor(1.0 - float(lam), dtype=torch.float64).float())  # float32(1 − lam), exact in fp32
    with _host.device_guard(counts):
        for dtype, off, g, nprog, aligned in launches:
            graddrop_kernel[(nprog,)](
                table[off:], counts, counts, counts, counts, 0, g, drop,
                MODE=MODE_APPLY, DTYPE=_TL_DTYPE[dtype], ALIGNED=aligned, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return counts


graddrop_apply_triton.register_fake(contract.fake_apply)


@torch.library.custom_op("regops::graddrop_keep_prob_triton", mutates_args=())
def graddrop_keep_prob_triton(grad_task: torch.Tensor, grad_reg: torch.Tensor) -> torch.Tensor:
    contract.check_pair(grad_task, grad_reg, None)
    _host.check_device("regops." + _KEEP, grad_task, graddrop_kernel)
    a, b = grad_task.contiguous(), grad_reg.contiguous()
    out = torch.empty_like(a)
    n = a.numel()
    if n > 0:
        with _host.device_guard(out):
            graddrop_kernel[(triton.cdiv(n, BLOCK),)](
                a, a, a, b, out, n, 0, 1.0,
                MODE=MODE_KEEP_PROB, DTYPE=_TL_DTYPE[a.dtype], ALIGNED=False, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


@graddrop_keep_prob_triton.register_fake
def _keep_fake(grad_task, grad_reg):
    contract.check_pair(grad_task, grad_reg, None)
    return torch.empty_like(grad_task, memory_format=torch.contiguous_format)


def philox_words(counters: torch.Tensor) -> torch.Tensor:
    """Test helper: the Philox4x32-10 output words (n, 4) int64 of int64 rows (c0, c1, c2, c3, k0, k1) (n, 6),
    computed by graddrop_kernel's Philox (MODE_PHILOX)."""
    x = counters.to(torch.int64).contiguous()
    n = x.shape[0]
    out = torch.zeros((n, 4), dtype=torch.int64, device=x.device)
    _host.check_device("regops.graddrop_philox_words", x, graddrop_kernel)
    if n > 0:
        with _host.device_guard(out):
            graddrop_kernel[(triton.cdiv(n, BLOCK // 4),)](
                x, x, x, x, out, n, 0, 1.0,
                MODE=MODE_PHILOX, DTYPE=tl.float32, ALIGNED=False, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out
