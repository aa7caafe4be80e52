"""the contrastive engine's kernels (conr_loss, supcon_loss, focal_supcon_loss) against the reference.

Every CPU-runnable impl (the C++ kernel; Triton when interpreted) is held to the materialized reference:
values and gradients with the same upstream gradient, fp32/fp64, low precision by FlashAttention's rule,
odd shapes, degenerate batches, the rectangular (cross-rank) form, fuzzing, opcheck, compile and memory.
"""
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, strategies as st

import regops
from regops.reference import contrastive as reference
from conftest import cpu_impls
from tolerances import assert_close, assert_lowp_rule

IMPLS = cpu_impls("conr_loss")
needs_cpu = pytest.mark.skipif("cpu" not in IMPLS, reason="no compiled CPU kernel")
OPS = ["agedb", "nyud2", "supcon", "focal"]


def batch(n, d, dtype=torch.float64, seed=0, classes=4, label_dim=1):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, classes, (n, label_dim), generator=g).to(torch.float64)
    p = y + 2.0 * torch.randn(n, label_dim, generator=g, dtype=torch.float64)
    if label_dim == 1:
        y, p = y[:, 0], p[:, 0]
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    lab = torch.randint(0, classes, (n,), generator=g)
    return f, y, p, w, lab


def loss(op, f, y, p, w, lab, impl, **kw):
    if op in ("agedb", "nyud2"):
        return regops.conr_loss(f, y, p, w, threshold=1.0, variant=op, impl=impl, **kw)
    fn = regops.supcon_loss if op == "supcon" else regops.focal_supcon_loss
    return fn(f, lab, impl=impl, **kw)


def value_and_grad(op, f, y, p, w, lab, impl, upstream=1.7, **kw):
    x = f.detach().clone().requires_grad_(True)
    out = loss(op, x, y, p, w, lab, impl, **kw)
    (out * upstream).backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,d,label_dim", [(1, 3, 1), (2, 1, 1), (3, 5, 1), (37, 1, 1), (127, 8, 1), (200, 33, 3)])
def test_matches_reference(impl, op, dtype, n, d, label_dim):
    if impl == "triton" and n > 64:
        pytest.skip("interpreted Triton: small shapes only")
    f, y, p, w, lab = batch(n, d, dtype, classes=3 if n < 10 else 5, label_dim=label_dim)
    ref_v, ref_g = value_and_grad(op, f, y, p, w, lab, "reference")
    v, g = value_and_grad(op, f, y, p, w, lab, impl)
    assert v.dtype == dtype and g.dtype == dtype
    assert_close(v, ref_v)
    assert_close(g, ref_g)


@needs_cpu
@pytest.mark.smoke
@pytest.mark.parametrize("op", OPS)
def test_cpu_kernel_smoke(op):
    f, y, p, w, lab = batch(50, 7)
    for a, b in zip(value_and_grad(op, f, y, p, w, lab, "cpu"), value_and_grad(op, f, y, p, w, lab, "reference")):
        assert_close(a, b)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("label_norm", [1, 2, float("inf"), 3])
def test_multidim_labels(impl, label_norm):
    f, y, p, w, _ = batch(40, 6, label_dim=3, classes=3)
    for variant in ("agedb", "nyud2"):
        ref = regops.conr_loss(f, y, p, w, threshold=1.0, variant=variant, label_norm=label_norm, impl="reference")
        out = regops.conr_loss(f, y, p, w, threshold=1.0, variant=variant, label_norm=label_norm, impl=impl)
        assert_close(out, ref)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", ["one_class", "all_distinct", "no_negative"])
def test_degenerate_batches(impl, op, case):
    """All positives (one class), no positive at all, and ConR anchors without a negative: 0, never NaN."""
    n = 9
    f, y, p, w, lab = batch(n, 4)
    if case == "one_class":
        y, lab = torch.full_like(y, 3.0), torch.zeros_like(lab)
    elif case == "all_distinct":
        y, lab = torch.arange(n, dtype=y.dtype) * 10, torch.arange(n)
    else:
        y = torch.arange(n, dtype=y.dtype) * 10
        y[1] = y[0]                                # anchors 0 and 1 have a positive ...
        p = torch.arange(n, dtype=y.dtype) * 100   # ... but no prediction is near another: no negative
    ref_v, ref_g = value_and_grad(op, f, y, p, w, lab, "reference")
    v, g = value_and_grad(op, f, y, p, w, lab, impl)
    assert torch.isfinite(v) and torch.isfinite(g).all()
    assert_close(v, ref_v)
    assert_close(g, ref_g)


@pytest.mark.parametrize("impl", IMPLS)
def test_check_value(impl):
    from test_conr import CHECK, check_inputs
    f, y, p, w = check_inputs(torch.float32)
    got = regops.conr_loss(f, y, p, w, temperature=0.07, threshold=1.0, push=0.01, impl=impl)
    torch.testing.assert_close(got.item(), CHECK, rtol=1e-5, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_flash_rule(impl, op, dtype):
    """bf16/fp16 features (accumulated in fp32; e^{1/0.07} would overflow fp16): error vs the exact fp64
    result within 2x of the error of PyTorch's own result in that dtype."""
    f, y, p, w, lab = batch(48, 16, classes=4)
    f_lp = f.to(dtype)
    exact_v, exact_g = value_and_grad(op, f_lp.double(), y, p, w, lab, "reference")
    v, g = value_and_grad(op, f_lp, y, p, w, lab, impl)
    assert v.dtype == dtype and g.dtype == dtype
    # PyTorch's own result in that dtype: the reference formula on the low-precision tensors (it accumulates
    # in fp32 as torch's matmul and logsumexp do, and rounds the result to the dtype)
    torch_v, torch_g = value_and_grad(op, f_lp, y, p, w, lab, "reference")
    assert_lowp_rule(v, torch_v, exact_v, floor=1e-3)
    assert_lowp_rule(g, torch_g, exact_g, floor=1e-3)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", OPS)
def test_rectangular_form_matches_reference(impl, op):
    """The cross-rank form: anchors are a slice of the candidates (offset > 0), gradients to both raw inputs."""
    n, m, d, off = 7, 19, 5, 9
    kind = {"agedb": 0, "nyud2": 1, "supcon": 2, "focal": 3}[op]
    g = torch.Generator().manual_seed(3)
    xc = torch.randn(m, d, generator=g, dtype=torch.float64)  # raw rows: the op normalizes them itself
    xa = xc[off:off + n].clone()
    if kind < 2:
        yc = torch.randint(0, 4, (m, 1), generator=g).double()
        pc = yc + 2 * torch.randn(m, 1, generator=g, dtype=torch.float64)
        ya, pa = yc[off:off + n].clone(), pc[off:off + n].clone()
        wa = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    else:
        yc = torch.randint(0, 3, (m,), generator=g)
        ya, pa, pc, wa = yc[off:off + n].clone(), None, None, None
    tau = 0.3
    up = torch.randn(n, generator=g, dtype=torch.float64)
    a, c = xa.clone().requires_grad_(True), xc.clone().requires_grad_(True)
    za, zc = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(c, dim=1)
    if kind < 2:
        rows, n_pos = reference.conr_rows(za, zc, off, ya, yc, pa, pc, wa, nyud2=kind == 1, temperature=tau,
                                          threshold=1.0, push=0.05, label_norm=2.0)
    else:
        rows, n_pos = reference.supcon_rows(za, zc, off, ya, yc, temperature=tau, focal=kind == 3)
    (rows * up).sum().backward()
    fwd = torch.ops.regops.contrastive_fwd if impl == "cpu" else torch.ops.regops.contrastive_fwd_triton
    bwd = torch.ops.regops.contrastive_bwd if impl == "cpu" else torch.ops.regops.contrastive_bwd_triton
    args = (ya, yc, pa, pc, wa, kind, off, tau, 1.0, 0.05, 2.0)
    out_rows, stats = fwd(xa, xc, *args)
    assert_close(out_rows, rows.detach())
    assert torch.equal(stats[:, 3], n_pos.double())
    ga, gc = bwd(up, xa, xc, *args[:5], stats, *args[5:])
    assert_close(ga, a.grad)
    assert_close(gc, c.grad)


@needs_cpu
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n,d", [(5, 3), (64, 16), (200, 33), (700, 8), (2500, 4)])
def test_same_bits_for_any_thread_count(op, n, d):
    """The tile partition depends on the shape only: 1, 2 and 3 threads (a DataLoader worker and the main process)
    give identical values and gradients, in one process and in the rectangular (cross-rank) form. Before: up to
    9.5e-7 apart in the SupCon value at N = 64, D = 16."""
    f, y, p, w, lab = batch(n, d, torch.float32, classes=5)
    kind = {"agedb": 0, "nyud2": 1, "supcon": 2, "focal": 3}[op]
    conr = kind < 2
    ya, pa, wa = (y.float()[:, None], p.float()[:, None], w.float()) if conr else (lab, None, None)
    off, m = n // 3, n - n // 3
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            v, g = value_and_grad(op, f, y.float(), p.float(), w.float(), lab, "cpu")
            args = (ya[off:], ya, None if pa is None else pa[off:], pa, None if wa is None else wa[off:], kind, off,
                    0.2, 1.0, 0.05, 2.0)
            rows, stats = torch.ops.regops.contrastive_fwd(f[off:], f, *args)
            ga, gc = torch.ops.regops.contrastive_bwd(torch.ones(m), f[off:], f, *args[:5], stats, *args[5:])
            results.append((v, g, rows, ga, gc))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b), (a - b).abs().max().item()


@needs_cpu
@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op):
    f, y, p, w, lab = batch(11, 3, classes=3)
    x = f.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(op, t, y, p, w, lab, "cpu"), (x,))


@needs_cpu
@pytest.mark.parametrize("kind", [0, 1, 2, 3])
@pytest.mark.parametrize("symmetric", [True, False])
def test_opcheck(kind, symmetric):
    n, d = 6, 4
    g = torch.Generator().manual_seed(1)
    z = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    if kind < 2:
        y = torch.randint(0, 3, (n, 1), generator=g).double()
        p, w = y + torch.randn(n, 1, generator=g, dtype=torch.float64), torch.rand(n, dtype=torch.float64) + 0.5
    else:
        y, p, w = torch.randint(0, 2, (n,), generator=g), None, None
    if symmetric:
        args = (z, None, y, None, p, None, w, kind, 0, 0.5, 1.0, 0.01, 2.0)
    else:
        c = torch.cat([z.detach(), z.detach().flip(0)]).requires_grad_()
        args = (z, c, y, torch.cat([y, y.flip(0)]), p, None if p is None else torch.cat([p, p.flip(0)]), w, kind, 0,
                0.5, 1.0, 0.01, 2.0)
    torch.library.opcheck(torch.ops.regops.contrastive_fwd.default, args)
    rows, stats = torch.ops.regops.contrastive_fwd(*args)
    bargs = (torch.randn(n, dtype=torch.float64),) + tuple(a.detach() if isinstance(a, torch.Tensor) else a
                                                           for a in args[:7]) + (stats,) + args[7:]
    torch.library.opcheck(torch.ops.regops.contrastive_bwd.default, bargs)


@needs_cpu
@pytest.mark.parametrize("op", OPS)
def test_compile_fullgraph(op):
    torch._dynamo.reset()
    f, y, p, w, lab = batch(20, 6, torch.float32)
    x = f.clone().requires_grad_(True)
    fn = torch.compile(lambda t: loss(op, t, y, p, w, lab, "cpu"), fullgraph=True, backend="aot_eager")
    out = fn(x)
    out.backward()
    ref_v, ref_g = value_and_grad(op, f, y, p, w, lab, "cpu", upstream=1.0)
    assert_close(out.detach(), ref_v)
    assert_close(x.grad, ref_g)


@needs_cpu
@given(n=st.integers(1, 40), d=st.integers(1, 9), op=st.sampled_from(OPS), classes=st.integers(1, 6),
       tau=st.sampled_from([0.05, 0.07, 0.5, 2.0]), seed=st.integers(0, 2**16))
def test_fuzz_cpu_kernel(n, d, op, classes, tau, seed):
    f, y, p, w, lab = batch(n, d, seed=seed, classes=classes)
    kw = {"temperature": tau}
    ref_v, ref_g = value_and_grad(op, f, y, p, w, lab, "reference", **kw)
    v, g = value_and_grad(op, f, y, p, w, lab, "cpu", **kw)
    assert_close(v, ref_v)
    assert_close(g, ref_g)


@needs_cpu
def test_portable_cpu_loops_without_simd():
    """The AVX2 paths are picked at run time; REGOPS_CPU_NO_SIMD=1 runs the portable loops instead."""
    env = dict(os.environ, REGOPS_CPU_NO_SIMD="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                          "(test_matches_reference and cpu and float32) or test_fuzz_cpu_kernel"],
                         env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


@needs_cpu
def test_memory_is_linear_in_n():
    """fwd+bwd at N = 12000 adds far less than one N×N float32 matrix (576 MB) to the peak RSS."""
    code = (
        "import resource, torch, regops\n"
        "n, d = 12000, 32\n"
        "f = torch.randn(n, d, requires_grad=True); y = torch.randint(0, 50, (n,)).float(); p = y + torch.randn(n)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "regops.conr_loss(f, y, p, impl='cpu').backward()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    extra = int(out.stdout.strip().splitlines()[-1])
    assert extra < 60 * 2**20, f"peak grew by {extra / 2**20:.0f} MiB (an N×N float32 matrix is 549 MiB)"


@needs_cpu
def test_bad_input_to_the_op():
    z = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    lab = torch.randint(0, 2, (5,))
    with pytest.raises(ValueError, match=r"regops\.contrastive_fwd: kind: expected"):
        torch.ops.regops.contrastive_fwd(z, None, lab, None, None, None, None, 7, 0, 0.1, 0, 0, 2)
    with pytest.raises(ValueError, match=r"regops\.contrastive_fwd: labels: expected shape \(5,\) \(one class id per row\)"):
        torch.ops.regops.contrastive_fwd(z, None, lab[:4], None, None, None, None, 2, 0, 0.1, 0, 0, 2)
    with pytest.raises(TypeError, match=r"regops\.contrastive_fwd: anchors: expected dtype float32 or float64"):
        torch.ops.regops.contrastive_fwd(z.half(), None, lab, None, None, None, None, 2, 0, 0.1, 0, 0, 2)
    bad = z.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"regops\.contrastive_fwd: anchors: expected finite values, got nan at "
                                         r"index \(3, 2\)"):
        torch.ops.regops.contrastive_fwd(bad, None, lab, None, None, None, None, 2, 0, 0.1, 0, 0, 2)
    with pytest.raises(ValueError, match=r"regops\.contrastive_fwd: offset"):
        torch.ops.regops.contrastive_fwd(z, z, lab, lab, None, None, None, 2, 3, 0.1, 0, 0, 2)


@pytest.mark.smoke
@pytest.mark.parametrize("op", OPS)
def test_public_bad_input(op):
    f, y, p, w, lab = batch(6, 3)
    name = "conr_loss" if op in ("agedb", "nyud2") else ("supcon_loss" if op == "supcon" else "focal_supcon_loss")
    with pytest.raises(ValueError, match=rf"regops\.{name}: features: expected at least one row"):
        loss(op, f[:0], y[:0], p[:0], w[:0], lab[:0], None)
    with pytest.raises(ValueError, match=rf"regops\.{name}: features: expected at least one column"):
        loss(op, f[:, :0], y, p, w, lab, None)
    bad = f.clone()
    bad[1, 1] = float("inf")
    with pytest.raises(ValueError, match=rf"regops\.{name}: features: expected finite values"):
        loss(op, bad, y, p, w, lab, None)
