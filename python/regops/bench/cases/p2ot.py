"""P²OT pseudo-labels on a memory-bank-sized problem (the official bank: 5120 or 10240 rows), float32 logits of a
cosine classifier (10·cos), ρ = 0.3, ε = 0.1, γ = 1, tol = 1e-6, a fresh state:

p2ot_plan            a whole solve: `official` (regops/bench/baselines/p2ot_official.py: float64 kernel-domain scaling,
                     its b test every iteration) against regops' impls, to the same tolerance
p2ot_plan/iter       per iteration: the stabilized kernels' loop body (one fused pass over K, the column
                     update) against `2-reads-bound`, torch's time to read the N×(K+1) float32 kernel twice
                     (two matrix-vector products: what any scaling iteration must read)
"""
from __future__ import annotations

import torch

import regops
from regops import _registry
from regops.ot import p2ot as P

from ..baselines.p2ot_official import p2ot_official
from ..harness import Case

SIZES = [(5120, 100), (5120, 1000), (10240, 1000)]
QUICK = [(5120, 100)]
RHO, ITERS = 0.3, 20


def _logits(n, k, device):
    g = torch.Generator().manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(n, 64, generator=g), dim=1)
    w = torch.nn.functional.normalize(torch.randn(k, 64, generator=g), dim=1)
    return (10 * f @ w.T).to(device)


def cases(quick: bool, device: torch.device) -> list[Case]:
    out = []
    impls = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    for n, k in (QUICK if quick else SIZES):
        size = f"N={n} K={k}"
        nk = n * (k + 1) * 4

        def setup(n=n, k=k):
            return _logits(n, k, device)

        def official(z):
            return p2ot_official(z.cpu(), RHO)

        out.append(Case("p2ot_plan", size, "official", setup, official, predicted_bytes=6 * nk,
                        note="float64, kernel domain, as the official code"))
        for impl in impls:
            ok, why = _registry.available("p2ot_plan", impl, device)
            out.append(Case("p2ot_plan", size, impl, setup,
                            (lambda z, impl=impl: regops.p2ot_plan(z, RHO, impl=impl, on_nonconvergence="ignore")),
                            predicted_bytes=4 * nk, skip=None if ok else why))

        def iter_setup(n=n, k=k):
            z = _logits(n, k, device)
            C = -torch.log_softmax(z, 1)
            Kt = torch.exp(torch.cat([-C, torch.zeros(n, 1, device=device)], 1) / 0.1)
            Kt = Kt / Kt.sum(1, keepdim=True) / n
            return Kt, torch.ones(k + 1, device=device), torch.full((n,), 1.0 / n, device=device)

        for impl in impls:
            ok, why = _registry.available("p2ot_plan", impl, device)

            def loop(s, impl=impl):
                Kt, v, t = s
                step = P._pass(impl)
                for _ in range(ITERS):
                    u, col = step(Kt, v, t)
                    v = (0.3 / col) ** 0.909
                return v

            out.append(Case("p2ot_plan/iter", size, impl, iter_setup, parts=((1.0 / ITERS, loop),) if ok else (),
                            baseline="2-reads-bound", predicted_bytes=2 * nk, skip=None if ok else why,
                            note="per iteration"))

        def bound(s):
            Kt, v, t = s
            torch.mv(Kt, v)
            torch.mv(Kt.T, t)

        out.append(Case("p2ot_plan/iter", size, "2-reads-bound", iter_setup, parts=((1.0, bound),),
                        baseline="2-reads-bound", memory=False, predicted_bytes=2 * nk,
                        note="torch.mv(K, v) + torch.mv(Kᵀ, u): two reads of K"))
    return out
