"""Host-side helpers shared by the Triton op modules: where a kernel may run, and on which device."""
from __future__ import annotations

import contextlib
import os

import torch
import triton

from .._loader import triton_interpreted as interpreted


def kernel_is_interpreted(kernel) -> bool:
    # triton.jit picks the interpreter when the decorator runs (the module's import), so the environment at
    # call time alone does not say which one we hold.
    return not isinstance(kernel, triton.runtime.jit.JITFunction)


def check_device(op: str, t: torch.Tensor, kernel) -> None:
    """Raises unless `kernel` (a module's @triton.jit function) can run on t's device now."""
    if t.device.type == "cpu":
        if not interpreted():
            raise RuntimeError(
                f"{op}: impl: the triton kernel runs on CPU tensors only under TRITON_INTERPRET=1, "
                f"got a CPU tensor with TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r}")
        if not kernel_is_interpreted(kernel):
            raise RuntimeError(
                f"{op}: impl: TRITON_INTERPRET=1 was set after triton compiled this module's kernels; "
                "set it before the first import of triton to run on CPU tensors")
    elif t.device.type == "cuda":
        if kernel_is_interpreted(kernel) and not interpreted():
            raise RuntimeError(
                f"{op}: impl: this module's kernels were loaded under TRITON_INTERPRET=1, "
                "which has since been unset; re-import with it unset to run on CUDA tensors")
    else:
        raise RuntimeError(f"{op}: impl: the triton kernel takes CUDA tensors "
                           f"(or CPU tensors under TRITON_INTERPRET=1), got device {t.device}")


def device_guard(t: torch.Tensor):
    # Triton launches on the current CUDA device; make it the tensor's.
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()
