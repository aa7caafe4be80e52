"""the contrastive engine on a GPU: the CUDA and Triton kernels of conr_loss, supcon_loss and
focal_supcon_loss against the materialized reference, on the same CUDA tensors. Skips without a CUDA device.

A test marked gpu_validates and parametrized by `impl` vouches for those (op, impl) pairs (conftest.py,
scripts/gpu_check.sh): it must not skip except when the impl cannot run at all."""
import pytest
import torch
import torch.nn.functional as F

import regops
from regops.ops import _contrastive
from regops.reference import contrastive as ref

from conftest import gpu_test, need, requires_cuda
from tolerances import assert_close

OP = "conr_loss"
IMPLS = ["cuda", "triton"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# Every N of (1, 2, 3, 127, 1000) and every D of (1, 64, 300), in a few combinations.
SHAPES = [(1, 1), (1, 300), (2, 64), (3, 1), (3, 300), (127, 64), (127, 300), (1000, 1), (1000, 64)]
ALL_OPS = ("conr_loss", "supcon_loss", "focal_supcon_loss")
contrastive_gpu_test = gpu_test(ALL_OPS, IMPLS)




def tol(dtype):
    """Kernel and reference both accumulate in float32 for float32/bfloat16 features, in different orders."""
    if dtype == torch.float32:
        return dict(rtol=1e-4)
    if dtype == torch.float64:
        return dict(rtol=1e-9)
    return {}  # bfloat16: tolerances.TOL (the result is rounded to bfloat16 on both sides)


def features(n, d, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(n, d, device="cuda", dtype=torch.float64, generator=g).to(dtype)


def conr_batch(n, L, seed=0):
    """Integer labels (ties: positives) and noisy predictions (near misses: negatives), (n,) for L = 1."""
    g = torch.Generator(device="cuda").manual_seed(seed + 1)
    shape = (n,) if L == 1 else (n, L)
    y = torch.randint(0, 6, shape, device="cuda", generator=g).float()
    p = y + torch.randn(shape, device="cuda", generator=g)
    w = torch.rand(n, device="cuda", generator=g) + 0.5
    return y, p, w


def value_and_grad(fn, x, up):
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x)
    (grad,) = torch.autograd.grad(loss, x, up)
    return loss.detach(), grad


def compare(fn, x, impl):
    up = torch.randn((), device="cuda", dtype=torch.float64).to(x.dtype)  # the same upstream gradient
    got, g_got = value_and_grad(lambda t: fn(t, impl), x, up)
    exp, g_exp = value_and_grad(lambda t: fn(t, "reference"), x, up)
    assert got.dtype == x.dtype and g_got.dtype == x.dtype
    assert torch.isfinite(got) and torch.isfinite(g_got).all()
    assert_close(got, exp, x.dtype, **tol(x.dtype))
    assert_close(g_got, g_exp, x.dtype, **tol(x.dtype))


@requires_cuda
@pytest.mark.cuda
@pytest.mark.gpu_validates("conr_loss")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("variant", ["agedb", "nyud2"])
@pytest.mark.parametrize("L", [1, 3])
def test_conr_matches_reference(impl, dtype, n, d, variant, L):
    need(OP, impl)
    x = features(n, d, dtype)
    y, p, w = conr_batch(n, L)
    # ω = 1 for both variants, so that integer labels give positives and noisy predictions negatives.
    fn = lambda t, i: regops.conr_loss(t, y, p, w, variant=variant, threshold=1.0, impl=i)  # noqa: E731
    compare(fn, x, impl)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.gpu_validates("supcon_loss", "focal_supcon_loss")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("focal", [False, True])
def test_supcon_matches_reference(impl, dtype, n, d, focal):
    need(OP, impl)
    x = features(n, d, dtype)
    g = torch.Generator(device="cuda").manual_seed(3)
    labels = torch.randint(0, max(1, n // 4), (n,), device="cuda", generator=g)
    loss = regops.focal_supcon_loss if focal else regops.supcon_loss
    compare(lambda t, i: loss(t, labels, temperature=0.1, impl=i), x, impl)


@contrastive_gpu_test
@pytest.mark.parametrize("tau", [0.01, pytest.param(0.07, marks=pytest.mark.gpu_quick), 1.0])
def test_temperatures_and_degenerate_labels(impl, tau):
    """Large exponents (τ = 0.01), a single class (every pair positive) and all-distinct classes (none)."""
    need(OP, impl)
    x = features(200, 16, torch.float32)
    for labels in (torch.zeros(200, dtype=torch.int64, device="cuda"), torch.arange(200, device="cuda")):
        compare(lambda t, i: regops.supcon_loss(t, labels, temperature=tau, impl=i), x, impl)
        compare(lambda t, i: regops.focal_supcon_loss(t, labels, temperature=tau, impl=i), x, impl)
    y, p, w = conr_batch(200, 1)
    compare(lambda t, i: regops.conr_loss(t, y, p, w, temperature=tau, threshold=1.0, impl=i), x, impl)


# ---- the ops themselves: rectangular (cross-rank) form ----

def ops_for(impl):
    if impl == "cuda":
        return torch.ops.regops.contrastive_fwd, torch.ops.regops.contrastive_bwd
    return torch.ops.regops.contrastive_fwd_triton, torch.ops.regops.contrastive_bwd_triton


@contrastive_gpu_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", [_contrastive.CONR_AGEDB, _contrastive.CONR_NYUD2, _contrastive.SUPCON, _contrastive.FOCAL])
@pytest.mark.parametrize("n,m,offset,d,L", [(1, 1, 0, 1, 1), (2, 3, 1, 1, 3), (3, 12, 9, 5, 1),
                                            pytest.param(127, 381, 127, 64, 3, marks=pytest.mark.gpu_quick),
                                            (70, 1000, 900, 300, 1), (64, 129, 65, 33, 1)])
def test_rectangular_ops_match_reference(impl, dtype, kind, n, m, offset, d, L):
    """Anchors are candidates[offset : offset + n], as on rank offset / n; values, |P| and both gradients."""
    need(OP, impl)
    fwd, bwd = ops_for(impl)
    g = torch.Generator(device="cuda").manual_seed(7)
    zc = F.normalize(torch.randn(m, d, device="cuda", dtype=dtype, generator=g), dim=1)
    za = zc[offset:offset + n].clone()
    conr = kind in (_contrastive.CONR_AGEDB, _contrastive.CONR_NYUD2)
    tau, thr, push, lnorm = 0.1, 1.0, 0.2, 2.0
    if conr:
        yc = torch.randint(0, 6, (m, L), device="cuda", generator=g).to(dtype)
        pc = yc + torch.randn(m, L, device="cuda", dtype=dtype, generator=g)
        ya, pa = yc[offset:offset + n].clone(), pc[offset:offset + n].clone()
        wa = torch.rand(n, device="cuda", dtype=dtype, generator=g) + 0.5
        args = (ya, yc, pa, pc, wa)
    else:
        lc = torch.randint(0, 5, (m,), device="cuda", generator=g)
        args = (lc[offset:offset + n].clone(), lc, None, None, None)
    scalars = (kind, offset, tau, thr, push, lnorm)

    rows, stats = fwd(za, zc, *args, *scalars)
    assert rows.shape == (n,) and stats.shape == (n, 4) and rows.dtype == dtype

    a_r = za.clone().requires_grad_(True)
    c_r = zc.clone().requires_grad_(True)
    # the ops normalize their raw rows; the reference does it through autograd (unit inputs: same values)
    a_n, c_n = F.normalize(a_r, dim=1), F.normalize(c_r, dim=1)
    if conr:
        exp, n_pos = ref.conr_rows(a_n, c_n, offset, *args, nyud2=kind == _contrastive.CONR_NYUD2, temperature=tau,
                                   threshold=thr, push=push, label_norm=lnorm)
    else:
        exp, n_pos = ref.supcon_rows(a_n, c_n, offset, args[0], args[1], temperature=tau,
                                     focal=kind == _contrastive.FOCAL)
    assert_close(rows, exp.detach(), **tol(dtype))
    torch.testing.assert_close(stats[:, 3], n_pos.to(dtype))

    up = torch.randn(n, device="cuda", dtype=dtype, generator=g)
    ga_exp, gc_exp = torch.autograd.grad((exp * up).sum(), (a_r, c_r), allow_unused=True)
    ga_exp = torch.zeros_like(za) if ga_exp is None else ga_exp
    gc_exp = torch.zeros_like(zc) if gc_exp is None else gc_exp
    ga, gc = bwd(up, za, zc, *args, stats, *scalars)
    assert ga.shape == za.shape and gc.shape == zc.shape
    assert_close(ga, ga_exp, **tol(dtype))
    assert_close(gc, gc_exp, **tol(dtype))


@contrastive_gpu_test
def test_symmetric_op_returns_empty_candidate_gradient(impl):
    need(OP, impl)
    fwd, bwd = ops_for(impl)
    z = F.normalize(torch.randn(50, 8, device="cuda"), dim=1)
    labels = torch.randint(0, 4, (50,), device="cuda")
    scalars = (_contrastive.SUPCON, 0, 0.1, 0.0, 0.0, 2.0)
    rows, stats = fwd(z, None, labels, None, None, None, None, *scalars)
    ga, gc = bwd(torch.ones_like(rows), z, None, labels, None, None, None, None, stats, *scalars)
    assert ga.shape == z.shape and gc.shape == (0, 8)


# ---- memory, determinism, argument checks ----

@contrastive_gpu_test
def test_memory_is_linear_in_n(impl):
    """N = 16384, D = 512: forward + backward peak far below one N×N float32 matrix (1 GiB)."""
    need(OP, impl)
    n, d = 16384, 512
    x = features(n, d, torch.float32).requires_grad_(True)
    labels = torch.randint(0, 100, (n,), device="cuda")
    y, p, w = conr_batch(n, 1)
    for fn in (lambda t: regops.supcon_loss(t, labels, impl=impl),
               lambda t: regops.conr_loss(t, y, p, w, threshold=1.0, impl=impl)):
        x.grad = None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = fn(x)
        loss.backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
        assert peak < n * n * 4 // 4, f"peak {peak / 2**20:.0f} MiB for N={n}, D={d}"


@requires_cuda
@pytest.mark.cuda
@pytest.mark.gpu_validates(*ALL_OPS)
@pytest.mark.parametrize("impl", ["cuda"])
def test_cuda_kernels_are_deterministic(impl):
    """The CUDA kernels use no atomics: every output row has one owner block and a fixed order."""
    need(OP, impl)
    x = features(1000, 300, torch.float32)
    labels = torch.randint(0, 20, (1000,), device="cuda")
    runs = [value_and_grad(lambda t: regops.supcon_loss(t, labels, impl=impl), x, torch.tensor(1.0, device="cuda"))
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@requires_cuda
@pytest.mark.cuda
def test_cuda_op_argument_checks():
    need(OP, "cuda")
    fwd = torch.ops.regops.contrastive_fwd
    z = F.normalize(torch.randn(6, 4, device="cuda"), dim=1)
    labels = torch.zeros(6, dtype=torch.int64, device="cuda")
    with pytest.raises(ValueError, match=r"regops\.contrastive_fwd: offset: expected anchors to sit at"):
        fwd(z, torch.cat([z, z]), labels, torch.cat([labels, labels]), None, None, None, 2, 7, 0.1, 0.0, 0.0, 2.0)
    with pytest.raises(ValueError, match=r"regops\.contrastive_fwd: offset: expected 0 when candidates is None"):
        fwd(z, None, labels, None, None, None, None, 2, 1, 0.1, 0.0, 0.0, 2.0)
    with pytest.raises(TypeError, match=r"regops\.contrastive_fwd: anchors: expected dtype float32 or float64"):
        fwd(z.bfloat16(), None, labels, None, None, None, None, 2, 0, 0.1, 0.0, 0.0, 2.0)
    with pytest.raises(TypeError, match=r"regops\.contrastive_fwd: labels: expected dtype int64"):
        fwd(z, None, labels.int(), None, None, None, None, 2, 0, 0.1, 0.0, 0.0, 2.0)
    with pytest.raises(ValueError, match=r"regops\.contrastive_fwd: kind: expected 0 \(ConR agedb\)"):
        fwd(z, None, labels, None, None, None, None, 4, 0, 0.1, 0.0, 0.0, 2.0)
    with pytest.raises(RuntimeError, match=r"regops\.contrastive_fwd: labels: expected device cuda"):
        fwd(z, None, labels.cpu(), None, None, None, None, 2, 0, 0.1, 0.0, 0.0, 2.0)
    # non-contiguous inputs are fine
    zt = F.normalize(torch.randn(4, 6, device="cuda"), dim=0).t()
    rows, _ = fwd(zt, None, labels, None, None, None, None, 2, 0, 0.1, 0.0, 0.0, 2.0)
    exp, _ = ref.supcon_rows(zt, zt, 0, labels, labels, temperature=0.1, focal=False)
    assert_close(rows, exp, rtol=1e-4)
