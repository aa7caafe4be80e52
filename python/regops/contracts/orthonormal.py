"""orthonormal_penalty_fwd / _bwd: csrc/include/regops/orthonormal_checks.h, word for word."""
from __future__ import annotations

from typing import Optional

import torch

from . import (acc_dtype, check_dim, check_device, check_float_dtype, check_same_device, check_shape, describe,
               dtype_name, fail)

OP = "orthonormal_penalty"


def check_fwd(mats, device_type: Optional[str]) -> None:
    check_dim(OP, "mats", mats, 3, " (L, p, q)")
    check_float_dtype(OP, "mats", mats)
    check_device(OP, "mats", mats, device_type)


def check_bwd(grad_values, mats, residual, device_type: Optional[str]) -> None:
    check_fwd(mats, device_type)
    L, p = mats.shape[0], mats.shape[1]
    check_shape(OP, "grad_values", grad_values, (L,))
    check_float_dtype(OP, "grad_values", grad_values)
    check_same_device(OP, "grad_values", grad_values, mats, "mats")
    check_shape(OP, "residual", residual, (L, p, p))
    acc = acc_dtype(mats.dtype)
    if residual.dtype != acc:
        fail(OP, "residual", f"dtype {dtype_name(acc)} (the accumulation dtype of mats)", describe(residual), TypeError)
    check_same_device(OP, "residual", residual, mats, "mats")


def fake_fwd(mats, squared):
    check_fwd(mats, None)
    L, p, _ = mats.shape
    return mats.new_empty((L,)), mats.new_empty((L, p, p), dtype=acc_dtype(mats.dtype))


def fake_bwd(grad_values, mats, residual, squared):
    check_bwd(grad_values, mats, residual, None)
    return torch.empty_like(mats)
