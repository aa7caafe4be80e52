"""CPU kernels are deterministic: bitwise the same run to run, and with 1 and with 2 intra-op threads.

The kernels split work over fixed blocks of rows or matrices, never over the thread count, and every reduction
runs in a fixed order. So the thread count changes only who computes a block, not how.

The one exception is where a kernel hands a product to BLAS: the orthonormality penalty for matrices with
p ≥ 48 rows (its syrk-style split goes through ATen's BLAS). BLAS may split a GEMM by thread count, so those
results agree to a float32 tolerance there, not bitwise. The README's determinism note says the same.
"""
import pytest
import torch

import regops

from conftest import cpu_impls
from test_concurrency import CASES as STATEFUL_CASES


def _decoupled_mixup(seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(257, 1000, generator=g, requires_grad=True)
    ya, yb = torch.randint(0, 1000, (257,), generator=g), torch.randint(0, 1000, (257,), generator=g)
    loss = regops.decoupled_mixup_loss(z, ya, yb, 0.3, impl="cpu")
    loss.backward()
    return loss.detach(), z.grad


def _p2ot(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3001, 97, generator=g) * 3
    plan, _ = regops.p2ot_plan(logits, rho=0.4, max_iter=30, tol=0, on_nonconvergence="ignore", impl="cpu")
    return (plan,)


def _orthonormal_blas(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 96, 700, generator=g, requires_grad=True)  # p = 96 ≥ 48: the BLAS path
    loss = regops.orthonormal_penalty(x, side="rows", impl="cpu")
    loss.backward()
    return loss.detach(), x.grad


BITWISE = dict(STATEFUL_CASES, decoupled_mixup_loss=_decoupled_mixup, p2ot_plan=_p2ot)


def _with_threads(n, fn, seed):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn(seed)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("op", BITWISE)
def test_bitwise_run_to_run_and_across_thread_counts(op):
    if "cpu" not in cpu_impls(op):
        pytest.skip(f"{op}: no CPU kernel in this build")
    fn = BITWISE[op]
    one = _with_threads(1, fn, 7)
    two, two_again = _with_threads(2, fn, 7), _with_threads(2, fn, 7)
    for a, b, c in zip(one, two, two_again):
        assert torch.equal(b, c), f"{op}: two runs with 2 threads differ"
        assert torch.equal(a, b), f"{op}: 1 and 2 threads differ (max |Δ| {(a - b).abs().max().item():.3g})"


def test_blas_path_agrees_across_thread_counts_to_float32_tolerance():
    if "cpu" not in cpu_impls("orthonormal_penalty"):
        pytest.skip("no CPU kernel in this build")
    one, two = _with_threads(1, _orthonormal_blas, 3), _with_threads(2, _orthonormal_blas, 3)
    again = _with_threads(2, _orthonormal_blas, 3)
    for a, b, c in zip(one, two, again):
        assert torch.equal(b, c)  # run to run with the same thread count: bitwise
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", BITWISE)
def test_deterministic_algorithms_mode_runs_the_same_kernels(op):
    """No regops kernel has a nondeterministic variant: the only atomics in CUDA and Triton code are the integer
    non-finite counts of graddrop_, which are exact. So torch.use_deterministic_algorithms(True) changes nothing:
    the same calls run, with bitwise the same results."""
    if "cpu" not in cpu_impls(op):
        pytest.skip(f"{op}: no CPU kernel in this build")
    fn = BITWISE[op]
    want = fn(11)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        got = fn(11)
    finally:
        torch.use_deterministic_algorithms(before)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
