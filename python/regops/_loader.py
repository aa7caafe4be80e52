"""Loads the compiled ops and picks an impl for each call.

Impl rules (the same for every op):
- ``impl="<name>"`` asks for that impl and raises if it cannot run here.
- ``REGOPS_IMPL`` is a preference: used when it can run, else auto.
- auto: on CPU tensors the C++ kernel if built, else the reference; on CUDA tensors a CUDA or Triton
  kernel only if ``gpu_validated.txt`` lists it for that op (it passed its tests on a real GPU), else
  the reference. No kernel that has never run on a GPU is chosen silently.
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import torch

IMPLS = ("reference", "cpu", "cuda", "triton")

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
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def gpu_validated_path() -> Path:
    return Path(__file__).with_name("gpu_validated.txt")


@lru_cache(None)
def gpu_validated() -> frozenset:
    """(op, impl) pairs that passed their tests on a real GPU (written by scripts/gpu_check.sh)."""
    path = gpu_validated_path()
    pairs = set()
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].split()
            if len(line) == 2:
                pairs.add((line[0], line[1]))
    return frozenset(pairs)


def impl_available(op: str, impl: str, device: torch.device, kernels: dict) -> tuple[bool, str]:
    """Can `impl` run `op` on `device`? `kernels` maps impl -> compiled qualname or a checker."""
    if impl == "reference":
        return True, ""
    if impl not in kernels:
        return False, f"regops.{op} has no {impl} kernel"
    if impl == "cpu":
        if device.type != "cpu":
            return False, f"the cpu kernel takes CPU tensors, got device {device}"
        if not has_kernel(kernels["cpu"], "CPU"):
            return False, "this build has no compiled CPU kernels (regops._C is missing: " + str(LOAD_ERROR) + ")"
        return True, ""
    if impl == "cuda":
        if device.type != "cuda":
            return False, f"the cuda kernel takes CUDA tensors, got device {device}"
        if not has_kernel(kernels["cuda"], "CUDA"):
            return False, "this build has no CUDA kernels (built with REGOPS_NO_CUDA=1 or without nvcc)"
        return True, ""
    if impl == "triton":
        if not triton_available():
            return False, "triton is not installed"
        if not hasattr(torch.ops.regops, kernels["triton"]):
            return False, f"the triton op regops::{kernels['triton']} is not registered"
        if device.type == "cpu" and not triton_interpreted():
            return False, "the triton kernel runs on CPU tensors only under TRITON_INTERPRET=1"
        if device.type not in ("cpu", "cuda"):
            return False, f"the triton kernel takes CUDA tensors, got device {device}"
        return True, ""
    return False, f"unknown impl {impl!r}"


def resolve_impl(op: str, impl, device: torch.device, kernels: dict) -> str:
    """Pick the impl for one call (see the module docstring)."""
    if impl is not None and impl != "auto":
        if impl not in IMPLS:
            raise ValueError(f"regops.{op}: impl: expected one of None, 'auto', " + ", ".join(repr(i) for i in IMPLS) + f", got {impl!r}")
        ok, why = impl_available(op, impl, device, kernels)
        if not ok:
            raise RuntimeError(f"regops.{op}: impl: expected an impl that can run here, got {impl!r}: {why}")
        return impl
    pref = os.environ.get("REGOPS_IMPL", "auto")
    if pref not in ("auto", "") and pref in IMPLS and impl_available(op, pref, device, kernels)[0]:
        return pref
    if device.type == "cuda":
        for cand in ("cuda", "triton"):
            if (op, cand) in gpu_validated() and impl_available(op, cand, device, kernels)[0]:
                return cand
        return "reference"
    if device.type == "cpu" and impl_available(op, "cpu", device, kernels)[0]:
        return "cpu"
    return "reference"


def empty_cache() -> None:
    """Frees the idle large CPU output buffers regops keeps for reuse (csrc/cpu/output_cache.h).
    Buffers still held by live tensors return to the cache when those die, up to REGOPS_CPU_CACHE_MB."""
    if has_compiled_ops():
        torch.ops.regops._cpu_cache_clear()
