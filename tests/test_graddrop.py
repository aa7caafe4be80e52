"""R-AMT: the fused gradient dropout (every impl bit-equal to the Philox reference, keep frequencies, edge cases,
errors) and regops.masktune (straight-through masks on a tiny ViT-like model, export/load, the training step)."""
import math

import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import regops
from regops import masktune
from regops._loader import triton_available
from regops.ops import graddrop as GD
from regops.reference import graddrop as R
from regops.reference import graddrop as ref

from conftest import cpu_impls
from tolerances import assert_same_bits  # noqa: E402

IMPLS = ["reference"] + cpu_impls("graddrop_")
KERNEL_IMPLS = [i for i in IMPLS if i != "reference"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(0,), (1,), (3,), (5,), (31,), (32,), (33,), (1023,), (37, 51), (70001,)]


def test_philox_known_answers():
    t = lambda v: torch.tensor([v], dtype=torch.int64)  # noqa: E731
    z = t(0)
    assert [int(w) for w in R.philox4x32_10(z, z, z, z, 0, 0)] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    f = t(0xFFFFFFFF)
    assert [int(w) for w in R.philox4x32_10(f, f, f, f, 0xFFFFFFFF, 0xFFFFFFFF)] == [
        0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    got = R.philox4x32_10(t(0x243F6A88), t(0x85A308D3), t(0x13198A2E), t(0x03707344), 0xA4093822, 0x299F31D0)
    assert [int(w) for w in got] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def _lists(dtype, shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    b = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    return a, b


@pytest.mark.parametrize("impl", KERNEL_IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_kernel_is_bit_equal_to_reference(impl, dtype, lam):
    a, b = _lists(dtype)
    fn = torch.ops.regops.graddrop_apply_triton if impl == "triton" else torch.ops.regops.graddrop_apply_
    out = [torch.empty_like(x) for x in a]
    counts = fn(out, a, b, lam, 987654321)
    assert counts.tolist() == [0] * len(a)
    for t, (o, x, y) in enumerate(zip(out, a, b)):
        assert torch.equal(o, R.apply(x, y, lam, 987654321, t)), (t, x.shape)
    kp = torch.ops.regops.graddrop_keep_prob_triton if impl == "triton" else torch.ops.regops.graddrop_keep_prob
    for x, y in zip(a, b):
        assert torch.equal(kp(x, y), R.keep_prob(x, y).to(dtype))


@pytest.mark.parametrize("impl", IMPLS)
def test_public_op_mixed_dtypes_in_place_and_same_masks(impl):
    shapes = [(7, 3), (100,), (2, 3, 5), (4097,)]
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.float32]
    g = torch.Generator().manual_seed(1)
    params = [nn.Parameter(torch.zeros(s, dtype=d)) for s, d in zip(shapes, dtypes)]
    ga = [torch.randn(s, generator=g).to(d) for s, d in zip(shapes, dtypes)]
    gb = [torch.randn(s, generator=g).to(d) for s, d in zip(shapes, dtypes)]
    for p, a in zip(params, ga):
        p.grad = a.clone()
    seed_gen = torch.Generator().manual_seed(42)
    assert regops.graddrop_(params, [p.grad for p in params], gb, lam=0.6, generator=seed_gen, impl=impl)
    seed = GD._seed(torch.Generator().manual_seed(42))
    for t, (p, a, b) in enumerate(zip(params, ga, gb)):
        assert torch.equal(p.grad, R.apply(a, b, 0.6, seed, t))
    # a second call with a separate grad list writes .grad, not grads_task
    keep = [a.clone() for a in ga]
    regops.graddrop_(params, keep, gb, lam=0.6, generator=torch.Generator().manual_seed(42), impl=impl)
    assert all(torch.equal(k, a) for k, a in zip(keep, ga))
    assert all(torch.equal(p.grad, R.apply(a, b, 0.6, seed, t)) for t, (p, a, b) in enumerate(zip(params, ga, gb)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("target_p", [0.1, 0.5, 0.9])
def test_keep_frequency_matches_P(impl, target_p):
    n = 200_000
    a = torch.ones(n)
    # a = 1, b ≤ 0: P = (q + 1)/2 with q = (1 + b)/(1 − b), so b = (q − 1)/(q + 1) for q = 2P − 1
    q = 2 * target_p - 1
    b = torch.full((n,), (q - 1) / (q + 1))
    P = R.keep_prob(a, b)[0].item()
    p = nn.Parameter(torch.zeros(n))
    p.grad = a.clone()
    regops.graddrop_([p], [p.grad], [b], lam=1.0, generator=torch.Generator().manual_seed(7), impl=impl)
    freq = (p.grad == 1).float().mean().item()
    assert abs(freq - P) < 5 * math.sqrt(P * (1 - P) / n) + 1e-6


@pytest.mark.parametrize("impl", IMPLS)
def test_lambda_edges_and_seeds(impl):
    a, b = _lists(torch.float32, [(1000,), (333,)])
    ps = [nn.Parameter(torch.zeros_like(x)) for x in a]
    regops.graddrop_(ps, a, b, lam=0.0, impl=impl)
    assert all(torch.equal(p.grad, x) for p, x in zip(ps, a))  # λ = 0: the task gradient as is
    regops.graddrop_(ps, a, b, lam=1.0, generator=torch.Generator().manual_seed(3), impl=impl)
    m1 = [p.grad.clone() for p in ps]
    assert all(((g == 0) | (g == x)).all() for g, x in zip(m1, a))  # λ = 1: a binary mask
    regops.graddrop_(ps, a, b, lam=1.0, generator=torch.Generator().manual_seed(3), impl=impl)
    assert all(torch.equal(p.grad, g) for p, g in zip(ps, m1))  # same seed, same masks
    regops.graddrop_(ps, a, b, lam=1.0, generator=torch.Generator().manual_seed(4), impl=impl)
    assert not all(torch.equal(p.grad, g) for p, g in zip(ps, m1))


@pytest.mark.parametrize("impl", IMPLS)
def test_nonfinite_raise_or_skip(impl):
    a, b = _lists(torch.float32, [(10,), (20,), (30,)])
    b[1][4] = float("nan")
    a[2][0] = float("inf")
    ps = [nn.Parameter(torch.zeros_like(x)) for x in a]
    for p in ps:
        p.grad = torch.full_like(p, 5.0)
    assert regops.graddrop_(ps, a, b, lam=0.5, nonfinite="skip", impl=impl) is False
    assert all((p.grad == 5).all() for p in ps)  # untouched
    with pytest.raises(ValueError, match=r"regops.graddrop_: grads_task/grads_reg: expected finite gradients, got "
                                         r"non-finite values in tensors 1 \(1\), 2 \(1\)"):
        regops.graddrop_(ps, a, b, lam=0.5, impl=impl)


def test_errors():
    a, b = _lists(torch.float32, [(4,), (5,)])
    ps = [nn.Parameter(torch.zeros_like(x)) for x in a]
    with pytest.raises(ValueError, match=r"grads_reg: expected 2 tensors \(one per param\), got 1 tensors"):
        regops.graddrop_(ps, a, b[:1], lam=0.5)
    with pytest.raises(ValueError, match=r"grads_reg\[1\]: expected shape \(5,\) \(as params\[1\]\)"):
        regops.graddrop_(ps, a, [b[0], b[0]], lam=0.5)
    with pytest.raises(TypeError, match=r"grads_reg\[0\]: expected dtype float32 \(as grads_task\[0\]\)"):
        regops.graddrop_(ps, a, [b[0].half(), b[1]], lam=0.5)
    with pytest.raises(TypeError, match=r"grads_task\[0\]: expected dtype in"):
        regops.graddrop_(ps, [a[0].double(), a[1]], b, lam=0.5)
    with pytest.raises(ValueError, match=r"lam: expected a value in \[0, 1\]"):
        regops.graddrop_(ps, a, b, lam=1.5)
    with pytest.raises(TypeError, match=r"grads_task\[0\]: expected dtype float64 \(as params\[0\]\)"):
        regops.graddrop_([nn.Parameter(torch.zeros(4, dtype=torch.float64)), ps[1]], a, b, lam=0.5)
    if "cpu" in KERNEL_IMPLS:
        with pytest.raises(ValueError, match=r"regops.graddrop_: grads_task: expected 2 tensors \(as out\)"):
            torch.ops.regops.graddrop_apply_(a, a[:1], b, 0.5, 1)


@pytest.mark.skipif("cpu" not in KERNEL_IMPLS, reason="no compiled CPU kernels")
def test_opcheck_keep_prob():
    a, b = _lists(torch.float32, [(17, 3)])
    torch.library.opcheck(torch.ops.regops.graddrop_keep_prob.default, (a[0], b[0]))


@pytest.mark.skipif("cpu" not in KERNEL_IMPLS, reason="no compiled CPU kernels")
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6), dtype=st.sampled_from(DTYPES),
       lam=st.floats(0, 1), seed=st.integers(0, 2**62))
def test_cpu_kernel_fuzz(sizes, dtype, lam, seed):
    a, b = _lists(dtype, [(s,) for s in sizes], seed=len(sizes))
    out = [x.clone() for x in a]
    torch.ops.regops.graddrop_apply_(out, out, b, lam, seed)  # in place
    for t, (o, x, y) in enumerate(zip(out, a, b)):
        assert torch.equal(o, R.apply(x, y, lam, seed, t))


# ---------------------------------------------------------------- masktune

class TinyViT(nn.Module):
    """A CLIP-style ViT in miniature: patch embedding, class/positional embeddings, attention, MLP, norms."""

    def __init__(self, d=16, heads=2, patch=4, image=8, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, d, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(d))
        self.positional_embedding = nn.Parameter(torch.randn((image // patch) ** 2 + 1, d))
        self.ln_pre = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], 1) + self.positional_embedding
        x = self.ln_pre(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        x = x + self.mlp(self.ln_2(x))
        return self.head(x[:, 0])


def _model():
    torch.manual_seed(0)
    return TinyViT()


def test_apply_masks_the_official_targets():
    m = masktune.apply(_model())
    assert set(masktune.masks(m)) == {"conv1.weight", "attn.in_proj_weight", "attn.out_proj.weight"}
    assert not m.conv1.parametrizations.weight.original.requires_grad
    assert m.mlp[0].weight.requires_grad  # MLPs, biases, norms, embeddings are not masked
    assert masktune.sparsity(m) == 1.0  # init 1e-2 > threshold 5e-3: everything kept
    by_pattern = masktune.apply(_model(), targets=["mlp.*.weight"])
    assert set(masktune.masks(by_pattern)) == {"mlp.0.weight", "mlp.2.weight"}
    by_type = masktune.apply(_model(), targets=[nn.Linear])
    assert "head.weight" in masktune.masks(by_type)
    with pytest.raises(ValueError, match="targets: expected at least one matching weight"):
        masktune.apply(_model(), targets=["nothing.*"])
    # applying again is harmless: the same masks, none on the originals or the scores
    again = masktune.apply(masktune.apply(_model(), targets=["*weight*"]), targets=["*weight*"])
    names = set(masktune.masks(again))
    assert "conv1.weight" in names and not any("original" in n or "score" in n for n in names)
    assert set(masktune.masks(masktune.apply(m))) == {"conv1.weight", "attn.in_proj_weight", "attn.out_proj.weight"}


def test_forward_and_straight_through_gradient():
    m = masktune.apply(_model())
    sm = masktune.masks(m)["attn.out_proj.weight"]
    with torch.no_grad():
        sm.score.copy_(torch.where(torch.rand_like(sm.score) < 0.5, torch.tensor(1.0), torch.tensor(0.0)))
    W = m.attn.out_proj.parametrizations.weight.original
    x = torch.randn(3, 3, 8, 8)
    ref = _model()
    with torch.no_grad():
        ref.attn.out_proj.weight.copy_(W * (sm.score > 5e-3))
    torch.testing.assert_close(m(x), ref(x))
    # ∂L/∂score = ∂L/∂W′ ⊙ W
    m(x).square().sum().backward()
    Wp = (W * (sm.score > 5e-3)).detach().requires_grad_()
    ref.attn.out_proj.weight.data.copy_(Wp)
    ref(x).square().sum().backward()
    torch.testing.assert_close(sm.score.grad, ref.attn.out_proj.weight.grad * W)


def test_state_dict_export_load_and_score_l2():
    m = masktune.apply(_model())
    with torch.no_grad():
        for sm in masktune.masks(m).values():
            sm.score.copy_(torch.randn_like(sm.score) * 0.01)
    kept = masktune.sparsity(m)
    assert 0.2 < kept < 0.8
    m2 = masktune.apply(_model())
    m2.load_state_dict(m.state_dict())
    assert masktune.sparsity(m2) == kept
    bits = masktune.export(m)
    assert bits["conv1.weight"]["bits"].dtype == torch.uint8
    assert bits["conv1.weight"]["bits"].numel() == math.ceil(m.conv1.weight.numel() / 8)
    m3 = masktune.load(masktune.apply(_model()), bits)
    for name, sm in masktune.masks(m).items():
        assert torch.equal(masktune.masks(m3)[name].mask(), sm.mask())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(m3(x), m(x))
    l2 = masktune.score_l2(m)
    assert l2.item() == pytest.approx(sum(sm.score.norm().item() for sm in masktune.masks(m).values()), rel=1e-6)


def test_compiled_masked_model():
    m = masktune.apply(_model())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(torch.compile(m, backend="aot_eager")(x), m(x))


@pytest.mark.parametrize("impl", IMPLS)
def test_training_step_changes_only_the_scores(impl):
    m = masktune.apply(_model())
    teacher = _model()
    for p in m.parameters():
        p.requires_grad_(False)
    ss = masktune.scores(m)
    for s in ss:
        s.requires_grad_(True)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD(ss, lr=1.0)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    out = m(x)
    task = nn.functional.cross_entropy(out, y) + 1e-4 * masktune.score_l2(m)
    reg = regops.kd_loss(out, teacher(x))
    masktune.step(m, task, reg, opt, lam=0.5, generator=torch.Generator().manual_seed(0), impl=impl)
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(".score") for k in changed)


def test_kd_loss():
    s, t = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5)
    T = 2.0
    p = torch.softmax(t / T, -1)
    want = -(p * torch.log_softmax(s / T, -1)).sum(-1).mean() * T * T
    ce = regops.kd_loss(s, t, T=T)
    torch.testing.assert_close(ce, want)
    kl = regops.kd_loss(s, t, T=T, kind="kl")
    torch.testing.assert_close(kl, want + (p * p.log()).sum(-1).mean() * T * T)
    g_ce, = torch.autograd.grad(ce, s)
    g_kl, = torch.autograd.grad(kl, s)
    torch.testing.assert_close(g_ce, g_kl)
    with pytest.raises(ValueError, match="kind: expected one of"):
        regops.kd_loss(s, t, kind="js")


@pytest.mark.skipif("cpu" not in KERNEL_IMPLS, reason="no compiled CPU kernels")
def test_portable_path_is_bit_equal():
    """The kernel without AVX2 (REGOPS_CPU_NO_SIMD=1), in a subprocess: the same bits as the reference."""
    import os
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import torch, regops
        from regops.reference import graddrop as R
        g = torch.Generator().manual_seed(0)
        for dt in (torch.float32, torch.bfloat16, torch.float16):
            a = [torch.randn(s, generator=g).to(dt) for s in (1, 63, 64, 65, 1000)]
            b = [torch.randn(s, generator=g).to(dt) for s in (1, 63, 64, 65, 1000)]
            out = [torch.empty_like(x) for x in a]
            torch.ops.regops.graddrop_apply_(out, a, b, 0.4, 2**40 + 7)
            assert all(torch.equal(o, R.apply(x, y, 0.4, 2**40 + 7, t)) for t, (o, x, y) in enumerate(zip(out, a, b)))
        print("ok")
    """)
    env = dict(os.environ, REGOPS_CPU_NO_SIMD="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


# ================================================================================================
# The Triton kernel (regops/triton/graddrop.py), called directly (torch.ops.regops.graddrop_apply_triton /
# graddrop_keep_prob_triton), bit for bit against regops.reference.graddrop: the same bits wherever the expected
# value is not NaN, NaN where it is NaN. Interpreted on CPU-only machines (TRITON_INTERPRET=1, small sizes); on a
# CUDA machine the same tests run on CUDA tensors (test_graddrop_gpu.py adds the GPU-only ones).
# ================================================================================================
def needs_triton(fn):
    # the interpreter evaluates NaN/inf inputs with numpy, which warns
    fn = pytest.mark.filterwarnings("ignore::RuntimeWarning")(fn)
    return pytest.mark.skipif(not triton_available(), reason="triton is not installed")(fn)

if triton_available():
    from regops.triton import graddrop as tg  # noqa: F401  (registers the triton ops)



DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
T_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPE_IDS = ["float32", "bfloat16", "float16"]
T_SHAPES = [(0,), (1,), (3,), (5,), (1023,), (37, 51)]
LAMS = [0.0, 0.3, 1.0]
SEEDS = [0, 12345678901, -7]


def apply_op(out, task, reg, lam, seed):
    return torch.ops.regops.graddrop_apply_triton(out, task, reg, lam, seed)


def keep_prob_op(a, b):
    return torch.ops.regops.graddrop_keep_prob_triton(a, b)


def pair(shape, dtype, seed=0):
    """(a, b) of `shape` in `dtype`: magnitudes over 1e-3 .. 1e3, exact zeros, b = −a, b = a and b = 0 cases
    (P = 0, 1, 0.5 and the ties of the float32 arithmetic)."""
    g = torch.Generator().manual_seed(seed)
    n = 1
    for s in shape:
        n *= s
    a = torch.randn(n, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-3, 4, (n,), generator=g)
    b = torch.randn(n, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-3, 4, (n,), generator=g)
    kind = torch.randint(0, 8, (n,), generator=g)
    b = torch.where(kind == 0, -a, b)
    b = torch.where(kind == 1, a, b)
    b = torch.where(kind == 2, torch.zeros_like(b), b)
    a = torch.where(kind == 3, torch.zeros_like(a), a)
    a, b = a.to(dtype).reshape(shape), b.to(dtype).reshape(shape)
    return a.to(DEVICE), b.to(DEVICE)


def with_nonfinite(a, b, seed=0):
    """Copies of a and b with NaN, +inf and −inf at a few places of each; the expected non-finite count."""
    a, b = a.clone(), b.clone()
    n = a.numel()
    if n:
        g = torch.Generator().manual_seed(seed + 100)
        fa, fb = a.view(-1), b.view(-1)
        for flat, vals in ((fa, (float("nan"), float("inf"), float("-inf"))), (fb, (float("inf"), float("nan")))):
            for v in vals:
                flat[int(torch.randint(0, n, (1,), generator=g))] = v
    bad = ~(torch.isfinite(a) & torch.isfinite(b))
    return a, b, int(bad.sum())


def expected_list(task, reg, lam, seed):
    return [ref.apply(a, b, lam, seed, t) for t, (a, b) in enumerate(zip(task, reg))]


def expected_counts(task, reg):
    return torch.tensor([int((~(torch.isfinite(a) & torch.isfinite(b))).sum()) for a, b in zip(task, reg)],
                        dtype=torch.int64)


# ----------------------------------------------------------------------------------------------
# Philox
# ----------------------------------------------------------------------------------------------
@needs_triton
def test_triton_philox_known_answers():
    rows = torch.tensor([[0] * 6, [0xFFFFFFFF] * 6], dtype=torch.int64, device=DEVICE)
    words = tg.philox_words(rows).cpu().tolist()
    assert words[0] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert words[1] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


@needs_triton
def test_philox_matches_reference():
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 1 << 32, (777, 6), generator=g, dtype=torch.int64)
    # the reference takes one key per call: all rows under key 0, then a few rows under their own keys
    zero = rows.clone()
    zero[:, 4:] = 0
    exp = torch.stack(ref.philox4x32_10(*rows[:, :4].unbind(1), 0, 0), 1)
    assert torch.equal(tg.philox_words(zero.to(DEVICE)).cpu(), exp)
    got = tg.philox_words(rows.to(DEVICE)).cpu()
    for r in range(0, 777, 97):
        c = rows[r : r + 1, :4].unbind(1)
        want = torch.stack(ref.philox4x32_10(*c, int(rows[r, 4]), int(rows[r, 5])), 1)
        assert torch.equal(got[r : r + 1], want)


# ----------------------------------------------------------------------------------------------
# keep_prob
# ----------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("dtype", T_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(0,), (1,), (5,), (1023,), (37, 51), (3000,)])
def test_keep_prob_matches_reference(dtype, shape):
    a, b = pair(shape, dtype, seed=sum(shape))
    got = keep_prob_op(a, b)
    assert got.device == a.device
    assert_same_bits(got, ref.keep_prob(a.cpu(), b.cpu()).to(dtype))


@needs_triton
@pytest.mark.parametrize("dtype", T_DTYPES, ids=DTYPE_IDS)
def test_keep_prob_special_values(dtype):
    inf, nan = float("inf"), float("nan")
    tiny = torch.finfo(dtype).tiny
    vals = [0.0, -0.0, 1.0, -1.0, inf, -inf, nan, tiny, -tiny, tiny / 4, 3e-39, -3e-39, 1e-30, 1e30]
    a = torch.tensor([x for x in vals for _ in vals], dtype=torch.float64).to(dtype)
    b = torch.tensor([y for _ in vals for y in vals], dtype=torch.float64).to(dtype)
    got = keep_prob_op(a.to(DEVICE), b.to(DEVICE))
    assert_same_bits(got, ref.keep_prob(a, b).to(dtype))


@needs_triton
def test_keep_prob_non_contiguous():
    a, b = pair((40, 30), torch.float32, seed=3)
    got = keep_prob_op(a.t(), b.t())
    assert got.is_contiguous()
    assert_same_bits(got, ref.keep_prob(a.t().cpu(), b.t().cpu()))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_keep_prob_opcheck(dtype):
    a, b = pair((7, 5), dtype, seed=4)
    torch.library.opcheck(torch.ops.regops.graddrop_keep_prob_triton.default, (a, b))


# ----------------------------------------------------------------------------------------------
# apply
# ----------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("dtype", T_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("lam", LAMS)
def test_apply_matches_reference(dtype, lam):
    seed = 12345678901
    pairs = [pair(s, dtype, seed=i) for i, s in enumerate(T_SHAPES)]
    task, reg = [p[0] for p in pairs], [p[1] for p in pairs]
    out = [torch.full_like(a, 7.0) for a in task]
    counts = apply_op(out, task, reg, lam, seed)
    assert counts.dtype == torch.int64 and counts.device == task[0].device
    assert torch.equal(counts.cpu(), torch.zeros(len(task), dtype=torch.int64))
    for o, e in zip(out, expected_list([a.cpu() for a in task], [b.cpu() for b in reg], lam, seed)):
        assert_same_bits(o, e)
    if lam > 0:  # not vacuous: some elements kept, some dropped
        o, a = out[-1].float(), task[-1].float()
        nz = a != 0
        assert bool((o[nz] == a[nz]).any()) and bool((o[nz] != a[nz]).any())


@needs_triton
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_apply_mixed_list(seed, inplace):
    """A list mixing the three dtypes over the odd sizes (each dtype group is one launch), with 2-D, empty
    and multi-block tensors; out[t] is grads_task[t] when inplace."""
    shapes = T_SHAPES + [(2, 3), (4100,), (0, 7)]
    task, reg = [], []
    for i, s in enumerate(shapes):
        a, b = pair(s, T_DTYPES[i % 3], seed=10 + i)
        task.append(a)
        reg.append(b)
    exp = expected_list([a.cpu() for a in task], [b.cpu() for b in reg], 0.3, seed)
    out = task if inplace else [torch.empty_like(a) for a in task]
    ptrs = [a.data_ptr() for a in task]
    counts = apply_op(out, task, reg, 0.3, seed)
    assert torch.equal(counts.cpu(), torch.zeros(len(shapes), dtype=torch.int64))
    if inplace:
        assert [a.data_ptr() for a in task] == ptrs
    for o, e in zip(out, exp):
        assert_same_bits(o, e)


@needs_triton
def test_apply_one_launch_per_dtype(monkeypatch):
    """Three dtypes among six non-empty tensors (and an empty one): three launches."""
    launches = []
    kernel = tg.graddrop_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return kernel[grid]

    monkeypatch.setattr(tg, "graddrop_kernel", Counting())
    monkeypatch.setattr(tg._host, "check_device", lambda *args: None)
    shapes = [(5,), (1023,), (37, 51), (3,), (0,), (2000,), (1,)]
    task, reg = [], []
    for i, s in enumerate(shapes):
        a, b = pair(s, T_DTYPES[i % 3], seed=i)
        task.append(a)
        reg.append(b)
    out = [torch.empty_like(a) for a in task]
    apply_op(out, task, reg, 0.5, 3)
    # programs of 1024 elements: float32 5, 3, 1 -> 3; bfloat16 1023, 0 -> 1; float16 1887, 2000 -> 2 + 2
    assert sorted(g[0] for g in launches) == [1, 3, 4]
    for o, e in zip(out, expected_list([a.cpu() for a in task], [b.cpu() for b in reg], 0.5, 3)):
        assert_same_bits(o, e)


@needs_triton
@pytest.mark.parametrize("dtype", T_DTYPES, ids=DTYPE_IDS)
def test_apply_nonfinite_counts(dtype):
    task, reg, want = [], [], []
    for i, s in enumerate([(1,), (5,), (1023,), (37, 51), (3,)]):
        a, b = pair(s, dtype, seed=20 + i)
        if i != 4:  # the last one stays finite
            a, b, _ = with_nonfinite(a, b, seed=i)
        task.append(a)
        reg.append(b)
    out = [torch.empty_like(a) for a in task]
    counts = apply_op(out, task, reg, 0.3, 99)
    exp_counts = expected_counts([a.cpu() for a in task], [b.cpu() for b in reg])
    assert int(exp_counts[2]) >= 4 and int(exp_counts[4]) == 0
    assert torch.equal(counts.cpu(), exp_counts)
    for o, e in zip(out, expected_list([a.cpu() for a in task], [b.cpu() for b in reg], 0.3, 99)):
        assert_same_bits(o, e)


@needs_triton
def test_apply_unaligned_and_non_contiguous():
    """Data pointers off the 16-byte alignment (the unaligned kernel variant) and non-contiguous inputs
    (element e is the row-major index of the logical shape)."""
    base_a, base_b = pair((1 + 2100,), torch.float32, seed=30)
    a1, b1 = base_a[1:], base_b[1:]                       # 4-byte aligned views
    a2, b2 = pair((30, 40), torch.float32, seed=31)
    a2, b2 = a2.t(), b2.t()                               # transposed: copied by the op
    store = torch.empty(2101 + 1200, device=DEVICE)
    out = [store[1:2101], store[2101:].view(40, 30)]
    task, reg = [a1, a2], [b1, b2]
    counts = apply_op(out, task, reg, 0.3, 5)
    assert torch.equal(counts.cpu(), torch.zeros(2, dtype=torch.int64))
    for o, e in zip(out, expected_list([a.cpu() for a in task], [b.cpu() for b in reg], 0.3, 5)):
        assert_same_bits(o, e)


@needs_triton
def test_apply_opcheck():
    task = [pair((5,), torch.float32, seed=1)[0], pair((7, 3), torch.bfloat16, seed=2)[0]]
    reg = [pair((5,), torch.float32, seed=3)[1], pair((7, 3), torch.bfloat16, seed=4)[1]]
    out = [torch.empty_like(a) for a in task]
    torch.library.opcheck(torch.ops.regops.graddrop_apply_triton.default, (out, task, reg, 0.3, 5))


@needs_triton
def test_apply_empty_list():
    counts = apply_op([], [], [], 0.3, 1)
    assert counts.dtype == torch.int64 and counts.shape == (0,)


@needs_triton
def test_apply_tensor_index_and_seed_change_the_mask():
    """The same values at list index 0 and 1, or under two seeds, drop different elements."""
    a, b = pair((1023,), torch.float32, seed=40)
    out = [torch.empty_like(a), torch.empty_like(a)]
    apply_op(out, [a, a], [b, b], 0.5, 1)
    assert not torch.equal(out[0], out[1])
    again = [torch.empty_like(a)]
    apply_op(again, [a], [b], 0.5, 2)
    assert not torch.equal(out[0], again[0])


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
def _t_lists(n=4, dtype=torch.float32):
    task = [torch.randn(3, device=DEVICE, dtype=dtype) for _ in range(n)]
    reg = [torch.randn(3, device=DEVICE, dtype=dtype) for _ in range(n)]
    return [torch.empty_like(a) for a in task], task, reg


def _replace(xs, i, v):
    xs = list(xs)
    xs[i] = v
    return xs


@needs_triton
@pytest.mark.parametrize("case,exc,msg", [
    ("reg_len", ValueError, "regops.graddrop_: grads_reg: expected 4 tensors (as out), got 3"),
    ("out_len", ValueError, "regops.graddrop_: grads_task: expected 5 tensors (as out), got 4"),
    ("reg_shape", ValueError, "regops.graddrop_: grads_reg[3]: expected shape (3,) (as out[3]), got shape (4,)"),
    ("out_shape", ValueError, "regops.graddrop_: grads_task[1]: expected shape (3, 1) (as out[1]), got shape (3,)"),
    ("reg_dtype", TypeError, "regops.graddrop_: grads_reg[2]: expected dtype float32 (as out[2]), got shape (3,), dtype float16"),
    ("out_dtype", TypeError, "regops.graddrop_: grads_task[0]: expected dtype bfloat16 (as out[0]), got shape (3,), dtype float32"),
    ("task_dtype", TypeError,
     "regops.graddrop_: out[1]: expected dtype float32, bfloat16 or float16, got shape (3,), dtype float64"),
    ("task_device", RuntimeError, "regops.graddrop_: grads_task[2]: expected device"),
    ("reg_device", RuntimeError, "regops.graddrop_: grads_reg[3]: expected device"),
    ("out_noncontig", ValueError, "regops.graddrop_: out[2]: expected a contiguous tensor (it is written in place), got shape (3,)"),
])
def test_apply_errors(case, exc, msg):
    out, task, reg = _t_lists()
    if case == "reg_len":
        reg = reg[:3]
    elif case == "out_len":
        out = out + [out[0]]
    elif case == "reg_shape":
        reg = _replace(reg, 3, torch.randn(4, device=DEVICE))
    elif case == "out_shape":
        out = _replace(out, 1, torch.empty(3, 1, device=DEVICE))
    elif case == "reg_dtype":
        reg = _replace(reg, 2, reg[2].half())
    elif case == "out_dtype":
        out = _replace(out, 0, out[0].bfloat16())
    elif case == "task_dtype":
        task = _replace(task, 1, task[1].double())
        reg = _replace(reg, 1, reg[1].double())
        out = _replace(out, 1, out[1].double())
    elif case == "task_device":
        task = _replace(task, 2, task[2].to("meta"))
    elif case == "reg_device":
        reg = _replace(reg, 3, reg[3].to("meta"))
    elif case == "out_noncontig":
        out = _replace(out, 2, torch.empty(6, device=DEVICE)[::2])
    with pytest.raises(exc) as info:
        apply_op(out, task, reg, 0.3, 1)
    assert str(info.value).startswith(msg), str(info.value)


@needs_triton
@pytest.mark.parametrize("case,exc,msg", [
    ("dtype", TypeError, "regops.graddrop_keep_prob: grad_task: expected dtype float32, bfloat16 or float16, "
                         "got shape (3,), dtype float64"),
    ("reg_dtype", TypeError, "regops.graddrop_keep_prob: grad_reg: expected dtype float32 (as grad_task), "
                             "got shape (3,), dtype bfloat16"),
    ("shape", ValueError, "regops.graddrop_keep_prob: grad_reg: expected shape (3,) (as grad_task), got shape (2,)"),
    ("device", RuntimeError, "regops.graddrop_keep_prob: grad_reg: expected device"),
])
def test_keep_prob_errors(case, exc, msg):
    a, b = torch.randn(3, device=DEVICE), torch.randn(3, device=DEVICE)
    if case == "dtype":
        a, b = a.double(), b.double()
    elif case == "reg_dtype":
        b = b.bfloat16()
    elif case == "shape":
        b = b[:2]
    elif case == "device":
        b = b.to("meta")
    with pytest.raises(exc) as info:
        keep_prob_op(a, b)
    assert str(info.value).startswith(msg), str(info.value)
