"""local_error_penalty (Pal et al., ICML 2023, avik-pal/LocalRegNeuralDE.jl src/perform_step.jl) against the
official Tsit5 step transcribed below with the OrdinaryDiffEq coefficients typed again; the tableaus' order
conditions and convergence orders; utilde on a linear ODE against the two embedded solutions from the stage
system solved as one linear system; the official detaching; the scale; gradcheck; compile; bad input; and
sample_regularization_time."""
import math
import re

import pytest
import torch
from hypothesis import given, strategies as st

import regops
from regops import local_error_penalty, sample_regularization_time
from regops.ops.local_error import TABLEAUS, _rk_step

from tolerances import assert_close

OP = "local_error_penalty"
F64 = torch.float64

# ---- the official Tsit5 step, transcribed (OrdinaryDiffEq Tsit5ConstantCacheActual; c1..c6 are the nodes of
# stages 2..7, as in perform_step.jl) ----
c1, c2, c3, c4, c5, c6 = 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0
a21 = 0.161
a31, a32 = -0.008480655492356989, 0.335480655492357
a41, a42, a43 = 2.8971530571054935, -6.359448489975075, 4.3622954328695815
a51, a52, a53, a54 = 5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525
a61, a62, a63, a64, a65 = (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
                           -0.028269050394068383)
a71, a72, a73, a74, a75, a76 = (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
                                -3.290069515436081, 2.324710524099774)
btilde1, btilde2, btilde3, btilde4, btilde5, btilde6, btilde7 = (
    -0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
    0.5823571654525552, -0.45808210592918697, 0.015151515151515152)


def official_tsit5(f, t, uprev, dt, abstol=5e-2, reltol=5e-2, official=True):
    """_perform_step(integrator, ::Tsit5ConstantCache, p): EEst·dt (|dt|, DiffEqFlux's), float64. With
    `official`, uprev, t, dt and k1 = fsalfirst are constants (the integrator is @non_differentiable)."""
    T = lambda s: torch.as_tensor(s, dtype=uprev.dtype)  # noqa: E731
    if official:
        uprev = uprev.detach()
        k1 = f(T(t), uprev).detach()
    else:
        k1 = f(T(t), uprev)
    k2 = f(T(t + c1 * dt), uprev + dt * a21 * k1)
    k3 = f(T(t + c2 * dt), uprev + dt * (a31 * k1 + a32 * k2))
    k4 = f(T(t + c3 * dt), uprev + dt * (a41 * k1 + a42 * k2 + a43 * k3))
    k5 = f(T(t + c4 * dt), uprev + dt * (a51 * k1 + a52 * k2 + a53 * k3 + a54 * k4))
    g6 = uprev + dt * (a61 * k1 + a62 * k2 + a63 * k3 + a64 * k4 + a65 * k5)
    k6 = f(T(t + dt), g6)
    u = uprev + dt * (a71 * k1 + a72 * k2 + a73 * k3 + a74 * k4 + a75 * k5 + a76 * k6)
    k7 = f(T(t + dt), u)
    utilde = dt * (btilde1 * k1 + btilde2 * k2 + btilde3 * k3 + btilde4 * k4 + btilde5 * k5 + btilde6 * k6
                   + btilde7 * k7)
    resid = utilde / (abstol + torch.maximum(uprev.abs(), u.abs()) * reltol)  # _calculate_residuals
    EEst = torch.sqrt(resid.square().sum() / resid.numel())
    return EEst * abs(dt)


class MLP(torch.nn.Module):
    """f(t, y) = W2 tanh(W1 [y, t] + b1) + b2, y of shape (B, d)."""

    def __init__(self, d, h=16, dtype=F64, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = torch.nn.Linear(d + 1, h, dtype=dtype)
        self.l2 = torch.nn.Linear(h, d, dtype=dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.7)

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))))


# ---- the tableaus ----

def _matrix(solver):
    c, a, btilde = TABLEAUS[solver]
    A = torch.zeros(7, 7, dtype=F64)
    for i, row in enumerate(a):
        for j, v in enumerate(row):
            A[i, j] = v
    return torch.tensor(c, dtype=F64), A, A[6].clone(), torch.tensor(btilde, dtype=F64)


# b̂ typed independently: Tsit5 b + btilde (OrdinaryDiffEq), Dopri5 the classic Dormand-Prince embedded weights
BHAT = {
    "tsit5": torch.tensor([a71, a72, a73, a74, a75, a76, 0.0], dtype=F64)
    + torch.tensor([btilde1, btilde2, btilde3, btilde4, btilde5, btilde6, btilde7], dtype=F64),
    "dopri5": torch.tensor([5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40], dtype=F64),
}


def order_conditions(w, A, c):
    """Butcher's conditions for the 17 rooted trees of order ≤ 5: (residual, order)."""
    e, Ac = torch.ones(7, dtype=F64), A @ c
    rows = [(w @ e, 1, 1), (w @ c, 1 / 2, 2), (w @ c ** 2, 1 / 3, 3), (w @ Ac, 1 / 6, 3),
            (w @ c ** 3, 1 / 4, 4), (w @ (c * Ac), 1 / 8, 4), (w @ (A @ c ** 2), 1 / 12, 4), (w @ (A @ Ac), 1 / 24, 4),
            (w @ c ** 4, 1 / 5, 5), (w @ (c ** 2 * Ac), 1 / 10, 5), (w @ (c * (A @ c ** 2)), 1 / 15, 5),
            (w @ (c * (A @ Ac)), 1 / 30, 5), (w @ (Ac * Ac), 1 / 20, 5), (w @ (A @ c ** 3), 1 / 20, 5),
            (w @ (A @ (c * Ac)), 1 / 40, 5), (w @ (A @ (A @ c ** 2)), 1 / 60, 5), (w @ (A @ (A @ Ac)), 1 / 120, 5)]
    return [(float(v - want), order) for v, want, order in rows]


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_tableau_order_conditions(solver):
    c, A, b, btilde = _matrix(solver)
    bhat = BHAT[solver]
    assert (A.sum(1) - c).abs().max() < 1e-14  # rows of a sum to c
    assert float(A[6, 6]) == 0.0 and float(c[6]) == 1.0  # the last row is b, at t + dt (FSAL)
    assert abs(float(b.sum()) - 1) < 1e-14 and abs(float(bhat.sum()) - 1) < 1e-14
    assert_close((bhat - b).abs(), btilde.abs(), atol=1e-15)  # the module's btilde is b̂ − b up to sign
    for res, order in order_conditions(b, A, c):
        assert abs(res) < 1e-14, (order, res)  # the propagated solution: order 5
    fifth = []
    for res, order in order_conditions(bhat, A, c):
        if order <= 4:
            assert abs(res) < 1e-14, (order, res)  # the embedded one: order 4 ...
        else:
            fifth.append(abs(res))
    assert max(fifth) > 1e-5  # ... and not 5, so utilde is a genuine O(dt^5) estimate


def _one_step(solver, f, t, y, h):
    u, utilde, _ = _rk_step(OP, f, torch.tensor(t, dtype=F64), y, torch.tensor(h, dtype=F64), solver, False)
    return u, u + utilde


ODES = {  # f, y0, exact solution at t0 + h from t0 = 0
    "y'=y": (lambda t, y: y, 1.0, lambda h: math.exp(h)),
    "y'=y^2": (lambda t, y: y * y, 0.5, lambda h: 0.5 / (1 - 0.5 * h)),
    "y'=cos(t)y": (lambda t, y: torch.cos(t) * y, 1.0, lambda h: math.exp(math.sin(h))),
}


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
@pytest.mark.parametrize("ode", list(ODES))
def test_convergence_orders(solver, ode):
    """Local errors: the embedded solution's is O(h^5) (its slope between h = 0.2 and 0.1); the propagated one's
    is below 1e-3·h^6 (Tsit5's principal error constants are so small that its h^6 and h^7 terms compete at these
    h, so a slope would mislead; the order conditions above pin the order exactly) and far below the embedded."""
    f, y0, exact = ODES[ode]
    errs = {}
    for h in (0.4, 0.2, 0.1):
        u, uhat = _one_step(solver, f, 0.0, torch.tensor([y0], dtype=F64), h)
        errs[h] = (abs(float(u) - exact(h)), abs(float(uhat) - exact(h)))
        assert errs[h][0] < 1e-3 * h ** 6, (h, errs[h])
    slope_hat = math.log2(errs[0.2][1] / errs[0.1][1])
    assert 4.6 < slope_hat < 5.6, slope_hat
    assert errs[0.1][0] < errs[0.1][1] / 10


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_linear_ode_against_stage_system(solver):
    """y' = M y: the stages solve (I − dt·a⊗M) K = 1⊗(M y); u = y + dt (b⊗I) K, û = y + dt (b̂⊗I) K;
    utilde = û − u, and the penalty is the formula on them."""
    g = torch.Generator().manual_seed(3)
    n, B, h = 4, 5, 0.3
    M = torch.randn(n, n, generator=g, dtype=F64)
    y = torch.randn(B, n, generator=g, dtype=F64)
    _, A, b, _ = _matrix(solver)
    bhat = BHAT[solver]
    big = torch.eye(7 * n, dtype=F64) - h * torch.kron(A, M)
    K = torch.linalg.solve(big, (M @ y.T).repeat(7, 1)).reshape(7, n, B)  # K[i] = stage i, (n, B)
    u = y + h * torch.einsum("i,inb->bn", b, K)
    uhat = y + h * torch.einsum("i,inb->bn", bhat, K)
    f = lambda t, z: z @ M.T  # noqa: E731
    u_op, utilde_op, _ = _rk_step(OP, f, torch.tensor(0.0, dtype=F64), y, torch.tensor(h, dtype=F64), solver, False)
    assert_close(u_op, u)
    assert_close(utilde_op, uhat - u, atol=1e-13)
    atol, rtol = 1e-3, 1e-2
    want = h * torch.sqrt((((uhat - u) / (atol + torch.maximum(y.abs(), u.abs()) * rtol)) ** 2).mean())
    assert_close(local_error_penalty(f, 0.0, y, h, solver=solver, atol=atol, rtol=rtol), want)


# ---- the penalty against the official step ----

@pytest.mark.parametrize("t,dt", [(0.0, 0.1), (0.37, 0.25), (1.3, -0.05)])
@pytest.mark.parametrize("tols", [(5e-2, 5e-2), (1e-4, 1e-4), (1.4e-8, 1.4e-8)])
def test_penalty_matches_official_step(t, dt, tols):
    f = MLP(3)
    y = torch.randn(6, 3, dtype=F64)
    got = local_error_penalty(f, t, y, dt, atol=tols[0], rtol=tols[1])
    want = official_tsit5(f, t, y, dt, *tols)
    assert got.dtype == F64 and got.dim() == 0 and float(got.detach()) > 0
    assert_close(got, want)


@pytest.mark.parametrize("detach", ["official", "none"])
def test_gradients_match_official_step(detach):
    f = MLP(3, seed=1)
    y = torch.randn(5, 3, dtype=F64, requires_grad=True)
    params = list(f.parameters())
    got = local_error_penalty(f, 0.2, y, 0.15, atol=1e-3, rtol=1e-3, detach=detach)
    g_got = torch.autograd.grad(got, [y] + params, allow_unused=True)
    want = official_tsit5(f, 0.2, y, 0.15, 1e-3, 1e-3, official=detach == "official")
    g_want = torch.autograd.grad(want, [y] + params, allow_unused=True)
    if detach == "official":
        assert g_got[0] is None and g_want[0] is None  # y gets no gradient
    else:
        assert_close(g_got[0], g_want[0])
    for a, b in zip(g_got[1:], g_want[1:]):
        assert_close(a, b)
    # the official detaching does change the parameter gradient (k1 and uprev would carry one otherwise)
    full = torch.autograd.grad(official_tsit5(f, 0.2, y, 0.15, 1e-3, 1e-3, official=False), params)
    if detach == "official":
        assert not torch.allclose(full[0], g_got[1])


def test_official_detaches_tensor_t_and_dt():
    f = MLP(2)
    y = torch.randn(3, 2, dtype=F64, requires_grad=True)
    t = torch.tensor(0.4, dtype=F64, requires_grad=True)
    dt = torch.tensor(0.2, dtype=F64, requires_grad=True)
    out = local_error_penalty(f, t, y, dt)
    assert torch.autograd.grad(out, [y, t, dt], allow_unused=True) == (None, None, None)
    assert_close(out, official_tsit5(f, 0.4, y, 0.2))
    out = local_error_penalty(f, t, y, dt, detach="none")
    gy, gt, gdt = torch.autograd.grad(out, [y, t, dt])
    assert all(torch.isfinite(g).all() for g in (gy, gt, gdt))


def test_dopri5_against_its_own_transcription():
    c, a, btilde = TABLEAUS["dopri5"]
    f = MLP(3, seed=2)
    y = torch.randn(4, 3, dtype=F64)
    h, t0 = 0.2, 0.1
    T = lambda s: torch.tensor(s, dtype=F64)  # noqa: E731
    k = [f(T(t0), y)]
    for i in range(1, 7):
        k.append(f(T(t0 + c[i] * h), y + h * sum(a[i][j] * k[j] for j in range(i))))
    u = y + h * sum(a[6][j] * k[j] for j in range(6))
    uhat = y + h * sum(float(BHAT["dopri5"][j]) * k[j] for j in range(7))
    want = h * torch.sqrt((((uhat - u) / (5e-2 + torch.maximum(y.abs(), u.abs()) * 5e-2)) ** 2).mean())
    assert_close(local_error_penalty(f, t0, y, h, solver="dopri5"), want)


def test_tolerance_scaling():
    f = MLP(3, seed=4)
    y = torch.randn(4, 3, dtype=F64)
    base = local_error_penalty(f, 0.0, y, 0.3, atol=1e-3, rtol=2e-3)
    # the scale is linear in (atol, rtol) jointly
    assert_close(local_error_penalty(f, 0.0, y, 0.3, atol=4e-3, rtol=8e-3), base / 4)
    # absolute regime: rtol negligible, the penalty is |dt|·rms(utilde)/atol
    _, utilde, _ = _rk_step(OP, f, torch.tensor(0.0, dtype=F64), y, torch.tensor(0.3, dtype=F64), "tsit5", False)
    abs_only = local_error_penalty(f, 0.0, y, 0.3, atol=1e-2, rtol=1e-300)
    assert_close(abs_only, 0.3 * utilde.square().mean().sqrt() / 1e-2)
    # larger tolerances, smaller penalty
    vals = [float(local_error_penalty(f, 0.0, y, 0.3, atol=a, rtol=a).detach()) for a in (1e-6, 1e-4, 1e-2, 1.0)]
    assert vals == sorted(vals, reverse=True)


def test_zero_state_is_finite():
    W = torch.randn(3, 3, dtype=F64, requires_grad=True)
    f = lambda t, y: y @ W  # noqa: E731  (every stage is 0: utilde = 0, the scale is atol)
    y = torch.zeros(2, 3, dtype=F64)
    out = local_error_penalty(f, 0.0, y, 0.1)
    (g,) = torch.autograd.grad(out, [W])
    assert float(out.detach()) == 0.0 and torch.isfinite(g).all() and not g.any()
    b = torch.randn(3, dtype=F64, requires_grad=True)
    out = local_error_penalty(lambda t, y: y * 0 + b, 0.0, y, 0.1, detach="none")  # constant field: utilde ~ 0
    assert torch.isfinite(out) and float(out.detach()) < 1e-12
    assert torch.isfinite(torch.autograd.grad(out, [b])[0]).all()


@pytest.mark.parametrize("detach", ["official", "none"])
def test_gradcheck_parameters(detach):
    """"none": the gradient of the value. "official": the gradient of the value with k1 (the first call of f,
    made from the unperturbed W0, b0) held fixed, which is what the official stop-gradient differentiates."""
    g = torch.Generator().manual_seed(5)
    W = (torch.randn(3, 3, generator=g, dtype=F64) * 0.8).requires_grad_()
    b = torch.randn(3, generator=g, dtype=F64).requires_grad_()
    y = torch.randn(2, 3, generator=g, dtype=F64).requires_grad_(detach == "none")
    W0, b0 = W.detach().clone(), b.detach().clone()

    def fn(W, b, *ys):
        calls = [0]

        def f(t, z):
            first = calls[0] % 7 == 0
            calls[0] += 1
            w, c = (W0, b0) if first and detach == "official" else (W, b)
            return torch.tanh(z @ w.T + c) * (1 + t)
        return local_error_penalty(f, 0.1, ys[0] if ys else y, 0.2, atol=1e-3, rtol=1e-3, detach=detach)
    inputs = (W, b, y) if detach == "none" else (W, b)
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision(dtype):
    f64 = MLP(3, seed=6)
    f = MLP(3, seed=6).to(dtype)
    y = torch.randn(8, 3, dtype=F64)
    out = local_error_penalty(f, 0.1, y.to(dtype), 0.3, atol=1e-3, rtol=1e-3)
    assert out.dtype == dtype and torch.isfinite(out)
    if dtype == torch.float32:
        assert_close(out, local_error_penalty(f64, 0.1, y, 0.3, atol=1e-3, rtol=1e-3), dtype, rtol=1e-3)


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2 ** 16),
       dt=st.floats(0.01, 0.5), solver=st.sampled_from(["tsit5", "dopri5"]))
def test_fuzz_shapes(shape, seed, dt, solver):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(shape, generator=g, dtype=F64)
    w = torch.randn(shape, generator=g, dtype=F64)
    f = lambda t, z: torch.sin(z * w + t)  # noqa: E731
    out = local_error_penalty(f, 0.3, y, dt, solver=solver)
    if solver == "tsit5":
        assert_close(out, official_tsit5(f, 0.3, y, dt))
    assert torch.isfinite(out) and float(out.detach()) >= 0


# ---- compile ----

def test_compile_fullgraph_aot_eager():
    torch._dynamo.reset()
    f = MLP(3, seed=7).float()
    y = torch.randn(4, 3)
    params = list(f.parameters())
    for solver in ("tsit5",):
        eager = local_error_penalty(f, 0.2, y, 0.1, solver=solver, atol=1e-4, rtol=1e-4)
        g_eager = torch.autograd.grad(eager, params)
        fn = torch.compile(lambda z, t: local_error_penalty(f, t, z, 0.1, solver=solver, atol=1e-4, rtol=1e-4),
                           fullgraph=True, backend="aot_eager")
        out = fn(y, torch.tensor(0.2))  # t a tensor: its value checks are skipped while tracing
        assert_close(out, eager, torch.float32, atol=0, rtol=1e-5)
        for a, b in zip(torch.autograd.grad(out, params), g_eager):
            assert_close(a, b, torch.float32, atol=1e-7, rtol=1e-4)


def test_compile_fullgraph_inductor():
    """float64: utilde = dt·Σ btilde_i k_i cancels (Σ btilde = 0), so float32 rounding would blur the comparison."""
    torch._dynamo.reset()
    w = torch.randn(3, dtype=F64, requires_grad=True)
    y = torch.randn(4, 3, dtype=F64)
    f = lambda t, x: torch.tanh(x * w + t)  # noqa: E731
    eager = local_error_penalty(f, 0.2, y, 0.3, atol=1e-4, rtol=1e-4)
    fn = torch.compile(lambda z: local_error_penalty(f, 0.2, z, 0.3, atol=1e-4, rtol=1e-4), fullgraph=True,
                       backend="inductor")
    out = fn(y)
    assert_close(out, eager, atol=0, rtol=1e-8)
    assert_close(torch.autograd.grad(out, [w])[0], torch.autograd.grad(eager, [w])[0], rtol=1e-7)


# ---- bad input ----

def _raises(kind, msg, fn):
    with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
        fn()


def test_bad_input():
    y = torch.randn(3, 2, dtype=F64)
    f = lambda t, z: torch.tanh(z)  # noqa: E731
    p = "regops.local_error_penalty: "
    _raises(ValueError, p + "solver: expected one of 'tsit5', 'dopri5', got 'rk4'",
            lambda: local_error_penalty(f, 0.0, y, 0.1, solver="rk4"))
    _raises(ValueError, p + "detach: expected one of 'official', 'none', got 'all'",
            lambda: local_error_penalty(f, 0.0, y, 0.1, detach="all"))
    for arg in ("atol", "rtol"):
        for v in (0.0, -1e-3, math.nan, math.inf):
            _raises(ValueError, p + f"{arg}: expected a finite positive tolerance, got {v!r}",
                    lambda: local_error_penalty(f, 0.0, y, 0.1, **{arg: v}))
        _raises(TypeError, p + f"{arg}: expected a finite positive tolerance, got str '1'",
                lambda: local_error_penalty(f, 0.0, y, 0.1, **{arg: "1"}))
    for v in (0.0, math.nan, -math.inf):
        _raises(ValueError, p + f"dt: expected a finite nonzero step (a number or 0-dim tensor), got {v!r}",
                lambda: local_error_penalty(f, 0.0, y, v))
    _raises(ValueError, p + "dt: expected a finite nonzero step (a number or 0-dim tensor), got 0.0",
            lambda: local_error_penalty(f, 0.0, y, torch.tensor(0.0)))
    _raises(TypeError, p + "dt: expected a finite nonzero step (a number or 0-dim tensor), got a tensor of shape "
            "(2,) and dtype float32", lambda: local_error_penalty(f, 0.0, y, torch.ones(2)))
    _raises(ValueError, p + "t: expected a finite time (a number or 0-dim tensor), got nan",
            lambda: local_error_penalty(f, math.nan, y, 0.1))
    _raises(TypeError, p + "t: expected a finite time (a number or 0-dim tensor), got NoneType None",
            lambda: local_error_penalty(f, None, y, 0.1))
    _raises(TypeError, p + "y: expected a torch.Tensor, got list", lambda: local_error_penalty(f, 0.0, [1.0], 0.1))
    _raises(TypeError, p + "y: expected a floating-point tensor, got int64",
            lambda: local_error_penalty(f, 0.0, torch.ones(3, dtype=torch.long), 0.1))
    _raises(TypeError, p + "y: expected a floating-point tensor, got complex128",
            lambda: local_error_penalty(f, 0.0, torch.ones(3, dtype=torch.complex128), 0.1))
    _raises(ValueError, p + "y: expected a non-empty state, got shape (0, 2)",
            lambda: local_error_penalty(f, 0.0, torch.ones(0, 2), 0.1))
    bad = y.clone()
    bad[1, 0] = math.nan
    _raises(ValueError, p + "y: expected finite values, got nan at index (1, 0)",
            lambda: local_error_penalty(f, 0.0, bad, 0.1))
    _raises(TypeError, p + "f: expected a callable f(t, y), got int", lambda: local_error_penalty(3, 0.0, y, 0.1))
    _raises(ValueError, p + "f: expected f(t, y) to return y's shape (3, 2), got shape (3,)",
            lambda: local_error_penalty(lambda t, z: z.sum(1), 0.0, y, 0.1))
    _raises(TypeError, p + "f: expected f(t, y) to return a torch.Tensor, got tuple",
            lambda: local_error_penalty(lambda t, z: (z,), 0.0, y, 0.1))
    _raises(TypeError, p + "f: expected f(t, y) to return y's dtype float64, got dtype float32",
            lambda: local_error_penalty(lambda t, z: z.float(), 0.0, y, 0.1))
    _raises(RuntimeError, p + "f: expected f(t, y) to return a tensor on y's device cpu, got device meta",
            lambda: local_error_penalty(lambda t, z: torch.empty(z.shape, dtype=z.dtype, device="meta"), 0.0, y, 0.1))
    # a shape error in a later stage (here only stage 2's time differs) is caught too
    _raises(ValueError, p + "f: expected f(t, y) to return y's shape (3, 2), got shape (3, 1)",
            lambda: local_error_penalty(lambda t, z: z if float(t) == 0.0 else z[:, :1], 0.0, y, 0.1))
    _raises(RuntimeError, p + "impl: expected an impl that can run here, got 'cpu': regops.local_error_penalty has "
            "no cpu kernel", lambda: local_error_penalty(f, 0.0, y, 0.1, impl="cpu"))
    with pytest.raises(ValueError, match="^" + re.escape(p + "impl: expected one of None, 'auto'")):
        local_error_penalty(f, 0.0, y, 0.1, impl="fast")
    assert local_error_penalty(f, 0.0, y, 0.1, impl="reference").dtype == F64


def test_meta_state_runs_shapes_only():
    out = local_error_penalty(lambda t, z: torch.tanh(z), 0.0, torch.empty(3, 2, device="meta"), 0.1)
    assert out.device.type == "meta" and out.shape == ()


# ---- sample_regularization_time ----

def test_sample_time_range_and_determinism():
    g = torch.Generator().manual_seed(11)
    ts = [sample_regularization_time(0.5, 2.0, g) for _ in range(2000)]
    assert all(isinstance(t, float) and 0.5 <= t < 2.0 for t in ts)
    assert abs(sum(ts) / len(ts) - 1.25) < 0.05  # mean of U(0.5, 2) (sd of the mean ≈ 0.01)
    assert min(ts) < 0.6 and max(ts) > 1.9
    assert sample_regularization_time(0.5, 2.0, torch.Generator().manual_seed(11)) == ts[0]
    torch.manual_seed(3)
    a = sample_regularization_time(torch.tensor(-1.0), 1)
    torch.manual_seed(3)
    assert sample_regularization_time(-1.0, 1.0) == a and -1.0 <= a < 1.0
    # the formula: rand()·(t1 − t0) + t0
    r = float(torch.rand((), generator=torch.Generator().manual_seed(2), dtype=F64))
    assert sample_regularization_time(3.0, 7.0, torch.Generator().manual_seed(2)) == r * 4.0 + 3.0
    # a tiny interval never returns t1
    assert sample_regularization_time(1.0, math.nextafter(1.0, 2.0)) == 1.0


def test_sample_time_bad_input():
    p = "regops.sample_regularization_time: "
    _raises(ValueError, p + "t1: expected an end time greater than t0 = 1.0, got 1.0",
            lambda: sample_regularization_time(1.0, 1.0))
    _raises(ValueError, p + "t1: expected an end time greater than t0 = 1.0, got 0",
            lambda: sample_regularization_time(1.0, 0))
    _raises(ValueError, p + "t0: expected a finite start time, got nan", lambda: sample_regularization_time(math.nan, 1))
    _raises(ValueError, p + "t1: expected a finite end time, got inf", lambda: sample_regularization_time(0, math.inf))
    _raises(ValueError, p + "t1: expected an interval t1 - t0 that is finite in float64 (t0 = -1e+308), got 1e+308",
            lambda: sample_regularization_time(-1e308, 1e308))
    _raises(TypeError, p + "generator: expected a torch.Generator or None, got int",
            lambda: sample_regularization_time(0, 1, 3))
    with pytest.raises(RuntimeError, match="^" + re.escape(p + "impl: expected an impl that can run here, got 'cuda'")):
        sample_regularization_time(0, 1, impl="cuda")


def test_end_to_end_training_step():
    """The official use: task loss + w_reg·penalty at a sampled time; the penalty's gradient reaches f."""
    f = MLP(2, seed=8)
    y = torch.randn(4, 2, dtype=F64)
    t = sample_regularization_time(0.0, 1.0, torch.Generator().manual_seed(0))
    pen = local_error_penalty(f, t, y, 0.1, atol=1e-4, rtol=1e-4)
    pen.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in f.parameters())
