"""Triton kernels of the parameter repulsion of "Adapt then Unlearn" (regops.param_repulsion).

The math is ``csrc/include/regops/repulsion_math.h``'s; the oracle is ``regops.reference.repulsion``. Two custom ops,
the schemas of the compiled ``repulsion_fwd`` / ``repulsion_bwd``:

- ``torch.ops.regops.repulsion_fwd_triton(params, anchor_means) -> sums``: sums[t] = Σ_e (θ_t[e] − φ̄_t[e])², (T,)
  in the accumulation dtype (float32 for float32/bfloat16/float16, float64 for float64).
- ``torch.ops.regops.repulsion_bwd_triton(grad_sums, params, anchor_means) -> grads``: 2·grad_sums[t]·(θ_t − φ̄_t),
  in params' dtype.

One kernel, ``repulsion_kernel`` (``MODE`` 0 forward, 1 backward), one launch per call for the whole list (the
contract gives the list one dtype). A program owns BLOCK consecutive elements of one tensor. The host builds one
int64 table for the call (one host-to-device copy):

    [theta ptrs (T), mean ptrs (T), grad ptrs (T), numels (T), first program (T), tensor of program (NP)]

and the data pointers are int64 addresses cast with ``.to(tl.pointer_type(DTYPE))`` (as in triton/graddrop.py;
under TRITON_INTERPRET=1 an address is a host address). The forward writes one partial per program, in the
accumulation dtype; the host adds them per tensor in float64 (``index_add_``). bfloat16 results are rounded to
nearest even on the bits (the interpreter's own float32 -> bfloat16 cast truncates).

``KERNELS`` lists the compile specs used by ``regops.triton._compile`` to build sm_90 cubins.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _host
from ._jit import _cast_rn
from .._constants import acc_dtype
from ..contracts import repulsion as contract

BLOCK = 1024
NUM_WARPS = 4
_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64, torch.bfloat16: tl.bfloat16,
             torch.float16: tl.float16}


@triton.jit
def repulsion_kernel(tab_ptr, gs_ptr, part_ptr, T,
                     MODE: tl.constexpr, DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """See the module docstring. tab_ptr: the int64 table; gs_ptr: grad_sums (MODE 1); part_ptr: the (NP,)
    partials (MODE 0). Unused pointers get any tensor."""
    pid = tl.program_id(0)
    i = tl.load(tab_ptr + 5 * T + pid)
    numel = tl.load(tab_ptr + 3 * T + i)
    blk = pid - tl.load(tab_ptr + 4 * T + i)
    offs = blk * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = offs < numel
    th_p = tl.load(tab_ptr + i).to(tl.pointer_type(DTYPE))
    mu_p = tl.load(tab_ptr + T + i).to(tl.pointer_type(DTYPE))
    th = tl.load(th_p + offs, mask=mask, other=0.0).to(ACC)
    mu = tl.load(mu_p + offs, mask=mask, other=0.0).to(ACC)
    d = th - mu
    if MODE == 0:
        tl.store(part_ptr + pid, tl.sum(d * d, axis=0))
    else:
        g_p = tl.load(tab_ptr + 2 * T + i).to(tl.pointer_type(DTYPE))
        two_g = 2.0 * tl.load(gs_ptr + i)
        res = two_g * d
        tl.store(g_p + offs, _cast_rn(res, DTYPE), mask=mask)


_TT_NAME = {tl.float32: "fp32", tl.float64: "fp64", tl.bfloat16: "bf16", tl.float16: "fp16"}


def _spec(mode, dtype):
    acc = tl.float64 if dtype == tl.float64 else tl.float32
    return {
        "fn": repulsion_kernel,
        "signature": {"tab_ptr": "*i64", "gs_ptr": f"*{_TT_NAME[acc]}", "part_ptr": f"*{_TT_NAME[acc]}", "T": "i64",
                      "MODE": "constexpr", "DTYPE": "constexpr", "ACC": "constexpr", "BLOCK": "constexpr"},
        "constexprs": {"MODE": mode, "DTYPE": dtype, "ACC": acc, "BLOCK": BLOCK},
        "num_warps": NUM_WARPS,
        "variant": None if (mode, dtype) == (0, tl.float32) else f"{('fwd', 'bwd')[mode]}-{_TT_NAME[dtype]}",
    }


KERNELS = [_spec(mode, dt) for mode in (0, 1) for dt in (tl.float32, tl.float64, tl.bfloat16, tl.float16)]


def _table(params, means, grads):
    """The int64 table of the call (module docstring), the number of programs, and the program -> tensor map."""
    numel = torch.tensor([p.numel() for p in params], dtype=torch.int64)
    blocks = (numel + (BLOCK - 1)) // BLOCK
    first = torch.cumsum(blocks, 0) - blocks
    prog = torch.repeat_interleave(torch.arange(len(params), dtype=torch.int64), blocks)
    g_addr = [g.data_ptr() for g in grads] if grads is not None else [0] * len(params)
    head = torch.tensor([p.data_ptr() for p in params] + [m.data_ptr() for m in means] + g_addr, dtype=torch.int64)
    table = torch.cat([head, numel, first, prog])
    dev = params[0].device
    if dev.type == "cuda":
        table = table.pin_memory().to(dev, non_blocking=True)
    return table, int(blocks.sum()), table[5 * len(params):]


@torch.library.custom_op("regops::repulsion_fwd_triton", mutates_args=())
def repulsion_fwd_triton(params: list[torch.Tensor], anchor_means: list[torch.Tensor]) -> torch.Tensor:
    contract.check_lists("repulsion_fwd", params, anchor_means, None)
    _host.check_device("regops.repulsion_fwd", params[0], repulsion_kernel)
    acc = acc_dtype(params[0].dtype)
    th = [p.contiguous() for p in params]
    mu = [m.contiguous() for m in anchor_means]
    table, nprog, prog = _table(th, mu, None)
    sums = torch.zeros(len(params), dtype=torch.float64, device=params[0].device)
    if nprog == 0:
        return sums.to(acc)
    partials = torch.empty(nprog, dtype=acc, device=params[0].device)
    with _host.device_guard(partials):
        repulsion_kernel[(nprog,)](table, partials, partials, len(params), MODE=0, DTYPE=_TL_DTYPE[params[0].dtype],
                                   ACC=_TL_DTYPE[acc], BLOCK=BLOCK, num_warps=NUM_WARPS)
    return sums.index_add_(0, prog, partials.double()).to(acc)


repulsion_fwd_triton.register_fake(contract.fake_fwd)


@torch.library.custom_op("regops::repulsion_bwd_triton", mutates_args=())
def repulsion_bwd_triton(grad_sums: torch.Tensor, params: list[torch.Tensor],
                         anchor_means: list[torch.Tensor]) -> list[torch.Tensor]:
    contract.check_lists("repulsion_bwd", params, anchor_means, None)
    contract.check_grad(grad_sums, params)
    _host.check_device("regops.repulsion_bwd", params[0], repulsion_kernel)
    th = [p.contiguous() for p in params]
    mu = [m.contiguous() for m in anchor_means]
    grads = [torch.empty_like(p, memory_format=torch.contiguous_format) for p in th]
    table, nprog, _ = _table(th, mu, grads)
    if nprog > 0:
        gs = grad_sums.contiguous()
        with _host.device_guard(gs):
            repulsion_kernel[(nprog,)](table, gs, gs, len(params), MODE=1, DTYPE=_TL_DTYPE[params[0].dtype],
                                       ACC=_TL_DTYPE[gs.dtype], BLOCK=BLOCK, num_warps=NUM_WARPS)
    return grads


repulsion_bwd_triton.register_fake(contract.fake_bwd)
