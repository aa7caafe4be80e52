"""Shared test setup: Triton interpreted on CPU-only machines, seeds, the hypothesis profile, impl lists."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

import regops  # noqa: E402,F401
from regops import _loader  # noqa: E402

settings.register_profile("regops", derandomize=True, deadline=None, max_examples=25, print_blob=True)
settings.load_profile("regops")

torch.set_num_threads(min(2, os.cpu_count() or 1))


def cpu_impls(op_kernels, *, triton_dtypes_ok=True):
    """Impls that can run on CPU tensors here (reference excluded)."""
    out = []
    for impl in ("cpu", "triton"):
        if _loader.impl_available("test", impl, torch.device("cpu"), op_kernels)[0]:
            out.append(impl)
    return out


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def free_port() -> int:
    """A free localhost port for a spawned gloo group."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- GPU validation record (scripts/gpu_check.sh) ----
# A CUDA test marked @pytest.mark.gpu_validates("op", ...) and parametrized by `impl` vouches for those
# (op, impl) pairs. With REGOPS_GPU_VALIDATED_OUT set, the pairs whose every such test passed (and none
# failed or was skipped) are written there; impl=auto on CUDA picks only those.
_gpu_results = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu_validates(*ops): the (op, impl) pairs a CUDA test vouches for")


def pytest_runtest_makereport(item, call):
    marker = item.get_closest_marker("gpu_validates")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None or "impl" not in callspec.params:
        return
    if call.when == "call" or (call.when == "setup" and call.excinfo is not None):
        ok = call.excinfo is None
        for op in marker.args:
            key = (op, callspec.params["impl"])
            _gpu_results[key] = _gpu_results.get(key, True) and ok


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("REGOPS_GPU_VALIDATED_OUT")
    if not out:
        return
    lines = ["# op impl pairs that passed their tests on a real GPU; written by scripts/gpu_check.sh.",
             "# On CUDA tensors, impl=auto picks a CUDA or Triton kernel only when it is listed here.",
             f"# device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}, torch {torch.__version__}"]
    lines += [f"{op} {impl}" for (op, impl), ok in sorted(_gpu_results.items()) if ok]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
