"""The Monge gap on regops.ot: the official check value, the invariant M ≥ eps·log n, envelope gradients,
MongeGapLoss, OTT-JAX's monge_gap_from_samples itself when installed, and errors."""
import math

import pytest
import torch

import regops

from conftest import cpu_impls

IMPLS = ["reference"] + [i for i in cpu_impls("monge_gap") if i == "cpu"]


def check_data():
    k = torch.arange(48, dtype=torch.float64).reshape(16, 3)
    return torch.sin(0.5 * k), 1.5 * torch.cos(0.3 * k) + 0.5


@pytest.mark.parametrize("impl", IMPLS)
def test_check_value(impl):
    x, y = check_data()
    m = regops.monge_gap(x, y, eps=0.1, tol=1e-9, max_iter=100_000, impl=impl)
    assert m.dim() == 0
    assert m.item() == pytest.approx(3.673536, abs=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", "cosine"])
def test_lower_bound_eps_log_n(impl, cost):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = x @ torch.randn(3, 3, generator=g, dtype=torch.float64) + 0.3
    out = regops.ot.sinkhorn(x, y, cost=cost, max_iter=10, tol=0)
    m = regops.monge_gap(x, y, cost=cost, tol=1e-8, max_iter=50000, impl=impl)
    assert m.item() >= out.eps.item() * math.log(40) - 1e-9


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_and_map(impl):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 2, generator=g, dtype=torch.float64)
    lin = torch.nn.Linear(2, 2).double()
    m = regops.monge_gap_map(lin, x, eps=0.3, tol=1e-12, max_iter=50000, impl=impl)
    m.backward()
    assert all(torch.isfinite(p.grad).all() for p in lin.parameters())
    y = lin(x).detach().requires_grad_()
    fn = lambda y_: regops.monge_gap(x, y_, eps=0.3, tol=1e-13, max_iter=50000, impl=impl)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (y,), atol=1e-6, rtol=1e-5)


def test_batched():
    x, y = check_data()
    xb, yb = torch.stack([x, y]), torch.stack([y, x])
    m = regops.monge_gap(xb, yb, eps=0.1, tol=1e-9, max_iter=100_000, impl=IMPLS[-1])
    assert m.shape == (2,)
    assert m[0].item() == pytest.approx(3.673536, abs=1e-6)
    assert m[1].item() == pytest.approx(regops.monge_gap(y, x, eps=0.1, tol=1e-9, max_iter=100_000,
                                                         impl=IMPLS[-1]).item(), rel=1e-12)


def test_monge_gap_loss_module():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 2, generator=g)
    target = torch.randn(30, 2, generator=g) + 2
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.GELU(), torch.nn.Linear(16, 2))
    loss_fn = regops.nn.MongeGapLoss(lambda_=2.0, fit_eps=0.1, reg_eps=0.05, tol=1e-4)
    mapped = mlp(x)
    loss = loss_fn(x, mapped, target)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in mlp.parameters())
    want = regops.ot.sinkhorn_divergence(mapped, target, eps=0.1, tol=1e-4) + 2.0 * regops.monge_gap(
        x, mapped, eps=0.05, tol=1e-4)
    torch.testing.assert_close(loss.detach(), want.detach())
    fit_only = regops.nn.MongeGapLoss(lambda_=0.0, fit_eps=0.1, tol=1e-4)(x, mapped, target)
    torch.testing.assert_close(fit_only.detach(), regops.ot.sinkhorn_divergence(mapped, target, eps=0.1,
                                                                                  tol=1e-4).detach())


def test_errors():
    x, y = check_data()
    with pytest.raises(ValueError, match=r"regops.monge_gap: y: expected the shape of x \(16, 3\)"):
        regops.monge_gap(x, y[:5])
    with pytest.raises(ValueError, match="cost: expected one of"):
        regops.monge_gap(x, y, cost="l1")


@pytest.mark.parametrize("impl", IMPLS)
def test_matches_ott_monge_gap_definition(impl):
    """OTT's monge_gap_from_samples is mean c(x_i, y_i) − ent_reg_cost of its default Sinkhorn on PointCloud(x, y)
    (its module needs flax to import; the computation is OTT's own)."""
    pytest.importorskip("ott")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    from ott.geometry import pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn
    g = torch.Generator().manual_seed(3)
    x = torch.randn(25, 2, generator=g, dtype=torch.float64)
    y = 1.3 * x + 0.2 * torch.randn(25, 2, generator=g, dtype=torch.float64)
    xj, yj = jax.numpy.asarray(x.numpy()), jax.numpy.asarray(y.numpy())
    geom = pointcloud.PointCloud(xj, yj)
    out = sinkhorn.Sinkhorn()(linear_problem.LinearProblem(geom))
    want = float(jax.numpy.mean(jax.vmap(geom.cost_fn)(xj, yj)) - out.ent_reg_cost)
    got = regops.monge_gap(x, y, impl=impl).item()
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
