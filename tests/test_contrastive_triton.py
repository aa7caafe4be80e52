"""The Triton contrastive kernels (regops/triton/contrastive.py) against the materialized reference.

The ops are called directly: row losses and the |P| / L columns of row_stats against
regops.reference.contrastive, gradients against torch.autograd through the reference with the same upstream
grad_row_loss. On CPU-only machines the conftest sets TRITON_INTERPRET=1, so the kernels run interpreted.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import regops  # noqa: F401  (registers the ops)
from regops._loader import triton_available
from regops.reference import contrastive as ref

# The interpreter evaluates both sides of tl.where, so −inf − (−inf) in an unselected branch warns in numpy.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

if not triton_available():
    pytest.skip("triton is not installed", allow_module_level=True)

from regops.triton import contrastive as tc  # noqa: E402

AGEDB, NYUD2, SUPCON, FOCAL = 0, 1, 2, 3
KINDS = [AGEDB, NYUD2, SUPCON, FOCAL]
DTYPES = [torch.float32, torch.float64]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-11)}


def _ops():
    return torch.ops.regops.contrastive_fwd_triton, torch.ops.regops.contrastive_bwd_triton


def make_case(kind, dtype, n, d, label_len=1, *, extra=0, offset=0, labels="random", temperature=0.5,
              threshold=1.0, push=0.5, label_norm=2.0, seed=0):
    """Inputs of one call. extra > 0: rectangular (M = n + extra candidates, anchors at rows offset..)."""
    g = torch.Generator().manual_seed(seed)
    m = n + extra

    def unit(rows):
        return F.normalize(torch.randn(rows, d, generator=g, dtype=torch.float64), dim=1).to(dtype)

    za = unit(n)
    zc = None
    if extra:
        zc = torch.cat([unit(offset), za, unit(extra - offset)])
    if kind in (SUPCON, FOCAL):
        if labels == "same":
            lab = torch.zeros(m, dtype=torch.int64)
        elif labels == "distinct":
            lab = torch.arange(m, dtype=torch.int64)
        else:
            lab = torch.randint(0, 3, (m,), generator=g)
        preds = weights = None
    else:
        if labels == "same":
            lab = torch.full((m, label_len), 2.0, dtype=torch.float64)
        elif labels == "distinct":  # no positive: every label distance > threshold
            lab = 3.0 * torch.arange(m, dtype=torch.float64)[:, None].repeat(1, label_len)
        else:  # integer labels: distances tie with the threshold (1.0) exactly
            lab = torch.randint(0, 4, (m, label_len), generator=g).to(torch.float64)
        if labels == "no_neg":  # clustered labels, predictions too far apart for any negative
            lab = torch.randint(0, 2, (m, label_len), generator=g).to(torch.float64)
            preds = 10.0 * torch.arange(m, dtype=torch.float64)[:, None].repeat(1, label_len)
        else:
            preds = lab + 0.8 * torch.randn(m, label_len, generator=g, dtype=torch.float64)
        lab, preds = lab.to(dtype), preds.to(dtype)
        weights = (0.5 + torch.rand(n, generator=g, dtype=torch.float64)).to(dtype)
    # rows of the candidates; anchor i is candidate offset + i
    a_lab = lab[offset:offset + n]
    a_preds = None if preds is None else preds[offset:offset + n]
    dev = DEVICE
    to = (lambda t: None if t is None else t.to(dev))
    case = dict(anchors=to(za), candidates=to(zc), labels=to(a_lab), cand_labels=to(lab) if extra else None,
                preds=to(a_preds), cand_preds=to(preds) if extra and preds is not None else None,
                weights=to(weights))
    scalars = dict(kind=kind, offset=offset if extra else 0, temperature=temperature, threshold=threshold,
                   push=push, label_norm=label_norm)
    return case, scalars


def _args(case, scalars):
    return (case["anchors"], case["candidates"], case["labels"], case["cand_labels"], case["preds"],
            case["cand_preds"], case["weights"], scalars["kind"], scalars["offset"], float(scalars["temperature"]),
            float(scalars["threshold"]), float(scalars["push"]), float(scalars["label_norm"]))


def reference_rows(za, zc, case, scalars):
    """(row_loss, n_pos) of the reference, with zc the candidate rows (za itself when symmetric). The ops take
    raw rows and normalize them, so the reference normalizes too (unit inputs: the same values, and the
    gradient gains the normalization's projection)."""
    kind, offset = scalars["kind"], scalars["offset"]
    za, zc = F.normalize(za, dim=1), F.normalize(zc, dim=1)
    sym = case["candidates"] is None
    lc = case["labels"] if sym else case["cand_labels"]
    if kind in (SUPCON, FOCAL):
        return ref.supcon_rows(za, zc, offset, case["labels"], lc, temperature=scalars["temperature"],
                               focal=kind == FOCAL)
    pc = case["preds"] if sym else case["cand_preds"]
    return ref.conr_rows(za, zc, offset, case["labels"], lc, case["preds"], pc, case["weights"],
                         nyud2=kind == NYUD2, temperature=scalars["temperature"], threshold=scalars["threshold"],
                         push=scalars["push"], label_norm=scalars["label_norm"])


def reference_log_partition(case, scalars):
    """L_i of the reference formulas: ConR's log D_i, SupCon's log Σ_{k≠i} e^{s_ik} (0 without a column)."""
    kind, offset = scalars["kind"], scalars["offset"]
    za = case["anchors"]
    sym = case["candidates"] is None
    zc = za if sym else case["candidates"]
    n, m = za.shape[0], zc.shape[0]
    s = za @ zc.T / scalars["temperature"]
    diag = ref._diagonal(n, m, offset, za.device)
    if kind in (SUPCON, FOCAL):
        lse = torch.logsumexp(s.masked_fill(diag, float("-inf")), dim=1)
        return torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    yc = case["labels"] if sym else case["cand_labels"]
    pc = case["preds"] if sym else case["cand_preds"]
    ld = ref.label_distance(case["labels"], yc, scalars["label_norm"])
    pd = ref.label_distance(case["preds"], pc, scalars["label_norm"])
    thr, push, w = scalars["threshold"], scalars["push"], case["weights"]
    pos = (ld <= thr) & ~diag
    neg = (ld > thr) & (pd <= thr)
    log_c = torch.log(push * w[:, None] * ld) if kind == NYUD2 else torch.log(w)[:, None] + push * ld
    terms = torch.where(pos, s, torch.where(neg, s + log_c, torch.full_like(s, float("-inf"))))
    log_ones = torch.log((m - pos.sum(1)).to(s.dtype))[:, None]
    return torch.logsumexp(torch.cat([terms, log_ones], dim=1), dim=1)


def check_case(case, scalars, *, seed=1, tol=None):
    fwd, bwd = _ops()
    dtype = case["anchors"].dtype
    tol = tol or TOL[dtype]
    sym = case["candidates"] is None
    n, d = case["anchors"].shape

    rows, stats = fwd(*_args(case, scalars))
    assert rows.shape == (n,) and stats.shape == (n, 4)
    assert rows.dtype == dtype and stats.dtype == dtype

    za = case["anchors"].detach().clone().requires_grad_(True)
    zc = za if sym else case["candidates"].detach().clone().requires_grad_(True)
    ref_rows, n_pos = reference_rows(za, zc, case, scalars)
    torch.testing.assert_close(rows, ref_rows.detach(), **tol)
    torch.testing.assert_close(stats[:, 3], n_pos.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(stats[:, 0], reference_log_partition(case, scalars), **tol)

    g = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype).to(za.device)
    (ref_rows * g).sum().backward()
    grad_a, grad_c = bwd(g, case["anchors"], case["candidates"], case["labels"], case["cand_labels"], case["preds"],
                         case["cand_preds"], case["weights"], stats, scalars["kind"], scalars["offset"],
                         float(scalars["temperature"]), float(scalars["threshold"]), float(scalars["push"]),
                         float(scalars["label_norm"]))
    assert grad_a.shape == (n, d) and grad_a.dtype == dtype
    torch.testing.assert_close(grad_a, za.grad, **tol)
    if sym:
        assert grad_c.shape == (0, d)
    else:
        assert grad_c.shape == case["candidates"].shape
        torch.testing.assert_close(grad_c, zc.grad, **tol)
    return rows, stats


# (n, D, L): odd n, D = 1 and odd D, one and three label columns
SHAPES = [(1, 1, 1), (2, 7, 3), (3, 1, 3), (17, 7, 1), (17, 1, 1), (33, 5, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
@pytest.mark.parametrize("kind", KINDS, ids=["agedb", "nyud2", "supcon", "focal"])
@pytest.mark.parametrize("rect", [False, True], ids=["sym", "rect"])
@pytest.mark.parametrize("n,d,label_len", SHAPES)
def test_matches_reference(n, d, label_len, rect, kind, dtype):
    extra, offset = (6, 2) if rect else (0, 0)
    case, scalars = make_case(kind, dtype, n, d, label_len, extra=extra, offset=offset, seed=n * 7 + d)
    check_case(case, scalars)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
@pytest.mark.parametrize("kind", KINDS, ids=["agedb", "nyud2", "supcon", "focal"])
@pytest.mark.parametrize("rect", [False, True], ids=["sym", "rect"])
def test_multi_tile(monkeypatch, rect, kind, dtype):
    """16-wide blocks force several row, column, K and D tiles: online rescaling across column tiles,
    masked tails and the D-chunked backward. A low temperature makes the running max move."""
    def small(*args, **kwargs):  # (BLOCK_R, BLOCK_C, BLOCK_K, BLOCK_D, num_warps)
        return 16, 16, 16, 16, 2
    monkeypatch.setattr(tc, "_config", small)
    extra, offset = (21, 9) if rect else (0, 0)
    case, scalars = make_case(kind, dtype, 35, 37, 3, extra=extra, offset=offset, temperature=0.1, seed=5)
    check_case(case, scalars)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
@pytest.mark.parametrize("kind", KINDS, ids=["agedb", "nyud2", "supcon", "focal"])
@pytest.mark.parametrize("labels", ["same", "distinct", "no_neg"])
def test_degenerate_batches(labels, kind, dtype):
    """All positives (one label: no negative), no positive (distinct labels), ConR without a negative."""
    if labels == "no_neg" and kind in (SUPCON, FOCAL):
        pytest.skip("SupCon has no negatives of its own; 'same' covers it")
    case, scalars = make_case(kind, dtype, 9, 5, 1, labels=labels, seed=3)
    rows, stats = check_case(case, scalars)
    if labels == "same" and kind in (AGEDB, NYUD2):  # positives but no negative: 0 (official)
        assert torch.equal(rows, torch.zeros_like(rows))
    if labels == "distinct":  # no positive: 0 and no gradient
        assert torch.equal(rows, torch.zeros_like(rows))
        assert torch.equal(stats[:, 3], torch.zeros_like(rows))
    if labels == "same" and kind in (SUPCON, FOCAL):
        assert torch.equal(stats[:, 3], torch.full_like(rows, 8.0))
    if labels == "no_neg":
        assert torch.equal(rows, torch.zeros_like(rows))
        assert bool((stats[:, 3] > 0).any())


@pytest.mark.parametrize("label_norm", [1.0, math.inf, 3.0, 2.0])
@pytest.mark.parametrize("kind", [AGEDB, NYUD2], ids=["agedb", "nyud2"])
def test_conr_label_norms(kind, label_norm):
    case, scalars = make_case(kind, torch.float64, 11, 3, 3, extra=4, offset=1, label_norm=label_norm, seed=11)
    check_case(case, scalars)


def test_single_candidate_supcon():
    """n = 1 symmetric: no other column, L = 0 and loss 0 (as the reference)."""
    for kind in (SUPCON, FOCAL):
        case, scalars = make_case(kind, torch.float64, 1, 3)
        rows, stats = check_case(case, scalars)
        assert rows.item() == 0.0 and stats[0, 0].item() == 0.0


def test_autograd_through_fwd_op():
    """The autograd registration in ops/_contrastive.py routes the backward to the bwd op."""
    case, scalars = make_case(FOCAL, torch.float64, 5, 3, extra=3, offset=1, seed=2)
    za = case["anchors"].clone().requires_grad_(True)
    zc = case["candidates"].clone().requires_grad_(True)
    args = list(_args(case, scalars))
    args[0], args[1] = za, zc
    rows, stats = torch.ops.regops.contrastive_fwd_triton(*args)
    assert not stats.requires_grad
    ga, gc = torch.autograd.grad(rows.sum(), (za, zc))
    za2 = case["anchors"].clone().requires_grad_(True)
    zc2 = case["candidates"].clone().requires_grad_(True)
    r, _ = reference_rows(za2, zc2, case, scalars)
    ra, rc = torch.autograd.grad(r.sum(), (za2, zc2))
    torch.testing.assert_close(ga, ra, **TOL[torch.float64])
    torch.testing.assert_close(gc, rc, **TOL[torch.float64])


@pytest.mark.parametrize("kind", [NYUD2, SUPCON], ids=["nyud2", "supcon"])
def test_strided_inputs(kind):
    """Anchors and candidates as strided views (the kernels take their strides)."""
    case, scalars = make_case(kind, torch.float32, 9, 5, 3, extra=4, offset=2, seed=8)
    a = torch.zeros(9, 10, dtype=torch.float32, device=case["anchors"].device)
    a[:, ::2] = case["anchors"]
    case["anchors"] = a[:, ::2]
    case["candidates"] = case["candidates"].t().contiguous().t()
    assert not case["anchors"].is_contiguous() and not case["candidates"].is_contiguous()
    check_case(case, scalars)


def test_tf32_flag(monkeypatch):
    """The ALLOW_TF32 variant (taken on CUDA float32 when torch allows tf32) runs and stays close."""
    monkeypatch.setattr(tc, "_allow_tf32", lambda t: True)
    case, scalars = make_case(FOCAL, torch.float32, 17, 7, seed=9)
    check_case(case, scalars, tol=dict(rtol=2e-3, atol=2e-3))


@pytest.mark.parametrize("kind,rect", [(AGEDB, True), (FOCAL, False)], ids=["agedb-rect", "focal-sym"])
def test_opcheck(kind, rect):
    """Schema, fake kernels, autograd registration and AOT dispatch of both ops."""
    case, scalars = make_case(kind, torch.float64, 5, 3, 3 if kind == AGEDB else 1,
                              extra=3 if rect else 0, offset=1 if rect else 0, seed=4)
    args = list(_args(case, scalars))
    args[0] = args[0].clone().requires_grad_(True)
    if rect:
        args[1] = args[1].clone().requires_grad_(True)
    fwd, bwd = _ops()
    torch.library.opcheck(fwd.default, tuple(args))
    with torch.no_grad():
        rows, stats = fwd(*args)
    g = torch.ones_like(rows)
    torch.library.opcheck(bwd.default, (g, *[a.detach() if isinstance(a, torch.Tensor) else a for a in args[:7]],
                                        stats, *args[7:]))


def test_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    fwd, bwd = _ops()
    case, scalars = make_case(SUPCON, torch.float32, 4, 3, extra=2, offset=1)
    with FakeTensorMode(allow_non_fake_inputs=True):
        rows, stats = fwd(*_args(case, scalars))
        assert rows.shape == (4,) and stats.shape == (4, 4)
        ga, gc = bwd(rows, case["anchors"], None, case["labels"], None, None, None, None, stats, SUPCON, 0,
                     0.5, 0.0, 0.0, 2.0)
        assert ga.shape == (4, 3) and gc.shape == (0, 3)


def test_argument_errors():
    fwd, _ = _ops()
    case, scalars = make_case(SUPCON, torch.float32, 4, 3)
    with pytest.raises(ValueError, match="kind"):
        fwd(*_args(case, dict(scalars, kind=7)))
    with pytest.raises(TypeError, match="labels"):
        fwd(*_args(dict(case, labels=case["labels"].float()), scalars))
    case, scalars = make_case(AGEDB, torch.float32, 4, 3, extra=2, offset=1)
    with pytest.raises(ValueError, match="offset"):
        fwd(*_args(case, dict(scalars, offset=3)))
    with pytest.raises(ValueError, match="preds"):
        fwd(*_args(dict(case, preds=None), scalars))
