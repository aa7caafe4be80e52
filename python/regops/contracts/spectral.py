"""spectral_power and spectral_outer: csrc/include/regops/spectral_checks.h, word for word."""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import (acc_dtype, check_device, check_dtype_in, check_same_device, check_same_dtype, check_tensor, describe,
               dtype_name, fail, num_str)

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_lists(op: str, weights, us, vs, device_type: Optional[str]) -> None:
    for name, ts in (("weights", weights), ("us", us), ("vs", vs)):
        if not isinstance(ts, (list, tuple)):
            fail(op, name, "a list of tensors", type(ts).__name__, TypeError)
        for i, t in enumerate(ts):
            check_tensor(op, f"{name}[{i}]", t)
    if len(weights) == 0:
        fail(op, "weights", "at least one matrix", "an empty list")
    for name, ts in (("us", us), ("vs", vs)):
        if len(ts) != len(weights):
            fail(op, name, f"{len(weights)} vectors (one per weight)", str(len(ts)))
    acc = acc_dtype(weights[0].dtype)
    for i, W in enumerate(weights):
        wname = f"weights[{i}]"
        if i == 0:
            check_device(op, wname, W, device_type)
            check_dtype_in(op, wname, W, DTYPES)
        else:
            check_same_device(op, wname, W, weights[0], "weights[0]")
            check_same_dtype(op, wname, W, weights[0], "weights[0]")
        if W.dim() != 2:
            fail(op, wname, "a 2-D tensor (out, in): a weight viewed as a matrix", describe(W))
        if W.numel() == 0:
            fail(op, wname, "a non-empty matrix", describe(W))
        for k, (name, x) in enumerate((("us", us[i]), ("vs", vs[i]))):
            vname = f"{name}[{i}]"
            n = W.shape[k]
            if x.dim() != 1 or x.shape[0] != n:
                fail(op, vname, f"shape ({n},) ({'the rows' if k == 0 else 'the columns'} of {wname})", describe(x))
            if x.dtype != acc:
                fail(op, vname, f"dtype {dtype_name(acc)} (the accumulation dtype of the weights)", describe(x),
                     TypeError)
            check_same_device(op, vname, x, W, wname)


def check_params(op: str, n_power_iterations: int, eps: float) -> None:
    if n_power_iterations < 1:
        fail(op, "n_power_iterations", "an int >= 1", str(n_power_iterations))
    if not (math.isfinite(eps) and eps > 0):
        fail(op, "eps", "a finite number > 0", num_str(eps))


def check_grad(grad_sigmas, weights) -> None:
    op = "spectral_outer"
    check_tensor(op, "grad_sigmas", grad_sigmas)
    acc = acc_dtype(weights[0].dtype)
    if grad_sigmas.dim() != 1 or grad_sigmas.shape[0] != len(weights):
        fail(op, "grad_sigmas", f"shape ({len(weights)},) (one per weight)", describe(grad_sigmas))
    if grad_sigmas.dtype != acc:
        fail(op, "grad_sigmas", f"dtype {dtype_name(acc)} (the accumulation dtype of the weights)",
             describe(grad_sigmas), TypeError)
    check_same_device(op, "grad_sigmas", grad_sigmas, weights[0], "weights[0]")


def fake_power(weights, us, vs, n_power_iterations, eps):
    check_lists("spectral_power", weights, us, vs, None)
    check_params("spectral_power", n_power_iterations, eps)
    sigma = weights[0].new_empty((len(weights),), dtype=acc_dtype(weights[0].dtype))
    return sigma, [torch.empty_like(u, memory_format=torch.contiguous_format) for u in us], \
        [torch.empty_like(v, memory_format=torch.contiguous_format) for v in vs]


def fake_outer(grad_sigmas, us, vs, weights):
    check_lists("spectral_outer", weights, us, vs, None)
    check_grad(grad_sigmas, weights)
    return [torch.empty_like(W, memory_format=torch.contiguous_format) for W in weights]
