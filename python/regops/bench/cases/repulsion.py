"""Parameter repulsion ("Adapt then Unlearn") over ResNet-50's parameter list (its 161 tensors, 25.56M float32
elements, shapes as torchvision's resnet50), fwd+bwd, K = 2 anchor models: the official formulation (an MSE per
tensor and per anchor model, eager, autograd), the fused op on the precomputed anchor means (RepulsionAnchors, built
once outside the timed step), and the memory-bandwidth bound: the bytes the fused step must move (forward: read θ
and φ̄; backward: read θ and φ̄, write the gradient: 20 B per element) over this machine's copy bandwidth, measured in
the same run."""
from __future__ import annotations

import torch

import regops
from regops import _registry

from ..harness import Case

K = 2


def resnet50_shapes() -> list[tuple]:
    """The parameter shapes of torchvision's resnet50, in named_parameters order."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,), (planes, planes, 3, 3), (planes,), (planes,),
                       (planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if b == 0:
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    return shapes + [(1000, 2048), (1000,)]


def _setup(device):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter((0.05 * torch.randn(s, generator=g)).to(device)) for s in resnet50_shapes()]
    sets = [[(p.detach() + 0.01 * torch.randn(p.shape, generator=g).to(device)) for p in params] for _ in range(K)]
    return params, sets


def official(s):
    params, sets = s
    mse = torch.nn.MSELoss()
    per = [0] * len(params)
    for anchors in sets:
        for i, (p, a) in enumerate(zip(params, anchors)):
            per[i] = per[i] + mse(a, p)
    val = 0
    for v in per:
        val = val + v / len(per) / 2 * len(sets)
    loss = 1 / val
    return torch.autograd.grad(loss, params)


def fused(impl):
    def setup(device):
        params, sets = _setup(device)
        return params, regops.RepulsionAnchors(sets)

    def run(s):
        params, anchors = s
        loss = regops.param_repulsion(params, anchors, kind="inverse", impl=impl)
        return torch.autograd.grad(loss, params)
    return setup, run


def cases(quick: bool, device: torch.device) -> list[Case]:
    shapes = resnet50_shapes()
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    size = f"resnet50:{len(shapes)}x{numel / 1e6:.2f}M,K={K}"
    # size_value: the label's numbers are not factors of the problem (resnet50, a count, M), so say its size.
    out = [Case("param_repulsion", size, "official", lambda: _setup(device), official, size_value=numel,
                predicted_bytes=4 * numel * (2 + K + 6), note="per-tensor MSE loop over K anchor models, autograd")]
    for impl in ["reference"] + (["cpu"] if device.type == "cpu" else ["cuda", "triton"]):
        ok, why = _registry.available("param_repulsion", impl, device)
        setup, run = fused(impl)
        out.append(Case("param_repulsion", size, impl, lambda setup=setup: setup(device), run, size_value=numel,
                        predicted_bytes=4 * numel * (2 + K + 4), skip=None if ok else why))

    def copy_setup():
        src = torch.randn(numel, device=device)
        return src, torch.empty_like(src)

    out.append(Case("param_repulsion", size, "bandwidth-bound", copy_setup, memory=False, size_value=numel,
                    parts=((20 / 8, lambda s: s[1].copy_(s[0])),),
                    note="2.5 × time(copy of N floats): 20 B/element at the measured copy bandwidth"))
    return out
