"""supcon_loss and focal_supcon_loss against loop-by-loop transcriptions of their formulas."""
import math

import pytest
import torch

import regops


def loop_supcon(f, y, tau):
    z = torch.nn.functional.normalize(f, dim=1)
    n, total = len(y), 0.0
    for i in range(n):
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i)
        pos = [p for p in range(n) if p != i and y[p] == y[i]]
        if pos:
            total += -sum(float(z[i] @ z[p]) / tau - math.log(denom) for p in pos) / len(pos)
    return total / n


def loop_focal(f, y, tau):
    z = torch.nn.functional.normalize(f, dim=1)
    n, total, anchors = len(y), 0.0, 0
    for i in range(n):
        denom = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n) if k != i)
        pos = [j for j in range(n) if j != i and y[j] == y[i]]
        anchors += bool(pos)
        for j in pos:
            logp = float(z[i] @ z[j]) / tau - math.log(denom)
            total += (1 - math.exp(logp)) * logp / n
    return -total / max(anchors, 1)


@pytest.mark.smoke
@pytest.mark.parametrize("n,d,classes", [(1, 3, 1), (2, 1, 1), (9, 4, 3), (33, 7, 5), (16, 8, 16)])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_match_loop_transcriptions(n, d, classes, tau):
    g = torch.Generator().manual_seed(n)
    f = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    assert math.isclose(regops.supcon_loss(f, y, temperature=tau).item(), loop_supcon(f, y, tau), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(regops.focal_supcon_loss(f, y, temperature=tau).item(), loop_focal(f, y, tau), rel_tol=1e-9,
                        abs_tol=1e-12)


@pytest.mark.parametrize("fn", [regops.supcon_loss, regops.focal_supcon_loss])
def test_gradcheck_compile_and_low_precision(fn):
    f = torch.randn(10, 5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1, 2, 2, 0, 3, 3, 1])
    assert torch.autograd.gradcheck(lambda t: fn(t, y, temperature=0.2), (f,))
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: fn(t, y), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(f.float()), fn(f.float(), y))
    assert torch.isfinite(fn(f.detach().half(), y, temperature=0.07))  # e^{1/0.07} overflows fp16


@pytest.mark.parametrize("fn", [regops.supcon_loss, regops.focal_supcon_loss])
@pytest.mark.parametrize("labels", [[0], [0, 1, 2], [5, 5, 5]])
def test_degenerate_batches_have_finite_gradients(fn, labels):
    """N = 1, no positive anywhere, all positive: finite values and gradients."""
    f = torch.randn(len(labels), 4, requires_grad=True)
    loss = fn(f, torch.tensor(labels))
    (g,) = torch.autograd.grad(loss, f)
    assert torch.isfinite(loss) and torch.isfinite(g).all()


@pytest.mark.smoke
@pytest.mark.parametrize("fn", [regops.supcon_loss, regops.focal_supcon_loss])
def test_bad_input(fn):
    name = fn.__name__
    f = torch.randn(4, 3)
    with pytest.raises(ValueError, match=rf"regops\.{name}: labels: expected shape \(4,\)"):
        fn(f, torch.zeros(3))
    with pytest.raises(ValueError, match=rf"regops\.{name}: features: expected at least one row"):
        fn(f[:0], torch.zeros(0))
    with pytest.raises(ValueError, match=rf"regops\.{name}: temperature: expected a positive finite number"):
        fn(f, torch.zeros(4), temperature=-1.0)
    bad = f.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match=rf"regops\.{name}: features: expected finite values"):
        fn(bad, torch.zeros(4))
    with pytest.raises(RuntimeError, match=rf"regops\.{name}: impl: .*the cuda kernel takes CUDA tensors"):
        fn(f, torch.zeros(4), impl="cuda")
