"""Loads the compiled ops and answers what this build and this process can run: compiled kernels per dispatch
key, Triton, and whether Triton is interpreted. Which impl a call gets is _registry.py's business.

The build's facts (setup.py writes them to _build_facts.json next to _C: torch, CUDA, archs, Python, commit) are
read before _C. When they name another torch major.minor, or (for a CUDA build) another CUDA major, than this
process runs, _C is not imported at all: a _C built against another libtorch may fail on an undefined symbol, but
it may also load and register schemas or kernels that do not match this torch, which no fallback can undo. A _C
whose import fails (ImportError, or OSError from torch.ops.load_library) registered nothing: dlopen resolves every
symbol before any registration runs. Either way the loader words it as "regops was built for torch X (CUDA Y);
this process has torch Z (CUDA W) ..." (LOAD_ERROR), warns with BuildMismatchWarning and leaves the reference
impls to run; REGOPS_STRICT_BUILD=1 raises ImportError with that message instead. No facts file (a build older
than them) skips the comparison. A source tree with no _C and no facts is reference-only without a warning.

Environment: REGOPS_STRICT_BUILD=1 (above); REGOPS_OPS_LIBRARY=<path> loads the CMake build's library instead of
_C (the facts, which describe _C, are then not compared); REGOPS_BUILD_FACTS_PATH=<file> reads the build facts from
that file instead, for tests (tests/test_build_facts.py injects facts of another torch with it)."""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
import warnings
from functools import lru_cache
from pathlib import Path

import torch

BUILD_FACTS_FILE = Path(__file__).with_name("_build_facts.json")


class BuildMismatchWarning(RuntimeWarning):
    """regops's compiled ops were built for another torch or CUDA than this process has, or failed to load;
    the reference impls run instead."""


def read_build_facts(path) -> dict | None:
    """The build's facts, or None when there are none (no build, or a build older than them) or they are unreadable."""
    try:
        facts = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) else None


def _major_minor(version) -> tuple | None:
    m = re.match(r"(\d+)\.(\d+)", str(version or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _cuda_major(version) -> int | None:
    m = _major_minor(version)
    return m[0] if m else None


def facts_match_this_torch(facts: dict) -> bool:
    """Whether a build with these facts can be loaded into this process: the same torch major.minor and, for a
    CUDA build, the same CUDA major. (A CPU-only build links no CUDA library, so any CUDA of that torch will do.)"""
    if _major_minor(facts.get("torch_version")) != _major_minor(torch.__version__):
        return False
    return not facts.get("with_cuda") or _cuda_major(facts.get("torch_cuda")) == _cuda_major(torch.version.cuda)


def _torch_and_cuda(version, cuda) -> str:
    return f"torch {version} (CUDA {cuda or 'none'})"


def _matching_build() -> str:
    """The regops build this process needs, as issue 17's wheels name it in their local version."""
    torch_mm = ".".join(map(str, _major_minor(torch.__version__) or ())) or torch.__version__
    cuda = _major_minor(torch.version.cuda)
    if cuda:
        return (f"pip install regops built for torch {torch_mm} with CUDA {torch.version.cuda}, the wheel versioned "
                f"+cu{cuda[0]}{cuda[1]}torch{torch_mm}")
    return f"pip install regops built for torch {torch_mm}, CPU only, the wheel versioned +cputorch{torch_mm}"


def build_mismatch_message(facts: dict | None, load_error: BaseException | str | None = None) -> str:
    """What the user reads when the compiled ops cannot run here: the build's torch against this process's, the
    loader's own error in one line (never its traceback), and what to install."""
    built = (_torch_and_cuda(facts.get("torch_version"), facts.get("torch_cuda")) if facts
             else "an unknown torch (the build wrote no build facts)")
    text = f"regops was built for {built}; this process has {_torch_and_cuda(torch.__version__, torch.version.cuda)}."
    if load_error is not None:
        first_line = (str(load_error).strip().splitlines() or [type(load_error).__name__])[0].rstrip(".")
        text += f" Loading its compiled ops failed: {first_line}."
    return (text + f" Install a regops build that matches ({_matching_build()}) or rebuild from source "
            "(pip install --no-build-isolation -e .).")


def _refuse_build(message: str) -> None:
    """The default warns and leaves the reference impls to run; REGOPS_STRICT_BUILD=1 makes it an error."""
    global LOAD_ERROR
    if os.environ.get("REGOPS_STRICT_BUILD", "0") == "1":
        raise ImportError(message) from None  # the worded message alone, not the loader's traceback under it
    LOAD_ERROR = message
    warnings.warn(message + " The reference impls run instead (REGOPS_STRICT_BUILD=1 makes this an error).",
                  BuildMismatchWarning, stacklevel=4)  # points at regops/__init__.py's import of _loader


_C = None
LIBRARY_PATH = None  # set when REGOPS_OPS_LIBRARY (the CMake build) is loaded instead of _C
LOAD_ERROR = None
BUILD_FACTS_PATH = Path(os.environ.get("REGOPS_BUILD_FACTS_PATH") or BUILD_FACTS_FILE)
BUILD_FACTS = read_build_facts(BUILD_FACTS_PATH)
BUILD_MISMATCH = None  # the message, when the facts name another torch or CUDA than this process's


def _load_compiled_ops() -> None:
    global _C, LIBRARY_PATH, LOAD_ERROR, BUILD_MISMATCH
    library = os.environ.get("REGOPS_OPS_LIBRARY")
    if library:
        try:
            torch.ops.load_library(library)
        except (OSError, ImportError) as exc:  # dlopen failed: nothing was registered
            _refuse_build(build_mismatch_message(None, exc))
            return
        LIBRARY_PATH = library
        return
    if BUILD_FACTS is not None and not facts_match_this_torch(BUILD_FACTS):
        BUILD_MISMATCH = build_mismatch_message(BUILD_FACTS)
        _refuse_build(BUILD_MISMATCH)  # _C is not imported: it may load and register mismatched schemas
        return
    if importlib.util.find_spec("regops._C") is None:
        LOAD_ERROR = "no module regops._C: a source tree without a build"
        if BUILD_FACTS is not None:  # the facts say a build was installed, yet no _C loads for this Python
            python = f"{sys.version_info.major}.{sys.version_info.minor}"
            other_python = f" (built for Python {BUILD_FACTS.get('python')}; this is Python {python})" \
                if BUILD_FACTS.get("python") not in (None, python) else ""
            _refuse_build(build_mismatch_message(BUILD_FACTS, "regops._C is missing from the package" + other_python))
        return
    try:
        _C = importlib.import_module("regops._C")  # registers the TORCH_LIBRARY ops
    except (ImportError, OSError) as exc:  # an undefined symbol, a missing libcudart: never the raw traceback
        _refuse_build(build_mismatch_message(BUILD_FACTS, exc))


_load_compiled_ops()


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
