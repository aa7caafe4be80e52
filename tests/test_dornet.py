"""contrast_ratio_loss against a transcription of DORNet's ContrastLoss.forward (yanzq95/DORNet, net/CR.py) on
given feature lists, the stop-gradients, the VGG19 slice table, gradients, compile, dtypes, fuzzing, bad input."""
import re

import pytest
import torch
import torch.nn as nn
from hypothesis import given, strategies as st

import regops  # noqa: F401  (loads the package the ops live in)
from regops import contrast_ratio_loss, dornet_vgg19_slices

from tolerances import assert_close


def official(a_vgg, p_vgg, n_vgg, ablation=False):
    """ContrastLoss.forward after the VGG: the per-level loop as written."""
    l1 = nn.L1Loss()
    weights = [1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0]
    loss = 0
    for i in range(len(a_vgg)):
        d_ap = l1(a_vgg[i], p_vgg[i].detach())
        if not ablation:
            d_an = l1(a_vgg[i], n_vgg[i].detach())
            contrastive = d_ap / (d_an + 1e-7)
        else:
            contrastive = d_ap
        loss += weights[i] * contrastive
    return loss


# relu1_1..relu5_1 of a 32x32 input: the official shapes
LEVELS = [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4), (2, 512, 2, 2)]


def feats(shapes, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [[torch.relu(torch.randn(s, generator=g, dtype=torch.float64)).to(dtype) for s in shapes]
            for _ in range(3)]


@pytest.mark.smoke
@pytest.mark.parametrize("ratio", [True, False])
def test_matches_official(ratio):
    a, p, n = feats(LEVELS)
    got = contrast_ratio_loss(a, p, n, ratio=ratio)
    assert_close(got, official(a, p, n, ablation=not ratio))


def test_stop_gradients_match_official():
    a, p, n = feats([(1, 4, 3, 3)] * 5, seed=1)
    a1 = [t.clone().requires_grad_(True) for t in a]
    p1 = [t.clone().requires_grad_(True) for t in p]
    n1 = [t.clone().requires_grad_(True) for t in n]
    contrast_ratio_loss(a1, p1, n1).backward()
    a2 = [t.clone().requires_grad_(True) for t in a]
    official(a2, p, n).backward()
    for u, v in zip(a1, a2):
        assert_close(u.grad, v.grad)
    assert all(t.grad is None for t in p1 + n1)          # positives and negatives detached, as official


def test_weights_eps_and_levels():
    a, p, n = feats([(3, 5), (7,), (2, 2, 2)], seed=2)
    w = (0.5, 2.0, 0.0)
    want = sum(wi * (ai - pi).abs().mean() / ((ai - ni).abs().mean() + 1e-3) for wi, ai, pi, ni in zip(w, a, p, n))
    assert_close(contrast_ratio_loss(a, p, n, weights=w, eps=1e-3), want)
    # the negative equal to the anchor: d_an = 0, the ratio is d_ap / eps (large, finite)
    got = contrast_ratio_loss(a[:1], p[:1], a[:1], weights=(1.0,))
    assert torch.isfinite(got)
    assert_close(got, (a[0] - p[0]).abs().mean() / 1e-7)


def test_vgg19_slices_are_the_first_relu_of_each_block():
    """torchvision's vgg19 features (config "E"): conv, ReLU per channel entry, a max-pool per "M"."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    layers = []
    for v in cfg:
        layers += ["pool"] if v == "M" else ["conv", "relu"]
    slices = dornet_vgg19_slices()
    assert [s[0] for s in slices] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert [(s[1], s[2]) for s in slices] == [(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)]
    block_starts = [0] + [i + 1 for i, t in enumerate(layers) if t == "pool"][:4]
    for (name, start, stop), first_conv in zip(slices, block_starts):
        assert layers[stop - 1] == "relu" and layers[stop - 2] == "conv" and stop - 2 == first_conv, name
    assert all(slices[i][2] == slices[i + 1][1] for i in range(4))      # contiguous, as chained


def test_gradcheck():
    a, p, n = feats([(2, 3), (4,)], seed=3)
    for ratio in (True, False):
        assert torch.autograd.gradcheck(
            lambda x, y: contrast_ratio_loss([x, y], p, n, weights=(0.25, 1.0), ratio=ratio),
            tuple(t.requires_grad_(True) for t in a))


def test_compile_fullgraph():
    a, p, n = feats([(2, 4, 6, 6), (2, 8, 3, 3)] + [(2, 3)] * 3, seed=4, dtype=torch.float32)

    def f(a, p, n):
        return contrast_ratio_loss(a, p, n)
    torch._dynamo.reset()
    assert_close(torch.compile(f, fullgraph=True, backend="aot_eager")(a, p, n), f(a, p, n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision(dtype):
    a, p, n = feats(LEVELS, seed=5)
    lo = [[t.to(dtype) for t in x] for x in (a, p, n)]
    got = contrast_ratio_loss(*lo)
    assert got.dtype == torch.float32
    exact = contrast_ratio_loss(*[[t.double() for t in x] for x in lo])  # the inputs' rounding only
    assert_close(got, exact.float(), torch.float32)


@given(levels=st.integers(1, 6), data=st.data())
def test_fuzz(levels, data):
    shapes = [tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))) for _ in range(levels)]
    w = data.draw(st.lists(st.floats(0, 2), min_size=levels, max_size=levels))
    a, p, n = feats(shapes, seed=levels)
    want = sum(wi * (ai - pi).abs().mean() / ((ai - ni).abs().mean() + 1e-7) for wi, ai, pi, ni in zip(w, a, p, n))
    assert_close(contrast_ratio_loss(a, p, n, weights=w), torch.as_tensor(want, dtype=torch.float64))


def _raises(kind, msg, fn, *a, **k):
    with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
        fn(*a, **k)


def test_bad_input():
    a, p, n = feats(LEVELS)
    E = "regops.contrast_ratio_loss: "
    f = contrast_ratio_loss
    _raises(ValueError, E + "anchor_feats: expected 5 feature levels (one per weight), got 4", f, a[:4], p[:4], n[:4])
    _raises(ValueError, E + "neg_feats: expected 5 feature levels (one per weight), got 4", f, a, p, n[:4])
    _raises(ValueError, E + "pos_feats[2]: expected shape (2, 256, 8, 8) (as anchor_feats[2]), got shape "
            "(2, 256, 4, 4)", f, a, p[:2] + [p[3][:, :256]] + p[3:], n)
    _raises(ValueError, E + "eps: expected a finite eps > 0, got 0", f, a, p, n, eps=0)
    _raises(ValueError, E + "eps: expected a finite eps > 0, got -1e-07", f, a, p, n, eps=-1e-7)
    _raises(ValueError, E + "weights[1]: expected a finite weight >= 0, got -1.0", f, a[:2], p[:2], n[:2],
            weights=(1.0, -1.0))
    _raises(ValueError, E + "weights: expected at least one level, got an empty sequence", f, [], [], [], weights=())
    _raises(TypeError, E + "anchor_feats: expected a list of per-level feature tensors, got Tensor", f, a[0], p, n)
    _raises(TypeError, E + "neg_feats[0]: expected dtype float64 (as anchor_feats[0]), got float32", f, a, p,
            [n[0].float()] + n[1:])
    _raises(TypeError, E + "pos_feats[0]: expected dtype in (float16, bfloat16, float32, float64), got int64", f, a,
            [p[0].long()] + p[1:], n)
    _raises(ValueError, E + "anchor_feats[0]: expected at least one element, got shape (0, 3)", f,
            [torch.zeros(0, 3)], [torch.zeros(0, 3)], [torch.zeros(0, 3)], weights=(1.0,))
    _raises(TypeError, E + "ratio: expected a bool, got str 'yes'", f, a, p, n, ratio="yes")
    bad = a[4].clone()
    bad[0, 0, 0, 0] = float("inf")
    _raises(ValueError, E + "anchor_feats[4]: expected finite values, got inf at index (0, 0, 0, 0)", f,
            a[:4] + [bad], p, n)
    _raises(RuntimeError, E + "impl: expected an impl that can run here, got 'triton': regops.contrast_ratio_loss "
            "has no triton kernel", f, a, p, n, impl="triton")
