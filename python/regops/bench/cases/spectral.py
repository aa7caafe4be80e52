"""spectral_norm_penalty, forward + backward: the batched power iteration against the eager per-layer loop.

One training step's regularizer on L layers of h x w: one power iteration per layer (u ← normalize(W v),
v ← normalize(Wᵀ u), under no_grad, state kept between steps), σ_l = u_lᵀ W_l v_l, Σ σ_l, backward into every
weight's .grad. Providers:
- `eager-loop` (the baseline): that step written per layer, as torch.nn.utils.parametrizations.spectral_norm
  does it (its _power_method, then vdot(u, mv(W, v))), summed, backward;
- `reference`: regops.spectral_norm_penalty(impl="reference") (small layers of one shape stacked for bmm, large
  ones one mv per layer);
- `compiled-reference`: the same under torch.compile (dynamic=False);
- `cpu` / `cuda` / `triton`: the fused kernels (one power-iteration call and one outer-product call for the list).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import regops
from regops import _registry

from ..harness import Case

SIZES = ((50, 512, 512), (200, 64, 64), (50, 1024, 1024))
QUICK_SIZES = ((50, 512, 512), (200, 64, 64))
F32 = 4


def _weights(L, h, w, device):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(h, w, generator=g) / w ** 0.5).to(device).requires_grad_() for _ in range(L)]


def _vectors(L, h, w, device):
    g = torch.Generator().manual_seed(1)
    us = [F.normalize(torch.randn(h, generator=g), dim=0).to(device) for _ in range(L)]
    vs = [F.normalize(torch.randn(w, generator=g), dim=0).to(device) for _ in range(L)]
    return us, vs


def eager_loop_step(weights, us, vs, eps=1e-12):
    total = 0
    for W, u, v in zip(weights, us, vs):
        with torch.no_grad():
            u.copy_(F.normalize(torch.mv(W, v), dim=0, eps=eps))
            v.copy_(F.normalize(torch.mv(W.t(), u), dim=0, eps=eps))
        total = total + torch.vdot(u.clone(), torch.mv(W, v.clone()))
    return total


def cases(quick: bool, device: torch.device) -> list[Case]:
    out = []
    for L, h, w in (QUICK_SIZES if quick else SIZES):
        op, size, nbytes = "spectral_norm_penalty", f"{L}x{h}x{w}", L * h * w * F32

        def loop_setup(L=L, h=h, w=w):
            return _weights(L, h, w, device), *_vectors(L, h, w, device)

        def loop_fn(s):
            ws, us, vs = s
            for t in ws:
                t.grad = None
            eager_loop_step(ws, us, vs).backward()

        def ref_setup(L=L, h=h, w=w):
            ws = _weights(L, h, w, device)
            us, vs = _vectors(L, h, w, device)
            return ws, regops.SpectralNormState.from_vectors(ws, us, vs)

        def fused(impl):
            def run(s):
                ws, st = s
                for t in ws:
                    t.grad = None
                regops.spectral_norm_penalty(ws, 1, st, impl=impl)[0].backward()
            return run

        def compiled_setup(L=L, h=h, w=w):
            ws, st = ref_setup(L, h, w)
            f = torch.compile(lambda ws, st: regops.spectral_norm_penalty(ws, 1, st, impl="reference")[0],
                              dynamic=False)
            return ws, st, f

        def compiled_fn(s):
            ws, st, f = s
            for t in ws:
                t.grad = None
            f(ws, st).backward()

        base = dict(baseline="eager-loop", predicted_bytes=4 * nbytes)
        out += [Case(op, size, "eager-loop", loop_setup, loop_fn, **base),
                Case(op, size, "reference", ref_setup, fused("reference"), **base),
                Case(op, size, "compiled-reference", compiled_setup, compiled_fn, **base)]
        for impl in (["cpu"] if device.type == "cpu" else ["cuda", "triton"]):
            ok, why = _registry.available(op, impl, device)
            out.append(Case(op, size, impl, ref_setup, fused(impl), skip=None if ok else why, **base))
    return out
