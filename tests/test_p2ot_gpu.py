"""P²OT's fused scaling pass on a GPU: the CUDA kernel (torch.ops.regops.p2ot_scaling_pass) and the Triton one
(..._triton, float32 only) against the formula in float64, on CUDA tensors; and regops.p2ot_plan and
regops.sp2ot_plan with each impl against impl="reference". Skips without a CUDA device.

A test marked gpu_validates and parametrized by `impl` vouches for those (op, impl) pairs (conftest.py,
scripts/gpu_check.sh): it must not skip except when the impl cannot run at all."""
import math

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

import regops  # noqa: E402
from regops import _loader  # noqa: E402

if _loader.triton_available():
    from regops.triton import p2ot as _tp  # noqa: E402,F401  (registers the triton op)

from conftest import need  # noqa: E402

pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

# (impl, dtype): the Triton kernel takes float32 only
OP = "p2ot_plan"
IMPL_DTYPES = [("cuda", torch.float32), ("cuda", torch.float64), ("triton", torch.float32)]
IDS = ["cuda-fp32", "cuda-fp64", "triton-fp32"]
# P²OT's range (N ~ 5k-100k rows, Kc ~ 100-1001 columns), odd sizes, every column width class of the CUDA kernel
# (≤ 32·{1, 2, 4, 8, 16, 32} columns), and Kc > 1024 (the chunked fallbacks).
SHAPES = [(1, 1), (3, 2), (37, 17), pytest.param(300, 101, marks=pytest.mark.gpu_quick), (65, 513), (4097, 33),
          (5000, 100), (777, 1023), (20000, 1001), pytest.param(1000, 1025, marks=pytest.mark.gpu_quick), (33, 2500)]




def scaling_pass(impl):
    o = torch.ops.regops
    return o.p2ot_scaling_pass_triton if impl == "triton" else o.p2ot_scaling_pass


def expected(K, v, t):
    K, v, t = K.double(), v.double(), t.double()
    u = t / (K @ v)
    return u, K.T @ u


def inputs(n, kc, dtype, seed=0, target="uniform"):
    """A positive kernel (rows of a stabilized exp(−C/ε), as P²OT forms them) and positive scalings."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    logits = torch.randn(n, kc, device="cuda", dtype=torch.float64, generator=g)
    K = torch.softmax(3 * logits, 1)
    v = torch.rand(kc, device="cuda", dtype=torch.float64, generator=g) + 0.5
    if target == "uniform":
        t = torch.full((n,), 1.0 / max(n, 1), device="cuda", dtype=torch.float64)
    else:
        t = torch.rand(n, device="cuda", dtype=torch.float64, generator=g) * 10
        t[::5] = 0
    return K.to(dtype), v.to(dtype), t.to(dtype)


def tol(dtype):
    """K, v, t ≥ 0: no sum cancels, so the error is relative (a few ulps times the summation depth)."""
    return dict(rtol=1e-12 if dtype == torch.float64 else 2e-5, atol=1e-30)


def check(got, exp, dtype):
    u, col = got
    ue, ce = exp
    assert u.dtype == dtype and col.dtype == dtype and u.is_cuda and col.is_cuda
    assert u.shape == ue.shape and col.shape == ce.shape
    torch.testing.assert_close(u, ue.to(dtype), **tol(dtype))
    torch.testing.assert_close(col, ce.to(dtype), **tol(dtype))


@pytest.mark.gpu_validates("p2ot_plan")
@pytest.mark.parametrize("impl,dtype", IMPL_DTYPES, ids=IDS)
@pytest.mark.parametrize("n,kc", SHAPES)
def test_matches_formula(impl, dtype, n, kc):
    need(OP, impl)
    K, v, t = inputs(n, kc, dtype, seed=n + kc)
    check(scaling_pass(impl)(K, v, t), expected(K, v, t), dtype)


@pytest.mark.gpu_validates("p2ot_plan")
@pytest.mark.parametrize("impl,dtype", IMPL_DTYPES, ids=IDS)
@pytest.mark.parametrize("n,kc", [(301, 17), (5001, 101)])
def test_varied_targets_and_layout(impl, dtype, n, kc):
    need(OP, impl)
    K, v, t = inputs(n, kc, dtype, seed=3, target="varied")
    check(scaling_pass(impl)(K.T.contiguous().T, v, t), expected(K, v, t), dtype)  # a column-major K


@pytest.mark.gpu_validates("p2ot_plan")
@pytest.mark.parametrize("impl,dtype", IMPL_DTYPES, ids=IDS)
def test_zero_row_gives_inf(impl, dtype):
    need(OP, impl)
    K, v, t = inputs(300, 101, dtype, seed=4, target="varied")
    K[7] = 0
    t[7] = 1
    u, col = scaling_pass(impl)(K, v, t)
    assert torch.isinf(u[7]) and u[7] > 0
    assert torch.isnan(col).all()  # 0·inf in every column, as the formula says
    ue, _ = expected(K, v, t)
    finite = torch.isfinite(ue)
    torch.testing.assert_close(u[finite], ue[finite].to(dtype), **tol(dtype))


@pytest.mark.gpu_validates("p2ot_plan")
@pytest.mark.parametrize("impl,dtype", IMPL_DTYPES, ids=IDS)
def test_empty(impl, dtype):
    need(OP, impl)
    f = scaling_pass(impl)
    u, col = f(torch.empty(0, 5, device="cuda", dtype=dtype), torch.ones(5, device="cuda", dtype=dtype),
               torch.empty(0, device="cuda", dtype=dtype))
    assert u.shape == (0,) and torch.equal(col, torch.zeros(5, device="cuda", dtype=dtype))
    u, col = f(torch.empty(3, 0, device="cuda", dtype=dtype), torch.empty(0, device="cuda", dtype=dtype),
               torch.ones(3, device="cuda", dtype=dtype))
    assert col.shape == (0,) and torch.isinf(u).all()  # r_i is an empty sum: u = t/0


@pytest.mark.gpu_validates("p2ot_plan")
@pytest.mark.parametrize("impl,dtype", IMPL_DTYPES, ids=IDS)
@pytest.mark.parametrize("n,kc", [(20000, 1001), (100000, 101), (1000, 1025)])
def test_deterministic(impl, dtype, n, kc):
    need(OP, impl)
    K, v, t = inputs(n, kc, dtype, seed=5, target="varied")
    f = scaling_pass(impl)
    a, b = f(K, v, t), f(K, v, t)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_errors(impl):
    need(OP, impl)
    f = scaling_pass(impl)
    K, v, t = inputs(5, 3, torch.float32)
    with pytest.raises(ValueError, match=r"regops.p2ot_scaling_pass: col_scale: expected shape \(3,\)"):
        f(K, v[:2], t)
    with pytest.raises(ValueError, match=r"regops.p2ot_scaling_pass: row_target: expected shape \(5,\)"):
        f(K, v, t[:4])
    with pytest.raises(TypeError, match=r"regops.p2ot_scaling_pass: col_scale: expected dtype"):
        f(K, v.double(), t)
    with pytest.raises(RuntimeError, match=r"regops.p2ot_scaling_pass: row_target: expected device"):
        f(K, v, t.cpu())
    if impl == "triton":
        with pytest.raises(TypeError, match=r"regops.p2ot_scaling_pass: kernel: expected dtype float32"):
            f(K.double(), v.double(), t.double())


def test_opcheck_cuda():
    need(OP, "cuda")
    K, v, t = inputs(37, 17, torch.float32, seed=6, target="varied")
    torch.library.opcheck(torch.ops.regops.p2ot_scaling_pass.default, (K, v, t))


# ---- regops.p2ot_plan on CUDA with each kernel impl against the float64 reference ----

def _plan_api():
    if not hasattr(regops, "p2ot_plan"):
        pytest.skip("regops.p2ot_plan is not available")
    return regops.p2ot_plan


@pytest.mark.gpu_validates("p2ot_plan")
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_plan_small_matches_reference(impl):
    p2ot_plan = _plan_api()
    need(OP, impl)
    logits = (10 * torch.cos(0.7 * torch.arange(18, dtype=torch.float32))).reshape(6, 3).cuda()
    got, _ = p2ot_plan(logits, 0.1, impl=impl)
    exp, _ = p2ot_plan(logits, 0.1, impl="reference")
    assert got.is_cuda and got.shape == (6, 3)
    torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-7)
    cols = torch.tensor([0.28843, 0.02984, 0.28173], dtype=torch.float64)
    torch.testing.assert_close(got.sum(0).double().cpu(), cols, rtol=0, atol=1e-5)
    assert math.isclose(float(got.sum()), 0.6, rel_tol=1e-4)  # N·ρ


@pytest.mark.gpu_quick
@pytest.mark.gpu_validates("p2ot_plan")
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_plan_random_matches_reference(impl):
    """A fixed number of iterations (tol=0), so both impls run the same iteration."""
    p2ot_plan = _plan_api()
    need(OP, impl)
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(512, 100, device="cuda", generator=g)
    kw = dict(max_iter=200, tol=0.0, on_nonconvergence="ignore")
    got, _ = p2ot_plan(logits, 0.1, impl=impl, **kw)
    exp, _ = p2ot_plan(logits, 0.1, impl="reference", **kw)
    assert got.is_cuda and got.shape == (512, 100)
    torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu_validates("p2ot_plan")
@pytest.mark.parametrize("impl", ["cuda", "triton"])
@pytest.mark.parametrize("k", [2, 37, 1000])
@pytest.mark.parametrize("scale", [1.0, 150.0, 10000.0])
@pytest.mark.parametrize("kind", ["cosine", "gaussian"])
def test_plan_confident_logits_match_reference(impl, kind, scale, k):
    """Confident logits (test_p2ot_range.py on the CPU): columns whose iterate mass is below float32's normal
    range are lifted per column, so the float32 kernels solve what the float64 reference solves."""
    p2ot_plan = _plan_api()
    need(OP, impl)
    g = torch.Generator().manual_seed(3)
    if kind == "cosine":
        f = torch.nn.functional.normalize(torch.randn(128, 16, generator=g), dim=1)
        p = torch.nn.functional.normalize(torch.randn(k, 16, generator=g), dim=1)
        logits = scale * f @ p.T
    else:
        logits = scale * torch.randn(128, k, generator=g)
    logits = logits.cuda()
    kw = dict(tol=1e-9, max_iter=20000)
    exp, _ = p2ot_plan(logits, 0.3, impl="reference", **kw)
    got, state = p2ot_plan(logits, 0.3, impl=impl, **kw)
    assert state.converged and torch.isfinite(got).all()
    torch.testing.assert_close(got, exp, rtol=2e-4, atol=2e-6)


@pytest.mark.gpu_quick
@pytest.mark.gpu_validates("sp2ot_plan")
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_sp2ot_plan_matches_reference(impl):
    """SP²OT's majorize-minimize steps, each a P²OT solve of the impl's scaling pass, with a sparse top-k similarity
    and its dense form, against impl="reference" on the same CUDA tensors (test_p2ot.py's CPU check and tolerance)."""
    need("sp2ot_plan", impl)
    g = torch.Generator(device="cuda").manual_seed(4)
    logits = 5 * torch.randn(80, 6, device="cuda", generator=g)
    S = regops.topk_gaussian_similarity(torch.randn(80, 16, device="cuda", generator=g), k=10)
    kw = dict(lam=0.5, tol=1e-9, max_iter=20000, mm_iters=10)  # at most 10 solves, so a slow one stays short
    want, _ = regops.sp2ot_plan(logits, 0.4, S, impl="reference", **kw)
    got, _ = regops.sp2ot_plan(logits, 0.4, S, impl=impl, **kw)
    assert got.is_cuda and got.shape == (80, 6)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)
    assert got.sum().item() == pytest.approx(80 * 0.4, rel=1e-4)
    dense, _ = regops.sp2ot_plan(logits, 0.4, S.to_dense(), impl=impl, **kw)
    torch.testing.assert_close(dense, got, rtol=1e-4, atol=1e-6)
