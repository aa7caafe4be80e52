"""Decoupled mixup and ELR on a real GPU (scripts/gpu_check.sh): the CUDA and Triton row kernels through the public
ops, against the reference on the same CUDA tensors, in float32, float64 and bfloat16, odd class counts included."""
import pytest
import torch

import regops
from regops.reference import class_rows as reference

from conftest import gpu_test, need
from tolerances import assert_close, assert_lowp_rule

OPS = ("decoupled_mixup_loss", "elr_loss")


def _schema(impl, role):
    return getattr(torch.ops.regops, role if impl == "cuda" else role + "_triton")


@gpu_test(OPS, ["cuda", "triton"])
@pytest.mark.parametrize("C", [1, 2, pytest.param(1001, marks=pytest.mark.gpu_quick), 32000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ops_match_reference(impl, C, dtype):
    for op in OPS:
        need(op, impl)
    g = torch.Generator().manual_seed(C)
    z = (torch.randn(33, C, generator=g) * 3).to(dtype).cuda().requires_grad_()
    ya = torch.randint(0, C, (33,), generator=g).cuda()
    yb = torch.randint(0, C, (33,), generator=g).cuda()
    idx = torch.randperm(100, generator=g)[:33].cuda()
    out = {}
    for which in (impl, "reference"):
        buf = (torch.rand(100, C, generator=torch.Generator().manual_seed(1)) / C).cuda()
        loss = regops.decoupled_mixup_loss(z, ya, yb, 0.3, impl=which) + regops.elr_loss(z, ya, idx, buf, impl=which)
        (grad,) = torch.autograd.grad(loss, z)
        out[which] = (loss.detach(), grad, buf)
    for got, want in zip(out[impl], out["reference"]):
        assert_close(got, want, dtype if got.dtype == dtype else got.dtype)


@gpu_test(OPS, ["cuda", "triton"])
@pytest.mark.parametrize("C", [pytest.param(7, marks=pytest.mark.gpu_quick), 4099])
def test_rows_bfloat16_error_rule(impl, C):
    for op in OPS:
        need(op, impl)
    g = torch.Generator().manual_seed(C)
    z = (torch.randn(16, C, generator=g) * 3).to(torch.bfloat16).cuda()
    ab = torch.randint(0, C, (16, 2), generator=g).cuda()
    co = torch.rand(16, 4, generator=g).cuda()
    up = torch.rand(16, generator=g).cuda()
    loss, grad = _schema(impl, "mixup_rows")(z, ab, co, True)
    z64 = z.double().requires_grad_()
    exact = reference.mixup_rows(z64, ab, co.double())
    (g_exact,) = torch.autograd.grad(exact, z64, up.double())
    zb = z.clone().requires_grad_()
    lowp = reference.mixup_rows(zb.float(), ab, co).to(torch.bfloat16)  # the formula's float32 path, rounded
    (g_lowp,) = torch.autograd.grad(lowp, zb, up.to(torch.bfloat16))
    assert_lowp_rule(loss, lowp.detach(), exact.detach(), floor=1e-5)
    assert_lowp_rule(torch.ops.regops.row_grad_scale(up, grad, z), g_lowp, g_exact, floor=1e-5)
    t = (torch.rand(16, C, generator=g) / C).cuda()
    y = ab[:, 0].contiguous()
    loss, grad, rows = _schema(impl, "elr_rows")(z, y, t, 0.7, 3.0, True)
    exact, exact_rows = reference.elr_rows(z64, y, t.double(), 0.7, 3.0)
    assert_close(rows, exact_rows.float(), torch.float32)
    assert_close(loss, exact.detach().float(), torch.float32, atol=1e-4)


@gpu_test(OPS, ["cuda", "triton"])
def test_compile_on_gpu(impl):
    for op in OPS:
        need(op, impl)
    z = torch.randn(8, 50, device="cuda", requires_grad=True)
    ya, yb = torch.randint(0, 50, (8,), device="cuda"), torch.randint(0, 50, (8,), device="cuda")
    buf = torch.zeros(8, 50, device="cuda")
    idx = torch.arange(8, device="cuda")

    def step(x):
        return regops.decoupled_mixup_loss(x, ya, yb, 0.4, impl=impl) + regops.elr_loss(x, ya, idx, buf, impl=impl)

    got = torch.compile(step, fullgraph=True)(z)
    (gg,) = torch.autograd.grad(got, z)
    buf.zero_()
    want = step(z)
    (gw,) = torch.autograd.grad(want, z)
    assert_close(got.detach(), want.detach(), torch.float32, atol=1e-4)
    assert_close(gg, gw, torch.float32, atol=1e-4)
