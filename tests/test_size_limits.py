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


# ---- ConR past 2³¹ pairs ----

G = 3  # point i is in group i mod 3: interleaved, so a wrapped index lands in another group, of other values


def _three_group_batch(n, dtype=torch.float32):
    """n points on G directions, labels and preds per group: each group has positives and negatives (agedb: a
    positive within label distance 1, a negative beyond it but within 1 in predictions), all rows of a group share
    one loss and one gradient."""
    angle = torch.tensor([0.0, 0.4, 2.0], dtype=torch.float64)
    points = torch.stack([angle.cos(), angle.sin()], 1) * torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)
    labels = torch.tensor([0.0, 0.5, 3.0], dtype=torch.float64)
    preds = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)
    reps = n // G
    return points.repeat(reps, 1).to(dtype), labels.repeat(reps).to(dtype), preds.repeat(reps).to(dtype), points, \
        labels, preds


def test_conr_past_2_31_pairs_equals_its_three_point_form():
    """ConR on N = 46 341 points (N² > 2³¹ pairs) on 3 interleaved groups equals, value and gradient, its form as a
    function of the 3 group points: the reference with the 3 anchors against the N (expanded) candidates, anchor
    rows weighted by the group sizes, in float64."""
    from regops.reference import contrastive as ref

    if "cpu" not in cpu_impls("conr_loss"):
        pytest.skip("no CPU ConR kernel in this build")
    n = N
    assert n % G == 0 and n * n > 2**31
    x, y, p, points, labels, preds = _three_group_batch(n)
    x.requires_grad_()
    loss = regops.conr_loss(x, y, p, impl="cpu")  # agedb, its official τ, ω, push
    (grad,) = torch.autograd.grad(loss, x)

    u = points.clone().requires_grad_()
    z = ref.normalize_rows(u)
    temperature, threshold, push = regops.ops.conr.VARIANT_DEFAULTS["agedb"]
    rows, _ = ref.conr_rows(z, z.repeat(n // G, 1), 0, labels[:, None], labels.repeat(n // G)[:, None], preds[:, None],
                            preds.repeat(n // G)[:, None], torch.ones(G, dtype=torch.float64), nyud2=False,
                            temperature=temperature, threshold=threshold, push=push, label_norm=2.0)
    assert (rows > 0).all()  # every group has a positive and a negative: no group drops out of the check
    want = rows.sum() * (n // G) / n
    (want_grad,) = torch.autograd.grad(want, u)
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
    # every row (the last ones lie past 2³¹ pairs) against its group's share of the group point's gradient
    torch.testing.assert_close(grad.double(), (want_grad / (n // G)).repeat(n // G, 1), rtol=2e-3, atol=1e-9)
