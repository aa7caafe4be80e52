"""Loads the compiled ops and answers what this build and this process can run: compiled kernels per dispatch
key, Triton, and whether Triton is interpreted. Which impl a call gets is _registry.py's business."""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch

_C = None
LIBRARY_PATH = None  # set when REGOPS_OPS_LIBRARY (the CMake build) is loaded instead of _C
LOAD_ERROR = None

_lib_override = os.environ.get("REGOPS_OPS_LIBRARY")
if _lib_override:
    torch.ops.load_library(_lib_override)
    LIBRARY_PATH = _lib_override
else:
    try:
        from regops import _C  # noqa: F401  (registers the TORCH_LIBRARY ops)
    except ImportError as exc:  # no compiled build: the reference still runs
        LOAD_ERROR = str(exc)


def has_compiled_ops() -> bool:
    return _C is not None or LIBRARY_PATH is not None


def schema_registered(name: str) -> bool:
    """Whether the loaded library declares `regops::<name>` (an older build may lack newer ops)."""
    if not has_compiled_ops():
        return False
    try:
        getattr(torch.ops.regops, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def has_kernel(qualname: str, dispatch_key: str) -> bool:
    """Whether the compiled library registered `regops::<qualname>` for that dispatch key."""
    if not has_compiled_ops():
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"regops::{qualname}", dispatch_key)
    except RuntimeError:
        return False


@lru_cache(None)
def triton_available() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken triton install must not break regops
        return False
    return True


def triton_interpreted() -> bool:
    """TRITON_INTERPRET=1: Triton kernels run on CPU tensors, interpreted (it must be set before triton's import)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def empty_cache() -> None:
    """Frees the idle large CPU output buffers regops keeps for reuse (csrc/cpu/output_cache.h).
    Buffers still held by live tensors return to the cache when those die, up to REGOPS_CPU_CACHE_MB."""
    if has_compiled_ops():
        torch.ops.regops._cpu_cache_clear()
