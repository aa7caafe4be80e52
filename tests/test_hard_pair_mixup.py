"""hard_pair_mixup against a per-sample loop transcription of Core-tuning's `feature_mixup`
(Vanint/Core-tuning, Core-tuning.py L155-205), row blocking, gradients, dtypes and bad input."""
import math
import re

import pytest
import torch

import regops  # noqa: F401  (loads the package the op lives in)
from regops.ops import hard_pair_mixup as hpm_module
from regops.ops.hard_pair_mixup import hard_pair_indices, hard_pair_mixup

from conftest import requires_cuda


def loop_feature_mixup(f, y, *, num_classes, mixup_alpha=1.0, negative_lam_min=0.8, mining="official",
                       detach_originals=True, generator=None):
    """The official steps one sample at a time. Random numbers: the op's documented protocol."""
    n, alpha, floor = f.shape[0], mixup_alpha, negative_lam_min
    acc = torch.float64 if f.dtype == torch.float64 else torch.float32
    perm = torch.randperm(n, generator=generator)
    lam = torch._sample_dirichlet(torch.full((2, n, 2), float(alpha), dtype=torch.float64), generator)[..., 0]
    ys = [int(v) for v in y]
    fa = f.to(acc)
    onehot = []                                            # to_one_hot (L149-153, L156)
    for i in range(n):
        row = torch.zeros(num_classes, dtype=acc)
        row[ys[i]] = 1
        onehot.append(row)
    z = []                                                 # F.normalize (L160)
    for i in range(n):
        v = fa[i].detach()
        z.append(v / max(float(v.norm()), 1e-12))
    sim = [[float(z[i] @ z[j]) for j in range(n)] for i in range(n)]   # L166

    hp, hn = [], []
    for i in range(n):
        if mining == "official":
            # negative_matrix = sim * (1 - equal) (L165, L168), argmax, first of ties (L187)
            neg = [sim[i][j] * (0.0 if ys[j] == ys[i] else 1.0) for j in range(n)]
            best = 0
            for j in range(1, n):
                if neg[j] > neg[best]:
                    best = j
            hn.append(best)
            # positive_matrix = sim * equal * (1 - eye) (L163-164, L167), argmin (L190), 0 -> i (L191-193)
            pos = [sim[i][j] * (1.0 if ys[j] == ys[i] and j != i else 0.0) for j in range(n)]
            best = 0
            for j in range(1, n):
                if pos[j] < pos[best]:
                    best = j
            hp.append(i if best == 0 else best)
        else:
            best = None
            for j in range(n):
                if j != i and ys[j] == ys[i] and (best is None or sim[i][j] < sim[i][best]):
                    best = j
            hp.append(i if best is None else best)
            best = None
            for j in range(n):
                if ys[j] != ys[i] and (best is None or sim[i][j] > sim[i][best]):
                    best = j
            hn.append(i if best is None else best)

    rows, labels = [], []
    for i in range(n):                                     # block 0 (L157-158)
        rows.append(f[i].detach() if detach_originals else f[i])
        labels.append(onehot[i])
    for i in range(n):                                     # block 1 (L171-184)
        l1 = float(lam[0, i])
        if l1 <= floor:
            l1 = floor
        l1 = torch.tensor(l1, dtype=acc)
        j = int(perm[i])
        rows.append(((1 - l1) * fa[i] + l1 * fa[j]).to(f.dtype))
        labels.append((1 - l1) * onehot[i] + l1 * onehot[j])
    for i in range(n):                                     # block 2 (L187-201)
        l2 = torch.tensor(float(lam[1, i]), dtype=acc)
        rows.append((l2 * fa[hp[i]] + (1 - l2) * fa[hn[i]]).to(f.dtype))
        labels.append(l2 * onehot[hp[i]] + (1 - l2) * onehot[hn[i]])
    ids, groups = {}, []                                   # equal soft labels, one group (L224-237, exactly)
    for row in labels:
        groups.append(ids.setdefault(tuple(row.tolist()), len(ids)))
    return torch.stack(rows), torch.stack(labels), torch.tensor(groups), torch.tensor(hp), torch.tensor(hn)


def canonical(groups):
    """Relabel ids by first appearance, so two groupings compare as partitions."""
    ids = {}
    return [ids.setdefault(int(g), len(ids)) for g in groups]


def batch(n, d, classes, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return f, y


def compare(f, y, classes, dtype, **kw):
    f = f.to(dtype).requires_grad_(True)
    f_ref = f.detach().clone().requires_grad_(True)
    out = hard_pair_mixup(f, y, num_classes=classes, generator=torch.Generator().manual_seed(7), **kw)
    ref, ref_soft, ref_groups, ref_hp, ref_hn = loop_feature_mixup(
        f_ref, y, num_classes=classes, generator=torch.Generator().manual_seed(7), **kw)
    hp, hn = hard_pair_indices(f.detach(), y, kw.get("mining", "official"))
    assert hp.tolist() == ref_hp.tolist() and hn.tolist() == ref_hn.tolist()
    assert out.features.dtype == dtype and out.features.shape == (3 * len(y), f.shape[1])
    torch.testing.assert_close(out.features, ref, atol=0, rtol=0)  # the same elementwise ops: bit-equal
    torch.testing.assert_close(out.soft_labels, ref_soft, atol=0, rtol=0)
    assert canonical(out.groups) == canonical(ref_groups)
    w = torch.randn(out.features.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype)
    (out.features * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(f.grad, f_ref.grad, atol=1e-12 if dtype == torch.float64 else 1e-5, rtol=1e-6)
    return out


CASES = [(1, 3, 1), (2, 1, 2), (2, 4, 1), (7, 5, 3), (16, 1, 4), (33, 8, 5),
         (24, 4, 40),   # mostly singleton classes: anchors without a positive
         (9, 3, 1)]     # one class: no negative anywhere


@pytest.mark.smoke
@pytest.mark.parametrize("n,d,classes", CASES)
@pytest.mark.parametrize("mining", ["official", "strict"])
def test_matches_loop_transcription(n, d, classes, mining):
    f, y = batch(n, d, classes, seed=n * 31 + d)
    compare(f, y, classes, torch.float64, mining=mining)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("alpha,floor,detach", [(1.0, 0.8, True), (0.4, 0.5, False), (2.0, 0.0, True)])
def test_matches_loop_transcription_knobs_and_dtypes(dtype, alpha, floor, detach):
    f, y = batch(21, 6, 4, seed=3)
    compare(f, y, 6, dtype, mixup_alpha=alpha, negative_lam_min=floor, detach_originals=detach)


def test_block_structure_and_official_defaults():
    f, y = batch(12, 5, 3)
    out = hard_pair_mixup(f, y, generator=torch.Generator().manual_seed(0))
    n = 12
    assert torch.equal(out.features[:n], f)
    assert torch.equal(out.soft_labels[:n], torch.nn.functional.one_hot(y, 3).double())
    assert out.soft_labels.shape == (3 * n, 3)            # num_classes=None: labels.max() + 1
    torch.testing.assert_close(out.soft_labels.sum(1), torch.ones(3 * n, dtype=torch.float64))
    # block 1: the weight of the random partner is at least 0.8 (the official floor)
    perm, lam1, _ = hpm_module.draw(n, 1.0, torch.Generator().manual_seed(0), f.device)
    lam1 = lam1.clamp_min(0.8)
    assert (lam1 >= 0.8).all() and (lam1 == 0.8).any()
    torch.testing.assert_close(out.features[n:2 * n], (1 - lam1[:, None]) * f + lam1[:, None] * f[perm])


def test_official_rule_with_nonnegative_features():
    """With ReLU (non-negative) features, as in the official backbone, every row whose label differs from
    y_0 gets itself as hard positive (the masked zero at column 0 wins, then 0 -> i)."""
    g = torch.Generator().manual_seed(2)
    f = torch.rand(40, 8, generator=g) + 0.01
    y = torch.randint(0, 4, (40,), generator=g)
    hp, hn = hard_pair_indices(f, y, "official")
    for i in range(40):
        if y[i] != y[0]:
            assert hp[i] == i
        assert y[hn[i]] != y[i]  # all similarities > 0: the hardest negative is a true negative
    hp_s, _ = hard_pair_indices(f, y, "strict")
    for i in range(40):
        if (y == y[i]).sum() > 1:
            assert y[hp_s[i]] == y[i] and hp_s[i] != i


@pytest.mark.smoke
@pytest.mark.parametrize("mining", ["official", "strict"])
def test_row_blocked_equals_unblocked(mining, monkeypatch):
    f, y = batch(50, 6, 5, dtype=torch.float32, seed=4)
    full = hard_pair_indices(f, y, mining, block_rows=10_000)
    for b in (1, 3, 7, 49):
        got = hard_pair_indices(f, y, mining, block_rows=b)
        assert torch.equal(got[0], full[0]) and torch.equal(got[1], full[1])
    ref = hard_pair_mixup(f, y, mining=mining, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(hpm_module, "BLOCK_ROWS", 4)
    got = hard_pair_mixup(f, y, mining=mining, generator=torch.Generator().manual_seed(1))
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


def test_deterministic_given_generator_and_global_seed():
    f, y = batch(30, 4, 3)
    a = hard_pair_mixup(f, y, generator=torch.Generator().manual_seed(5))
    b = hard_pair_mixup(f, y, generator=torch.Generator().manual_seed(5))
    c = hard_pair_mixup(f, y, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.features, c.features)
    torch.manual_seed(11)
    d = hard_pair_mixup(f, y)
    torch.manual_seed(11)
    e = hard_pair_mixup(f, y)
    assert all(torch.equal(u, v) for u, v in zip(d, e))
    for impl in (None, "auto", "reference"):
        g = hard_pair_mixup(f, y, generator=torch.Generator().manual_seed(5), impl=impl)
        assert all(torch.equal(u, v) for u, v in zip(a, g))


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("mining", ["official", "strict"])
def test_gradcheck(detach, mining):
    f, y = batch(9, 3, 3)
    f.requires_grad_(True)

    def fn(t):
        return hard_pair_mixup(t, y, mining=mining, detach_originals=detach,
                               generator=torch.Generator().manual_seed(3)).features
    # a detached block 0 is a stop-gradient, which finite differences cannot see: check the mixed rows then
    assert torch.autograd.gradcheck((lambda t: fn(t)[9:]) if detach else fn, (f,))
    g, = torch.autograd.grad(fn(f)[:9].sum(), f, materialize_grads=True)
    # block 0 is detached as officially (L157), or the identity with detach_originals=False
    assert torch.equal(g, torch.zeros_like(f) if detach else torch.ones_like(f))


def test_low_precision_selects_and_mixes_in_fp32():
    f, y = batch(25, 7, 4, dtype=torch.bfloat16, seed=9)
    for dtype in (torch.bfloat16, torch.float16):
        x = f.to(dtype)
        lo = hard_pair_mixup(x, y, generator=torch.Generator().manual_seed(2))
        hi = hard_pair_mixup(x.float(), y, generator=torch.Generator().manual_seed(2))
        assert lo.features.dtype == dtype and lo.soft_labels.dtype == torch.float32
        assert torch.equal(lo.features, hi.features.to(dtype))
        assert torch.equal(lo.soft_labels, hi.soft_labels) and torch.equal(lo.groups, hi.groups)


def test_groups_match_the_official_encoding_and_feed_focal_loss():
    f, y = batch(32, 6, 4, seed=5)
    f.requires_grad_(True)
    out = hard_pair_mixup(f, y, generator=torch.Generator().manual_seed(0))
    code = out.soft_labels @ (10.0 ** torch.arange(4, dtype=torch.float64))  # L226-228, in float64
    official = torch.unique(code, return_inverse=True)[1]                     # LabelEncoder (L230-232)
    assert canonical(out.groups) == canonical(official)
    assert len(set(out.groups.tolist())) > 4  # the mixed rows form groups of their own
    z = torch.nn.functional.normalize(out.features, dim=1)
    loss = regops.focal_supcon_loss(z, out.groups)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


BAD = [
    (lambda f, y: dict(features=f[0], labels=y), ValueError, "features: expected a 2-D tensor"),
    (lambda f, y: dict(features=f[None], labels=y), ValueError, "features: expected a 2-D tensor"),
    (lambda f, y: dict(features=f[:0], labels=y[:0]), ValueError, "features: expected at least one row"),
    (lambda f, y: dict(features=f.int(), labels=y), TypeError, "features: expected dtype in"),
    (lambda f, y: dict(features=f, labels=y[:, None]), ValueError, "labels: expected a 1-D tensor"),
    (lambda f, y: dict(features=f, labels=y[:-1]), ValueError, "labels: expected shape (6,)"),
    (lambda f, y: dict(features=f, labels=y.float()), TypeError, "labels: expected dtype in"),
    (lambda f, y: dict(features=f, labels=y - 5), ValueError, "labels: expected class ids >= 0"),
    (lambda f, y: dict(features=f, labels=y, num_classes=2), ValueError, "labels: expected class ids in [0, 2)"),
    (lambda f, y: dict(features=f, labels=y, num_classes=0), ValueError, "num_classes: expected None or a positive"),
    (lambda f, y: dict(features=f, labels=y, mixup_alpha=0.0), ValueError, "mixup_alpha: expected a positive"),
    (lambda f, y: dict(features=f, labels=y, mixup_alpha=math.inf), ValueError, "mixup_alpha: expected"),
    (lambda f, y: dict(features=f, labels=y, negative_lam_min=1.5), ValueError, "negative_lam_min: expected"),
    (lambda f, y: dict(features=f, labels=y, mining="hardest"), ValueError, "mining: expected one of"),
    (lambda f, y: dict(features=f, labels=y, detach_originals=1), TypeError, "detach_originals: expected a bool"),
    (lambda f, y: dict(features=f, labels=y, generator=3), TypeError, "generator: expected None or a torch"),
    (lambda f, y: dict(features=f, labels=y, impl="cpu"), RuntimeError, "impl: expected an impl that can run"),
    (lambda f, y: dict(features=f, labels=y, impl="fast"), ValueError, "impl: expected one of"),
]


@pytest.mark.parametrize("make,exc,msg", BAD)
def test_bad_input(make, exc, msg):
    f, y = batch(6, 3, 3)
    with pytest.raises(exc, match="^" + re.escape("regops.hard_pair_mixup: " + msg)):
        hard_pair_mixup(**make(f, y))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_features(bad):
    f, y = batch(6, 3, 3)
    f[4, 1] = bad
    want = r"^regops\.hard_pair_mixup: features: expected finite values, got .* at index \(4, 1\)$"
    with pytest.raises(ValueError, match=want):
        hard_pair_mixup(f, y)


@requires_cuda
@pytest.mark.cuda
def test_cuda_matches_cpu_with_a_cpu_generator():
    f, y = batch(64, 16, 5, dtype=torch.float32)
    cpu = hard_pair_mixup(f, y, generator=torch.Generator().manual_seed(0))
    gpu = hard_pair_mixup(f.cuda(), y.cuda(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(gpu.groups.cpu(), cpu.groups)
    torch.testing.assert_close(gpu.features.cpu(), cpu.features, atol=0, rtol=0)
