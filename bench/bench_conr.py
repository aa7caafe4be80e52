"""ConR, forward + backward: the official formulation (bench/baselines/conr_official.py) against the regops
impls. The fused O(N)-memory kernels are issue 3's remaining work; today the rows are the official
formulation, the max-shifted reference and its torch.compile'd form."""
from __future__ import annotations

import torch

import regops
from regops import _loader
from regops.ops.conr import KERNELS

from baselines.conr_official import conr_official
from harness import Case

SIZES = [(n, d) for n in (256, 1024, 4096, 8192, 32768) for d in (128, 512, 2048)]
QUICK_SIZES = [(256, 512), (1024, 512)]
TAU, OMEGA, PUSH = 0.07, 1.0, 0.01


def _batch(n, d, device):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 100, (n,), generator=g).float()       # ages: ties are positives
    p = y + 3 * torch.randn(n, generator=g)                     # predictions near the labels
    w = torch.rand(n, generator=g) + 0.5
    f = torch.randn(n, d, generator=g)
    return [t.to(device) for t in (f, y, p, w)]


def cases(quick: bool, device: torch.device) -> list[Case]:
    out = []
    for n, d in (QUICK_SIZES if quick else SIZES):
        size = f"N={n} D={d}"
        nn_bytes = n * n * 4

        def setup(n=n, d=d):
            f, y, p, w = _batch(n, d, device)
            return f.requires_grad_(), y, p, w

        def official(s):
            f, y, p, w = s
            f.grad = None
            conr_official(f, y, p, w, temperature=TAU, threshold=OMEGA, push=PUSH).backward()

        def reference(s):
            f, y, p, w = s
            f.grad = None
            regops.conr_loss(f, y, p, w, temperature=TAU, threshold=OMEGA, push=PUSH, impl="reference").backward()

        def compiled_setup(setup=setup):
            fn = torch.compile(lambda f, y, p, w: regops.conr_loss(f, y, p, w, temperature=TAU, threshold=OMEGA,
                                                                  push=PUSH, impl="reference"), dynamic=False)
            return setup(), fn

        def compiled(state):
            (f, y, p, w), fn = state
            f.grad = None
            fn(f, y, p, w).backward()

        out += [Case("conr_loss", size, "official", setup, official, predicted_bytes=22 * nn_bytes),
                Case("conr_loss", size, "reference", setup, reference, predicted_bytes=10 * nn_bytes),
                Case("conr_loss", size, "compiled-reference", compiled_setup, compiled, predicted_bytes=10 * nn_bytes)]
        for impl in (["cpu"] if device.type == "cpu" else ["cuda", "triton"]):
            ok, why = _loader.impl_available("conr_loss", impl, device, KERNELS)
            out.append(Case("conr_loss", size, impl, setup, None, skip=None if ok else why))
    return out
