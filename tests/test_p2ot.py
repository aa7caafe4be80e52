"""P²OT / SP²OT pseudo-labels: the check value, every impl against the float64 log-domain reference, the official
scaling loop where it does not underflow, the properties of the plan, warm starts, the similarity, errors, and a
2-process gloo run against one process on the concatenated rows."""
import math
import os
import sys
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import regops
from regops.ot import p2ot as P
from regops.reference import p2ot as R

from conftest import cpu_impls, free_port

IMPLS = ["reference"] + cpu_impls("p2ot_plan")
KERNEL_IMPLS = [i for i in IMPLS if i != "reference"]
# The interpreted Triton kernel is slow: the long solves run on the compiled impls (test_p2ot_triton.py and
# test_p2ot_gpu.py hold the Triton kernel to the formula).
FAST_IMPLS = [i for i in IMPLS if i != "triton"]
FAST_KERNEL_IMPLS = [i for i in KERNEL_IMPLS if i != "triton"]
CHECK_LOGITS = 10 * torch.cos(0.7 * torch.arange(18.0)).reshape(6, 3)
CHECK_COLS = torch.tensor([0.28843, 0.02984, 0.28173])

ops = torch.ops.regops


def logits(n, k, scale=1.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("impl", IMPLS)
def test_check_value(impl):
    plan, state = regops.p2ot_plan(CHECK_LOGITS, 0.1, impl=impl)
    assert plan.dtype == torch.float32 and not plan.requires_grad
    torch.testing.assert_close(plan.sum(0), CHECK_COLS, rtol=0, atol=1e-5)
    assert plan.sum().item() == pytest.approx(0.6, abs=1e-5)
    assert state.converged and state.log_col_scaling.shape == (4,)


@pytest.mark.parametrize("impl", FAST_KERNEL_IMPLS)
@pytest.mark.parametrize("case", [(200, 7, 1.0), (300, 50, 10.0), (64, 3, 100.0), (1, 5, 1.0), (50, 1, 3.0)])
def test_impl_matches_reference(impl, case):
    n, k, scale = case
    z = logits(n, k, scale)
    want, sref = regops.p2ot_plan(z, 0.3, impl="reference", tol=1e-9, max_iter=20000)
    got, sgot = regops.p2ot_plan(z, 0.3, impl=impl, tol=1e-9, max_iter=20000)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-6)
    # the states are interchangeable: warm-starting one impl from the other's state converges at once
    again, s2 = regops.p2ot_plan(z, 0.3, impl=impl, init=sref, tol=1e-9, max_iter=20000)
    assert s2.n_iter <= 20
    torch.testing.assert_close(again, want, rtol=2e-4, atol=2e-6)


def official_scaling(z, rho, eps=0.1, gamma=1.0, tol=1e-12, max_iter=100000):
    """The official SemiCurrSinkhornKnopp loop, float64, kernel domain (fine where Q does not underflow)."""
    n, k = z.shape
    C = -torch.log_softmax(z.double(), 1)
    Q = torch.exp(-torch.cat([C, torch.zeros(n, 1, dtype=torch.float64)], 1) / eps)
    Pa = torch.full((n, 1), 1.0 / n, dtype=torch.float64)
    Pb = torch.cat([torch.full((k, 1), rho / k, dtype=torch.float64), torch.tensor([[1 - rho]], dtype=torch.float64)])
    b = torch.full((k + 1, 1), 1.0 / (k + 1), dtype=torch.float64)
    fi = gamma / (gamma + eps)
    for _ in range(max_iter):
        a = Pa / (Q @ b)
        b_new = Pb / (Q.T @ a)
        b_new[:k] = b_new[:k] ** fi
        done = torch.linalg.vector_norm(b_new - b) <= tol
        b = b_new
        if done:
            break
    return (n * (a * Q * b.T)[:, :k]).float()


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_matches_the_official_loop_where_it_works(impl):
    z = logits(40, 5, 0.3, seed=3)  # mild logits: the official float64 Q stays representable
    want = official_scaling(z, 0.4)
    got, _ = regops.p2ot_plan(z, 0.4, impl=impl, tol=1e-12, max_iter=100000)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("rho", [0.05, 0.5, 1.0])
def test_plan_properties(impl, rho):
    z = logits(120, 9, 10.0, seed=1)  # 10× scale: exp(−C/ε) underflows float32 (and nearly float64)
    plan, state = regops.p2ot_plan(z, rho, impl=impl, tol=1e-8, max_iter=20000)
    assert torch.isfinite(plan).all() and (plan >= 0).all()
    assert (plan.sum(1) <= 1 + 1e-5).all()
    assert plan.sum().item() == pytest.approx(120 * rho, rel=1e-4)


def test_official_float32_underflows_where_regops_does_not():
    z = logits(30, 4, 10.0, seed=2)
    Q = torch.exp(torch.log_softmax(z, 1) / 0.1)  # the official Q in float32
    assert (Q.sum(1) == 0).any() or (Q == 0).float().mean() > 0.3
    plan, _ = regops.p2ot_plan(z, 0.2)
    assert torch.isfinite(plan).all() and plan.sum().item() == pytest.approx(6.0, rel=1e-4)


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_warm_start_and_stateful_wrapper(impl):
    z = logits(100, 6, 5.0)
    solver = regops.P2OT(impl=impl)
    first = solver(z, 0.2)
    n_first = solver.state.n_iter
    second = solver(z, 0.2)
    assert solver.state.n_iter <= 10 < n_first
    torch.testing.assert_close(second, first, rtol=1e-4, atol=1e-6)
    solver(logits(100, 8, 5.0), 0.2)  # a new K resets the state
    assert solver.state.log_col_scaling.shape == (9,)


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_rho_one_with_warm_start(impl):
    """ρ = 1 (the schedule's end): the virtual column has no mass, also when warm-started."""
    z = logits(64, 5, 3.0)
    first, state = regops.p2ot_plan(z, 1.0, impl=impl, tol=1e-8, max_iter=20000)
    again, _ = regops.p2ot_plan(z, 1.0, impl=impl, init=state, tol=1e-8, max_iter=20000)
    assert torch.isfinite(again).all() and again.sum().item() == pytest.approx(64.0, rel=1e-4)
    torch.testing.assert_close(again, first, rtol=1e-4, atol=1e-6)


def test_rho_schedule():
    assert regops.rho_schedule(0, 100) == pytest.approx(0.1 + 0.9 * math.exp(-5))
    assert regops.rho_schedule(100, 100) == pytest.approx(1.0)
    assert regops.rho_schedule(50, 100, kind="linear") == pytest.approx(0.55)
    with pytest.raises(ValueError, match="kind: expected one of"):
        regops.rho_schedule(1, 10, kind="cosine")


def test_errors():
    z = logits(5, 3)
    with pytest.raises(ValueError, match=r"regops.p2ot_plan: rho: expected a mass in \(0, 1\]"):
        regops.p2ot_plan(z, 0.0)
    with pytest.raises(ValueError, match="rho: expected"):
        regops.p2ot_plan(z, 1.5)
    with pytest.raises(ValueError, match="logits: expected K >= 1 columns"):
        regops.p2ot_plan(z[:, :0], 0.1)
    bad = z.clone()
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"logits: expected finite values, got inf at index \(1, 2\)"):
        regops.p2ot_plan(bad, 0.1)
    with pytest.raises(ValueError, match=r"init: expected a P2OTState .* of shape \(4,\)"):
        regops.p2ot_plan(z, 0.1, init=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"similarity: expected shape \(5, 5\)"):
        regops.sp2ot_plan(z, 0.1, torch.zeros(4, 4))
    with pytest.warns(regops.ot.NonConvergenceWarning):
        regops.p2ot_plan(logits(50, 4, 10.0), 0.1, max_iter=3)


@pytest.mark.skipif("cpu" not in KERNEL_IMPLS, reason="no compiled CPU kernels")
def test_scaling_pass_op():
    K = torch.rand(37, 11, dtype=torch.float64)
    v = torch.rand(11, dtype=torch.float64) + 0.5
    t = torch.rand(37, dtype=torch.float64)
    for dt in (torch.float32, torch.float64):
        u, col = ops.p2ot_scaling_pass(K.to(dt), v.to(dt), t.to(dt))
        u_ref = t / (K @ v)
        torch.testing.assert_close(u.double(), u_ref, rtol=1e-6 if dt == torch.float32 else 1e-12, atol=0)
        torch.testing.assert_close(col.double(), K.T @ u_ref, rtol=1e-6 if dt == torch.float32 else 1e-12, atol=0)
    torch.library.opcheck(ops.p2ot_scaling_pass.default, (K, v, t))
    big = torch.rand(3000, 101)
    u1, c1 = ops.p2ot_scaling_pass(big, torch.ones(101), torch.ones(3000))
    u2, c2 = ops.p2ot_scaling_pass(big, torch.ones(101), torch.ones(3000))
    assert torch.equal(c1, c2)  # fixed chunk order
    with pytest.raises(ValueError, match=r"col_scale: expected shape \(11,\)"):
        ops.p2ot_scaling_pass(K, v[:5], t)


# ---- SP²OT ----

def test_topk_gaussian_similarity_matches_brute_force():
    f = torch.randn(50, 6)
    S = regops.topk_gaussian_similarity(f, k=5, sigma=2.0, block_rows=16).to_dense()
    d2 = torch.cdist(f.double(), f.double()).pow(2)
    d2.fill_diagonal_(float("inf"))
    dense = torch.exp(-d2 / (2 * 4.0 * 6))
    want = torch.zeros_like(dense)
    idx = torch.topk(dense, 5, dim=1).indices
    want.scatter_(1, idx, dense.gather(1, idx))
    torch.testing.assert_close(S.double(), want, rtol=1e-5, atol=1e-7)
    assert (S.diagonal() == 0).all() and ((S > 0).sum(1) == 5).all()
    assert regops.topk_gaussian_similarity(f[:3], k=20).to_dense().count_nonzero() == 6  # k clamps to N − 1


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_sp2ot_without_similarity_is_p2ot(impl):
    z = logits(60, 5, 5.0)
    want, _ = regops.p2ot_plan(z, 0.3, impl=impl, tol=1e-9, max_iter=20000)
    got, _ = regops.sp2ot_plan(z, 0.3, torch.zeros(60, 60), impl=impl, tol=1e-9, max_iter=20000)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("impl", FAST_KERNEL_IMPLS)
def test_sp2ot_impl_matches_reference(impl):
    z = logits(80, 6, 5.0, seed=4)
    S = regops.topk_gaussian_similarity(torch.randn(80, 16), k=10)
    want, _ = regops.sp2ot_plan(z, 0.4, S, lam=0.5, impl="reference", tol=1e-9, max_iter=20000)
    got, _ = regops.sp2ot_plan(z, 0.4, S, lam=0.5, impl=impl, tol=1e-9, max_iter=20000)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)
    assert got.sum().item() == pytest.approx(80 * 0.4, rel=1e-4)
    dense, _ = regops.sp2ot_plan(z, 0.4, S.to_dense(), lam=0.5, impl=impl, tol=1e-9, max_iter=20000)
    torch.testing.assert_close(dense, got, rtol=1e-4, atol=1e-6)


# ---- across ranks ----

WORLD, N_LOCAL = 2, 17


def _worker(rank, port, impls, failures):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        g = torch.Generator().manual_seed(3)
        f = torch.nn.functional.normalize(torch.randn(WORLD * N_LOCAL, 16, generator=g), dim=1)
        p = torch.nn.functional.normalize(torch.randn(37, 16, generator=g), dim=1)
        # a mild problem, and confident logits whose column lifts must agree across ranks
        for name, z in (("gaussian", logits(WORLD * N_LOCAL, 4, 5.0, seed=7)), ("150·cos", 150 * f @ p.T)):
            want, _ = regops.p2ot_plan(z, 0.3, impl="reference", tol=1e-10, max_iter=20000)
            sl = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
            for impl in impls:
                got, _ = regops.p2ot_plan(z[sl], 0.3, impl=impl, tol=1e-10, max_iter=20000,
                                          process_group=dist.group.WORLD)
                try:
                    torch.testing.assert_close(got, want[sl], rtol=1e-4, atol=1e-6)
                except AssertionError as exc:
                    failures.append(f"rank {rank} {impl} {name}: {exc}")
    except Exception as exc:
        failures.append(f"rank {rank}: {type(exc).__name__}: {exc}")
    finally:
        dist.barrier()
        dist.destroy_process_group()
    os._exit(0)  # see test_contrastive_distributed.py: gloo's teardown sometimes aborts


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
@pytest.mark.skipif(sys.platform != "linux", reason="spawned gloo workers: Linux only here")
def test_process_group_equals_the_concatenated_rows():
    impls = ["reference"] + [i for i in KERNEL_IMPLS if i == "cpu"]
    with mp.Manager() as manager:
        failures = manager.list()
        mp.spawn(_worker, args=(free_port(), impls, failures), nprocs=WORLD, join=True)
        failures = list(failures)
    assert not failures, "\n".join(failures)
