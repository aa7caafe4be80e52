"""Builds regops wheels for the torch (and CUDA toolkit) of the Python that runs this script, then checks them.

    python scripts/build_wheels.py --cpu  [--out dist]   # REGOPS_NO_CUDA=1: CPU kernels plus the Triton code
    python scripts/build_wheels.py --cuda [--out dist]   # CUDA kernels for torch's wheel archs (setup.py)
    add --verify to verify each wheel in a fresh venv afterwards (scripts/verify_wheel.py)

Run it with the interpreter of the environment the wheel is for (e.g. .venv/bin/python): the wheel is built
against that torch, with `pip wheel --no-build-isolation`. The CPU build uses build-cpu/, the CUDA one build/
(REGOPS_BUILD_DIR overrides), so a wheel built after `make build` reuses its object files and only relinks.
TORCH_CUDA_ARCH_LIST, MAX_JOBS and NVCC_THREADS are passed through to setup.py.

Each wheel is checked before it is reported: its name carries the local version of its build facts
(+cu130torch2.14, +cputorch2.13) and the abi3 tag; its metadata pins the torch it was built against; a CUDA
wheel's _C holds SASS for every arch of its build facts and PTX for the +PTX one (scripts/cuda_targets.py);
a CPU wheel's holds no GPU code.
"""
from __future__ import annotations

import argparse
import email.parser
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from cuda_targets import cuda_targets, expected_targets  # noqa: E402


class WheelCheckError(RuntimeError):
    pass


def build(kind: str, out: Path) -> Path:
    """Builds one wheel of `kind` ("cpu" or "cuda") into `out` and returns its path."""
    env = dict(os.environ)
    if kind == "cpu":
        env["REGOPS_NO_CUDA"] = "1"
        env.setdefault("REGOPS_BUILD_DIR", "build-cpu")
    else:
        env.pop("REGOPS_NO_CUDA", None)
        env["REGOPS_FORCE_CUDA"] = "1"  # a CUDA wheel or an error, never a silent CPU-only wheel
        env.setdefault("REGOPS_BUILD_DIR", "build")
    out.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime for p in out.glob("regops-*.whl")}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                    "-w", str(out), str(REPO)], env=env, check=True)
    fresh = [p for p in out.glob("regops-*.whl") if before.get(p) != p.stat().st_mtime]
    if len(fresh) != 1:
        raise WheelCheckError(f"expected pip wheel to write one regops wheel into {out}, found {fresh}")
    print(f"built {fresh[0].name} in {time.monotonic() - t0:.0f} s", flush=True)
    return fresh[0]


def check(wheel: Path, kind: str) -> str:
    """Checks one wheel against its own build facts; returns a one-line summary, raises WheelCheckError."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        facts = json.loads(z.read("regops/_build_facts.json"))
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(z.read(metadata_name).decode())
        libs = [n for n in names if re.fullmatch(r"regops/_C\..*so", n)]
        if libs != ["regops/_C.abi3.so"]:
            raise WheelCheckError(f"{wheel.name}: expected one regops/_C.abi3.so, found {libs}")
        missing = [n for n in ("regops/bench/harness.py", "regops/bench/cases/sinkhorn.py", "regops/gpu_validated.txt")
                   if n not in names]
        if missing:
            raise WheelCheckError(f"{wheel.name}: the package data is incomplete, missing {missing}")
        with tempfile.TemporaryDirectory() as tmp:
            lib = Path(z.extract(libs[0], tmp))
            sass, ptx, how = cuda_targets(lib, os.environ.get("CUDA_HOME"))
    version = metadata["Version"]
    if not version.endswith("+" + facts["local_version"]) or f"+{facts['local_version']}-cp310-abi3-" not in wheel.name:
        raise WheelCheckError(f"{wheel.name}: version {version} / tag do not carry the build's local version "
                              f"+{facts['local_version']} and cp310-abi3")
    pins = [r for r in metadata.get_all("Requires-Dist") or [] if r.startswith("torch") and "extra ==" not in r]
    wanted = re.match(r"torch>=(\S+),<(\S+)", facts["torch_requirement"]).groups()
    if len(pins) != 1 or not all(f"{op}{v}" in pins[0] for op, v in zip((">=", "<"), wanted)):
        raise WheelCheckError(f"{wheel.name}: the torch requirement {pins} is not {facts['torch_requirement']}")
    if kind == "cpu":
        if facts["with_cuda"] or sass or ptx:
            raise WheelCheckError(f"{wheel.name}: a CPU wheel with GPU code (facts with_cuda={facts['with_cuda']}, "
                                  f"SASS {sorted(sass)}, PTX {sorted(ptx)})")
        return f"{wheel.name}: CPU kernels, {pins[0]}, no GPU code"
    want_sass, want_ptx = expected_targets(facts["cuda_archs"])
    if not facts["with_cuda"] or want_sass - sass or want_ptx - ptx:
        raise WheelCheckError(f"{wheel.name}: built for {facts['cuda_archs']}, but _C holds SASS "
                              f"{sorted(sass)} and PTX {sorted(ptx)} (read from {how}); missing SASS "
                              f"{sorted(want_sass - sass)}, PTX {sorted(want_ptx - ptx)}")
    return (f"{wheel.name}: CUDA {facts['torch_cuda']} (nvcc {facts['cuda_toolkit']}), {pins[0]}, SASS "
            f"{' '.join(f'sm_{a}' for a in sorted(sass))}, PTX {' '.join(f'compute_{a}' for a in sorted(ptx))} "
            f"(read from {how})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="the CPU-only wheel (REGOPS_NO_CUDA=1)")
    parser.add_argument("--cuda", action="store_true", help="the CUDA wheel for this torch's CUDA version")
    parser.add_argument("--out", default=str(REPO / "dist"), help="folder the wheels go to (default dist/)")
    parser.add_argument("--check-only", metavar="WHEEL", help="check an existing wheel, build nothing")
    parser.add_argument("--verify", action="store_true",
                        help="then verify each wheel in a fresh venv (scripts/verify_wheel.py)")
    args = parser.parse_args(argv)
    if args.check_only:
        wheel = Path(args.check_only)
        kind = "cuda" if "+cu" in wheel.name else "cpu"
        print(check(wheel, kind))
        return 0
    kinds = [k for k in ("cpu", "cuda") if getattr(args, k)]
    if not kinds:
        parser.error("say which wheel: --cpu, --cuda or both")
    import torch
    if "cuda" in kinds and not torch.version.cuda:
        parser.error(f"--cuda: this Python's torch {torch.__version__} is a CPU-only build; run the script with "
                     f"the interpreter of a CUDA torch")
    for kind in kinds:
        wheel = build(kind, Path(args.out))
        print(check(wheel, kind), flush=True)
        if args.verify:
            subprocess.run([sys.executable, str(HERE / "verify_wheel.py"), str(wheel)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
