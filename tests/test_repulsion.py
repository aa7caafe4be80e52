"""Parameter repulsion of "Adapt then Unlearn": every impl against the float64 reference (losses and gradients, per
dtype), the K-anchor identity against the literal K-loop, a fresh transcription of the official formula on small
models, torch.compile, hypothesis, argument errors."""
import math

import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import regops
from regops.reference import repulsion as R

from conftest import cpu_impls

OP = "param_repulsion"
IMPLS = ["reference"] + cpu_impls(OP)
KERNEL_IMPLS = [i for i in IMPLS if i != "reference"]
KINDS = ["inverse", "exp", "neg_l2"]
SHAPES = [(1,), (2,), (1001,), (), (7, 13), (3, 4, 5), (70001,)]
RTOL = {torch.float64: 1e-11, torch.float32: 2e-5}


def _lists(dtype, shapes=SHAPES, k=1, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]
    sets = [[(p.detach().double() + scale * torch.randn(p.shape, generator=g, dtype=torch.float64)).to(dtype)
             for p in params] for _ in range(k)]
    return params, sets


def _grads(loss, params):
    return torch.autograd.grad(loss, params)


def _ref(params, sets, kind, gamma=1.0, normalize="official"):
    """The float64 oracle on float64 copies (a leaf per tensor) and its gradients."""
    p64 = [p.detach().double().requires_grad_() for p in params]
    s64 = [[a.double() for a in s] for s in sets]
    loss = R.param_repulsion(p64, s64, kind, gamma, normalize)
    return loss, _grads(loss, p64)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 3])
def test_matches_reference(impl, dtype, kind, k):
    params, sets = _lists(dtype, k=k)
    for normalize in ("official", "mean"):
        loss = regops.param_repulsion(params, sets if k > 1 else sets[0], kind=kind, gamma=0.7, normalize=normalize,
                                      impl=impl)
        assert loss.dtype == dtype and loss.dim() == 0
        ref, gref = _ref(params, sets, kind, 0.7, normalize)
        torch.testing.assert_close(loss.double(), ref, rtol=RTOL[dtype], atol=0)
        for g, gr in zip(_grads(loss, params), gref):
            assert g.dtype == dtype and g.shape == gr.shape
            torch.testing.assert_close(g.double(), gr, rtol=RTOL[dtype], atol=RTOL[dtype] * float(gr.abs().max()))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", KINDS)
def test_low_precision_error_within_twice_torchs_own(impl, dtype, kind):
    # torch's own result: the official formulation run in the dtype (mse_loss and autograd in bf16/fp16)
    params, sets = _lists(dtype, shapes=SHAPES[:-1] + [(4097,)])
    loss = regops.param_repulsion(params, sets[0], kind=kind, impl=impl)
    assert loss.dtype == torch.float32
    ref, gref = _ref(params, sets, kind)
    own_r = sum(nn.functional.mse_loss(a, p) for p, a in zip(params, sets[0])) / len(params) / 2 * 1
    own = R.loss(own_r, kind, 1.0)
    floor = 1e-5 * float(ref.detach().abs())
    assert abs(float(loss.detach()) - float(ref.detach())) <= max(2 * abs(float(own.detach()) - float(ref.detach())), floor)
    for g, go, gr in zip(_grads(loss, params), _grads(own, params), gref):
        assert g.dtype == dtype
        err, own_err = float((g.double() - gr).abs().max()), float((go.double() - gr).abs().max())
        ulp = float(gr.abs().max()) * (2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11)
        assert err <= max(2 * own_err, ulp), (err, own_err)


@pytest.mark.parametrize("impl", KERNEL_IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_float64(impl, kind):
    params, sets = _lists(torch.float64, shapes=[(3,), (), (2, 5)])
    fn = lambda *ps: regops.param_repulsion(list(ps), sets[0], kind=kind, gamma=0.5, impl=impl)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(params))


@pytest.mark.parametrize("impl", KERNEL_IMPLS)
def test_double_backward_raises(impl):
    params, sets = _lists(torch.float64, shapes=[(3,), (4,)])
    loss = regops.param_repulsion(params, sets[0], impl=impl)
    g = torch.autograd.grad(loss, params, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(sum(x.sum() for x in g), params)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("normalize", ["official", "mean"])
def test_anchor_identity_against_the_k_loop(dtype, normalize):
    params, sets = _lists(dtype, k=4, seed=3)
    anchors = regops.RepulsionAnchors(sets)
    assert anchors.k == 4 and len(anchors) == len(params)
    for impl in IMPLS:
        r = -regops.param_repulsion(params, anchors, kind="neg_l2", normalize=normalize, impl=impl)
        loop = R.official_distance([p.detach() for p in params], sets, normalize)
        torch.testing.assert_close(r.double(), loop, rtol=RTOL[dtype], atol=0)
    # the identity itself, in float64: Σ_k mean((φ_k − θ)²) = K·mean((θ − φ̄)²) + c_p
    means, consts = R.anchor_stats(sets)
    for i, p in enumerate(params):
        lhs = sum(torch.mean((s[i].double() - p.detach().double()) ** 2) for s in sets)
        rhs = 4 * torch.mean((p.detach().double() - means[i]) ** 2) + consts[i]
        torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=0)


def test_normalize_mean_drops_k_over_two():
    params, sets = _lists(torch.float64, k=3)
    a = regops.param_repulsion(params, sets, kind="neg_l2", normalize="official")
    b = regops.param_repulsion(params, sets, kind="neg_l2", normalize="mean")
    torch.testing.assert_close(a, b * 3 / 2, rtol=1e-12, atol=0)


# ---- the official formula, transcribed afresh (calc_difference_param_new and the three loss types of
# Unlearning/Unlearning_MNIST/train_different_losses.py): a loop over named parameters with an MSE per tensor ----

def _official(initial_model, adapted_models, loss_type, gamma):
    mse = nn.MSELoss()
    per_name = {}
    for adapted in adapted_models:
        for (name, w0), (name1, w1) in zip(initial_model.named_parameters(), adapted.named_parameters()):
            if name == name1:
                per_name[name] = per_name.get(name, 0) + mse(w1, w0)
    val = 0
    for name in per_name:
        val = val + per_name[name] / len(per_name) / 2 * len(adapted_models)
    val_factor = 1 / gamma
    if loss_type == "reci":
        return 1 / (val * val_factor)
    if loss_type == "exp":
        return 100 * torch.exp(-(val / val_factor))
    return -(val / val_factor)


def _model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Flatten(), nn.Linear(20, 7), nn.Linear(7, 1))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind,loss_type", [("inverse", "reci"), ("exp", "exp"), ("neg_l2", "l2")])
@pytest.mark.parametrize("gamma", [1.0, -0.1, 1.2])
def test_official_transcription(impl, kind, loss_type, gamma):
    model = _model(0).double()
    adapted = []
    for k in range(3):
        m = _model(0).double()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * (k + 1) * torch.randn_like(p))
        adapted.append(m.requires_grad_(False))
    want = _official(model, adapted, loss_type, gamma)
    want_g = torch.autograd.grad(want, list(model.parameters()))
    params = list(model.parameters())
    got = regops.param_repulsion(params, [list(m.parameters()) for m in adapted], kind=kind, gamma=gamma, impl=impl)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=0)
    for g, w in zip(torch.autograd.grad(got, params), want_g):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_params(impl):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 9, generator=g, dtype=torch.float64)
    views = [base.t().requires_grad_(), base[::2, 1::3].clone().requires_grad_()]
    views[1] = views[1].detach().t().requires_grad_()  # a transposed leaf: strides (1, 3)
    anchors = [torch.randn(v.shape, generator=g, dtype=torch.float64) for v in views]
    assert not views[0].is_contiguous() and not views[1].is_contiguous()
    loss = regops.param_repulsion(views, anchors, kind="exp", impl=impl)
    ref, gref = _ref(views, [anchors], "exp")
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    for gv, gr in zip(_grads(loss, views), gref):
        torch.testing.assert_close(gv, gr, rtol=1e-12, atol=0)


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "triton"])
def test_compile_fullgraph(impl):
    params, sets = _lists(torch.float32, shapes=[(5,), (3, 4), ()], k=2)
    anchors = regops.RepulsionAnchors(sets)

    def step(ps, a1):
        return (regops.param_repulsion(ps, anchors, kind="inverse", impl=impl)
                + regops.param_repulsion(ps, a1, kind="exp", gamma=0.5, impl=impl))

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(params, sets[0])
    want = step(params, sets[0])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for a, b in zip(_grads(got, params), _grads(want, params)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@given(sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=6), k=st.integers(1, 3),
       dtype=st.sampled_from([torch.float32, torch.float64]), kind=st.sampled_from(KINDS),
       gamma=st.floats(-2, 2).filter(lambda x: abs(x) > 1e-3), seed=st.integers(0, 2**16))
def test_fuzz(sizes, k, dtype, kind, gamma, seed):
    params, sets = _lists(dtype, shapes=[(n,) for n in sizes], k=k, seed=seed)
    ref, gref = _ref(params, sets, kind, gamma)
    for impl in IMPLS:
        loss = regops.param_repulsion(params, sets, kind=kind, gamma=gamma, impl=impl)
        torch.testing.assert_close(loss.double(), ref, rtol=RTOL[dtype] * 5, atol=1e-30)
        for g, gr in zip(_grads(loss, params), gref):
            torch.testing.assert_close(g.double(), gr, rtol=RTOL[dtype] * 5, atol=RTOL[dtype] * float(gr.abs().max()))


def test_official_defaults_documented():
    doc = regops.param_repulsion.__doc__
    assert "γ = 1" in doc and "γ = −0.1" in doc and "100·exp(−γR)" in doc and "·K/2" in doc


# ---- errors ----

@pytest.mark.parametrize("impl", IMPLS)
def test_errors(impl):
    params, sets = _lists(torch.float32, shapes=[(3,), (2, 2)])
    a = sets[0]
    call = lambda ps, an, **kw: regops.param_repulsion(ps, an, impl=impl, **kw)  # noqa: E731
    with pytest.raises(ValueError, match=r"^regops\.param_repulsion: anchors: expected 2 tensors per set"):
        call(params, a[:1])
    with pytest.raises(ValueError, match=r"^regops\.param_repulsion: params: expected at least one tensor"):
        call([], a)
    with pytest.raises(ValueError, match=r"^regops\.param_repulsion: anchors: expected at least one tensor"):
        call(params, [])
    with pytest.raises(ValueError, match=r"anchors\[1\]: expected shape \(2, 2\) \(as params\[1\]\), got shape \(4,\)"):
        call(params, [a[0], a[1].reshape(4)])
    with pytest.raises(TypeError, match=r"anchors\[0\]: expected dtype float32 \(as params\[0\]\), got dtype float64"):
        call(params, [a[0].double(), a[1].double()])
    with pytest.raises(TypeError, match=r"params\[1\]: expected dtype float32 \(as params\[0\]\), got dtype float64"):
        call([params[0], params[1].double()], a)
    with pytest.raises(TypeError, match=r"params\[0\]: expected dtype in"):
        call([torch.ones(3, dtype=torch.int64), params[1]], a)
    with pytest.raises(RuntimeError, match=r"anchors\[1\]: expected device cpu \(as the first anchor\), got device meta"):
        call(params, [a[0], a[1].to("meta")])
    with pytest.raises(RuntimeError, match=r"anchors\[0\]: expected device cpu \(as params\[0\]\), got device meta"):
        call(params, [t.to("meta") for t in a])
    with pytest.raises(ValueError, match=r"anchors\[1\]: expected 2 tensors \(as anchors\[0\]\), got 1 tensors"):
        call(params, [a, a[:1]])
    with pytest.raises(ValueError, match=r"kind: expected one of 'inverse', 'exp', 'neg_l2', got 'reci'"):
        call(params, a, kind="reci")
    with pytest.raises(ValueError, match=r"normalize: expected one of 'official', 'mean', got 'sum'"):
        call(params, a, normalize="sum")
    with pytest.raises(ValueError, match=r"gamma: expected a finite number, got nan"):
        call(params, a, gamma=float("nan"))
    with pytest.raises(ValueError, match=r"params\[0\]: expected a tensor with at least one element"):
        call([torch.ones(0), params[1]], [torch.ones(0), a[1]])
    with pytest.raises(ValueError, match=r"^regops\.param_repulsion: params: expected params that differ from the "
                                         r"anchors .*got R = 0"):
        call(params, [p.detach() for p in params], kind="inverse")
    # R = 0 is fine for the other kinds
    assert float(call(params, [p.detach() for p in params], kind="neg_l2").detach()) == 0.0


@pytest.mark.parametrize("impl", IMPLS)
def test_non_finite_inputs_raise(impl):
    params, sets = _lists(torch.float32, shapes=[(3,), (5,)])
    bad = params[1].detach().clone()
    bad[2] = float("nan")
    with pytest.raises(ValueError, match=r"^regops\.param_repulsion: params\[1\]: expected finite values, got nan "
                                         r"at index \(2,\)"):
        regops.param_repulsion([params[0], bad], sets[0], impl=impl)
    anc = [sets[0][0], sets[0][1].clone()]
    anc[1][4] = float("inf")
    with pytest.raises(ValueError, match=r"anchors\[1\]: expected finite values, got inf at index \(4,\)"):
        regops.param_repulsion(params, anc, impl=impl)
    with pytest.raises(ValueError, match=r"anchors\[1\]\[1\]: expected finite values, got inf"):
        regops.RepulsionAnchors([sets[0], anc])
    # finite values whose squared distance overflows float32
    big = [torch.full((3,), 3e38), torch.full((5,), -3e38)]
    if impl != "reference":
        with pytest.raises(ValueError, match=r"params\[0\]: expected finite values, got a squared distance to the "
                                             r"anchors that overflows"):
            regops.param_repulsion([torch.full((3,), -3e38), torch.zeros(5)], big[:1] + [torch.zeros(5)], impl=impl)


def test_exp_loss_official_scale():
    params, sets = _lists(torch.float64, shapes=[(4,)])
    r = -regops.param_repulsion(params, sets[0], kind="neg_l2")
    e = regops.param_repulsion(params, sets[0], kind="exp", gamma=2.0)
    torch.testing.assert_close(e, 100 * torch.exp(-2 * r), rtol=1e-12, atol=0)
    i = regops.param_repulsion(params, sets[0], kind="inverse", gamma=2.0)
    torch.testing.assert_close(i, 2 / r, rtol=1e-12, atol=0)
    assert math.isfinite(float(e))
