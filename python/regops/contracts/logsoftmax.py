"""logsoftmax_rows / logsoftmax_rows_grad_: csrc/include/regops/logsoftmax_checks.h, word for word."""
from __future__ import annotations

from typing import Optional

import torch

from . import (acc_dtype, check_device, check_dim, check_dtype_in, check_float_dtype, check_like, check_same_device,
               check_shape, describe, dtype_name, fail)

OP = "logsoftmax_rows"


def check_rows(logits, targets, ref_logits, kl_mode, device_type: Optional[str]) -> None:
    check_dim(OP, "logits", logits, 2, " (rows, V)")
    check_float_dtype(OP, "logits", logits)
    check_device(OP, "logits", logits, device_type)
    if logits.shape[1] < 1:
        fail(OP, "logits", "at least one vocabulary entry (rows, V >= 1)", describe(logits))
    check_shape(OP, "targets", targets, (logits.shape[0],))
    check_dtype_in(OP, "targets", targets, (torch.int64,))
    check_same_device(OP, "targets", targets, logits, "logits")
    if kl_mode not in (0, 1, 2):
        fail(OP, "kl_mode", "0 (none), 1 (forward) or 2 (reverse)", str(kl_mode))
    if kl_mode == 0:
        if ref_logits is not None:
            fail(OP, "ref_logits", "None for kl_mode 0", describe(ref_logits))
    else:
        if ref_logits is None:
            fail(OP, "ref_logits", f"a tensor for kl_mode {kl_mode}", "None")
        check_like(OP, "ref_logits", ref_logits, tuple(logits.shape), logits, "logits")


def check_rows_grad(logits, targets, ref_logits, grad_logp, grad_kl, kl_mode, device_type: Optional[str]) -> None:
    check_rows(logits, targets, ref_logits, kl_mode, device_type)
    acc = acc_dtype(logits.dtype)
    for arg, g in (("grad_logp", grad_logp), ("grad_kl", grad_kl)):
        check_shape(OP, arg, g, (logits.shape[0],))
        if g.dtype != acc:
            fail(OP, arg, f"dtype {dtype_name(acc)} (the accumulation dtype of logits)", describe(g), TypeError)
        check_same_device(OP, arg, g, logits, "logits")


def _stats(logits):
    acc = acc_dtype(logits.dtype)
    n = logits.shape[0]
    return tuple(logits.new_empty((n,), dtype=acc) for _ in range(3))


def fake_rows(logits, targets, ref_logits, kl_mode, ignore_index):
    check_rows(logits, targets, ref_logits, kl_mode, None)
    return _stats(logits)


def fake_rows_grad(logits, targets, ref_logits, grad_logp, grad_kl, kl_mode, ignore_index):
    check_rows_grad(logits, targets, ref_logits, grad_logp, grad_kl, kl_mode, None)
    return _stats(logits)
