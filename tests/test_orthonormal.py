"""orthonormal_penalty, sorsa_ortho_loss and sorsa_regularize_: every impl against the reference."""
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import regops
from regops import _loader, _registry
from regops.reference import orthonormal as ref

from conftest import cpu_impls, need, requires_cuda
from tolerances import assert_close, assert_lowp_rule

IMPLS = cpu_impls("orthonormal_penalty")
SHAPES = [(1, 1, 1), (3, 5, 7), (4, 17, 33), (2, 40, 8), (224, 3, 5), (2, 70, 600), (3, 16, 257), (2, 9, 1000), (2, 21, 1500)]
OFFICIAL = 2.8568239  # the check value, printed to 8 digits (it is the float32 result)
# The same value to 20 digits, from numpy's 80-bit long double: the 8 digits cannot meet
# rtol 1e-8 (they are 2.5e-8 off), so float64 is pinned to this one.
OFFICIAL_F64 = 2.8568238280959354293


def official_factors(dtype=torch.float64):
    A = 0.4 * torch.cos(0.3 * torch.arange(40, dtype=dtype)).reshape(4, 10)
    B = 0.4 * torch.sin(0.2 * torch.arange(48, dtype=dtype) + 0.5).reshape(12, 4)
    return A, B


def ref_values(x, side, squared):
    xr = x if side == "rows" else x.transpose(1, 2)
    return ref.orthonormal_penalty_rows(xr, squared)


@pytest.mark.smoke
@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_official_value(impl, dtype):
    A, B = official_factors(dtype)
    got = regops.sorsa_ortho_loss([A], [B], impl=impl)
    assert got.dtype == dtype and got.dim() == 0
    assert math.isclose(got.item(), OFFICIAL, rel_tol=1e-5)
    if dtype == torch.float64:
        assert math.isclose(got.item(), OFFICIAL_F64, rel_tol=1e-8)
        assert abs(got.item() - OFFICIAL) <= 0.5e-7 + 1e-7  # agrees with the printed digits

@pytest.mark.smoke
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("side", ["rows", "cols"])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(impl, shape, side, squared, dtype):
    if impl == "triton" and shape[0] * shape[1] * shape[2] > 20_000:
        pytest.skip("large shapes are slow in the Triton interpreter")
    x = (torch.randn(shape, dtype=torch.float64) / math.sqrt(shape[2 if side == "rows" else 1])).to(dtype)
    x.requires_grad_(True)
    expected = ref_values(x, side, squared)
    got = regops.orthonormal_penalty(x, side=side, squared=squared, reduction="none", impl=impl)
    assert got.shape == expected.shape and got.dtype == dtype
    assert_close(got, expected)
    upstream = torch.randn_like(expected)  # the same upstream gradient through both sides
    (g_exp,) = torch.autograd.grad(expected, x, upstream)
    (g_got,) = torch.autograd.grad(got, x, upstream)
    assert_close(g_got, g_exp)


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "triton"])  # the interpreter's bf16 is wrong
@pytest.mark.parametrize("side", ["rows", "cols"])
@pytest.mark.parametrize("shape", [(5, 8, 64), (3, 16, 300), (2, 64, 700)])
def test_bf16_within_twice_torch_error(impl, side, shape):
    x64 = torch.randn(shape, dtype=torch.float64) / math.sqrt(shape[2 if side == "rows" else 1])
    xb = x64.to(torch.bfloat16).requires_grad_(True)
    exact_in = xb.detach().double().requires_grad_(True)  # exact math on the same bf16 inputs
    exact = ref_values(exact_in, side, False)
    # PyTorch's own bf16 result: the same formula computed in bf16
    xt = xb.detach().clone().requires_grad_(True)
    xr = xt if side == "rows" else xt.transpose(1, 2)
    eye = torch.eye(xr.shape[1], dtype=torch.bfloat16)
    torch_bf16 = (torch.bmm(xr, xr.transpose(1, 2)) - eye).square().sum((1, 2)).sqrt()
    got = regops.orthonormal_penalty(xb, side=side, reduction="none", impl=impl)
    assert got.dtype == torch.bfloat16
    assert_lowp_rule(got, torch_bf16, exact)
    up = torch.randn(shape[0], dtype=torch.float64)
    (g_exact,) = torch.autograd.grad(exact, exact_in, up)
    (g_torch,) = torch.autograd.grad(torch_bf16, xt, up.to(torch.bfloat16))
    (g_got,) = torch.autograd.grad(got, xb, up.to(torch.bfloat16))
    assert_lowp_rule(g_got, g_torch, g_exact)


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
@pytest.mark.parametrize("side", ["rows", "cols"])
@pytest.mark.parametrize("squared", [False, True])
def test_gradcheck_f64(impl, side, squared):
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    fn = lambda t: regops.orthonormal_penalty(t, side=side, squared=squared, reduction="none", impl=impl)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
def test_list_form_groups_and_keeps_order(impl):
    shapes = [(4, 9), (3, 5), (4, 9), (1, 7), (3, 5), (4, 9)]
    mats = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    got = regops.orthonormal_penalty(mats, side="rows", reduction="none", impl=impl)
    expected = torch.stack([ref_values(m.unsqueeze(0), "rows", False)[0] for m in mats])
    assert_close(got, expected)
    assert_close(regops.orthonormal_penalty(mats, side="cols", reduction="sum", impl=impl),
                 torch.stack([ref_values(m.unsqueeze(0), "cols", False)[0] for m in mats]).sum())
    got.sum().backward()
    for m in mats:
        assert m.grad is not None and torch.isfinite(m.grad).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_and_2d(impl):
    base = torch.randn(6, 20, 30, dtype=torch.float64)
    x = base[::2, 1::2, ::3]  # strided in every dim
    assert_close(regops.orthonormal_penalty(x, side="rows", reduction="none", impl=impl), ref_values(x, "rows", False))
    assert_close(regops.orthonormal_penalty(x, side="cols", reduction="none", impl=impl), ref_values(x, "cols", False))
    m = torch.randn(5, 8, dtype=torch.float64)
    assert_close(regops.orthonormal_penalty(m, side="cols", impl=impl), ref_values(m[None], "cols", False)[0])


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_residual_has_zero_gradient(impl):
    x = torch.eye(4, 6, dtype=torch.float64).unsqueeze(0).requires_grad_(True)  # orthonormal rows: R = 0 exactly
    v = regops.orthonormal_penalty(x, side="rows", impl=impl)
    v.backward()
    assert v.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions(reduction):
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    vals = ref_values(x, "rows", True)
    got = regops.orthonormal_penalty(x, side="rows", squared=True, reduction=reduction)
    exp = {"mean": vals.mean(), "sum": vals.sum(), "none": vals}[reduction]
    assert_close(got, exp)


@given(L=st.integers(1, 6), p=st.integers(1, 20), q=st.integers(1, 70), side=st.sampled_from(["rows", "cols"]),
       squared=st.booleans(), scale=st.floats(0.05, 3.0))
def test_fuzz_cpu_kernel(L, p, q, side, squared, scale):
    if "cpu" not in IMPLS:
        pytest.skip("no CPU kernel in this build")
    x = (scale * torch.randn(L, p, q, dtype=torch.float64)).requires_grad_(True)
    got = regops.orthonormal_penalty(x, side=side, squared=squared, reduction="none", impl="cpu")
    exp = ref_values(x, side, squared)
    assert_close(got, exp)
    up = torch.rand_like(exp)
    assert_close(torch.autograd.grad(got, x, up)[0], torch.autograd.grad(exp, x, up)[0])


@pytest.mark.skipif("triton" not in IMPLS, reason="needs triton (interpreted here)")
@given(L=st.integers(1, 3), p=st.integers(1, 20), q=st.integers(1, 40), side=st.sampled_from(["rows", "cols"]))
def test_fuzz_triton_kernel(L, p, q, side):
    x = torch.randn(L, p, q, dtype=torch.float64, requires_grad=True)
    got = regops.orthonormal_penalty(x, side=side, reduction="none", impl="triton")
    exp = ref_values(x, side, False)
    assert_close(got, exp)
    assert_close(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(exp.sum(), x)[0])


# ---- torch.library: opcheck and torch.compile ----

@pytest.mark.smoke
@pytest.mark.skipif("cpu" not in IMPLS, reason="no compiled CPU kernel")
@pytest.mark.parametrize("squared", [False, True])
def test_opcheck_compiled_ops(squared):
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.regops.orthonormal_penalty_fwd.default, (x, squared))
    torch.library.opcheck(torch.ops.regops.orthonormal_penalty_fwd.default, (x.transpose(1, 2), squared))
    _, residual = torch.ops.regops.orthonormal_penalty_fwd(x.detach(), squared)
    torch.library.opcheck(torch.ops.regops.orthonormal_penalty_bwd.default,
                          (torch.randn(3, dtype=torch.float64), x.detach(), residual, squared))
    mats = [torch.randn(4, 6, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)]
    grads = [torch.zeros_like(m) for m in mats]
    torch.library.opcheck(torch.ops.regops.orthonormal_grad_accumulate_.default, (mats, grads, 0.5, squared),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.skipif("triton" not in IMPLS, reason="needs triton (interpreted here)")
def test_opcheck_triton_ops():
    x = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.regops.orthonormal_penalty_fwd_triton.default, (x, False))
    _, residual = torch.ops.regops.orthonormal_penalty_fwd_triton(x.detach(), False)
    torch.library.opcheck(torch.ops.regops.orthonormal_penalty_bwd_triton.default,
                          (torch.randn(2, dtype=torch.float64), x.detach(), residual, False))


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
def test_compile_fullgraph_aot_eager(impl):
    torch._dynamo.reset()
    x = torch.randn(4, 6, 9, requires_grad=True)

    def loss(t):
        return regops.orthonormal_penalty(t, side="rows", impl=impl) + regops.orthonormal_penalty(t, side="cols", impl=impl)

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    exp = loss(x)
    assert_close(got, exp)
    assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(exp, x)[0])


@pytest.mark.skipif("cpu" not in IMPLS, reason="no compiled CPU kernel")
def test_compile_inductor():
    torch._dynamo.reset()
    A, B = official_factors(torch.float32)
    A.requires_grad_(True)
    compiled = torch.compile(lambda a, b: regops.sorsa_ortho_loss([a], [b], impl="cpu"), fullgraph=True)
    got = compiled(A, B)
    assert abs(got.item() - OFFICIAL) < 1e-5
    got.backward()
    assert torch.isfinite(A.grad).all()


# ---- sorsa_regularize_ ----

def make_pairs(dtype=torch.float64, shapes=((4, 16, 12), (4, 16, 12), (8, 20, 6), (3, 70, 100))):
    pairs = []
    for r, n_in, n_out in shapes:
        pairs.append((torch.nn.Parameter(torch.randn(r, n_in, dtype=dtype) / math.sqrt(n_in)),
                      torch.nn.Parameter(torch.randn(n_out, r, dtype=dtype) / math.sqrt(n_out))))
    return pairs


@pytest.mark.parametrize("impl", ["reference"] + cpu_impls("sorsa_regularize_"))
def test_sorsa_regularize_matches_autograd(impl):
    pairs = make_pairs()
    gamma, lr = 4e-4, 3e-5
    clones = [(a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)) for a, b in pairs]
    (gamma / lr * ref_loss(clones)).backward()
    for a, b in pairs[:2]:  # some grads exist already, others are None
        a.grad = torch.ones_like(a)
        b.grad = torch.ones_like(b)
    value = regops.sorsa_regularize_(pairs, gamma, lr, impl=impl)
    assert_close(value, ref_loss(pairs).detach())
    for l, ((a, b), (ca, cb)) in enumerate(zip(pairs, clones)):
        extra = 1.0 if l < 2 else 0.0
        assert_close(a.grad, ca.grad + extra)
        assert_close(b.grad, cb.grad + extra)


def ref_loss(pairs):
    total = sum(ref_values(a[None], "rows", False)[0] + ref_values(b[None], "cols", False)[0] for a, b in pairs)
    return total / (2 * len(pairs))


@pytest.mark.parametrize("impl", ["reference"] + cpu_impls("sorsa_regularize_"))
def test_sorsa_regularize_non_finite_raises_and_changes_nothing(impl):
    pairs = make_pairs()
    for a, b in pairs:
        a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
    with torch.no_grad():
        pairs[2][1][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"regops\.sorsa_regularize_: mats\[\d+\]: expected finite"):
        regops.sorsa_regularize_(pairs, 4e-4, 3e-5, impl=impl)
    for a, b in pairs:
        assert not a.grad.any() and not b.grad.any()


def test_sorsa_ortho_loss_forms_agree():
    A, B = official_factors()
    As = [A, A.flip(0), A * 0.5]
    Bs = [B, B * 2, B.flip(1)]
    a = regops.sorsa_ortho_loss(As, Bs)
    b = regops.sorsa_ortho_loss(torch.stack(As), torch.stack(Bs))
    assert_close(a, b)
    with pytest.raises(ValueError, match=r"regops\.sorsa_ortho_loss: Bs: expected 3 matrices"):
        regops.sorsa_ortho_loss(As, Bs[:2])


# ---- bad input ----

@pytest.mark.smoke
@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
def test_bad_input(impl):
    f = lambda m, **kw: regops.orthonormal_penalty(m, **{"side": "rows", "impl": impl, **kw})
    with pytest.raises(ValueError, match=r"regops\.orthonormal_penalty: mats: expected a 2-D or 3-D tensor, got 1-D"):
        f(torch.randn(5))
    with pytest.raises(ValueError, match=r"mats: expected a 2-D or 3-D tensor, got 4-D"):
        f(torch.randn(2, 2, 2, 2))
    with pytest.raises(TypeError, match=r"mats: expected dtype in \(float32, float64, bfloat16\), got int64"):
        f(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"mats\[1\]: expected dtype float32 \(as mats\[0\]\), got dtype float64"):
        f([torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64)])
    with pytest.raises(RuntimeError, match=r"mats\[1\]: expected device cpu .*got device meta"):
        f([torch.randn(2, 3), torch.randn(2, 3, device="meta")])
    with pytest.raises(ValueError, match=r"mats: expected at least one matrix, got an empty list"):
        f([])
    with pytest.raises(ValueError, match=r"mats: expected matrices with no zero-size dimension"):
        f(torch.randn(0, 3, 4))
    with pytest.raises(ValueError, match=r"side: expected one of 'rows', 'cols', got 'diag'"):
        f(torch.randn(3, 4), side="diag")
    with pytest.raises(ValueError, match=r"reduction: expected one of"):
        f(torch.randn(3, 4), reduction="max")
    x = torch.randn(3, 4, 5)
    x[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"regops\.orthonormal_penalty: mats: expected finite"):
        f(x)
    x[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"mats: expected finite"):
        f(x)
    with pytest.raises(TypeError):
        regops.orthonormal_penalty(torch.randn(3, 4))  # side is required


def test_impl_selection(monkeypatch):
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"impl: expected one of None, 'auto'"):
        regops.orthonormal_penalty(x, side="rows", impl="fast")
    with pytest.raises(RuntimeError, match=r"impl: expected an impl that can run here, got 'cuda'"):
        regops.orthonormal_penalty(x, side="rows", impl="cuda")
    cpu = torch.device("cpu")
    monkeypatch.setenv("REGOPS_IMPL", "reference")
    assert _registry.resolve_impl("orthonormal_penalty", None, cpu) == "reference"
    monkeypatch.setenv("REGOPS_IMPL", "cuda")  # a preference that cannot run falls back
    assert _registry.resolve_impl("orthonormal_penalty", None, cpu) == ("cpu" if "cpu" in IMPLS else "reference")
    monkeypatch.delenv("REGOPS_IMPL")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if _loader.triton_available():
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            _registry.resolve_impl("orthonormal_penalty", "triton", cpu)
    # auto never picks an unvalidated GPU kernel
    assert _registry.resolve_impl("orthonormal_penalty", None, torch.device("cuda")) in ("reference",) or \
        ("orthonormal_penalty", "cuda") in _registry.gpu_validated() or ("orthonormal_penalty", "triton") in _registry.gpu_validated()


# ---- Triton cubin, CUDA, info ----

@pytest.mark.skipif(not _loader.triton_available(), reason="needs triton")
def test_triton_kernels_compile_to_sm90_cubin():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "regops.triton._compile"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "orthonormal" in out.stdout


@requires_cuda
@pytest.mark.cuda
@pytest.mark.gpu_validates("orthonormal_penalty", "sorsa_ortho_loss", "sorsa_regularize_")
@pytest.mark.parametrize("impl", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("side", ["rows", "cols"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), pytest.param((7, 33, 65), marks=pytest.mark.gpu_quick),
                                   (448, 16, 512), (4, 128, 1000)])
def test_cuda_matches_reference(impl, dtype, side, shape):
    need("orthonormal_penalty", impl)
    x = (torch.randn(shape, dtype=torch.float64, device="cuda") / math.sqrt(shape[2 if side == "rows" else 1]))
    x = x.to(dtype).requires_grad_(True)
    exp = ref_values(x.double(), side, False)
    got = regops.orthonormal_penalty(x, side=side, reduction="none", impl=impl)
    up = torch.randn_like(exp)
    xd = x.detach().double().requires_grad_(True)
    g_exp = torch.autograd.grad(ref_values(xd, side, False), xd, up)[0]
    g_got = torch.autograd.grad(got, x, up.to(dtype))[0]
    if dtype == torch.bfloat16:
        xt = x.detach().clone().requires_grad_(True)
        xr = xt if side == "rows" else xt.transpose(1, 2)
        tb = (torch.bmm(xr, xr.transpose(1, 2)) - torch.eye(xr.shape[1], device="cuda", dtype=dtype)).square().sum((1, 2)).sqrt()
        assert_lowp_rule(got, tb, exp)
        assert_lowp_rule(g_got, torch.autograd.grad(tb, xt, up.to(dtype))[0], g_exp)
    else:
        assert_close(got, exp.to(dtype), rtol=1e-4 if dtype == torch.float32 else 1e-9)
        assert_close(g_got, g_exp.to(dtype), rtol=1e-4 if dtype == torch.float32 else 1e-9)


def test_info_cli():
    out = subprocess.run([sys.executable, "-m", "regops", "info"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "orthonormal_penalty" in out.stdout and "torch" in out.stdout


@pytest.mark.skipif("cpu" not in IMPLS, reason="no compiled CPU kernel")
def test_portable_cpu_loops_without_simd():
    """The AVX2 loops are picked at run time; REGOPS_CPU_NO_SIMD=1 runs the portable loops instead."""
    env = dict(os.environ, REGOPS_CPU_NO_SIMD="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                          "(test_matches_reference and cpu and not shape5) or test_fuzz_cpu_kernel or test_list_form"],
                         env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


@pytest.mark.smoke
def test_loaded_library_is_the_one_asked_for():
    """REGOPS_OPS_LIBRARY (the CMake build) replaces _C; otherwise _C is loaded when built."""
    lib = os.environ.get("REGOPS_OPS_LIBRARY")
    if lib:
        assert _loader.LIBRARY_PATH == lib and _loader._C is None
        assert "threads=" in torch.ops.regops._build_info()
    else:
        assert _loader.LIBRARY_PATH is None


@pytest.mark.skipif("cpu" not in IMPLS, reason="no compiled CPU kernel")
def test_large_gradients_reuse_cached_buffers():
    """The CPU backward's large outputs come from a cache; reused buffers are fully overwritten."""
    regops.empty_cache()
    x = torch.randn(6, 40, 2000, dtype=torch.float64, requires_grad=True)  # a 3.8 MB gradient
    grads = []
    for scale in (1.0, 0.5):
        x.grad = None
        (scale * regops.orthonormal_penalty(x, side="rows", reduction="sum", impl="cpu")).backward()
        grads.append(x.grad.clone())
        x.grad = None  # the buffer returns to the cache here
        assert torch.ops.regops._cpu_cache_idle_bytes() >= x.numel() * 8
    torch.testing.assert_close(grads[1], 0.5 * grads[0])
    xr = x.detach().clone().requires_grad_(True)
    ref_values(xr, "rows", False).sum().backward()
    torch.testing.assert_close(grads[0], xr.grad)
    regops.empty_cache()
    assert torch.ops.regops._cpu_cache_idle_bytes() == 0
