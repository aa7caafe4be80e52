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
