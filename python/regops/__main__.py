"""python -m regops info | bench [--quick] [--op NAME] [--device cpu|cuda] [--csv PATH] [--no-memory] [--list]
[--plot DIR] [--report [PATH]] | bench --from-csv PATH [--run latest|all|TIMESTAMP] [--op NAME] [--plot DIR]
[--report [PATH]]"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m regops")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, build facts and the op x impl table")
    b = sub.add_parser("bench", help="every op against its reference, the official code and its peers")
    b.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    b.add_argument("--op", action="append", metavar="NAME",
                   help="only this op, or every op of this bench module, e.g. orthonormal (repeatable; see --list)")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the inputs live: cpu (default) times the CPU kernels; cuda the CUDA and Triton ones")
    b.add_argument("--csv", default=None, metavar="PATH",
                   help="CSV to append rows to (default ./bench/results/<cpu|cuda>.csv where that folder exists, "
                        "as in a regops checkout, else ./regops-bench-<cpu|cuda>.csv)")
    b.add_argument("--no-memory", action="store_true", help="skip the per-case peak-memory measurement")
    b.add_argument("--list", action="store_true", help="print the ops and their providers per bench module, then exit")
    b.add_argument("--plot", metavar="DIR", default=None,
                   help="draw DIR/<op>_time.png and DIR/<op>_memory.png (log-log against the problem size, one line "
                        "per provider) from the rows of this run, or of --from-csv; needs matplotlib")
    b.add_argument("--report", nargs="?", const="-", default=None, metavar="PATH",
                   help="a Markdown summary per (op, size): regops' fastest kernel against the reference, the "
                        "official code and the best peer, in time and memory; to PATH, or stdout without one")
    b.add_argument("--from-csv", metavar="PATH", default=None,
                   help="time nothing: plot (--plot) or report (--report, the default) the rows of this CSV")
    b.add_argument("--run", default=None, metavar="latest|all|TIMESTAMP",
                   help="with --from-csv: the run to read, by its timestamp; latest (default), or all: the newest "
                        "row of every (op, size, provider) over all runs")
    b.add_argument("--memory-case", metavar="ID", help=argparse.SUPPRESS)  # internal: the per-case memory child
    args = parser.parse_args(argv)
    if args.cmd == "info":
        info()
        return
    from .bench import harness

    if args.memory_case is not None:
        raise SystemExit(harness.memory_case_main(args.memory_case, quick=args.quick, device=args.device))
    if args.list:
        harness.list_cases(quick=args.quick, device=torch.device(args.device))
        return
    command = "python -m regops " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.from_csv is not None:
        if args.csv is not None:
            sys.exit("regops bench: --from-csv: expected no --csv with it (nothing is timed or appended), "
                     f"got --csv {args.csv}")
        harness.from_csv_main(args.from_csv, run=args.run or "latest", ops=args.op, plot_dir=args.plot,
                              report=args.report, command=command)
        return
    if args.run is not None:
        sys.exit("regops bench: --run: expected --from-csv with it (a timing run reports its own rows), "
                 f"got --run {args.run}")
    harness.main(quick=args.quick, ops=args.op, csv_path=args.csv, memory=not args.no_memory, device=args.device,
                 plot_dir=args.plot, report=args.report, command=command)


def run_quietly_into_closed_pipes() -> int:
    """main(), where a reader that stops early (`--list | head -3`) ends the output quietly, as Unix tools do."""
    try:
        main()
        sys.stdout.flush()  # inside the try: a write that fails at exit would print its traceback after all
    except BrokenPipeError:
        # Nothing more can reach the reader. Point stdout at devnull so the interpreter's own flush at exit does
        # not raise a second time, and exit as a process that SIGPIPE ended would (128 + 13).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(run_quietly_into_closed_pipes())
