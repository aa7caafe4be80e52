"""The fused-linear preference ops on a real GPU (scripts/gpu_check.sh): the CUDA and Triton row kernels through
every op, against the materialized reference on the same CUDA tensors, in float32 and bfloat16."""
import pytest
import torch

import regops

from conftest import gpu_test, need
from tolerances import assert_close, assert_lowp_rule

OPS = ("fused_linear_preference_loss", "rrpo_loss", "kl_to_reference")


def _batch(dtype, B=2, T=33, H=64, V=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(2 * B, T, H, generator=g) / 8).cuda().to(dtype).requires_grad_()
    w = torch.randn(V, H, generator=g).cuda().to(dtype).requires_grad_()
    y = torch.randint(0, V, (2 * B, T), generator=g).cuda()
    y[0, :5] = -100
    rh = (torch.randn(2 * B, T, H, generator=g) / 8).cuda().to(dtype)
    rw = torch.randn(V, H, generator=g).cuda().to(dtype)
    seg = torch.randint(0, 3, (2 * B, T), generator=g).cuda()
    return h, w, y, rh, rw, seg


def _run(fn, h, w):
    h.grad = w.grad = None
    out = fn()
    (out[0] if isinstance(out, tuple) else out).backward()
    return (out[0] if isinstance(out, tuple) else out).detach(), h.grad.clone(), w.grad.clone()


def _calls(h, w, y, rh, rw, seg, impl):
    return [
        lambda: regops.fused_linear_preference_loss(h, w, y, ref_hidden=rh, ref_weight=rw, sft_weight=0.5,
                                                    impl=impl, chunk_size=37),
        lambda: regops.rrpo_loss(h, w, y, rh, rw, seg, alpha=0.1, impl=impl, chunk_size=37),
        lambda: regops.kl_to_reference(h, rh, y != -100, weight=w, ref_weight=rw, direction="reverse", impl=impl,
                                       chunk_size=37),
    ]


@gpu_test(OPS, ["cuda", "triton"])
@pytest.mark.gpu_quick
def test_ops_match_reference_float32(impl):
    for op in OPS:
        need(op, impl)
    torch.backends.cuda.matmul.allow_tf32 = False
    args = _batch(torch.float32)
    h, w = args[0], args[1]
    for got_fn, want_fn in zip(_calls(*args, impl), _calls(*args, "reference")):
        for got, want in zip(_run(got_fn, h, w), _run(want_fn, h, w)):
            assert_close(got, want, atol=1e-4)


@gpu_test(OPS, ["cuda", "triton"])
@pytest.mark.gpu_quick
def test_ops_bfloat16_error_rule(impl):
    for op in OPS:
        need(op, impl)
    args64 = _batch(torch.float64)
    args16 = tuple(a.detach().to(torch.bfloat16).requires_grad_(i < 2) if a.is_floating_point() else a
                   for i, a in enumerate(args64))
    h64, w64, h16, w16 = args64[0], args64[1], args16[0], args16[1]
    for exact_fn, kern_fn, lowp_fn in zip(_calls(*args64, "reference"), _calls(*args16, impl),
                                          _calls(*args16, "reference")):
        exact = _run(exact_fn, h64, w64)
        kern = _run(kern_fn, h16, w16)
        lowp = _run(lowp_fn, h16, w16)
        for k, lp, e in zip(kern, lowp, exact):
            assert_lowp_rule(k, lp, e, floor=1e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_rows_kernel_cuda(impl):
    need("fused_linear_preference_loss", impl)
    from regops import _registry
    from regops.reference import logsoftmax as ref_rows
    g = torch.Generator().manual_seed(1)
    for mode in (0, 1, 2):
        z = (torch.randn(9, 32001, generator=g) * 4).cuda()
        q = (torch.randn(9, 32001, generator=g) * 2).cuda() if mode else None
        y = torch.randint(0, 32001, (9,), generator=g).cuda()
        y[3] = -100
        gl, gk = torch.randn(9, generator=g).cuda(), torch.randn(9, generator=g).cuda()
        zz = z.clone()
        got = _registry.kernel("fused_linear", impl, "grad")(zz, y, q, gl, gk, mode, -100)
        want = ref_rows.rows(z, y, q, mode, -100, gl, gk)
        for a, b in zip(got + (zz,), want):
            assert_close(a, b, atol=1e-5)
