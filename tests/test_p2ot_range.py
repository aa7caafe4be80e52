"""P²OT/SP²OT on confident logits: the float32 kernel path solves what the float64 reference solves.

Cosine classifiers with a large scale (and raw Gaussian logits) make some column's iterate mass ~1e-43 while its
scaling is astronomically large: before the per-column lift in ot/p2ot.py's `form`, the float32 column sums
underflowed and the kernel path raised "kept underflowing" (or, at ρ = 0.05, stopped early on a wrong plan).
The grid is the issue's: logit scales 1 … 10 000, cosine and Gaussian logits, K ∈ {1, 2, 37, 1000},
ρ ∈ {0.05, 0.3, 1}. The compiled impls are held to the converged reference plan; the interpreted Triton kernel
(slow) to the reference's iterate after the same number of iterations."""
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings, strategies as st

import regops
from regops.ot import p2ot as P

from conftest import cpu_impls

KERNEL_IMPLS = cpu_impls("p2ot_plan")
COMPILED_IMPLS = [i for i in KERNEL_IMPLS if i != "triton"]
SCALES = [1, 10, 30, 100, 150, 300, 1000, 10000]
KS = [1, 2, 37, 1000]
RHOS = [0.05, 0.3, 1.0]
KINDS = ["cosine", "gaussian"]
N = 128
SOLVE = dict(tol=1e-9, max_iter=20000)
TOL = dict(rtol=2e-4, atol=2e-6)  # test_p2ot.py's kernel-vs-reference tolerance


def features(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 16, generator=g), dim=1), F.normalize(torch.randn(k, 16, generator=g), dim=1)


def make_logits(kind, scale, k, n=N, seed=3):
    """A cosine classifier s·f·pᵀ (the issue's data) or s·N(0, 1) logits."""
    if kind == "cosine":
        f, p = features(n, k, seed)
        return scale * f @ p.T
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, k, generator=g)


@functools.lru_cache(maxsize=None)
def reference_plan(kind, scale, k, rho):
    plan, state = regops.p2ot_plan(make_logits(kind, scale, k), rho, impl="reference", **SOLVE)
    assert state.converged
    return plan


# A kernel's float32 plan may exceed the row bound by rounding: at logits ×1000 (|z|/eps ~ 1e4) and ρ = 1 a row
# sums to 1 + 3.1e-5 (the float64 reference: 1 + 2e-7), well inside the kernel-vs-reference TOL.
ROW_SLACK = 5e-5


def check_plan(plan, rho, n=N):
    assert plan.dtype == torch.float32 and torch.isfinite(plan).all()
    assert (plan >= 0).all() and (plan.sum(1) <= 1 + ROW_SLACK).all(), float(plan.sum(1).max()) - 1
    assert plan.sum().item() == pytest.approx(n * rho, rel=1e-4)


def test_the_issue_example():
    g = torch.Generator().manual_seed(3)
    f = F.normalize(torch.randn(128, 16, generator=g), dim=1)
    p = F.normalize(torch.randn(37, 16, generator=g), dim=1)
    logits = 150.0 * f @ p.T
    ref, _ = regops.p2ot_plan(logits, 0.3, impl="reference")
    plan, state = regops.p2ot_plan(logits, 0.3)  # auto: the CPU kernel where it is built
    assert state.converged
    torch.testing.assert_close(plan, ref, **TOL)
    plan64, _ = regops.p2ot_plan(logits.double(), 0.3, impl="reference" if not COMPILED_IMPLS else "cpu")
    torch.testing.assert_close(plan64, ref, **TOL)


@pytest.mark.skipif(not COMPILED_IMPLS, reason="no compiled CPU kernel in this build")
@pytest.mark.parametrize("impl", COMPILED_IMPLS)
@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("kind", KINDS)
def test_kernel_matches_reference(impl, kind, k, scale, rho):
    got, state = regops.p2ot_plan(make_logits(kind, scale, k), rho, impl=impl, **SOLVE)
    assert state.converged
    check_plan(got, rho)
    torch.testing.assert_close(got, reference_plan(kind, scale, k, rho), **TOL)


@pytest.mark.skipif("triton" not in KERNEL_IMPLS, reason="triton is not available")
@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("k", [1, 2, 37])
@pytest.mark.parametrize("kind", KINDS)
def test_triton_matches_reference_iterate(kind, k, scale, rho):
    z = make_logits(kind, scale, k)
    want, _ = regops.p2ot_plan(z, rho, impl="reference", tol=0, max_iter=30)
    got, state = regops.p2ot_plan(z, rho, impl="triton", tol=0, max_iter=30)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.skipif("triton" not in KERNEL_IMPLS, reason="triton is not available")
@pytest.mark.parametrize("scale", [1, 150, 10000])
@pytest.mark.parametrize("kind", KINDS)
def test_triton_wide_k(kind, scale):
    z = make_logits(kind, scale, 1000)
    want, _ = regops.p2ot_plan(z, 0.3, impl="reference", tol=0, max_iter=30)
    got, _ = regops.p2ot_plan(z, 0.3, impl="triton", tol=0, max_iter=30)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.skipif("triton" not in KERNEL_IMPLS, reason="triton is not available")
def test_triton_solves_the_issue_example():
    z = make_logits("cosine", 150, 37)
    got, state = regops.p2ot_plan(z, 0.3, impl="triton", **SOLVE)
    assert state.converged
    torch.testing.assert_close(got, reference_plan("cosine", 150, 37, 0.3), **TOL)


def sp2ot_problem(kind, scale, seed=3, n=N, k=37):
    f, p = features(n, k, seed)
    z = scale * f @ p.T if kind == "cosine" else make_logits(kind, scale, k, n=n, seed=seed)
    return z, regops.topk_gaussian_similarity(f, k=10)


@pytest.mark.parametrize("impl", KERNEL_IMPLS)
@pytest.mark.parametrize("rho", [0.1, 0.5])
@pytest.mark.parametrize("scale", [1, 150, 10000])
@pytest.mark.parametrize("kind", KINDS)
def test_sp2ot_default_lambda(impl, kind, scale, rho):
    """SP²OT at its default λ = 1000(1 − ρ): the costs C − λ(S+Sᵀ)Q span thousands of ε. Two MM steps are held to
    the reference (later steps amplify float32-level differences by ~λ·ΣS/ε each, and the scale-aware stopping
    test can stop two impls at different iterates when b spans hundreds of orders of magnitude); the whole
    default solve (which raised "kept underflowing" before) must give a valid plan."""
    z, S = sp2ot_problem(kind, scale)
    kw = dict(mm_iters=2, tol=0, max_iter=30) if impl == "triton" else dict(mm_iters=2, **SOLVE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", regops.ot.NonConvergenceWarning)
        want, _ = regops.sp2ot_plan(z, rho, S, impl="reference", **kw)
        got, _ = regops.sp2ot_plan(z, rho, S, impl=impl, **kw)
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)  # test_p2ot.py's SP²OT tolerance
        if impl != "triton":
            plan, _ = regops.sp2ot_plan(z, rho, S, impl=impl)
            # rows ≤ 1 up to the last step's non-convergence (the reference's rows exceed 1 by as much)
            assert torch.isfinite(plan).all() and (plan >= 0).all() and (plan.sum(1) <= 1 + 1e-4).all()


@pytest.mark.skipif(not COMPILED_IMPLS, reason="no compiled CPU kernel in this build")
@settings(max_examples=30)
@given(log_scale=st.floats(0.0, 4.0), kind=st.sampled_from(KINDS), k=st.sampled_from([1, 2, 5, 37, 64]),
       rho=st.sampled_from(RHOS), n=st.integers(1, 150), seed=st.integers(0, 2 ** 16))
@example(log_scale=3.0, kind="gaussian", k=64, rho=1.0, n=135, seed=0)  # found by a CI run: rows at 1 + 3.1e-5
def test_hypothesis_scale(log_scale, kind, k, rho, n, seed):
    z = make_logits(kind, 10.0 ** log_scale, k, n=n, seed=seed)
    want, sref = regops.p2ot_plan(z, rho, impl="reference", **SOLVE)
    got, state = regops.p2ot_plan(z, rho, impl=COMPILED_IMPLS[0], **SOLVE)
    assert sref.converged and state.converged
    check_plan(got, rho, n)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.skipif(not COMPILED_IMPLS, reason="no compiled CPU kernel in this build")
@pytest.mark.parametrize("shape,eps", [((512, 50), 1e-2), ((512, 50), 1e-3), ((512, 50), 1e-4), ((10, 4), 1e-4),
                                       ((10, 4), 1e-6)])
def test_small_eps_forms_in_float64(shape, eps):
    """Small ε (these raised "kept underflowing" before): the float32 rounding of (α + β − Ĉ)/ε would reach 1e-2,
    so K is formed in float64; neither solve converges in 300 iterations, and the iterates agree."""
    z = 10 * make_logits("cosine", 1.0, shape[1], n=shape[0], seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", regops.ot.NonConvergenceWarning)
        want, _ = regops.p2ot_plan(z, 0.3, eps=eps, impl="reference", max_iter=300)
        got, _ = regops.p2ot_plan(z, 0.3, eps=eps, impl=COMPILED_IMPLS[0], max_iter=300)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.skipif(not KERNEL_IMPLS, reason="no kernel impl in this build")
def test_unrepresentable_problem_raises_when_named_and_auto_solves(monkeypatch):
    """A kernel path whose sums leave the range: a named impl raises and says what to do; auto hands the problem
    to the float64 reference. (A scaling pass whose column sums are 0 stands in for such a problem.)"""
    z = make_logits("gaussian", 3.0, 5, n=16)
    want, _ = regops.p2ot_plan(z, 0.3, impl="reference")

    real_pass = P._pass

    def underflowing_pass(chosen):
        return lambda K, v, t: (real_pass(chosen)(K, v, t)[0], torch.zeros(K.shape[1], dtype=K.dtype))

    monkeypatch.setattr(P, "_pass", underflowing_pass)
    impl = KERNEL_IMPLS[0]
    with pytest.raises(FloatingPointError, match=r"regops\.p2ot_plan: logits: .*pass float64 logits or raise eps"):
        regops.p2ot_plan(z, 0.3, impl=impl)
    with pytest.raises(FloatingPointError, match=r"regops\.sp2ot_plan: "):
        regops.sp2ot_plan(z, 0.3, torch.zeros(16, 16), impl=impl)
    monkeypatch.setenv("REGOPS_IMPL", impl)  # a preference, not a demand: still auto
    got, state = regops.p2ot_plan(z, 0.3)
    assert state.converged
    torch.testing.assert_close(got, want)
