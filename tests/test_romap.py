"""masked_l1_anchor (RoMaP's L1 anchor, from the paper's abstract: no official code) against a per-element loop,
mask broadcasting, soft masks, the all-zero mask, gradients, compile, dtypes, fuzzing, bad input."""
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import regops  # noqa: F401  (loads the package the ops live in)
from regops import masked_l1_anchor

from tolerances import assert_close


def loop_anchor(render, target, mask, reduction):
    """Per element of render's shape: m·|r − t|, with m the mask entry that broadcasting reads."""
    r, t = render.double(), target.double()
    m = mask.double().expand(render.shape)
    num = den = 0.0
    flat_r, flat_t, flat_m = r.reshape(-1).tolist(), t.reshape(-1).tolist(), m.reshape(-1).tolist()
    for ri, ti, mi in zip(flat_r, flat_t, flat_m):
        num += mi * abs(ri - ti)
        den += mi
    if reduction == "sum":
        return num
    if reduction == "pixel_mean":
        return num / len(flat_r)
    return num / den if den > 0 else 0.0


def images(shape, mask_shape, seed=0, soft=False, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    t = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    m = torch.rand(mask_shape, generator=g, dtype=torch.float64)
    m = m.to(dtype) if soft else (m > 0.5).to(dtype)
    return r, t, m


@pytest.mark.smoke
@pytest.mark.parametrize("mask_shape", [(2, 1, 5, 6), (2, 3, 5, 6), (5, 6), (1, 1, 5, 6), (2, 1, 1, 1)])
@pytest.mark.parametrize("reduction", ["mean", "pixel_mean", "sum"])
@pytest.mark.parametrize("soft", [False, True])
def test_matches_loop(mask_shape, reduction, soft):
    r, t, m = images((2, 3, 5, 6), mask_shape, seed=len(mask_shape), soft=soft)
    got = masked_l1_anchor(r, t, m, reduction=reduction)
    assert abs(got.item() - loop_anchor(r, t, m, reduction)) < 1e-12


def test_binary_mask_readings():
    r, t, m = images((2, 3, 8, 8), (2, 1, 8, 8), seed=1)
    # pixel_mean on a 0/1 mask is F.l1_loss of the masked images
    assert_close(masked_l1_anchor(r, t, m, reduction="pixel_mean"), F.l1_loss(m * r, m * t))
    # mean: the L1 mean over the selected pixels (all channels)
    sel = m.expand_as(r).bool()
    assert_close(masked_l1_anchor(r, t, m), (r[sel] - t[sel]).abs().mean())
    # a bool mask is the same as its 0/1 float
    assert torch.equal(masked_l1_anchor(r, t, m.bool()), masked_l1_anchor(r, t, m))
    none = masked_l1_anchor(r, t, m, reduction="none")
    assert none.shape == r.shape and torch.equal(none, m * (r - t).abs())
    # a full mask is the plain L1 mean
    assert_close(masked_l1_anchor(r, t, torch.ones(1)), F.l1_loss(r, t))


def test_all_zero_mask_is_zero_not_nan():
    r, t, _ = images((2, 3, 4, 4), (1,), seed=2)
    r.requires_grad_(True)
    m = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    out = masked_l1_anchor(r, t, m)
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(r.grad).all() and (r.grad == 0).all()
    # an empty batch: nothing to anchor
    assert masked_l1_anchor(r[:0].detach(), t[:0], m[:0]).item() == 0.0


def test_gradcheck():
    r, t, m = images((2, 2, 3, 3), (2, 1, 3, 3), seed=3, soft=True)
    t = t + 0.05 * torch.sign(r - t)  # keep |r − t| away from the kink at 0
    for reduction in ("mean", "pixel_mean", "sum"):
        assert torch.autograd.gradcheck(lambda a, b, c: masked_l1_anchor(a, b, c, reduction=reduction),
                                        (r.clone().requires_grad_(True), t.clone().requires_grad_(True),
                                         m.clone().requires_grad_(True)))


def test_compile_fullgraph():
    r, t, m = images((2, 3, 6, 6), (2, 1, 6, 6), seed=4, soft=True, dtype=torch.float32)

    def f(r, t, m):
        return masked_l1_anchor(r, t, m)
    torch._dynamo.reset()
    assert_close(torch.compile(f, fullgraph=True, backend="aot_eager")(r, t, m), f(r, t, m))
    torch._dynamo.reset()
    assert torch.compile(f, fullgraph=True, backend="aot_eager")(r, t, torch.zeros_like(m)).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision(dtype):
    r, t, m = images((2, 3, 16, 16), (2, 1, 16, 16), seed=5, soft=True)
    lo = [x.to(dtype) for x in (r, t, m)]
    got = masked_l1_anchor(*lo)
    assert got.dtype == torch.float32
    assert_close(got, masked_l1_anchor(*[x.double() for x in lo]).float(), torch.float32)


@given(B=st.integers(0, 3), C=st.integers(1, 4), H=st.integers(1, 5), W=st.integers(1, 5),
       mask_kind=st.sampled_from(["b1hw", "bchw", "hw", "scalar"]), soft=st.booleans(),
       reduction=st.sampled_from(["mean", "sum"]))
def test_fuzz(B, C, H, W, mask_kind, soft, reduction):
    mask_shape = {"b1hw": (B, 1, H, W), "bchw": (B, C, H, W), "hw": (H, W), "scalar": ()}[mask_kind]
    r, t, m = images((B, C, H, W), mask_shape, seed=B + C + H + W, soft=soft)
    got = masked_l1_anchor(r, t, m, reduction=reduction)
    assert torch.isfinite(got)
    assert abs(got.item() - loop_anchor(r, t, m, reduction)) < 1e-12


def _raises(kind, msg, fn, *a, **k):
    with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
        fn(*a, **k)


def test_bad_input():
    r, t, m = images((2, 3, 4, 4), (2, 1, 4, 4))
    E = "regops.masked_l1_anchor: "
    f = masked_l1_anchor
    _raises(ValueError, E + "mask: expected a shape that broadcasts to render's (2, 3, 4, 4), got shape (2, 2, 4, 4)",
            f, r, t, torch.ones(2, 2, 4, 4, dtype=torch.float64))
    _raises(ValueError, E + "mask: expected a shape that broadcasts to render's (2, 3, 4, 4), got shape "
            "(3, 2, 3, 4, 4)", f, r, t, torch.ones(3, 2, 3, 4, 4, dtype=torch.float64))
    _raises(ValueError, E + "target: expected shape (2, 3, 4, 4) (as render), got shape (2, 3, 4, 5)", f, r,
            torch.zeros(2, 3, 4, 5, dtype=torch.float64), m)
    _raises(TypeError, E + "target: expected dtype float64 (as render), got float32", f, r, t.float(), m)
    _raises(TypeError, E + "mask: expected dtype in (float16, bfloat16, float32, float64, bool), got int64", f, r, t,
            m.long())
    m2 = m.clone()
    m2[1, 0, 2, 3] = 1.5
    _raises(ValueError, E + "mask: expected values in [0, 1], got 1.5 at index (1, 0, 2, 3)", f, r, t, m2)
    m2[1, 0, 2, 3] = float("nan")
    _raises(ValueError, E + "mask: expected finite values, got nan at index (1, 0, 2, 3)", f, r, t, m2)
    _raises(ValueError, E + "reduction: expected one of 'mean', 'pixel_mean', 'sum', 'none', got 'max'", f, r, t, m,
            reduction="max")
    _raises(ValueError, E + "render: expected at least one element for reduction='pixel_mean', got shape "
            "(0, 3, 4, 4)", f, r[:0], t[:0], m[:0], reduction="pixel_mean")
    _raises(TypeError, E + "render: expected a torch.Tensor, got list", f, [1.0], t, m)
    _raises(RuntimeError, E + "impl: expected an impl that can run here, got 'cuda': regops.masked_l1_anchor has no "
            "cuda kernel", f, r, t, m, impl="cuda")
