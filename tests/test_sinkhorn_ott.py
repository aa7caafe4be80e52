"""regops.ot against OTT-JAX itself (float64, on the CPU): the same potentials, iteration counts, costs and
default eps, for the definitions the issue pins to OTT. Skips when ott-jax is not installed."""
import numpy as np
import pytest
import torch

import regops
from regops.ot import _solver as S

ott = pytest.importorskip("ott")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
from ott.geometry import costs, pointcloud  # noqa: E402
from ott.problems.linear import linear_problem  # noqa: E402
from ott.solvers.linear import sinkhorn as ott_sinkhorn  # noqa: E402
from ott.tools import sinkhorn_divergence as ott_sd  # noqa: E402

IMPLS = ["reference", "cpu"]
OTT_COST = {"sqeuclidean": costs.SqEuclidean, "euclidean": costs.Euclidean, "cosine": costs.Cosine}


def _data(n=24, m=31, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 0.3


def _ott_solve(x, y, *, cost="sqeuclidean", eps=None, relative_epsilon=None, tau_a=1.0, tau_b=1.0, threshold=1e-3,
               max_iterations=2000):
    geom = pointcloud.PointCloud(jnp.asarray(x), jnp.asarray(y), cost_fn=OTT_COST[cost](), epsilon=eps,
                                 relative_epsilon=relative_epsilon)
    prob = linear_problem.LinearProblem(geom, tau_a=tau_a, tau_b=tau_b)
    out = ott_sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations)(prob)
    return geom, out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cost", list(OTT_COST))
def test_default_solve_matches_ott(impl, cost):
    x, y = _data()
    geom, ref = _ott_solve(x, y, cost=cost)
    out = S.sinkhorn(torch.from_numpy(x), torch.from_numpy(y), cost=cost, impl=impl)
    assert out.eps.item() == pytest.approx(float(geom.epsilon), rel=1e-9)
    assert out.n_iter == int(ref.n_iters)
    np.testing.assert_allclose(out.f.numpy(), np.asarray(ref.f), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out.g.numpy(), np.asarray(ref.g), rtol=1e-8, atol=1e-10)
    assert out.reg_ot_cost.item() == pytest.approx(float(ref.reg_ot_cost), rel=1e-9, abs=1e-12)
    assert out.ent_reg_cost.item() == pytest.approx(float(ref.ent_reg_cost), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("rel", ["mean", "std"])
def test_relative_epsilon_matches_ott(impl, rel):
    x, y = _data(seed=1)
    geom, ref = _ott_solve(x, y, eps=0.2, relative_epsilon=rel)
    out = S.sinkhorn(torch.from_numpy(x), torch.from_numpy(y), eps=0.2, relative_epsilon=rel, impl=impl)
    assert out.eps.item() == pytest.approx(float(geom.epsilon), rel=1e-9)
    assert out.reg_ot_cost.item() == pytest.approx(float(ref.reg_ot_cost), rel=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("taus", [(0.8, 0.8), (0.9, 1.0)])
def test_unbalanced_matches_ott(impl, taus):
    x, y = _data(seed=2)
    _, ref = _ott_solve(x, y, eps=0.5, tau_a=taus[0], tau_b=taus[1], threshold=1e-9)
    out = S.sinkhorn(torch.from_numpy(x), torch.from_numpy(y), eps=0.5, tau_a=taus[0], tau_b=taus[1], tol=1e-9,
                     impl=impl)
    assert out.n_iter == int(ref.n_iters)
    np.testing.assert_allclose(out.f.numpy(), np.asarray(ref.f), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out.g.numpy(), np.asarray(ref.g), rtol=1e-8, atol=1e-10)
    assert out.reg_ot_cost.item() == pytest.approx(float(ref.reg_ot_cost), rel=1e-8)
    assert out.ent_reg_cost.item() == pytest.approx(float(ref.ent_reg_cost), rel=1e-8)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_match_ott(impl):
    x, y = _data(n=12, m=15, seed=3)

    def ott_cost(xj):
        return _ott_solve(xj, jnp.asarray(y), eps=0.3, threshold=1e-10)[1].reg_ot_cost

    gx = np.asarray(jax.grad(ott_cost)(jnp.asarray(x)))
    xt = torch.from_numpy(x).requires_grad_()
    S.sinkhorn(xt, torch.from_numpy(y), eps=0.3, tol=1e-10, impl=impl).reg_ot_cost.backward()
    np.testing.assert_allclose(xt.grad.numpy(), gx, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("static_b", [False, True])
def test_sinkhorn_divergence_matches_ott(impl, static_b):
    x, y = _data(seed=4)
    ref = ott_sd.sinkdiv(jnp.asarray(x), jnp.asarray(y), static_b=static_b,
                         solve_kwargs={"threshold": 1e-9, "max_iterations": 20000})[0]
    got = regops.ot.sinkhorn_divergence(torch.from_numpy(x), torch.from_numpy(y), static_b=static_b, tol=1e-9,
                                max_iter=20000, impl=impl)
    assert got.item() == pytest.approx(float(ref), rel=1e-6, abs=1e-9)
