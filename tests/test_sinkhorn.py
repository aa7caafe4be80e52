"""regops.ot: the streamed Sinkhorn kernels (CPU) against the dense reference, and the solver against POT and
OTT-JAX's definitions: potentials, costs, unbalanced marginals, envelope gradients, errors, ε-scaling."""
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import regops
from regops._constants import COST_IDS
from regops import _loader
from regops.ot import _backend
from regops.ot import _solver as S
from regops.reference import sinkhorn as R

from conftest import cpu_impls
from tolerances import assert_close

ops = torch.ops.regops
CPU_IMPLS = cpu_impls("ot.sinkhorn")
KERNEL_IMPLS = [i for i in CPU_IMPLS if i == "cpu"]  # triton: tests/test_sinkhorn_triton.py
SOLVER_IMPLS = ["reference"] + KERNEL_IMPLS
COSTS = ["sqeuclidean", "euclidean", "cosine"]
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-11)}

needs_cpu = pytest.mark.skipif("cpu" not in CPU_IMPLS, reason="no compiled CPU kernels")


def clouds(B, N, M, d, dtype=torch.float64, seed=0, coincide=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    y = torch.randn(B, M, d, generator=g, dtype=torch.float64) + 0.5
    if coincide:
        k = min(N, M) // 2
        y[:, :k] = x[:, :k]
    return x.to(dtype), y.to(dtype)


def vec(B, n, seed, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, n, generator=g, dtype=torch.float64) * scale).to(dtype)


# ---------------------------------------------------------------- kernels

SHAPES = [(1, 1, 1, 1), (1, 1, 7, 2), (2, 37, 53, 3), (1, 200, 130, 2), (3, 33, 300, 17), (2, 140, 260, 64),
          (1, 5, 1500, 3)]


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cost", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_reference(dtype, cost, shape):
    B, N, M, d = shape
    x, y = clouds(B, N, M, d, coincide=cost == 1)
    eps = torch.rand(B, dtype=torch.float64) + 0.05
    pot, lw, tau = vec(B, M, 1), vec(B, N, 2), torch.rand(B, N, dtype=torch.float64) + 0.01
    if M > 1:
        pot[:, 0] = float("-inf")  # a zero-weight point
    if N > 1:
        lw[:, -1] = float("-inf")
    f, g = vec(B, N, 3, 0.1), vec(B, M, 4, 0.1)
    v = torch.randn(B, M, 5, dtype=torch.float64)
    t = lambda a: a.to(dtype)  # noqa: E731
    tol = TOL[dtype]
    assert_close(ops.sinkhorn_update(t(x), t(y), t(pot), t(lw), t(tau), t(eps), cost),
                 R.update(x, y, pot, lw, tau, eps, cost).to(dtype), **tol)
    assert_close(ops.sinkhorn_apply(t(x), t(y), t(f), t(g), t(v), t(eps), cost),
                 R.apply(x, y, f, g, v, eps, cost).to(dtype), **tol)
    if not (cost == 2 and d == 1):  # the 1-D cosine gradient is 0 up to rounding: no relative scale
        assert_close(ops.sinkhorn_cost_grad(t(x), t(y), t(f), t(g), t(eps), cost),
                     R.cost_grad(x, y, f, g, eps, cost).to(dtype), **tol)
    C = R.cost_matrix(x, y, cost)
    assert_close(ops.sinkhorn_update_dense(t(C), t(pot), t(lw), t(tau), t(eps), False),
                 R.update_dense(C, pot, lw, tau, eps, False).to(dtype), **tol)
    potT, lwT, tauT = vec(B, N, 5), vec(B, M, 6), torch.rand(B, M, dtype=torch.float64) + 0.01
    # a non-contiguous cost matrix: the transpose of a (B, M, N) one
    Ct = C.transpose(1, 2).contiguous().transpose(1, 2)
    assert_close(ops.sinkhorn_update_dense(t(Ct), t(potT), t(lwT), t(tauT), t(eps), True),
                 R.update_dense(C, potT, lwT, tauT, eps, True).to(dtype), **tol)


@needs_cpu
@pytest.mark.parametrize("cost", [0, 1, 2])
@pytest.mark.parametrize("eps", [1e-3, 1e-2, 1.0, 10.0])
def test_update_kernel_finite_across_eps(cost, eps):
    x, y = clouds(1, 60, 70, 3, dtype=torch.float32)
    e = torch.tensor([eps])
    pot = torch.zeros(1, 70)
    lw = torch.full((1, 60), -4.0)
    out = ops.sinkhorn_update(x, y, pot, lw, torch.ones(1, 60), e, cost)
    assert torch.isfinite(out).all()
    assert_close(out, R.update(x.double(), y.double(), pot.double(), lw.double(), torch.ones(1, 60, dtype=torch.float64),
                               e.double(), cost).float(), rtol=1e-5, atol=1e-5)


@needs_cpu
def test_euclidean_gradient_is_zero_at_coincident_points_gemm_path():
    # d > 16 takes the GEMM path, whose dot-product form must not turn 0 into rounding noise.
    x, _ = clouds(1, 5, 5, 40, dtype=torch.float32)
    y = x.clone()
    f = torch.zeros(1, 5)
    g = torch.zeros(1, 5)
    eps = torch.tensor([1.0])
    got = ops.sinkhorn_cost_grad(x, y, f, g, eps, 1)
    exp = R.cost_grad(x.double(), y.double(), f.double(), g.double(), eps.double(), 1).float()
    assert_close(got, exp, rtol=1e-5, atol=1e-5)
    C = R.cost_matrix(x, y, 1)
    assert (C.diagonal(dim1=1, dim2=2) == 0).all()
    upd = ops.sinkhorn_update(x, y, g, torch.zeros(1, 5), torch.ones(1, 5), eps, 1)
    assert_close(upd, R.update(x.double(), y.double(), g.double(), torch.zeros(1, 5, dtype=torch.float64),
                               torch.ones(1, 5, dtype=torch.float64), eps.double(), 1).float(), rtol=1e-6, atol=1e-6)


@needs_cpu
def test_kernel_errors():
    x, y = clouds(1, 4, 5, 3, dtype=torch.float32)
    e = torch.tensor([0.1])
    pot, lw, tau = torch.zeros(1, 5), torch.zeros(1, 4), torch.ones(1, 4)
    with pytest.raises(ValueError, match=r"regops.sinkhorn_update: y: expected shape \(1, M, 3\)"):
        ops.sinkhorn_update(x, y[..., :2], pot, lw, tau, e, 0)
    with pytest.raises(TypeError, match="dtype float32 or float64"):
        ops.sinkhorn_update(x.half(), y.half(), pot, lw, tau, e, 0)
    with pytest.raises(ValueError, match="pot: expected shape"):
        ops.sinkhorn_update(x, y, torch.zeros(1, 4), lw, tau, e, 0)
    with pytest.raises(ValueError, match="cost: expected 0"):
        ops.sinkhorn_update(x, y, pot, lw, tau, e, 3)
    with pytest.raises(ValueError, match="y: expected at least one point"):
        ops.sinkhorn_update(x, y[:, :0], pot[:, :0], lw, tau, e, 0)
    assert ops.sinkhorn_update(x[:, :0], y, pot, lw[:, :0], tau[:, :0], e, 0).shape == (1, 0)


@needs_cpu
@pytest.mark.parametrize("cost", [0, 1, 2])
def test_opcheck_kernels(cost):
    x, y = clouds(2, 5, 7, 3)
    eps = torch.tensor([0.5, 0.7], dtype=torch.float64)
    f, g = vec(2, 5, 1, 0.1), vec(2, 7, 2, 0.1)
    lw, tau = vec(2, 5, 3), torch.rand(2, 5, dtype=torch.float64)
    torch.library.opcheck(ops.sinkhorn_update.default, (x, y, g, lw, tau, eps, cost))
    torch.library.opcheck(ops.sinkhorn_cost_grad.default, (x, y, f, g, eps, cost))
    torch.library.opcheck(ops.sinkhorn_apply.default, (x, y, f, g, torch.randn(2, 7, 2, dtype=torch.float64), eps, cost))
    C = R.cost_matrix(x, y, cost)
    torch.library.opcheck(ops.sinkhorn_update_dense.default, (C, g, lw, tau, eps, False))
    torch.library.opcheck(ops.sinkhorn_update_dense.default, (C, f, vec(2, 7, 4), torch.ones(2, 7, dtype=torch.float64),
                                                              eps, True))


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
@pytest.mark.parametrize("cost", [0, 1, 2])
def test_mass_op_gradcheck(impl, cost):
    x, y = clouds(2, 4, 5, 3, coincide=cost == 1)
    x.requires_grad_()
    y.requires_grad_()
    f = vec(2, 4, 1, 0.1).requires_grad_()
    g = vec(2, 5, 2, 0.1).requires_grad_()
    eps = torch.tensor([0.5, 0.9], dtype=torch.float64)
    fn = lambda *t: _backend.sinkhorn_mass(*t, eps, cost, impl)  # noqa: E731
    if cost == 1:  # the subgradient at coincident points is not a derivative: check f, g only there
        assert torch.autograd.gradcheck(lambda f_, g_: fn(x.detach(), y.detach(), f_, g_), (f, g))
        x2, y2 = clouds(2, 4, 5, 3)
        assert torch.autograd.gradcheck(fn, (x2.requires_grad_(), y2.requires_grad_(), f, g))
    else:
        assert torch.autograd.gradcheck(fn, (x, y, f, g))
    torch.library.opcheck(_backend.sinkhorn_mass, (x.detach(), y.detach(), f.detach(), g.detach(), eps, cost, impl))


# hypothesis: the CPU update kernel on random shapes, costs, eps and −inf entries
@needs_cpu
@given(N=st.integers(1, 40), M=st.integers(1, 300), d=st.sampled_from([1, 2, 3, 5, 16, 17, 33]),
       cost=st.integers(0, 2), log_eps=st.floats(-3, 1), seed=st.integers(0, 2**16), dtype=st.sampled_from(["f32", "f64"]))
def test_update_kernel_fuzz(N, M, d, cost, log_eps, seed, dtype):
    dt = torch.float32 if dtype == "f32" else torch.float64
    x, y = clouds(1, N, M, d, seed=seed)
    pot = vec(1, M, seed + 1)
    if M > 2:
        pot[0, 1] = float("-inf")
    lw, tau = vec(1, N, seed + 2), torch.rand(1, N, dtype=torch.float64) + 0.01
    eps = torch.tensor([10.0 ** log_eps], dtype=torch.float64)
    exp = R.update(x, y, pot, lw, tau, eps, cost)
    got = ops.sinkhorn_update(x.to(dt), y.to(dt), pot.to(dt), lw.to(dt), tau.to(dt), eps.to(dt), cost)
    assert torch.isfinite(got).all()
    # float32: the exponent (pot − c)/eps carries rounding of size ulp(c/eps)
    tol = dict(rtol=1e-10, atol=1e-10) if dt == torch.float64 else dict(rtol=3e-5, atol=3e-5 * max(1, 10 ** -log_eps))
    assert_close(got, exp.to(dt), **tol)


@needs_cpu
def test_portable_path_matches():
    """The kernels without AVX2 (REGOPS_CPU_NO_SIMD=1) in a subprocess, against the reference."""
    code = textwrap.dedent("""
        import torch, regops
        from regops.reference import sinkhorn as R
        ops = torch.ops.regops
        torch.manual_seed(0)
        for d in (3, 40):
            x = torch.randn(2, 37, d); y = torch.randn(2, 45, d); e = torch.tensor([0.3, 0.5])
            pot = torch.randn(2, 45); lw = torch.randn(2, 37); tau = torch.rand(2, 37)
            for c in (0, 1, 2):
                got = ops.sinkhorn_update(x, y, pot, lw, tau, e, c).double()
                exp = R.update(x.double(), y.double(), pot.double(), lw.double(), tau.double(), e.double(), c)
                assert (got - exp).abs().max() < 1e-4 * exp.abs().max(), (d, c)
                f = torch.randn(2, 37) * 0.1; g = torch.randn(2, 45) * 0.1
                got = ops.sinkhorn_cost_grad(x, y, f, g, e, c).double()
                exp = R.cost_grad(x.double(), y.double(), f.double(), g.double(), e.double(), c)
                assert (got - exp).abs().max() < 1e-4 * exp.abs().max(), (d, c)
        print("ok")
    """)
    env = dict(os.environ, REGOPS_CPU_NO_SIMD="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


# ---------------------------------------------------------------- the solver

def pot_log_potentials(C, a, b, eps, n_iter):
    """POT's sinkhorn_log for exactly n_iter iterations: OTT's f = reg·log_u, g = reg·log_v, iterate for iterate."""
    ot = pytest.importorskip("ot")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, log = ot.sinkhorn(a.numpy(), b.numpy(), C.numpy(), eps, method="sinkhorn_log", numItermax=n_iter,
                             stopThr=0.0, log=True)
    return torch.from_numpy(eps * log["log_u"]), torch.from_numpy(eps * log["log_v"])


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
@pytest.mark.parametrize("cost", COSTS)
def test_iterates_match_pot(impl, cost):
    x, y = clouds(1, 23, 31, 3)
    a = torch.rand(23, dtype=torch.float64) + 0.1
    a /= a.sum()
    b = torch.full((31,), 1 / 31, dtype=torch.float64)
    eps = 0.2 if cost != "cosine" else 0.05
    out = S.sinkhorn(x[0], y[0], a, b, eps=eps, cost=cost, tol=0, max_iter=37, impl=impl)
    C = R.cost_matrix(x, y, COST_IDS[cost])[0]
    f, g = pot_log_potentials(C, a, b, eps, 37)
    assert out.n_iter == 37
    assert_close(out.f, f, rtol=1e-9, atol=1e-10)
    assert_close(out.g, g, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
def test_costs_match_pot_at_convergence(impl):
    ot = pytest.importorskip("ot")
    x, y = clouds(1, 40, 50, 2)
    out = S.sinkhorn(x[0], y[0], eps=0.3, tol=1e-10, max_iter=20000, impl=impl)
    C = R.cost_matrix(x, y, 0)[0].numpy()
    a, b = np.full(40, 1 / 40), np.full(50, 1 / 50)
    kl = ot.solve(C, a, b, reg=0.3, max_iter=20000, tol=1e-13).value
    ent = ot.solve(C, a, b, reg=0.3, reg_type="entropy", max_iter=20000, tol=1e-13).value
    assert out.converged and out.marginal_error < 1e-10
    assert abs(out.reg_ot_cost.item() - kl) < 1e-8
    assert abs(out.ent_reg_cost.item() - ent) < 1e-8
    # ent_reg_cost = ⟨P,C⟩ − eps·H(P) from the materialized plan
    P = regops.ot.transport_plan(out)
    Ct = torch.from_numpy(C)
    assert_close(out.ent_reg_cost, (P * Ct).sum() + 0.3 * torch.special.xlogy(P, P).sum(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
@pytest.mark.parametrize("taus", [(0.8, 0.8), (0.6, 1.0), "per-point"])
def test_unbalanced_matches_pot(impl, taus):
    ot = pytest.importorskip("ot")
    x, y = clouds(1, 30, 40, 2)
    eps = 0.3
    if taus == "per-point":
        ta = torch.full((30,), 0.7, dtype=torch.float64)
        tb = torch.full((40,), 0.7, dtype=torch.float64)
        pa = pb = 0.7
    else:
        ta, tb = taus
        pa, pb = taus
    out = S.sinkhorn(x[0], y[0], eps=eps, tau_a=ta, tau_b=tb, tol=1e-12, max_iter=20000, impl=impl)
    assert out.converged
    C = R.cost_matrix(x, y, 0)[0].numpy()
    rho = lambda t: eps * t / (1 - t) if t < 1 else float("inf")  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P = ot.unbalanced.sinkhorn_unbalanced(np.full(30, 1 / 30), np.full(40, 1 / 40), C, eps, (rho(pa), rho(pb)),
                                              reg_type="entropy", numItermax=20000, stopThr=1e-14)
    assert_close(regops.ot.transport_plan(out), torch.from_numpy(P), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("impl", KERNEL_IMPLS)
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solver_impl_matches_reference(impl, cost, dtype):
    x, y = clouds(3, 45, 38, 5, dtype=dtype)
    a = torch.rand(3, 45, dtype=dtype) + 0.1
    a = a / a.sum(1, keepdim=True)
    ref = S.sinkhorn(x, y, a, eps=0.1, cost=cost, tol=1e-6, max_iter=3000, impl="reference")
    got = S.sinkhorn(x, y, a, eps=0.1, cost=cost, tol=1e-6, max_iter=3000, impl=impl)
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    if dtype == torch.float64:
        assert torch.equal(got.n_iter, ref.n_iter)
    assert_close(got.reg_ot_cost, ref.reg_ot_cost, **tol)
    assert_close(got.ent_reg_cost, ref.ent_reg_cost, **tol)
    assert_close(got.f, ref.f, **tol)
    assert_close(got.g, ref.g, **tol)


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
def test_batched_equals_one_by_one(impl):
    x, y = clouds(3, 20, 25, 2)
    out = S.sinkhorn(x, y, tol=1e-8, max_iter=5000, impl=impl)
    assert out.f.shape == (3, 20) and out.reg_ot_cost.shape == (3,) and out.n_iter.shape == (3,)
    for i in range(3):
        one = S.sinkhorn(x[i], y[i], tol=1e-8, max_iter=5000, impl=impl)
        assert one.n_iter == int(out.n_iter[i])  # each problem stops at its own iteration
        assert_close(one.reg_ot_cost, out.reg_ot_cost[i])
        assert_close(one.eps, out.eps[i])  # eps = 0.05·std(C) per problem


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
def test_single_points_and_duplicates(impl):
    x = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 0.0], [1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    out = S.sinkhorn(x, y, eps=0.1, tol=1e-10, impl=impl)
    # one source point: P = b exactly, and reg_ot_cost = ⟨b, C⟩
    C = R.cost_matrix(x[None], y[None], 0)[0]
    assert_close(regops.ot.transport_plan(out), torch.full((1, 3), 1 / 3, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    assert_close(out.reg_ot_cost, C.mean(), rtol=1e-9, atol=1e-12)
    one = S.sinkhorn(x, x, eps=0.1, impl=impl)  # N = M = 1
    assert one.reg_ot_cost.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("eps", [1e-3, 1e-2, 1.0, 10.0])
def test_no_nan_across_eps(impl, cost, eps):
    x, y = clouds(1, 30, 35, 3, dtype=torch.float32)
    out = S.sinkhorn(x[0], y[0], eps=eps, cost=cost, max_iter=200, on_nonconvergence="ignore", impl=impl)
    for t in (out.f, out.g, out.reg_ot_cost, out.ent_reg_cost, out.marginal_error):
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
@pytest.mark.parametrize("cost", COSTS)
def test_envelope_gradients_match_unrolled_autograd(impl, cost):
    """The Danskin gradients (x, y, a, b) against autograd through many unrolled dense iterations."""
    x, y = clouds(1, 6, 7, 2, seed=3)
    x, y = x[0].requires_grad_(), y[0].requires_grad_()
    a = (torch.rand(6, dtype=torch.float64) + 0.5)
    a = (a / a.sum()).requires_grad_()
    b = (torch.rand(7, dtype=torch.float64) + 0.5)
    b = (b / b.sum()).requires_grad_()
    eps = 0.5
    out = S.sinkhorn(x, y, a, b, eps=eps, cost=cost, tol=1e-13, max_iter=20000, impl=impl)
    grads = torch.autograd.grad(out.reg_ot_cost, (x, y, a, b))

    C = R.cost_matrix(x[None], y[None], COST_IDS[cost])[0]
    f = torch.zeros(6, dtype=torch.float64)
    g = torch.zeros(7, dtype=torch.float64)
    for _ in range(3000):
        g = eps * torch.log(b) - eps * torch.logsumexp((f[:, None] - C) / eps, 0)
        f = eps * torch.log(a) - eps * torch.logsumexp((g[None, :] - C) / eps, 1)
    P = torch.exp((f[:, None] + g[None, :] - C) / eps)
    reg = (a * (f - eps * torch.log(a))).sum() + (b * (g - eps * torch.log(b))).sum() + eps * (a.sum() * b.sum() - P.sum())
    unrolled = torch.autograd.grad(reg, (x, y, a, b))
    assert_close(out.reg_ot_cost, reg.detach(), rtol=1e-10, atol=1e-12)
    for got, exp in zip(grads, unrolled):
        assert_close(got, exp, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
def test_gradcheck_through_the_solve(impl):
    """float64 gradcheck of reg_ot_cost w.r.t. the points (the solve is re-run at each perturbed input)."""
    x, y = clouds(1, 4, 5, 2, seed=7)
    x, y = x[0].requires_grad_(), y[0].requires_grad_()
    fn = lambda x_, y_: S.sinkhorn(x_, y_, eps=0.7, tol=1e-14, max_iter=50000, impl=impl).reg_ot_cost  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y), atol=1e-6, rtol=1e-5)


def test_default_eps_is_005_std_of_C_and_relative():
    x, y = clouds(2, 30, 40, 3)
    for cost in COSTS:
        C = R.cost_matrix(x, y, COST_IDS[cost])
        std = C.reshape(2, -1).std(1, correction=0)
        mean = C.reshape(2, -1).mean(1)
        out = S.sinkhorn(x, y, cost=cost, max_iter=10, tol=0)
        assert_close(out.eps, 0.05 * std, rtol=1e-9, atol=0)
        assert_close(S.sinkhorn(x, y, cost=cost, relative_epsilon="mean", max_iter=10, tol=0).eps, 0.05 * mean,
                     rtol=1e-9, atol=0)
        assert_close(S.sinkhorn(x, y, eps=0.3, cost=cost, relative_epsilon="std", max_iter=10, tol=0).eps, 0.3 * std,
                     rtol=1e-9, atol=0)
        assert_close(regops.ot.sinkhorn_from_cost(C, max_iter=10, tol=0).eps, 0.05 * std, rtol=1e-9, atol=0)


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
def test_from_cost_matches_point_cloud_and_grad_is_plan(impl):
    x, y = clouds(1, 12, 15, 3)
    C = R.cost_matrix(x, y, 0)[0].requires_grad_()
    out = regops.ot.sinkhorn_from_cost(C, eps=0.2, tol=1e-10, max_iter=5000, impl=impl)
    pc = S.sinkhorn(x[0], y[0], eps=0.2, tol=1e-10, max_iter=5000, impl=impl)
    assert_close(out.reg_ot_cost, pc.reg_ot_cost, rtol=1e-9, atol=1e-11)
    (grad,) = torch.autograd.grad(out.reg_ot_cost, C)
    assert_close(grad, regops.ot.transport_plan(out).detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
def test_apply_plan_and_barycentric_map(impl):
    x, y = clouds(1, 10, 14, 2)
    out = S.sinkhorn(x[0], y[0], eps=0.3, tol=1e-10, max_iter=5000, impl=impl)
    P = regops.ot.transport_plan(out)
    v = torch.randn(14, 3, dtype=torch.float64)
    assert_close(regops.ot.apply_plan(out, v), P @ v)
    assert_close(regops.ot.apply_plan(out, v[:, 0]), P @ v[:, 0])
    w = torch.randn(10, dtype=torch.float64)
    assert_close(regops.ot.apply_plan(out, w, transpose=True), P.T @ w)
    assert_close(regops.ot.barycentric_map(out), (P @ y[0]) / (1 / 10))


def test_nonconvergence_policy():
    x, y = clouds(1, 30, 30, 2)
    with pytest.warns(regops.ot.NonConvergenceWarning, match="did not converge"):
        out = S.sinkhorn(x[0], y[0], eps=1e-3, max_iter=20)
    assert not out.converged and out.n_iter == 20 and out.marginal_error >= 1e-3
    with pytest.raises(regops.ot.SinkhornNotConverged, match="marginal error"):
        S.sinkhorn(x[0], y[0], eps=1e-3, max_iter=20, on_nonconvergence="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S.sinkhorn(x[0], y[0], eps=1e-3, max_iter=20, on_nonconvergence="ignore")
        S.sinkhorn(x[0], y[0], eps=1e-3, max_iter=20, tol=0)  # fixed iterations: no warning


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
@pytest.mark.parametrize("schedule", [0.7, (100.0, 0.9)])
def test_eps_scaling_reaches_the_same_solution_faster(impl, schedule):
    x, y = clouds(1, 40, 40, 2, seed=2)
    plain = S.sinkhorn(x[0], y[0], eps=1e-2, tol=1e-3, max_iter=5000, impl=impl)
    sched = S.sinkhorn(x[0], y[0], eps=1e-2, tol=1e-3, max_iter=5000, eps_schedule=schedule, impl=impl)
    assert plain.converged and sched.converged
    assert sched.n_iter < plain.n_iter
    assert_close(sched.reg_ot_cost, plain.reg_ot_cost, rtol=1e-4, atol=0)


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
def test_warm_start(impl):
    x, y = clouds(1, 30, 30, 2)
    first = S.sinkhorn(x[0], y[0], eps=0.2, tol=1e-6, max_iter=5000, impl=impl)
    again = S.sinkhorn(x[0], y[0], eps=0.2, tol=1e-6, max_iter=5000, init=first, impl=impl)
    assert again.n_iter <= 10 and again.converged


@pytest.mark.parametrize("impl", SOLVER_IMPLS)
def test_sinkhorn_divergence(impl):
    x, y = clouds(1, 25, 30, 2)
    kw = dict(tol=1e-6, max_iter=5000, impl=impl)
    d = regops.ot.sinkhorn_divergence(x[0], y[0], **kw)
    assert d.dim() == 0 and d.item() > 0
    same = regops.ot.sinkhorn_divergence(x[0], x[0].clone(), **kw)
    assert abs(same.item()) < 1e-6
    # all three share the eps of C(x, y); the self terms equal the plain solver's
    e = S.sinkhorn(x[0], y[0], max_iter=10, tol=0).eps
    xy = S.sinkhorn(x[0], y[0], eps=e, **kw).reg_ot_cost
    xx = S.sinkhorn(x[0], x[0], eps=e, **kw).reg_ot_cost
    yy = S.sinkhorn(y[0], y[0], eps=e, **kw).reg_ot_cost
    assert_close(d, xy - 0.5 * (xx + yy), rtol=1e-5, atol=1e-6)
    static = regops.ot.sinkhorn_divergence(x[0], y[0], static_b=True, **kw)
    assert_close(static, xy - 0.5 * xx, rtol=1e-5, atol=1e-6)
    xg = x[0].clone().requires_grad_()
    regops.ot.sinkhorn_divergence(xg, y[0], **kw).backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    batched = regops.ot.sinkhorn_divergence(torch.cat([x, x]), torch.cat([y, y]), **kw)
    assert batched.shape == (2,)
    assert_close(batched, torch.stack([d, d]), rtol=1e-9, atol=1e-12)
    unb = regops.ot.sinkhorn_divergence(x[0], y[0], tau_a=0.9, tau_b=0.9, **kw)
    assert torch.isfinite(unb)


def test_bad_input_errors():
    x, y = clouds(1, 5, 6, 3)
    x, y = x[0], y[0]
    with pytest.raises(ValueError, match=r"ot.sinkhorn: y: expected points of dimension 3"):
        S.sinkhorn(x, y[:, :2])
    with pytest.raises(ValueError, match="a: expected non-negative weights"):
        S.sinkhorn(x, y, a=torch.tensor([0.5, 0.5, 0.5, -0.5, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="a: expected weights with a positive sum"):
        S.sinkhorn(x, y, a=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"a: expected shape \(5,\)"):
        S.sinkhorn(x, y, a=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"tau_a: expected a value in \(0, 1\]"):
        S.sinkhorn(x, y, tau_a=1.5)
    with pytest.raises(ValueError, match=r"tau_b: expected values in \(0, 1\]"):
        S.sinkhorn(x, y, tau_b=torch.zeros(6))
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"x: expected finite values, got nan at index \(2, 1\)"):
        S.sinkhorn(bad, y)
    with pytest.raises(ValueError, match="b: expected the total mass of a"):
        S.sinkhorn(x, y, b=torch.full((6,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="cost: expected one of"):
        S.sinkhorn(x, y, cost="l1")
    with pytest.raises(ValueError, match="x: expected at least one point"):
        S.sinkhorn(x[:0], y)
    with pytest.raises(ValueError, match="eps: expected a positive"):
        S.sinkhorn(x, y, eps=0.0)
    with pytest.raises(ValueError, match="eps: expected a positive eps"):
        S.sinkhorn(torch.zeros(3, 2), torch.zeros(4, 2))  # std(C) = 0
    with pytest.raises(ValueError, match="relative_epsilon: expected one of"):
        S.sinkhorn(x, y, relative_epsilon="max")
    with pytest.raises(ValueError, match="on_nonconvergence: expected one of"):
        S.sinkhorn(x, y, on_nonconvergence="maybe")
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        S.sinkhorn(torch.ones(3, 2, dtype=torch.int64), y)
    with pytest.raises(RuntimeError, match="impl: expected an impl that can run here"):
        S.sinkhorn(x, y, impl="cuda")


@needs_cpu
def test_torch_compile_fullgraph():
    x, y = clouds(1, 20, 24, 3, dtype=torch.float32)
    x, y = x[0], y[0]

    def fn(x, y):
        return S.sinkhorn(x, y, eps=0.2, max_iter=6, tol=0, impl="cpu").reg_ot_cost

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    xg = x.clone().requires_grad_()
    got = compiled(xg, y)
    got.backward()
    xe = x.clone().requires_grad_()
    exp = fn(xe, y)
    exp.backward()
    assert_close(got, exp)
    assert_close(xg.grad, xe.grad)


@needs_cpu
def test_memory_is_linear():
    """N = M = 30000 (a dense C would take 3.6 GB in float32): the solve's peak memory grows by < 64 MiB."""
    code = textwrap.dedent("""
        import resource, torch, regops
        torch.manual_seed(0)
        x = torch.randn(30000, 3); y = torch.randn(30000, 3)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = regops.ot.sinkhorn(x, y, eps=0.1, max_iter=2, tol=0, impl="cpu")
        assert torch.isfinite(out.reg_ot_cost)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.strip().splitlines()[-1]) < 64


@pytest.mark.skipif("triton" not in CPU_IMPLS, reason="triton not available here")
@pytest.mark.parametrize("cost", COSTS)
def test_triton_solver_matches_reference(cost):
    """The whole solve through the Triton kernels (interpreted here): potentials, costs and envelope gradients."""
    x, y = clouds(2, 9, 11, 3, dtype=torch.float32)
    xr, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = S.sinkhorn(xr, y, eps=0.5, cost=cost, tol=0, max_iter=6, impl="reference")
    got = S.sinkhorn(xt, y, eps=0.5, cost=cost, tol=0, max_iter=6, impl="triton")
    assert_close(got.f, ref.f, rtol=1e-4, atol=1e-4)
    assert_close(got.g, ref.g, rtol=1e-4, atol=1e-4)
    assert_close(got.reg_ot_cost, ref.reg_ot_cost, rtol=1e-4, atol=1e-4)
    ref.reg_ot_cost.sum().backward()
    got.reg_ot_cost.sum().backward()
    assert_close(xt.grad, xr.grad, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="dtype float32 for impl='triton'"):
        S.sinkhorn(x.double(), y.double(), impl="triton")
