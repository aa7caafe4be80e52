"""process_group: 2 processes on gloo (CPU). After DDP-style gradient averaging, every rank's parameter
gradient equals the single-process gradient of the loss over the concatenated batch, and the mean of the
ranks' losses equals that loss. One spawn checks every op and every CPU impl, to keep the cost to one start."""
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD, N_LOCAL, D_IN, D = 2, 13, 5, 7
OPS = ["agedb", "nyud2", "supcon", "focal", "supcon_float_labels"]


def _data():
    g = torch.Generator().manual_seed(0)
    n = WORLD * N_LOCAL
    x = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (n,), generator=g).double()
    p = y + 2 * torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    lab = torch.randint(0, 4, (n,), generator=g)
    return x, y, p, w, lab


def _model():
    torch.manual_seed(1)
    return torch.nn.Linear(D_IN, D).double()


def _loss(op, f, y, p, w, lab, impl, group=None):
    import regops
    if op in ("agedb", "nyud2"):
        return regops.conr_loss(f, y, p, w, threshold=1.0, variant=op, impl=impl, process_group=group)
    if op == "supcon_float_labels":  # ids are made from the labels of every rank
        return regops.supcon_loss(f, lab.double() * 0.5 + 7, temperature=0.3, impl=impl, process_group=group)
    fn = regops.supcon_loss if op == "supcon" else regops.focal_supcon_loss
    return fn(f, lab, temperature=0.3, impl=impl, process_group=group)


def _single(op):
    x, y, p, w, lab = _data()
    model = _model()
    out = _loss(op, model(x), y, p, w, lab, "reference")
    out.backward()
    return out.detach(), [q.grad.clone() for q in model.parameters()]


def _worker(rank, port, impls, failures):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x, y, p, w, lab = _data()
        sl = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        for op in OPS:
            want_v, want_g = _single(op)
            for impl in impls:
                model = _model()
                out = _loss(op, model(x[sl]), y[sl], p[sl], w[sl], lab[sl], impl, dist.group.WORLD)
                out.backward()
                mean_v = out.detach().clone()
                dist.all_reduce(mean_v)
                mean_v /= WORLD
                for q in model.parameters():  # what DDP does to the gradients
                    dist.all_reduce(q.grad)
                    q.grad /= WORLD
                try:
                    torch.testing.assert_close(mean_v, want_v, rtol=1e-9, atol=1e-11)
                    for q, g in zip(model.parameters(), want_g):
                        torch.testing.assert_close(q.grad, g, rtol=1e-8, atol=1e-10)
                except AssertionError as exc:
                    failures.append(f"rank {rank} {op} {impl}: {exc}")
    except Exception as exc:  # reported through the shared list: the exit below must not hide it
        failures.append(f"rank {rank}: {type(exc).__name__}: {exc}")
    finally:
        dist.barrier()
        dist.destroy_process_group()
    # gloo's threads sometimes abort the interpreter's teardown here ("terminate called without an active
    # exception", with the reference impl too); the results are already in `failures`, so skip the teardown.
    os._exit(0)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
@pytest.mark.skipif(sys.platform != "linux", reason="spawned gloo workers: Linux only here")
def test_ddp_gradients_equal_the_concatenated_batch():
    from conftest import cpu_impls, free_port
    impls = ["reference"] + [i for i in cpu_impls("conr_loss") if i == "cpu"]
    with mp.Manager() as manager:
        failures = manager.list()
        mp.spawn(_worker, args=(free_port(), impls, failures), nprocs=WORLD, join=True)
        failures = list(failures)
    assert not failures, "\n".join(failures)


@pytest.mark.smoke
def test_unequal_rank_sizes_raise(monkeypatch):
    """Ranks must hold the same number of rows; the error names the sizes."""
    import regops
    from regops.ops import _contrastive
    monkeypatch.setattr(_contrastive, "_gather", lambda t, g, grad: torch.tensor([3, 4]))
    monkeypatch.setattr(_contrastive, "_world", lambda g: (2, 0))
    with pytest.raises(ValueError, match=r"regops\.supcon_loss: features: expected the same number of rows on every "
                                         r"rank of process_group, got rows per rank \[3, 4\]"):
        regops.supcon_loss(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), process_group=object())
