"""python -m regops info | bench [--quick] [--op NAME]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def info() -> None:
    import regops
    from . import _loader, _registry

    print(f"regops {regops.__version__}")
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}; GPU present: {torch.cuda.is_available()})")
    facts = _loader.BUILD_FACTS
    if facts:
        cuda = (f"CUDA kernels for archs {facts.get('cuda_archs')}, nvcc {facts.get('cuda_toolkit')}"
                if facts.get("with_cuda") else "CPU kernels only")
        print(f"build facts ({_loader.BUILD_FACTS_PATH}): regops {facts.get('regops_version')} built for torch "
              f"{facts.get('torch_version')} (CUDA {facts.get('torch_cuda') or 'none'}); {cuda}; Python "
              f"{facts.get('python')} on {facts.get('platform')}; commit {facts.get('commit') or 'unknown'}")
    else:
        print(f"build facts: none ({_loader.BUILD_FACTS_PATH} is absent: no build, or one older than the facts)")
    if _loader.BUILD_MISMATCH:
        print(f"build mismatch: {_loader.BUILD_MISMATCH}")
    C = _loader._C
    if C is not None:
        print(f"compiled ops: regops._C, built against torch {C.torch_version}; CUDA kernels: {C.with_cuda}"
              + (f" (CUDA {C.cuda_version}, archs {C.cuda_archs})" if C.with_cuda else ""))
        par = C.parallel_info()
        omp = next((l.strip() for l in par.splitlines() if "OpenMP" in l or "omp_get_max_threads" in l), "")
        print(f"CPU threads: {C.intra_op_threads()} (torch's intra-op pool; {omp or 'see torch.__config__.parallel_info()'})")
    elif _loader.LIBRARY_PATH:
        print(f"compiled ops: {_loader.LIBRARY_PATH} ({torch.ops.regops._build_info()})")
    elif _loader.BUILD_MISMATCH:
        print("compiled ops: not loaded (the build mismatch above); the reference runs everywhere")
    else:
        print(f"compiled ops: none ({_loader.LOAD_ERROR}); the reference runs everywhere")
    if _loader.triton_available():
        import triton
        mode = "interpreted on the CPU (TRITON_INTERPRET=1)" if _loader.triton_interpreted() else "compiled for the GPU"
        print(f"triton {triton.__version__}: {mode}")
    else:
        print("triton: not installed")
    validated = sorted(_registry.gpu_validated())
    print("GPU-validated kernels (auto picks these on CUDA): " + (", ".join(f"{o}:{i}" for o, i in validated) or "none"))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print()
    w = max(len(n) for n in _registry.OPS) + 2
    header = f"{'op':<{w}}{'engine':<14}" + "".join(f"{d.type + ':' + i:>16}" for d in devices for i in _registry.IMPLS)
    print(header)
    for name, spec in _registry.OPS.items():
        row = f"{name:<{w}}{spec.engine.name if spec.engine else '-':<14}"
        for d in devices:
            for impl in _registry.IMPLS:
                row += f"{('yes' if _registry.available(name, impl, d)[0] else '-'):>16}"
        print(row)


def find_bench_dir() -> Path:
    for cand in (Path.cwd() / "bench", Path(__file__).resolve().parents[2] / "bench"):
        if (cand / "harness.py").exists():
            return cand
    sys.exit("regops bench: no bench/ folder found; run it from a regops source checkout")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m regops")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, build facts and the op x impl table")
    b = sub.add_parser("bench", help="every op against its reference and its peers")
    b.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    b.add_argument("--op", action="append", help="only this op (repeatable)")
    b.add_argument("--csv", default=None, help="CSV to append rows to (default bench/results/<machine>.csv)")
    b.add_argument("--no-memory", action="store_true", help="skip the per-case peak-memory subprocesses")
    args = parser.parse_args(argv)
    if args.cmd == "info":
        info()
        return
    bench_dir = find_bench_dir()
    sys.path.insert(0, str(bench_dir))
    import harness  # bench/harness.py

    harness.main(quick=args.quick, ops=args.op, csv_path=args.csv, memory=not args.no_memory)


if __name__ == "__main__":
    main()
