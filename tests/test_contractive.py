"""Contractive penalties: contractive_penalty against per-sample torch.autograd.functional.jacobian (exact) and in
expectation (Hutchinson); sigmoid_ae_jacobian_penalty against the explicit Jacobian of the auto-encoder;
cae_encoder_penalty against cA.py's and pylearn2's formulas transcribed (with true division) and the encoder's exact
Jacobian; gradients, compile, dtypes, fuzzing, bad input, saturation; the example trains and contracts."""
import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st

from regops import cae_encoder_penalty, contractive_penalty, sigmoid_ae_jacobian_penalty

from tolerances import assert_close

F64 = torch.float64


def per_sample_jacobian_sq(fn, x, create_graph=False):
    """Σ J² per sample, J = ∂fn(x_i[None])[0]/∂x_i by torch.autograd.functional.jacobian, one sample at a time."""
    out = []
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda xi: fn(xi.unsqueeze(0)).squeeze(0), x[i],
                                               create_graph=create_graph)
        out.append(J.square().sum())
    return torch.stack(out)


def mlp(d_in, d_out, dtype=F64, hidden=7):
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, d_out)).to(dtype)


def ae_params(B, D, H, dtype=F64, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=dtype)
    W_enc = torch.randn(H, D, generator=g, dtype=dtype) * scale
    b_enc = torch.randn(H, generator=g, dtype=dtype) * 0.5
    W_dec = torch.randn(D, H, generator=g, dtype=dtype) * scale
    c = torch.randn(D, generator=g, dtype=dtype)
    return x, W_enc, b_enc, W_dec, c


# ---- the official formulas, transcribed (W in their (D, H) layout: units in the columns) ----

def cA_tutorial_penalty(x, W_DH, b):
    """DeepLearningTutorials code/cA.py: cA.get_hidden_values, get_jacobian, L_jacob = sum(J**2) / n_batchsize
    (true division, as before the Python 3 port's `//`)."""
    hidden = torch.sigmoid(x @ W_DH + b)
    n_batchsize, n_visible, n_hidden = x.shape[0], W_DH.shape[0], W_DH.shape[1]
    J = (hidden * (1 - hidden)).reshape(n_batchsize, 1, n_hidden) * W_DH.reshape(1, n_visible, n_hidden)
    return (J ** 2).sum() / n_batchsize


def pylearn2_penalty(x, W_DH, b):
    """pylearn2 ContractiveAutoencoder.contraction_penalty: act_grad = ∂Σhiddens/∂acts (sigmoid'),
    dot(sqr(act_grad), sqr(weights).sum(axis=0)).sum() / X.shape[0]."""
    acts = b + x @ W_DH
    hiddens = torch.sigmoid(acts)
    act_grad = hiddens * (1 - hiddens)
    return (act_grad.square() @ W_DH.square().sum(0)).sum() / x.shape[0]


# ---- contractive_penalty ----

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_exact_matches_autograd_jacobian_mlp(reduction):
    net = mlp(5, 3)
    x = torch.randn(6, 5, dtype=F64)
    ref = per_sample_jacobian_sq(net, x)
    got = contractive_penalty(x, net, reduction=reduction)
    want = {"mean": ref.mean(), "sum": ref.sum(), "none": ref}[reduction]
    assert got.shape == want.shape and got.dtype == F64
    assert_close(got, want)


def test_exact_trailing_shapes():
    A = torch.randn(4, 5, dtype=F64)
    fn = lambda z: torch.tanh(z @ A) * z.sum(-1, keepdim=True)  # (B, 3, 4) -> (B, 3, 5), mixes within a sample
    x = torch.randn(3, 3, 4, dtype=F64)
    assert_close(contractive_penalty(x, fn, reduction="none"), per_sample_jacobian_sq(fn, x))
    # a (B,) input (scalar samples) to a (B, 2) output
    fn2 = lambda z: torch.stack([z.sin(), z ** 2], 1)
    x2 = torch.randn(5, dtype=F64)
    assert_close(contractive_penalty(x2, fn2, reduction="none"), x2.cos() ** 2 + 4 * x2 ** 2)


def test_exact_gradient_wrt_params_and_x():
    net = mlp(4, 3)
    x = torch.randn(5, 4, dtype=F64, requires_grad=True)
    params = list(net.parameters())
    kw = dict(allow_unused=True, materialize_grads=True)  # the last bias does not enter the Jacobian
    got = torch.autograd.grad(contractive_penalty(x, net), [x] + params, **kw)
    want = torch.autograd.grad(per_sample_jacobian_sq(net, x, create_graph=True).mean(), [x] + params, **kw)
    assert got[-1].abs().sum() == 0
    for g, w in zip(got, want):
        assert_close(g, w)


def test_exact_gradcheck_tiny_fn():
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)
    W = torch.randn(3, 2, dtype=F64, requires_grad=True)
    f = lambda x, W: contractive_penalty(x, lambda z: torch.tanh(z @ W.t()), reduction="none")
    assert torch.autograd.gradcheck(f, (x, W))


def test_hutchinson_unbiased():
    net = mlp(4, 6)
    x = torch.randn(3, 4, dtype=F64)
    n = 2000
    est = contractive_penalty(x, net, method="hutchinson", n_samples=n, reduction="none",
                              generator=torch.Generator().manual_seed(0)).detach()
    exact = contractive_penalty(x, net, reduction="none").detach()
    # ‖Jv‖² for v ~ N(0, I) has variance 2‖JᵀJ‖²_F: allow 5 standard errors of the mean
    std = []
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda xi: net(xi[None])[0], x[i])
        std.append(math.sqrt(2 * (J.t() @ J).square().sum().item() / n))
    assert (est - exact).abs().max() > 0  # it is an estimate
    assert torch.all((est - exact).abs() <= 5 * torch.tensor(std, dtype=F64)), (est, exact, std)


def test_hutchinson_averages_draws_and_is_seeded():
    net = mlp(4, 3)
    x = torch.randn(5, 4, dtype=F64)
    g = torch.Generator().manual_seed(7)
    singles = torch.stack([contractive_penalty(x, net, method="hutchinson", reduction="none", generator=g)
                           for _ in range(4)]).mean(0)
    four = contractive_penalty(x, net, method="hutchinson", n_samples=4, reduction="none",
                               generator=torch.Generator().manual_seed(7))
    assert_close(four, singles)
    again = contractive_penalty(x, net, method="hutchinson", n_samples=4, reduction="none",
                                generator=torch.Generator().manual_seed(7))
    assert torch.equal(four, again)
    # one draw by hand: ‖J_i v_i‖² with J_i per sample
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    want = torch.stack([(torch.autograd.functional.jacobian(lambda xi: net(xi[None])[0], x[i]) @ v[i]).square().sum()
                        for i in range(5)])
    got = contractive_penalty(x, net, method="hutchinson", reduction="none", generator=torch.Generator().manual_seed(1))
    assert_close(got, want)


def test_hutchinson_gradcheck():
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)
    W = torch.randn(3, 2, dtype=F64, requires_grad=True)
    f = lambda x, W: contractive_penalty(x, lambda z: torch.tanh(z @ W.t()), method="hutchinson", n_samples=2,
                                         reduction="sum", generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(f, (x, W))


def test_low_precision_and_constant_fn():
    x = torch.randn(4, 4)
    ref = contractive_penalty(x.double(), mlp(4, 3))
    got = contractive_penalty(x, mlp(4, 3, dtype=torch.float32))
    assert got.dtype == torch.float32
    assert_close(got, ref.float(), atol=1e-5, rtol=1e-4)
    bf = contractive_penalty(x.bfloat16(), mlp(4, 3, dtype=torch.bfloat16))
    assert bf.dtype == torch.float32
    assert_close(bf, ref.float(), torch.bfloat16, atol=5e-2, rtol=5e-2)
    # Hutchinson draws v in float32 for bfloat16 inputs: the same draws as for float32, rounded
    h32 = contractive_penalty(x, mlp(4, 3, dtype=torch.float32), method="hutchinson", n_samples=3,
                              generator=torch.Generator().manual_seed(0))
    h16 = contractive_penalty(x.bfloat16(), mlp(4, 3, dtype=torch.bfloat16), method="hutchinson", n_samples=3,
                              generator=torch.Generator().manual_seed(0))
    assert h16.dtype == torch.float32
    assert_close(h16, h32, torch.bfloat16, atol=5e-2, rtol=5e-2)
    const = lambda z: torch.zeros(z.shape[0], 2, dtype=z.dtype)  # no dependence on x: 0, not an error
    for method in ("exact", "hutchinson"):
        assert contractive_penalty(x, const, method=method).item() == 0


def test_batch_of_one_and_impl():
    net = mlp(3, 2)
    x = torch.randn(1, 3, dtype=F64)
    assert_close(contractive_penalty(x, net, impl="reference"), per_sample_jacobian_sq(net, x)[0])
    assert contractive_penalty(x, net, method="hutchinson").shape == ()
    with pytest.raises(RuntimeError, match=re.escape("regops.contractive_penalty: impl: expected an impl that can "
                                                     "run here, got 'cpu'")):
        contractive_penalty(x, net, impl="cpu")


def _err(kind, msg):
    return pytest.raises(kind, match="^" + re.escape(msg) + "$")


def test_contractive_penalty_bad_input():
    op = "regops.contractive_penalty"
    net = mlp(3, 2)
    x = torch.randn(4, 3, dtype=F64)
    with _err(TypeError, f"{op}: x: expected a torch.Tensor, got list"):
        contractive_penalty([1.0], net)
    with _err(TypeError, f"{op}: x: expected a floating-point tensor, got dtype int64"):
        contractive_penalty(torch.ones(4, 3, dtype=torch.long), net)
    with _err(ValueError, f"{op}: x: expected a batch (B, ...) with B >= 1, got shape (0, 3)"):
        contractive_penalty(torch.empty(0, 3, dtype=F64), net)
    with _err(ValueError, f"{op}: x: expected a batch (B, ...), got a 0-D tensor"):
        contractive_penalty(torch.tensor(1.0), net)
    with _err(TypeError, f"{op}: fn: expected a callable, got int"):
        contractive_penalty(x, 3)
    with _err(ValueError, f"{op}: method: expected one of 'exact', 'hutchinson', got 'fd'"):
        contractive_penalty(x, net, method="fd")
    with _err(ValueError, f"{op}: reduction: expected one of 'mean', 'sum', 'none', got 'max'"):
        contractive_penalty(x, net, reduction="max")
    with _err(ValueError, f"{op}: n_samples: expected an int >= 1, got 0"):
        contractive_penalty(x, net, method="hutchinson", n_samples=0)
    with _err(TypeError, f"{op}: n_samples: expected an int >= 1, got float 2.0"):
        contractive_penalty(x, net, method="hutchinson", n_samples=2.0)
    with _err(TypeError, f"{op}: generator: expected a torch.Generator or None, got int"):
        contractive_penalty(x, net, method="hutchinson", generator=0)
    with _err(RuntimeError, f"{op}: generator: expected a generator on meta (as x), got a generator on cpu"):
        contractive_penalty(x.to("meta"), net, method="hutchinson", generator=torch.Generator())
    with _err(ValueError, f"{op}: x: expected finite values, got nan at index (1, 2)"):
        contractive_penalty(torch.where(torch.arange(12).reshape(4, 3) == 5, math.nan, x), net)
    for method in ("exact", "hutchinson"):
        with pytest.raises(ValueError, match=re.escape(f"{op}: fn: expected a tensor of shape (")):
            contractive_penalty(x, lambda z: net(z)[0], method=method)  # drops the batch dim
        with pytest.raises(ValueError, match=re.escape(f"{op}: fn: expected a tensor of shape (")):
            contractive_penalty(x, lambda z: 1.0, method=method)
    with _err(ValueError, f"{op}: fn: expected a tensor of shape (1, ...) for a sample fed as a batch of one, "
                          f"got shape (2,)"):
        contractive_penalty(x, lambda z: net(z)[0])
    with _err(ValueError, f"{op}: fn: expected a tensor of shape (4, ...) for x of batch 4, got shape (1, 2)"):
        contractive_penalty(x, lambda z: net(z).sum(0, keepdim=True), method="hutchinson")  # reduces the batch
    with _err(TypeError, f"{op}: fn: expected a floating-point output, got dtype int64"):
        contractive_penalty(x, lambda z: (z > 0).long(), method="hutchinson")


# ---- sigmoid_ae_jacobian_penalty ----

def explicit_ae(W_enc, b_enc, W_dec, c):
    return lambda z: torch.sigmoid(z @ W_enc.t() + b_enc) @ W_dec.t() + c


@pytest.mark.parametrize("B,D,H", [(6, 5, 3), (4, 3, 9), (1, 1, 1), (3, 7, 1), (2, 1, 4)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sigmoid_ae_matches_exact_jacobian(B, D, H, reduction):
    x, W_enc, b_enc, W_dec, c = ae_params(B, D, H)
    got = sigmoid_ae_jacobian_penalty(x, W_enc, b_enc, W_dec, reduction=reduction)
    want = contractive_penalty(x, explicit_ae(W_enc, b_enc, W_dec, c), reduction=reduction)
    assert got.shape == want.shape
    assert_close(got, want)
    # and the research note's form, ‖W_dec diag(d) W_enc‖²_F, sample by sample
    h = torch.sigmoid(x @ W_enc.t() + b_enc)
    J = torch.einsum("dh,bh,he->bde", W_dec, h * (1 - h), W_enc)
    per = J.square().sum((1, 2))
    assert_close(got, {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction])


def test_sigmoid_ae_gradcheck():
    x, W_enc, b_enc, W_dec, _ = ae_params(3, 4, 2)
    args = tuple(t.requires_grad_() for t in (x, W_enc, b_enc, W_dec))
    assert torch.autograd.gradcheck(lambda *a: sigmoid_ae_jacobian_penalty(*a, reduction="none"), args)
    assert torch.autograd.gradgradcheck(lambda *a: sigmoid_ae_jacobian_penalty(*a), args)


def test_sigmoid_ae_gradient_matches_exact():
    x, W_enc, b_enc, W_dec, c = ae_params(5, 4, 3)
    args = [t.requires_grad_() for t in (x, W_enc, b_enc, W_dec)]
    got = torch.autograd.grad(sigmoid_ae_jacobian_penalty(*args), args)
    want = torch.autograd.grad(contractive_penalty(x, explicit_ae(W_enc, b_enc, W_dec, c)), args)
    for g, w in zip(got, want):
        assert_close(g, w)


@given(B=st.integers(1, 6), D=st.integers(1, 6), H=st.integers(1, 6), scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_sigmoid_ae_fuzz(B, D, H, scale):
    x, W_enc, b_enc, W_dec, _ = ae_params(B, D, H, scale=scale, seed=B * 100 + D * 10 + H)
    h = torch.sigmoid(x @ W_enc.t() + b_enc)
    per = torch.einsum("dh,bh,he->bde", W_dec, h * (1 - h), W_enc).square().sum((1, 2))
    got = sigmoid_ae_jacobian_penalty(x, W_enc, b_enc, W_dec, reduction="none")
    assert torch.all(got >= 0)
    assert_close(got, per)


def test_sigmoid_ae_dtypes():
    x, W_enc, b_enc, W_dec, _ = ae_params(8, 6, 4)
    ref = sigmoid_ae_jacobian_penalty(x, W_enc, b_enc, W_dec, reduction="none")
    f32 = sigmoid_ae_jacobian_penalty(*(t.float() for t in (x, W_enc, b_enc, W_dec)), reduction="none")
    assert f32.dtype == torch.float32
    assert_close(f32, ref.float())
    bf = sigmoid_ae_jacobian_penalty(*(t.bfloat16() for t in (x, W_enc, b_enc, W_dec)), reduction="none")
    assert bf.dtype == torch.float32
    assert_close(bf, ref.float(), torch.bfloat16)


def test_sigmoid_ae_zero_and_saturated():
    x, W_enc, b_enc, W_dec, _ = ae_params(4, 3, 2)
    zero = sigmoid_ae_jacobian_penalty(x, torch.zeros_like(W_enc), b_enc, W_dec)
    assert zero.item() == 0
    big = [t.requires_grad_() for t in (x * 1e3, W_enc * 1e3, b_enc, W_dec)]  # h ∈ {0, 1} exactly: d = 0
    val = sigmoid_ae_jacobian_penalty(*big)
    val.backward()
    assert val.item() == 0 and all(torch.isfinite(t.grad).all() for t in big)
    # H = 0 or D = 0: an empty Jacobian, norm 0
    assert sigmoid_ae_jacobian_penalty(x, W_enc[:0], b_enc[:0], W_dec[:, :0]).item() == 0
    assert sigmoid_ae_jacobian_penalty(x[:, :0], W_enc[:, :0], b_enc, W_dec[:0]).item() == 0


def test_sigmoid_ae_bad_input():
    op = "regops.sigmoid_ae_jacobian_penalty"
    x, W_enc, b_enc, W_dec, _ = ae_params(4, 3, 2)
    with _err(TypeError, f"{op}: x: expected a floating-point tensor, got dtype int64"):
        sigmoid_ae_jacobian_penalty(x.long(), W_enc, b_enc, W_dec)
    with _err(ValueError, f"{op}: x: expected a 2-D batch (B, D), got shape (4, 3, 1)"):
        sigmoid_ae_jacobian_penalty(x[..., None], W_enc, b_enc, W_dec)
    with _err(ValueError, f"{op}: W_enc: expected shape (H, 3), the encoder weight as nn.Linear(D, H) stores it "
                          f"(D = x.shape[1] = 3), got shape (3, 2)"):
        sigmoid_ae_jacobian_penalty(x, W_enc.t(), b_enc, W_dec)
    with _err(ValueError, f"{op}: b_enc: expected shape (2,) (H = W_enc.shape[0]), got shape (3,)"):
        sigmoid_ae_jacobian_penalty(x, W_enc, torch.zeros(3, dtype=F64), W_dec)
    with _err(ValueError, f"{op}: W_dec: expected shape (3, 2) = (D, H), the decoder weight as nn.Linear(H, D) "
                          f"stores it, got shape (2, 3)"):
        sigmoid_ae_jacobian_penalty(x, W_enc, b_enc, W_dec.t())
    with _err(TypeError, f"{op}: W_dec: expected dtype float64 (as x), got dtype float32"):
        sigmoid_ae_jacobian_penalty(x, W_enc, b_enc, W_dec.float())
    with _err(RuntimeError, f"{op}: W_enc: expected device cpu (as x), got device meta"):
        sigmoid_ae_jacobian_penalty(x, W_enc.to("meta"), b_enc, W_dec)
    with _err(TypeError, f"{op}: b_enc: expected a torch.Tensor, got NoneType"):
        sigmoid_ae_jacobian_penalty(x, W_enc, None, W_dec)
    with _err(ValueError, f"{op}: reduction: expected one of 'mean', 'sum', 'none', got 'batchmean'"):
        sigmoid_ae_jacobian_penalty(x, W_enc, b_enc, W_dec, reduction="batchmean")
    with _err(ValueError, f"{op}: x: expected a batch (B, D) with B >= 1, got shape (0, 3)"):
        sigmoid_ae_jacobian_penalty(x[:0], W_enc, b_enc, W_dec)
    with _err(ValueError, f"{op}: W_dec: expected finite values, got inf at index (0, 1)"):
        sigmoid_ae_jacobian_penalty(x, W_enc, b_enc, W_dec.index_put((torch.tensor(0), torch.tensor(1)),
                                                                      torch.tensor(math.inf, dtype=F64)))
    meta = sigmoid_ae_jacobian_penalty(*(t.to("meta") for t in (x, W_enc, b_enc, W_dec)), reduction="none")
    assert meta.shape == (4,) and meta.device.type == "meta"


# ---- cae_encoder_penalty ----

@pytest.mark.parametrize("B,D,H", [(7, 5, 3), (1, 4, 6), (3, 1, 1), (10, 20, 8)])
def test_cae_matches_official_formulas_and_exact_jacobian(B, D, H):
    x, W, b, _, _ = ae_params(B, D, H, scale=0.7)
    h = torch.sigmoid(x @ W.t() + b)
    got = cae_encoder_penalty(h, W)
    assert got.shape == () and got.dtype == F64
    assert_close(got, cA_tutorial_penalty(x, W.t(), b))
    assert_close(got, pylearn2_penalty(x, W.t(), b))
    assert_close(got, contractive_penalty(x, lambda z: torch.sigmoid(z @ W.t() + b)))


def test_cae_gradient_through_h_matches_exact_jacobian():
    """h computed from the encoder: the gradient reaches W and b both through h and through W directly, and equals
    the gradient of the encoder's exact Jacobian norm."""
    torch.manual_seed(1)
    enc = torch.nn.Linear(5, 4).double()
    x = torch.randn(6, 5, dtype=F64, requires_grad=True)
    params = [x, enc.weight, enc.bias]
    got = torch.autograd.grad(cae_encoder_penalty(torch.sigmoid(enc(x)), enc.weight), params)
    want = torch.autograd.grad(contractive_penalty(x, lambda z: torch.sigmoid(enc(z))), params)
    for g, w in zip(got, want):
        assert_close(g, w)


def test_cae_true_division_not_floor():
    """cA.py's Python 3 port divides by the batch with `//`: the floored value has zero gradient. regops divides truly."""
    x, W, b, _, _ = ae_params(4, 3, 2, scale=0.5)
    W.requires_grad_()
    h = torch.sigmoid(x @ W.t() + b)
    val = cae_encoder_penalty(h, W)
    J2 = ((h * (1 - h)).reshape(4, 1, 2) * W.t().reshape(1, 3, 2)).square().sum()
    floored = torch.div(J2, 4, rounding_mode="floor")
    assert floored.item() == 0 and 0 < val.item() < 1
    assert_close(val, J2 / 4)
    g, = torch.autograd.grad(val, W)
    assert g.abs().sum() > 0


def test_cae_gradcheck():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(4, 3, generator=g, dtype=F64).requires_grad_()
    W = torch.randn(3, 5, generator=g, dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(cae_encoder_penalty, (h, W))
    assert torch.autograd.gradgradcheck(cae_encoder_penalty, (h, W))


@given(B=st.integers(1, 8), D=st.integers(0, 6), H=st.integers(0, 6))
def test_cae_fuzz(B, D, H):
    x, W, b, _, _ = ae_params(B, max(D, 1), H, seed=B * 100 + D * 10 + H)
    x, W = x[:, :D], W[:, :D]
    h = torch.sigmoid(x @ W.t() + b)
    assert_close(cae_encoder_penalty(h, W), pylearn2_penalty(x, W.t(), b))


def test_cae_dtypes_zero_and_saturated():
    x, W, b, _, _ = ae_params(6, 4, 3)
    h = torch.sigmoid(x @ W.t() + b)
    ref = cae_encoder_penalty(h, W)
    assert_close(cae_encoder_penalty(h.float(), W.float()), ref.float())
    bf = cae_encoder_penalty(h.bfloat16(), W.bfloat16())
    assert bf.dtype == torch.float32
    assert_close(bf, ref.float(), torch.bfloat16)
    assert cae_encoder_penalty(h, torch.zeros_like(W)).item() == 0
    sat = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64, requires_grad=True)
    val = cae_encoder_penalty(sat, W)
    val.backward()
    assert val.item() == 0 and torch.isfinite(sat.grad).all()


def test_cae_bad_input():
    op = "regops.cae_encoder_penalty"
    x, W, b, _, _ = ae_params(4, 5, 3)
    h = torch.sigmoid(x @ W.t() + b)
    with _err(ValueError, f"{op}: W: expected shape (3, D): W.shape[0] == h.shape[1] = 3, one row per hidden unit as "
                          f"nn.Linear(D, H).weight stores it (a (D, H) weight as in cA.py/pylearn2? pass W.t()), "
                          f"got shape (5, 3)"):
        cae_encoder_penalty(h, W.t())
    with _err(ValueError, f"{op}: W: expected shape (3, D): W.shape[0] == h.shape[1] = 3, one row per hidden unit as "
                          f"nn.Linear(D, H).weight stores it, got shape (4, 5)"):
        cae_encoder_penalty(h, torch.zeros(4, 5, dtype=F64))
    with _err(ValueError, f"{op}: W: expected a 2-D encoder weight (H, D) with H = h.shape[1] = 3, got shape (3,)"):
        cae_encoder_penalty(h, W[:, 0])
    with _err(ValueError, f"{op}: h: expected a 2-D batch of sigmoid encoder outputs (B, H), got shape (3,)"):
        cae_encoder_penalty(h[0], W)
    with _err(TypeError, f"{op}: h: expected a floating-point tensor, got dtype int64"):
        cae_encoder_penalty(h.long(), W)
    with _err(TypeError, f"{op}: W: expected a torch.Tensor, got ndarray"):
        cae_encoder_penalty(h, W.numpy())
    with _err(TypeError, f"{op}: W: expected dtype float64 (as h), got dtype float32"):
        cae_encoder_penalty(h, W.float())
    with _err(RuntimeError, f"{op}: W: expected device cpu (as h), got device meta"):
        cae_encoder_penalty(h, W.to("meta"))
    with _err(ValueError, f"{op}: h: expected a batch (B, H) with B >= 1, got shape (0, 3)"):
        cae_encoder_penalty(h[:0], W)
    with _err(ValueError, f"{op}: h: expected sigmoid outputs in [0, 1] (pass s(Wx + b), not the pre-activation), "
                          f"got values in [-1.0, 0.5]"):
        cae_encoder_penalty(torch.tensor([[-1.0, 0.5, 0.2]], dtype=F64), W)
    with pytest.raises(RuntimeError, match=re.escape(f"{op}: impl: expected an impl that can run here, got 'triton'")):
        cae_encoder_penalty(h, W, impl="triton")
    assert cae_encoder_penalty(h.to("meta"), W.to("meta")).device.type == "meta"


# ---- torch.compile ----

@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_closed_forms(backend):
    x, W_enc, b_enc, W_dec, _ = ae_params(5, 4, 3)
    h = torch.sigmoid(x @ W_enc.t() + b_enc)
    sig = torch.compile(lambda *a: sigmoid_ae_jacobian_penalty(*a, reduction="none"), fullgraph=True, backend=backend)
    cae = torch.compile(cae_encoder_penalty, fullgraph=True, backend=backend)
    assert_close(sig(x, W_enc, b_enc, W_dec), sigmoid_ae_jacobian_penalty(x, W_enc, b_enc, W_dec, reduction="none"))
    assert_close(cae(h, W_enc), cae_encoder_penalty(h, W_enc))
    if backend == "aot_eager":  # the gradient through the compiled graph
        Wg = W_enc.clone().requires_grad_()
        g1, = torch.autograd.grad(sig(x, Wg, b_enc, W_dec).sum(), Wg)
        g2, = torch.autograd.grad(sigmoid_ae_jacobian_penalty(x, Wg, b_enc, W_dec, reduction="sum"), Wg)
        assert_close(g1, g2)


# ---- the example ----

def test_example_contracts_the_encoder():
    path = Path(__file__).resolve().parents[1] / "examples" / "contractive_autoencoder.py"
    spec = importlib.util.spec_from_file_location("contractive_autoencoder", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(steps=50, seed=0, verbose=False)
    assert res["plain"]["encoder_start"] == res["cae"]["encoder_start"]  # the same initialization
    assert res["cae"]["encoder_end"] < res["cae"]["encoder_start"]
    assert res["cae"]["encoder_end"] < 0.95 * res["plain"]["encoder_end"]
    assert all(math.isfinite(v) for r in res.values() for v in r.values())
