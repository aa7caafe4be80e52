"""VGNN (NYUMedML/GNN_for_EHR model.py, VariationalGNN): gaussian_kl against the official KL line transcribed (with
the official integer indexing on a small fake model output), the corrected node selection, reparameterize against
the official reparameterise, gradients, compile, dtypes, fuzzing, bad input."""
import math
import re

import pytest
import torch
from hypothesis import given, strategies as st

import regops
from regops import gaussian_kl, reparameterize, select_present_nodes

from tolerances import assert_close


def official_kl(mu_nodes, logvar_nodes, data):
    """model.py encoder_decoder L199-201: `mu = mu[data, :]`, `logvar = logvar[data, :]` with the patient's 0/1
    LongTensor, then 0.5 * sum(exp(logvar) - logvar - 1 + mu^2) / mu.size(0)."""
    mu = mu_nodes[data, :]
    logvar = logvar_nodes[data, :]
    return 0.5 * torch.sum(logvar.exp() - logvar - 1 + mu.pow(2)) / mu.size()[0]


def official_reparameterise(mu, logvar, eps):
    """model.py L177-183 in training, with the normal draw given: std = exp(0.5·logvar); eps·std + mu."""
    std = logvar.mul(0.5).exp()
    return eps.mul(std).add(mu)


def fake_node_stats(num_nodes, d, seed=0, dtype=torch.float64):
    """A fake encoder output as the official: node features -> Linear(d, 2d) -> view(-1, 2, d) -> mu, logvar."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(num_nodes, d, generator=g, dtype=dtype)
    W = torch.randn(2 * d, d, generator=g, dtype=dtype) * 0.5
    b = torch.randn(2 * d, generator=g, dtype=dtype) * 0.1
    out = (h @ W.t() + b).view(-1, 2, d)
    return out[:, 0, :], out[:, 1, :]


def multi_hot(D, seed, p=0.4):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(D, generator=g) < p).long()


def kl_terms(mu, logvar):
    return 0.5 * (logvar.exp() - logvar - 1 + mu * mu)


# ---------------------------------------------------------------------------------------------- gaussian_kl

def test_official_kl_with_official_indexing():
    D, d = 9, 4
    mu_n, lv_n = fake_node_stats(D + 2, d)  # nodes: 0 padding, 1..D codes, D+1 the patient node
    data = multi_hot(D, 1)
    expected = official_kl(mu_n, lv_n, data)
    # the official indexing picks node 0 for every absent code and node 1 for every present one: D rows
    rows = mu_n[data, :]
    assert rows.shape == (D, d)
    for j in range(D):
        assert torch.equal(rows[j], mu_n[int(data[j])])
    got = gaussian_kl(mu_n[data, :], lv_n[data, :], reduction="official")
    assert_close(got, expected)
    assert_close(gaussian_kl(mu_n[data, :], lv_n[data, :], feature_count=D), expected)
    # so it equals the KL of nodes 0 and 1 only, weighted by the counts
    n1 = int(data.sum())
    t = kl_terms(mu_n[:2], lv_n[:2]).sum(-1)
    assert_close(got, ((D - n1) * t[0] + n1 * t[1]) / D)


def test_official_batch_sum():
    B, D, d = 4, 7, 3
    stats = [fake_node_stats(D + 2, d, seed=b) for b in range(B)]
    datas = [multi_hot(D, 10 + b) for b in range(B)]
    expected = sum(official_kl(m, lv, x) for (m, lv), x in zip(stats, datas))  # forward L211-212: summed
    mu = torch.stack([m[x, :] for (m, _), x in zip(stats, datas)])
    lv = torch.stack([lv[x, :] for (_, lv), x in zip(stats, datas)])
    assert_close(gaussian_kl(mu, lv), expected)
    assert_close(gaussian_kl(mu, lv, reduction="official", feature_count=D), expected)


def test_corrected_selection_and_official_scale():
    B, D, d = 3, 8, 5
    stats = [fake_node_stats(D + 2, d, seed=20 + b) for b in range(B)]
    datas = [multi_hot(D, 30 + b) for b in range(B)]
    datas[1] = torch.zeros(D, dtype=torch.long)  # a patient without codes selects nothing
    expected = 0.0
    for (m, lv), x in zip(stats, datas):
        present = x.nonzero()[:, 0] + 1  # feature j is node j + 1 (data_to_edges)
        assert torch.equal(select_present_nodes(m, x), m[present])
        expected = expected + 0.5 * torch.sum(lv[present].exp() - lv[present] - 1 + m[present] ** 2) / D
    mu_b = torch.stack([m for m, _ in stats])
    lv_b = torch.stack([lv for _, lv in stats])
    x_b = torch.stack(datas)
    sel_mu, sel_lv = select_present_nodes(mu_b, x_b), select_present_nodes(lv_b, x_b)
    assert sel_mu.shape == (int(x_b.sum()), d)
    assert_close(gaussian_kl(sel_mu, sel_lv, feature_count=D), expected)
    # bool masks and offset 0
    x = datas[0]
    assert torch.equal(select_present_nodes(stats[0][0], x.bool()), stats[0][0][x.nonzero()[:, 0] + 1])
    assert torch.equal(select_present_nodes(stats[0][0], x, offset=0), stats[0][0][x.nonzero()[:, 0]])


def test_select_present_nodes_gradient():
    mu = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])
    select_present_nodes(mu, x).sum().backward()
    expected = torch.zeros(2, 6, 3, dtype=torch.float64)
    expected[0, [1, 3]] = 1
    expected[1, 4] = 1
    assert torch.equal(mu.grad, expected)


@pytest.mark.parametrize("reduction", ["official", "sum", "mean", "none"])
@pytest.mark.parametrize("shape", [(5, 3), (2, 5, 3)])
def test_reductions(reduction, shape):
    mu, lv = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    t = kl_terms(mu, lv)
    expected = {"official": t.sum() / shape[-2], "sum": t.sum(), "mean": t.mean(), "none": t}[reduction]
    assert_close(gaussian_kl(mu, lv, reduction=reduction), expected)


@pytest.mark.parametrize("reduction", ["official", "sum", "mean", "none"])
def test_gradcheck(reduction):
    mu = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, v: gaussian_kl(m, v, reduction=reduction, feature_count=6), (mu, lv))
    assert torch.autograd.gradgradcheck(lambda m, v: gaussian_kl(m, v, reduction=reduction), (mu, lv))


def test_numerics():
    # near logvar = 0 the naive exp(lv) − lv − 1 cancels to nothing in float32; expm1(lv) − lv keeps the digits
    lv = torch.tensor([[1e-4, -3e-4, 1e-3, 0.0]], dtype=torch.float32)
    mu = torch.zeros_like(lv)
    exact = kl_terms(mu.double(), lv.double())
    assert_close(gaussian_kl(mu, lv, reduction="none"), exact.float(), torch.float32, atol=0, rtol=1e-3)
    # large logvar stays finite in float32 up to exp's range; beyond it the term is inf, never nan
    lv = torch.tensor([[80.0, -80.0, 88.0]], dtype=torch.float32)
    out = gaussian_kl(torch.zeros(1, 3), lv, reduction="none")
    assert torch.isfinite(out).all()
    assert_close(out, kl_terms(torch.zeros(1, 3, dtype=torch.float64), lv.double()).float(), torch.float32)
    over = gaussian_kl(torch.zeros(1, 1), torch.full((1, 1), 89.0))
    assert over.item() == math.inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_computes_in_float32(dtype):
    mu, lv = torch.randn(3, 6, 4).to(dtype), torch.randn(3, 6, 4).to(dtype)
    out = gaussian_kl(mu, lv)
    assert out.dtype == torch.float32
    expected = kl_terms(mu.double(), lv.double()).sum() / 6
    assert_close(out, expected.float(), torch.float32)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(backend):
    if backend == "inductor":
        reductions = ["official"]
    else:
        reductions = ["official", "sum", "mean", "none"]
    mu = torch.randn(2, 5, 3, requires_grad=True)
    lv = torch.randn(2, 5, 3, requires_grad=True)
    for reduction in reductions:
        fn = torch.compile(lambda m, v: gaussian_kl(m, v, reduction=reduction, feature_count=7), fullgraph=True,
                           backend=backend)
        got, want = fn(mu, lv), gaussian_kl(mu, lv, reduction=reduction, feature_count=7)
        assert_close(got, want, torch.float32)
        g1 = torch.autograd.grad(got.sum(), (mu, lv))
        g2 = torch.autograd.grad(want.sum(), (mu, lv))
        for a, b in zip(g1, g2):
            assert_close(a, b, torch.float32)


@given(B=st.integers(0, 3), N=st.integers(1, 6), d=st.integers(0, 5), batched=st.booleans(),
       reduction=st.sampled_from(["official", "sum", "none"]), F=st.one_of(st.none(), st.integers(1, 9)),
       seed=st.integers(0, 2**16))
def test_fuzz(B, N, d, batched, reduction, F, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (B, N, d) if batched else (N, d)
    mu = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    lv = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    t = kl_terms(mu, lv)
    expected = {"official": t.sum() / (F or N), "sum": t.sum(), "none": t}[reduction]
    assert_close(gaussian_kl(mu, lv, reduction=reduction, feature_count=F), expected)


def test_empty():
    assert gaussian_kl(torch.zeros(0, 4, 3), torch.zeros(0, 4, 3)).item() == 0.0
    assert gaussian_kl(torch.zeros(0, 3), torch.zeros(0, 3), feature_count=5).item() == 0.0
    with pytest.raises(ValueError, match=re.escape(
            "regops.gaussian_kl: mu: expected at least one node per patient (the official divisor N) or a "
            "feature_count, got shape (0, 3)")):
        gaussian_kl(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match=re.escape(
            "regops.gaussian_kl: mu: expected at least one entry for reduction='mean', got shape (0, 4, 3)")):
        gaussian_kl(torch.zeros(0, 4, 3), torch.zeros(0, 4, 3), reduction="mean")


def test_gaussian_kl_bad_input():
    mu, lv = torch.randn(4, 3), torch.randn(4, 3)
    cases = [
        (ValueError, "regops.gaussian_kl: logvar: expected shape (4, 3) (as mu), got shape (4, 2)",
         lambda: gaussian_kl(mu, lv[:, :2])),
        (TypeError, "regops.gaussian_kl: mu: expected a floating-point tensor, got int64",
         lambda: gaussian_kl(mu.long(), lv)),
        (TypeError, "regops.gaussian_kl: logvar: expected dtype float32 (as mu), got float64",
         lambda: gaussian_kl(mu, lv.double())),
        (TypeError, "regops.gaussian_kl: mu: expected a torch.Tensor, got list",
         lambda: gaussian_kl(mu.tolist(), lv)),
        (ValueError, "regops.gaussian_kl: mu: expected a (N, d) or (B, N, d) tensor, got shape (4,)",
         lambda: gaussian_kl(mu[:, 0], lv[:, 0])),
        (ValueError, "regops.gaussian_kl: reduction: expected one of 'official', 'sum', 'mean', 'none', got 'avg'",
         lambda: gaussian_kl(mu, lv, reduction="avg")),
        (ValueError, "regops.gaussian_kl: feature_count: expected an int >= 1, got 0",
         lambda: gaussian_kl(mu, lv, feature_count=0)),
        (TypeError, "regops.gaussian_kl: feature_count: expected an int >= 1, got float 4.0",
         lambda: gaussian_kl(mu, lv, feature_count=4.0)),
        (TypeError, "regops.gaussian_kl: feature_count: expected an int >= 1, got bool True",
         lambda: gaussian_kl(mu, lv, feature_count=True)),
        (ValueError, "regops.gaussian_kl: logvar: expected finite values, got nan at index (1, 2)",
         lambda: gaussian_kl(mu, lv.index_put((torch.tensor(1), torch.tensor(2)), torch.tensor(math.nan)))),
        (RuntimeError, "regops.gaussian_kl: impl: expected an impl that can run here, got 'cpu': "
                       "regops.gaussian_kl has no cpu kernel",
         lambda: gaussian_kl(mu, lv, impl="cpu")),
    ]
    for kind, msg, call in cases:
        with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
            call()
    assert gaussian_kl(mu, lv, impl="reference").shape == ()


# ---------------------------------------------------------------------------------------------- reparameterize

def test_reparameterize_matches_official_and_is_deterministic():
    mu = torch.randn(5, 4, dtype=torch.float64)
    lv = torch.randn(5, 4, dtype=torch.float64)
    z1 = reparameterize(mu, lv, generator=torch.Generator().manual_seed(7))
    z2 = reparameterize(mu, lv, generator=torch.Generator().manual_seed(7))
    z3 = reparameterize(mu, lv, generator=torch.Generator().manual_seed(8))
    assert torch.equal(z1, z2) and not torch.equal(z1, z3)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert_close(z1, official_reparameterise(mu, lv, eps))
    assert reparameterize(mu, lv, training=False) is mu  # eval: the official returns mu
    # the default generator: torch.manual_seed reproduces
    torch.manual_seed(3)
    a = reparameterize(mu, lv)
    torch.manual_seed(3)
    assert torch.equal(a, reparameterize(mu, lv))


def test_reparameterize_statistics():
    n = 200_000
    mu = torch.full((n,), 2.0, dtype=torch.float64)
    lv = torch.full((n,), math.log(9.0), dtype=torch.float64)  # std 3
    z = reparameterize(mu, lv, generator=torch.Generator().manual_seed(0))
    assert abs(z.mean().item() - 2.0) < 5 * 3 / math.sqrt(n)
    assert abs(z.std().item() - 3.0) < 0.03


def test_reparameterize_gradients():
    mu = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m, v: reparameterize(m, v, generator=torch.Generator().manual_seed(1)), (mu, lv))
    z = reparameterize(mu, lv, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gm, gv = torch.autograd.grad(z.sum(), (mu, lv))
    assert_close(gm, torch.ones_like(mu))
    assert_close(gv, 0.5 * eps * torch.exp(0.5 * lv.detach()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reparameterize_dtypes(dtype):
    mu, lv = torch.randn(6, 3).to(dtype), torch.randn(6, 3).to(dtype)
    z = reparameterize(mu, lv, generator=torch.Generator().manual_seed(2))
    assert z.dtype == dtype
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(2))
    expected = official_reparameterise(mu.double(), lv.double(), eps.double())
    assert_close(z, expected.to(dtype), dtype)


def test_reparameterize_compile():
    mu, lv = torch.randn(4, 3), torch.randn(4, 3)
    fn = torch.compile(lambda m, v: reparameterize(m, v), fullgraph=True, backend="aot_eager")
    torch.manual_seed(5)
    got = fn(mu, lv)
    torch.manual_seed(5)
    assert_close(got, reparameterize(mu, lv), torch.float32)
    ev = torch.compile(lambda m, v: reparameterize(m, v, training=False) * 2, fullgraph=True, backend="aot_eager")
    assert torch.equal(ev(mu, lv), mu * 2)


def test_reparameterize_bad_input():
    mu, lv = torch.randn(4, 3), torch.randn(4, 3)
    cases = [
        (ValueError, "regops.reparameterize: logvar: expected shape (4, 3) (as mu), got shape (3, 4)",
         lambda: reparameterize(mu, lv.t())),
        (TypeError, "regops.reparameterize: mu: expected a floating-point tensor, got int64",
         lambda: reparameterize(mu.long(), lv)),
        (TypeError, "regops.reparameterize: generator: expected None or a torch.Generator, got int",
         lambda: reparameterize(mu, lv, generator=0)),
        (TypeError, "regops.reparameterize: training: expected a bool, got int 1",
         lambda: reparameterize(mu, lv, training=1)),
        (ValueError, "regops.reparameterize: logvar: expected finite values, got inf at index (0, 0)",
         lambda: reparameterize(mu, torch.full_like(lv, math.inf))),
    ]
    for kind, msg, call in cases:
        with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
            call()
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=re.escape("regops.reparameterize: generator: expected a generator "
                                                         "on cuda (as mu), got a generator on cpu")):
            reparameterize(mu.cuda(), lv.cuda(), generator=torch.Generator())


# ---------------------------------------------------------------------------------------------- selection errors

def test_select_present_nodes_bad_input():
    stats = torch.randn(6, 3)
    cases = [
        (TypeError, "regops.select_present_nodes: multi_hot: expected a bool or integer tensor of 0/1, got float32",
         lambda: select_present_nodes(stats, torch.ones(4))),
        (ValueError, "regops.select_present_nodes: multi_hot: expected values 0 or 1, got 2 at index (2,)",
         lambda: select_present_nodes(stats, torch.tensor([0, 1, 2, 0]))),
        (ValueError, "regops.select_present_nodes: multi_hot: expected values 0 or 1, got -1 at index (0,)",
         lambda: select_present_nodes(stats, torch.tensor([-1, 1, 0, 0]))),
        (ValueError, "regops.select_present_nodes: multi_hot: expected at most 5 features (num_nodes 6 − offset "
                     "1), got 6 features",
         lambda: select_present_nodes(stats, torch.zeros(6, dtype=torch.long))),
        (ValueError, "regops.select_present_nodes: multi_hot: expected a 1-D tensor, got 2-D tensor of shape (1, 4)",
         lambda: select_present_nodes(stats, torch.zeros(1, 4, dtype=torch.long))),
        (ValueError, "regops.select_present_nodes: node_stats: expected a 2-D or 3-D tensor, got 1-D tensor of "
                     "shape (6,)",
         lambda: select_present_nodes(stats[:, 0], torch.zeros(4, dtype=torch.long))),
        (ValueError, "regops.select_present_nodes: multi_hot: expected 2 rows (one per patient of node_stats), "
                     "got shape (3, 4)",
         lambda: select_present_nodes(stats.expand(2, 6, 3), torch.zeros(3, 4, dtype=torch.long))),
        (ValueError, "regops.select_present_nodes: offset: expected an int >= 0, got -1",
         lambda: select_present_nodes(stats, torch.zeros(4, dtype=torch.long), offset=-1)),
    ]
    for kind, msg, call in cases:
        with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
            call()
    # the largest vocabulary that fits, and an empty one
    assert select_present_nodes(stats, torch.ones(5, dtype=torch.long)).shape == (5, 3)
    assert select_present_nodes(stats, torch.zeros(0, dtype=torch.long)).shape == (0, 3)


def test_registered():
    for op in ("gaussian_kl", "reparameterize", "select_present_nodes"):
        assert op in regops._registry.OPS and op in regops.__all__
