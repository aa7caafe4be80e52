"""Spectral norms on a GPU: the CUDA and Triton kernels of spectral_power / spectral_outer called directly, against
the CPU kernel on the same values and against a float64 torch formula (torch.mv, F.normalize with eps 1e-12), per
dtype, on shapes around the kernels' warp, block and chunk sizes and on mixed lists; and the public
regops.spectral_norm_penalty forward and backward against its reference. Skips without a CUDA device.

A test marked gpu_validates and parametrized by `impl` vouches for those (op, impl) pairs (conftest.py,
scripts/gpu_check.sh): it must not skip except when the impl cannot run at all."""
import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

import regops  # noqa: E402
from regops import SpectralNormState  # noqa: E402
from regops._constants import acc_dtype  # noqa: E402
from regops._loader import has_kernel, triton_available  # noqa: E402

from conftest import gpu_test, need  # noqa: E402
from tolerances import assert_close  # noqa: E402

pytestmark = [pytest.mark.cuda]

OP = "spectral_norm_penalty"
IMPLS = ["cuda", "triton"]
EPS = 1e-12  # torch's spectral_norm default, as regops uses it
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# one element; a row and a column (a warp's lanes mostly idle); odd sizes around a warp; one 512-thread block
# square; a wide matrix (past the block in Wt u, past a chunk in the outer product); tall-narrow (row groups)
SHAPES = {
    "1x1": [(1, 1)],
    "1x7": [(1, 7)],
    "7x1": [(7, 1)],
    "31x33": [(31, 33)],
    "512x512": [(512, 512)],
    "3x4099": [(3, 4099)],
    "1001x3": [(1001, 3)],
    "mixed": [(5, 3), (1, 1), (31, 33), (3, 4099), (5, 3), (64, 130), (7, 1), (300, 100)],
}


def _tol(dtype):
    """Both sides accumulate in float32 for float32/bf16/fp16 weights (the same rounded values), float64 else:
    what differs is the summation order."""
    return dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=2e-5)


def _kernels(impl):
    """(spectral_power, spectral_outer) of `impl`; skips where that impl is not built or registered here."""
    if impl == "cuda" and not has_kernel("spectral_power", "CUDA"):
        pytest.skip("this build has no CUDA kernel of regops::spectral_power")
    if impl == "triton" and not (triton_available() and hasattr(torch.ops.regops, "spectral_power_triton")):
        pytest.skip("the triton op regops::spectral_power_triton is not registered")
    suffix = "" if impl == "cuda" else "_triton"
    return _list_adapters(getattr(torch.ops.regops, "spectral_power" + suffix),
                          getattr(torch.ops.regops, "spectral_outer" + suffix))


def _list_adapters(power_op, outer_op):
    """The ops take the vectors of all matrices concatenated; the tests hold per-matrix lists."""
    def power(weights, us, vs, n_iter, eps):
        sigma, u, v = power_op(weights, torch.cat(us), torch.cat(vs), n_iter, eps)
        return sigma, list(u.split([w.shape[0] for w in weights])), list(v.split([w.shape[1] for w in weights]))

    def outer(grad_sigmas, us, vs, weights):
        return outer_op(grad_sigmas, torch.cat(us), torch.cat(vs), weights)
    return power, outer


def _cpu_kernel():
    return has_kernel("spectral_power", "CPU")


def _inputs(shapes, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    acc = acc_dtype(dtype)
    weights = [torch.randn(s, generator=g, device="cuda", dtype=torch.float64).to(dtype) for s in shapes]
    us = [F.normalize(torch.randn(s[0], generator=g, device="cuda", dtype=torch.float64), dim=0, eps=EPS).to(acc)
          for s in shapes]
    vs = [F.normalize(torch.randn(s[1], generator=g, device="cuda", dtype=torch.float64), dim=0, eps=EPS).to(acc)
          for s in shapes]
    return weights, us, vs


def _formula(weights, vs, n_iter):
    """The iteration in float64 on the weights' own (rounded) values: sigma, us, vs."""
    sig, us_out, vs_out = [], [], []
    for W, v in zip(weights, vs):
        Wd, v = W.double(), v.double()
        for _ in range(n_iter):
            u = F.normalize(torch.mv(Wd, v), dim=0, eps=EPS)
            t = torch.mv(Wd.t(), u)
            v = F.normalize(t, dim=0, eps=EPS)
        sig.append(torch.dot(t, v))
        us_out.append(u)
        vs_out.append(v)
    return torch.stack(sig), us_out, vs_out


@gpu_test([OP], IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(SHAPES))
@pytest.mark.parametrize("n_iter", [1, 3])
def test_power_matches_formula_and_cpu_kernel(impl, dtype, case, n_iter):
    power, _ = _kernels(impl)
    weights, us, vs = _inputs(SHAPES[case], dtype)
    keep_u, keep_v = [u.clone() for u in us], [v.clone() for v in vs]
    sigma, u_out, v_out = power(weights, us, vs, n_iter, EPS)
    acc = acc_dtype(dtype)
    assert sigma.dtype == acc and sigma.shape == (len(weights),) and sigma.device.type == "cuda"
    for l, W in enumerate(weights):
        assert u_out[l].shape == (W.shape[0],) and v_out[l].shape == (W.shape[1],)
        assert u_out[l].dtype == acc and v_out[l].dtype == acc
        assert torch.equal(us[l], keep_u[l]) and torch.equal(vs[l], keep_v[l])  # the inputs are untouched
    ref_s, ref_u, ref_v = _formula(weights, vs, n_iter)
    tol = _tol(dtype)
    assert_close(sigma, ref_s.to(acc), acc, **tol)
    for l in range(len(weights)):
        assert_close(u_out[l], ref_u[l].to(acc), acc, **tol)
        assert_close(v_out[l], ref_v[l].to(acc), acc, **tol)
    if _cpu_kernel():
        cpu_power, _ = _list_adapters(torch.ops.regops.spectral_power, torch.ops.regops.spectral_outer)
        cs, cu, cv = cpu_power([w.cpu() for w in weights], [u.cpu() for u in us], [v.cpu() for v in vs], n_iter, EPS)
        assert_close(sigma.cpu(), cs, acc, **tol)
        for l in range(len(weights)):
            assert_close(u_out[l].cpu(), cu[l], acc, **tol)
            assert_close(v_out[l].cpu(), cv[l], acc, **tol)


@gpu_test([OP], IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["1x1", "7x1", "3x4099", "512x512", "mixed"])
def test_outer_matches_formula_and_cpu_kernel(impl, dtype, case):
    _, outer = _kernels(impl)
    weights, us, vs = _inputs(SHAPES[case], dtype, seed=1)
    acc = acc_dtype(dtype)
    grad_sigmas = torch.linspace(-2.0, 3.0, len(weights), device="cuda", dtype=acc)
    grads = outer(grad_sigmas, us, vs, weights)
    for l, (g, W) in enumerate(zip(grads, weights)):
        assert g.dtype == dtype and g.shape == W.shape and g.is_contiguous() and g.device.type == "cuda"
        exact = float(grad_sigmas[l]) * torch.outer(us[l].double(), vs[l].double())
        # one rounding of a float32 (float64) product to the weight dtype; bf16/fp16 may round once more
        rtol = {torch.float64: 1e-15, torch.float32: 1e-6, torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10}[dtype]
        torch.testing.assert_close(g.double(), exact, rtol=rtol, atol=1e-30 if dtype == torch.float64 else 1e-7)
    if _cpu_kernel():
        cg = torch.ops.regops.spectral_outer(grad_sigmas.cpu(), torch.cat(us).cpu(), torch.cat(vs).cpu(),
                                             [w.cpu() for w in weights])
        for g, c in zip(grads, cg):
            assert torch.equal(g.cpu(), c)  # g·u_i, then ·v_j, then one rounding: the same bits on both


@gpu_test([OP], IMPLS)
def test_strided_inputs_zero_matrix_and_many_matrices(impl):
    power, outer = _kernels(impl)
    g = torch.Generator(device="cuda").manual_seed(2)
    # strided vectors and a transposed weight view; a zero matrix (sigma 0, u = v = 0: F.normalize of 0 is 0);
    # 300 small matrices (one block each) between large ones (several outer-product chunks each)
    shapes = [(40, 70), (9, 5), (2, 3)] + [(6, 4)] * 300 + [(257, 129)]
    weights = [torch.randn(s, generator=g, device="cuda") for s in shapes]
    weights[0] = torch.randn(70, 40, generator=g, device="cuda").t()
    weights[1] = torch.zeros(9, 5, device="cuda")
    us = [torch.randn(2 * s[0], generator=g, device="cuda")[::2] for s in shapes]
    vs = [torch.randn(2 * s[1], generator=g, device="cuda")[::2] for s in shapes]
    sigma, u_out, v_out = power(weights, us, vs, 2, EPS)
    ref_s, ref_u, ref_v = _formula(weights, vs, 2)
    assert_close(sigma, ref_s.float(), torch.float32, **_tol(torch.float32))
    raw_power = torch.ops.regops.spectral_power if impl == "cuda" else torch.ops.regops.spectral_power_triton
    u_strided = torch.stack([torch.cat(us)] * 2, 1)[:, 1]  # non-contiguous concatenated vectors
    v_strided = torch.stack([torch.cat(vs)] * 2, 1)[:, 0]
    assert not u_strided.is_contiguous()
    s2, _, _ = raw_power(weights, u_strided, v_strided, 2, EPS)
    assert torch.equal(s2, sigma)
    assert float(sigma[1]) == 0.0 and not u_out[1].any() and not v_out[1].any()
    for l in range(len(shapes)):
        assert_close(u_out[l], ref_u[l].float(), torch.float32, **_tol(torch.float32))
        assert_close(v_out[l], ref_v[l].float(), torch.float32, **_tol(torch.float32))
    grad_sigmas = torch.randn(len(shapes), generator=g, device="cuda")
    grads = outer(grad_sigmas, us, vs, weights)
    for l, gr in enumerate(grads):
        expected = grad_sigmas[l] * torch.outer(us[l], vs[l])
        assert gr.is_contiguous()
        torch.testing.assert_close(gr, expected, rtol=1e-6, atol=1e-7)


@gpu_test([OP], IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("n_iter", [pytest.param(1, marks=pytest.mark.gpu_quick), 3])
def test_public_op_matches_reference(impl, dtype, n_iter):
    need(OP, impl)
    g = torch.Generator(device="cuda").manual_seed(3)
    shapes = [(31, 33), (8, 3, 3, 3), (31, 33), (1, 7), (7, 1), (512, 512), (3, 4099)]
    weights = [torch.randn(s, generator=g, device="cuda", dtype=torch.float64).to(dtype).requires_grad_()
               for s in shapes]
    state = SpectralNormState.init(weights, generator=torch.Generator().manual_seed(4))
    ref_state = state.clone()
    acc = acc_dtype(dtype)
    coef = torch.linspace(0.5, 2.0, len(weights), device="cuda", dtype=acc)
    tol = _tol(dtype)
    for step in range(2):  # the state carries over
        pen, sig, out_state = regops.spectral_norm_penalty(weights, n_iter, state, impl=impl)
        ref_pen, ref_sig, _ = regops.spectral_norm_penalty(weights, n_iter, ref_state, impl="reference")
        assert out_state is state
        assert sig.dtype == ref_sig.dtype and sig.device.type == "cuda"
        assert_close(sig, ref_sig.detach(), acc, **tol)
        assert_close(pen, ref_pen.detach(), acc, **tol)
        for i in range(len(weights)):
            assert_close(state.u(i), ref_state.u(i), acc, **tol)
            assert_close(state.v(i), ref_state.v(i), acc, **tol)
        grads = torch.autograd.grad((sig * coef).sum() + pen, weights)
        ref_grads = torch.autograd.grad((ref_sig * coef).sum() + ref_pen, weights)
        for gr, rg, W in zip(grads, ref_grads, weights):
            assert gr.dtype == dtype and gr.shape == W.shape
            # u, v agree to the tolerance above; bf16 gradients add their own rounding
            gtol = dict(rtol=2e-2, atol=1e-2) if dtype == torch.bfloat16 else tol
            assert_close(gr, rg, dtype if dtype != torch.bfloat16 else torch.float32, **gtol)


@gpu_test([OP], IMPLS)
def test_bad_input_raises_the_contracts_errors(impl):
    power, outer = _kernels(impl)
    weights, us, vs = _inputs([(4, 3), (2, 5)], torch.float32)
    raw_power = torch.ops.regops.spectral_power if impl == "cuda" else torch.ops.regops.spectral_power_triton
    with pytest.raises(RuntimeError, match=r"spectral_power: u: expected device cuda"):
        raw_power(weights, torch.cat(us).cpu(), torch.cat(vs), 1, EPS)
    with pytest.raises(TypeError, match=r"spectral_power: v: expected dtype float32"):
        raw_power(weights, torch.cat(us), torch.cat(vs).double(), 1, EPS)
    with pytest.raises(ValueError, match="spectral_power: n_power_iterations: expected an int >= 1"):
        power(weights, us, vs, 0, EPS)
    with pytest.raises(ValueError, match=r"spectral_outer: grad_sigmas: expected shape \(2,\)"):
        outer(torch.ones(3, device="cuda"), us, vs, weights)
