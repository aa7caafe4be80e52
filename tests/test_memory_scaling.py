"""The streamed ops keep peak memory O(N): measured at two sizes, 4× apart, the growth is linear, not quadratic.

Each measurement is a fresh subprocess. It builds the inputs, then runs forward + backward, and reports how much
the peak RSS (ru_maxrss) rose during that call. At the larger size one N×M float32 matrix would take 16× the
smaller size's; a streamed kernel's extra memory grows at most 4× (its per-row vectors) plus allocator slack.
"""
import subprocess
import sys

import pytest

from conftest import cpu_impls

SLACK = 24 * 2**20  # allocator and thread-pool noise between two fresh processes

SCRIPTS = {
    "ot.sinkhorn": (
        "n = {n}\n"
        "x = torch.randn(n, 3, requires_grad=True); y = torch.randn(n + 7, 3)\n"
        "run = lambda: regops.ot.sinkhorn(x, y, eps=0.5, max_iter=4, tol=0, impl='cpu').reg_ot_cost.backward()\n",
        (8_000, 32_000)),
    "monge_gap": (
        "n = {n}\n"
        "x = torch.randn(n, 2); t = (x * 1.5 + 0.1).requires_grad_()\n"
        "run = lambda: regops.monge_gap(x, t, eps=0.5, max_iter=4, tol=0, impl='cpu').backward()\n",
        (4_000, 16_000)),
    "conr_loss": (
        "n = {n}\n"
        "f = torch.randn(n, 32, requires_grad=True); y = torch.randint(0, 50, (n,)).float(); p = y + torch.randn(n)\n"
        "run = lambda: regops.conr_loss(f, y, p, impl='cpu').backward()\n",
        (3_000, 12_000)),
}


def _extra_peak_bytes(body: str) -> int:
    code = ("import resource, torch, regops\ntorch.manual_seed(0)\n" + body +
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "run()\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("op", SCRIPTS)
def test_peak_memory_grows_linearly(op):
    if "cpu" not in cpu_impls(op):
        pytest.skip(f"{op}: no CPU kernel in this build")
    body, (small, large) = SCRIPTS[op]
    extra_small = _extra_peak_bytes(body.format(n=small))
    extra_large = _extra_peak_bytes(body.format(n=large))
    ratio = large // small
    dense_large = large * large * 4  # one float32 N×M (or N×N) matrix at the larger size
    assert extra_large <= ratio * extra_small + SLACK, (
        f"{op}: peak grew by {extra_small / 2**20:.1f} MiB at N={small} and {extra_large / 2**20:.1f} MiB at "
        f"N={large}: more than linear ({ratio}×)")
    assert extra_large < dense_large / 16, (
        f"{op}: {extra_large / 2**20:.1f} MiB at N={large}, near one dense matrix ({dense_large / 2**20:.0f} MiB)")
