"""SORSALinear, apply_sorsa and the training step that SORSA's official trainer runs."""
import pytest
import torch
from torch import nn

import regops
from regops.nn import SORSALinear, apply_sorsa
from regops.nn.sorsa import top_singular_triplets


@pytest.mark.smoke
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [None, 16.0])
def test_from_linear_preserves_output(dtype, alpha):
    lin = nn.Linear(48, 40, dtype=dtype)
    layer = SORSALinear.from_linear(lin, rank=8, alpha=alpha)
    x = torch.randn(7, 3, 48, dtype=dtype)
    y, y0 = layer(x), lin(x)
    rel = ((y - y0).norm() / y0.norm()).item()
    assert rel < (2e-6 if dtype == torch.float32 else 1e-12)
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert all(p.requires_grad for p in (layer.A, layer.S, layer.B))
    # the factors are the top singular triplets: orthonormal A rows and B columns at init
    assert regops.sorsa_ortho_loss([layer.A], [layer.B]).item() < (1e-5 if dtype == torch.float32 else 1e-12)


def test_factor_shapes_and_official_layout():
    lin = nn.Linear(30, 20, bias=False, dtype=torch.float64)
    layer = SORSALinear.from_linear(lin, rank=5)
    assert layer.A.shape == (5, 30) and layer.S.shape == (5,) and layer.B.shape == (20, 5) and layer.bias is None
    U, S, Vh = torch.linalg.svd(lin.weight.detach(), full_matrices=False)
    torch.testing.assert_close(layer.S.detach(), S[:5])
    torch.testing.assert_close(layer.weight + (layer.B * layer.S) @ layer.A, lin.weight.detach())


def test_merge_unmerge_roundtrip():
    lin = nn.Linear(24, 16, dtype=torch.float64)
    layer = SORSALinear.from_linear(lin, rank=4, alpha=8.0)
    with torch.no_grad():
        layer.S.add_(0.3)  # make the adapter non-trivial
    x = torch.randn(5, 24, dtype=torch.float64)
    y = layer(x)
    w0 = layer.weight.detach().clone()
    layer.merge()
    torch.testing.assert_close(layer(x), y)
    layer.merge()  # idempotent
    layer.unmerge()
    torch.testing.assert_close(layer.weight.detach(), w0)
    torch.testing.assert_close(layer(x), y)


def test_svd_lowrank_close_to_exact_top_r():
    torch.manual_seed(0)
    # a decaying spectrum, as trained weights have
    U, _ = torch.linalg.qr(torch.randn(256, 256, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(192, 192, dtype=torch.float64))
    s = 1.0 / (1 + torch.arange(192, dtype=torch.float64)) ** 1.5
    w = U[:, :192] * s @ V.T
    B, S, A = top_singular_triplets(w, 16, "svd")
    Bl, Sl, Al = top_singular_triplets(w, 16, "svd_lowrank")
    assert (Sl - S).abs().max() / S[0] < 1e-3
    exact = (B * S) @ A
    approx = (Bl * Sl) @ Al
    assert (approx - exact).norm() / exact.norm() < 1e-2


def test_apply_sorsa_targets_and_freezes():
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(16, 16))
    model.add_module("act", nn.GELU())
    model.add_module("mlp", nn.Linear(16, 8))
    model.add_module("v_proj", nn.Linear(16, 16))
    apply_sorsa(model, rank=4, target_modules=["q_proj", "v_proj"])
    assert isinstance(model.q_proj, SORSALinear) and isinstance(model.v_proj, SORSALinear)
    assert isinstance(model.mlp, nn.Linear) and not isinstance(model.mlp, SORSALinear)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"q_proj.A", "q_proj.S", "q_proj.B", "v_proj.A", "v_proj.S", "v_proj.B", "mlp.weight", "mlp.bias"}
    with pytest.raises(ValueError, match=r"regops\.apply_sorsa: target_modules: expected at least one matching"):
        apply_sorsa(nn.Sequential(nn.ReLU()), rank=2)
    with pytest.raises(ValueError, match=r"regops\.SORSALinear: rank: expected an int in \[1, 8\]"):
        SORSALinear.from_linear(nn.Linear(8, 8), rank=9)


def test_training_step_like_official_trainer():
    """task backward, clip, sorsa_regularize_, AdamW: only A, S, B change and the ortho term acts on A, B."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
    apply_sorsa(model, rank=4)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = torch.randn(16, 32), torch.randn(16, 4)
    nn.functional.mse_loss(model(x), y).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    value = regops.sorsa_regularize_(model, gamma=4e-4, lr=1e-3)
    As = [m.A for m in model.modules() if isinstance(m, SORSALinear)]
    Bs = [m.B for m in model.modules() if isinstance(m, SORSALinear)]
    torch.testing.assert_close(value, regops.sorsa_ortho_loss(As, Bs).detach())
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n])
