"""The build facts (setup.py writes regops/_build_facts.json next to _C) and what the loader makes of them
(regops/_loader.py): a build for another torch, or a _C that fails to load, is worded, warned about and left to
the reference impls, or refused with REGOPS_STRICT_BUILD=1. Each case imports regops in a fresh interpreter, so
this process's own _C stays as it loaded."""
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import regops
from regops import _loader

PACKAGE_ROOT = Path(regops.__file__).resolve().parents[1]  # the folder holding the regops package under test
REPO = Path(__file__).resolve().parents[1]
FACT_KEYS = {"regops_version", "torch_version", "torch_cuda", "cuda_toolkit", "cuda_archs", "python", "python_abi",
             "local_version", "torch_requirement", "platform",
             "commit", "with_cuda"}
MAJOR, MINOR = (int(p) for p in torch.__version__.split(".")[:2])
OTHER_TORCH = f"{MAJOR}.{MINOR + 1}.0"  # a torch this process is not
HAVE_C = importlib.util.find_spec("regops._C") is not None

# Imports regops with BuildMismatchWarning recorded, then runs an op (the reference, where _C is not loaded).
PROBE = r"""
import json, warnings, torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import regops
from regops import _loader
student, teacher = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
value = regops.kd_loss(student, teacher, T=2.0)
reference = regops.kd_loss(student, teacher, T=2.0, impl="reference")
print(json.dumps({
    "warnings": [str(w.message) for w in caught if issubclass(w.category, regops.BuildMismatchWarning)],
    "compiled": _loader.has_compiled_ops(), "load_error": _loader.LOAD_ERROR, "mismatch": _loader.BUILD_MISMATCH,
    "kd_close": torch.allclose(value, reference), "regops_file": regops.__file__,
}))
"""

# A regops._C whose loading fails as an extension built against another libtorch fails on dlopen.
BROKEN_C = r"""
import importlib.abc, importlib.machinery, sys
class BrokenBuild(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "regops._C" else None
    def create_module(self, spec):
        raise ImportError("/venv/lib/python3.11/site-packages/regops/_C.cpython-311-x86_64-linux-gnu.so: "
                          "undefined symbol: _ZN3c104impl3cow11cow_deleterEPv")
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, BrokenBuild())
"""
UNDEFINED = "undefined symbol: _ZN3c104impl3cow11cow_deleterEPv"


def _torch_and_cuda(version, cuda):
    return f"torch {version} (CUDA {cuda or 'none'})"


def _install_hint():
    cuda = torch.version.cuda
    if cuda:
        cu = "".join(cuda.split(".")[:2])
        return (f"pip install regops built for torch {MAJOR}.{MINOR} with CUDA {cuda}, the wheel versioned "
                f"+cu{cu}torch{MAJOR}.{MINOR}")
    return f"pip install regops built for torch {MAJOR}.{MINOR}, CPU only, the wheel versioned +cputorch{MAJOR}.{MINOR}"


def expected_message(built: str, failed: str = "") -> str:
    """The loader's wording, spelled out here so that a change of it is a visible change of this test."""
    return (f"regops was built for {built}; this process has {_torch_and_cuda(torch.__version__, torch.version.cuda)}."
            + (f" Loading its compiled ops failed: {failed}." if failed else "")
            + f" Install a regops build that matches ({_install_hint()}) or rebuild from source "
            "(pip install --no-build-isolation -e .).")


def facts(**changes) -> dict:
    """Facts of a build that matches this process (a CPU-only build of this torch), with `changes`."""
    base = {"regops_version": "0.1.0", "torch_version": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_toolkit": None, "cuda_archs": None, "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "platform": "linux-x86_64", "commit": None, "with_cuda": False}
    return {**base, **changes}


def run_python(code: str, tmp_path: Path, build_facts: dict | None = None, strict: bool = False,
               package_root: Path = PACKAGE_ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REGOPS_STRICT_BUILD", "REGOPS_BUILD_FACTS_PATH", "REGOPS_OPS_LIBRARY")}
    env["PYTHONPATH"] = os.pathsep.join([str(package_root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                                if p])
    path = tmp_path / "facts.json"  # absent unless written: a build older than the facts
    if build_facts is not None:
        path.write_text(json.dumps(build_facts))
    env["REGOPS_BUILD_FACTS_PATH"] = str(path)
    if strict:
        env["REGOPS_STRICT_BUILD"] = "1"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


def probe(tmp_path, build_facts=None, prelude="", package_root=PACKAGE_ROOT) -> dict:
    out = run_python(prelude + PROBE, tmp_path, build_facts, package_root=package_root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["regops_file"]).resolve().is_relative_to(package_root.resolve())
    return result


def test_facts_of_another_torch_warn_and_leave_the_reference(tmp_path):
    other = facts(torch_version=OTHER_TORCH, torch_cuda="12.6", with_cuda=True)
    result = probe(tmp_path, other)
    message = expected_message(_torch_and_cuda(OTHER_TORCH, "12.6"))
    assert result["warnings"] == [message + " The reference impls run instead (REGOPS_STRICT_BUILD=1 makes this an "
                                            "error)."]
    assert result["load_error"] == result["mismatch"] == message
    assert result["compiled"] is False  # _C was not even imported
    assert result["kd_close"]


def test_facts_of_another_torch_are_an_import_error_when_strict(tmp_path):
    out = run_python("import regops", tmp_path, facts(torch_version=OTHER_TORCH), strict=True)
    assert out.returncode != 0
    message = expected_message(_torch_and_cuda(OTHER_TORCH, torch.version.cuda))
    assert out.stderr.strip().splitlines()[-1] == "ImportError: " + message
    assert "BuildMismatchWarning" not in out.stderr


def test_failing_load_is_worded_and_falls_back(tmp_path):
    """_C fails as one built against another libtorch does (an undefined symbol): the message names the torch of
    the facts and this one and the failure in one line, and no traceback is printed."""
    result = probe(tmp_path, facts(), prelude=BROKEN_C)
    failed = f"/venv/lib/python3.11/site-packages/regops/_C.cpython-311-x86_64-linux-gnu.so: {UNDEFINED}"
    message = expected_message(_torch_and_cuda(torch.__version__, torch.version.cuda), failed)
    assert result["load_error"] == message and result["mismatch"] is None
    assert len(result["warnings"]) == 1 and result["warnings"][0].startswith(message)
    assert result["compiled"] is False and result["kd_close"]


def test_failing_load_without_facts_is_worded_too(tmp_path):
    """A build older than the facts: nothing to compare, but the failure is still worded."""
    result = probe(tmp_path, None, prelude=BROKEN_C)
    assert result["load_error"].startswith("regops was built for an unknown torch (the build wrote no build facts); "
                                           "this process has ")
    assert UNDEFINED in result["load_error"] and len(result["warnings"]) == 1
    assert result["compiled"] is False and result["kd_close"]


def test_failing_load_is_an_import_error_without_the_loaders_traceback_when_strict(tmp_path):
    out = run_python(BROKEN_C + "import regops", tmp_path, facts(), strict=True)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("ImportError: regops was built for torch ")
    assert "During handling of the above exception" not in out.stderr  # the raw ImportError is not chained
    assert out.stderr.count(UNDEFINED) == 1  # only inside the worded message


def _package_copy(tmp_path: Path) -> Path:
    """regops's Python files in a folder of their own, with no _C and no facts."""
    root = tmp_path / "site"
    shutil.copytree(Path(regops.__file__).parent, root / "regops",
                    ignore=shutil.ignore_patterns("_C*", "_build_facts.json", "__pycache__"))
    return root


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_real_undefined_symbol_is_worded(tmp_path):
    """A real dlopen failure: a _C whose PyInit needs a symbol that no library loaded here defines."""
    root = _package_copy(tmp_path)
    src = tmp_path / "c.c"
    src.write_text("extern void regops_symbol_of_another_torch(void);\n"
                   "void *PyInit__C(void) { regops_symbol_of_another_torch(); return 0; }\n")
    so = root / "regops" / ("_C" + importlib.machinery.EXTENSION_SUFFIXES[0])
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True, capture_output=True, timeout=120)
    result = probe(tmp_path, facts(), package_root=root)
    failed = f"{so}: undefined symbol: regops_symbol_of_another_torch"  # dlopen's own words
    assert result["load_error"] == expected_message(_torch_and_cuda(torch.__version__, torch.version.cuda), failed)
    assert result["compiled"] is False and result["kd_close"] and len(result["warnings"]) == 1


def test_no_build_no_facts_is_quiet(tmp_path):
    """A source tree without a build: reference only, as before the facts, without a warning."""
    result = probe(tmp_path, None, package_root=_package_copy(tmp_path))
    assert result["warnings"] == [] and result["compiled"] is False and result["mismatch"] is None


@pytest.mark.skipif(not HAVE_C, reason="no compiled regops._C here")
@pytest.mark.parametrize("torch_cuda", ["same", "other"])
def test_matching_facts_load_quietly(tmp_path, torch_cuda):
    """The same torch: _C loads and nothing is said (a CPU-only build, whatever CUDA its torch had)."""
    result = probe(tmp_path, facts(torch_cuda=torch.version.cuda if torch_cuda == "same" else "11.8"))
    assert result["warnings"] == [] and result["compiled"] is True and result["load_error"] is None


def test_what_counts_as_a_match():
    this_cuda = torch.version.cuda
    assert _loader.facts_match_this_torch(facts())
    assert _loader.facts_match_this_torch(facts(torch_version=f"{MAJOR}.{MINOR}.99+whatever"))
    assert not _loader.facts_match_this_torch(facts(torch_version=OTHER_TORCH))
    assert not _loader.facts_match_this_torch(facts(torch_version=f"{MAJOR + 1}.{MINOR}.0"))
    other_cuda_major = "11.8" if not (this_cuda or "").startswith("11.") else "12.8"
    assert not _loader.facts_match_this_torch(facts(with_cuda=True, torch_cuda=other_cuda_major))
    assert _loader.facts_match_this_torch(facts(with_cuda=False, torch_cuda=other_cuda_major))  # links no CUDA
    if this_cuda:
        minor_other = this_cuda.split(".")[0] + ".99"
        assert _loader.facts_match_this_torch(facts(with_cuda=True, torch_cuda=minor_other))  # CUDA minor: compatible


def test_info_prints_the_facts_and_the_mismatch(tmp_path):
    out = run_python("from regops.__main__ import info; info()", tmp_path, facts(torch_version=OTHER_TORCH))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"build facts ({tmp_path / 'facts.json'}): regops 0.1.0 built for torch {OTHER_TORCH}" in out.stdout
    assert "build mismatch: " + expected_message(_torch_and_cuda(OTHER_TORCH, torch.version.cuda)) in out.stdout


def test_setup_writes_every_fact(tmp_path):
    """setup.py's build_facts(), run without building (setuptools.setup replaced): a CPU-only build's facts."""
    code = (f"import json, runpy, setuptools\nsetuptools.setup = lambda **kwargs: None\n"
            f"ns = runpy.run_path({str(REPO / 'setup.py')!r}, run_name='__main__')\n"
            f"ns['write_build_facts']({str(tmp_path / 'written.json')!r})\n")
    env = dict(os.environ, REGOPS_NO_CUDA="1", REGOPS_BUILD_DIR=str(tmp_path / "build"))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    written = json.loads((tmp_path / "written.json").read_text())
    assert set(written) == FACT_KEYS
    assert written["torch_version"] == torch.__version__ and written["torch_cuda"] == torch.version.cuda
    assert written["with_cuda"] is False and written["cuda_toolkit"] is None and written["cuda_archs"] is None
    assert written["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert written["commit"] is None or len(written["commit"]) == 40
    assert _loader.facts_match_this_torch(written)


@pytest.mark.skipif(not _loader.BUILD_FACTS_FILE.exists(), reason="no build facts here (a source tree, no build)")
def test_the_real_builds_facts_are_complete():
    written = _loader.read_build_facts(_loader.BUILD_FACTS_FILE)
    assert written is not None and set(written) == FACT_KEYS
    assert isinstance(written["with_cuda"], bool)
    assert (written["cuda_toolkit"] is None) == (written["cuda_archs"] is None) == (not written["with_cuda"])
