"""Decoupled mixup and ELR (the class_rows engine): every kernel impl against the reference per row (loss and the
gradient of the same random upstream weights) across dtypes and odd shapes, transcriptions of the official code
(openmixup's DM head, ELR's elr_loss) on fresh inputs, gradcheck, torch.compile, hypothesis, the module's buffer,
and bad input."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import regops
from regops.ops import decoupled_mixup as DM
from regops.reference import class_rows as reference

from conftest import cpu_impls, free_port, run_simd_and_portable
from tolerances import assert_close, assert_lowp_rule

IMPLS = cpu_impls("decoupled_mixup_loss")
ALL = ["reference"] + IMPLS
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
SHAPES = [(1, 1), (1, 2), (2, 2), (5, 3), (7, 1001), (3, 4099)]


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _schema(impl, role):
    return getattr(torch.ops.regops, {"cpu": role, "triton": role + "_triton"}[impl])


def _mixup_args(B, C, dtype, seed=0):
    g = _g(seed)
    z = (torch.randn(B, C, generator=g) * 3).to(dtype)
    ab = torch.randint(0, C, (B, 2), generator=g)
    if B > 1:
        ab[1, 1] = ab[1, 0]  # a same-class pair
    co = torch.rand(B, 4, generator=g, dtype=torch.float64).to(regops._constants.acc_dtype(dtype))
    return z, ab, co


def _elr_args(B, C, dtype, seed=0):
    g = _g(seed)
    z = (torch.randn(B, C, generator=g) * 3).to(dtype)
    if C > 2:
        z[0, 0] = 40.0  # a clamped probability (p > 1 − 1e-4) and clamped small ones
    y = torch.randint(0, C, (B,), generator=g)
    t = torch.rand(B, C, generator=g, dtype=torch.float64)
    t = (t / t.sum(1, keepdim=True) * 0.9).to(regops._constants.acc_dtype(dtype))
    return z, y, t


# ---- the row kernels against the reference ----

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_mixup_rows_match_reference(impl, dtype, shape):
    z, ab, co = _mixup_args(*shape, dtype, seed=shape[1])
    loss, grad = _schema(impl, "mixup_rows")(z, ab, co, True)
    up = torch.rand(shape[0], generator=_g(9), dtype=torch.float64)
    z64 = z.double().requires_grad_()
    exact = reference.mixup_rows(z64, ab, co.double())
    (g_exact,) = torch.autograd.grad(exact, z64, up)
    g_kernel = torch.ops.regops.row_grad_scale(up.to(loss.dtype), grad, z)
    assert grad.dtype == loss.dtype == co.dtype
    if dtype == torch.bfloat16:
        zb = z.clone().requires_grad_()
        lowp = _official_soft_rows_lowp(zb, ab, co)
        (g_lowp,) = torch.autograd.grad(lowp, zb, up.to(dtype))
        assert_lowp_rule(loss, lowp.detach(), exact.detach(), floor=1e-5)
        assert_lowp_rule(g_kernel, g_lowp, g_exact, floor=1e-5)
    else:
        assert_close(loss, exact.detach(), dtype)
        assert_close(g_kernel, g_exact, dtype)
    # loss only: the same values, an empty gradient
    loss2, grad2 = _schema(impl, "mixup_rows")(z, ab, co, False)
    assert grad2.shape == (0, shape[1]) and torch.equal(loss2, loss)


def _official_soft_rows_lowp(z, ab, co):
    """The same row formula with PyTorch's own ops in z's dtype (the low-precision yardstick)."""
    logp = torch.log_softmax(z, 1)
    C = z.shape[1]
    cols = torch.arange(C)[None]
    a, b = ab[:, :1], ab[:, 1:]
    rest = (cols != a) & (cols != b)
    big = torch.finfo(z.dtype).min
    la = torch.logsumexp(torch.where(rest | (cols == a), z, big), 1)
    lb = torch.logsumexp(torch.where(rest | (cols == b), z, big), 1)
    c = co.to(z.dtype)
    return (-(c[:, 0] * logp.gather(1, a)[:, 0] + c[:, 1] * logp.gather(1, b)[:, 0])
            + c[:, 2] * (la - z.gather(1, a)[:, 0]) + c[:, 3] * (lb - z.gather(1, b)[:, 0]))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_elr_rows_match_reference(impl, dtype, shape):
    z, y, t = _elr_args(*shape, dtype, seed=shape[1])
    loss, grad, new_rows = _schema(impl, "elr_rows")(z, y, t, 0.7, 3.0, True)
    up = torch.rand(shape[0], generator=_g(9), dtype=torch.float64)
    z64 = z.double().requires_grad_()
    exact, exact_rows = reference.elr_rows(z64, y, t.double(), 0.7, 3.0)
    (g_exact,) = torch.autograd.grad(exact, z64, up)
    g_kernel = torch.ops.regops.row_grad_scale(up.to(loss.dtype), grad, z)
    assert new_rows.dtype == grad.dtype == t.dtype
    if dtype == torch.bfloat16:
        zb = z.clone().requires_grad_()
        lowp, lowp_rows = _elr_lowp(zb, y, t)
        (g_lowp,) = torch.autograd.grad(lowp, zb, up.to(dtype))
        assert_lowp_rule(loss, lowp.detach(), exact.detach(), floor=1e-5)
        assert_lowp_rule(g_kernel, g_lowp, g_exact, floor=1e-5)
        assert_lowp_rule(new_rows, lowp_rows, exact_rows, floor=1e-6)
    else:
        assert_close(loss, exact.detach(), dtype)
        assert_close(g_kernel, g_exact, dtype)
        assert_close(new_rows, exact_rows, dtype)
    loss2, grad2, rows2 = _schema(impl, "elr_rows")(z, y, t, 0.7, 3.0, False)
    assert grad2.shape == (0, shape[1]) and torch.equal(loss2, loss) and torch.equal(rows2, new_rows)


@pytest.mark.skipif("cpu" not in cpu_impls("elr_loss"), reason="no compiled CPU kernels")
def test_elr_rows_portable_path_matches_avx2():
    """The float ELR rows have an AVX2 path picked at run time; REGOPS_CPU_NO_SIMD=1 (a subprocess) runs the
    portable loop instead. Both against the float64 reference, and against each other."""
    import textwrap
    code = textwrap.dedent("""
        import sys, torch, regops
        from regops.reference import class_rows as R
        g = torch.Generator().manual_seed(0)
        out = []
        for C in (1, 2, 7, 8, 9, 100, 1001):
            z = torch.randn(5, C, generator=g) * 3
            if C > 2:
                z[0, 0] = 40.0
            y = torch.randint(0, C, (5,), generator=g)
            t = torch.rand(5, C, generator=g)
            t = t / t.sum(1, keepdim=True) * 0.9
            loss, grad, rows = torch.ops.regops.elr_rows(z, y, t, 0.7, 3.0, True)
            z64 = z.double().requires_grad_()
            exact, exact_rows = R.elr_rows(z64, y, t.double(), 0.7, 3.0)
            (g64,) = torch.autograd.grad(exact.sum(), z64)
            for a, b in ((loss, exact), (grad, g64), (rows, exact_rows)):
                assert torch.allclose(a.double(), b.detach(), rtol=1e-4, atol=1e-5), (C, (a.double() - b).abs().max())
            out += [loss, grad.flatten(), rows.flatten()]
        torch.save(torch.cat(out), sys.argv[1])
    """)
    simd, portable = run_simd_and_portable(code)
    torch.testing.assert_close(simd, portable, rtol=1e-5, atol=1e-6)


def _elr_lowp(z, y, t):
    """ELR's official formula with PyTorch's own ops in z's dtype."""
    p = torch.softmax(z, 1).clamp(1e-4, 1 - 1e-4)
    sg = p.detach()
    rows = 0.7 * t.to(z.dtype) + 0.3 * sg / sg.sum(1, keepdim=True)
    return F.cross_entropy(z, y, reduction="none") + 3.0 * torch.log(1 - (rows * p).sum(1)), rows


def test_mixup_dominant_class_keeps_the_rest():
    # z_a far above the rest: the rest's exponentials must not underflow against z_a (the kernels shift by the
    # rest's own max), so the b term still sees its true denominator.
    z = torch.zeros(2, 6, dtype=torch.float32)
    z[:, 0] = 200.0
    ab = torch.tensor([[0, 1], [0, 2]])
    co = torch.tensor([[0.7, 0.3, 0.07, 0.03]] * 2)
    exact = reference.mixup_rows(z.double(), ab, co.double())
    for impl in IMPLS:
        loss, _ = _schema(impl, "mixup_rows")(z, ab, co, True)
        assert torch.isfinite(loss).all()
        assert_close(loss, exact.float(), torch.float32)


# ---- the official code, transcribed on fresh inputs ----

def official_dm_loss(cls_score, y_a, y_b, lam, eta, mode="both", lam_scale="pow", lam_idx=1.0, lam_thr=1.0):
    """openmixup's mixup head with the decoupled term, loop by loop: soft_mix_cross_entropy (avg_factor N) and
    the η-weighted decoupled term on the rows with as many hot classes as the most mixed one."""
    N, C = cls_score.shape
    label = lam * F.one_hot(y_a, C).float() + (1 - lam) * F.one_hot(y_b, C).float()  # float32, as officially
    # the loss itself in float64 (the official label's float32 rounding of λ is not a semantic)
    label64 = lam * F.one_hot(y_a, C).double() + (1 - lam) * F.one_hot(y_b, C).double()
    loss = (-label64 * F.log_softmax(cls_score, dim=-1)).sum() / N
    if mode == "both":
        w = [lam, 1 - lam]
    elif mode == "less":
        w = [lam, 0] if lam < 0.5 else [0, 1 - lam]
    else:
        w = [lam, 0] if lam >= 0.5 else [0, 1 - lam]
    eta_w = []
    for x in w:
        if x == 0:
            eta_w.append(0.0)
        elif lam_scale == "pow" and x < lam_thr:
            eta_w.append(eta * lam_thr ** (-abs(lam_idx)) * x ** abs(lam_idx))
        else:
            eta_w.append(eta)
    hot = label > 1e-3
    counts = hot.sum(1)
    k = int(counts.max())
    if k <= 1:
        return loss
    first = int((counts == k).nonzero()[0])
    lam_k = label[first][hot[first]]  # class-index order
    if len(set(lam_k.tolist())) != k:
        return loss
    for r in range(N):
        if int(counts[r]) != k:
            continue
        rest = ~hot[r]
        for i in range(k):
            c = int((label[r] == lam_k[i]).nonzero()[0])
            keep = rest.clone()
            keep[c] = True
            term = -(cls_score[r, c] - torch.logsumexp(cls_score[r][keep], 0))
            loss = loss + eta_w[i] * term / N
    return loss


DM_CASES = [
    dict(lam=0.3), dict(lam=0.8, mode="less"), dict(lam=0.2, mode="less"), dict(lam=0.8, mode="more"),
    dict(lam=0.5), dict(lam=0.0005), dict(lam=0.37, lam_scale="none", eta=0.5), dict(lam=0.37, lam_idx=2.0,
    lam_thr=0.6, eta=1.0), dict(lam=1.0), dict(lam=0.0),
]


@pytest.mark.parametrize("impl", ALL)
@pytest.mark.parametrize("case", range(len(DM_CASES)))
@pytest.mark.parametrize("first_swapped", [False, True])
def test_decoupled_mixup_matches_official(impl, case, first_swapped):
    kw = {"eta": 0.1, **DM_CASES[case]}
    lam = kw.pop("lam")
    g = _g(case)
    N, C = 9, 13
    z = (torch.randn(N, C, generator=g, dtype=torch.float64) * 2).requires_grad_()
    ya = torch.randint(0, C, (N,), generator=g)
    yb = torch.randint(0, C, (N,), generator=g)
    yb[3] = ya[3]  # a same-class pair: plain soft CE
    ya[0], yb[0] = (7, 2) if first_swapped else (2, 7)
    want = official_dm_loss(z, ya, yb, lam, **kw)
    got = regops.decoupled_mixup_loss(z, ya, yb, lam, impl=impl, **kw)
    (gw,) = torch.autograd.grad(want, z)
    (gg,) = torch.autograd.grad(got, z)
    assert_close(got, want.detach(), torch.float64)
    assert_close(gg, gw, torch.float64)


def test_decoupled_mixup_pairing_per_row():
    # official_pairing=False: η(λ) with a, η(1 − λ) with b in every row with a != b (and λ = 0.5 is kept)
    g = _g(3)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64)
    ya, yb = torch.tensor([3, 0, 1, 2, 4, 0]), torch.tensor([1, 2, 1, 0, 3, 4])
    for lam in (0.3, 0.5):
        got = regops.decoupled_mixup_loss(z, ya, yb, lam, official_pairing=False, impl="reference")
        ea, eb = 0.1 * lam, 0.1 * (1 - lam)
        logp = z.log_softmax(1)
        want = -(lam * logp[range(6), ya] + (1 - lam) * logp[range(6), yb])
        for r in range(6):
            if ya[r] == yb[r]:
                continue
            rest = [k for k in range(5) if k not in (ya[r], yb[r])]
            for c, e in ((int(ya[r]), ea), (int(yb[r]), eb)):
                want[r] += e * (torch.logsumexp(z[r, rest + [c]], 0) - z[r, c])
        assert_close(got, want.sum() / 6, torch.float64)
        for impl in IMPLS:
            assert_close(regops.decoupled_mixup_loss(z, ya, yb, lam, official_pairing=False, impl=impl), got)


class OfficialELR:
    """shengliu66/ELR's elr_loss, transcribed: the buffer row update before use, then CE + λ·mean log(1 − ⟨t, p⟩)."""

    def __init__(self, num_examp, num_classes, beta, lam):
        self.target = torch.zeros(num_examp, num_classes)
        self.beta, self.lam = beta, lam

    def __call__(self, index, output, label):
        y_pred = F.softmax(output, dim=1)
        y_pred = torch.clamp(y_pred, 1e-4, 1.0 - 1e-4)
        y_pred_ = y_pred.data.detach()
        self.target[index] = (self.beta * self.target[index]
                              + (1 - self.beta) * (y_pred_ / y_pred_.sum(dim=1, keepdim=True))).float()
        ce_loss = F.cross_entropy(output, label)
        elr_reg = ((1 - (self.target[index] * y_pred).sum(dim=1)).log()).mean()
        return ce_loss + self.lam * elr_reg


@pytest.mark.parametrize("impl", ALL)
@pytest.mark.parametrize("beta,lam,C", [(0.7, 3.0, 10), (0.9, 7.0, 100), (0.9, 1.0, 2), (0.0, 3.0, 1)])
def test_elr_matches_official_over_steps(impl, beta, lam, C):
    g = _g(C)
    N, B = 20, 6
    official = OfficialELR(N, C, beta, lam)
    module = regops.nn.ELRLoss(N, C, beta, lam, impl=impl)
    for step in range(4):  # samples seen again in later steps read their updated rows
        idx = torch.randperm(N, generator=g)[:B]
        z = (torch.randn(B, C, generator=g, dtype=torch.float64) * 3).requires_grad_()
        y = torch.randint(0, C, (B,), generator=g)
        want = official(idx, z, y)
        got = module(z, y, idx)
        (gw,) = torch.autograd.grad(want, z)
        (gg,) = torch.autograd.grad(got, z)
        assert_close(got, want.detach(), torch.float64, atol=1e-7, rtol=1e-6)  # the official buffer is float32
        assert_close(gg, gw, torch.float64, atol=1e-7, rtol=1e-6)
        assert_close(module.target, official.target, torch.float32)


def test_elr_module_state_dict_round_trip():
    m = regops.nn.ELRLoss(8, 5)
    z, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
    m(z, y, torch.tensor([0, 3, 5, 7]))
    m2 = regops.nn.ELRLoss(8, 5)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.target, m.target) and m.target.abs().sum() > 0
    assert torch.equal(m(z, y, torch.tensor([1, 2, 3, 4])), m2(z, y, torch.tensor([1, 2, 3, 4])))
    assert "target" in m.state_dict() and m.target.dtype == torch.float32


# ---- gradcheck, compile, hypothesis ----

@pytest.mark.parametrize("impl", ALL)
def test_gradcheck(impl):
    g = _g(0)
    z = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ya, yb = torch.tensor([0, 1, 2, 5]), torch.tensor([3, 1, 4, 0])
    torch.autograd.gradcheck(lambda x: regops.decoupled_mixup_loss(x, ya, yb, 0.3, eta=0.5, impl=impl), (z,))
    buf = torch.rand(10, 6, generator=g, dtype=torch.float64) / 6
    idx = torch.tensor([1, 4, 7, 9])
    with torch.no_grad():
        z[0, 0] = 12.0  # clamped entries in row 0
    # The new buffer rows are a stop-gradient of z: finite differences must hold them fixed. The kernel's gradient
    # at z against central differences of the loss with the rows of that step frozen.
    rows, new_rows = regops.ops.elr.elr_step(z, yb, idx, buf, 0.7, 3.0, impl)
    up = torch.rand(4, generator=g, dtype=torch.float64)
    (got,) = torch.autograd.grad(rows, z, up)

    def frozen(x):
        p = torch.softmax(x, 1).clamp(1e-4, 1 - 1e-4)
        return ((torch.logsumexp(x, 1) - x.gather(1, yb[:, None])[:, 0]
                 + 3.0 * torch.log(1 - (new_rows * p).sum(1))) * up).sum()

    h, num = 1e-6, torch.zeros_like(z)
    with torch.no_grad():
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                e = torch.zeros_like(z)
                e[i, j] = h
                num[i, j] = (frozen(z + e) - frozen(z - e)) / (2 * h)
    assert_close(got, num, torch.float64, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_double_backward_raises_on_kernels(impl):
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = regops.decoupled_mixup_loss(z, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), 0.3, impl=impl)
    (g,) = torch.autograd.grad(loss, z, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()
    # the reference is differentiable twice
    loss = regops.decoupled_mixup_loss(z, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), 0.3, impl="reference")
    (g,) = torch.autograd.grad(loss, z, create_graph=True)
    g.pow(2).sum().backward()


@pytest.mark.parametrize("impl", ALL)
def test_torch_compile_fullgraph(impl):
    g = _g(1)
    ya, yb = torch.randint(0, 11, (6,), generator=g), torch.randint(0, 11, (6,), generator=g)
    idx = torch.tensor([0, 2, 4, 6, 8, 10])

    def step(z, buf):
        return (regops.decoupled_mixup_loss(z, ya, yb, 0.3, impl=impl)
                + regops.elr_loss(z, ya, idx, buf, impl=impl))

    z = torch.randn(6, 11, generator=g, requires_grad=True)
    buf_eager, buf_comp = torch.zeros(12, 11), torch.zeros(12, 11)
    want = step(z, buf_eager)
    (gw,) = torch.autograd.grad(want, z)
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(z, buf_comp)
    (gg,) = torch.autograd.grad(got, z)
    assert_close(got, want.detach(), torch.float32)
    assert_close(gg, gw, torch.float32)
    assert_close(buf_comp, buf_eager, torch.float32)


@given(B=st.integers(1, 6), C=st.integers(1, 40), lam=st.floats(0.0, 1.0), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_hypothesis_kernels_match_reference(B, C, lam, seed, dtype):
    g = _g(seed)
    z = (torch.randn(B, C, generator=g) * 4).to(dtype).requires_grad_()
    ya, yb = torch.randint(0, C, (B,), generator=g), torch.randint(0, C, (B,), generator=g)
    idx = torch.randperm(3 * B, generator=g)[:B]
    buf = torch.rand(3 * B, C, generator=g) / C
    want = regops.decoupled_mixup_loss(z, ya, yb, lam, eta=0.3, impl="reference")
    (gw,) = torch.autograd.grad(want, z)
    want_e = regops.ops.elr.elr_step(z, ya, idx, buf, 0.7, 3.0, "reference")[0].sum()
    (gwe,) = torch.autograd.grad(want_e, z)
    for impl in IMPLS:
        got = regops.decoupled_mixup_loss(z, ya, yb, lam, eta=0.3, impl=impl)
        (gg,) = torch.autograd.grad(got, z)
        assert_close(got, want.detach(), dtype)
        assert_close(gg, gw, dtype)
        got_e = regops.ops.elr.elr_step(z, ya, idx, buf, 0.7, 3.0, impl)[0].sum()
        (gge,) = torch.autograd.grad(got_e, z)
        assert_close(got_e, want_e.detach(), dtype)
        assert_close(gge, gwe, dtype)


@pytest.mark.parametrize("impl", ALL)
def test_non_contiguous_logits_and_int32_targets(impl):
    z = torch.randn(5, 9, dtype=torch.float64).t()  # a column-major view
    assert not z.is_contiguous()
    ya, yb = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3]), torch.tensor([4, 3, 2, 1, 0, 1, 2, 3, 4])
    want = regops.decoupled_mixup_loss(z.contiguous(), ya, yb, 0.4, impl="reference")
    assert_close(regops.decoupled_mixup_loss(z, ya.int(), yb.int(), 0.4, impl=impl), want)
    buf1, buf2 = torch.zeros(9, 5), torch.zeros(9, 5)
    want = regops.elr_loss(z.contiguous(), ya, torch.arange(9), buf1, impl="reference")
    assert_close(regops.elr_loss(z, ya.int(), torch.arange(9).int(), buf2, impl=impl), want)
    assert_close(buf2, buf1, torch.float32)


# ---- bad input ----

def _z(B=4, C=5):
    return torch.randn(B, C)


BAD_DM = [
    (lambda: (_z(), torch.tensor([0, 1, 2, 5]), torch.tensor([0, 1, 2, 3]), 0.3), ValueError,
     r"target_a: expected class indices in \[0, 5\), got 5"),
    (lambda: (_z(), torch.tensor([0, 1, 2, 3]), torch.tensor([0, -1, 2, 3]), 0.3), ValueError, "target_b"),
    (lambda: (_z(), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]), 1.5), ValueError,
     r"lam: expected a mixing ratio in \[0, 1\]"),
    (lambda: (_z(), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]), -0.1), ValueError, "lam"),
    (lambda: (_z(), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2, 3]), 0.3), ValueError, r"target_a: expected shape"),
    (lambda: (_z(), torch.tensor([0.0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]), 0.3), TypeError, "target_a"),
    (lambda: (_z().to("meta"), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]), 0.3), RuntimeError,
     "target_a: expected device meta"),
    (lambda: (torch.tensor([[0.0, float("nan")]]), torch.tensor([0]), torch.tensor([1]), 0.3), ValueError,
     "logits: expected finite values, got nan"),
    (lambda: (torch.randn(0, 5), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0.3),
     ValueError, "at least one row"),
    (lambda: (torch.randn(4), torch.tensor([0]), torch.tensor([1]), 0.3), ValueError, "logits: expected a 2-D"),
]


@pytest.mark.parametrize("impl", ALL)
@pytest.mark.parametrize("case", range(len(BAD_DM)))
def test_decoupled_mixup_bad_input(impl, case):
    make, exc, msg = BAD_DM[case]
    with pytest.raises(exc, match=msg):
        regops.decoupled_mixup_loss(*make(), impl=impl)


BAD_ELR = [
    (lambda: (_z(), torch.tensor([0, 1, 2, 9]), torch.arange(4), torch.zeros(6, 5)), ValueError,
     r"targets: expected class indices in \[0, 5\)"),
    (lambda: (_z(), torch.arange(4), torch.tensor([0, 1, 2, 6]), torch.zeros(6, 5)), ValueError,
     r"index: expected sample indices \(rows of buffer\) in \[0, 6\), got 6"),
    (lambda: (_z(), torch.arange(4), torch.tensor([0.0, 1, 2, 3]), torch.zeros(6, 5)), TypeError, "index"),
    (lambda: (_z(), torch.arange(4), torch.tensor([0, 1, 1, 3]), torch.zeros(6, 5)), ValueError,
     "distinct sample indices"),
    (lambda: (_z(), torch.arange(4), torch.arange(4), torch.zeros(6, 4)), ValueError, r"buffer: expected shape \(N, 5\)"),
    (lambda: (_z(), torch.arange(4), torch.arange(4), torch.zeros(6, 5, dtype=torch.bfloat16)), TypeError, "buffer"),
    (lambda: (_z(), torch.arange(4), torch.arange(4), torch.zeros(6, 5, device="meta")), RuntimeError,
     "buffer: expected device cpu"),
    (lambda: (torch.tensor([[float("inf"), 0.0]]), torch.tensor([0]), torch.tensor([0]), torch.zeros(2, 2)),
     ValueError, "logits: expected finite values"),
    (lambda: (_z(2, 2), torch.arange(2), torch.arange(2), torch.full((2, 2), float("nan"))), ValueError,
     "buffer: expected finite values"),
]


@pytest.mark.parametrize("impl", ALL)
@pytest.mark.parametrize("case", range(len(BAD_ELR)))
def test_elr_bad_input(impl, case):
    make, exc, msg = BAD_ELR[case]
    args = make()
    before = args[3].clone() if args[3].device.type != "meta" else None
    with pytest.raises(exc, match=msg):
        regops.elr_loss(*args, impl=impl)
    if before is not None:  # a rejected call leaves the buffer alone
        assert torch.equal(args[3], before) or torch.isnan(before).any()


def test_elr_bad_hyperparameters():
    for kw, msg in ((dict(beta=1.0), "beta"), (dict(beta=-0.1), "beta"), (dict(lam=float("inf")), "lam")):
        with pytest.raises(ValueError, match=msg):
            regops.elr_loss(_z(), torch.arange(4), torch.arange(4), torch.zeros(6, 5), **kw)
    with pytest.raises(ValueError, match="num_examples"):
        regops.nn.ELRLoss(0, 5)


def _elr_rank(rank, world, port, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        m = regops.nn.ELRLoss(8, 3, process_group=dist.group.WORLD)
        g = torch.Generator().manual_seed(rank)
        z, y = torch.randn(2, 3, generator=g), torch.randint(0, 3, (2,), generator=g)
        m(z, y, torch.tensor([2 * rank, 2 * rank + 1]))
        out[rank] = m.target.clone()
    finally:
        dist.destroy_process_group()


def test_elr_module_process_group_keeps_buffers_identical():
    import torch.multiprocessing as mp
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_elr_rank, args=(2, free_port(), out), nprocs=2, join=True)
        t0, t1 = out[0], out[1]
    assert torch.equal(t0, t1)
    assert (t0[:4].abs().sum(1) > 0).all() and (t0[4:] == 0).all()
