"""Parameter repulsion on a GPU: the CUDA and Triton kernels of regops.param_repulsion against the float64
reference on the same CUDA tensors (losses and gradients, per dtype, odd sizes around the kernels' chunks), against
the CPU kernel where it is built, and with non-contiguous params. Skips without a CUDA device.

A test marked gpu_validates and parametrized by `impl` vouches for those (op, impl) pairs (conftest.py,
scripts/gpu_check.sh): it must not skip except when the impl cannot run at all."""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

import regops  # noqa: E402
from regops import _registry  # noqa: E402
from regops.reference import repulsion as R  # noqa: E402

from conftest import gpu_test, need  # noqa: E402

pytestmark = [pytest.mark.cuda]

OP = "param_repulsion"
IMPLS = ["cuda", "triton"]
# around the CUDA chunk (8192) and the Triton block (1024), a 0-dim scalar, a 4-D conv weight
SHAPES = [(1,), (2,), (1001,), (), (1023,), (1024,), (1025,), (8191,), (8192,), (8193,), (64, 3, 7, 7), (70001,)]
RTOL = {torch.float64: 1e-11, torch.float32: 2e-5}


def _lists(dtype, k=1, seed=0, shapes=SHAPES):
    g = torch.Generator(device="cuda").manual_seed(seed)
    params = [torch.randn(s, generator=g, device="cuda", dtype=torch.float64).to(dtype).requires_grad_()
              for s in shapes]
    sets = [[(p.detach().double() + 0.3 * torch.randn(p.shape, generator=g, device="cuda", dtype=torch.float64))
             .to(dtype) for p in params] for _ in range(k)]
    return params, sets


def _ref(params, sets, kind):
    p64 = [p.detach().double().requires_grad_() for p in params]
    loss = R.param_repulsion(p64, [[a.double() for a in s] for s in sets], kind)
    return loss, torch.autograd.grad(loss, p64)


@gpu_test([OP], IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["inverse", "exp", "neg_l2"])
@pytest.mark.parametrize("k", [1, pytest.param(3, marks=pytest.mark.gpu_quick)])
def test_matches_reference(impl, dtype, kind, k):
    need(OP, impl)
    params, sets = _lists(dtype, k)
    loss = regops.param_repulsion(params, sets if k > 1 else sets[0], kind=kind, impl=impl)
    ref, gref = _ref(params, sets, kind)
    torch.testing.assert_close(loss.double(), ref, rtol=RTOL[dtype], atol=0)
    for g, gr in zip(torch.autograd.grad(loss, params), gref):
        assert g.dtype == dtype and g.device.type == "cuda"
        torch.testing.assert_close(g.double(), gr, rtol=RTOL[dtype], atol=RTOL[dtype] * float(gr.abs().max()))


@gpu_test([OP], IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_within_twice_torchs_own(impl, dtype):
    need(OP, impl)
    params, sets = _lists(dtype)
    loss = regops.param_repulsion(params, sets[0], kind="neg_l2", impl=impl)
    ref, gref = _ref(params, sets, "neg_l2")
    own = -sum(torch.nn.functional.mse_loss(a, p) for p, a in zip(params, sets[0])) / len(params) / 2
    err, own_err = abs(float(loss.detach()) - float(ref)), abs(float(own.detach()) - float(ref))
    assert err <= max(2 * own_err, 1e-5 * abs(float(ref)))
    for g, go, gr in zip(torch.autograd.grad(loss, params), torch.autograd.grad(own, params), gref):
        e, oe = float((g.double() - gr).abs().max()), float((go.double() - gr).abs().max())
        assert e <= max(2 * oe, float(gr.abs().max()) * (2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11))


@gpu_test([OP], IMPLS)
def test_matches_cpu_kernel_and_non_contiguous(impl):
    need(OP, impl)
    params, sets = _lists(torch.float32, k=2, seed=1)
    views = [p.detach().t().contiguous().t().requires_grad_() if p.dim() == 2 else p for p in params]
    loss = regops.param_repulsion(views, sets, kind="exp", impl=impl)
    grads = torch.autograd.grad(loss, views)
    if _registry.available(OP, "cpu", torch.device("cpu"))[0]:
        pc = [p.detach().cpu().requires_grad_() for p in params]
        lc = regops.param_repulsion(pc, [[a.cpu() for a in s] for s in sets], kind="exp", impl="cpu")
        torch.testing.assert_close(loss.cpu(), lc, rtol=1e-5, atol=0)
        for g, gc in zip(grads, torch.autograd.grad(lc, pc)):
            torch.testing.assert_close(g.cpu(), gc, rtol=1e-5, atol=1e-7)
    ref, gref = _ref(params, sets, "exp")
    torch.testing.assert_close(loss.double(), ref, rtol=2e-5, atol=0)


@gpu_test([OP], IMPLS)
def test_resnet50_sized_list(impl):
    need(OP, impl)
    from regops.bench.cases.repulsion import resnet50_shapes
    params, sets = _lists(torch.float32, k=2, seed=2, shapes=resnet50_shapes())
    loss = regops.param_repulsion(params, regops.RepulsionAnchors(sets), kind="inverse", impl=impl)
    ref, gref = _ref(params, sets, "inverse")
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=0)
    for g, gr in zip(torch.autograd.grad(loss, params), gref):
        torch.testing.assert_close(g.double(), gr, rtol=1e-4, atol=1e-4 * float(gr.abs().max()))
