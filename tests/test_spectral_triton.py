"""The Triton kernels of the batched spectral norms (regops/triton/spectral.py) against the formula in float64.

torch.ops.regops.spectral_power_triton(weights, u, v, n, eps) -> (sigma, u_out, v_out): n steps of
u = normalize(W v), v = normalize(Wᵀ u) (F.normalize, eps), then sigma = (Wᵀ u) · v, the vectors of all matrices
concatenated; spectral_outer_triton(g, u, v, weights) -> g_l · u_l v_lᵀ in W_l's dtype. The tests hold per-matrix
lists and go through power_lists / outer_lists, which concatenate and split. The oracle runs torch.mv / F.normalize in float64 on the same values
(low-precision weights are exact in float64, so the only error is the kernels' float32 accumulation). On CPU-only
machines the conftest sets TRITON_INTERPRET=1, so the kernels run interpreted (the sizes are small). Also: the
contract's errors word for word (contracts/spectral.py), the fake kernels, and the sm_90 cubins of every kernel.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import regops  # noqa: F401  (registers the ops)
from regops import _loader
from regops._loader import triton_available
from regops.contracts import spectral as contract

from tolerances import assert_same_bits

if not triton_available():
    pytest.skip("triton is not installed", allow_module_level=True)

from regops.triton import spectral as tsp  # noqa: E402  (registers the triton ops)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = {"1x1": [(1, 1)], "1x7": [(1, 7)], "7x1": [(7, 1)], "31x33": [(31, 33)], "3x70": [(3, 70)],
          "mixed": [(31, 33), (1, 1), (3, 70), (7, 1), (17, 129), (1, 7), (40, 300)]}
# u, v are unit vectors and sigma is compared relative to itself: a few ulps of the accumulation dtype times the
# summation depth (measured ~1e-7 in float32, ~1e-16 in float64)
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}


def acc_of(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def power():
    return torch.ops.regops.spectral_power_triton


def outer():
    return torch.ops.regops.spectral_outer_triton


def _split(x, weights, dim):
    return list(x.split([w.shape[dim] for w in weights]))


def power_lists(weights, us, vs, n_iter, eps, op=None):
    sigma, u, v = (op or power())(weights, torch.cat(us), torch.cat(vs), n_iter, eps)
    return sigma, _split(u, weights, 0), _split(v, weights, 1)


def outer_lists(g, us, vs, weights):
    return outer()(g, torch.cat(us), torch.cat(vs), weights)


def make_lists(shapes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    acc = acc_of(dtype)
    weights = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(DEVICE) for s in shapes]
    # not unit vectors: the first W v reads v as given (its scale shows once eps exceeds |W v|)
    us = [(2 * torch.randn(s[0], generator=g, dtype=torch.float64)).to(acc).to(DEVICE) for s in shapes]
    vs = [(2 * torch.randn(s[1], generator=g, dtype=torch.float64)).to(acc).to(DEVICE) for s in shapes]
    return weights, us, vs


def expected_power(weights, us, vs, n_iter, eps=1e-12):
    """torch's power method, one matrix at a time, in float64; sigma = (Wᵀ u) · v."""
    sig, new_u, new_v = [], [], []
    for W, u, v in zip(weights, us, vs):
        W, v = W.detach().double().cpu(), v.double().cpu()
        for _ in range(n_iter):
            u = F.normalize(torch.mv(W, v), dim=0, eps=eps)
            t = torch.mv(W.t(), u)
            v = F.normalize(t, dim=0, eps=eps)
        sig.append(torch.dot(t, v))
        new_u.append(u)
        new_v.append(v)
    return torch.stack(sig), new_u, new_v


def check_power(got, exp, dtype):
    acc = acc_of(dtype)
    tol = TOL[acc]
    sigma, us, vs = got
    s_exp, u_exp, v_exp = exp
    assert sigma.dtype == acc and sigma.shape == s_exp.shape and sigma.device.type == DEVICE
    torch.testing.assert_close(sigma.cpu().double(), s_exp, rtol=tol["rtol"],
                               atol=tol["atol"] * float(s_exp.abs().max()))
    for got_list, exp_list in ((us, u_exp), (vs, v_exp)):
        assert len(got_list) == len(exp_list)
        for x, e in zip(got_list, exp_list):
            assert x.dtype == acc and x.shape == e.shape
            torch.testing.assert_close(x.cpu().double(), e, **tol)


# ---- spectral_power ----

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(SHAPES))
@pytest.mark.parametrize("n_iter", [1, 3])
def test_power_matches_formula(case, dtype, n_iter):
    weights, us, vs = make_lists(SHAPES[case], dtype)
    before = [t.clone() for t in (*weights, *us, *vs)]
    got = power_lists(weights, us, vs, n_iter, 1e-12)
    check_power(got, expected_power(weights, us, vs, n_iter), dtype)
    # new tensors; the inputs untouched
    for t, b in zip((*weights, *us, *vs), before):
        assert torch.equal(t, b)
    for new, old in zip((*got[1], *got[2]), (*us, *vs)):
        assert new.data_ptr() != old.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_power_eps_branch(dtype):
    """A zero matrix (a = 0: u = 0 / eps = 0, sigma = 0) and an eps above the norms (u = a / eps, not a / |a|: the
    first step must also take v unscaled)."""
    weights, us, vs = make_lists([(5, 9), (4, 3)], dtype)
    weights[0].zero_()
    for eps in (1e-12, 1e3):
        got = power_lists(weights, us, vs, 2, eps)
        exp = expected_power(weights, us, vs, 2, eps)
        check_power(got, exp, dtype)
        assert float(got[0][0]) == 0.0 and not got[1][0].any() and not got[2][0].any()


def test_power_non_contiguous():
    weights, us, vs = make_lists([(9, 6), (33, 20)], torch.float32)
    weights = [w.t().contiguous().t() for w in weights]
    u = torch.cat(us)
    u = torch.stack([u, u], 1)[:, 0]
    assert not weights[0].is_contiguous() and not u.is_contiguous()
    sigma, u_new, v_new = power()(weights, u, torch.cat(vs), 2, 1e-12)
    check_power((sigma, _split(u_new, weights, 0), _split(v_new, weights, 1)), expected_power(weights, us, vs, 2),
                torch.float32)


@pytest.mark.skipif(not (_loader.has_compiled_ops() and _loader.schema_registered("spectral_power")),
                    reason="needs the compiled spectral_power")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_power_matches_cpu_kernel(dtype):
    weights, us, vs = make_lists(SHAPES["mixed"], dtype)
    s, u, v = power()(weights, torch.cat(us), torch.cat(vs), 3, 1e-12)
    s_cpu, u_cpu, v_cpu = torch.ops.regops.spectral_power([w.cpu() for w in weights], torch.cat(us).cpu(),
                                                          torch.cat(vs).cpu(), 3, 1e-12)
    tol = TOL[acc_of(dtype)]
    torch.testing.assert_close(s.cpu(), s_cpu, rtol=tol["rtol"], atol=tol["atol"] * float(s_cpu.abs().max()))
    torch.testing.assert_close(u.cpu(), u_cpu, **tol)
    torch.testing.assert_close(v.cpu(), v_cpu, **tol)


# ---- spectral_outer ----

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(SHAPES))
def test_outer_matches_formula(case, dtype):
    weights, us, vs = make_lists(SHAPES[case], dtype, seed=3)
    acc = acc_of(dtype)
    g = torch.randn(len(weights), dtype=torch.float64).to(acc).to(DEVICE)
    grads = outer_lists(g, us, vs, weights)
    assert len(grads) == len(weights)
    for l, (G, W) in enumerate(zip(grads, weights)):
        assert G.dtype == dtype and G.shape == W.shape and G.is_contiguous() and G.device == W.device
        exp = g[l].double() * torch.outer(us[l].double(), vs[l].double())
        tol = TOL[acc] if dtype in (torch.float32, torch.float64) else dict(rtol=8e-3, atol=1e-6)
        torch.testing.assert_close(G.cpu().double(), exp.cpu(), **tol)
        if dtype != torch.float64:
            # g·u_i formed first, one float32 product, then rounded to nearest even: torch's own rounding
            assert_same_bits(G.cpu(), ((g[l] * us[l])[:, None] * vs[l][None, :]).to(dtype).cpu())


def test_outer_non_contiguous_vectors():
    weights, us, vs = make_lists([(6, 10), (3, 70)], torch.bfloat16)
    v = torch.cat(vs)
    v = torch.stack([v, v], 1)[:, 1]
    assert not v.is_contiguous()
    g = torch.tensor([0.5, -2.0], device=DEVICE)
    for l, G in enumerate(outer()(g, torch.cat(us), v, weights)):
        assert_same_bits(G.cpu(), ((g[l] * us[l])[:, None] * vs[l][None, :]).to(torch.bfloat16).cpu())


# ---- the contract, the fakes, the device ----

def _bad_cases():
    W, us, vs = make_lists([(4, 3), (2, 5)], torch.float32)
    u, v = torch.cat(us), torch.cat(vs)
    g = torch.ones(2, device=DEVICE)
    return {
        "empty weights": ((), ([], u, v)),
        "u too short": ((), (W, u[:5], v)),
        "v too long": ((), (W, u, torch.cat([v, v[:1]]))),
        "u 2-D": ((), (W, u[:, None], v)),
        "u wrong dtype": ((), (W, u.double(), v)),
        "weights int dtype": ((), ([w.to(torch.int32) for w in W], u, v)),
        "mixed dtypes": ((), ([W[0], W[1].double()], u, v)),
        "1-D weight": ((), ([W[0][0], W[1]], u, v)),
        "grad wrong shape": (("outer",), (g[:1], u, v, W)),
        "grad wrong dtype": (("outer",), (g.double(), u, v, W)),
        "n_power_iterations 0": (("power", 0, 1e-12), (W, u, v)),
        "eps 0": (("power", 1, 0.0), (W, u, v)),
        "eps nan": (("power", 1, float("nan")), (W, u, v)),
    }


def _contract_error(kind, args, scalars):
    """The exception that contracts/spectral.py raises for these arguments (the ops' checks, in their order)."""
    try:
        if kind == "outer":
            g, u, v, weights = args
            contract.check_lists("spectral_outer", weights, u, v, None)
            contract.check_grad(g, weights)
        else:
            contract.check_lists("spectral_power", *args, None)
            contract.check_params("spectral_power", *scalars)
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("the contract accepted the bad arguments")


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_contract_errors(case):
    spec, args = _bad_cases()[case]
    kinds = [spec[0]] if spec else ["power", "outer"]
    for kind in kinds:
        if kind == "outer":
            call_args = args if len(args) == 4 else (torch.ones(max(len(args[0]), 1), device=DEVICE), args[1],
                                                     args[2], args[0])
            exp = _contract_error("outer", call_args, ())
            with pytest.raises(type(exp)) as info:
                outer()(*call_args)
        else:
            scalars = spec[1:] if spec else (1, 1e-12)
            exp = _contract_error("power", args, scalars)
            with pytest.raises(type(exp)) as info:
                power()(*args, *scalars)
        assert str(info.value) == str(exp)
        assert str(exp).startswith(f"regops.spectral_{kind}: ")


def test_contract_error_words():
    """A few messages spelled out, so that the comparison above is not vacuous."""
    W, us, vs = make_lists([(4, 3)], torch.float32)
    u, v = torch.cat(us), torch.cat(vs)
    with pytest.raises(ValueError, match=r"regops\.spectral_power: u: expected shape \(4,\) \(the row counts of the "
                                         r"weights added up\), got shape \(3,\)"):
        power()(W, v, v, 1, 1e-12)
    with pytest.raises(ValueError, match=r"regops\.spectral_power: v: expected shape \(3,\) \(the column counts"):
        power()(W, u, u, 1, 1e-12)
    with pytest.raises(TypeError, match=r"regops\.spectral_outer: u: expected dtype float32 \(the accumulation"):
        outer()(torch.ones(1, device=DEVICE), u.double(), v, W)
    with pytest.raises(ValueError, match=r"regops\.spectral_power: eps: expected a finite number > 0, got -1"):
        power()(W, u, v, 1, -1.0)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    W, us, vs = make_lists([(4, 3)], torch.float32)
    W, u, v = [x.cpu() for x in W], torch.cat(us).cpu(), torch.cat(vs).cpu()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        power()(W, u, v, 1, 1e-12)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        outer()(torch.ones(1), u, v, W)


def test_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    weights, us, vs = make_lists([(4, 3), (2, 5)], torch.bfloat16)
    with FakeTensorMode(allow_non_fake_inputs=True):
        sigma, u, v = power()(weights, torch.cat(us), torch.cat(vs), 2, 1e-12)
        assert sigma.shape == (2,) and sigma.dtype == torch.float32
        assert u.shape == (6,) and v.shape == (8,) and u.dtype == v.dtype == torch.float32
        grads = outer()(sigma, u, v, weights)
        assert [(g.shape, g.dtype) for g in grads] == [((4, 3), torch.bfloat16), ((2, 5), torch.bfloat16)]


def test_opcheck():
    """Schema, fake kernels and AOT dispatch of both ops (no autograd here: the op module registers it)."""
    weights, us, vs = make_lists([(5, 3), (1, 4)], torch.float64)
    torch.library.opcheck(power().default, (weights, torch.cat(us), torch.cat(vs), 2, 1e-12))
    g = torch.tensor([1.5, -0.5], dtype=torch.float64, device=DEVICE)
    torch.library.opcheck(outer().default, (g, torch.cat(us), torch.cat(vs), weights))


# ---- sm_90 cubins ----

def test_kernels_compile_to_sm90_cubin():
    """Every jit kernel of the module has a compile spec (regops.triton._compile's check) and each spec compiles
    for sm_90. In a subprocess with TRITON_INTERPRET unset: the interpreter replaces @triton.jit at import."""
    script = textwrap.dedent("""
        from regops.triton import _compile, spectral
        specs = [(k, s) for k, s in _compile.collect_specs() if s["fn"].__module__ == spectral.__name__]
        for key, spec in specs:
            cubin = _compile.compile_spec(spec, 90).asm.get("cubin")
            assert cubin, key
            print(key, len(cubin))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    keys = {line.split()[0] for line in out.stdout.splitlines()}
    names = {"spectral_rows_kernel", "spectral_cols_kernel", "spectral_outer_kernel"}
    assert keys == names | {f"{n}[{v}]" for n in names for v in ("fp64", "bf16", "fp16")} \
        | {"spectral_finish_kernel", "spectral_finish_kernel[fp64]"}
    assert {spec["fn"].__name__ for spec in tsp.KERNELS} == names | {"spectral_finish_kernel"}
