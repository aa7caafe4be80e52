"""R-AMT gradient dropout over a ViT-B/16-sized set of masked tensors (160 tensors of 768×208 float32, 25.6M
elements): the fused multi-tensor op against the per-tensor eager loop (the official step's formula with
rand_like), a torch._foreach_ version, and the memory-bandwidth bound: the bytes the op must move (read g_a and
g_b, write the result: 12 B per element) over this machine's copy bandwidth, measured in the same run."""
from __future__ import annotations

import torch

import regops
from regops import _registry
from regops.ops import graddrop as GD

from ..harness import Case

N_TENSORS, SHAPE = 160, (768, 208)
QUICK_N = 40
LAM = 0.5


def _lists(n, device):
    g = torch.Generator().manual_seed(0)
    ga = [torch.randn(SHAPE, generator=g).to(device) for _ in range(n)]
    gb = [torch.randn(SHAPE, generator=g).to(device) for _ in range(n)]
    params = [torch.nn.Parameter(torch.zeros(SHAPE, device=device)) for _ in range(n)]
    return params, ga, gb


def loop(s):
    params, ga, gb = s
    for p, a, b in zip(params, ga, gb):
        P = (torch.sign(a) * (a + b) / (a.abs() + b.abs() + 1e-8) + 1) / 2
        U = torch.rand_like(a)
        p.grad = ((1 - LAM) + LAM * (P > U).to(a.dtype)) * a


def foreach(s):
    params, ga, gb = s
    num = torch._foreach_mul([torch.sign(a) for a in ga], torch._foreach_add(ga, gb))
    den = torch._foreach_add(torch._foreach_add(torch._foreach_abs(ga), torch._foreach_abs(gb)), 1e-8)
    P = torch._foreach_div(torch._foreach_add(torch._foreach_div(num, den), 1.0), 2.0)
    keep = [(p > torch.rand_like(p)).to(p.dtype) for p in P]
    scale = torch._foreach_add(torch._foreach_mul(keep, LAM), 1 - LAM)
    for p, g in zip(params, torch._foreach_mul(scale, ga)):
        p.grad = g


def fused(impl):
    def run(s):
        params, ga, gb = s
        regops.graddrop_(params, ga, gb, lam=LAM, impl=impl)
    return run


def cases(quick: bool, device: torch.device) -> list[Case]:
    n = QUICK_N if quick else N_TENSORS
    numel = n * SHAPE[0] * SHAPE[1]
    size = f"{n}x{SHAPE[0]}x{SHAPE[1]}"
    setup = lambda: _lists(n, device)  # noqa: E731
    out = [Case("graddrop_", size, "loop", setup, loop, baseline="loop", predicted_bytes=8 * 4 * numel,
                note="per-tensor eager loop with rand_like"),
           Case("graddrop_", size, "foreach", setup, foreach, baseline="loop", predicted_bytes=10 * 4 * numel)]
    for impl in (["cpu"] if device.type == "cpu" else ["cuda", "triton"]):
        ok, why = _registry.available("graddrop_", impl, device)
        out.append(Case("graddrop_", size, impl, setup, fused(impl), baseline="loop", predicted_bytes=4 * 4 * numel,
                        skip=None if ok else why))

    def copy_setup():
        src = torch.randn(numel, device=device)
        return src, torch.empty_like(src)

    # 12 B per element (read a, b; write out) at the copy bandwidth (a copy moves 8 B per element).
    out.append(Case("graddrop_", size, "bandwidth-bound", copy_setup, baseline="loop", memory=False,
                    parts=((12 / 8, lambda s: s[1].copy_(s[0])),),
                    note="1.5 × time(copy of N floats): 12 B/element at the measured copy bandwidth"))
    return out
