"""Ops called concurrently give the serial results: from several Python threads at once, and inside DataLoader
workers started by fork and by spawn.

The ops chosen are those whose CPU kernels share state across calls:
- the output cache (csrc/cpu/output_cache.cpp, a mutex-guarded free list, ≥ 1 MiB buffers): the orthonormality
  penalty's gradient and the spectral norms' gradients;
- the streamed kernels on torch's intra-op pool: Sinkhorn and ConR.

Results must be bitwise equal to a serial run: the CPU kernels are deterministic for a fixed thread count, and
every call here runs with the same one.

Fork copies only the forking thread. A lock held by another thread at that moment would stay locked in the child,
so the cache holds its lock across fork() (pthread_atfork). The fork test calls the ops from the workers after
the parent has already used the cache from threads.
"""
import threading

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import regops

from conftest import cpu_impls

THREADS = 4
CALLS_PER_THREAD = 3


def _orthonormal(seed):
    g = torch.Generator().manual_seed(seed)
    # 1.25 MiB gradient (from the output cache); 32 rows: the kernel's own loops, not BLAS (p < 48)
    x = torch.randn(160, 32, 64, generator=g, requires_grad=True)
    loss = regops.orthonormal_penalty(x, side="rows", impl="cpu")
    loss.backward()
    return loss.detach(), x.grad


def _spectral(seed):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(512, 640, generator=g).requires_grad_() for _ in range(2)]  # 1.25 MiB gradients
    penalty, sigmas, _ = regops.spectral_norm_penalty(weights, n_power_iterations=2,
                                                      generator=torch.Generator().manual_seed(seed), impl="cpu")
    penalty.backward()
    return penalty.detach(), sigmas.detach(), *[w.grad for w in weights]


def _sinkhorn(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 3, generator=g, requires_grad=True)
    y = torch.randn(257, 3, generator=g)
    out = regops.ot.sinkhorn(x, y, eps=0.1, max_iter=20, tol=0, impl="cpu")
    out.reg_ot_cost.backward()
    return out.reg_ot_cost.detach(), x.grad


def _conr(seed):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(200, 32, generator=g, requires_grad=True)
    labels = torch.rand(200, 1, generator=g).round(decimals=1)
    preds = torch.rand(200, 1, generator=g).round(decimals=1)
    loss = regops.conr_loss(feats, labels, preds, impl="cpu")
    loss.backward()
    return loss.detach(), feats.grad


CASES = {"orthonormal_penalty": _orthonormal, "spectral_norm_penalty": _spectral, "ot.sinkhorn": _sinkhorn,
         "conr_loss": _conr}


def _need_cpu_kernel(op):
    if "cpu" not in cpu_impls(op):
        pytest.skip(f"{op}: no CPU kernel in this build")


def _assert_bitwise(got, want, what):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g, w), f"{what}: differs from the serial result (max |Δ| {(g - w).abs().max().item():.3g})"


@pytest.mark.parametrize("op", CASES)
def test_threads_give_the_serial_results(op):
    _need_cpu_kernel(op)
    fn = CASES[op]
    seeds = [100 + i for i in range(THREADS * CALLS_PER_THREAD)]
    serial = {s: fn(s) for s in seeds}
    results, errors = {}, []
    start = threading.Barrier(THREADS)

    def worker(mine):
        try:
            start.wait()  # all threads call at once: the cache's free list and the pool are contended
            for s in mine:
                results[s] = fn(s)
        except BaseException as exc:  # noqa: BLE001 - reported below, with the thread's seeds
            errors.append((mine, exc))

    threads = [threading.Thread(target=worker, args=(seeds[i::THREADS],)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), f"{op}: a thread did not finish in 300 s (deadlock?)"
    assert not errors, errors
    for s in seeds:
        _assert_bitwise(results[s], serial[s], f"{op} seed {s} from a thread")


class OpDataset(Dataset):
    """Item i: the op's outputs for seed i, computed inside the worker. Module level, so spawn can pickle it."""

    def __init__(self, op, n):
        self.op, self.n = op, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return CASES[self.op](i)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("op", ["orthonormal_penalty", "spectral_norm_penalty"])
def test_dataloader_workers_give_the_serial_results(op, start_method):
    _need_cpu_kernel(op)
    n = 4
    torch.set_num_threads(1)  # what DataLoader workers run with: the serial reference uses the same count
    try:
        serial = [CASES[op](i) for i in range(n)]
    finally:
        torch.set_num_threads(2)
    # Warm the cache from threads in the parent first: fork copies its state (and, unguarded, a held lock).
    threads = [threading.Thread(target=CASES[op], args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx = torch.multiprocessing.get_context(start_method)
    loader = DataLoader(OpDataset(op, n), batch_size=None, num_workers=2, multiprocessing_context=ctx,
                        timeout=240)
    got = list(loader)
    for i, (g, w) in enumerate(zip(got, serial)):
        _assert_bitwise(g, w, f"{op} item {i} from a {start_method} worker")
