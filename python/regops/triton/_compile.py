"""Compile every Triton kernel of regops to a cubin without a GPU (ahead-of-time check).

Each module of this package (other than those whose name starts with "_") that defines @triton.jit
kernels lists them in a module-level ``KERNELS``: one dict per cubin with the keys

- ``fn``: the @triton.jit function,
- ``signature``: every argument name -> triton type ("*fp32", "*bf16", "i32", "i64", ...),
  with "constexpr" for the constexpr arguments,
- ``constexprs``: constexpr argument name -> value,
- ``num_warps`` (optional, default 4),
- ``variant`` (optional): None for a kernel's primary spec, reported under the bare kernel name;
  other specs are reported as "<kernel name>[<variant>]".

A jit kernel that a module defines but leaves out of its KERNELS is an error here, so a new kernel
cannot skip this check. Jit functions named with a leading underscore are device helpers: they are compiled
inside the kernels that call them. Run as ``python -m regops.triton._compile [ARCH]`` with TRITON_INTERPRET
unset (the interpreter replaces @triton.jit at import time, and interpreted kernels cannot be
compiled).
"""
from __future__ import annotations

import importlib
import pkgutil
import sys


def _package_modules():
    pkg = importlib.import_module(__package__ or "regops.triton")
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{pkg.__name__}.{info.name}")


def _check_not_interpreted():
    from .._loader import triton_interpreted
    if triton_interpreted():
        raise RuntimeError("regops.triton._compile: TRITON_INTERPRET=1 is set; compile the kernels in a "
                           "process where it is unset (e.g. `env -u TRITON_INTERPRET python -m regops.triton._compile`)")


def collect_specs() -> list[tuple[str, dict]]:
    """(result key, spec) for every spec of every module; checks that each jit kernel has a spec."""
    import triton

    specs = []
    for mod in _package_modules():
        kernels = getattr(mod, "KERNELS", [])
        covered = set()
        for spec in kernels:
            fn = spec["fn"]
            if not isinstance(fn, triton.runtime.jit.JITFunction):
                raise RuntimeError(f"regops.triton._compile: {mod.__name__}: {getattr(fn, '__name__', fn)!r} is not a "
                                   "compilable @triton.jit function (was it imported under TRITON_INTERPRET=1?)")
            name = fn.__name__
            covered.add(name)
            variant = spec.get("variant")
            specs.append((name if variant is None else f"{name}[{variant}]", spec))
        for attr, value in vars(mod).items():
            if isinstance(value, triton.runtime.jit.JITFunction) and value.__module__ == mod.__name__ \
                    and value.__name__ not in covered and not value.__name__.startswith("_"):
                raise RuntimeError(f"regops.triton._compile: {mod.__name__}.{attr} is a @triton.jit kernel "
                                   "missing from that module's KERNELS")
    return specs


def compile_spec(spec: dict, arch: int = 90):
    """Compile one spec for sm_<arch>; returns triton's CompiledKernel (its .asm holds 'cubin')."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=spec["fn"], signature=dict(spec["signature"]), constexprs=dict(spec.get("constexprs", {})))
    return triton.compile(src, target=GPUTarget("cuda", int(arch), 32),
                          options={"num_warps": int(spec.get("num_warps", 4))})


def compile_all_to_cubin(arch: int = 90) -> dict[str, int]:
    """Compile every kernel spec of the package for sm_<arch>; returns result key -> cubin size in bytes.

    The primary spec of each kernel is keyed by the kernel's name (e.g. "orthonormal_fwd_kernel"),
    the other variants by "<name>[<variant>]" (e.g. "orthonormal_fwd_kernel[fp64]").
    """
    _check_not_interpreted()
    sizes = {}
    for key, spec in collect_specs():
        try:
            compiled = compile_spec(spec, arch)
        except Exception as exc:
            raise RuntimeError(f"regops.triton._compile: {key}: compiling for sm_{arch} failed: {exc}") from exc
        cubin = compiled.asm.get("cubin")
        if not cubin:
            raise RuntimeError(f"regops.triton._compile: {key}: triton produced no cubin for sm_{arch}")
        sizes[key] = len(cubin)
    return sizes


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arch = int(argv[0]) if argv else 90
    sizes = compile_all_to_cubin(arch)
    for key, size in sizes.items():
        print(f"{key}: {size} bytes (sm_{arch} cubin)")
    print(f"compiled {len(sizes)} cubins for sm_{arch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
