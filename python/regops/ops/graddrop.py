"""R-AMT's gradient dropout (Regularized Mask Tuning, ICCV 2023, wuw2019/R-AMT), fused over a whole list of tensors.

keep probability  P = (sgn(g_a)·(g_a + g_b)/(|g_a| + |g_b| + 1e-8) + 1)/2
new gradient      ((1 − λ) + λ·1[P > U])·g_a,   U ~ Uniform[0, 1) fresh per element; g_b is never added.

U = Philox4x32-10(seed, tensor index, element index) inside the kernels (csrc/include/regops/graddrop_math.h),
so no random tensor is stored, and every impl (the torch reference included) draws the same masks for the same
seed and tensor list. One call covers every tensor (CPU: all chunks of all tensors on one thread pool; CUDA: one
launch; Triton: one launch per dtype).
"""
from __future__ import annotations

import importlib.util
from typing import Sequence

import torch

from .. import _checks, _registry
from .._loader import schema_registered, triton_available
from ..contracts import graddrop as contract
from ..reference import graddrop as reference

OP = "graddrop_"
DTYPES = (torch.float32, torch.bfloat16, torch.float16)

if schema_registered("graddrop_apply_"):
    torch.library.register_fake("regops::graddrop_apply_")(contract.fake_apply)
    torch.library.register_fake("regops::graddrop_keep_prob")(contract.fake_keep_prob)

if triton_available() and importlib.util.find_spec("regops.triton.graddrop") is not None:
    from ..triton import graddrop as _triton_graddrop  # noqa: F401  (registers the triton ops)


def graddrop_keep_prob(g_task: torch.Tensor, g_reg: torch.Tensor, *, impl=None) -> torch.Tensor:
    """P elementwise (in float32 arithmetic), in g_task's dtype; a mask statistic, without gradient on every impl
    (the inputs are detached)."""
    op = "graddrop_keep_prob"
    for arg, t in (("g_task", g_task), ("g_reg", g_reg)):
        _checks.check_tensor(op, arg, t, dtypes=DTYPES)
    if g_reg.shape != g_task.shape:
        _checks.fail(op, "g_reg", f"shape {tuple(g_task.shape)} (as g_task)", f"shape {tuple(g_reg.shape)}")
    if g_reg.device != g_task.device:
        _checks.fail(op, "g_reg", f"device {g_task.device} (as g_task)", f"device {g_reg.device}", RuntimeError)
    if g_reg.dtype != g_task.dtype:
        _checks.fail(op, "g_reg", f"dtype {_checks.dtype_name(g_task.dtype)} (as g_task)",
                     f"dtype {_checks.dtype_name(g_reg.dtype)}", TypeError)
    _checks.check_finite_eager(op, "g_task", g_task)
    _checks.check_finite_eager(op, "g_reg", g_reg)
    chosen = _registry.pick(op, impl, g_task, "g_task")
    g_task, g_reg = g_task.detach(), g_reg.detach()
    if chosen == "reference":
        return reference.keep_prob(g_task, g_reg).to(g_task.dtype)
    return _registry.kernel("graddrop", chosen, "keep_prob")(g_task, g_reg)


def _seed(generator) -> int:
    # A 63-bit seed from the generator (or torch's default one): drawn on the CPU, no device sync.
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, dtype=torch.int64).item())


def _as_list(op, arg, xs):
    if isinstance(xs, torch.Tensor):
        return [xs]
    try:
        xs = list(xs)
    except TypeError:
        _checks.fail(op, arg, "a sequence of tensors", type(xs).__name__, TypeError)
    return xs


def graddrop_(params: Sequence[torch.Tensor], grads_task: Sequence[torch.Tensor], grads_reg: Sequence[torch.Tensor], *,
              lam: float, generator=None, nonfinite: str = "raise", impl=None) -> bool:
    """Sets every params[i].grad to ((1 − λ) + λ·1[P > U])·grads_task[i] in one fused pass; returns True.

    grads_task[i] may be params[i].grad (updated in place). nonfinite: "raise" (default: every .grad is set, the
    tensors with non-finite task or reg gradients hold non-finite values, and a ValueError names them) or "skip"
    (nothing is changed and False is returned; costs one temporary copy of the gradients)."""
    params = _as_list(OP, "params", params)
    grads_task = _as_list(OP, "grads_task", grads_task)
    grads_reg = _as_list(OP, "grads_reg", grads_reg)
    n = len(params)
    for arg, xs in (("grads_task", grads_task), ("grads_reg", grads_reg)):
        if len(xs) != n:
            _checks.fail(OP, arg, f"{n} tensors (one per param)", f"{len(xs)} tensors")
    lam = _checks.number(OP, "lam", lam, low=0.0, high=1.0, what="a value in [0, 1]")
    _checks.check_choice(OP, "nonfinite", nonfinite, ("raise", "skip"))
    if n == 0:
        return True
    for i in range(n):
        p, a, b = params[i], grads_task[i], grads_reg[i]
        _checks.check_tensor(OP, f"params[{i}]", p)
        for arg, t in ((f"grads_task[{i}]", a), (f"grads_reg[{i}]", b)):
            _checks.check_tensor(OP, arg, t, dtypes=DTYPES)
            if t.shape != p.shape:
                _checks.fail(OP, arg, f"shape {tuple(p.shape)} (as params[{i}])", f"shape {tuple(t.shape)}")
            if t.device != params[0].device:
                _checks.fail(OP, arg, f"device {params[0].device} (as params[0])", f"device {t.device}", RuntimeError)
        if b.dtype != a.dtype:
            _checks.fail(OP, f"grads_reg[{i}]", f"dtype {_checks.dtype_name(a.dtype)} (as grads_task[{i}])",
                         f"dtype {_checks.dtype_name(b.dtype)}", TypeError)
        if a.dtype != p.dtype:  # the result becomes p.grad, which must have p's dtype
            _checks.fail(OP, f"grads_task[{i}]", f"dtype {_checks.dtype_name(p.dtype)} (as params[{i}])",
                         f"dtype {_checks.dtype_name(a.dtype)}", TypeError)
        if p.device != params[0].device:
            _checks.fail(OP, f"params[{i}]", f"device {params[0].device} (as params[0])", f"device {p.device}",
                         RuntimeError)
    chosen = _registry.pick(OP, impl, params[0], "params")
    seed = _seed(generator)
    in_place = nonfinite == "raise"
    outs = []
    for p, a in zip(params, grads_task):
        g = p.grad
        # Write straight into .grad when it can hold the result (the kernels read a and b before writing each
        # element, so .grad may be grads_task itself); "skip" writes to temporaries until the check passes.
        if in_place and g is not None and g.shape == a.shape and g.dtype == a.dtype and g.is_contiguous():
            outs.append(g)
        else:
            outs.append(torch.empty_like(a, memory_format=torch.contiguous_format))
    with torch.no_grad():
        if chosen == "reference":
            counts = []
            for t, (o, a, b) in enumerate(zip(outs, grads_task, grads_reg)):
                counts.append(int((~(torch.isfinite(a) & torch.isfinite(b))).sum()))
                o.copy_(reference.apply(a, b, float(lam), seed, t))
            counts = torch.tensor(counts)
        else:
            counts = _registry.kernel("graddrop", chosen, "apply")(outs, [a.contiguous() for a in grads_task], [b.contiguous() for b in grads_reg], float(lam),
                        seed)
    bad = counts.nonzero().flatten().tolist() if not torch.compiler.is_compiling() else []
    if bad and nonfinite == "skip":
        return False
    for p, o in zip(params, outs):
        if p.grad is None or p.grad is not o:
            if p.grad is not None and p.grad.shape == o.shape and p.grad.dtype == o.dtype:
                p.grad.copy_(o)
            else:
                p.grad = o
    if bad:
        where = ", ".join(f"{i} ({int(counts[i])})" for i in bad[:8])
        _checks.fail(OP, "grads_task/grads_reg", "finite gradients",
                     f"non-finite values in tensors {where}" + (" ..." if len(bad) > 8 else ""))
    return True
