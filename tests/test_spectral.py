"""spectral_norm_penalty against a per-layer loop (torch's spectral_norm parametrization for the same u, v;
torch.linalg.matrix_norm(ord=2) after convergence), gradients, compile, state, fuzzing, bad input; and
adversarial_state_noise against the closed form on linear value functions, PGD's ball and ascent, errors."""
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import regops
from regops import SpectralNormState, adversarial_state_noise, spectral_norm_penalty

from conftest import cpu_impls, run_simd_and_portable
from tolerances import assert_close

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
OP = "spectral_norm_penalty"
# every impl that runs CPU tensors here: the reference, the C++ kernel, Triton under TRITON_INTERPRET=1
IMPLS = ["reference"] + cpu_impls(OP)


def loop_reference(weights, us, vs, n_iter, eps=1e-12):
    """torch's _SpectralNorm._power_method then vdot(u, mv(W, v)), one layer at a time, in float64."""
    sig, new_u, new_v = [], [], []
    for W, u, v in zip(weights, us, vs):
        Wm = W.detach().double().reshape(W.shape[0], -1)
        u, v = u.double().clone(), v.double().clone()
        for _ in range(n_iter):
            u = F.normalize(torch.mv(Wm, v), dim=0, eps=eps)
            v = F.normalize(torch.mv(Wm.t(), u), dim=0, eps=eps)
        sig.append(torch.vdot(u, torch.mv(Wm, v)))
        new_u.append(u)
        new_v.append(v)
    return torch.stack(sig), new_u, new_v


def random_vectors(weights, seed=1):
    g = torch.Generator().manual_seed(seed)
    us = [F.normalize(torch.randn(w.shape[0], generator=g, dtype=torch.float64), dim=0) for w in weights]
    vs = [F.normalize(torch.randn(w[0].numel(), generator=g, dtype=torch.float64), dim=0) for w in weights]
    return us, vs


SHAPES = {
    "1x1": [(1, 1)],
    "1xn": [(1, 17)],
    "nx1": [(17, 1)],
    "1001x3": [(1001, 3)],
    "conv": [(8, 3, 3, 3), (16, 8, 3, 3)],
    "single": [(64, 32)],
    "mixed": [(5, 3), (5, 3), (4, 2, 3, 3), (7, 7), (5, 3)],
    "50 layers": [(32, 24)] * 50,
    "large (per-layer path)": [(300, 256), (300, 256), (16, 8)],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(SHAPES))
@pytest.mark.parametrize("n_iter", [1, 3])
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_per_layer_loop(impl, case, dtype, n_iter):
    weights = [torch.randn(s, dtype=dtype) for s in SHAPES[case]]
    us, vs = random_vectors(weights)
    state = SpectralNormState.from_vectors(weights, us, vs)
    pen, sig, out_state = spectral_norm_penalty(weights, n_iter, state, impl=impl)
    assert out_state is state
    ref, ref_u, ref_v = loop_reference(weights, us, vs, n_iter)
    tol = {torch.float64: {}, torch.float32: dict(atol=1e-5, rtol=1e-5),
           torch.bfloat16: dict(atol=1e-2, rtol=1e-2)}[dtype]  # bf16: the weights' own rounding, fp32 math
    expected_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    assert sig.dtype == expected_dtype and sig.shape == (len(weights),)
    assert_close(sig, ref.to(expected_dtype), expected_dtype, **tol)
    assert_close(pen, ref.sum().to(expected_dtype), expected_dtype, **tol)
    for i in range(len(weights)):
        assert_close(state.u(i), ref_u[i].to(expected_dtype), expected_dtype, **tol)
        assert_close(state.v(i), ref_v[i].to(expected_dtype), expected_dtype, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_torch_spectral_norm_parametrization(impl, dtype):
    mods = [torch.nn.Linear(7, 4), torch.nn.Conv2d(3, 6, 3), torch.nn.Linear(7, 4)]
    mods = [torch.nn.utils.parametrizations.spectral_norm(m.to(dtype)) for m in mods]
    weights = [m.parametrizations.weight.original for m in mods]
    us = [m.parametrizations.weight[0]._u.clone() for m in mods]
    vs = [m.parametrizations.weight[0]._v.clone() for m in mods]
    state = SpectralNormState.from_vectors(weights, us, vs)
    for step in range(3):  # each access of m.weight in train mode is one power iteration, as each call here
        torch_sigma = torch.stack([(m.parametrizations.weight.original / m.weight).flatten()[0] for m in mods])
        _, sig, _ = spectral_norm_penalty(weights, 1, state, impl=impl)
        assert_close(sig, torch_sigma.detach(), dtype, **({} if dtype == torch.float64 else dict(rtol=1e-5)))
        for i, m in enumerate(mods):
            assert_close(state.u(i), m.parametrizations.weight[0]._u, dtype)
            assert_close(state.v(i), m.parametrizations.weight[0]._v, dtype)


@pytest.mark.parametrize("impl", IMPLS)
def test_converges_to_matrix_norm_and_state_carries_over(impl):
    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(30, 20), (30, 20), (8, 4, 3, 3), (1, 9)]]
    true = torch.stack([torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2) for w in weights])
    state = None
    errors = []
    for _ in range(300):  # one iteration per step, the state carried as in training
        _, sig, state = spectral_norm_penalty(weights, 1, state, generator=g, impl=impl)
        errors.append((sig - true).abs().max().item())
    assert errors[-1] < 1e-8 * true.max().item()
    assert errors[-1] < errors[0]
    # the power-iteration estimate is a lower bound of σ_max
    assert (sig <= true * (1 + 1e-12)).all()
    # one call with 300 iterations from the same start gives the same as 300 calls of one
    g2 = torch.Generator().manual_seed(3)
    [torch.randn(s, generator=g2, dtype=torch.float64) for s in [(30, 20), (30, 20), (8, 4, 3, 3), (1, 9)]]
    _, sig300, _ = spectral_norm_penalty(weights, 300, None, generator=g2, impl=impl)
    assert_close(sig300, sig, torch.float64)


@pytest.mark.parametrize("impl", IMPLS)
def test_module_collects_weights_of_dim_two_or_more(impl):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(16, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 1))
    expected = [net[0].weight, net[3].weight, net[5].weight]
    us, vs = random_vectors(expected)
    state = SpectralNormState.from_vectors(expected, us, vs)
    _, sig, _ = spectral_norm_penalty(net, 2, state, impl=impl)
    ref, _, _ = loop_reference(expected, us, vs, 2)
    assert_close(sig, ref.float(), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_is_u_v_outer(impl, dtype):
    weights = [torch.randn(s, dtype=dtype, requires_grad=True) for s in [(6, 4), (6, 4), (3, 2, 2, 2), (9, 2)]]
    coef = torch.tensor([0.5, -2.0, 1.5, 3.0])
    _, sig, state = spectral_norm_penalty(weights, 2, impl=impl)
    (sig * coef).sum().backward()
    for i, w in enumerate(weights):
        expected = (coef[i] * torch.outer(state.u(i).double(), state.v(i).double())).reshape(w.shape)
        assert w.grad.dtype == dtype
        assert_close(w.grad, expected.to(w.grad.dtype if dtype != torch.bfloat16 else torch.float32),
                     dtype if dtype != torch.bfloat16 else torch.bfloat16)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_float64_converged(impl):
    """At converged u, v the analytic gradient u vᵀ is the derivative of σ_max, and one more power step
    (what each call does) keeps σ's numeric derivative equal to it to first order."""
    g = torch.Generator().manual_seed(5)
    w0 = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(5, 3), (4, 2, 2), (5, 3)]]
    _, _, state = spectral_norm_penalty(w0, 500, None, generator=g, impl=impl)

    def f(*ws):
        return spectral_norm_penalty(list(ws), 1, state.clone(), impl=impl)[1]

    weights = [w.clone().requires_grad_() for w in w0]
    assert torch.autograd.gradcheck(f, weights, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("reduction", ["sum", "mean", "max", "none"])
@pytest.mark.parametrize("target", [None, 1.5])
@pytest.mark.parametrize("impl", IMPLS)
def test_reductions_and_hinge(impl, reduction, target):
    weights = [torch.randn(s, dtype=torch.float64) for s in [(6, 4), (3, 3), (6, 4)]]
    state = SpectralNormState.init(weights)
    pen, sig, _ = spectral_norm_penalty(weights, 4, state.clone(), reduction=reduction, target=target, impl=impl)
    terms = sig if target is None else torch.clamp(sig - target, min=0) ** 2
    expected = {"sum": terms.sum(), "mean": terms.mean(), "max": terms.max(), "none": terms}[reduction]
    assert_close(pen, expected, torch.float64)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("impl", IMPLS)
def test_compile_fullgraph_updates_state(impl, backend):
    weights = [torch.randn(s, requires_grad=True) for s in [(16, 8), (16, 8), (4, 2, 3, 3)]]
    s_eager = SpectralNormState.init(weights, generator=torch.Generator().manual_seed(0))
    s_comp = s_eager.clone()
    fn = torch.compile(lambda ws, st: spectral_norm_penalty(ws, 2, st, impl=impl)[:2], fullgraph=True, backend=backend)
    for _ in range(3):
        pe, se, _ = spectral_norm_penalty(weights, 2, s_eager, impl=impl)
        pc, sc = fn(weights, s_comp)
        assert_close(pc, pe, torch.float32)
        assert_close(sc, se, torch.float32)
        for i in range(len(weights)):
            assert_close(s_comp.u(i), s_eager.u(i), torch.float32)
    ge = torch.autograd.grad(pe, weights)
    gc = torch.autograd.grad(pc, weights)
    for a, b in zip(gc, ge):
        assert_close(a, b, torch.float32)


@given(shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=8),
       n_iter=st.integers(1, 4), seed=st.integers(0, 2**16), impl=st.sampled_from(IMPLS),
       transposed=st.booleans())
def test_fuzz_against_loop(shapes, n_iter, seed, impl, transposed):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    if transposed:  # non-contiguous weights
        weights = [w.t().contiguous().t() for w in weights]
    us, vs = random_vectors(weights, seed)
    _, sig, state = spectral_norm_penalty(weights, n_iter, SpectralNormState.from_vectors(weights, us, vs), impl=impl)
    ref, ref_u, _ = loop_reference(weights, us, vs, n_iter)
    assert_close(sig, ref, torch.float64)
    for i in range(len(weights)):
        assert_close(state.u(i), ref_u[i], torch.float64)


@pytest.mark.parametrize("impl", IMPLS)
def test_mixed_dtypes_form_separate_groups(impl):
    weights = [torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.bfloat16)]
    us, vs = random_vectors(weights)
    state = SpectralNormState.from_vectors(weights, us, vs)
    assert len(state.groups) == 3
    _, sig, _ = spectral_norm_penalty(weights, 2, state, impl=impl)
    ref, _, _ = loop_reference(weights, us, vs, 2)
    assert sig.dtype == torch.float64  # the σ of all layers in one vector, promoted
    assert_close(sig, ref, torch.float64, atol=1e-2, rtol=1e-2)
    assert_close(sig[1], ref[1], torch.float64)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_weight_gives_zero_not_nan(impl):
    w = torch.zeros(4, 3, requires_grad=True)
    _, sig, _ = spectral_norm_penalty([w], 1, impl=impl)
    sig.sum().backward()
    assert sig.item() == 0 and torch.isfinite(w.grad).all()


def test_bad_input():
    op = "regops.spectral_norm_penalty: "
    w = [torch.randn(4, 3), torch.randn(5, 2)]
    with pytest.raises(ValueError, match=re.escape(op + "n_power_iterations: expected an int >= 1, got 0")):
        spectral_norm_penalty(w, 0)
    with pytest.raises(TypeError, match=re.escape(op + "n_power_iterations: expected an int >= 1, got float 1.0")):
        spectral_norm_penalty(w, 1.0)
    with pytest.raises(TypeError, match=re.escape(op + "module_or_weights[1]: expected a floating-point tensor, "
                                                        "got dtype int64")):
        spectral_norm_penalty([torch.randn(3, 3), torch.ones(3, 3, dtype=torch.long)])
    with pytest.raises(ValueError, match=re.escape(op + "module_or_weights[0]: expected a weight of dim >= 2 "
                                                        "(reshaped to (out, -1)), got a 1-D tensor of shape (3,)")):
        spectral_norm_penalty([torch.randn(3)])
    with pytest.raises(ValueError, match=re.escape(op + "module_or_weights: expected at least one weight")):
        spectral_norm_penalty([])
    with pytest.raises(ValueError, match=re.escape(op + "module_or_weights: expected a module with at least one "
                                                        "parameter of dim >= 2")):
        spectral_norm_penalty(torch.nn.LayerNorm(4))
    _, _, state = spectral_norm_penalty(w)
    with pytest.raises(ValueError, match=re.escape(op + "state: expected a state made for these weights: 2 matrices "
                                                        "(4x3 float32, 5x3 float32) on cpu, got one made for 2 "
                                                        "matrices (4x3 float32, 5x2 float32) on cpu")):
        spectral_norm_penalty([torch.randn(4, 3), torch.randn(5, 3)], 1, state)
    with pytest.raises(TypeError, match=re.escape(op + "state: expected a SpectralNormState or None, got dict")):
        spectral_norm_penalty(w, 1, {})
    with pytest.raises(ValueError, match=re.escape(op + "reduction: expected one of 'sum', 'mean', 'max', 'none'")):
        spectral_norm_penalty(w, reduction="avg")
    with pytest.raises(RuntimeError, match=re.escape(op + "impl: expected an impl that can run here, got 'cuda'")):
        spectral_norm_penalty(w, impl="cuda")
    with pytest.raises(RuntimeError, match=re.escape(op + "module_or_weights[1]: expected device cpu (as "
                                                        "module_or_weights[0]), got device meta")):
        spectral_norm_penalty([torch.randn(3, 3), torch.randn(3, 3, device="meta")])


# ---------------------------------------------------------------------------------------------- the kernels

KERNELS = cpu_impls(OP)
needs_kernel = pytest.mark.skipif(not KERNELS, reason="no compiled CPU kernels or Triton interpreter")


def _power_op(impl):
    return torch.ops.regops.spectral_power if impl == "cpu" else torch.ops.regops.spectral_power_triton


@needs_kernel
@pytest.mark.parametrize("impl", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shapes", [[(1, 1)], [(1, 7)], [(7, 1)], [(31, 33)], [(3, 4099)], [(600, 5), (2, 3)],
                                    [(33, 17)] * 5])
def test_power_kernel_matches_float64_loop(impl, dtype, shapes):
    """The schema against the per-layer loop in float64 on the same (rounded) weights: for bf16/fp16 weights the
    kernel's float32 math must be within 2x the error of torch's own float32 loop on those weights."""
    g = torch.Generator().manual_seed(len(shapes) + shapes[0][0])
    weights = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    us, vs = random_vectors(weights)
    acc = regops._constants.acc_dtype(dtype)
    u0, v0 = torch.cat(us).to(acc), torch.cat(vs).to(acc)
    sig, u_new, v_new = _power_op(impl)(weights, u0, v0, 3, 1e-12)
    ref, ref_u, ref_v = loop_reference(weights, us, vs, 3)
    assert sig.dtype == u_new.dtype == v_new.dtype == acc
    assert torch.equal(u0, torch.cat(us).to(acc))  # the inputs are not written
    if dtype == torch.float64:
        assert_close(sig, ref, dtype)
        assert_close(u_new, torch.cat(ref_u), dtype)
        assert_close(v_new, torch.cat(ref_v), dtype)
    else:
        f32, _, _ = loop_reference([w.float() for w in weights], [u.float() for u in us], [v.float() for v in vs], 3)
        err_torch = (f32.double() - ref).abs().max().item()
        err = (sig.double() - ref).abs().max().item()
        assert err <= 2 * err_torch + 1e-6 * ref.abs().max().item(), (err, err_torch)


@needs_kernel
@pytest.mark.parametrize("impl", KERNELS)
def test_outer_kernel_is_g_u_v(impl):
    outer = torch.ops.regops.spectral_outer if impl == "cpu" else torch.ops.regops.spectral_outer_triton
    g = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        acc = regops._constants.acc_dtype(dtype)
        ws = [torch.empty(s, dtype=dtype) for s in [(1, 1), (17, 3), (5, 1030)]]
        us = [torch.randn(w.shape[0], generator=g, dtype=torch.float64) for w in ws]
        vs = [torch.randn(w.shape[1], generator=g, dtype=torch.float64) for w in ws]
        gs = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
        out = outer(gs.to(acc), torch.cat(us).to(acc), torch.cat(vs).to(acc), ws)
        for k, (o, w) in enumerate(zip(out, ws)):
            expected = gs[k] * torch.outer(us[k].to(acc).double(), vs[k].to(acc).double())
            assert o.dtype == dtype and o.shape == w.shape and o.is_contiguous()
            assert_close(o, expected.to(dtype), dtype)


@pytest.mark.skipif("cpu" not in KERNELS, reason="no compiled CPU kernels")
def test_cpu_kernel_is_bitwise_independent_of_threads():
    """Every output element has a fixed reduction order, whether the matrices or their rows are shared out."""
    g = torch.Generator().manual_seed(4)
    for weights in ([torch.randn(700, 1100, generator=g)], [torch.randn(70, 90, generator=g) for _ in range(5)]):
        us, vs = random_vectors(weights)
        us, vs = torch.cat(us).float(), torch.cat(vs).float()
        old = torch.get_num_threads()
        try:
            outs = []
            for n in (1, 2):
                torch.set_num_threads(n)
                outs.append(torch.ops.regops.spectral_power(weights, us, vs, 2, 1e-12))
        finally:
            torch.set_num_threads(old)
        a, b = outs
        assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.skipif("cpu" not in KERNELS, reason="no compiled CPU kernels")
def test_cpu_portable_path_matches_avx2():
    """The AVX2 loops are picked at run time; REGOPS_CPU_NO_SIMD=1 (a subprocess) runs the portable ones."""
    import textwrap
    code = textwrap.dedent("""
        import sys, torch, regops
        g = torch.Generator().manual_seed(0)
        out = {}
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            acc = torch.float64 if dtype == torch.float64 else torch.float32
            ws = [torch.randn(s, generator=g).to(dtype) for s in [(1, 1), (17, 33), (40, 1030)]]
            u = torch.randn(sum(w.shape[0] for w in ws), generator=g).to(acc)
            v = torch.randn(sum(w.shape[1] for w in ws), generator=g).to(acc)
            sig, u, v = torch.ops.regops.spectral_power(ws, u, v, 2, 1e-12)
            grads = torch.ops.regops.spectral_outer(sig.detach(), u, v, ws)
            out[str(dtype)] = [sig, u, v] + list(grads)
        torch.save(out, sys.argv[1])
    """)
    simd, portable = run_simd_and_portable(code)
    for key in simd:  # FMA or not: float32 rounding apart, which a bf16 gradient may show as one ulp
        tol = {"torch.float64": 1e-12, "torch.float32": 2e-5, "torch.bfloat16": 8e-3}[key]
        for a, b in zip(simd[key], portable[key]):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@needs_kernel
@pytest.mark.parametrize("impl", KERNELS)
def test_kernel_double_backward_raises(impl):
    w = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True)]
    pen, _, _ = spectral_norm_penalty(w, 2, impl=impl)
    (g,) = torch.autograd.grad(pen, w, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


@needs_kernel
@pytest.mark.parametrize("impl", KERNELS)
def test_kernel_state_and_gradients_match_reference_on_a_module(impl):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10),
                              torch.nn.Linear(10, 10), torch.nn.Linear(10, 10))
    s_ref = SpectralNormState.init([p for p in net.parameters() if p.dim() >= 2],
                                   generator=torch.Generator().manual_seed(0))
    s_ker = s_ref.clone()
    for _ in range(3):
        net.zero_grad()
        pen, _, _ = spectral_norm_penalty(net, 1, s_ref, impl="reference", target=0.5)
        pen.backward()
        ref_grads = [p.grad.clone() for p in net.parameters() if p.dim() >= 2]
        net.zero_grad()
        pk, _, _ = spectral_norm_penalty(net, 1, s_ker, impl=impl, target=0.5)
        pk.backward()
        assert_close(pk, pen, torch.float32)
        for a, b in zip([p.grad for p in net.parameters() if p.dim() >= 2], ref_grads):
            assert_close(a, b, torch.float32)
        for i in range(4):
            assert_close(s_ker.u(i), s_ref.u(i), torch.float32)
            assert_close(s_ker.v(i), s_ref.v(i), torch.float32)


# ---------------------------------------------------------------------------------------------- adversarial noise

class Linear(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, s):
        return (s.reshape(s.shape[0], -1) * self.w.reshape(1, -1)).sum(1, keepdim=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trailing", [(5,), (2, 3), (1,)])
@pytest.mark.parametrize("direction", ["increase", "decrease"])
def test_fgsm_closed_form_on_linear_value(dtype, trailing, direction):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(trailing, generator=g, dtype=dtype)
    V = Linear(w)
    s = torch.randn((4, *trailing), generator=g, dtype=dtype)
    eps = 0.3
    sign = 1 if direction == "increase" else -1
    linf = adversarial_state_noise(V, s, eps, norm="linf", direction=direction)
    assert_close(linf - s, (sign * eps * torch.sign(w)).expand_as(s).to(dtype), dtype)
    l2 = adversarial_state_noise(V, s, eps, norm="l2", direction=direction)
    unit = w.double() / w.double().norm()
    assert_close(l2 - s, (sign * eps * unit).expand_as(s).to(dtype), dtype)
    assert V.w.grad is None  # no gradient left on the value function's parameters
    assert not linf.requires_grad and not l2.requires_grad


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_stays_in_ball_and_ascends_on_convex_value(norm):
    g = torch.Generator().manual_seed(1)
    c = torch.randn(6, generator=g, dtype=torch.float64)
    s = torch.randn(8, 6, generator=g, dtype=torch.float64)
    V = lambda x: ((x - c) ** 2).sum(1)  # convex: gradient ascent steps never decrease it  # noqa: E731
    eps = 0.5
    prev = V(s)
    for steps in (1, 2, 4, 8, 16):
        adv = adversarial_state_noise(V, s, eps, steps=steps, norm=norm, step_size=eps / 4)
        d = adv - s
        size = d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)
        assert (size <= eps * (1 + 1e-12)).all()
        now = V(adv)
        assert (now >= prev - 1e-12).all()
        prev = now
    # the l2 maximum of ‖s + δ − c‖² over the ball is at δ = eps·(s − c)/‖s − c‖: PGD reaches it
    if norm == "l2":
        best = ((s - c).norm(dim=1) + eps) ** 2
        assert_close(prev, best, torch.float64)


def test_pgd_under_no_grad_and_batch_of_one_and_zero_gradient():
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    s = torch.randn(1, 3)
    with torch.no_grad():
        adv = adversarial_state_noise(net, s, 0.1, steps=5)
    assert adv.shape == s.shape and (adv - s).norm() <= 0.1 * (1 + 1e-6)
    assert all(p.grad is None for p in net.parameters())
    const = lambda x: torch.ones(x.shape[0])  # noqa: E731  (no dependence on the states: zero gradient)
    for norm in ("l2", "linf"):
        out = adversarial_state_noise(lambda x: (x * 0).sum(1), s, 0.1, steps=3, norm=norm)
        assert torch.equal(out, s)
        assert torch.equal(adversarial_state_noise(const, s, 0.1, norm=norm), s)
    assert torch.equal(adversarial_state_noise(net, s, 0.0), s)


def test_random_start_inside_ball():
    V = lambda x: x.sum(1)  # noqa: E731
    s = torch.zeros(64, 4)
    for norm in ("l2", "linf"):
        adv = adversarial_state_noise(V, s, 0.2, steps=1, norm=norm, step_size=0.0, random_start=True,
                                      generator=torch.Generator().manual_seed(0))
        size = adv.norm(dim=1) if norm == "l2" else adv.abs().amax(dim=1)
        assert (size <= 0.2 * (1 + 1e-6)).all() and (size > 0).any()


def test_adversarial_bad_input():
    op = "regops.adversarial_state_noise: "
    V = lambda x: x.sum(1)  # noqa: E731
    s = torch.randn(3, 2)
    with pytest.raises(ValueError, match=re.escape(op + "eps: expected a finite number >= 0, got -0.1")):
        adversarial_state_noise(V, s, -0.1)
    with pytest.raises(ValueError, match=re.escape(op + "steps: expected an int >= 1, got 0")):
        adversarial_state_noise(V, s, 0.1, steps=0)
    with pytest.raises(ValueError, match=re.escape(op + "norm: expected one of 'l2', 'linf', got 'l1'")):
        adversarial_state_noise(V, s, 0.1, norm="l1")
    with pytest.raises(TypeError, match=re.escape(op + "states: expected a floating-point tensor, got dtype int64")):
        adversarial_state_noise(V, torch.ones(3, 2, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match=re.escape(op + "value_fn: expected values of shape (3, ...) for states of "
                                                        "batch 3, got shape ()")):
        adversarial_state_noise(lambda x: x.sum(), s, 0.1)
    with pytest.raises(TypeError, match=re.escape(op + "value_fn: expected a callable, got int")):
        adversarial_state_noise(3, s, 0.1)
