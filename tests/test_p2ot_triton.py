"""The Triton kernel of P²OT's fused scaling pass (regops/triton/p2ot.py) against the formula in float64.

torch.ops.regops.p2ot_scaling_pass_triton(K, v, t) -> (u, col): r_i = Σ_j K_ij v_j, u_i = t_i / r_i,
col_j = Σ_i K_ij u_i. On CPU-only machines the conftest sets TRITON_INTERPRET=1, so the kernel runs interpreted
(the sizes are small). K, v, t are positive here (a Sinkhorn kernel and its scalings), so no sum cancels and a
float32 result is within a few float32 ulps (times the summation length) of the float64 one.
"""
import pytest
import torch

import regops  # noqa: F401  (registers the ops)
from regops._loader import triton_available

# The interpreter divides in numpy: a zero row (r_i = 0) warns there.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

if not triton_available():
    pytest.skip("triton is not installed", allow_module_level=True)

from regops.triton import p2ot as tp  # noqa: E402  (registers the triton op)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NS = [1, 3, 37, 300]
KCS = [1, 2, 17, 101]
# K, v, t ≥ 0: no sum cancels, so the error is relative (a few float32 ulps times the summation depth)
TOL = dict(rtol=2e-5, atol=1e-30)


def op():
    return torch.ops.regops.p2ot_scaling_pass_triton


def expected(K, v, t):
    """The formula in float64."""
    K, v, t = K.double(), v.double(), t.double()
    u = t / (K @ v)
    return u, K.T @ u


def inputs(n, kc, seed=0, target="uniform"):
    g = torch.Generator().manual_seed(seed)
    K = torch.rand(n, kc, generator=g) + 1e-3
    v = torch.rand(kc, generator=g) + 0.5
    if target == "uniform":
        t = torch.full((n,), 1.0 / max(n, 1))
    elif target == "varied":
        t = torch.rand(n, generator=g) * 10 + 1e-2
    else:  # "zeros": some rows carry no mass
        t = torch.rand(n, generator=g)
        t[::3] = 0
    return K.to(DEVICE), v.to(DEVICE), t.to(DEVICE)


def check(got, exp):
    u, col = got
    ue, ce = exp
    assert u.dtype == torch.float32 and col.dtype == torch.float32
    assert u.shape == ue.shape and col.shape == ce.shape
    torch.testing.assert_close(u.cpu(), ue.cpu().float(), **TOL)
    torch.testing.assert_close(col.cpu(), ce.cpu().float(), **TOL)


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("kc", KCS)
def test_matches_formula(n, kc):
    K, v, t = inputs(n, kc, seed=n * 1000 + kc)
    check(op()(K, v, t), expected(K, v, t))


@pytest.mark.parametrize("target", ["varied", "zeros"])
@pytest.mark.parametrize("n,kc", [(37, 17), (300, 101)])
def test_row_targets(n, kc, target):
    K, v, t = inputs(n, kc, seed=7, target=target)
    check(op()(K, v, t), expected(K, v, t))


def test_wide_kernel_chunked():
    """Kc > MAX_BLOCK_K: the column-chunked fallback."""
    K, v, t = inputs(5, tp.MAX_BLOCK_K + 77, seed=3, target="varied")
    check(op()(K, v, t), expected(K, v, t))


def test_non_contiguous():
    K, v, t = inputs(17, 37, seed=4, target="varied")
    Kt = K.T.contiguous().T  # column-major view
    vs = torch.stack([v, v], 1)[:, 0]  # strided
    check(op()(Kt, vs, t), expected(K, v, t))


def test_zero_row_gives_inf():
    K, v, t = inputs(37, 17, seed=5, target="varied")
    K[4] = 0
    u, col = op()(K, v, t)
    ue, ce = expected(K, v, t)
    assert torch.isinf(u[4]) and u[4] > 0
    assert torch.isnan(col).all() and torch.isnan(ce).all()  # 0·inf in every column, as the formula says
    finite = torch.isfinite(ue)
    torch.testing.assert_close(u[finite].cpu(), ue[finite].cpu().float(), **TOL)


def test_empty():
    K = torch.empty(0, 5, device=DEVICE)
    u, col = op()(K, torch.ones(5, device=DEVICE), torch.empty(0, device=DEVICE))
    assert u.shape == (0,) and torch.equal(col.cpu(), torch.zeros(5))
    t = torch.tensor([1.0, 0.5], device=DEVICE)
    u, col = op()(torch.empty(2, 0, device=DEVICE), torch.empty(0, device=DEVICE), t)
    assert col.shape == (0,) and torch.isinf(u).all()  # r_i is an empty sum: u = t/0


def test_deterministic():
    K, v, t = inputs(300, 101, seed=6, target="varied")
    a, b = op()(K, v, t), op()(K, v, t)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_errors():
    K, v, t = inputs(5, 3)
    with pytest.raises(TypeError, match=r"regops.p2ot_scaling_pass: kernel: expected dtype float32"):
        op()(K.double(), v.double(), t.double())
    with pytest.raises(TypeError, match=r"regops.p2ot_scaling_pass: row_target: expected dtype float32"):
        op()(K, v, t.double())
    with pytest.raises(ValueError, match=r"regops.p2ot_scaling_pass: col_scale: expected shape \(3,\)"):
        op()(K, torch.ones(4, device=DEVICE), t)
    with pytest.raises(ValueError, match=r"regops.p2ot_scaling_pass: row_target: expected shape \(5,\)"):
        op()(K, v, t[:4])
    with pytest.raises(ValueError, match=r"regops.p2ot_scaling_pass: kernel: expected a 2-D tensor \(N, Kc\)"):
        op()(K[0], v, t)


def test_opcheck():
    K, v, t = inputs(37, 17, seed=8, target="varied")
    torch.library.opcheck(op().default, (K, v, t))


def test_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        K = torch.empty(11, 7)
        u, col = op()(K, torch.empty(7), torch.empty(11))
        assert u.shape == (11,) and col.shape == (7,)
        with pytest.raises(ValueError):
            op()(K, torch.empty(6), torch.empty(11))
