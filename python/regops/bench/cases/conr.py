"""ConR, forward + backward: the official formulation (regops/bench/baselines/conr_official.py), the max-shifted
reference and its torch.compile'd form, the fused kernels, and `gemm-exp-bound`: the time torch needs for
the same-shaped GEMMs (S = Z Zᵀ and E·Z) plus one exp over N² elements, the work of any materializing impl.
The fused kernel does S's lower half in the forward, recomputes it in the backward and does E·Z: about
3·N²·D multiply-adds and 2·N² exps."""
from __future__ import annotations

import torch

import regops
from regops import _registry

from ..baselines.conr_official import conr_official
from ..harness import Case

SIZES = [(n, d) for n in (256, 1024, 4096, 8192, 32768) for d in (128, 512, 2048)]
QUICK_SIZES = [(256, 512), (1024, 512)]
TAU, OMEGA, PUSH = 0.07, 1.0, 0.01
F32 = 4


def _batch(n, d, device):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 100, (n,), generator=g).float()       # ages: ties are positives
    p = y + 3 * torch.randn(n, generator=g)                     # predictions near the labels
    w = torch.rand(n, generator=g) + 0.5
    f = torch.randn(n, d, generator=g)
    return [t.to(device) for t in (f, y, p, w)]


def _impl_fn(impl):
    def run(s):
        f, y, p, w = s
        f.grad = None
        regops.conr_loss(f, y, p, w, temperature=TAU, threshold=OMEGA, push=PUSH, impl=impl).backward()
    return run


def cases(quick: bool, device: torch.device) -> list[Case]:
    out = []
    for n, d in (QUICK_SIZES if quick else SIZES):
        size = f"N={n} D={d}"
        nn_bytes, nd_bytes = n * n * F32, n * d * F32
        slow = 3 if n * n * d >= 2**33 else None  # minute-long repetitions: fewer of them

        def setup(n=n, d=d):
            f, y, p, w = _batch(n, d, device)
            return f.requires_grad_(), y, p, w

        def official(s):
            f, y, p, w = s
            f.grad = None
            conr_official(f, y, p, w, temperature=TAU, threshold=OMEGA, push=PUSH).backward()

        def compiled_setup(setup=setup):
            fn = torch.compile(lambda f, y, p, w: regops.conr_loss(f, y, p, w, temperature=TAU, threshold=OMEGA,
                                                                  push=PUSH, impl="reference"), dynamic=False)
            return setup(), fn

        def compiled(state):
            (f, y, p, w), fn = state
            f.grad = None
            fn(f, y, p, w).backward()

        def bound_setup(n=n, d=d):
            z = torch.nn.functional.normalize(torch.randn(n, d, device=device), dim=1)
            return z, torch.randn(n, n, device=device)

        out += [Case("conr_loss", size, "official", setup, official, predicted_bytes=22 * nn_bytes),
                Case("conr_loss", size, "reference", setup, _impl_fn("reference"), predicted_bytes=10 * nn_bytes),
                Case("conr_loss", size, "compiled-reference", compiled_setup, compiled, predicted_bytes=10 * nn_bytes)]
        for impl in (["cpu"] if device.type == "cpu" else ["cuda", "triton"]):
            ok, why = _registry.available("conr_loss", impl, device)
            out.append(Case("conr_loss", size, impl, setup, _impl_fn(impl), predicted_bytes=6 * nd_bytes,
                            skip=None if ok else why, min_reps=slow))
        out.append(Case("conr_loss", size, "gemm-exp-bound", bound_setup, predicted_bytes=3 * nn_bytes, memory=False,
                        min_reps=slow,
                        parts=((1.0, lambda s: s[0] @ s[0].T), (1.0, lambda s: s[1] @ s[0]),
                               (1.0, lambda s: s[1].exp())),
                        note="time(Z Zᵀ) + time(E Z) + time(exp over N²): torch's GEMMs and one exp pass, not an op"))
    return out
