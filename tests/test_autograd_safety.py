"""Autograd safety of every registered op on every impl here, driven by the sample table (tests/op_samples.py: ALL,
plus VARIANTS for other code paths of one op). A silently wrong gradient is the only failure each test looks for.

Version counters (test_inplace_after_forward): run the forward, change one tensor the op read (an input that
requires grad, or a floating tensor without grad) in place by an uneven amount, then backward. Either autograd
raises "modified by an inplace operation" (the op saved that tensor: class R), or the op did not keep it for
backward (a copy, the gradient computed in the forward, or a gradient that does not depend on it: class U), and
then the gradient equals the one of an unmodified run. A gradient that differs is a saved tensor read behind
autograd's back (a tensor stashed on ctx, ``.data``). The classes found (targets in order: sample.inputs, then the
floating sample.aux; set REGOPS_AUTOGRAD_TABLE=1 to print the table):

    R on every impl: orthonormal_penalty, sorsa_ortho_loss (R R), decoupled_mixup_loss, elr_loss, and the
        reference-only cae_encoder_penalty (R R), contractive_penalty (R R);
    R on the kernels, U on the reference (it saves copies, or its gradient needs no input): conr_loss (R R R),
        supcon_loss, focal_supcon_loss, spectral_norm_penalty (R R R; the reference's gradient is u vᵀ alone);
    rrpo_loss: kernels R R R R (their backward recomputes the reference head too), reference R R U U;
    param_repulsion: kernels R R U U U U (the anchors are copies), reference U everywhere;
    fused_linear_preference_loss: R R U U on every impl; [frozen_head]: kernels R U U R, reference U U U R;
    kl_to_reference: R R U on every impl; [none]: kernels R R R, reference R R U;
    the reference-only gaussian_kl R U, layer_relative_error R U, local_error_penalty R U (y is detached, as
        officially), lsa.layerwise_penalty R U R U R R, masked_l1_anchor U U R, sigmoid_ae_jacobian_penalty R R U R;
    U on every impl: ot.sinkhorn, ot.sinkhorn_from_cost, ot.sinkhorn_divergence, monge_gap (the Sinkhorn backward
        reads copies and the detached potentials), and the reference-only apply_hyperactive_mask,
        context_attention_reg, context_embedding_reg, contrast_ratio_loss, hard_pair_mixup, kd_loss,
        preference_loss, reparameterize, select_present_nodes.
    No op returned a silently wrong gradient.

Double backward (test_double_backward): the gradient with create_graph=True, then the gradient of Σ g·v (a
Hessian-vector product along a fixed random v). The reference must match the central difference of its own
gradient along v (float64), except where its gradient holds a quantity constant by design
(SECOND_ORDER_OF_CONSTANTS); a kernel impl either raises a RuntimeError that names the op
(``regops.<op>: double backward …``) or matches the reference. Found: every kernel impl raises, except
ot.sinkhorn_from_cost (cpu, triton), whose gradient P is differentiable torch math and matches the reference; every
reference works (zero, with the central difference agreeing, for the linear apply_hyperactive_mask,
hard_pair_mixup, select_present_nodes).

torch.compile (test_compile_dynamic): each sample at n = 7, 9, 11 through ``torch.compile(dynamic=True,
backend="aot_eager")`` (graph breaks allowed), with a backend that counts the graphs it is handed: outputs and
gradients equal eager; the second size compiles at most as many graphs as the first (each at most once more),
the third none. Ops whose data or sizes become Python constants recompile by design: RECOMPILES (xfail, with the
reason). Every op compiles and matches eager; all but those in RECOMPILES reuse their graphs. Marked slow: about
3 minutes here (2 cores), the rest of the file about 15 s.
"""
import os
import re

import pytest
import torch

from op_samples import ALL, VARIANTS, dtype_for, flat_tensors, impls, op_of

CASES = {**ALL, **VARIANTS}
DIFFERENTIABLE = [name for name, make in CASES.items() if make().differentiable]
DIFF_CASES = [(name, impl) for name in DIFFERENTIABLE for impl in impls(name)]


def ids(cases):
    return [f"{name}-{impl}" for name, impl in cases]


def grads(sample, out, **kw):
    gs = torch.autograd.grad(sample.scalar(out), sample.inputs, allow_unused=True, **kw)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(sample.inputs, gs)]


# ---- version counters ----

INPLACE = re.compile("modified by an inplace operation")
TABLE = {}


@pytest.fixture(scope="module", autouse=True)
def _print_table(request):
    yield
    if os.environ.get("REGOPS_AUTOGRAD_TABLE") and TABLE:
        plugins = request.config.pluginmanager
        reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            reporter.write_line("\nin-place after forward: R = raises, U = not saved (gradient unchanged)")
            for (name, impl), classes in sorted(TABLE.items()):
                reporter.write_line(f"  {name:44s} {impl:9s} {' '.join(classes)}")


def targets_of(sample):
    return sample.inputs + [t for t in sample.aux if t.is_floating_point()]


def uneven(t):
    # not a constant shift (softmax ignores one) nor a scaling (a cosine ignores one)
    return torch.linspace(0.1, 0.9, t.numel(), dtype=t.dtype).reshape(t.shape)


@pytest.mark.parametrize("name,impl", DIFF_CASES, ids=ids(DIFF_CASES))
def test_inplace_after_forward(name, impl):
    make, dtype = CASES[name], dtype_for(name, impl)
    base = make(dtype)
    want = grads(base, base.call(impl))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-7)
    classes = []
    for k in range(len(targets_of(base))):
        sample = make(dtype)
        out = sample.call(impl)
        target = targets_of(sample)[k]
        with torch.no_grad():
            target.add_(uneven(target))
        try:
            got = grads(sample, out)
        except RuntimeError as e:
            assert INPLACE.search(str(e)), f"{name} {impl}: target {k}: backward raised {e}"
            classes.append("R")
            continue
        classes.append("U")
        for i, (g, w) in enumerate(zip(got, want)):
            torch.testing.assert_close(g, w, **tol, msg=lambda m: (
                f"{name} {impl}: changing target {k} in place after the forward changed the gradient of input {i} "
                f"without autograd noticing (a saved tensor bypasses the version counter): {m}"))
    TABLE[(name, impl)] = classes


# ---- double backward ----

# The reference's gradient treats these as constants, by design: the derivative of that gradient is exact for it,
# not the central difference of the computed gradient (which moves them too).
SECOND_ORDER_OF_CONSTANTS = {
    "spectral_norm_penalty": "dσ/dW = u vᵀ with the power-iteration vectors u, v held constant (its docstring)",
    "ot.sinkhorn": "the envelope-theorem gradient holds the potentials f, g constant (ot/_backend.py)",
    "ot.sinkhorn_from_cost": "∂reg_ot_cost/∂C = P with the potentials held constant (ot/_backend.py)",
    "ot.sinkhorn_divergence": "three Sinkhorn costs, each with its potentials held constant",
    "monge_gap": "a Sinkhorn cost with its potentials held constant",
    "elr_loss": "the buffer target is a stop-gradient of the logits (updated in the forward, as officially)",
    "local_error_penalty": "detach='official': k1 and the state are constants of the step (as officially)",
}
NAMES_THE_OP = re.compile(r"^regops\.[\w./]+: double backward")


def directions(sample):
    g = torch.Generator().manual_seed(123)
    return [torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype) for x in sample.inputs]


def hessian_times_direction(sample, impl):
    """H v for v = directions(sample), by double backward; zeros where the gradient carries no graph."""
    gs = grads(sample, sample.call(impl), create_graph=True)
    terms = [(g * v).sum() for g, v in zip(gs, directions(sample)) if g.requires_grad]
    if not terms:
        return [torch.zeros_like(x) for x in sample.inputs]
    hv = torch.autograd.grad(sum(terms), sample.inputs, allow_unused=True)
    return [torch.zeros_like(x) if h is None else h for x, h in zip(sample.inputs, hv)]


def central_difference(make, impl, h=1e-5):
    """(∇(x + h v) − ∇(x − h v)) / 2h: the derivative of the computed gradient along v."""
    sides = []
    for sign in (1, -1):
        sample = make(torch.float64)
        with torch.no_grad():
            for x, v in zip(sample.inputs, directions(sample)):
                x.add_(sign * h * v)
        sides.append(grads(sample, sample.call(impl)))
    return [(a - b) / (2 * h) for a, b in zip(*sides)]


def assert_close_scaled(got, want, rtol, what):
    for i, (a, b) in enumerate(zip(got, want)):
        scale = float(b.abs().max()) if b.numel() else 0.0
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=rtol * max(scale, 1e-3),
                                   msg=lambda m: f"{what}, input {i}: {m}")


@pytest.mark.parametrize("name,impl", DIFF_CASES, ids=ids(DIFF_CASES))
def test_double_backward(name, impl):
    make = CASES[name]
    try:
        got = hessian_times_direction(make(dtype_for(name, impl)), impl)
    except RuntimeError as e:
        assert NAMES_THE_OP.match(str(e)), f"{name} {impl}: double backward raised an error that names no op: {e}"
        assert impl != "reference" or op_of(name) not in SECOND_ORDER_OF_CONSTANTS
        return
    for h in got:
        assert torch.isfinite(h).all(), f"{name} {impl}: non-finite second derivative"
    if impl == "reference":
        if op_of(name) in SECOND_ORDER_OF_CONSTANTS:
            return
        assert_close_scaled(got, central_difference(make, impl), 1e-5,
                            f"{name}: double backward vs the central difference of the gradient")
    else:
        want = hessian_times_direction(make(torch.float64), "reference")
        rtol = 1e-7 if dtype_for(name, impl) == torch.float64 else 1e-4
        assert_close_scaled(got, want, rtol, f"{name} {impl}: double backward vs the reference's")


# ---- torch.compile(dynamic=True) ----

SIZES = (7, 9, 11)
COMPILE_CASES = [(name, impl) for name in ALL for impl in impls(name)]
# ops that make a size or their data a Python constant of the graph: a new size (or new data) recompiles
RECOMPILES = {
    "calibrate_hyperactive_threshold": "a host-side sweep: each metric score (a Python float, ops/snn.py:149) is a "
                                       "constant of a graph; it recompiles per value up to the recompile limit "
                                       "(documented as not for torch.compile)",
}


class CountingBackend:
    """aot_eager, counting the graphs torch.compile hands it."""

    def __init__(self):
        from torch._dynamo.backends.debugging import aot_eager
        self.aot_eager, self.graphs = aot_eager, 0

    def __call__(self, gm, example_inputs, **kwargs):
        self.graphs += 1
        return self.aot_eager(gm, example_inputs, **kwargs)


def compare_values(got, want, dtype, what):
    tol = dict(rtol=1e-6, atol=1e-8) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    assert len(got) == len(want), what
    for i, (a, b) in enumerate(zip(got, want)):
        # an iteration count may come back as a tensor under compile and as an int in eager
        torch.testing.assert_close(a.double(), b.double(), **tol, msg=lambda m: f"{what} {i}: {m}")


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()  # no compiled graph of this test outlives it


@pytest.mark.slow
@pytest.mark.parametrize("name,impl", COMPILE_CASES, ids=ids(COMPILE_CASES))
def test_compile_dynamic(name, impl, fresh_dynamo):
    dtype = dtype_for(name, impl)
    backend = CountingBackend()
    new_graphs = []
    for n in SIZES:
        sample, eager = ALL[name](dtype, n=n), ALL[name](dtype, n=n)

        def run():
            return sample.call(impl)

        before = backend.graphs
        got = torch.compile(run, backend=backend, dynamic=True)()
        new_graphs.append(backend.graphs - before)
        want = eager.call(impl)
        compare_values(flat_tensors(got), flat_tensors(want), dtype, f"{name} {impl} n={n}: output")
        if sample.differentiable:
            compare_values(grads(sample, got), grads(eager, want), dtype, f"{name} {impl} n={n}: gradient")
    reuses = new_graphs[0] >= 1 and new_graphs[1] <= new_graphs[0] and new_graphs[2] == 0
    if name in RECOMPILES:
        assert not reuses, f"{name} {impl} now reuses its graphs {new_graphs}: remove it from RECOMPILES"
        pytest.xfail(f"{RECOMPILES[name]} (graphs per size {new_graphs})")
    assert reuses, (f"{name} {impl}: graphs compiled at n = {SIZES}: {new_graphs}; the second size may recompile "
                    f"each graph once at most, the third none")


def test_compile_cases_cover_every_op():
    assert {name for name, _ in COMPILE_CASES} == set(ALL)
    assert set(RECOMPILES) <= set(ALL) and set(SECOND_ORDER_OF_CONSTANTS) <= set(ALL)
