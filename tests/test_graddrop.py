"""R-AMT: the fused gradient dropout (every impl bit-equal to the Philox reference, keep frequencies, edge cases,
errors) and regops.masktune (straight-through masks on a tiny ViT-like model, export/load, the training step)."""
import math

import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import regops
from regops import masktune
from regops.ops import graddrop as GD
from regops.reference import graddrop as R

from conftest import cpu_impls

IMPLS = ["reference"] + cpu_impls(GD.KERNELS)
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
