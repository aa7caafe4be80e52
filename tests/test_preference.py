"""The preference ops (RPO/cDPO, CREAM, RRPO, the KL penalty) and their chunked fused-linear engine: every kernel
impl against the materialized reference, the official formulas (TRL's rpo_alpha, alignment-handbook's RPO, scipy's
kendalltau), gradcheck, opcheck of the engine ops, torch.compile, edge shapes, bad input, and a memory property."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import regops
from regops.reference import logsoftmax as ref_rows
from regops.reference import preference as reference

from conftest import cpu_impls
from tolerances import assert_close, assert_lowp_rule

IMPLS = cpu_impls("fused_linear_preference_loss")


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _batch(B=2, T=5, H=8, V=11, dtype=torch.float64, seed=0, ignore_row=True):
    g = _g(seed)
    h = (torch.randn(2 * B, T, H, generator=g) / math.sqrt(H)).to(dtype).requires_grad_()
    w = torch.randn(V, H, generator=g).to(dtype).requires_grad_()
    y = torch.randint(0, V, (2 * B, T), generator=g)
    y[0, :2] = -100  # a prompt
    if ignore_row:
        y[-1, :] = -100  # a sequence without a single valid token
    rh = (torch.randn(2 * B, T, H, generator=g) / math.sqrt(H)).to(dtype)
    rw = torch.randn(V, H, generator=g).to(dtype)
    return h, w, y, rh, rw


def _grads(fn, h, w, seed=1):
    """Loss outputs and the gradients of the same random upstream weight through both sides."""
    h.grad = w.grad = None
    out = fn()
    up = torch.rand((), generator=_g(seed), dtype=torch.float64).item() + 0.5
    (out[0] if isinstance(out, tuple) else out).mul(up).sum().backward()
    return out, h.grad.clone(), (w.grad.clone() if w.grad is not None else None)


# ---- the row kernels ----

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kl_mode", [0, 1, 2])
@pytest.mark.parametrize("shape", [(1, 1), (7, 37), (3, 5003)])
def test_rows_match_reference(impl, dtype, kl_mode, shape):
    C, V = shape
    g = _g(C + V)
    z = (torch.randn(C, V, generator=g) * 3).to(dtype)
    q = (torch.randn(C, V, generator=g) * 2).to(dtype) if kl_mode else None
    y = torch.randint(0, V, (C,), generator=g)
    if C > 1:
        y[1] = -100
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    gl, gk = torch.randn(C, generator=g, dtype=acc), torch.randn(C, generator=g, dtype=acc)
    from regops import _registry
    stats = _registry.kernel("fused_linear", impl, "stats")(z, y, q, kl_mode, -100)
    zz = z.clone()
    stats2 = _registry.kernel("fused_linear", impl, "grad")(zz, y, q, gl, gk, kl_mode, -100)
    want = ref_rows.rows(z, y, q, kl_mode, -100, gl, gk)
    tol = torch.float32 if dtype == torch.bfloat16 else dtype
    for got, exp in zip(stats + stats2, want[:3] + want[:3]):
        assert_close(got, exp, tol, atol=1e-5 if dtype != torch.float64 else 1e-10)
    if dtype == torch.bfloat16:  # both round the same float32 gradient once
        torch.testing.assert_close(zz.float(), want[3].float(), atol=2e-2, rtol=1e-2)
    else:
        assert_close(zz, want[3])


@pytest.mark.parametrize("impl", IMPLS)
@given(C=st.integers(1, 6), V=st.integers(1, 300), kl_mode=st.sampled_from([0, 1, 2]), scale=st.floats(0.1, 30),
       seed=st.integers(0, 2**16))
def test_rows_fuzz(impl, C, V, kl_mode, scale, seed):
    g = _g(seed)
    z = torch.randn(C, V, generator=g, dtype=torch.float64) * scale
    q = torch.randn(C, V, generator=g, dtype=torch.float64) * scale if kl_mode else None
    y = torch.randint(-1, V, (C,), generator=g)
    gl, gk = torch.randn(C, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64)
    from regops import _registry
    zz = z.clone()
    got = _registry.kernel("fused_linear", impl, "grad")(zz, y, q, gl, gk, kl_mode, -1)
    want = ref_rows.rows(z, y, q, kl_mode, -1, gl, gk)
    for a, b in zip(got + (zz,), want):
        assert_close(a, b, torch.float64, atol=1e-9)
    assert torch.isfinite(zz).all()


# ---- fused_linear_preference_loss ----

CONFIGS = {
    "dpo": dict(),
    "rpo-token-mean": dict(sft_weight=0.7),
    "rpo-sum-ref-model": dict(ref="model", sft_weight=0.01 * 0.005, sft_reduction="sum"),
    "rpo-seq-mean-cdpo": dict(ref="logps", sft_weight=0.2, sft_reduction="seq_mean", label_smoothing="tensor"),
}


def _pref_kwargs(cfg, rh, rw, B, dtype):
    kw = dict(cfg)
    ref = kw.pop("ref", None)
    if ref == "model":
        kw.update(ref_hidden=rh, ref_weight=rw)
    elif ref == "logps":
        kw.update(ref_logps=torch.linspace(-9, -3, 2 * B, dtype=dtype))
    if kw.get("label_smoothing") == "tensor":
        kw["label_smoothing"] = torch.linspace(0.05, 0.4, B)
    return kw


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("chunk_size", [1, 3, None])
@pytest.mark.parametrize("frozen", [False, True])
def test_preference_matches_reference(impl, config, chunk_size, frozen):
    h, w, y, rh, rw = _batch()
    if frozen:
        w = w.detach()
    kw = _pref_kwargs(CONFIGS[config], rh, rw, 2, h.dtype)
    runs = {}
    for which in ("reference", impl):
        runs[which] = _grads(lambda: regops.fused_linear_preference_loss(h, w, y, impl=which, chunk_size=chunk_size,
                                                                          **kw), h, w)
    (out_r, gh_r, gw_r), (out_k, gh_k, gw_k) = runs["reference"], runs[impl]
    for a, b in zip(out_k, out_r):
        assert_close(a, b)
    assert_close(gh_k, gh_r)
    if not frozen:
        assert_close(gw_k, gw_r)
    assert torch.isfinite(gh_k).all() and gh_k[-1].abs().max() == 0  # the all-ignored row: no gradient


@pytest.mark.parametrize("impl", IMPLS)
def test_preference_float32_and_bfloat16(impl):
    h64, w64, y, rh, rw = _batch(B=2, T=9, H=32, V=300, seed=3)
    exact = _grads(lambda: regops.fused_linear_preference_loss(h64, w64, y, sft_weight=0.5, impl="reference"),
                   h64, w64)
    for dtype in (torch.float32, torch.bfloat16):
        h = h64.detach().to(dtype).requires_grad_()
        w = w64.detach().to(dtype).requires_grad_()
        kern = _grads(lambda: regops.fused_linear_preference_loss(h, w, y, sft_weight=0.5, impl=impl, chunk_size=7),
                      h, w)
        torch_lowp = _grads(lambda: regops.fused_linear_preference_loss(h, w, y, sft_weight=0.5, impl="reference"),
                            h, w)
        if dtype == torch.float32:
            assert_close(kern[0][0], exact[0][0].float())
            assert_close(kern[1], exact[1].float(), atol=1e-4)
            assert_close(kern[2], exact[2].float(), atol=1e-4)
        else:
            assert kern[2].dtype == torch.bfloat16
            for i in (1, 2):
                assert_lowp_rule(kern[i], torch_lowp[i], exact[i], floor=1e-3)
            assert_lowp_rule(kern[0][0], torch_lowp[0][0], exact[0][0], floor=1e-3)


def _trl_dpo_rpo(h, w, y, ref_logps, beta, rpo_alpha, label_smoothing):
    """TRL DPOTrainer (≤ 0.28) with rpo_alpha on the same tensors, written from its formula: the sigmoid loss with
    label smoothing on summed log-probs, plus rpo_alpha·(cross-entropy over the chosen tokens, token mean)."""
    B = y.shape[0] // 2
    logits = (h @ w.t()).float() if h.dtype != torch.float64 else h @ w.t()
    logp = logits.log_softmax(-1)
    mask = y != -100
    tok = logp.gather(-1, y.clamp(min=0)[..., None]).squeeze(-1) * mask
    seq = tok.sum(-1)
    z = (seq[:B] - ref_logps[:B]) - (seq[B:] - ref_logps[B:])
    losses = -F.logsigmoid(beta * z) * (1 - label_smoothing) - F.logsigmoid(-beta * z) * label_smoothing
    nll = F.cross_entropy(logits[:B].flatten(0, 1), y[:B].flatten(), ignore_index=-100)
    return (losses + rpo_alpha * nll).mean()


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
def test_matches_trl_rpo_alpha(impl):
    h, w, y, _, _ = _batch(ignore_row=False)
    ref_logps = torch.linspace(-20, -10, y.shape[0], dtype=h.dtype)
    want = _trl_dpo_rpo(h, w, y, ref_logps, 0.1, 1.0, 0.1)
    got, *_ = regops.fused_linear_preference_loss(h, w, y, ref_logps=ref_logps, beta=0.1, sft_weight=1.0,
                                                  label_smoothing=0.1, impl=impl)
    assert_close(got, want)


def test_matches_official_rpo_sum_and_preference_loss():
    # alignment-handbook rpo_trainer.py: losses -= policy_chosen_logps * beta * eta (summed log-probs), mean
    g = _g(5)
    pc, pr, rc, rr = (torch.randn(4, generator=g, dtype=torch.float64) - 30 for _ in range(4))
    beta, eta = 0.01, 0.005
    official = (-F.logsigmoid(beta * ((pc - rc) - (pr - rr))) - pc * beta * eta).mean()
    got, cr, rj = regops.preference_loss(pc, pr, rc, rr, beta=beta, sft_weight=beta * eta)
    assert_close(got, official)
    assert_close(cr, beta * (pc - rc))
    assert_close(rj, beta * (pr - rr))
    # the same through the fused op, with the summed NLL
    h, w, y, _, _ = _batch(ignore_row=False)
    ref_logps = torch.linspace(-20, -10, 4, dtype=h.dtype)
    fused, *_ = regops.fused_linear_preference_loss(h, w, y, ref_logps=ref_logps, beta=beta, sft_weight=beta * eta,
                                                    sft_reduction="sum")
    tok, _, _ = reference.token_logps(h, w, y, -100)
    seq = tok.sum(-1)
    direct, *_ = regops.preference_loss(seq[:2], seq[2:], ref_logps[:2], ref_logps[2:], beta=beta,
                                        sft_weight=beta * eta)
    assert_close(fused, direct)


def test_preference_loss_per_sample_smoothing_and_reductions():
    g = _g(6)
    pc, pr, rc, rr = (torch.randn(3, generator=g) for _ in range(4))
    eps = torch.tensor([0.0, 0.25, 1.0])
    per, *_ = regops.preference_loss(pc, pr, rc, rr, label_smoothing=eps, reduction="none")
    d = 0.1 * ((pc - rc) - (pr - rr))
    assert_close(per, -(1 - eps) * F.logsigmoid(d) - eps * F.logsigmoid(-d))
    total, *_ = regops.preference_loss(pc, pr, rc, rr, label_smoothing=eps, reduction="sum")
    assert_close(total, per.sum())


# ---- CREAM ----

def test_cream_consistency_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = _g(7)
    prev = torch.randint(0, 4, (6, 8), generator=g).double()  # ties
    cur = torch.randn(6, 8, generator=g, dtype=torch.float64)
    cur[1] = prev[1]
    cur[2, :4] = 1.0
    for method, fn in (("kendall", stats.kendalltau), ("spearman", stats.spearmanr)):
        got = regops.cream_consistency(prev, cur, method)
        want = torch.tensor([(fn(a.numpy(), b.numpy())[0] + 1) / 2 for a, b in zip(prev, cur)], dtype=torch.float64)
        assert_close(got, want)
    tied = regops.cream_consistency(torch.ones(2, 4), torch.randn(2, 4))
    assert torch.equal(tied, torch.full((2,), 0.5))  # scipy: NaN
    assert torch.equal(regops.cream_consistency(torch.randn(3, 1), torch.randn(3, 1)), torch.full((3,), 0.5))


def test_cream_loss_is_cdpo_with_one_minus_c():
    g = _g(8)
    prev, cur = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    C = regops.cream_consistency(prev, cur)
    pc, pr, rc, rr = (torch.randn(4, generator=g) for _ in range(4))
    loss, *_ = regops.preference_loss(pc, pr, rc, rr, label_smoothing=1 - C)
    d = 0.1 * ((pc - rc) - (pr - rr))
    assert_close(loss, (C * -F.logsigmoid(d) + (1 - C) * -F.logsigmoid(-d)).mean())


# ---- RRPO and the KL penalty ----

def _rrpo_official(h, w, y, rh, rw, seg, beta, alpha):
    """pritamqu/RRPO llava/losses.py, from its formulas: segment sums of δ, KL summed over chosen tokens."""
    B = y.shape[0] // 2
    lp = (h @ w.t()).log_softmax(-1)
    lq = (rh @ rw.t()).log_softmax(-1)
    mask = y != -100
    yy = y.clamp(min=0)[..., None]
    delta = (lp.gather(-1, yy) - lq.gather(-1, yy)).squeeze(-1) * mask
    ids = seg.unique()
    ids = ids[ids != 0]
    margins = torch.stack([(delta * (seg == k)).sum(-1) for k in ids], -1) if len(ids) else delta[:, :0]
    logit = (margins[:B] - margins[B:]).sum(-1)
    kl = ((lq.exp() * (lq - lp)).sum(-1) * mask)[:B].sum(-1)
    return (-F.logsigmoid(beta * logit) + alpha * kl).mean()


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
@pytest.mark.parametrize("chunk_size", [2, None])
def test_rrpo_matches_official(impl, chunk_size):
    h, w, y, rh, rw = _batch(T=7)
    seg = torch.randint(0, 3, y.shape, generator=_g(9))
    want = _rrpo_official(h, w, y, rh, rw, seg, 0.1, 0.01)
    hr, wr = h.detach().requires_grad_(), w.detach().requires_grad_()
    want.backward()
    got = _grads(lambda: regops.rrpo_loss(hr, wr, y, rh, rw, seg, impl=impl, chunk_size=chunk_size), hr, wr, seed=0)
    up = torch.rand((), generator=_g(0), dtype=torch.float64).item() + 0.5
    assert_close(got[0][0], want)
    assert_close(got[1], h.grad * up)
    assert_close(got[2], w.grad * up)


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("head", ["logits", "linear"])
def test_kl_to_reference(impl, direction, reduction, head):
    h, w, y, rh, rw = _batch()
    mask = y != -100
    if head == "logits":
        x = (h @ w.t()).detach().requires_grad_()
        kw = dict()
        ref = rh @ rw.t()
    else:
        x, kw, ref = h, dict(weight=w, ref_weight=rw), rh
    lp = (x if head == "logits" else x @ w.t()).log_softmax(-1)
    lq = (ref if head == "logits" else ref @ rw.t()).log_softmax(-1)
    tok = (lq.exp() * (lq - lp)).sum(-1) if direction == "forward" else (lp.exp() * (lp - lq)).sum(-1)
    tok = tok * mask
    want = tok.sum() / mask.sum() if reduction == "mean" else tok.sum() if reduction == "sum" else tok
    got = regops.kl_to_reference(x, ref, mask, direction=direction, reduction=reduction, impl=impl, chunk_size=3, **kw)
    assert_close(got, want)
    gx_got, = torch.autograd.grad(got.sum() * 1.5, x)
    gx_want, = torch.autograd.grad(want.sum() * 1.5, x)
    assert_close(gx_got, gx_want)


# ---- gradcheck, compile, opcheck of the engine ops ----

@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(impl):
    h, w, y, rh, rw = _batch(B=1, T=3, H=3, V=5)
    seg = torch.tensor([[1, 0, 2], [1, 1, 0]])
    ls = torch.tensor([0.2], dtype=torch.float64)
    torch.autograd.gradcheck(lambda a, b: regops.fused_linear_preference_loss(
        a, b, y, ref_hidden=rh, ref_weight=rw, sft_weight=0.3, label_smoothing=ls, impl=impl, chunk_size=2)[0], (h, w))
    torch.autograd.gradcheck(lambda a, b: regops.rrpo_loss(a, b, y, rh, rw, seg, alpha=0.5, impl=impl,
                                                           chunk_size=2)[0], (h, w))
    torch.autograd.gradcheck(lambda a, b: regops.kl_to_reference(a, rh, y != -100, weight=b, ref_weight=rw,
                                                                 direction="reverse", reduction="none", impl=impl,
                                                                 chunk_size=2), (h, w))


@pytest.mark.parametrize("impl", IMPLS)
def test_torch_compile_fullgraph(impl):
    h, w, y, rh, rw = _batch(dtype=torch.float32)

    def step(a, b):
        loss, cr, rj = regops.fused_linear_preference_loss(a, b, y, ref_hidden=rh, ref_weight=rw, sft_weight=0.5,
                                                           impl=impl, chunk_size=4)
        kl = regops.kl_to_reference(a, rh, weight=b, ref_weight=rw, impl=impl)
        return loss + 0.1 * kl

    eager = _grads(lambda: step(h, w), h, w)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = _grads(lambda: compiled(h, w), h, w)
    for a, b in zip(got, eager):
        assert_close(a, b)


def _engine_args(grad=True):
    h, w, y, rh, rw = _batch(dtype=torch.float64)
    x = h.detach().reshape(-1, h.shape[-1]).requires_grad_(grad)
    return x, w.detach().requires_grad_(grad), y.reshape(-1), rh.reshape(-1, rh.shape[-1]), rw


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kl_mode,save", [(0, False), (0, True), (1, False), (2, False)])
def test_opcheck_engine_ops(impl, kl_mode, save):
    x, w, y, rx, rw = _engine_args()
    ref = (rx, rw) if kl_mode else (None, None)
    torch.library.opcheck(torch.ops.regops.fused_linear_logprobs, (x, w, y, *ref, kl_mode, -100, 3, impl, save))
    n = x.shape[0]
    coef = torch.linspace(0, 1, n, dtype=torch.float64)
    torch.library.opcheck(torch.ops.regops.fused_linear_linear_loss,
                          (x, w, y, *ref, coef, coef.flip(0), kl_mode, -100, 3, impl, True, True))
    torch.library.opcheck(torch.ops.regops.fused_linear_logprobs_backward,
                          (coef, coef, x.detach(), w.detach(), y, *ref, kl_mode, -100, 3, impl, True, True))


# ---- edge shapes and the memory property ----

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,T,V", [(1, 1, 1), (1, 1, 7), (3, 2, 1)])
def test_edge_shapes(impl, B, T, V):
    h, w, y, rh, rw = _batch(B=B, T=T, V=V, ignore_row=False)
    out = {which: _grads(lambda: regops.fused_linear_preference_loss(h, w, y, sft_weight=0.5, impl=which,
                                                                      chunk_size=1), h, w)
           for which in ("reference", impl)}
    for a, b in zip(out[impl], out["reference"]):
        assert_close(a[0] if isinstance(a, tuple) else a, b[0] if isinstance(b, tuple) else b)


@pytest.mark.parametrize("impl", IMPLS)
def test_all_ignored_batch_is_finite(impl):
    h, w, y, _, _ = _batch()
    y = torch.full_like(y, -100)
    for red in ("token_mean", "seq_mean", "sum"):
        (loss, cr, rj), gh, gw = _grads(lambda: regops.fused_linear_preference_loss(
            h, w, y, sft_weight=1.0, sft_reduction=red, impl=impl), h, w)
        assert loss.item() == pytest.approx(math.log(2))
        assert torch.equal(gh, torch.zeros_like(gh)) and torch.equal(gw, torch.zeros_like(gw))
    kl = regops.kl_to_reference(h, h.detach(), torch.zeros(y.shape, dtype=torch.bool), weight=w, ref_weight=w,
                                impl=impl)
    assert kl.item() == 0.0


class _LargestAlloc(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("impl", IMPLS)
def test_logits_never_materialized(impl):
    """No tensor of the call (forward and backward) is larger than a chunk of logits or the weight gradient."""
    B, T, H, V, chunk = 2, 64, 16, 2000, 32
    h, w, y, rh, rw = _batch(B=B, T=T, H=H, V=V, dtype=torch.float32)
    with _LargestAlloc() as mode:
        loss, *_ = regops.fused_linear_preference_loss(h, w, y, ref_hidden=rh, ref_weight=rw, sft_weight=0.5,
                                                       impl=impl, chunk_size=chunk)
        loss.backward()
    assert mode.largest <= max(chunk * V, V * H)
    assert 2 * B * T * V > 8 * mode.largest


# ---- bad input ----

BAD = {
    "odd rows": (lambda h, w, y: (h[:3], w, y[:3]), ValueError, "targets: expected an even"),
    "target out of range": (lambda h, w, y: (h, w, y.index_fill(1, torch.tensor([2]), 11)), ValueError,
                            "targets: expected class indices in [0, 11)"),
    "hidden/weight H mismatch": (lambda h, w, y: (h, w[:, :5], y), ValueError, "weight: expected shape (V, 8)"),
    "weight dtype": (lambda h, w, y: (h, w.float(), y), TypeError, "weight: expected dtype float64"),
    "targets float": (lambda h, w, y: (h, w, y.double()), TypeError, "targets: expected dtype int64"),
    "non-finite hidden": (lambda h, w, y: (h.detach().index_fill(1, torch.tensor([3]), float("nan")), w, y),
                          ValueError, "hidden/weight: expected finite values"),
}


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(impl, case):
    make, kind, msg = BAD[case]
    if impl == "reference" and case == "non-finite hidden":
        pytest.skip("the materialized reference returns what torch computes")
    h, w, y, _, _ = _batch()
    with pytest.raises(kind, match="regops.fused_linear_preference_loss: " + msg.replace("(", r"\(").replace(
            ")", r"\)").replace("[", r"\[")):
        regops.fused_linear_preference_loss(*make(h, w, y), impl=impl)


def test_bad_reference_and_rewards():
    h, w, y, rh, rw = _batch()
    with pytest.raises(ValueError, match="ref_logps: expected shape \\(4,\\)"):
        regops.fused_linear_preference_loss(h, w, y, ref_logps=torch.zeros(3, dtype=h.dtype))
    with pytest.raises(ValueError, match="ref_hidden: expected leading shape"):
        regops.fused_linear_preference_loss(h, w, y, ref_hidden=rh[:, :2], ref_weight=rw)
    with pytest.raises(ValueError, match="ref_weight: expected 11 vocabulary rows"):
        regops.fused_linear_preference_loss(h, w, y, ref_hidden=rh, ref_weight=rw[:5])
    with pytest.raises(ValueError, match="policy_rejected_logps: expected shape \\(3,\\)"):
        regops.preference_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="cur_rewards: expected shape \\(2, 4\\)"):
        regops.cream_consistency(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="label_smoothing: expected a number in \\[0, 1\\]"):
        regops.preference_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3), label_smoothing=1.5)
    with pytest.raises(ValueError, match="preference_loss: policy_chosen_logps: expected finite values"):
        regops.preference_loss(torch.tensor([float("inf")]), torch.zeros(1), torch.zeros(1), torch.zeros(1))
    with pytest.raises(RuntimeError, match="impl: expected an impl that can run here"):
        regops.preference_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), impl="cpu")
