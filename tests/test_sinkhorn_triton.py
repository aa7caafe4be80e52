"""The Triton streamed Sinkhorn kernels (regops/triton/sinkhorn.py) against the dense reference.

The four ops are called directly (torch.ops.regops.sinkhorn_*_triton) on float32 inputs and compared with
regops.reference.sinkhorn evaluated in float64 on the same values. On CPU-only machines the conftest sets
TRITON_INTERPRET=1, so the kernels run interpreted (slowly: the sizes are small).

Tolerances: rtol 1e-4 elementwise plus 1e-4 of the tensor's scale (max |expected|). The update is
1-Lipschitz in the cost, so its error is that of the float32 cost whatever eps; the plan P = exp((f+g−c)/eps)
amplifies a cost error δ to a relative error δ/eps, so the grad/apply inputs are scaled with eps to keep the
costs within ~50·eps (as a Sinkhorn solver's eps is relative to the cost scale) and f is the c-transform of g,
so that every row of P sums to 1 (finite, meaningful plans at eps = 1e-3).
"""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import regops  # noqa: F401  (registers the ops)
from regops._loader import triton_available
from regops.reference import sinkhorn as ref

from tolerances import sinkhorn_grad_scale

# The interpreter evaluates both sides of tl.where, so −inf − (−inf) in an unselected branch warns in numpy.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

if not triton_available():
    pytest.skip("triton is not installed", allow_module_level=True)

from regops.triton import sinkhorn as ts  # noqa: E402  (registers the triton ops)

SQ, EU, COS = ref.SQEUCLIDEAN, ref.EUCLIDEAN, ref.COSINE
COSTS = [SQ, EU, COS]
COST_IDS = ["sqeuclidean", "euclidean", "cosine"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NEG_INF = float("-inf")
# (B, N, M, d): B ∈ {1, 3}, N = 1, N ≠ M both ways, the odd sizes 1, 3, 37, 200 and d ∈ {1, 2, 3, 17, 64}
SHAPES = [(1, 1, 3, 2), (3, 3, 37, 1), (1, 37, 200, 3), (3, 200, 37, 17), (3, 1, 37, 64)]
EPS = [1e-3, 0.1, 10.0]


def _ops():
    o = torch.ops.regops
    return o.sinkhorn_update_triton, o.sinkhorn_update_dense_triton, o.sinkhorn_cost_grad_triton, \
        o.sinkhorn_apply_triton


def check(actual, expected, rtol=1e-4, scale=None):
    """float32 `actual` against the float64 `expected`: rtol elementwise plus rtol of the scale (by default
    max |expected|); the same ±inf entries."""
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    if scale is None:
        finite = torch.isfinite(expected)
        scale = expected[finite].abs().max().item() if finite.any() else 0.0
    torch.testing.assert_close(actual.double().cpu(), expected.cpu(), rtol=rtol, atol=rtol * scale + 1e-30)


def clouds(bsz, n, m, d, *, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bsz, n, d, generator=g, dtype=torch.float64) * scale
    y = torch.randn(bsz, m, d, generator=g, dtype=torch.float64) * scale
    return x.float().to(DEVICE), y.float().to(DEVICE)


def eps_tensor(bsz, eps):
    return torch.full((bsz,), eps, dtype=torch.float32, device=DEVICE)


def f64(*ts_):
    return [t.double() for t in ts_]


def plan_rtol(cost, eps):
    """The cosine cost 1 − cos carries an absolute float32 error ~2⁻²⁴ however small it is (the reference's too),
    which P = exp((f + g − c)/eps) turns into ~1e-4 relative at eps = 1e-3."""
    return 1e-3 if cost == COS and eps < 0.01 else 1e-4


def plan_inputs(bsz, n, m, d, cost, eps, seed=0):
    """x, y, f, g, eps with costs within ~50·eps, g random with a −inf, f the c-transform of g (rows of P sum
    to 1) and a −inf in f."""
    x, y = clouds(bsz, n, m, d, seed=seed)
    if cost != COS:
        mean_cost = ref.cost_matrix(x.double(), y.double(), cost).mean().item()
        if mean_cost > 50 * eps:
            s = 50 * eps / mean_cost
            s = s ** 0.5 if cost == SQ else s
            x, y = (x.double() * s).float(), (y.double() * s).float()
    else:  # cosine costs scale like the squared angle: shrink the spread around a common direction
        base = torch.randn(1, 1, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
        base = base.to(DEVICE)
        s = min(1.0, (50 * eps) ** 0.5)
        x, y = (base + s * x.double()).float(), (base + s * y.double()).float()
    e = eps_tensor(bsz, eps)
    gen = torch.Generator().manual_seed(seed + 2)
    g = (10 * eps * torch.rand(bsz, m, generator=gen, dtype=torch.float64)).to(DEVICE)
    if m > 1:
        g[:, 0] = NEG_INF
    f = ref.update(*f64(x, y), g, torch.zeros(bsz, n, dtype=torch.float64, device=DEVICE),
                   torch.ones(bsz, n, dtype=torch.float64, device=DEVICE), e.double(), cost)
    if n > 1:
        f[:, -1] = NEG_INF
    return x, y, f.float(), g.float(), e


def update_inputs(bsz, n, m, seed=0):
    """pot (B, M) with a −inf, log_w (B, N) with a −inf, tau (B, N) in [0.5, 1]."""
    g = torch.Generator().manual_seed(seed + 3)
    pot = torch.randn(bsz, m, generator=g)
    log_w = torch.log(torch.rand(bsz, n, generator=g) + 0.1)
    tau = 0.5 + 0.5 * torch.rand(bsz, n, generator=g)
    if m > 1:
        pot[:, 1] = NEG_INF
    if n > 1:
        log_w[:, 0] = NEG_INF
    return pot.to(DEVICE), log_w.to(DEVICE), tau.to(DEVICE)


# ---------------------------------------------------------------------------------------------- update
@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cost", COSTS, ids=COST_IDS)
def test_update(cost, shape, eps):
    bsz, n, m, d = shape
    x, y = clouds(bsz, n, m, d, seed=n + m)
    pot, log_w, tau = update_inputs(bsz, n, m)
    e = eps_tensor(bsz, eps)
    out = _ops()[0](x, y, pot, log_w, tau, e, cost)
    expected = ref.update(*f64(x, y, pot, log_w, tau, e), cost)
    assert torch.isfinite(out[:, 1:] if n > 1 else out).all()
    check(out, expected)


def test_update_mixed_eps_and_edges():
    """One eps per problem; a problem whose pot is all −inf (LSE = −inf: +inf out, −inf at log_w = −inf)."""
    bsz, n, m, d = 3, 5, 40, 3
    x, y = clouds(bsz, n, m, d)
    pot, log_w, tau = update_inputs(bsz, n, m)
    pot[1] = NEG_INF
    e = torch.tensor([1e-3, 0.1, 10.0], device=DEVICE)
    for cost in COSTS:
        out = _ops()[0](x, y, pot, log_w, tau, e, cost)
        expected = ref.update(*f64(x, y, pot, log_w, tau, e), cost)
        assert torch.equal(out[1, 1:], torch.full_like(out[1, 1:], float("inf")))
        check(out, expected)


@pytest.mark.parametrize("cost", [SQ, EU], ids=COST_IDS[:2])
def test_update_offset_clouds(cost):
    """Clouds far from the origin: the dot-form cost would cancel catastrophically without the centering."""
    x, y = clouds(2, 37, 45, 17, seed=5)
    x, y = x + 1000.0, y + 1000.0
    pot, log_w, tau = update_inputs(2, 37, 45)
    e = eps_tensor(2, 0.1)
    check(_ops()[0](x, y, pot, log_w, tau, e, cost), ref.update(*f64(x, y, pot, log_w, tau, e), cost))


def test_update_empty():
    upd = _ops()[0]
    x, y = clouds(2, 3, 0, 2)
    pot, log_w, tau = update_inputs(2, 3, 0)
    e = eps_tensor(2, 0.1)
    for cost in COSTS:  # no column (LSE = −inf): refused, as by the compiled kernels (one contract)
        with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: y: expected at least one point \(M >= 1\)"):
            upd(x, y, pot, log_w, tau, e, cost)
    x, y = clouds(2, 4, 5, 0)  # d = 0: every cost is c(0, 0)
    pot, log_w, tau = update_inputs(2, 4, 5)
    for cost in COSTS:
        check(upd(x, y, pot, log_w, tau, e, cost), ref.update(*f64(x, y, pot, log_w, tau, e), cost))
    x, y = clouds(2, 0, 5, 3)
    pot, log_w, tau = update_inputs(2, 0, 5)
    assert upd(x, y, pot, log_w, tau, e, SQ).shape == (2, 0)


@given(bsz=st.integers(1, 2), n=st.integers(1, 40), m=st.integers(1, 70), d=st.integers(1, 20),
       cost=st.sampled_from(COSTS), eps=st.sampled_from(EPS), scale=st.sampled_from([0.1, 1.0, 10.0]),
       dup=st.booleans(), seed=st.integers(0, 2**16))
def test_update_fuzz(bsz, n, m, d, cost, eps, scale, dup, seed):
    x, y = clouds(bsz, n, m, d, scale=scale, seed=seed)
    if dup:  # coincident points
        k = min(n, m)
        y[:, :k] = x[:, :k]
    pot, log_w, tau = update_inputs(bsz, n, m, seed=seed)
    pot = pot * scale
    e = eps_tensor(bsz, eps)
    check(_ops()[0](x, y, pot, log_w, tau, e, cost), ref.update(*f64(x, y, pot, log_w, tau, e), cost))


# ---------------------------------------------------------------------------------------------- dense
def _layout(c, layout):
    if layout == "contiguous":
        return c
    if layout == "transposed":  # column-major (B, N, M) view
        return c.transpose(1, 2).contiguous().transpose(1, 2)
    big = torch.zeros(c.shape[0], 2 * c.shape[1] + 1, c.shape[2] + 3, device=c.device)  # a strided slice
    big[:, 1::2, 2:-1] = c
    return big[:, 1::2, 2:-1]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("shape", [(3, 37, 200), (1, 1, 3), (1, 3, 1)], ids=str)
def test_update_dense(shape, transpose, layout):
    bsz, n, m = shape
    x, y = clouds(bsz, n, m, 5, seed=1)
    C = _layout(ref.cost_matrix(x, y, EU), layout)
    assert layout == "contiguous" or not C.is_contiguous() or min(n, m) == 1
    r, c = (m, n) if transpose else (n, m)
    pot, log_w, tau = update_inputs(bsz, r, c)
    e = torch.tensor(EPS[:bsz] if bsz > 1 else [0.1], device=DEVICE)
    out = _ops()[1](C, pot, log_w, tau, e, transpose)
    check(out, ref.update_dense(*f64(C, pot, log_w, tau, e), transpose))


# ---------------------------------------------------------------------------------------------- cost_grad
GRAD_SHAPES = SHAPES + [(1, 20, 37, 130)]  # d > 64: two BLOCK_D chunks


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=str)
@pytest.mark.parametrize("cost", COSTS, ids=COST_IDS)
def test_cost_grad(cost, shape, eps):
    bsz, n, m, d = shape
    x, y, f, g, e = plan_inputs(bsz, n, m, d, cost, eps, seed=n + d)
    out = _ops()[2](x, y, f, g, e, cost)
    assert torch.isfinite(out).all()
    check(out, ref.cost_grad(*f64(x, y, f, g, e), cost), rtol=plan_rtol(cost, eps),
          scale=sinkhorn_grad_scale(x, y, f, g, e, cost))


@pytest.mark.parametrize("d", [1, 3, 64])
def test_cost_grad_euclidean_coincident(d):
    """x_i = y_i exactly (and duplicated points): the subgradient 0 at coincident pairs, as the reference."""
    x, _ = clouds(2, 37, 1, d, seed=d)
    y = torch.cat([x, x[:, :5], torch.randn(2, 4, d, device=DEVICE)], dim=1)  # M = 46
    for eps in (0.1, 10.0):
        e = eps_tensor(2, eps)
        g = torch.zeros(2, y.shape[1], device=DEVICE)
        f = ref.update(*f64(x, y, g), torch.zeros(2, 37, dtype=torch.float64, device=DEVICE),
                       torch.ones(2, 37, dtype=torch.float64, device=DEVICE), e.double(), EU).float()
        out = _ops()[2](x, y, f, g, e, EU)
        check(out, ref.cost_grad(*f64(x, y, f, g, e), EU))
    # a single coincident pair: exactly 0
    one = x[:1, :1]
    out = _ops()[2](one, one.clone(), torch.zeros(1, 1, device=DEVICE), torch.zeros(1, 1, device=DEVICE),
                    eps_tensor(1, 0.1), EU)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("delta", [1e-2, 1e-4])
def test_euclidean_near_pairs(delta):
    """Pairs at a small (nonzero) distance: the tiles holding them are recomputed from the differences."""
    x, _ = clouds(2, 37, 1, 17, seed=9)
    noise = torch.randn(2, 37, 17, generator=torch.Generator().manual_seed(10)).to(DEVICE)
    y = torch.cat([x + delta * noise, torch.randn(2, 5, 17, device=DEVICE)], dim=1)
    pot, log_w, tau = update_inputs(2, 37, 42)
    e = eps_tensor(2, 0.1)
    check(_ops()[0](x, y, pot, log_w, tau, e, EU), ref.update(*f64(x, y, pot, log_w, tau, e), EU))
    # the gradient's terms P·(x − y)/‖x − y‖ cancel to ~2⁻²⁴·‖x‖/‖x − y‖ in float32 (the reference's too)
    if delta >= 1e-2:
        g = torch.zeros(2, 42, device=DEVICE)
        f = ref.update(*f64(x, y, g), torch.zeros(2, 37, dtype=torch.float64, device=DEVICE),
                       torch.ones(2, 37, dtype=torch.float64, device=DEVICE), e.double(), EU).float()
        check(_ops()[2](x, y, f, g, e, EU), ref.cost_grad(*f64(x, y, f, g, e), EU),
              scale=sinkhorn_grad_scale(x, y, f, g, e, EU))


def test_cost_grad_empty():
    grad = _ops()[2]
    x, y = clouds(2, 3, 0, 2)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_cost_grad: y: expected at least one point"):
        grad(x, y, torch.zeros(2, 3, device=DEVICE), torch.zeros(2, 0, device=DEVICE), eps_tensor(2, 1.0), SQ)
    x, y = clouds(2, 3, 4, 0)
    out = grad(x, y, torch.zeros(2, 3, device=DEVICE), torch.zeros(2, 4, device=DEVICE), eps_tensor(2, 1.0), EU)
    assert out.shape == (2, 3, 0)


# ---------------------------------------------------------------------------------------------- apply
@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("shape,k", [(SHAPES[0], 1), (SHAPES[1], 5), (SHAPES[2], 3), (SHAPES[3], 70),
                                     (SHAPES[4], 2)], ids=str)
@pytest.mark.parametrize("cost", COSTS, ids=COST_IDS)
def test_apply(cost, shape, k, eps):
    bsz, n, m, d = shape
    x, y, f, g, e = plan_inputs(bsz, n, m, d, cost, eps, seed=m + k)
    v = torch.randn(bsz, m, k, generator=torch.Generator().manual_seed(k)).to(DEVICE)
    out = _ops()[3](x, y, f, g, v, e, cost)
    assert torch.isfinite(out).all()
    check(out, ref.apply(*f64(x, y, f, g, v, e), cost), rtol=plan_rtol(cost, eps))


def test_apply_rows_sum_to_one():
    """With f the c-transform of g, P·1 = 1 on the rows with a finite f."""
    x, y, f, g, e = plan_inputs(3, 37, 45, 3, SQ, 0.1)
    out = _ops()[3](x, y, f, g, torch.ones(3, 45, 1, device=DEVICE), e, SQ)
    torch.testing.assert_close(out[:, :-1], torch.ones_like(out[:, :-1]), rtol=1e-5, atol=1e-5)
    assert torch.equal(out[:, -1], torch.zeros_like(out[:, -1]))


# ---------------------------------------------------------------------------------------------- misc
def test_tf32_flag(monkeypatch):
    """The ALLOW_TF32 variants (taken on CUDA when torch allows tf32) run and stay close."""
    monkeypatch.setattr(ts, "_allow_tf32", lambda t: True)
    upd, _, grad, app = _ops()
    for cost in COSTS:
        x, y, f, g, e = plan_inputs(2, 37, 45, 17, cost, 0.1)
        pot, log_w, tau = update_inputs(2, 37, 45)
        check(upd(x, y, pot, log_w, tau, e, cost), ref.update(*f64(x, y, pot, log_w, tau, e), cost), rtol=5e-3)
        check(grad(x, y, f, g, e, cost), ref.cost_grad(*f64(x, y, f, g, e), cost), rtol=5e-2)
        v = torch.randn(2, 45, 3, device=DEVICE)
        check(app(x, y, f, g, v, e, cost), ref.apply(*f64(x, y, f, g, v, e), cost), rtol=5e-2)


def _small_args(seed=0):
    x, y, f, g, e = plan_inputs(2, 5, 7, 3, EU, 0.5, seed=seed)
    pot, log_w, tau = update_inputs(2, 5, 7)
    v = torch.randn(2, 7, 2, device=DEVICE)
    return x, y, f, g, e, pot, log_w, tau, v


def test_argument_errors():
    upd, dense, grad, app = _ops()
    x, y, f, g, e, pot, log_w, tau, v = _small_args()
    with pytest.raises(TypeError, match=r"regops\.sinkhorn_update: x: expected dtype float32"):
        upd(*(t.double() for t in (x, y, pot, log_w, tau, e)), SQ)  # the schema's contract holds; triton's float32 does not
    with pytest.raises(TypeError, match=r"regops\.sinkhorn_update: pot: expected dtype float32"):
        upd(x, y, pot.double(), log_w, tau, e, SQ)
    with pytest.raises(TypeError, match=r"regops\.sinkhorn_update_dense: cost_matrix: expected dtype float32"):
        dense(torch.zeros(2, 5, 7, dtype=torch.float64, device=DEVICE), *(t.double() for t in (pot, log_w, tau, e)),
              False)
    with pytest.raises(TypeError, match=r"regops\.sinkhorn_cost_grad: eps: expected dtype float32"):
        grad(x, y, f, g, e.double(), SQ)
    with pytest.raises(TypeError, match=r"regops\.sinkhorn_apply: v: expected dtype float32"):
        app(x, y, f, g, v.double(), e, SQ)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: y: expected shape \(2, M, 3\) \(the batch and width of x\)"):
        upd(x, y[:, :, :2], pot, log_w, tau, e, SQ)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: pot: expected shape \(2, 7\)"):
        upd(x, y, pot[:, :6], log_w, tau, e, SQ)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: tau: expected shape"):
        upd(x, y, pot, log_w, tau[:1], e, SQ)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: x: expected a 3-D tensor \(B, N, d\)"):
        upd(x[0], y, pot, log_w, tau, e, SQ)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update: cost: expected 0 \(sqeuclidean\), 1 \(euclidean\) or 2 \(cosine\), got 3"):
        upd(x, y, pot, log_w, tau, e, 3)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_update_dense: pot: expected shape \(2, 5\)"):
        dense(torch.zeros(2, 5, 7, device=DEVICE), pot, log_w, tau, e, True)  # transpose: pot is (B, N)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_cost_grad: g: expected shape \(2, 7\)"):
        grad(x, y, f, f, e, SQ)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_apply: v: expected shape \(2, 7, 2\)"):
        app(x, y, f, g, v[:, :3], e, SQ)
    with pytest.raises(ValueError, match=r"regops\.sinkhorn_apply: eps: expected shape \(2,\)"):
        app(x, y, f, g, v, e[:1], SQ)


def test_opcheck():
    """Schemas, fake kernels and AOT dispatch of the four ops (small sizes)."""
    upd, dense, grad, app = _ops()
    x, y, f, g, e, pot, log_w, tau, v = _small_args(seed=3)
    C = ref.cost_matrix(x, y, SQ)
    torch.library.opcheck(upd.default, (x, y, pot, log_w, tau, e, EU))
    torch.library.opcheck(dense.default, (C, pot, log_w, tau, e, False))
    # transpose: pot (B, N), log_w and tau (B, M), C column-major
    torch.library.opcheck(dense.default, (C.transpose(1, 2).contiguous().transpose(1, 2), log_w, pot,
                                          torch.ones(2, 7, device=DEVICE), e, True))
    torch.library.opcheck(grad.default, (x, y, f, g, e, COS))
    torch.library.opcheck(app.default, (x, y, f, g, v, e, SQ))


def test_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    upd, dense, grad, app = _ops()
    x, y, f, g, e, pot, log_w, tau, v = _small_args()
    with FakeTensorMode(allow_non_fake_inputs=True):
        assert upd(x, y, pot, log_w, tau, e, SQ).shape == (2, 5)
        assert dense(torch.empty(2, 7, 5), pot, log_w, tau, e, True).shape == (2, 5)
        assert grad(x, y, f, g, e, SQ).shape == (2, 5, 3)
        assert app(x, y, f, g, v, e, SQ).shape == (2, 5, 2)
        with pytest.raises(ValueError, match="log_w"):
            upd(x, y, pot, log_w[:, :4], tau, e, SQ)
