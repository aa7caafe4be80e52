"""CoRe's context regularizers against transcriptions of the official code (pangy9/CoRe: utils.py
get_context_embedding_loss L65-138; train.py L1517-1569), per-sample positions, zero norms, gradients, compile,
dtypes, fuzzing, bad input."""
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import regops  # noqa: F401  (loads the package the ops live in)
from regops import context_attention_reg, context_embedding_reg
from regops.ops.core_reg import context_mask

from tolerances import assert_close


def official_embedding(obj_cond, cat_cond, start, n_tokens, eot):
    """get_context_embedding_loss on one prompt (1, T, C), without the weight."""
    o = torch.cat([obj_cond[:, :start], obj_cond[:, start + n_tokens: eot + 1]], dim=1)
    c = torch.cat([cat_cond[:, :start], cat_cond[:, start + n_tokens: eot + 1]], dim=1)
    return 1 - F.cosine_similarity(c, o, dim=1).mean()


def feature_cosine(obj_cond, cat_cond, start, n_tokens, eot):
    """The "feature" option by hand: per kept token the cosine over C, then the mean."""
    keep = list(range(start)) + list(range(start + n_tokens, eot + 1))
    cos = [float(obj_cond[0, t] @ cat_cond[0, t] / (obj_cond[0, t].norm() * cat_cond[0, t].norm())) for t in keep]
    return 1 - sum(cos) / len(cos)


def official_attention(obj_maps, cat_maps, start, n_tokens, eot):
    """train.py L1551-1567 without the weight: obj_maps, cat_maps lists of (B, T, heads, HW)."""
    loss = torch.tensor(0.0, dtype=torch.float64)
    for attn_maps, category_attn_maps in zip(obj_maps, cat_maps):
        a = attn_maps.mean((2, 3))
        c = category_attn_maps.mean((2, 3))
        a = torch.cat([a[:, :start], a[:, start + n_tokens:eot + 1]], dim=1)
        c = torch.cat([c[:, :start], c[:, start + n_tokens:eot + 1]], dim=1)
        for am, cm in zip(a, c):
            loss = loss + F.mse_loss(am, cm)
    return loss / len(obj_maps)


def emb(B, T, C, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, C, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(B, T, C, generator=g, dtype=torch.float64).to(dtype))


def attn(B, T, shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = [torch.softmax(torch.randn(B, T, h, p, generator=g, dtype=torch.float64), 1) for h, p in shapes]
    r = [torch.softmax(torch.randn(B, T, h, p, generator=g, dtype=torch.float64), 1) for h, p in shapes]
    return a, r


@pytest.mark.smoke
@pytest.mark.parametrize("T,C,s,L,e", [(77, 16, 5, 1, 7), (77, 8, 1, 3, 10), (12, 5, 0, 1, 1), (6, 3, 2, 2, 5),
                                       (77, 4, 4, 1, 76)])
def test_embedding_matches_official(T, C, s, L, e):
    x, y = emb(1, T, C, seed=T + s)
    got = context_embedding_reg(x, y, s, concept_len=L, eot_index=e)
    assert_close(got, official_embedding(x, y, s, L, e))
    got_f = context_embedding_reg(x, y, s, concept_len=L, eot_index=e, cos_dim="feature")
    assert abs(got_f.item() - feature_cosine(x, y, s, L, e)) < 1e-12
    # (T, C): one prompt, the same value
    assert_close(context_embedding_reg(x[0], y[0], s, concept_len=L, eot_index=e), got)
    # padding after EOT and the concept itself do not count
    x2, y2 = x.clone(), y.clone()
    x2[:, e + 1:] = 1e3
    x2[:, s:s + L] = -7
    assert_close(context_embedding_reg(x2, y2, s, concept_len=L, eot_index=e), got)


def test_embedding_batch_and_per_sample_positions():
    B, T, C = 4, 20, 6
    x, y = emb(B, T, C, seed=3)
    s = torch.tensor([1, 3, 0, 5])
    e = torch.tensor([4, 10, 19, 6])
    per = [official_embedding(x[b:b + 1], y[b:b + 1], int(s[b]), 1, int(e[b])) for b in range(B)]
    got = context_embedding_reg(x, y, s, eot_index=e, reduction="none")
    assert got.shape == (B,)
    assert_close(got, torch.stack(per))
    assert_close(context_embedding_reg(x, y, s, eot_index=e), torch.stack(per).mean())
    assert_close(context_embedding_reg(x, y, s, eot_index=e, reduction="sum"), torch.stack(per).sum())
    # an int broadcasts over the batch, as a 0-d tensor does
    a = context_embedding_reg(x, y, 2, eot_index=e, reduction="none")
    b = context_embedding_reg(x, y, torch.tensor(2), eot_index=e, reduction="none")
    assert torch.equal(a, b)
    m = context_mask(T, s, eot_index=e, batch=B)
    assert m.shape == (B, T) and m[0].tolist()[:6] == [True, False, True, True, True, False]


def test_embedding_zero_norm_is_not_nan():
    x, y = emb(2, 10, 4, seed=1)
    x = torch.zeros_like(x)
    for cos_dim in ("token", "feature"):
        got = context_embedding_reg(x, y, 2, eot_index=6, cos_dim=cos_dim)
        assert torch.isfinite(got) and got.item() == 1.0           # cosine_similarity's eps: a zero vector -> 0
    # one zero channel over the kept tokens: its cosine is 0, the others as official
    x, y = emb(1, 10, 4, seed=2)
    x[..., 1] = 0
    assert_close(context_embedding_reg(x, y, 2, eot_index=6), official_embedding(x, y, 2, 1, 6))
    x.requires_grad_(True)
    context_embedding_reg(x, y, 2, eot_index=6).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.smoke
@pytest.mark.parametrize("shapes", [[(5, 16)], [(5, 64), (5, 16), (10, 4)], [(1, 1)]])
def test_attention_matches_official(shapes):
    B, T, s, L, e = 3, 77, 5, 2, 9
    a, r = attn(B, T, shapes, seed=len(shapes))
    want = official_attention(a, r, s, L, e)
    assert_close(context_attention_reg(a, r, s, concept_len=L, eot_index=e), want)
    # pre-reduced (B, T) maps give the same
    a2, r2 = [t.mean((2, 3)) for t in a], [t.mean((2, 3)) for t in r]
    assert_close(context_attention_reg(a2, r2, s, concept_len=L, eot_index=e), want)
    assert_close(context_attention_reg(a, r, s, concept_len=L, eot_index=e, reduction="mean"), want / B)
    per = context_attention_reg(a, r, s, concept_len=L, eot_index=e, reduction="none")
    assert per.shape == (B,) and abs(per.sum().item() - want.item()) < 1e-15
    if len(shapes) == 1:   # a bare tensor is one layer
        assert_close(context_attention_reg(a[0], r[0], s, concept_len=L, eot_index=e), want)


def test_attention_per_sample_positions():
    B, T = 3, 15
    a, r = attn(B, T, [(2, 3), (4, 1)], seed=5)
    s, e = torch.tensor([1, 4, 0]), torch.tensor([3, 14, 2])
    want = sum(official_attention([t[b:b + 1] for t in a], [t[b:b + 1] for t in r], int(s[b]), 1, int(e[b]))
               for b in range(B))
    assert_close(context_attention_reg(a, r, s, eot_index=e), want)


def test_gradcheck():
    x, y = emb(2, 9, 3, seed=4)
    for cos_dim in ("token", "feature"):
        assert torch.autograd.gradcheck(
            lambda u, v: context_embedding_reg(u, v, torch.tensor([1, 2]), eot_index=torch.tensor([5, 8]),
                                               concept_len=2, cos_dim=cos_dim),
            (x.requires_grad_(True), y.requires_grad_(True)))
    a, r = attn(2, 8, [(2, 3), (1, 2)], seed=6)
    a = [t.requires_grad_(True) for t in a]
    r = [t.requires_grad_(True) for t in r]
    assert torch.autograd.gradcheck(
        lambda a0, a1, r0, r1: context_attention_reg([a0, a1], [r0, r1], 2, eot_index=6), (*a, *r))


def test_compile_fullgraph():
    x, y = emb(2, 12, 4, seed=7, dtype=torch.float32)
    s, e = torch.tensor([1, 3]), torch.tensor([6, 9])

    def f(u, v, s, e):
        return context_embedding_reg(u, v, s, eot_index=e, concept_len=2)
    want = f(x, y, s, e)
    torch._dynamo.reset()
    assert_close(torch.compile(f, fullgraph=True, backend="aot_eager")(x, y, s, e), want)
    torch._dynamo.reset()
    assert_close(torch.compile(f, fullgraph=True, backend="inductor")(x, y, s, e), want)
    a, r = attn(2, 12, [(2, 3), (1, 5)], seed=8)

    def g(a, r):
        return context_attention_reg(a, r, 3, eot_index=8)
    torch._dynamo.reset()
    assert_close(torch.compile(g, fullgraph=True, backend="aot_eager")(a, r), g(a, r))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision(dtype):
    x, y = emb(2, 20, 8, seed=9)
    want = context_embedding_reg(x, y, 3, eot_index=12)
    got = context_embedding_reg(x.to(dtype), y.to(dtype), 3, eot_index=12)
    assert got.dtype == torch.float32
    exact_lowp = context_embedding_reg(x.to(dtype).double(), y.to(dtype).double(), 3, eot_index=12)
    assert_close(got, exact_lowp.float(), torch.float32)          # only the inputs' rounding
    assert abs(got.item() - want.item()) < (0.02 if dtype == torch.bfloat16 else 1e-5)
    a, r = attn(2, 20, [(2, 4)], seed=10)
    got = context_attention_reg([a[0].to(dtype)], [r[0].to(dtype)], 3, eot_index=12)
    exact_lowp = context_attention_reg([a[0].to(dtype).double()], [r[0].to(dtype).double()], 3, eot_index=12)
    assert got.dtype == torch.float32
    assert_close(got, exact_lowp.float(), torch.float32)


@given(B=st.integers(1, 4), T=st.integers(2, 20), C=st.integers(1, 5), data=st.data())
def test_fuzz_against_official(B, T, C, data):
    L = data.draw(st.integers(1, T - 1))
    s = data.draw(st.integers(0, T - 1 - L))
    e = data.draw(st.integers(s + L, T - 1))
    x, y = emb(B, T, C, seed=B * 1000 + T * 10 + C)
    want = torch.stack([official_embedding(x[b:b + 1], y[b:b + 1], s, L, e) for b in range(B)]).mean()
    assert_close(context_embedding_reg(x, y, s, concept_len=L, eot_index=e), want)
    a, r = attn(B, T, [(2, 3)], seed=T)
    assert_close(context_attention_reg(a, r, s, concept_len=L, eot_index=e), official_attention(a, r, s, L, e))


def _raises(kind, msg, fn, *a, **k):
    with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
        fn(*a, **k)


def test_bad_input():
    x, y = emb(2, 10, 3)
    E = "regops.context_embedding_reg: "
    f = context_embedding_reg
    _raises(ValueError, E + "concept_index: expected concept_index + concept_len <= eot_index (the concept before "
            "EOT), got concept_index 5, concept_len 2, eot_index 6", f, x, y, 5, concept_len=2, eot_index=6)
    _raises(ValueError, E + "concept_index: expected a position >= 0, got -1", f, x, y, -1, eot_index=6)
    _raises(ValueError, E + "eot_index: expected a position < T = 10, got 10", f, x, y, 2, eot_index=10)
    _raises(ValueError, E + "concept_index: expected concept_index + concept_len <= eot_index (the concept before "
            "EOT), got concept_index 4, concept_len 1, eot_index 3 (sample 1)", f, x, y, torch.tensor([1, 4]),
            eot_index=torch.tensor([5, 3]))
    _raises(ValueError, E + "concept_index: expected an int or an integer tensor of shape () or (2,), got shape (3,)",
            f, x, y, torch.tensor([1, 2, 3]), eot_index=6)
    _raises(TypeError, E + "concept_index: expected an int or an integer tensor, got float 1.5", f, x, y, 1.5,
            eot_index=6)
    _raises(TypeError, E + "eot_index: expected an int or an integer tensor, got a tensor of dtype float32", f, x, y,
            1, eot_index=torch.tensor([5.0, 6.0]))
    _raises(ValueError, E + "concept_len: expected an int >= 1, got 0", f, x, y, 1, concept_len=0, eot_index=6)
    _raises(ValueError, E + "E_ref: expected shape (2, 10, 3) (as E_reg), got shape (2, 10, 4)", f, x,
            torch.zeros(2, 10, 4, dtype=torch.float64), 1, eot_index=6)
    _raises(TypeError, E + "E_ref: expected dtype float64 (as E_reg), got float32", f, x, y.float(), 1, eot_index=6)
    _raises(ValueError, E + "E_reg: expected a 2-D or 3-D tensor, got 1-D tensor of shape (3,)", f, x[0, 0],
            y[0, 0], 0, eot_index=1)
    _raises(ValueError, E + "E_reg: expected at least one prompt of at least one token and one channel (B, T, C), "
            "got shape (0, 10, 3)", f, x[:0], y[:0], 1, eot_index=6)
    _raises(ValueError, E + "cos_dim: expected one of 'token', 'feature', got 'channel'", f, x, y, 1, eot_index=6,
            cos_dim="channel")
    _raises(TypeError, "context_embedding_reg() missing 1 required keyword-only argument: 'eot_index'", f, x, y, 1)
    x2 = x.clone()
    x2[1, 2, 0] = float("nan")
    _raises(ValueError, E + "E_reg: expected finite values, got nan at index (1, 2, 0)", f, x2, y, 1, eot_index=6)
    _raises(RuntimeError, E + "impl: expected an impl that can run here, got 'cpu': regops.context_embedding_reg "
            "has no cpu kernel", f, x, y, 1, eot_index=6, impl="cpu")

    a, r = attn(2, 10, [(2, 3), (1, 4)])
    A = "regops.context_attention_reg: "
    g = context_attention_reg
    _raises(ValueError, A + "A_reg: expected at least one cross-attention layer, got an empty list", g, [], [], 1,
            eot_index=6)
    _raises(ValueError, A + "A_ref: expected 2 layers (as A_reg), got 1", g, a, r[:1], 1, eot_index=6)
    _raises(ValueError, A + "A_ref[1]: expected shape (2, 10, 1, 4) (as A_reg[1]), got shape (2, 10, 2, 3)", g, a,
            [r[0], r[0]], 1, eot_index=6)
    _raises(ValueError, A + "A_reg[1]: expected (B, T) = (2, 10) (as A_reg[0]), got shape (2, 9, 1, 4)", g,
            [a[0], a[1][:, :9]], [r[0], r[1][:, :9]], 1, eot_index=6)
    _raises(ValueError, A + "A_reg[0]: expected a 2-D or 4-D tensor, got 3-D tensor of shape (2, 10, 2)", g,
            [a[0][..., 0]], [r[0][..., 0]], 1, eot_index=6)
    _raises(ValueError, A + "concept_index: expected concept_index + concept_len <= eot_index (the concept before "
            "EOT), got concept_index 6, concept_len 1, eot_index 6", g, a, r, 6, eot_index=6)
    _raises(ValueError, A + "eot_index: expected a position < T = 10, got 12", g, a, r, 1, eot_index=12)
    _raises(ValueError, A + "A_reg[0]: expected at least one sample, token, head and pixel, got shape (2, 10, 2, 0)",
            g, [a[0][..., :0]], [r[0][..., :0]], 1, eot_index=6)
    _raises(TypeError, A + "A_reg: expected a list of per-layer attention tensors, got dict", g, {}, r, 1,
            eot_index=6)
    _raises(TypeError, A + "A_reg[1]: expected dtype float64 (as A_reg[0]), got float32", g,
            [a[0], a[1].float()], [r[0], r[1].float()], 1, eot_index=6)
    _raises(TypeError, A + "A_ref[0]: expected dtype float64 (as A_reg[0]), got float32", g,
            a[:1], [r[0].float()], 1, eot_index=6)
