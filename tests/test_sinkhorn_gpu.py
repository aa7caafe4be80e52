"""The streamed log-domain Sinkhorn on a GPU: the CUDA kernels of regops::sinkhorn_update, sinkhorn_update_dense,
sinkhorn_cost_grad and sinkhorn_apply, called through torch.ops, against the dense reference
(regops.reference.sinkhorn) on the same CUDA tensors. Skips without a CUDA device.

The expected values come from the reference evaluated in float64 on the very same (upcast) inputs, so a float32
kernel is held to its own rounding error: rtol 1e-4 relative to the scale of the result (tolerances.assert_close),
float64 1e-9. A test marked gpu_validates and parametrized by `impl` vouches for those (op, impl) pairs
(conftest.py, scripts/gpu_check.sh): it must not skip except when the impl cannot run at all."""
import math

import pytest
import torch

from regops.ot._backend import Kernels
from regops.reference import sinkhorn as ref

from conftest import gpu_test, need, requires_cuda
from tolerances import assert_close

IMPLS = ["cuda"]  # the Triton kernels have their own GPU tests (test_sinkhorn_triton_gpu.py)
OP = "ot.sinkhorn"
sinkhorn_gpu_test = gpu_test(("ot.sinkhorn", "ot.sinkhorn_from_cost", "ot.sinkhorn_divergence", "monge_gap"), IMPLS)


def K(impl):
    """The kernels the test names: the bodies run the impl they are parametrized by."""
    return Kernels(impl)
DTYPES = [torch.float32, torch.float64]
COSTS = [ref.SQEUCLIDEAN, ref.EUCLIDEAN, ref.COSINE]
# (B, N, M, d): B in (1, 3), every N and M of (1, 3, 37, 257, 1000), every d of (1, 2, 3, 64, 130), N ≠ M. Few
# rows and many columns split the columns across blocks (merged in a second kernel). B·N·M·d stays under the
# reference's 2**26 limit of the exact difference form (coincident points: euclidean distances exactly 0).
SHAPES = [(1, 1, 1, 1), (3, 37, 257, 3), (1, 257, 37, 64), (3, 1, 1000, 2), (2, 3, 1000, 130), (1, 1000, 3, 1),
          (3, 257, 257, 130), (1, 1000, 1000, 64)]
RTOL = {torch.float32: 1e-4, torch.float64: 1e-9}




def gen(seed):
    return torch.Generator(device="cuda").manual_seed(seed)


def clouds(B, N, M, d, dtype, seed=0):
    """Points of norm about 1 (costs O(1)); y_0 = x_0, a coincident pair, in every problem."""
    g = gen(seed)
    s = 1 / math.sqrt(max(d, 1))
    x = torch.randn(B, N, d, device="cuda", dtype=torch.float64, generator=g) * s
    y = torch.randn(B, M, d, device="cuda", dtype=torch.float64, generator=g) * s
    if N and M:
        y[:, 0] = x[:, 0]
    return x.to(dtype), y.to(dtype)


def eps_for(B, eps, dtype, seed=1):
    """One eps per problem, within [eps, 2·eps)."""
    return (eps * (1 + torch.rand(B, device="cuda", dtype=torch.float64, generator=gen(seed)))).to(dtype)


def rows(B, n, dtype, lo, hi, seed):
    return (lo + (hi - lo) * torch.rand(B, n, device="cuda", dtype=torch.float64, generator=gen(seed))).to(dtype)


def up(*ts):
    return [t.double() for t in ts]


def check(got, exp, dtype):
    """Same −inf entries, the other entries finite and close (scale: the largest finite expected entry)."""
    assert got.shape == exp.shape and got.dtype == dtype and got.device.type == "cuda"
    exp = exp.to(dtype)
    inf = torch.isinf(exp)
    assert torch.equal(torch.isinf(got), inf) and torch.equal(got[inf], exp[inf])
    assert torch.isfinite(got[~inf]).all()
    assert_close(got[~inf], exp[~inf], dtype, rtol=RTOL[dtype])


def potentials(x, y, eps, cost):
    """f, g after one reference g-then-f half-update pair from f = 0 with uniform weights (float64): then every
    row of P sums to 1/N, so P is bounded whatever eps."""
    xd, yd, ed = up(x, y, eps)
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    log_a = torch.full((B, N), -math.log(max(N, 1)), device="cuda", dtype=torch.float64)
    log_b = torch.full((B, M), -math.log(max(M, 1)), device="cuda", dtype=torch.float64)
    g = ref.update(yd, xd, torch.zeros_like(log_a), log_b, torch.ones_like(log_b), ed, cost)
    f = ref.update(xd, yd, g, log_a, torch.ones_like(log_a), ed, cost)
    return f.to(x.dtype), g.to(x.dtype)


def plan_eps(dtype, eps):
    """P_ij carries the rounding of c_ij divided by eps: float32 (c rounded at ~1e-7) is tested from eps = 0.05."""
    return max(eps, 0.05) if dtype == torch.float32 else eps


# ---- sinkhorn_update ----

@sinkhorn_gpu_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("B,N,M,d", SHAPES)
@pytest.mark.parametrize("eps", [1e-3, 0.1, 10.0])
def test_update_matches_reference(impl, dtype, cost, B, N, M, d, eps):
    need(OP, impl)
    x, y = clouds(B, N, M, d, dtype)
    e = eps_for(B, eps, dtype)
    pot = (0.5 * torch.randn(B, M, device="cuda", dtype=torch.float64, generator=gen(2))).to(dtype)
    log_w = rows(B, N, dtype, -8.0, 0.0, 3)
    tau = rows(B, N, dtype, 0.5, 1.0, 4)
    got = K(impl).update(x, y, pot, log_w, tau, e, cost)
    assert torch.isfinite(got).all()
    check(got, ref.update(*up(x, y, pot, log_w, tau, e), cost), dtype)


@sinkhorn_gpu_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("B,N,M,d", [(3, 37, 257, 3), (1, 257, 1000, 64), (2, 5, 1000, 130)])
def test_update_zero_weights(impl, dtype, cost, B, N, M, d):
    """pot_j = −inf (zero-weight points of y: they add nothing, also whole −inf column tiles and splits) and
    log_w_i = −inf (zero-weight points of x: the output is −inf there)."""
    need(OP, impl)
    x, y = clouds(B, N, M, d, dtype, seed=5)
    e = eps_for(B, 0.05, dtype)
    pot = torch.randn(B, M, device="cuda", dtype=torch.float64, generator=gen(6)).to(dtype)
    pot[:, 1::3] = float("-inf")
    pot[:, 64:128] = float("-inf")  # a whole tile of columns
    pot[-1, :-1] = float("-inf")  # one finite potential left in the last problem
    log_w = rows(B, N, dtype, -4.0, 0.0, 7)
    log_w[:, ::4] = float("-inf")
    tau = torch.ones(B, N, device="cuda", dtype=dtype)
    got = K(impl).update(x, y, pot, log_w, tau, e, cost)
    assert torch.isinf(got[:, ::4]).all() and (got[:, ::4] < 0).all()
    check(got, ref.update(*up(x, y, pot, log_w, tau, e), cost), dtype)


@sinkhorn_gpu_test
@pytest.mark.gpu_quick
@pytest.mark.parametrize("dtype", DTYPES)
def test_update_far_from_origin_and_per_problem_eps(impl, dtype):
    """Each problem uses its own eps (a factor 1e4 apart), and a cloud pair off the origin."""
    need(OP, impl)
    B, N, M, d = 3, 100, 300, 16
    x, y = clouds(B, N, M, d, dtype, seed=8)
    x, y = x + 0.5, y + 0.5
    e = torch.tensor([1e-3, 0.3, 10.0], device="cuda", dtype=dtype)
    pot = torch.randn(B, M, device="cuda", dtype=torch.float64, generator=gen(9)).to(dtype)
    log_w = rows(B, N, dtype, -6.0, 0.0, 10)
    tau = rows(B, N, dtype, 0.2, 1.0, 11)
    for cost in COSTS:
        got = K(impl).update(x, y, pot, log_w, tau, e, cost)
        check(got, ref.update(*up(x, y, pot, log_w, tau, e), cost), dtype)
        for b in range(B):  # the batch is B independent problems
            one = K(impl).update(x[b:b + 1], y[b:b + 1], pot[b:b + 1], log_w[b:b + 1],
                                                   tau[b:b + 1], e[b:b + 1], cost)
            check(one, got[b:b + 1], dtype)


# ---- sinkhorn_update_dense ----

def layout(C, kind):
    """C (B, N, M) as a contiguous tensor, the transpose of a contiguous (B, M, N) one, or a strided slice."""
    if kind == "contiguous":
        return C.contiguous()
    if kind == "transposed":
        return C.transpose(1, 2).contiguous().transpose(1, 2)
    big = torch.zeros(C.shape[0], C.shape[1], 2 * C.shape[2] + 1, device=C.device, dtype=C.dtype)
    big[:, :, 1::2] = C
    return big[:, :, 1::2]


@sinkhorn_gpu_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("B,N,M", [(1, 1, 1), pytest.param(3, 37, 257, marks=pytest.mark.gpu_quick), (1, 257, 3),
                                   (3, 1, 1000), (1, 1000, 37), (2, 1000, 1000)])
@pytest.mark.parametrize("kind", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("eps", [1e-3, 10.0])
def test_update_dense_matches_reference(impl, dtype, transpose, B, N, M, kind, eps):
    need(OP, impl)
    x, y = clouds(B, N, M, 8, torch.float64, seed=12)
    C = layout(ref.cost_matrix(x, y, ref.SQEUCLIDEAN).to(dtype), kind)
    assert kind == "contiguous" or not C.is_contiguous() or min(N, M) == 1
    kept, reduced = (M, N) if transpose else (N, M)
    e = eps_for(B, eps, dtype)
    pot = torch.randn(B, reduced, device="cuda", dtype=torch.float64, generator=gen(13)).to(dtype)
    if reduced > 2:
        pot[:, 1] = float("-inf")
    log_w = rows(B, kept, dtype, -8.0, 0.0, 14)
    if kept > 2:
        log_w[:, 2] = float("-inf")
    tau = rows(B, kept, dtype, 0.5, 1.0, 15)
    got = K(impl).update_dense(C, pot, log_w, tau, e, transpose)
    check(got, ref.update_dense(*up(C, pot, log_w, tau, e), transpose), dtype)


@sinkhorn_gpu_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost", COSTS)
def test_update_dense_agrees_with_streamed(impl, dtype, cost):
    """Both half-updates of one Sinkhorn iteration, streamed and on the materialized cost (transpose=True for g)."""
    need(OP, impl)
    B, N, M, d = 2, 300, 200, 64
    x, y = clouds(B, N, M, d, dtype, seed=16)
    e = eps_for(B, 0.05, dtype)
    C = ref.cost_matrix(*up(x, y), cost).to(dtype)
    log_a = torch.full((B, N), -math.log(N), device="cuda", dtype=dtype)
    log_b = torch.full((B, M), -math.log(M), device="cuda", dtype=dtype)
    f = torch.zeros(B, N, device="cuda", dtype=dtype)
    g_dense = K(impl).update_dense(C, f, log_b, torch.ones_like(log_b), e, True)
    g_streamed = K(impl).update(y, x, f, log_b, torch.ones_like(log_b), e, cost)
    assert_close(g_streamed, g_dense, dtype, rtol=RTOL[dtype])
    f_dense = K(impl).update_dense(C, g_dense, log_a, torch.ones_like(log_a), e, False)
    f_streamed = K(impl).update(x, y, g_dense, log_a, torch.ones_like(log_a), e, cost)
    assert_close(f_streamed, f_dense, dtype, rtol=RTOL[dtype])


# ---- sinkhorn_cost_grad, sinkhorn_apply ----

@sinkhorn_gpu_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("B,N,M,d", SHAPES)
@pytest.mark.parametrize("eps", [1e-3, 0.1, 10.0])
def test_cost_grad_matches_reference(impl, dtype, cost, B, N, M, d, eps):
    need(OP, impl)
    x, y = clouds(B, N, M, d, dtype, seed=20)
    e = eps_for(B, plan_eps(dtype, eps), dtype)
    f, g = potentials(x, y, e, cost)
    got = K(impl).cost_grad(x, y, f, g, e, cost)
    assert got.shape == (B, N, d) and torch.isfinite(got).all()
    check(got, ref.cost_grad(*up(x, y, f, g, e), cost), dtype)


@sinkhorn_gpu_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("B,N,M,d,k", [(1, 1, 1, 1, 1), (3, 37, 257, 3, 5), (1, 257, 37, 64, 64),
                                       (3, 1, 1000, 2, 130), (2, 3, 1000, 130, 1), (1, 1000, 3, 1, 70),
                                       (1, 1000, 1000, 64, 3)])
@pytest.mark.parametrize("eps", [1e-3, 0.1, 10.0])
def test_apply_matches_reference(impl, dtype, cost, B, N, M, d, k, eps):
    need(OP, impl)
    x, y = clouds(B, N, M, d, dtype, seed=21)
    e = eps_for(B, plan_eps(dtype, eps), dtype)
    f, g = potentials(x, y, e, cost)
    v = torch.randn(B, M, k, device="cuda", dtype=torch.float64, generator=gen(22)).to(dtype)
    got = K(impl).apply(x, y, f, g, v, e, cost)
    assert got.shape == (B, N, k) and torch.isfinite(got).all()
    check(got, ref.apply(*up(x, y, f, g, v, e), cost), dtype)


@sinkhorn_gpu_test
@pytest.mark.gpu_quick
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_weight_potentials_in_plan(impl, dtype):
    """f_i = −inf or g_j = −inf (zero weights) give P = 0 on their rows and columns; non-contiguous v."""
    need(OP, impl)
    B, N, M, d = 2, 70, 300, 5
    x, y = clouds(B, N, M, d, dtype, seed=23)
    e = eps_for(B, 0.1, dtype)
    f, g = potentials(x, y, e, ref.EUCLIDEAN)
    f[:, 3] = float("-inf")
    g[:, ::5] = float("-inf")
    v = torch.randn(B, 4, M, device="cuda", dtype=torch.float64, generator=gen(24)).to(dtype).transpose(1, 2)
    for cost in COSTS:
        grad = K(impl).cost_grad(x, y, f, g, e, cost)
        check(grad, ref.cost_grad(*up(x, y, f, g, e), cost), dtype)
        assert torch.equal(grad[:, 3], torch.zeros_like(grad[:, 3]))
        pv = K(impl).apply(x, y, f, g, v, e, cost)
        check(pv, ref.apply(*up(x, y, f, g, v, e), cost), dtype)


# ---- determinism, empty sizes, argument checks ----

@sinkhorn_gpu_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,N,M,d", [(1, 5, 5000, 16), (2, 1000, 1000, 64)])
def test_deterministic(impl, dtype, B, N, M, d):
    """Bit-identical results run to run (column splits merged in a fixed order, no atomics)."""
    need(OP, impl)
    x, y = clouds(B, N, M, d, dtype, seed=30)
    e = eps_for(B, 0.1, dtype)
    f, g = potentials(x, y, e, ref.SQEUCLIDEAN)
    lw = torch.zeros(B, N, device="cuda", dtype=dtype)
    v = torch.randn(B, M, 3, device="cuda", dtype=dtype)
    C = ref.cost_matrix(x, y, ref.SQEUCLIDEAN)
    calls = [lambda: K(impl).update(x, y, g, lw, torch.ones_like(lw), e, 0),
             lambda: K(impl).cost_grad(x, y, f, g, e, 0),
             lambda: K(impl).apply(x, y, f, g, v, e, 2),
             lambda: K(impl).update_dense(C, g, lw, torch.ones_like(lw), e, False),
             lambda: K(impl).update_dense(C, f, g, torch.ones_like(g), e, True)]
    for call in calls:
        first = call()
        for _ in range(2):
            assert torch.equal(call(), first)


@sinkhorn_gpu_test
def test_empty_sizes(impl):
    need(OP, impl)
    ops = K(impl)
    kw = dict(device="cuda", dtype=torch.float32)
    e = torch.ones(2, **kw)
    x, y = torch.randn(2, 0, 3, **kw), torch.randn(2, 4, 3, **kw)
    out = ops.update(x, y, torch.zeros(2, 4, **kw), torch.zeros(2, 0, **kw), torch.ones(2, 0, **kw), e, 0)
    assert out.shape == (2, 0)
    assert ops.cost_grad(x, y, torch.zeros(2, 0, **kw), torch.zeros(2, 4, **kw), e, 1).shape == (2, 0, 3)
    # M = 0: refused by every op (the update's log-sum-exp over no points is -inf), as by the CPU kernel.
    x, y = torch.randn(2, 5, 3, **kw), torch.randn(2, 0, 3, **kw)
    f, g = torch.zeros(2, 5, **kw), torch.zeros(2, 0, **kw)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: y: expected at least one point"):
        ops.update(x, y, g, f, torch.ones(2, 5, **kw), e, 0)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_cost_grad: y: expected at least one point"):
        ops.cost_grad(x, y, f, g, e, 0)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_apply: y: expected at least one point"):
        ops.apply(x, y, f, g, torch.zeros(2, 0, 7, **kw), e, 2)
    # d = 0: every cost is that of coincident points (0, or 1 for the cosine).
    x, y = torch.randn(2, 5, 0, **kw), torch.randn(2, 4, 0, **kw)
    pot = torch.zeros(2, 4, **kw)
    out = ops.update(x, y, pot, torch.zeros(2, 5, **kw), torch.ones(2, 5, **kw), e, 2)
    assert_close(out, torch.full((2, 5), -math.log(4) + 1, **kw), torch.float32)
    # dense: the reduced dimension must not be empty; the kept one may.
    C = torch.randn(2, 0, 4, **kw)
    assert ops.update_dense(C, torch.zeros(2, 4, **kw), torch.zeros(2, 0, **kw), torch.ones(2, 0, **kw), e,
                                     False).shape == (2, 0)
    with pytest.raises(ValueError, match="at least one row"):
        ops.update_dense(C, torch.zeros(2, 0, **kw), torch.zeros(2, 4, **kw), torch.ones(2, 4, **kw), e, True)


@requires_cuda
@pytest.mark.cuda
def test_argument_checks():
    need(OP, "cuda")
    ops = K("cuda")
    kw = dict(device="cuda", dtype=torch.float32)
    B, N, M, d = 2, 5, 4, 3
    x, y = torch.randn(B, N, d, **kw), torch.randn(B, M, d, **kw)
    pot, lw, tau, e = torch.zeros(B, M, **kw), torch.zeros(B, N, **kw), torch.ones(B, N, **kw), torch.ones(B, **kw)
    up_ = ops.update
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: x: expected 3-D tensor"):
        up_(x[0], y, pot, lw, tau, e, 0)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: y: expected shape \(2, M, 3\)"):
        up_(x, torch.randn(B, M, d + 1, **kw), pot, lw, tau, e, 0)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: pot: expected shape \(2, 4\)"):
        up_(x, y, torch.zeros(B, N, **kw), lw, tau, e, 0)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: eps: expected shape \(2,\)"):
        up_(x, y, pot, lw, tau, torch.ones(1, **kw), 0)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: cost: expected 0 \(sqeuclidean\)"):
        up_(x, y, pot, lw, tau, e, 3)
    with pytest.raises(TypeError, match=r"regops\.sinkhorn_update: x: expected dtype float32 or float64"):
        up_(x.bfloat16(), y.bfloat16(), pot.bfloat16(), lw.bfloat16(), tau.bfloat16(), e.bfloat16(), 0)
    with pytest.raises(TypeError, match=r"regops\.sinkhorn_update: tau: expected dtype Float \(as x\)"):
        up_(x, y, pot, lw, tau.double(), e, 0)
    with pytest.raises(RuntimeError, match=r"regops\.sinkhorn_update: log_w: expected device cuda"):
        up_(x, y, pot, lw.cpu(), tau, e, 0)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_apply: v: expected shape \(2, 4, k\)"):
        ops.apply(x, y, lw, pot, torch.zeros(B, N, 2, **kw), e, 0)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_cost_grad: g: expected shape \(2, 4\)"):
        ops.cost_grad(x, y, lw, lw, e, 0)
    C = torch.randn(B, N, M, **kw)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update_dense: pot: expected shape \(2, 5\)"):
        ops.update_dense(C, pot, torch.zeros(B, M, **kw), torch.ones(B, M, **kw), e, True)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update_dense: log_w: expected shape \(2, 5\)"):
        ops.update_dense(C, pot, torch.zeros(B, M, **kw), tau, e, False)
