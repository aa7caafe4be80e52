"""SORSALinear.from_linear initialisation: the exact thin SVD against the randomized svd_lowrank.

The issue's goal: on a 4096² weight with r ≤ 128, svd_lowrank is at least 20x faster than the full SVD.
Its error against the exact top-r is printed by `python -m regops.bench.cases.sorsa_init` (not a timing row).
"""
from __future__ import annotations

import sys
import time

import torch

from regops.nn.sorsa import top_singular_triplets

from ..harness import Case

SIZES = ((4096, 128), (4096, 16))
QUICK_SIZES = ((1024, 128),)


def _weight(n: int, device) -> torch.Tensor:
    # A trained-like spectrum: a decaying profile plus noise, so the top-r subspace is well defined.
    g = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(n, 256, generator=g))[0]
    V = torch.linalg.qr(torch.randn(n, 256, generator=g))[0]
    s = 10.0 / (1 + torch.arange(256.0)) ** 0.8
    return ((U * s) @ V.T + 0.01 * torch.randn(n, n, generator=g)).to(device)


def cases(quick: bool, device: torch.device) -> list[Case]:
    out = []
    for n, r in (QUICK_SIZES if quick else SIZES):
        size = f"{n}x{n} r={r}"
        setup = lambda n=n: _weight(n, device)
        for init in ("svd", "svd_lowrank"):
            out.append(Case("sorsa_init", size, init, setup, lambda w, r=r, init=init: top_singular_triplets(w, r, init),
                            baseline="svd", mode="fwd", predicted_bytes=6 * n * n * 4))
    return out


def error_report(n: int = 4096, r: int = 128) -> None:
    """Relative error of the rank-r product and of the singular values, svd_lowrank against the exact SVD."""
    w = _weight(n, "cpu")
    t0 = time.perf_counter()
    B, S, A = top_singular_triplets(w, r, "svd")
    t_svd = time.perf_counter() - t0
    t0 = time.perf_counter()
    Bl, Sl, Al = top_singular_triplets(w, r, "svd_lowrank")
    t_low = time.perf_counter() - t0
    exact = (B * S) @ A
    approx = (Bl * Sl) @ Al
    print(f"{n}x{n} r={r}: svd {t_svd:.2f} s, svd_lowrank {t_low:.3f} s ({t_svd / t_low:.0f}x); "
          f"‖ΔW_r‖/‖W_r‖ = {((approx - exact).norm() / exact.norm()).item():.2e}, "
          f"max|ΔS|/S_1 = {((Sl - S).abs().max() / S[0]).item():.2e}, "
          f"‖W − W_r,lowrank‖/‖W − W_r‖ = {((w - approx).norm() / (w - exact).norm()).item():.4f}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    for arg in sys.argv[1:] or ["128", "16"]:
        error_report(4096, int(arg))
