"""graddrop_apply_ and graddrop_keep_prob: csrc/include/regops/graddrop_checks.h, word for word."""
from __future__ import annotations

from typing import Optional

import torch

from . import (check_device, check_dtype_in, check_same_device, check_same_dtype, check_tensor, describe, fail,
               num_str, shape_str)

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_lists(out, grads_task, grads_reg, lam: float, device_type: Optional[str]) -> None:
    op = "graddrop_"
    for name, ts in (("out", out), ("grads_task", grads_task), ("grads_reg", grads_reg)):
        if not isinstance(ts, (list, tuple)):
            fail(op, name, "a list of tensors", type(ts).__name__, TypeError)
        for i, t in enumerate(ts):
            check_tensor(op, f"{name}[{i}]", t)
    if len(grads_task) != len(out):
        fail(op, "grads_task", f"{len(out)} tensors (as out)", str(len(grads_task)))
    if len(grads_reg) != len(out):
        fail(op, "grads_reg", f"{len(out)} tensors (as out)", str(len(grads_reg)))
    if not 0 <= lam <= 1:
        fail(op, "lam", "a value in [0, 1]", num_str(lam))
    for i, o in enumerate(out):
        oname = f"out[{i}]"
        if i == 0:
            check_device(op, oname, o, device_type)
        else:
            check_same_device(op, oname, o, out[0], "out[0]")
        check_dtype_in(op, oname, o, DTYPES)
        if not o.is_contiguous():
            fail(op, oname, "a contiguous tensor (it is written in place)", describe(o))
        for arg, ts in (("grads_task", grads_task), ("grads_reg", grads_reg)):
            g, name = ts[i], f"{arg}[{i}]"
            check_same_device(op, name, g, o, oname)
            check_same_dtype(op, name, g, o, oname)
            if g.shape != o.shape:
                fail(op, name, f"shape {shape_str(o.shape)} (as {oname})", describe(g))


def check_pair(grad_task, grad_reg, device_type: Optional[str]) -> None:
    op = "graddrop_keep_prob"
    check_tensor(op, "grad_task", grad_task)
    check_tensor(op, "grad_reg", grad_reg)
    check_device(op, "grad_task", grad_task, device_type)
    check_dtype_in(op, "grad_task", grad_task, DTYPES)
    check_same_dtype(op, "grad_reg", grad_reg, grad_task, "grad_task")
    if grad_reg.shape != grad_task.shape:
        fail(op, "grad_reg", f"shape {shape_str(grad_task.shape)} (as grad_task)", describe(grad_reg))
    check_same_device(op, "grad_reg", grad_reg, grad_task, "grad_task")


def fake_apply(out, grads_task, grads_reg, lam, seed):
    check_lists(out, grads_task, grads_reg, lam, None)
    return torch.empty((len(out),), dtype=torch.int64, device=out[0].device if out else "cpu")


def fake_keep_prob(grad_task, grad_reg):
    check_pair(grad_task, grad_reg, None)
    return torch.empty_like(grad_task)
