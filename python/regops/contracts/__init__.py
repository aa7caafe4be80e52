"""The argument contract of every ``regops::`` schema, for the Triton host code and the fake kernels.

Each family's contract is written twice, word for word: once in C++ (csrc/include/regops/<family>_checks.h, called
by the CPU and the CUDA glue) and once here (contracts/<family>.py, called by the Triton ops and the fake kernels),
so that a bad argument gets the same exception and message on every backend (tests/test_op_contracts.py sends the
same bad arguments to all of them). These helpers are checks.h's. ``device_type=None`` skips the device-type check
(fake kernels: a fake tensor's device is whatever the trace says); the same-device checks always run.
"""
from __future__ import annotations

from typing import NoReturn, Optional, Sequence

import torch

from .._constants import acc_dtype  # noqa: F401  (checks.h's acc_type)


def fail(op: str, arg: str, expected: str, got: str, kind: type[Exception] = ValueError) -> NoReturn:
    raise kind(f"regops.{op}: {arg}: expected {expected}, got {got}")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def shape_str(shape) -> str:
    return str(tuple(int(s) if not isinstance(s, torch.SymInt) else s for s in shape))


def num_str(x: float) -> str:
    return f"{float(x):g}"


def describe(t: torch.Tensor) -> str:
    return f"shape {shape_str(t.shape)}, dtype {dtype_name(t.dtype)}, device {t.device}"


def check_tensor(op: str, arg: str, t) -> None:
    # The schema's Tensor arguments: only a Python caller of a Triton op can pass something else.
    if not isinstance(t, torch.Tensor):
        fail(op, arg, "a torch.Tensor", type(t).__name__, TypeError)


def check_dim(op: str, arg: str, t: torch.Tensor, dim: int, what: str = "") -> None:
    check_tensor(op, arg, t)
    if t.dim() != dim:
        fail(op, arg, f"a {dim}-D tensor{what}", describe(t))


def check_device(op: str, arg: str, t: torch.Tensor, device_type: Optional[str]) -> None:
    if device_type is not None and t.device.type != device_type:
        fail(op, arg, f"a tensor on {device_type}", describe(t), RuntimeError)


def dtypes_str(dtypes: Sequence[torch.dtype]) -> str:
    names = [dtype_name(d) for d in dtypes]
    return "dtype " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1])


def check_dtype_in(op: str, arg: str, t: torch.Tensor, dtypes: Sequence[torch.dtype], note: str = "") -> None:
    if t.dtype not in dtypes:
        fail(op, arg, dtypes_str(dtypes) + note, describe(t), TypeError)


FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def check_float_dtype(op: str, arg: str, t: torch.Tensor) -> None:
    check_dtype_in(op, arg, t, FLOAT_DTYPES)


def check_shape(op: str, arg: str, t: torch.Tensor, shape, note: str = "") -> None:
    check_tensor(op, arg, t)
    if tuple(t.shape) != tuple(shape):
        fail(op, arg, f"shape {shape_str(shape)}{note}", describe(t))


def check_same_dtype(op: str, arg: str, t: torch.Tensor, ref: torch.Tensor, ref_arg: str) -> None:
    if t.dtype != ref.dtype:
        fail(op, arg, f"dtype {dtype_name(ref.dtype)} (as {ref_arg})", describe(t), TypeError)


def check_same_device(op: str, arg: str, t: torch.Tensor, ref: torch.Tensor, ref_arg: str) -> None:
    if t.device != ref.device:
        fail(op, arg, f"device {ref.device} (as {ref_arg})", describe(t), RuntimeError)


def check_float32_only(op: str, arg: str, t: torch.Tensor) -> None:
    """What a Triton impl adds to a schema that also takes float64: its kernels are float32 only."""
    if t.dtype != torch.float32:
        fail(op, arg, "dtype float32 (the triton kernels take float32 only)", describe(t), TypeError)


def check_like(op: str, arg: str, t: torch.Tensor, shape, ref: torch.Tensor, ref_arg: str) -> None:
    check_shape(op, arg, t, shape)
    check_same_dtype(op, arg, t, ref, ref_arg)
    check_same_device(op, arg, t, ref, ref_arg)
