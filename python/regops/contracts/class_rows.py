"""mixup_rows / elr_rows: csrc/include/regops/class_rows_checks.h, word for word."""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import (acc_dtype, check_device, check_dim, check_dtype_in, check_float_dtype, check_same_device, check_shape,
               describe, dtype_name, fail, num_str)

MIXUP_OP = "mixup_rows"
ELR_OP = "elr_rows"


def check_class_logits(op, logits, device_type: Optional[str]) -> None:
    check_dim(op, "logits", logits, 2, " (B, C)")
    check_float_dtype(op, "logits", logits)
    check_device(op, "logits", logits, device_type)
    if logits.shape[1] < 1:
        fail(op, "logits", "at least one class (B, C >= 1)", describe(logits))


def _check_acc(op, arg, t, logits) -> None:
    acc = acc_dtype(logits.dtype)
    if t.dtype != acc:
        fail(op, arg, f"dtype {dtype_name(acc)} (the accumulation dtype of logits)", describe(t), TypeError)


def check_mixup_rows(logits, classes, coeffs, device_type: Optional[str]) -> None:
    op = MIXUP_OP
    check_class_logits(op, logits, device_type)
    check_shape(op, "classes", classes, (logits.shape[0], 2), " (B, 2): the two mixed classes of each row")
    check_dtype_in(op, "classes", classes, (torch.int64,))
    check_same_device(op, "classes", classes, logits, "logits")
    check_shape(op, "coeffs", coeffs, (logits.shape[0], 4), " (B, 4): w_a, w_b, e_a, e_b")
    _check_acc(op, "coeffs", coeffs, logits)
    check_same_device(op, "coeffs", coeffs, logits, "logits")


def check_elr_rows(logits, targets, buffer_rows, beta, lam, device_type: Optional[str]) -> None:
    op = ELR_OP
    check_class_logits(op, logits, device_type)
    check_shape(op, "targets", targets, (logits.shape[0],))
    check_dtype_in(op, "targets", targets, (torch.int64,))
    check_same_device(op, "targets", targets, logits, "logits")
    check_shape(op, "buffer_rows", buffer_rows, tuple(logits.shape), " (B, C), as logits")
    _check_acc(op, "buffer_rows", buffer_rows, logits)
    check_same_device(op, "buffer_rows", buffer_rows, logits, "logits")
    if not (0.0 <= beta < 1.0):
        fail(op, "beta", "a value in [0, 1)", num_str(beta))
    if not math.isfinite(lam):
        fail(op, "lam", "a finite number", num_str(lam))


def fake_mixup_rows(logits, classes, coeffs, want_grad):
    check_mixup_rows(logits, classes, coeffs, None)
    B, C = logits.shape
    acc = acc_dtype(logits.dtype)
    return logits.new_empty((B,), dtype=acc), logits.new_empty((B if want_grad else 0, C), dtype=acc)


def fake_elr_rows(logits, targets, buffer_rows, beta, lam, want_grad):
    check_elr_rows(logits, targets, buffer_rows, beta, lam, None)
    B, C = logits.shape
    acc = acc_dtype(logits.dtype)
    return (logits.new_empty((B,), dtype=acc), logits.new_empty((B if want_grad else 0, C), dtype=acc),
            logits.new_empty((B, C), dtype=acc))
