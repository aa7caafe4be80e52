"""spectral_power and spectral_outer: csrc/include/regops/spectral_checks.h, word for word."""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import (acc_dtype, check_device, check_dtype_in, check_same_device, check_same_dtype, check_tensor, describe,
               dtype_name, fail, num_str)

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_lists(op: str, weights, u, v, device_type: Optional[str]) -> None:
    if not isinstance(weights, (list, tuple)):
        fail(op, "weights", "a list of tensors", type(weights).__name__, TypeError)
    for i, t in enumerate(weights):
        check_tensor(op, f"weights[{i}]", t)
    check_tensor(op, "u", u)
    check_tensor(op, "v", v)
    if len(weights) == 0:
        fail(op, "weights", "at least one matrix", "an empty list")
    rows = cols = 0
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
        rows += W.shape[0]
        cols += W.shape[1]
    acc = acc_dtype(weights[0].dtype)
    for name, x, n, what in (("u", u, rows, "row"), ("v", v, cols, "column")):
        if x.dim() != 1 or x.shape[0] != n:
            fail(op, name, f"shape ({n},) (the {what} counts of the weights added up)", describe(x))
        if x.dtype != acc:
            fail(op, name, f"dtype {dtype_name(acc)} (the accumulation dtype of the weights)", describe(x), TypeError)
        check_same_device(op, name, x, weights[0], "weights[0]")


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


def fake_power(weights, u, v, n_power_iterations, eps):
    check_lists("spectral_power", weights, u, v, None)
    check_params("spectral_power", n_power_iterations, eps)
    sigma = weights[0].new_empty((len(weights),), dtype=acc_dtype(weights[0].dtype))
    return sigma, torch.empty_like(u, memory_format=torch.contiguous_format), \
        torch.empty_like(v, memory_format=torch.contiguous_format)


def fake_outer(grad_sigmas, u, v, weights):
    check_lists("spectral_outer", weights, u, v, None)
    check_grad(grad_sigmas, weights)
    return [torch.empty_like(W, memory_format=torch.contiguous_format) for W in weights]
