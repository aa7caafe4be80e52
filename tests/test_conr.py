"""conr_loss: the reference against the official formulation (regops.bench), the check value, edge cases.
The fused kernels of issue 3 will be tested here against the same reference."""
import pytest
import torch

import regops
from regops.bench.baselines.conr_official import conr_official

CHECK = 13.150278


def check_inputs(dtype):
    r = torch.arange(8, dtype=dtype)[:, None]
    c = torch.arange(6, dtype=dtype)[None, :]
    f = torch.sin(0.37 * (6 * r + c) + 0.1)
    y = torch.tensor([20, 21, 35, 60, 20, 21, 35, 60], dtype=dtype)
    p = torch.tensor([22, 20.5, 34.5, 35, 21, 34.8, 59, 59.5], dtype=dtype)
    w = torch.tensor([1, 2, .5, 1.5, 1, 2, .5, 1.5], dtype=dtype)
    return f, y, p, w


@pytest.mark.smoke
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_check_value(dtype):
    f, y, p, w = check_inputs(dtype)
    got = regops.conr_loss(f, y, p, w, temperature=0.07, threshold=1.0, push=0.01, variant="agedb")
    assert got.dim() == 0 and got.dtype == dtype
    torch.testing.assert_close(got.item(), CHECK, rtol=1e-5 if dtype == torch.float32 else 1e-7, atol=0)
    # the official formulation gives the same
    torch.testing.assert_close(conr_official(f, y, p, w, temperature=0.07, threshold=1.0, push=0.01).item(), CHECK,
                               rtol=1e-5, atol=0)


def random_batch(n, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 6, (n,), generator=g).to(dtype)          # ties give positives
    p = y + torch.randn(n, generator=g, dtype=dtype) * 2.0         # near misses give negatives
    w = torch.rand(n, generator=g, dtype=dtype) + 0.5
    f = torch.randn(n, d, generator=g, dtype=dtype)
    return f, y, p, w


@pytest.mark.parametrize("variant", ["agedb", "nyud2"])
@pytest.mark.parametrize("n,d", [(3, 1), (16, 5), (64, 32), (127, 8)])
def test_reference_matches_official_formulation(variant, n, d):
    f, y, p, w = random_batch(n, d)
    tau, omega, push = regops.ops.conr.VARIANT_DEFAULTS[variant]
    omega = 1.0
    official = conr_official(f, y, p, w, temperature=tau, threshold=omega, push=push, variant=variant)
    ours = regops.conr_loss(f, y, p, w, threshold=omega, variant=variant)
    if torch.isnan(official):  # an anchor without positive: the official NaN, our documented 0 for it
        pytest.skip("official result is NaN for this batch")
    torch.testing.assert_close(ours, official, rtol=1e-10, atol=1e-12)
    fo = f.clone().requires_grad_(True)
    fr = f.clone().requires_grad_(True)
    conr_official(fo, y, p, w, temperature=tau, threshold=omega, push=push, variant=variant).backward()
    regops.conr_loss(fr, y, p, w, threshold=omega, variant=variant).backward()
    torch.testing.assert_close(fr.grad, fo.grad, rtol=1e-8, atol=1e-10)


def test_no_positive_anchor_gives_zero_not_nan():
    f = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0.0, 10.0, 20.0, 30.0])        # nobody within ω = 1: no positives
    p = torch.tensor([0.0, 0.5, 20.0, 30.5])
    assert torch.isnan(conr_official(f, y, p, None, temperature=0.07, threshold=1.0, push=0.01))
    assert regops.conr_loss(f, y, p).item() == 0.0


def test_gradient_flows_to_features_only_and_gradcheck():
    f, y, p, w = random_batch(12, 4)
    f.requires_grad_(True)
    y.requires_grad_(True)
    p.requires_grad_(True)
    regops.conr_loss(f, y, p, w).backward()
    assert f.grad is not None and y.grad is None and p.grad is None
    assert torch.autograd.gradcheck(lambda t: regops.conr_loss(t, y.detach(), p.detach(), w), (f.detach().requires_grad_(True),))


def test_multidim_labels_use_the_row_norm():
    f, y, p, _ = random_batch(10, 4)
    y2 = torch.stack([y, torch.zeros_like(y)], 1)
    p2 = torch.stack([p, torch.zeros_like(p)], 1)
    torch.testing.assert_close(regops.conr_loss(f, y2, p2), regops.conr_loss(f, y, p))


def test_large_temperature_range_is_stable():
    f, y, p, w = random_batch(32, 8, dtype=torch.float32)
    for tau in (0.01, 0.07, 1.0):
        assert torch.isfinite(regops.conr_loss(f, y, p, w, temperature=tau))
    assert torch.isfinite(regops.conr_loss(f.half(), y, p, w, temperature=0.07))  # e^{1/0.07} overflows fp16


def test_compile_fullgraph():
    torch._dynamo.reset()
    f, y, p, w = random_batch(16, 4, dtype=torch.float32)
    fn = torch.compile(lambda a: regops.conr_loss(a, y, p, w), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(fn(f), regops.conr_loss(f, y, p, w))


def test_module():
    f, y, p, w = random_batch(8, 3)
    torch.testing.assert_close(regops.nn.ConR(variant="nyud2")(f, y, p, w), regops.conr_loss(f, y, p, w, variant="nyud2"))


@pytest.mark.smoke
def test_bad_input():
    f, y, p, w = random_batch(6, 3)
    with pytest.raises(ValueError, match=r"regops\.conr_loss: preds: expected 6 rows"):
        regops.conr_loss(f, y, p[:5])
    with pytest.raises(ValueError, match=r"regops\.conr_loss: preds: expected the shape of labels"):
        regops.conr_loss(f, y, torch.stack([p, p], 1))
    with pytest.raises(ValueError, match=r"regops\.conr_loss: features: expected at least one row"):
        regops.conr_loss(f[:0], y[:0], p[:0])
    with pytest.raises(ValueError, match=r"regops\.conr_loss: features: expected a 2-D tensor"):
        regops.conr_loss(f[0], y, p)
    bad = f.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"regops\.conr_loss: features: expected finite values"):
        regops.conr_loss(bad, y, p)
    with pytest.raises(ValueError, match=r"regops\.conr_loss: temperature: expected a positive number"):
        regops.conr_loss(f, y, p, temperature=0.0)
    with pytest.raises(ValueError, match=r"regops\.conr_loss: variant: expected one of"):
        regops.conr_loss(f, y, p, variant="imdb2")
    with pytest.raises(RuntimeError, match=r"regops\.conr_loss: impl: expected an impl that can run here, got 'cuda'"):
        regops.conr_loss(f, y, p, impl="cuda")
