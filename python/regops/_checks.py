"""One place that words every argument error, so all ops say the same things the same way."""
from __future__ import annotations

import math
import os
import warnings
from typing import NoReturn

import torch


def fail(op: str, arg: str, expected: str, got: str, kind: type[Exception] = ValueError) -> NoReturn:
    raise kind(f"regops.{op}: {arg}: expected {expected}, got {got}")


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn(message: str, category: type[Warning]) -> None:
    """warnings.warn attributed to the first caller outside regops, however deep inside the library it is raised."""
    import sys
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {dtype_name(t.dtype)}, device {t.device}"


def check_tensor(op: str, arg: str, t, *, ndims=None, dtypes=None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        fail(op, arg, "a torch.Tensor", type(t).__name__, TypeError)
    if ndims is not None and t.dim() not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        fail(op, arg, f"a {want} tensor", f"{t.dim()}-D tensor of shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(dtype_name(d) for d in dtypes)
        fail(op, arg, f"dtype in ({names})", dtype_name(t.dtype), TypeError)
    return t


def number(op: str, arg: str, v, *, low=None, low_open=False, high=None, what="a finite number") -> float:
    """A real scalar: an int, a float, a 0-dim real tensor, or a SymInt/SymFloat under torch.compile (float()
    specializes it, as the float argument of an op schema would). Booleans, strings and other types are a
    TypeError; non-finite values or values out of [low, high] ((low, high] with low_open) a ValueError."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or v.dtype == torch.bool or v.is_complex():
            fail(op, arg, what, f"a tensor of shape {tuple(v.shape)} and dtype {dtype_name(v.dtype)}", TypeError)
        v = v.detach().item()
    if isinstance(v, bool) or not isinstance(v, (int, float, torch.SymInt, torch.SymFloat)):
        fail(op, arg, what, f"{type(v).__name__} {v!r}", TypeError)
    x = float(v)
    if x != x or x in (math.inf, -math.inf) or (low is not None and (x <= low if low_open else x < low)) \
            or (high is not None and x > high):
        fail(op, arg, what, repr(v))
    return x


def check_has_data(op: str, arg: str, t: torch.Tensor) -> None:
    """Iterative solvers stop on their data (convergence tests), so meta tensors (shapes only) cannot run them."""
    if t.device.type == "meta":
        fail(op, arg, "a tensor with data (an iterative solver decides on its values)", "a meta tensor", RuntimeError)


def check_choice(op: str, arg: str, value, choices) -> None:
    if value not in choices:
        fail(op, arg, "one of " + ", ".join(repr(c) for c in choices), repr(value))


def check_same(op: str, arg: str, tensors, first_arg: str | None = None) -> None:
    """All tensors share one dtype and one device."""
    if not tensors:
        return
    t0 = tensors[0]
    for i, t in enumerate(tensors[1:], 1):
        if t.device != t0.device:
            fail(op, f"{arg}[{i}]", f"device {t0.device} (as {first_arg or arg + '[0]'})", f"device {t.device}", RuntimeError)
        if t.dtype != t0.dtype:
            fail(op, f"{arg}[{i}]", f"dtype {dtype_name(t0.dtype)} (as {first_arg or arg + '[0]'})", f"dtype {dtype_name(t.dtype)}", TypeError)


def check_finite_enabled(device: torch.device) -> bool:
    """Finiteness is always checked on the CPU; on CUDA only on request, since it costs a host sync."""
    return device.type == "cpu" or os.environ.get("REGOPS_CHECK_FINITE", "0") == "1"


def check_finite_eager(op: str, arg: str, t: torch.Tensor) -> None:
    """For the reference path: a data-dependent check, skipped while torch.compile traces."""
    if torch.compiler.is_compiling() or not check_finite_enabled(t.device):
        return
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        fail(op, arg, "finite values", f"{t[idx].item()} at index {idx}")
