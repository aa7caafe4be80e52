"""repulsion_fwd and repulsion_bwd: csrc/include/regops/repulsion_checks.h, word for word."""
from __future__ import annotations

from typing import Optional

import torch

from . import (acc_dtype, check_device, check_dtype_in, check_same_device, check_same_dtype, check_tensor, describe,
               dtype_name, fail, shape_str)

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_lists(op: str, params, anchor_means, device_type: Optional[str]) -> None:
    for name, ts in (("params", params), ("anchor_means", anchor_means)):
        if not isinstance(ts, (list, tuple)):
            fail(op, name, "a list of tensors", type(ts).__name__, TypeError)
        for i, t in enumerate(ts):
            check_tensor(op, f"{name}[{i}]", t)
    if len(params) == 0:
        fail(op, "params", "at least one tensor", "an empty list")
    if len(anchor_means) != len(params):
        fail(op, "anchor_means", f"{len(params)} tensors (as params)", str(len(anchor_means)))
    for i, p in enumerate(params):
        pname = f"params[{i}]"
        if i == 0:
            check_device(op, pname, p, device_type)
            check_dtype_in(op, pname, p, DTYPES)
        else:
            check_same_device(op, pname, p, params[0], "params[0]")
            check_same_dtype(op, pname, p, params[0], "params[0]")
        m, mname = anchor_means[i], f"anchor_means[{i}]"
        if m.shape != p.shape:
            fail(op, mname, f"shape {shape_str(p.shape)} (as {pname})", describe(m))
        check_same_dtype(op, mname, m, p, pname)
        check_same_device(op, mname, m, p, pname)


def check_grad(grad_sums, params) -> None:
    op = "repulsion_bwd"
    check_tensor(op, "grad_sums", grad_sums)
    acc = acc_dtype(params[0].dtype)
    if grad_sums.dim() != 1 or grad_sums.shape[0] != len(params):
        fail(op, "grad_sums", f"shape ({len(params)},) (one per param)", describe(grad_sums))
    if grad_sums.dtype != acc:
        fail(op, "grad_sums", f"dtype {dtype_name(acc)} (the accumulation dtype of params)", describe(grad_sums),
             TypeError)
    check_same_device(op, "grad_sums", grad_sums, params[0], "params[0]")


def fake_fwd(params, anchor_means):
    check_lists("repulsion_fwd", params, anchor_means, None)
    return params[0].new_empty((len(params),), dtype=acc_dtype(params[0].dtype))


def fake_bwd(grad_sums, params, anchor_means):
    check_lists("repulsion_bwd", params, anchor_means, None)
    check_grad(grad_sums, params)
    return [torch.empty_like(p, memory_format=torch.contiguous_format) for p in params]
