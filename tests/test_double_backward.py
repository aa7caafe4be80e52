"""Double backward (create_graph=True, e.g. a gradient penalty): the compiled and Triton kernels are
differentiable once and say so; the reference is differentiable twice and matches torch's own second order.
No op falls through to torch's "autograd kernel was not registered" warning (ops/_autograd.py)."""
import warnings

import pytest
import torch

import regops

from conftest import cpu_impls

ORTHO_IMPLS = cpu_impls("orthonormal_penalty")
PAIR_IMPLS = cpu_impls("conr_loss")
SECOND_ORDER = r"double backward .* use impl='reference'"


def penalty_of_gradient(fn, x):
    """v + ‖∂v/∂x‖²: the gradient-penalty pattern. Returns d/dx of it."""
    v = fn(x)
    (g,) = torch.autograd.grad(v, x, create_graph=True)
    (grad,) = torch.autograd.grad(v + g.pow(2).sum(), x)
    return grad


def ortho(impl):
    return lambda x: regops.orthonormal_penalty(x, side="rows", impl=impl)


def sorsa(impl):
    return lambda x: regops.sorsa_ortho_loss(x, x.transpose(1, 2), impl=impl)


def supcon(impl):
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0])
    return lambda x: regops.supcon_loss(x[0], labels, temperature=0.5, impl=impl)


def focal(impl):
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0])
    return lambda x: regops.focal_supcon_loss(x[0], labels, temperature=0.5, impl=impl)


def conr(impl):
    labels = torch.linspace(0, 1, 7, dtype=torch.float64)
    preds = labels.flip(0)
    return lambda x: regops.conr_loss(x[0], labels, preds, impl=impl)


def sinkhorn(impl):
    y = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dt = torch.float32 if impl == "triton" else torch.float64  # the Triton Sinkhorn is float32 only
    return lambda x: regops.ot.sinkhorn(x[0].to(dt), y.to(dt), eps=1.0, impl=impl).reg_ot_cost


CASES = [("orthonormal_penalty", ortho, ORTHO_IMPLS), ("sorsa_ortho_loss", sorsa, ORTHO_IMPLS),
         ("supcon_loss", supcon, PAIR_IMPLS), ("focal_supcon_loss", focal, PAIR_IMPLS), ("conr_loss", conr, PAIR_IMPLS),
         ("ot.sinkhorn", sinkhorn, cpu_impls("ot.sinkhorn"))]


def x_for(name):
    shape = (1, 7, 4)
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()


@pytest.mark.parametrize("name,make,impls", CASES, ids=[c[0] for c in CASES])
def test_kernels_raise_on_double_backward(name, make, impls):
    if not impls:
        pytest.skip("no kernel impl in this build")
    for impl in impls:
        x = x_for(name)
        with pytest.raises(RuntimeError, match=SECOND_ORDER):
            penalty_of_gradient(make(impl), x)


@pytest.mark.parametrize("name,make,impls", CASES[:5], ids=[c[0] for c in CASES[:5]])
def test_reference_double_backward_is_exact(name, make, impls):
    x = x_for(name)
    assert torch.autograd.gradgradcheck(make("reference"), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,make,impls", CASES, ids=[c[0] for c in CASES])
def test_first_order_never_warns(name, make, impls):
    for impl in ["reference"] + impls:
        x = x_for(name)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*autograd kernel was not registered.*")
            make(impl)(x).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_mutating_ops_run_below_autograd():
    """sorsa_regularize_ on parameters that require grad, in grad mode: no warning, gradients written."""
    A = torch.nn.Parameter(torch.randn(4, 6, dtype=torch.float64))
    B = torch.nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    A.grad, B.grad = torch.zeros_like(A), torch.zeros_like(B)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*autograd kernel was not registered.*")
        value = regops.sorsa_regularize_([(A, B)], gamma=0.1, lr=1.0)
    assert not value.requires_grad and A.grad.abs().sum() > 0
