"""Builds regops._C: C++ CPU kernels always; CUDA kernels when nvcc and a CUDA torch are found.

Environment:
  REGOPS_NO_CUDA=1      CPU-only build, even where a toolkit exists.
  REGOPS_FORCE_CUDA=1   build CUDA even if detection fails (the toolkit must still exist).
  TORCH_CUDA_ARCH_LIST  CUDA archs. Default: those of torch's own wheels for this CUDA version (WHEEL_CUDA_ARCHS),
                        less what this nvcc cannot build; set it (e.g. 9.0) for a quick build for one GPU.
  MAX_JOBS              parallel compile jobs (torch's ninja build). NVCC_THREADS: nvcc's --threads (archs of
                        one .cu file compiled in parallel).
  REGOPS_BUILD_DIR      build folder (default build/), so two venvs can build side by side. The object files
                        stay there (build_temp), so a wheel built after an editable install only relinks.
Never decided by torch.cuda.is_available(): GPU-less build hosts still build CUDA.

The version carries a local label that says what the build is for, as PyTorch's own indexes do:
0.1.0+cu130torch2.14 (CUDA 13.0, torch 2.14) or 0.1.0+cputorch2.13 (CPU kernels only). The metadata pins torch to
the minor version the build was made against (libtorch's C++ ABI changes between minor versions). The Python
side uses CPython's limited API (csrc/python_module.cpp), so the wheel is tagged abi3 and serves Python 3.10+.

The build writes its facts (torch, CUDA, archs, Python, commit) to regops/_build_facts.json next to the built _C,
so that the loader (regops/_loader.py) can name a mismatch with the running torch instead of failing on it.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = re.search(r'^version = "([^"]+)"', open(os.path.join(HERE, "pyproject.toml")).read(), re.M).group(1)


def toolkit_from_nvcc():
    """The toolkit folder that nvcc really uses. nvcc on PATH may be a wrapper script, in which case
    torch's guess (its parent folder) is wrong and the link fails on -lcudart; `nvcc --dryrun` prints TOP=."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cu")
        open(src, "w").write("int main() { return 0; }\n")
        try:
            out = subprocess.run([nvcc, "--dryrun", "-c", src, "-o", os.path.join(tmp, "probe.o")],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    m = re.search(r"TOP=(\S+)", out.stdout + out.stderr)
    return os.path.realpath(m.group(1)) if m else None


def want_cuda():
    if os.environ.get("REGOPS_NO_CUDA", "0") == "1":
        return False
    if not os.environ.get("CUDA_HOME"):
        top = toolkit_from_nvcc()
        if top:
            os.environ["CUDA_HOME"] = top  # must be set before torch.utils.cpp_extension is imported
    if os.environ.get("REGOPS_FORCE_CUDA", "0") == "1":
        return True
    import torch
    return bool(torch.version.cuda) and shutil.which("nvcc") is not None and bool(os.environ.get("CUDA_HOME"))


# The archs of torch's own wheels per CUDA major.minor (the last one also as PTX, for GPUs newer than the list).
WHEEL_CUDA_ARCHS = {
    "12.6": "7.0;7.5;8.0;8.6;9.0+PTX",  # torch also builds 5.0 and 6.0; regops starts at Volta
    "12.8": "7.0;7.5;8.0;8.6;9.0;10.0;12.0+PTX",
    "12.9": "7.0;7.5;8.0;8.6;9.0;10.0;12.0+PTX",
    "13.0": "7.5;8.0;8.6;9.0;10.0;11.0;12.0+PTX",
}
FALLBACK_CUDA_ARCHS = "7.5;8.0;8.6;9.0+PTX"  # a CUDA version the table does not know yet


def nvcc_output(flag):
    """The stdout of `nvcc <flag>` (the nvcc of torch's CUDA_HOME, else the one on PATH), or None if it cannot run."""
    from torch.utils.cpp_extension import CUDA_HOME
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    try:
        return subprocess.run([nvcc, flag], capture_output=True, text=True, timeout=60).stdout
    except (OSError, TypeError, subprocess.SubprocessError):
        return None


def nvcc_arches():
    """The compute capabilities this nvcc can build ("9.0", ...), from `nvcc --list-gpu-arch`; None if unknown."""
    out = nvcc_output("--list-gpu-arch")
    found = {f"{int(m.group(1)) // 10}.{int(m.group(1)) % 10}" for m in re.finditer(r"compute_(\d+)", out or "")}
    return found or None


def wheel_cuda_archs(cuda_version, supported):
    """torch's wheel arch list for this CUDA version, less the archs this nvcc lacks; the newest kept one
    carries +PTX (PTX of the newest arch is JIT-compiled on newer GPUs)."""
    major_minor = ".".join(str(cuda_version).split(".")[:2])
    archs = [a.replace("+PTX", "") for a in WHEEL_CUDA_ARCHS.get(major_minor, FALLBACK_CUDA_ARCHS).split(";")]
    if supported is not None:
        archs = [a for a in archs if a in supported]
    if not archs:
        raise RuntimeError(f"regops setup.py: no CUDA arch of {WHEEL_CUDA_ARCHS.get(major_minor)} is supported by "
                           f"this nvcc ({sorted(supported or ())}); set TORCH_CUDA_ARCH_LIST")
    archs[-1] += "+PTX"
    return ";".join(archs)


WITH_CUDA = want_cuda()

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

if WITH_CUDA and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    os.environ["TORCH_CUDA_ARCH_LIST"] = wheel_cuda_archs(torch.version.cuda, nvcc_arches())


def torch_major_minor():
    return tuple(int(p) for p in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())


def local_version():
    """The wheel's local version label: what the build is for (cu130torch2.14, cputorch2.13)."""
    major, minor = torch_major_minor()
    if WITH_CUDA:
        cuda_major, cuda_minor = torch.version.cuda.split(".")[:2]
        return f"cu{cuda_major}{cuda_minor}torch{major}.{minor}"
    return f"cputorch{major}.{minor}"


def torch_requirement():
    """The torch this build can load into: the same minor version (libtorch's C++ ABI is per minor version)."""
    major, minor = torch_major_minor()
    return f"torch>={major}.{minor},<{major}.{minor + 1}"


PYTHON_ABI = "cp310"  # abi3 from this Python on: Py_LIMITED_API below, the wheel tag in setup()


BUILD_BASE = os.environ.get("REGOPS_BUILD_DIR", "build")
CONFIG_DIR = os.path.join(HERE, BUILD_BASE, "config")  # per build folder: side-by-side builds don't share it


def write_build_config():
    """Build facts for `python -m regops info`, as a header (no shell quoting of macro values)."""
    lines = ["// Generated by setup.py; not tracked.", "#pragma once", f'#define REGOPS_VERSION "{VERSION}"']
    if WITH_CUDA:
        lines += ["#define REGOPS_WITH_CUDA 1",
                  f'#define REGOPS_CUDA_ARCHS "{os.environ["TORCH_CUDA_ARCH_LIST"]}"',
                  f'#define REGOPS_CUDA_VERSION "{torch.version.cuda}"']
    path = os.path.join(CONFIG_DIR, "regops", "build_config.h")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not os.path.exists(path) or open(path).read() != text:
        open(path, "w").write(text)


BUILD_FACTS_NAME = "_build_facts.json"  # regops/_loader.py reads it under this name


def nvcc_version():
    """The version of the nvcc that compiles the CUDA kernels ("13.0.88"), or None when it cannot be asked."""
    out = nvcc_output("--version") or ""
    m = re.search(r"release [\d.]+, V([\d.]+)", out) or re.search(r"release ([\d.]+)", out)
    return m.group(1) if m else None


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None  # None: an sdist, no git


def build_facts():
    """What this build was made with; the loader compares torch and CUDA with the running process's."""
    return {
        "regops_version": VERSION,
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_toolkit": nvcc_version() if WITH_CUDA else None,
        "cuda_archs": os.environ["TORCH_CUDA_ARCH_LIST"] if WITH_CUDA else None,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "python_abi": f"{PYTHON_ABI}-abi3",
        "local_version": local_version(),
        "torch_requirement": torch_requirement(),
        "platform": sysconfig.get_platform(),
        "commit": git_commit(),
        "with_cuda": WITH_CUDA,
    }


def write_build_facts(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(build_facts(), f, indent=2)
        f.write("\n")


class BuildExtWithFacts(BuildExtension):
    """torch's BuildExtension, then the build facts next to the built _C: in the build folder (wheels and
    non-editable installs take it from there) and, for an editable or --inplace build, in python/regops too.

    The facts follow the .so: they are rewritten only when _C was rebuilt, so an up-to-date _C that was skipped
    after a torch upgrade keeps the facts of the torch it was really built against (and the loader says so)."""

    def finalize_options(self):
        super().finalize_options()
        # One object folder per build folder, whatever command runs the build: an editable install (which
        # otherwise builds in a fresh temp folder each time) and a later `pip wheel` share it, so ninja
        # recompiles only what changed.
        self.build_temp = os.path.join(HERE, BUILD_BASE, "objects")

    def run(self):
        super().run()
        ext = next(e for e in self.extensions if e.name == "regops._C")
        built = os.path.join(self.build_lib, self.get_ext_filename(self.get_ext_fullname(ext.name)))
        facts = os.path.join(os.path.dirname(built), BUILD_FACTS_NAME)
        if not os.path.exists(facts) or os.path.getmtime(built) > os.path.getmtime(facts):
            write_build_facts(facts)
        if self.inplace:  # setuptools copied _C next to the sources: the facts go with it, always (as _C does)
            package_dir = self.get_finalized_command("build_py").get_package_dir("regops")
            shutil.copyfile(facts, os.path.join(package_dir, BUILD_FACTS_NAME))
            # Python imports _C.cpython-3XX-*.so before _C.abi3.so: an older build's copy would shadow this one.
            for stale in glob.glob(os.path.join(package_dir, "_C.*.so")):
                if os.path.basename(stale) != os.path.basename(built):
                    os.remove(stale)


def extension():
    write_build_config()
    rel = lambda pattern: sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))
    sources = ["csrc/ops.cpp", "csrc/python_module.cpp"] + rel("csrc/cpu/*.cpp")
    # -fno-math-errno: lets loops with sqrt vectorize (nothing reads errno).
    # -fopenmp: at::parallel_for's OpenMP body is inline, so it runs in parallel only if this code is built
    # with OpenMP. At run time libgomp.so.1 resolves to the copy torch already loaded: one thread pool.
    # Py_LIMITED_API: only python_module.cpp includes Python.h; the limited API makes _C an abi3 module.
    abi3 = f"-DPy_LIMITED_API=0x{int(PYTHON_ABI[2]):02X}{int(PYTHON_ABI[3:]):02X}0000"
    cxx = ["-O3", "-fno-math-errno", "-fopenmp", "-DREGOPS_HAVE_BUILD_CONFIG", abi3]
    kwargs = dict(include_dirs=[CONFIG_DIR, os.path.join(HERE, "csrc", "include")], extra_link_args=["-fopenmp"],
                  py_limited_api=True)
    if WITH_CUDA:
        sources += rel("csrc/cuda/*.cu") + rel("csrc/cuda/*.cpp")
        nvcc = ["-O3", "-DREGOPS_HAVE_BUILD_CONFIG", "--expt-relaxed-constexpr"]
        if os.environ.get("NVCC_THREADS"):
            nvcc += ["--threads", os.environ["NVCC_THREADS"]]
        return CUDAExtension("regops._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)
    return CppExtension("regops._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)


setup(
    name="regops",
    version=f"{VERSION}+{local_version()}",
    install_requires=[torch_requirement()],
    package_dir={"": "python"},
    packages=find_packages("python"),
    # Not _build_facts.json: build_py would copy python/regops's (another build's) into the build folder. Wheels
    # carry the one BuildExtWithFacts writes there: everything in the build folder goes into the wheel.
    package_data={"regops": ["gpu_validated.txt"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtWithFacts},
    options={"build": {"build_base": BUILD_BASE}, "bdist_wheel": {"py_limited_api": PYTHON_ABI}},
)
