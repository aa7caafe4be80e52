"""Verifies a regops wheel as a user gets it: a fresh venv that holds nothing of this checkout.

    python3 scripts/verify_wheel.py dist/regops-0.1.0+cputorch2.13-cp310-abi3-linux_x86_64.whl [--keep]

In a new venv (in a temp folder), it installs the wheel with its `test` extra (pip resolves the torch its
metadata pins), then, from a working directory outside the checkout:
  1. imports regops and checks that it is the installed copy, with its compiled ops loaded and no build mismatch;
  2. runs `python -m regops info`;
  3. runs `python -m regops bench --quick --op sorsa_ortho_loss` (the bench ships in the package);
  4. runs the smoke subset of this checkout's tests (pytest -m smoke tests/) against the installed package:
     nothing puts python/ on sys.path, and the report header says which regops the tests imported.
Each step prints its time. Exit status 0 only if every step passed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

IMPORT_CHECK = r"""
import sys, regops
from pathlib import Path
from regops import _loader
where = Path(regops.__file__).resolve()
assert Path(sys.prefix).resolve() in where.parents, f"regops imported from {where}, not from the venv {sys.prefix}"
assert _loader.BUILD_MISMATCH is None, _loader.BUILD_MISMATCH
assert _loader.has_compiled_ops(), f"the compiled ops did not load: {_loader.LOAD_ERROR}"
print(f"regops {regops.__version__} from {where.parent}; compiled ops loaded")
"""


def step(name: str, cmd: list, cwd: Path, env: dict) -> None:
    t0 = time.monotonic()
    print(f"--- {name}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)
    print(f"--- {name}: ok in {time.monotonic() - t0:.0f} s", flush=True)


def verify(wheel: Path, python: str, keep: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="regops-wheel-"))
    try:
        venv, work = tmp / "venv", tmp / "work"
        work.mkdir()
        # A clean environment: no PYTHONPATH (it could point at this checkout's python/), no REGOPS_* settings.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("REGOPS_")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        py = str(venv / "bin" / "python")
        step("venv", [python, "-m", "venv", str(venv)], work, env)
        step("install", [py, "-m", "pip", "install", "-q", f"{wheel.resolve()}[test]"], work, env)
        step("import", [py, "-c", IMPORT_CHECK], work, env)
        step("info", [py, "-m", "regops", "info"], work, env)
        step("bench", [py, "-m", "regops", "bench", "--quick", "--op", "sorsa_ortho_loss",
                       "--csv", str(work / "bench.csv")], work, env)
        step("smoke tests", [py, "-m", "pytest", "-q", "-m", "smoke", "-p", "no:cacheprovider",
                             "--timeout=600", str(REPO / "tests")], work, env)
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", nargs="+", type=Path)
    parser.add_argument("--python", default=getattr(sys, "_base_executable", sys.executable),
                        help="the interpreter the venv is made from (default: this one's base, not its venv)")
    parser.add_argument("--keep", action="store_true", help="keep the venv and its working folder")
    args = parser.parse_args(argv)
    for wheel in args.wheels:
        if not wheel.is_file():
            parser.error(f"wheel: expected a .whl file, got {wheel} (build one with `make wheels`)")
        t0 = time.monotonic()
        print(f"=== verifying {wheel.name}", flush=True)
        verify(wheel, args.python, args.keep)
        print(f"=== {wheel.name}: verified in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
