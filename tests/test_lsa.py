"""LSA (khalooei/LSA layersustainabilityanalysis.py, LayerSustainabilityAnalysis): layer_relative_error against
the official numpy measure transcribed, per-sample, gradients, compile, dtypes, fuzzing; most_vulnerable_layers
and layerwise_penalty on small models (hooks removed on success and on error, ranking, reused modules, gradients);
bad input."""
import re

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import regops
from regops import layer_relative_error
from regops.lsa import layerwise_penalty, most_vulnerable_layers

from tolerances import assert_close

OFFICIAL_PROBES = ["ReLU", "ELU", "LeakyReLU"]  # LayerSustainabilityAnalysis.selected_probs


def official_measure(clean: torch.Tensor, adv: torch.Tensor) -> float:
    """representation_comparisons L160-168: numpy copies, the 2-norm of the whole flattened arrays."""
    c = clean.detach().cpu().numpy()
    a = adv.detach().cpu().numpy()
    return np.linalg.norm(c - a) / np.linalg.norm(c)


def official_measures(model, x, x_adv):
    """The official loop: hooks on modules whose class-name string is a probe, outputs in forward order, the
    measure per output. (Here the handles are kept and removed, so that the test leaves the model clean.)"""
    outs = []
    handles = [m.register_forward_hook(lambda m, i, o: outs.append(o))
               for m in model.modules() if m.__str__().split("(")[0] in OFFICIAL_PROBES]
    try:
        with torch.no_grad():
            outs.clear()
            model(x)
            clean = list(outs)
            outs.clear()
            model(x_adv)
            adv = list(outs)
    finally:
        for h in handles:
            h.remove()
    return [official_measure(c, a) for c, a in zip(clean, adv)]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act1 = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ELU())
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * 4 * 4, 8)
        self.act3 = nn.LeakyReLU(0.1)
        self.out = nn.Linear(8, 3)
        self.fail = False

    def forward(self, x):
        h = self.block(self.act1(self.conv(x)))
        if self.fail:
            raise RuntimeError("boom")
        return self.out(self.act3(self.fc(self.flat(h))))


class Reused(nn.Module):
    """One ReLU called twice per forward."""
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


def all_hooks_removed(model):
    return all(not m._forward_hooks for m in model.modules())


def data(seed=0, B=4, scale=0.3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, 8, 8, generator=g, dtype=dtype)
    return x, x + scale * torch.randn(x.shape, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------------------------- the measure

@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (7, 10), (1,), (), (2, 1, 1, 1)])
def test_matches_official_numpy_measure(shape):
    g = torch.Generator().manual_seed(1)
    c = torch.randn(shape, generator=g, dtype=torch.float64) + 0.1
    a = c + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
    got = layer_relative_error(c, a)
    assert got.shape == () and got.dtype == torch.float64
    assert_close(got, torch.tensor(official_measure(c, a), dtype=torch.float64))


def test_per_sample_and_eps():
    g = torch.Generator().manual_seed(2)
    c = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    a = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    got = layer_relative_error(c, a, per_sample=True)
    assert got.shape == (5,)
    assert_close(got, torch.tensor([official_measure(c[i], a[i]) for i in range(5)], dtype=torch.float64))
    num, den = (c - a).flatten().norm(), c.flatten().norm()
    assert_close(layer_relative_error(c, a, eps=0.5), num / (den + 0.5))
    assert layer_relative_error(c[:0], a[:0], per_sample=True).shape == (0,)


def test_zero_denominator():
    z = torch.zeros(3, 4)
    a = torch.ones(3, 4)
    msg = ("regops.layer_relative_error: acts_clean: expected an activation of nonzero norm (the denominator of the "
           "relative error; pass eps > 0 to allow zero), got norm 0")
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        layer_relative_error(z, a)
    with pytest.raises(ValueError, match="^" + re.escape(msg + " (sample 1)") + "$"):
        layer_relative_error(torch.stack([a[0], z[0], a[0]]), a, per_sample=True)
    assert_close(layer_relative_error(z, a, eps=1e-3), torch.tensor(12 ** 0.5 / 1e-3))
    assert layer_relative_error(z, z, eps=1e-3).item() == 0.0


def test_gradcheck():
    c = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    for kw in ({}, {"per_sample": True}, {"eps": 0.3}, {"per_sample": True, "eps": 0.1}):
        assert torch.autograd.gradcheck(lambda x, y: layer_relative_error(x, y, **kw), (c, a))
    # identical activations: the norm's subgradient 0 at 0, not nan
    same_c, same_a = c.detach().clone().requires_grad_(), c.detach().clone().requires_grad_()
    for kw in ({}, {"per_sample": True}):
        gc, ga = torch.autograd.grad(layer_relative_error(same_c, same_a, **kw).sum(), (same_c, same_a))
        assert torch.equal(gc, torch.zeros_like(gc)) and torch.equal(ga, torch.zeros_like(ga))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    c, a = torch.randn(4, 16).to(dtype), torch.randn(4, 16).to(dtype)
    got = layer_relative_error(c, a)
    assert got.dtype == torch.float32
    assert_close(got, torch.tensor(official_measure(c.double(), a.double())).float(), torch.float32)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(backend):
    c = torch.randn(4, 3, 5, requires_grad=True)
    a = torch.randn(4, 3, 5, requires_grad=True)
    modes = [{"per_sample": True}] if backend == "inductor" else [{}, {"per_sample": True}, {"eps": 0.1}]
    for kw in modes:
        fn = torch.compile(lambda x, y: layer_relative_error(x, y, **kw), fullgraph=True, backend=backend)
        got, want = fn(c, a), layer_relative_error(c, a, **kw)
        assert_close(got, want, torch.float32)
        for p, q in zip(torch.autograd.grad(got.sum(), (c, a)), torch.autograd.grad(want.sum(), (c, a))):
            assert_close(p, q, torch.float32)


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), per_sample=st.booleans(),
       eps=st.sampled_from([0.0, 1e-3, 1.0]), seed=st.integers(0, 2**16))
def test_fuzz(shape, per_sample, eps, seed):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(shape, generator=g, dtype=torch.float64) + 0.5
    a = torch.randn(shape, generator=g, dtype=torch.float64)
    got = layer_relative_error(c, a, per_sample=per_sample, eps=eps)
    if per_sample:
        expected = torch.stack([(c[i] - a[i]).flatten().norm() / (c[i].flatten().norm() + eps)
                                for i in range(shape[0])])
    else:
        expected = (c - a).flatten().norm() / (c.flatten().norm() + eps)
    assert_close(got, expected)


def test_layer_relative_error_bad_input():
    c, a = torch.randn(4, 3), torch.randn(4, 3)
    cases = [
        (ValueError, "regops.layer_relative_error: acts_adv: expected shape (4, 3) (as acts_clean), got shape (3, 4)",
         lambda: layer_relative_error(c, a.t())),
        (TypeError, "regops.layer_relative_error: acts_clean: expected a floating-point tensor, got int64",
         lambda: layer_relative_error(c.long(), a)),
        (TypeError, "regops.layer_relative_error: acts_adv: expected dtype float32 (as acts_clean), got float64",
         lambda: layer_relative_error(c, a.double())),
        (TypeError, "regops.layer_relative_error: acts_adv: expected a torch.Tensor, got list",
         lambda: layer_relative_error(c, a.tolist())),
        (ValueError, "regops.layer_relative_error: eps: expected a finite number >= 0, got -1.0",
         lambda: layer_relative_error(c, a, eps=-1.0)),
        (TypeError, "regops.layer_relative_error: per_sample: expected a bool, got int 1",
         lambda: layer_relative_error(c, a, per_sample=1)),
        (ValueError, "regops.layer_relative_error: acts_clean: expected a batch (B, ...) for per_sample=True, "
                     "got a 0-D tensor",
         lambda: layer_relative_error(c[0, 0], a[0, 0], per_sample=True)),
        (ValueError, "regops.layer_relative_error: acts_adv: expected finite values, got nan at index (0, 1)",
         lambda: layer_relative_error(c, a.index_put((torch.tensor(0), torch.tensor(1)), torch.tensor(float("nan"))))),
        (RuntimeError, "regops.layer_relative_error: impl: expected an impl that can run here, got 'triton': "
                       "regops.layer_relative_error has no triton kernel",
         lambda: layer_relative_error(c, a, impl="triton")),
    ]
    for kind, msg, call in cases:
        with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
            call()


# ---------------------------------------------------------------------------------------------- on a model

def test_most_vulnerable_layers_ranks_the_official_measure():
    torch.manual_seed(0)
    model = Net().double().eval()
    x, x_adv = data()
    official = official_measures(model, x, x_adv)
    names = ["act1", "block.1", "act3"]  # forward order
    assert len(official) == 3
    ranked = sorted(zip(names, official), key=lambda s: -s[1])
    got = most_vulnerable_layers(model, x, x_adv, 3)
    assert [n for n, _ in got] == [n for n, _ in ranked]
    for (_, v), (_, w) in zip(got, ranked):
        assert isinstance(v, float) and v == pytest.approx(w, rel=1e-12)
    assert most_vulnerable_layers(model, x, x_adv, 1) == got[:1]
    assert all_hooks_removed(model)
    assert not model.training  # the mode is left as it is
    model.train()
    most_vulnerable_layers(model, x, x_adv, 2)
    assert model.training


def test_module_types_and_ties():
    model = Net().double()
    x, x_adv = data(1)
    got = most_vulnerable_layers(model, x, x_adv, 2, module_types=nn.Conv2d)
    assert sorted(n for n, _ in got) == ["block.0", "conv"]
    # equal errors keep forward order
    seq = nn.Sequential(nn.Identity(), nn.ReLU(), nn.ReLU())
    x = torch.rand(3, 4) + 1
    assert [n for n, _ in most_vulnerable_layers(seq, x, x * 1.1, 2)] == ["1", "2"]
    # subclasses match (isinstance), the class name does not matter
    class MyReLU(nn.ReLU):
        pass
    seq = nn.Sequential(nn.Linear(4, 4), MyReLU())
    assert [n for n, _ in most_vulnerable_layers(seq, x, x * 1.1, 1)] == ["1"]


def test_reused_module_is_recorded_per_call():
    model = Reused().double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x_adv = x + 0.5 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    got = dict(most_vulnerable_layers(model, x, x_adv, 2))
    assert set(got) == {"act", "act#1"}
    with torch.no_grad():
        h1, h1a = model.act(model.fc1(x)), model.act(model.fc1(x_adv))
        h2, h2a = model.act(model.fc2(h1)), model.act(model.fc2(h1a))
    assert got["act"] == pytest.approx(official_measure(h1, h1a), rel=1e-12)
    assert got["act#1"] == pytest.approx(official_measure(h2, h2a), rel=1e-12)
    pen = layerwise_penalty(model, x, x_adv, ["act#1", "act"], gamma=[2.0, 0.5])
    assert_close(pen, torch.tensor(2 * got["act#1"] + 0.5 * got["act"], dtype=torch.float64))
    with pytest.raises(ValueError, match="^" + re.escape(
            "regops.lsa.layerwise_penalty: layers: expected a call made by the forward (module 'act' was called 2 "
            "times), got 'act#2'") + "$"):
        layerwise_penalty(model, x, x_adv, ["act#2"])
    assert all_hooks_removed(model)


def test_recorded_outputs_are_copies():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act = nn.Linear(4, 4), nn.ReLU(inplace=True)

        def forward(self, x):
            h = self.act(self.fc(x))
            return h.mul_(3)  # an in-place op after the hooked one

    model = InPlace().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    x_adv = x + 0.3
    (name, v), = most_vulnerable_layers(model, x, x_adv, 1)
    with torch.no_grad():
        expected = official_measure(torch.relu(model.fc(x)), torch.relu(model.fc(x_adv)))
    assert name == "act" and v == pytest.approx(expected, rel=1e-12)


def test_hooks_removed_after_an_error():
    model = Net().double()
    x, x_adv = data()
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        most_vulnerable_layers(model, x, x_adv, 1)
    assert all_hooks_removed(model)
    with pytest.raises(RuntimeError, match="boom"):
        layerwise_penalty(model, x, x_adv, ["act1", "conv"])
    assert all_hooks_removed(model)
    model.fail = False
    layerwise_penalty(model, x, x_adv, ["act1"])
    assert all_hooks_removed(model)


def test_layerwise_penalty_value_and_gradient():
    torch.manual_seed(1)
    model = Net().double()
    x, x_adv = data(2)
    layers = ["act1", "block.1", "fc"]
    gammas = [0.5, 1.0, 2.0]
    pen, (out, out_adv) = layerwise_penalty(model, x, x_adv, layers, gamma=gammas, return_outputs=True)
    assert pen.shape == () and pen.requires_grad
    assert_close(out, model(x))
    assert_close(out_adv, model(x_adv))
    # the README's LR with the official measure, on outputs taken by hand
    with torch.no_grad():
        c1, a1 = model.act1(model.conv(x)), model.act1(model.conv(x_adv))
        c2, a2 = model.block(c1), model.block(a1)
        c3, a3 = model.fc(model.flat(c2)), model.fc(model.flat(a2))
    expected = sum(g * official_measure(c, a) for g, (c, a) in zip(gammas, [(c1, a1), (c2, a2), (c3, a3)]))
    assert pen.item() == pytest.approx(expected, rel=1e-12)
    assert_close(layerwise_penalty(model, x, x_adv, layers, gamma=2.0),
                 2 * layerwise_penalty(model, x, x_adv, layers))
    # the gradient reaches the parameters before the chosen layers (not the later ones) and x_adv
    model.zero_grad()
    x_adv = x_adv.clone().requires_grad_()
    layerwise_penalty(model, x, x_adv, ["block.1"]).backward()
    assert model.conv.weight.grad.abs().sum() > 0 and model.block[0].weight.grad.abs().sum() > 0
    assert model.fc.weight.grad is None and x_adv.grad.abs().sum() > 0
    assert all_hooks_removed(model)


def test_layerwise_penalty_gradcheck():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.ELU(), nn.Linear(5, 4), nn.LeakyReLU(0.2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    x_adv = (x + 0.2 * torch.randn(4, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda xa: layerwise_penalty(model, x, xa, ["1", "3"], gamma=[1.0, 0.3]),
                                    (x_adv,))


def test_dead_layer_and_call_mismatch():
    seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.ELU())
    with torch.no_grad():
        seq[0].weight.zero_()
        seq[0].bias.fill_(-1.0)  # the ReLU's output is all zero
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="^" + re.escape(
            "regops.lsa.most_vulnerable_layers: layer '1' on x: expected an activation of nonzero norm (the "
            "denominator of the relative error; pass eps > 0 to allow zero), got norm 0") + "$"):
        most_vulnerable_layers(seq, x, x + 1, 1)
    assert most_vulnerable_layers(seq, x, x + 1, 2, eps=1e-6) == [("1", 0.0), ("2", 0.0)]

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            h = self.act(x)
            return self.act(h) if x.sum() > 0 else h

    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match="^" + re.escape(
            "regops.lsa.most_vulnerable_layers: x_adv: expected a forward that makes the hooked calls of x's "
            "(2 calls; call 1: 'act#1'), got 1 calls; call 1: no call") + "$"):
        most_vulnerable_layers(Branchy(), x, -x, 1)


def test_model_functions_bad_input():
    model = Net().double()
    x, x_adv = data()
    mvl, pen = "regops.lsa.most_vulnerable_layers", "regops.lsa.layerwise_penalty"
    cases = [
        (ValueError, f"{mvl}: k: expected an int in [1, 3] (the recorded layer calls), got 4",
         lambda: most_vulnerable_layers(model, x, x_adv, 4)),
        (ValueError, f"{mvl}: k: expected an int >= 1, got 0", lambda: most_vulnerable_layers(model, x, x_adv, 0)),
        (TypeError, f"{mvl}: k: expected an int >= 1, got bool True",
         lambda: most_vulnerable_layers(model, x, x_adv, True)),
        (TypeError, f"{mvl}: model: expected a torch.nn.Module, got function",
         lambda: most_vulnerable_layers(lambda t: t, x, x_adv, 1)),
        (ValueError, f"{mvl}: x_adv: expected shape (4, 3, 8, 8) (as x), got shape (3, 3, 8, 8)",
         lambda: most_vulnerable_layers(model, x, x_adv[:3], 1)),
        (ValueError, f"{mvl}: model: expected at least one module of type Sigmoid, got none",
         lambda: most_vulnerable_layers(model, x, x_adv, 1, module_types=nn.Sigmoid)),
        (TypeError, f"{mvl}: module_types: expected a torch.nn.Module subclass or a non-empty tuple of them, "
                    "got (<class 'int'>,)",
         lambda: most_vulnerable_layers(model, x, x_adv, 1, module_types=(int,))),
        (RuntimeError, f"{mvl}: impl: expected an impl that can run here, got 'cuda': "
                       "regops.lsa.most_vulnerable_layers has no cuda kernel",
         lambda: most_vulnerable_layers(model, x, x_adv, 1, impl="cuda")),
        (ValueError, f"{pen}: layers: expected names of modules of model ('conv', 'act1', 'block', 'block.0', "
                     "'block.1', 'flat', 'fc', 'act3', ...), got 'act2'",
         lambda: layerwise_penalty(model, x, x_adv, ["act1", "act2"])),
        (ValueError, f"{pen}: layers: expected at least one layer name, got an empty sequence",
         lambda: layerwise_penalty(model, x, x_adv, [])),
        (TypeError, f"{pen}: layers: expected a sequence of layer names, got str",
         lambda: layerwise_penalty(model, x, x_adv, "act1")),
        (TypeError, f"{pen}: layers[0]: expected a str, got int", lambda: layerwise_penalty(model, x, x_adv, [1])),
        (ValueError, f"{pen}: layers: expected distinct names, got 'act1' more than once",
         lambda: layerwise_penalty(model, x, x_adv, ["act1", "act1"])),
        (ValueError, f"{pen}: gamma: expected a number or 2 numbers (one per layer), got 1 numbers",
         lambda: layerwise_penalty(model, x, x_adv, ["act1", "act3"], gamma=[1.0])),
        (ValueError, f"{pen}: gamma[1]: expected a finite number >= 0, got -1.0",
         lambda: layerwise_penalty(model, x, x_adv, ["act1", "act3"], gamma=[1.0, -1.0])),
        (ValueError, f"{pen}: gamma: expected a finite number >= 0 or a sequence of them, got nan",
         lambda: layerwise_penalty(model, x, x_adv, ["act1"], gamma=float("nan"))),
        (RuntimeError, f"{pen}: x_adv: expected device cpu (as x), got device meta",
         lambda: layerwise_penalty(model, x, x_adv.to("meta"), ["act1"])),
    ]
    for kind, msg, call in cases:
        with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
            call()
        assert all_hooks_removed(model)


def test_registered():
    assert regops.lsa.__all__ == ["most_vulnerable_layers", "layerwise_penalty"]
    for op in ("lsa.most_vulnerable_layers", "lsa.layerwise_penalty", "layer_relative_error"):
        assert op in regops._registry.OPS
    assert "layer_relative_error" in regops.__all__ and "lsa" in regops.__all__
