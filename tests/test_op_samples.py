"""The sample table (tests/op_samples.py) covers every registered op, and every sample runs on every impl here:
finite outputs, gradients where the op is differentiable (and none where it is not), repeatable calls, and the
kernel impls agreeing with the reference (float64 where the impl takes it, else float32 against the float64
reference with float32 tolerances)."""
import pytest
import torch

from regops import _registry

from op_samples import ALL, VARIANTS, dtype_for, flat_tensors, impls

SAMPLES = {**ALL, **VARIANTS}
CASES = [(name, impl) for name in SAMPLES for impl in impls(name)]
KERNEL_CASES = [(name, impl) for name, impl in CASES if impl != "reference"]


def ids(cases):
    return [f"{name}-{impl}" for name, impl in cases]


def test_every_registered_op_has_a_sample():
    missing = sorted(set(_registry.OPS) - set(ALL))
    assert not missing, (f"registered ops without a sample: {missing}; add a sample for each to tests/op_samples.py "
                         f"(@sample_for(name), small inputs of odd sizes)")
    assert set(ALL) == set(_registry.OPS)


def grads(sample, out):
    return torch.autograd.grad(sample.scalar(out), sample.inputs, allow_unused=True)


@pytest.mark.parametrize("name,impl", CASES, ids=ids(CASES))
def test_sample_runs(name, impl):
    sample = SAMPLES[name](dtype_for(name, impl))
    out = sample.call(impl)
    kind = {"tensor": torch.Tensor, "tuple": tuple}.get(sample.returns)
    if kind is not None:
        assert isinstance(out, kind), f"{name}: returns={sample.returns!r}, got {type(out).__name__}"
    tensors = flat_tensors(out)
    assert tensors, f"{name}: the output holds no tensor or number"
    for i, t in enumerate(tensors):
        if t.is_floating_point():
            assert torch.isfinite(t).all(), f"{name} {impl}: output tensor {i} is not finite: {t}"
    value = sample.scalar(out)
    assert value.dim() == 0 and torch.isfinite(value)
    if sample.differentiable:
        assert sample.inputs, f"{name}: a differentiable sample needs inputs"
        for x, g in zip(sample.inputs, grads(sample, out)):
            assert x.is_leaf and x.requires_grad
            assert g is not None, f"{name} {impl}: an input of shape {tuple(x.shape)} got no gradient"
            assert torch.isfinite(g).all() and g.abs().sum() > 0, f"{name} {impl}: gradient {g}"
    else:
        # a non-differentiable op must not hand back something that looks differentiable
        assert not any(t.requires_grad for t in tensors), f"{name} {impl}: an output requires grad"
    if sample.mutates:
        # gradients an op writes are plain tensors, attached to no graph
        for x in sample.inputs:
            assert x.grad is None or (x.grad.grad_fn is None and not x.grad.requires_grad), \
                f"{name} {impl}: the .grad it wrote is part of an autograd graph"
    # repeatable: state the op updates is made anew in each call
    again = flat_tensors(sample.call(impl))
    assert len(again) == len(tensors)
    for a, b in zip(again, tensors):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def tolerance(dtype):
    return dict(rtol=1e-7, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)


def compare(got, want, dtype, what):
    """Element by element; float32 tolerances where the run was in float32 or either tensor is float32 (a P²OT plan
    is float32 whatever the logits' dtype)."""
    assert len(got) == len(want), what
    for i, (a, b) in enumerate(zip(got, want)):
        if a.is_floating_point() or b.is_floating_point():
            low = torch.float64 if torch.float64 == dtype == a.dtype == b.dtype else torch.float32
            torch.testing.assert_close(a.double(), b.double(), **tolerance(low), msg=lambda m: f"{what} {i}: {m}")
        else:
            assert torch.equal(a, b), f"{what} {i}: {a} != {b}"


@pytest.mark.parametrize("name,impl", KERNEL_CASES, ids=ids(KERNEL_CASES))
def test_kernel_matches_reference(name, impl):
    dtype = dtype_for(name, impl)
    ref, kern = SAMPLES[name](dtype_for(name, "reference")), SAMPLES[name](dtype)
    want_out, got_out = ref.call("reference"), kern.call(impl)
    compare(flat_tensors(got_out), flat_tensors(want_out), dtype, f"{name} {impl} output")
    if kern.differentiable:
        compare(grads(kern, got_out), grads(ref, want_out), dtype, f"{name} {impl} gradient")
