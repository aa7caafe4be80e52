"""SORSA's orthonormality penalty, forward + backward: regops impls against the official per-matrix loop.

Three groups per size (L matrices of r x n):
- orthonormal_penalty(side="rows", reduction="sum") then .backward(), against `official` (the per-layer
  loop of regops/bench/baselines/sorsa_official.py) and `gemm-bound`, the time torch needs for the two GEMMs
  any implementation has to do: X Xᵀ (half of it, as it is symmetric) and R X with R = X Xᵀ − I.
- sorsa_ortho_loss on L/2 (A, B) pairs (the same L matrices) then .backward(), against `official`, SORSA's
  calc_ortho loop (one identity, GEMM and norm per matrix).
- sorsa_regularize_ on the same pairs, against the autograd way of adding ∇((γ/lr)·sorsa_ortho_loss) into .grad.
"""
from __future__ import annotations

import torch

import regops
from regops import _registry

from ..baselines import sorsa_official
from ..harness import Case

SIZES = ((2000, 8, 64), (448, 16, 4096), (224, 128, 4096))   # (L, r, n)
# Quick keeps every matrix shape but gives the heavy one a quarter of the layers: the per-layer cost is what
# differs between impls, and 224 layers of 128 x 4096 take minutes per provider on a 2-core CPU.
QUICK_SIZES = ((2000, 8, 64), (448, 16, 4096), (56, 128, 4096))
GAMMA, LR = 4e-4, 3e-5   # the value only scales the gradient; any finite pair times the same
F32 = 4


def _near_orthonormal(shape, n: int, device, seed: int = 0) -> torch.Tensor:
    """Gaussian factors scaled by 1/sqrt(n), n the length of the vectors meant to be orthonormal: close to
    orthonormal, as trained SORSA factors are, but never exactly."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) / n ** 0.5).to(device)


def _leaves(stacked: torch.Tensor) -> list:
    # Separate leaf tensors, as a model's per-layer parameters are; views of one buffer save a copy.
    return [m.requires_grad_() for m in stacked.unbind(0)]


def _unavailable(op, impl, device):
    ok, why = _registry.available(op, impl, device)
    return None if ok else why


def penalty_cases(L, r, n, device) -> list[Case]:
    op, size, nbytes = "orthonormal_penalty", f"{L}x{r}x{n}", L * r * n * F32
    shape = (L, r, n)

    def stacked():
        return _near_orthonormal(shape, n, device).requires_grad_()

    def impl_fn(impl):
        def fn(x):
            x.grad = None  # every call allocates its gradient, as after zero_grad(set_to_none=True)
            regops.orthonormal_penalty(x, side="rows", reduction="sum", impl=impl).backward()
        return fn

    def official(mats):
        for m in mats:
            m.grad = None
        sorsa_official.penalty_rows_sum(mats).backward()

    def compiled_setup():
        # dynamic=False: one static graph per size, as a training run with fixed layer shapes gets.
        f = torch.compile(lambda x: regops.orthonormal_penalty(x, side="rows", reduction="sum", impl="reference"),
                          dynamic=False)
        return stacked(), f

    def compiled(state):
        x, f = state
        x.grad = None
        f(x).backward()

    def bound_setup():
        x = _near_orthonormal(shape, n, device)
        return x, torch.randn(L, r, r, device=device)

    cases = [
        Case(op, size, "official", lambda: _leaves(_near_orthonormal(shape, n, device)), official,
             predicted_bytes=4 * nbytes),
        Case(op, size, "reference", stacked, impl_fn("reference"), predicted_bytes=4 * nbytes),
        Case(op, size, "compiled-reference", compiled_setup, compiled, predicted_bytes=4 * nbytes),
    ]
    impls = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    for impl in impls:
        cases.append(Case(op, size, impl, stacked, impl_fn(impl), predicted_bytes=3 * nbytes,
                          skip=_unavailable(op, impl, device)))
    cases.append(Case(op, size, "gemm-bound", bound_setup, predicted_bytes=3 * nbytes, memory=False,
                      parts=((0.5, lambda s: torch.bmm(s[0], s[0].transpose(1, 2))),
                             (1.0, lambda s: torch.bmm(s[1], s[0]))),
                      note="time(bmm(X, Xᵀ))/2 + time(bmm(R, X)): the GEMM work any impl does, not an op"))
    return cases


def _factor_pairs(L, r, n, device, task_grad: bool) -> list:
    """L/2 (A, B) pairs: A (r, n) with near-orthonormal rows, B (n, r) with near-orthonormal columns. With
    task_grad, .grad already holds a task gradient, as when a trainer adds the regularizer after backward."""
    As = _leaves(_near_orthonormal((L // 2, r, n), n, device, seed=1))
    Bs = _leaves(_near_orthonormal((L // 2, n, r), n, device, seed=2))
    if task_grad:
        for t in As + Bs:
            t.grad = torch.zeros_like(t)
    return list(zip(As, Bs))


def _clear_grads(ps) -> None:
    for a, b in ps:
        a.grad = b.grad = None  # every call allocates its gradients, as after zero_grad(set_to_none=True)


def ortho_loss_cases(L, r, n, device) -> list[Case]:
    op, size, nbytes = "sorsa_ortho_loss", f"{L}x{r}x{n}", L * r * n * F32

    def official(ps):
        _clear_grads(ps)
        sorsa_official.calc_ortho(ps).backward()

    def loss(impl):
        def fn(ps):
            _clear_grads(ps)
            As, Bs = zip(*ps)
            regops.sorsa_ortho_loss(list(As), list(Bs), impl=impl).backward()
        return fn

    pairs = lambda: _factor_pairs(L, r, n, device, task_grad=False)  # noqa: E731
    cases = [Case(op, size, "official", pairs, official, predicted_bytes=4 * nbytes),
             Case(op, size, "reference", pairs, loss("reference"), predicted_bytes=4 * nbytes)]
    for impl in (["cpu"] if device.type == "cpu" else ["cuda", "triton"]):
        cases.append(Case(op, size, impl, pairs, loss(impl), predicted_bytes=3 * nbytes,
                          skip=_unavailable(op, impl, device)))
    return cases


def regularize_cases(L, r, n, device) -> list[Case]:
    op, size, nbytes = "sorsa_regularize_", f"{L}x{r}x{n}", L * r * n * F32
    pairs = lambda: _factor_pairs(L, r, n, device, task_grad=True)  # noqa: E731

    def autograd_reference(ps):
        As, Bs = zip(*ps)
        ((GAMMA / LR) * regops.sorsa_ortho_loss(list(As), list(Bs), impl="reference")).backward()

    def regularize(impl):
        return lambda ps: regops.sorsa_regularize_(ps, GAMMA, LR, impl=impl)

    base = dict(baseline="autograd-reference")
    cases = [Case(op, size, "autograd-reference", pairs, autograd_reference, predicted_bytes=5 * nbytes, **base)]
    impls = ["cpu", "reference"] if device.type == "cpu" else ["cuda", "triton", "reference"]
    for impl in impls:
        cases.append(Case(op, size, f"regularize_-{impl}", pairs, regularize(impl), predicted_bytes=4 * nbytes,
                          skip=_unavailable(op, impl, device), **base))
    return cases


def cases(quick: bool, device: torch.device) -> list[Case]:
    sizes = QUICK_SIZES if quick else SIZES
    out = []
    for L, r, n in sizes:
        out += penalty_cases(L, r, n, device)
    for L, r, n in sizes:
        out += ortho_loss_cases(L, r, n, device)
    for L, r, n in sizes:
        out += regularize_cases(L, r, n, device)
    return out
