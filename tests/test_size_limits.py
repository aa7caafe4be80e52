"""Past 2³¹ pairs: the streamed Sinkhorn kernel at N·M = 46 341² > 2³¹, checked exactly.

A 32-bit product i·M + j, or any 32-bit pair count, would wrap at this size. The check is exact without the
N×M matrix:
- the points of x sit on two locations, and so do those of y, with uniform weights;
- every x-point at one location then has the same potential, and it depends only on the proportions of the
  points at each location (the clouds' means included, on which the solve centers);
- the big solve must therefore equal a twin with 3 and 9 points in the same proportions, iteration for
  iteration.

A wrong row or column index past 2³¹ would give those rows other potentials, or another cost. It runs in about
half a minute on 2 cores, and in O(N + M) memory.
"""
import pytest
import torch

import regops

from conftest import cpu_impls

N = M = 46_341  # N·M = 2 147 488 281 > 2³¹ = 2 147 483 648
assert N * M > 2**31


def _two_location_clouds(n, m, dtype=torch.float32):
    """x: n points, a third at 0 and the rest at 1; y: m points, 5/9 at 0 and the rest at 0.5."""
    x = torch.cat([torch.zeros(n // 3, 1), torch.ones(n - n // 3, 1)]).to(dtype)
    y = torch.cat([torch.zeros(m * 5 // 9, 1), torch.full((m - m * 5 // 9, 1), 0.5)]).to(dtype)
    return x, y


def test_sinkhorn_past_2_31_pairs_equals_its_small_twin():
    if "cpu" not in cpu_impls("ot.sinkhorn"):
        pytest.skip("no CPU Sinkhorn kernel in this build")
    assert N % 9 == 0  # the proportions 1/3 and 5/9 hold exactly at N and at the twin's 3 and 9 points
    options = dict(eps=0.1, max_iter=3, tol=0, on_nonconvergence="ignore")
    big = regops.ot.sinkhorn(*_two_location_clouds(N, M), impl="cpu", **options)
    # The twin: the same two locations and proportions, 3 and 9 points, in float64 on the reference.
    twin = regops.ot.sinkhorn(*_two_location_clouds(3, 9, torch.float64), impl="reference", **options)
    f_want = torch.cat([twin.f[0].expand(N // 3), twin.f[1].expand(N - N // 3)]).float()
    g_want = torch.cat([twin.g[0].expand(M * 5 // 9), twin.g[-1].expand(M - M * 5 // 9)]).float()
    torch.testing.assert_close(big.f, f_want, rtol=1e-4, atol=1e-4)  # every row: the last ones lie past 2³¹ pairs
    # g carries a size-dependent constant (−eps·log M, the weights' share), so its offset from the twin must be one
    # constant over all columns: a wrong index would break that for some
    offset = big.g - g_want
    assert (offset.max() - offset.min()).item() < 1e-4, (offset.min().item(), offset.max().item())
    torch.testing.assert_close(big.reg_ot_cost.double(), twin.reg_ot_cost, rtol=1e-4, atol=1e-5)
