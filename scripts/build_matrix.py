"""The release build matrix: one wheel per (CUDA version or CPU) x torch minor version, built and verified.

    python3 scripts/build_matrix.py --plan                      # print the matrix and the commands; builds nothing
    python3 scripts/build_matrix.py [--only cu128] [--torch 2.14] [--out wheelhouse]

Python is not an axis: _C uses CPython's limited API, so each wheel is cp310-abi3 and serves Python 3.10-3.13
(the verification runs each wheel under every Python of PYTHONS found on the machine). torch is an axis because
libtorch's C++ ABI changes between minor versions (the wheel pins it); CUDA is one because the kernels link one
CUDA runtime.

What a release machine needs: the toolkits under /usr/local/cuda-<X.Y> (CUDA_ROOT overrides the pattern),
interpreters python3.10 ... python3.13 on PATH, and a torch index per CUDA version (TORCH_INDEX, default
PyTorch's: https://download.pytorch.org/whl/<cu126|cu128|cu130|cpu>). For each cell it makes a build venv with that
torch, runs scripts/build_wheels.py (which checks the archs with cuobjdump) and scripts/verify_wheel.py (a fresh
venv per Python: install, import, info, quick bench, smoke tests). Missing toolkits or interpreters skip their
cells and say so; the summary lists every cell as built, failed or skipped.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# The CUDA versions PyTorch publishes wheels for, per torch minor version (edit for a new torch release).
TORCH_CUDA = {
    "2.11": ("12.6", "12.8", "13.0"),
    "2.12": ("12.6", "12.8", "13.0"),
    "2.13": ("12.6", "12.8", "13.0"),
    "2.14": ("12.6", "12.8", "13.0"),
}
BUILD_PYTHON = "3.12"  # the interpreter of the build venvs (the wheel is abi3: any of PYTHONS would do)


@dataclass(frozen=True)
class Cell:
    torch: str            # torch minor version, "2.14"
    cuda: str | None      # "12.8", or None for the CPU wheel

    @property
    def tag(self) -> str:
        return f"cu{self.cuda.replace('.', '')}torch{self.torch}" if self.cuda else f"cputorch{self.torch}"

    @property
    def index(self) -> str:
        flavour = f"cu{self.cuda.replace('.', '')}" if self.cuda else "cpu"
        return os.environ.get("TORCH_INDEX", "https://download.pytorch.org/whl/{flavour}").format(flavour=flavour)

    def toolkit(self) -> Path | None:
        if not self.cuda:
            return None
        return Path(os.environ.get("CUDA_ROOT", "/usr/local/cuda-{cuda}").format(cuda=self.cuda))


def matrix(only=(), torch_versions=()) -> list[Cell]:
    cells = []
    for torch_mm, cudas in TORCH_CUDA.items():
        if torch_versions and torch_mm not in torch_versions:
            continue
        for cuda in (None,) + cudas:
            cell = Cell(torch_mm, cuda)
            if not only or any(cell.tag.startswith(o) for o in only):
                cells.append(cell)
    return cells


def commands(cell: Cell, venv: Path, out: Path) -> list[list[str]]:
    """The commands of one cell, in order (the plan prints them; a run executes them)."""
    py = str(venv / "bin" / "python")
    next_minor = f"{cell.torch.split('.')[0]}.{int(cell.torch.split('.')[1]) + 1}"
    return [
        [f"python{BUILD_PYTHON}", "-m", "venv", str(venv)],
        [py, "-m", "pip", "install", "-q", "--index-url", cell.index, f"torch>={cell.torch},<{next_minor}"],
        [py, "-m", "pip", "install", "-q", "setuptools>=64", "wheel", "ninja", "numpy"],
        [py, str(REPO / "scripts" / "build_wheels.py"), "--cuda" if cell.cuda else "--cpu", "--out", str(out)],
    ]


def cell_env(cell: Cell) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TORCH_CUDA_ARCH_LIST")}
    env["REGOPS_BUILD_DIR"] = f"build-{cell.tag}"  # one object folder per cell
    if cell.cuda:
        env["CUDA_HOME"] = str(cell.toolkit())
        env["PATH"] = f"{cell.toolkit()}/bin:{env['PATH']}"
    return env


def working_python(version: str) -> str | None:
    """python<version> if it is on PATH and runs (a pyenv shim without its interpreter does not)."""
    path = shutil.which(f"python{version}")
    if path is None:
        return None
    ok = subprocess.run([path, "--version"], capture_output=True, timeout=60).returncode == 0
    return path if ok else None


def skip_reason(cell: Cell) -> str | None:
    if working_python(BUILD_PYTHON) is None:
        return f"python{BUILD_PYTHON} not on PATH"
    if cell.cuda and not (cell.toolkit() / "bin" / "nvcc").exists():
        return f"no CUDA {cell.cuda} toolkit at {cell.toolkit()}"
    return None


def run(cells: list[Cell], out: Path) -> int:
    results = []
    for cell in cells:
        why = skip_reason(cell)
        if why:
            results.append((cell, f"skipped: {why}"))
            continue
        with tempfile.TemporaryDirectory(prefix=f"regops-{cell.tag}-") as tmp:
            try:
                for cmd in commands(cell, Path(tmp) / "venv", out):
                    subprocess.run(cmd, cwd=REPO, env=cell_env(cell), check=True)
                wheel = max(out.glob(f"regops-*+{cell.tag}-*.whl"), key=lambda p: p.stat().st_mtime)
                pythons = [p for p in map(working_python, PYTHONS) if p]
                for python in pythons:
                    subprocess.run([sys.executable, str(REPO / "scripts" / "verify_wheel.py"), "--python", python,
                                    str(wheel)], cwd=REPO, env=cell_env(cell), check=True)
                results.append((cell, f"built and verified under {len(pythons)} Pythons: {wheel.name}"))
            except subprocess.CalledProcessError as exc:
                results.append((cell, f"FAILED: {' '.join(map(str, exc.cmd))} exited {exc.returncode}"))
    print("\n=== build matrix")
    for cell, outcome in results:
        print(f"{cell.tag:<18} {outcome}")
    return 1 if any(o.startswith("FAILED") for _, o in results) else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", action="store_true", help="print the cells and their commands, build nothing")
    parser.add_argument("--only", action="append", default=[], metavar="PREFIX",
                        help="cells whose tag starts with this, e.g. cu128 or cputorch2.14 (repeatable)")
    parser.add_argument("--torch", action="append", default=[], metavar="M.m", help="only this torch minor version")
    parser.add_argument("--out", default=str(REPO / "wheelhouse"), help="folder the wheels go to")
    args = parser.parse_args(argv)
    unknown = [t for t in args.torch if t not in TORCH_CUDA]
    if unknown:
        parser.error(f"--torch: expected one of {', '.join(TORCH_CUDA)}, got {', '.join(unknown)}")
    cells = matrix(args.only, args.torch)
    if not cells:
        parser.error(f"--only {args.only}: no cell matches (tags look like cu128torch2.14, cputorch2.13)")
    out = Path(args.out)
    if args.plan:
        print(f"{len(cells)} wheels (cp310-abi3, each verified under Python {', '.join(PYTHONS)}):")
        for cell in cells:
            why = skip_reason(cell)
            print(f"\n{cell.tag}  (torch {cell.torch}, {'CUDA ' + cell.cuda if cell.cuda else 'CPU'}; index "
                  f"{cell.index}){'  [would skip: ' + why + ']' if why else ''}")
            for cmd in commands(cell, Path("<tmp>/venv"), out):
                print("  " + " ".join(cmd))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    return run(cells, out)


if __name__ == "__main__":
    sys.exit(main())
