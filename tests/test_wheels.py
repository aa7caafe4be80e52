"""The wheel tooling: setup.py's arch lists, local versions and torch pin; the fatbinary reader that checks a
wheel's archs; the wheel checker; the build matrix's plan. (The wheels themselves are built and verified in a
fresh venv by `make test-cpu` and `make verify-wheel-cuda`, CI stages.)"""
import importlib.util
import json
import os
import runpy
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import regops
from regops import _loader

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
pytestmark = pytest.mark.skipif(not (SCRIPTS / "build_wheels.py").exists(),
                                reason="the release scripts are not here (an installed package's tests)")


def _script(name):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def setup_ns(tmp_path_factory):
    """setup.py's functions, run without building (setuptools.setup replaced), as a CPU-only build sees them."""
    import setuptools
    saved_setup, saved_env = setuptools.setup, dict(os.environ)
    setuptools.setup = lambda **kwargs: None
    os.environ.update(REGOPS_NO_CUDA="1", REGOPS_BUILD_DIR=str(tmp_path_factory.mktemp("build")))
    try:
        return runpy.run_path(str(REPO / "setup.py"), run_name="setup")
    finally:
        setuptools.setup = saved_setup
        os.environ.clear()
        os.environ.update(saved_env)


def test_wheel_archs_follow_torch_and_are_gated_on_nvcc(setup_ns):
    archs = setup_ns["wheel_cuda_archs"]
    assert archs("12.8", None) == "7.0;7.5;8.0;8.6;9.0;10.0;12.0+PTX"
    assert archs("13.0.88", None) == "7.5;8.0;8.6;9.0;10.0;11.0;12.0+PTX"
    # an nvcc without 11.0 and 12.0: they are dropped and the newest kept arch carries the PTX
    assert archs("13.0", {"7.5", "8.0", "8.6", "9.0", "10.0"}) == "7.5;8.0;8.6;9.0;10.0+PTX"
    assert archs("14.2", None) == setup_ns["FALLBACK_CUDA_ARCHS"]
    with pytest.raises(RuntimeError, match="set TORCH_CUDA_ARCH_LIST"):
        archs("12.8", {"5.0"})


def test_local_version_and_torch_pin_name_this_torch(setup_ns):
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    assert setup_ns["local_version"]() == f"cputorch{major}.{minor}"  # REGOPS_NO_CUDA=1 in the fixture
    assert setup_ns["torch_requirement"]() == f"torch>={major}.{minor},<{major}.{minor + 1}"
    assert setup_ns["PYTHON_ABI"] == "cp310"


def test_installed_version_carries_the_build_facts_local_version():
    facts = _loader.BUILD_FACTS
    if facts is None or regops.__version__.endswith("+source"):
        pytest.skip("no installed build here")
    assert regops.__version__ == f"{facts['regops_version']}+{facts['local_version']}"


def test_expected_targets_reads_torch_arch_lists():
    targets = _script("cuda_targets")
    assert targets.expected_targets("8.0;9.0+PTX") == ({80, 90}, {90})
    assert targets.expected_targets("7.5 12.0+PTX") == ({75, 120}, {120})


def _fatbin(entries):
    """A synthetic .nv_fatbin blob: the header layout the reader parses, entries of (kind, arch, payload size)."""
    body = b""
    for kind, arch, size in entries:
        header = struct.pack("<HHIQ", kind, 0x101, 64, size) + b"\0" * 12 + struct.pack("<I", arch)
        body += header.ljust(64, b"\0") + b"\xab" * size
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_fatbin_reader_finds_sass_and_ptx_archs():
    targets = _script("cuda_targets")
    blob = _fatbin([(2, 80, 40), (2, 90, 8), (1, 90, 24)]) + b"\0" * 8 + _fatbin([(2, 120, 16), (1, 120, 8)])
    assert targets.fatbin_targets(blob) == ({80, 90, 120}, {90, 120})
    assert targets.fatbin_targets(b"") == (set(), set())


def _built_library():
    if not _loader.has_compiled_ops() or _loader._C is None:
        return None
    return Path(_loader._C.__file__)


def test_the_built_library_holds_every_arch_of_its_build_facts():
    library, facts = _built_library(), _loader.BUILD_FACTS
    if library is None or facts is None:
        pytest.skip("no compiled _C with build facts here")
    targets = _script("cuda_targets")
    sass, ptx, how = targets.cuda_targets(library)
    if not facts["with_cuda"]:
        assert sass == ptx == set(), how
        return
    want_sass, want_ptx = targets.expected_targets(facts["cuda_archs"])
    assert want_sass <= sass and want_ptx <= ptx, (facts["cuda_archs"], sorted(sass), sorted(ptx), how)


def _fake_wheel(tmp_path, *, local="cputorch2.13", pin="torch<2.14,>=2.13", with_cuda=False, so=None, archs=None):
    facts = {"regops_version": "0.1.0", "local_version": local, "torch_requirement": "torch>=2.13,<2.14",
             "with_cuda": with_cuda, "cuda_archs": archs or ("9.0+PTX" if with_cuda else None), "torch_cuda": "13.0",
             "cuda_toolkit": "13.0.88"}
    wheel = tmp_path / f"regops-0.1.0+{local}-cp310-abi3-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(so or Path(shutil.which("true")).resolve(), "regops/_C.abi3.so")  # any ELF: no .nv_fatbin
        z.writestr("regops/_build_facts.json", json.dumps(facts))
        for name in ("regops/bench/harness.py", "regops/bench/cases/sinkhorn.py", "regops/gpu_validated.txt"):
            z.writestr(name, "")
        z.writestr(f"regops-0.1.0+{local}.dist-info/METADATA",
                   f"Metadata-Version: 2.4\nName: regops\nVersion: 0.1.0+{local}\nRequires-Dist: {pin}\n"
                   'Requires-Dist: numpy; extra == "test"\n')
    return wheel


def test_wheel_check_accepts_a_consistent_cpu_wheel(tmp_path):
    build_wheels = _script("build_wheels")
    assert "no GPU code" in build_wheels.check(_fake_wheel(tmp_path), "cpu")


@pytest.mark.parametrize("bad, message", [
    (dict(pin="torch>=2.11"), "torch requirement"),
    (dict(with_cuda=True), "CPU wheel with GPU code"),
])
def test_wheel_check_rejects_inconsistent_cpu_wheels(tmp_path, bad, message):
    build_wheels = _script("build_wheels")
    with pytest.raises(build_wheels.WheelCheckError, match=message):
        build_wheels.check(_fake_wheel(tmp_path, **bad), "cpu")


def test_wheel_check_rejects_a_cuda_wheel_without_gpu_code(tmp_path):
    build_wheels = _script("build_wheels")
    wheel = _fake_wheel(tmp_path, local="cu130torch2.13", with_cuda=True)
    with pytest.raises(build_wheels.WheelCheckError, match=r"missing SASS \[90\], PTX \[90\]"):
        build_wheels.check(wheel, "cuda")


def test_wheel_check_accepts_the_real_cuda_library(tmp_path):
    library, facts = _built_library(), _loader.BUILD_FACTS
    if library is None or facts is None or not facts["with_cuda"]:
        pytest.skip("no CUDA build here")
    build_wheels = _script("build_wheels")
    wheel = _fake_wheel(tmp_path, local="cu130torch2.13", with_cuda=True, so=library, archs=facts["cuda_archs"])
    summary = build_wheels.check(wheel, "cuda")
    assert all(f"sm_{a}" in summary for a in _script("cuda_targets").expected_targets(facts["cuda_archs"])[0])


def test_build_matrix_plan_covers_every_torch_and_cuda():
    out = subprocess.run([sys.executable, str(SCRIPTS / "build_matrix.py"), "--plan"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    matrix = _script("build_matrix")
    for torch_mm, cudas in matrix.TORCH_CUDA.items():
        assert f"\ncputorch{torch_mm}  " in out.stdout
        for cuda in cudas:
            assert f"\ncu{cuda.replace('.', '')}torch{torch_mm}  " in out.stdout
    one = subprocess.run([sys.executable, str(SCRIPTS / "build_matrix.py"), "--plan", "--only", "cu128",
                          "--torch", "2.14"], capture_output=True, text=True, timeout=120)
    assert one.returncode == 0 and one.stdout.startswith("1 wheels"), one.stdout + one.stderr
    assert "--index-url https://download.pytorch.org/whl/cu128 torch>=2.14,<2.15" in one.stdout
    bad = subprocess.run([sys.executable, str(SCRIPTS / "build_matrix.py"), "--plan", "--torch", "1.0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--torch: expected one of" in bad.stderr
