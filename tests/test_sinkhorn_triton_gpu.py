"""The Triton streamed Sinkhorn kernels on a GPU: the four ops (torch.ops.regops.sinkhorn_*_triton) on CUDA
float32 tensors against regops.reference.sinkhorn evaluated in float64 on the same values. Skips without a
CUDA device.

A test marked gpu_validates and parametrized by `impl` vouches for those (op, impl) pairs (conftest.py,
scripts/gpu_check.sh): it must not skip except when the impl cannot run at all. Tolerances as in
tests/test_sinkhorn_triton.py (whose docstring explains the input scaling with eps).
"""
import pytest
import torch

from regops import _loader
from regops.reference import sinkhorn as ref

from conftest import need, requires_cuda
from tolerances import sinkhorn_grad_scale

OP = "ot.sinkhorn"
IMPLS = ["triton"]
SQ, EU, COS = ref.SQEUCLIDEAN, ref.EUCLIDEAN, ref.COSINE
COSTS = [SQ, EU, COS]
COST_IDS = ["sqeuclidean", "euclidean", "cosine"]
NEG_INF = float("-inf")
# (B, N, M, d): the CPU test's odd sizes, plus full tiles over many programs; the gradient also takes
# d > BLOCK_D = 64 (several output chunks). Few shapes: each compiles its own kernels (~0.5 s each).
SHAPES = [(1, 1, 3, 2), pytest.param((3, 37, 200, 17), marks=pytest.mark.gpu_quick), (2, 1000, 777, 64)]
GRAD_SHAPES = SHAPES + [(1, 300, 129, 130)]
# test_apply's (shape, k): k = 70 is two BLOCK_D chunks
APPLY_CASES = [((1, 1, 3, 2), 1), pytest.param((3, 37, 200, 17), 5, marks=pytest.mark.gpu_quick),
               ((2, 1000, 777, 64), 70)]
EPS = [1e-3, 0.1, 10.0]

if _loader.triton_available():
    from regops.triton import sinkhorn as _ts  # noqa: F401  (registers the triton ops)

pytestmark = [requires_cuda, pytest.mark.cuda]




def _tf32(allow):
    old = torch.backends.cuda.matmul.allow_tf32  # cuBLASModule: monkeypatch.setattr cannot restore it
    torch.backends.cuda.matmul.allow_tf32 = allow
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture
def ieee():
    yield from _tf32(False)


@pytest.fixture
def tf32():
    yield from _tf32(True)


def _ops():
    o = torch.ops.regops
    return o.sinkhorn_update_triton, o.sinkhorn_update_dense_triton, o.sinkhorn_cost_grad_triton, \
        o.sinkhorn_apply_triton


def check(actual, expected, rtol=1e-4, scale=None):
    assert actual.dtype == torch.float32 and actual.shape == expected.shape and actual.is_cuda
    if scale is None:
        finite = torch.isfinite(expected)
        scale = expected[finite].abs().max().item() if finite.any() else 0.0
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=rtol * scale + 1e-30)


def f64(*ts):
    return [t.double() for t in ts]


def gen(seed):
    return torch.Generator(device="cuda").manual_seed(seed)


def clouds(bsz, n, m, d, seed=0):
    g = gen(seed)
    x = torch.randn(bsz, n, d, device="cuda", generator=g, dtype=torch.float64)
    y = torch.randn(bsz, m, d, device="cuda", generator=g, dtype=torch.float64)
    return x.float(), y.float()


def eps_tensor(bsz, eps):
    return torch.full((bsz,), eps, dtype=torch.float32, device="cuda")


def update_inputs(bsz, n, m, seed=0):
    g = gen(seed + 3)
    pot = torch.randn(bsz, m, device="cuda", generator=g)
    log_w = torch.log(torch.rand(bsz, n, device="cuda", generator=g) + 0.1)
    tau = 0.5 + 0.5 * torch.rand(bsz, n, device="cuda", generator=g)
    if m > 1:
        pot[:, 1] = NEG_INF
    if n > 1:
        log_w[:, 0] = NEG_INF
    return pot, log_w, tau


def plan_rtol(cost, eps):
    return 1e-3 if cost == COS and eps < 0.01 else 1e-4


def plan_inputs(bsz, n, m, d, cost, eps, seed=0):
    """Costs within ~50·eps, g random with a −inf, f the c-transform of g (rows of P sum to 1) with a −inf."""
    x, y = clouds(bsz, n, m, d, seed=seed)
    if cost != COS:
        mean_cost = ref.cost_matrix(x.double(), y.double(), cost).mean().item()
        if mean_cost > 50 * eps:
            s = 50 * eps / mean_cost
            s = s ** 0.5 if cost == SQ else s
            x, y = (x.double() * s).float(), (y.double() * s).float()
    else:
        base = torch.randn(1, 1, d, device="cuda", generator=gen(seed + 1), dtype=torch.float64)
        s = min(1.0, (50 * eps) ** 0.5)
        x, y = (base + s * x.double()).float(), (base + s * y.double()).float()
    e = eps_tensor(bsz, eps)
    g = 10 * eps * torch.rand(bsz, m, device="cuda", generator=gen(seed + 2), dtype=torch.float64)
    if m > 1:
        g[:, 0] = NEG_INF
    f = ref.update(*f64(x, y), g, torch.zeros(bsz, n, dtype=torch.float64, device="cuda"),
                   torch.ones(bsz, n, dtype=torch.float64, device="cuda"), e.double(), cost)
    if n > 1:
        f[:, -1] = NEG_INF
    return x, y, f.float(), g.float(), e


@pytest.mark.gpu_validates("ot.sinkhorn", "ot.sinkhorn_from_cost", "ot.sinkhorn_divergence", "monge_gap")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cost", COSTS, ids=COST_IDS)
def test_update(impl, cost, shape, ieee):
    need(OP, impl)
    bsz, n, m, d = shape
    x, y = clouds(bsz, n, m, d, seed=n + m)
    x[:, : min(n, m) // 2] = y[:, : min(n, m) // 2]  # some coincident points
    pot, log_w, tau = update_inputs(bsz, n, m)
    for eps in EPS:
        e = eps_tensor(bsz, eps)
        out = _ops()[0](x, y, pot, log_w, tau, e, cost)
        assert torch.isfinite(out[:, 1:] if n > 1 else out).all()
        check(out, ref.update(*f64(x, y, pot, log_w, tau, e), cost))


@pytest.mark.gpu_validates("ot.sinkhorn", "ot.sinkhorn_from_cost", "ot.sinkhorn_divergence", "monge_gap")
@pytest.mark.gpu_quick
@pytest.mark.parametrize("impl", IMPLS)
def test_update_mixed_eps_offset_and_empty(impl, ieee):
    need(OP, impl)
    upd = _ops()[0]
    x, y = clouds(3, 45, 61, 17, seed=7)
    pot, log_w, tau = update_inputs(3, 45, 61)
    pot[1] = NEG_INF  # a problem without any finite pot: +inf out (−inf where log_w = −inf)
    e = torch.tensor(EPS, device="cuda")
    for cost in COSTS:
        for shift in (0.0, 1000.0):  # clouds far from the origin
            check(upd(x + shift, y + shift, pot, log_w, tau, e, cost),
                  ref.update(*f64(x + shift, y + shift, pot, log_w, tau, e), cost))
    x, y = clouds(2, 3, 0, 2)
    pot, log_w, tau = update_inputs(2, 3, 0)
    check(upd(x, y, pot, log_w, tau, e[:2], SQ), ref.update(*f64(x, y, pot, log_w, tau, e[:2]), SQ))


@pytest.mark.gpu_validates("ot.sinkhorn", "ot.sinkhorn_from_cost", "ot.sinkhorn_divergence", "monge_gap")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", [pytest.param("contiguous", marks=pytest.mark.gpu_quick), "transposed", "sliced"])
@pytest.mark.parametrize("transpose", [False, True])
def test_update_dense(impl, transpose, layout, ieee):
    need(OP, impl)
    bsz, n, m = 3, 700, 333
    x, y = clouds(bsz, n, m, 5, seed=1)
    C = ref.cost_matrix(x, y, EU)
    if layout == "transposed":
        C = C.transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == "sliced":
        big = torch.zeros(bsz, 2 * n + 1, m + 3, device="cuda")
        big[:, 1::2, 2:-1] = C
        C = big[:, 1::2, 2:-1]
    r, c = (m, n) if transpose else (n, m)
    pot, log_w, tau = update_inputs(bsz, r, c)
    e = torch.tensor(EPS, device="cuda")
    check(_ops()[1](C, pot, log_w, tau, e, transpose), ref.update_dense(*f64(C, pot, log_w, tau, e), transpose))


@pytest.mark.gpu_validates("ot.sinkhorn", "ot.sinkhorn_from_cost", "ot.sinkhorn_divergence", "monge_gap")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=str)
@pytest.mark.parametrize("cost", COSTS, ids=COST_IDS)
def test_cost_grad(impl, cost, shape, ieee):
    need(OP, impl)
    bsz, n, m, d = shape
    for eps in EPS:
        x, y, f, g, e = plan_inputs(bsz, n, m, d, cost, eps, seed=n + d)
        out = _ops()[2](x, y, f, g, e, cost)
        assert torch.isfinite(out).all()
        check(out, ref.cost_grad(*f64(x, y, f, g, e), cost), rtol=plan_rtol(cost, eps),
              scale=sinkhorn_grad_scale(x, y, f, g, e, cost))


@pytest.mark.gpu_validates("ot.sinkhorn", "ot.sinkhorn_from_cost", "ot.sinkhorn_divergence", "monge_gap")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("d", [1, 3, 64, 130])
def test_cost_grad_euclidean_coincident(impl, d, ieee):
    need(OP, impl)
    x, _ = clouds(2, 300, 1, d, seed=d)
    y = torch.cat([x, x[:, :50], torch.randn(2, 40, d, device="cuda", generator=gen(d))], dim=1)
    for eps in (0.1, 10.0):
        e = eps_tensor(2, eps)
        g = torch.zeros(2, y.shape[1], device="cuda")
        f = ref.update(*f64(x, y, g), torch.zeros(2, 300, dtype=torch.float64, device="cuda"),
                       torch.ones(2, 300, dtype=torch.float64, device="cuda"), e.double(), EU).float()
        check(_ops()[2](x, y, f, g, e, EU), ref.cost_grad(*f64(x, y, f, g, e), EU),
              scale=sinkhorn_grad_scale(x, y, f, g, e, EU))
    one = x[:1, :1]
    z = torch.zeros(1, 1, device="cuda")
    out = _ops()[2](one, one.clone(), z, z, eps_tensor(1, 0.1), EU)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.gpu_validates("ot.sinkhorn", "ot.sinkhorn_from_cost", "ot.sinkhorn_divergence", "monge_gap")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape,k", APPLY_CASES, ids=str)
@pytest.mark.parametrize("cost", COSTS, ids=COST_IDS)
def test_apply(impl, cost, shape, k, ieee):
    need(OP, impl)
    bsz, n, m, d = shape
    v = torch.randn(bsz, m, k, device="cuda", generator=gen(k))
    for eps in EPS:
        x, y, f, g, e = plan_inputs(bsz, n, m, d, cost, eps, seed=m + k)
        out = _ops()[3](x, y, f, g, v, e, cost)
        assert torch.isfinite(out).all()
        check(out, ref.apply(*f64(x, y, f, g, v, e), cost), rtol=plan_rtol(cost, eps))


@pytest.mark.parametrize("cost", COSTS, ids=COST_IDS)
def test_tf32(cost, tf32):
    """With torch's allow_tf32 the dots run in tf32: close to the reference at tf32's precision."""
    if not _loader.triton_available():
        pytest.skip("triton is not installed")
    upd, _, grad, app = _ops()
    bsz, n, m, d = 2, 300, 257, 17
    x, y = clouds(bsz, n, m, d, seed=11)
    e = eps_tensor(bsz, 10.0)
    pot, log_w, tau = update_inputs(bsz, n, m)
    check(upd(x, y, pot, log_w, tau, e, cost), ref.update(*f64(x, y, pot, log_w, tau, e), cost), rtol=5e-3)
    f = ref.update(*f64(x, y), torch.zeros(bsz, m, dtype=torch.float64, device="cuda"),
                   torch.zeros(bsz, n, dtype=torch.float64, device="cuda"),
                   torch.ones(bsz, n, dtype=torch.float64, device="cuda"), e.double(), cost).float()
    g = torch.zeros(bsz, m, device="cuda")
    check(grad(x, y, f, g, e, cost), ref.cost_grad(*f64(x, y, f, g, e), cost), rtol=2e-2,
          scale=sinkhorn_grad_scale(x, y, f, g, e, cost))
    v = torch.randn(bsz, m, 3, device="cuda", generator=gen(3))
    check(app(x, y, f, g, v, e, cost), ref.apply(*f64(x, y, f, g, v, e), cost), rtol=2e-2)
