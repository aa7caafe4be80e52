"""R-AMT gradient dropout in pure PyTorch: the same bits as the kernels (csrc/include/regops/graddrop_math.h).

Philox4x32-10 runs on int64 tensors: a 32×32-bit product is split into 16-bit halves so that no partial product
overflows int64. Element e of tensor t uses counter (e >> 2 low, e >> 2 high, t, 0), key (seed low, seed high),
output word e & 3, and U = (word >> 8)·2^-24.
"""
from __future__ import annotations

import torch

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF
DENOM_EPS = 1e-8


def _mulhilo(m: int, x: torch.Tensor):
    """(hi, lo) 32-bit words of m·x for a constant m < 2^32 and int64 x in [0, 2^32)."""
    m_lo, m_hi = m & 0xFFFF, m >> 16
    x_lo, x_hi = x & 0xFFFF, x >> 16
    ll = m_lo * x_lo
    lh = m_lo * x_hi
    hl = m_hi * x_lo
    hh = m_hi * x_hi
    mid = (ll >> 16) + (lh & 0xFFFF) + (hl & 0xFFFF)
    lo = (ll & 0xFFFF) | ((mid & 0xFFFF) << 16)
    hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16)
    return hi & MASK32, lo & MASK32


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on int64 tensors holding 32-bit words; returns the four output words."""
    for r in range(10):
        if r > 0:
            k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
        hi0, lo0 = _mulhilo(M0, c0)
        hi1, lo1 = _mulhilo(M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def uniforms(seed: int, t: int, numel: int, device=None) -> torch.Tensor:
    """U (numel,) float32 of tensor t."""
    blocks = (numel + 3) // 4
    b = torch.arange(blocks, dtype=torch.int64, device=device)
    c2 = torch.full_like(b, t & MASK32)
    words = philox4x32_10(b & MASK32, b >> 32, c2, torch.zeros_like(b), seed & MASK32, (seed >> 32) & MASK32)
    w = torch.stack(words, 1).reshape(-1)[:numel]
    return (w >> 8).to(torch.float32) * (1.0 / 16777216.0)


def keep_prob(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """P in float32, in graddrop_math.h's order of operations."""
    a, b = a.float(), b.float()
    num = torch.sign(a) * (a + b)
    den = (a.abs() + b.abs()) + DENOM_EPS
    return (num / den + 1.0) * 0.5


def apply(a: torch.Tensor, b: torch.Tensor, lam: float, seed: int, t: int) -> torch.Tensor:
    """The new gradient of tensor t, in a's dtype."""
    u = uniforms(seed, t, a.numel(), a.device).reshape(a.shape)
    af = a.float()
    drop = torch.tensor(1.0 - float(lam), dtype=torch.float64).float()
    out = torch.where(keep_prob(a, b) > u, af, af * drop)
    return out.to(a.dtype)
