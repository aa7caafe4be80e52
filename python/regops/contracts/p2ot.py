"""p2ot_scaling_pass: csrc/include/regops/p2ot_checks.h, word for word."""
from __future__ import annotations

from typing import Optional

import torch

from . import check_device, check_dim, check_dtype_in, check_like

OP = "p2ot_scaling_pass"


def check_pass(kernel, col_scale, row_target, device_type: Optional[str]) -> None:
    check_dim(OP, "kernel", kernel, 2, " (N, Kc)")
    check_dtype_in(OP, "kernel", kernel, (torch.float32, torch.float64))
    check_device(OP, "kernel", kernel, device_type)
    check_like(OP, "col_scale", col_scale, (kernel.shape[1],), kernel, "kernel")
    check_like(OP, "row_target", row_target, (kernel.shape[0],), kernel, "kernel")


def fake_pass(kernel, col_scale, row_target):
    check_pass(kernel, col_scale, row_target, None)
    return kernel.new_empty((kernel.shape[0],)), kernel.new_empty((kernel.shape[1],))
