"""Shared test setup: Triton interpreted on CPU-only machines, seeds, the hypothesis profiles, impl lists, the GPU
validation record and its per-kernel summary (scripts/gpu_check.sh)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase, ReadOnlyDatabase  # noqa: E402

import regops  # noqa: E402,F401
from regops import _registry  # noqa: E402

# Fuzzing (hypothesis): every run generates the same examples, because pyproject's addopts pass
# --hypothesis-seed=0. The committed example database (tests/hypothesis-examples/) replays, before those, the
# failing examples that earlier runs found. Locally a new failure is saved there, so that it can be committed. CI
# only reads it, so a CI run never changes what the next one tests.
# `make fuzz` explores with a random seed and many more examples (profile "fuzz").
EXAMPLES = DirectoryBasedExampleDatabase(Path(__file__).resolve().parent / "hypothesis-examples")
settings.register_profile("regops", deadline=None, max_examples=25, print_blob=True,
                          database=ReadOnlyDatabase(EXAMPLES) if os.environ.get("CI") else EXAMPLES)
settings.register_profile("fuzz", parent=settings.get_profile("regops"), max_examples=400, database=EXAMPLES)
# The GPU check's quick tier (scripts/gpu_check.sh sets REGOPS_GPU_TIER=quick): fewer examples per property test.
settings.register_profile("gpu_quick", parent=settings.get_profile("regops"), max_examples=5)
settings.load_profile("gpu_quick" if os.environ.get("REGOPS_GPU_TIER") == "quick"
                      else os.environ.get("REGOPS_HYPOTHESIS_PROFILE", "regops"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_report_header(config):
    """Which regops the tests import: a wheel's verification (scripts/verify_wheel.py) checks it is the installed one."""
    from pathlib import Path
    from regops import _loader
    built = "compiled ops loaded" if _loader.has_compiled_ops() else f"reference only ({_loader.LOAD_ERROR})"
    return f"regops {regops.__version__} from {Path(regops.__file__).resolve().parent}; {built}"


def cpu_impls(op: str) -> list:
    """The kernel impls that can run the registered op `op` on CPU tensors here (reference excluded)."""
    return _registry.available_impls(op, "cpu", include_reference=False)


def triton_schema(schema: str):
    """The Triton op of the same role as the compiled op `schema` (registry), or None."""
    for engine in _registry.ENGINES:
        for role, name in engine.ops.get("cpu", {}).items():
            if name == schema:
                return engine.ops.get("triton", {}).get(role)
    return None


def need(op: str, impl: str, device: str = "cuda") -> None:
    """Skip unless `impl` can run the registered op `op` on `device` here."""
    ok, why = _registry.available(op, impl, torch.device(device))
    if not ok:
        pytest.skip(f"{op} {impl} on {device}: {why}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def gpu_test(ops, impls):
    """A CUDA test parametrized by `impl` over `impls` that vouches for the registered `ops` (gpu_validated.txt)."""
    marks = [requires_cuda, pytest.mark.cuda, pytest.mark.gpu_validates(*ops), pytest.mark.parametrize("impl", impls)]

    def decorate(fn):
        for mark in reversed(marks):
            fn = mark(fn)
        return fn
    return decorate


def free_port() -> int:
    """A free localhost port for a spawned gloo group."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- GPU validation record (scripts/gpu_check.sh) ----
# A CUDA test marked @pytest.mark.gpu_validates("op", ...) and parametrized by `impl` vouches for those
# (op, impl) pairs. With REGOPS_GPU_VALIDATED_OUT set, the pairs whose every selected such test passed are written
# there (a failure, a skip, or a selected test that never ran, as in an interrupted session, keeps a pair out);
# impl=auto on CUDA picks only those. With REGOPS_GPU_SUMMARY=1 the terminal summary has one line per registry
# (op, impl) of GPU_IMPLS. Tests marked gpu_quick form the GPU check's default tier (tests/test_gpu_tiers.py
# checks that it holds a vouching test for every such pair).
GPU_IMPLS = ("cuda", "triton")
_gpu_selected = {}  # (op, impl) -> nodeids of the selected tests that vouch for it, in collection order
_gpu_outcomes = {}  # (op, impl) -> {nodeid: (outcome, detail)}, outcome "passed", "failed" or "skipped"


def gpu_kernel_pairs() -> list:
    """Every (op, impl) with impl in GPU_IMPLS that the registry lists: the kernels a GPU check vouches for."""
    return [(name, impl) for name, spec in _registry.OPS.items() for impl in spec.impls() if impl in GPU_IMPLS]


def _vouches(item) -> list:
    """The (op, impl) pairs the test `item` vouches for: none without gpu_validates or an `impl` parameter."""
    marker = item.get_closest_marker("gpu_validates")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None or "impl" not in callspec.params:
        return []
    return [(op, callspec.params["impl"]) for op in marker.args]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu_validates(*ops): the (op, impl) pairs a CUDA test vouches for")
    config.addinivalue_line("markers", "gpu_quick: the GPU check's default tier (scripts/gpu_check.sh): a "
                                       "representative subset with a test of every CUDA and Triton kernel")
    if os.environ.get("REGOPS_GPU_SUMMARY") == "1":
        # gpu_check.sh ends a session that runs past its time with SIGTERM (SIGINT may be ignored where it runs):
        # stop as on Ctrl-C, so the summary and gpu_validated.txt are still written, the rest counted as not run
        import signal
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_collection_modifyitems(config, items):
    # A vouched-for op must be a registered op: auto looks its GPU validation up by that name.
    for item in items:
        marker = item.get_closest_marker("gpu_validates")
        unknown = [op for op in (marker.args if marker else ()) if op not in _registry.OPS]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: gpu_validates names ops missing from regops._registry.OPS: {unknown}")


def pytest_collection_finish(session):
    # session.items is the final selection (after -m and -k): what a pair's validation waits for
    for item in session.items:
        for key in _vouches(item):
            _gpu_selected.setdefault(key, []).append(item.nodeid)


def pytest_runtest_makereport(item, call):
    pairs = _vouches(item)
    if not pairs:
        return
    if call.excinfo is None:
        if call.when != "call":
            return
        outcome = ("passed", "")
    elif call.excinfo.errisinstance(pytest.skip.Exception):
        outcome = ("skipped", getattr(call.excinfo.value, "msg", "") or str(call.excinfo.value))
    else:
        outcome = ("failed", call.when)
    for key in pairs:
        results = _gpu_outcomes.setdefault(key, {})
        if results.get(item.nodeid, ("passed",))[0] == "passed":  # an error in teardown undoes a pass
            results[item.nodeid] = outcome


def gpu_pair_status(key) -> tuple:
    """(status, detail) of one (op, impl) in this session: "passed" only when every selected test that vouches for
    it passed; else "failed", "skipped" or "not run" (no selected test, or some never ran)."""
    selected = _gpu_selected.get(key, [])
    results = _gpu_outcomes.get(key, {})
    total = len(set(selected) | set(results))
    if total == 0:
        return "not run", "no selected test vouches for it"
    failed = [nodeid for nodeid, (outcome, _) in results.items() if outcome == "failed"]
    if failed:
        return "failed", f"{len(failed)} of {total}: {failed[0]}"
    skipped = [why for outcome, why in results.values() if outcome == "skipped"]
    if skipped:
        return "skipped", f"{len(skipped)} of {total}: {skipped[0]}"
    missing = [nodeid for nodeid in selected if nodeid not in results]
    if missing:
        return "not run", f"{len(missing)} of {total} did not run, e.g. {missing[0]}"
    return "passed", f"{total} test" + ("s" if total > 1 else "")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if os.environ.get("REGOPS_GPU_SUMMARY") != "1":
        return
    tr = terminalreporter
    tr.write_sep("=", "GPU kernels: one line per registry (op, impl)")
    counts = {}
    for op, impl in gpu_kernel_pairs():
        status, detail = gpu_pair_status((op, impl))
        counts[status] = counts.get(status, 0) + 1
        tr.write_line(f"kernel {op} {impl}: {status} ({detail})")  # scripts/gpu_check.sh greps "^kernel "
    tr.write_line("kernels: " + ", ".join(f"{counts[s]} {s}" for s in ("passed", "failed", "skipped", "not run")
                                          if s in counts))


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("REGOPS_GPU_VALIDATED_OUT")
    if not out:
        return
    keys = sorted(set(_gpu_selected) | set(_gpu_outcomes))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    tier = os.environ.get("REGOPS_GPU_TIER", "all selected tests")
    lines = ["# op impl pairs that passed their tests on a real GPU; written by scripts/gpu_check.sh.",
             "# On CUDA tensors, impl=auto picks a CUDA or Triton kernel only when it is listed here.",
             f"# device: {device}, torch {torch.__version__}, tier: {tier}"]
    lines += [f"{op} {impl}" for op, impl in keys if gpu_pair_status((op, impl))[0] == "passed"]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


def run_simd_and_portable(code: str):
    """Runs `code` (a script that saves its results with torch.save to sys.argv[1]) in two subprocesses: with the
    AVX2 loops the CPU kernels pick at run time, and with REGOPS_CPU_NO_SIMD=1 (the portable loops). Returns the two
    loaded results, (simd, portable)."""
    import os
    import subprocess
    import sys
    import tempfile
    base = {k: v for k, v in os.environ.items() if k != "REGOPS_CPU_NO_SIMD"}
    with tempfile.TemporaryDirectory() as d:
        paths = [os.path.join(d, "simd.pt"), os.path.join(d, "portable.pt")]
        for path, env in zip(paths, (base, dict(base, REGOPS_CPU_NO_SIMD="1"))):
            res = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=env,
                                 timeout=300)
            assert res.returncode == 0, res.stderr
        return tuple(torch.load(p) for p in paths)
