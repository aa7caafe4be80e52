"""regops.ot costs when eps dwarfs the costs: the dual form's eps·(Σa·Σb − ΣP) cancels, so float32 solves
evaluate their costs again in float64 (ot/_solver.py::_costs), and a problem that no dtype can hold warns."""
import warnings

import pytest
import torch

import regops
from regops._constants import COST_IDS
from regops.ot import CostPrecisionWarning
from regops.ot import _backend
from regops.ot import _epsilon as E
from regops.ot import _solver as S

from conftest import cpu_impls

IMPLS = ["reference"] + cpu_impls("ot.sinkhorn")


def clouds(N=50, M=40, d=3, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, d, generator=g, dtype=torch.float64) * scale
    y = (torch.randn(M, d, generator=g, dtype=torch.float64) + 0.5) * scale
    return x, y


def float64_truth(x, y, eps, **kw):
    impl = "cpu" if "cpu" in IMPLS else "reference"
    return S.sinkhorn(x, y, eps=eps, impl=impl, **kw)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("scale,eps", [(1.0, 1e4), (1.0, 1e6), (1.0, 1e8), (1e-4, 1.0), (1e-3, 10.0)])
@pytest.mark.parametrize("tau", [1.0, 0.9])
def test_float32_costs_keep_their_digits(impl, scale, eps, tau):
    """Before the fix: reg_ot_cost was 0.0 at eps = 1e8 (mean cost 7.65) and at x·1e-4, eps = 1."""
    x, y = clouds(scale=scale)
    truth = float64_truth(x, y, eps, tau_a=tau, tau_b=tau)
    xs = x.float().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CostPrecisionWarning)
        out = regops.ot.sinkhorn(xs, y.float(), eps=eps, tau_a=tau, tau_b=tau, impl=impl)
    torch.testing.assert_close(out.reg_ot_cost.double(), truth.reg_ot_cost, rtol=2e-5, atol=0)
    torch.testing.assert_close(out.ent_reg_cost.double(), truth.ent_reg_cost, rtol=2e-6, atol=0)
    # ∂reg/∂x = Σ_j P_ij ∇c: the gradient goes through the float64 recomputation
    out.reg_ot_cost.backward()
    x64 = x.clone().requires_grad_()
    float64_truth(x64, y, eps, tau_a=tau, tau_b=tau).reg_ot_cost.backward()
    torch.testing.assert_close(xs.grad.double(), x64.grad, rtol=1e-4, atol=1e-6 * x64.grad.abs().max().item())


@pytest.mark.parametrize("impl", IMPLS)
def test_dense_and_divergence_keep_their_digits(impl):
    x, y = clouds()
    C = torch.cdist(x, y).pow(2)
    truth = regops.ot.sinkhorn_from_cost(C, eps=1e8, impl="reference").reg_ot_cost
    got = regops.ot.sinkhorn_from_cost(C.float(), eps=1e8, impl=impl).reg_ot_cost
    torch.testing.assert_close(got.double(), truth, rtol=2e-5, atol=0)
    assert truth.item() == pytest.approx(C.mean().item(), rel=1e-6)  # P → a⊗b as eps → ∞
    div64 = regops.ot.sinkhorn_divergence(x, y, eps=1e8, impl="reference")
    div32 = regops.ot.sinkhorn_divergence(x.float(), y.float(), eps=1e8, impl=impl)
    torch.testing.assert_close(div32.double(), div64, rtol=1e-4, atol=0)


def test_batched_problems_recompute_only_what_needs_it():
    """One batch, eps 1e8 in one problem and 0.5 in the other: both right."""
    x, y = clouds()
    xb, yb = torch.stack([x, x]).float(), torch.stack([y, y]).float()
    out = regops.ot.sinkhorn(xb, yb, eps=torch.tensor([1e8, 0.5]))
    for i, e in enumerate([1e8, 0.5]):
        torch.testing.assert_close(out.reg_ot_cost[i].double(), float64_truth(x, y, e).reg_ot_cost, rtol=2e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("impl", IMPLS)
def test_hopeless_eps_warns(impl, dtype):
    """At eps = 1e30 the cpu and reference paths gave +1.5e23 and −1.5e23 without a word."""
    x, y = clouds()
    if impl == "triton" and dtype == torch.float64:
        pytest.skip("Triton is float32 only")
    with pytest.warns(CostPrecisionWarning, match=r"regops\.ot\.sinkhorn: eps 1e\+30 dwarfs the costs"):
        regops.ot.sinkhorn(x.to(dtype), y.to(dtype), eps=1e30, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", "cosine"])
def test_ordinary_problems_neither_warn_nor_recompute(impl, cost, monkeypatch):
    """The float64 pass is for eps far above the costs: the default eps, and x = y (reg near 0), never take it."""
    calls = []
    real = _backend.sinkhorn_mass

    def counting(x, y, *args):
        calls.append(x.dtype)
        return real(x, y, *args)

    monkeypatch.setattr(_backend, "sinkhorn_mass", counting)
    x, y = clouds(N=120, M=80, d=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CostPrecisionWarning)
        regops.ot.sinkhorn(x.float(), y.float(), cost=cost, impl=impl)
        regops.ot.sinkhorn(x.float(), x.float(), cost=cost, impl=impl)
        assert calls == [torch.float32] * 2
        out = regops.ot.sinkhorn(x[:1].float(), x[:1].float(), eps=1.0, cost=cost, impl=impl)  # costs 0 (or ~0)
    assert abs(out.reg_ot_cost.item()) < 1e-6


@pytest.mark.parametrize("cost", ["euclidean", "cosine"])
@pytest.mark.parametrize("shift", [0.0, 30.0])
def test_default_eps_statistics_from_float32_entries(cost, shift):
    """The statistics pass forms the entries in the clouds' dtype and sums in float64 (5× faster than float64
    entries): std(C) stays within 1e-5 of the float64 one, also for clouds far apart (std ≪ mean)."""
    x, y = clouds(N=700, M=500, d=5)
    y = y + shift
    cid = S.COST_IDS[cost]
    xc, yc, _ = S._centered(x[None], y[None], cid)
    exact = E._statistic(*E.cost_moments(xc, yc, cid), "std")
    xf, yf, _ = S._centered(x[None].float(), y[None].float(), cid)
    fast = E._statistic(*E.cost_moments(xf, yf, cid), "std")
    torch.testing.assert_close(fast, exact, rtol=1e-5, atol=0)
