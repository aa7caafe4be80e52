"""Regularized mask tuning (R-AMT, ICCV 2023, wuw2019/R-AMT): binary masks on frozen pre-trained weights.

apply(model, targets=...) attaches to each selected weight a real-valued score (same shape, initialised to `init`)
through torch.nn.utils.parametrize, and freezes the weight. The forward uses W′ = 1[score > threshold] ⊙ W; the
backward is straight-through: ∂L/∂score = ∂L/∂W′ ⊙ W. state_dict and torch.compile keep working.

step(model, task_loss, reg_loss, optimizer, lam) is the official training step: the reg (knowledge-distillation)
gradients g_b of the scores, then the task gradients g_a, then R-AMT's gradient dropout (regops.graddrop_) and the
optimizer step.
"""
from __future__ import annotations

import fnmatch
from typing import Iterable, Optional, Union

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import _checks
from .ops.graddrop import graddrop_
from .ops.kd import kd_loss  # noqa: F401  (the reg loss of R-AMT's step; lives with the losses)

PRESETS = ("clip_vit",)


class _StraightThroughMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, score, threshold):
        return (score > threshold).to(score.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class ScoreMask(nn.Module):
    """The parametrization W ↦ 1[score > threshold] ⊙ W, with a straight-through gradient into score."""

    def __init__(self, weight: torch.Tensor, init: float, threshold: float):
        super().__init__()
        self.score = nn.Parameter(torch.full_like(weight, float(init), dtype=torch.float32
                                                  if not weight.is_floating_point() else weight.dtype))
        self.threshold = float(threshold)

    def mask(self) -> torch.Tensor:
        return self.score > self.threshold

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * _StraightThroughMask.apply(self.score, self.threshold).to(weight.dtype)


def _is_patch_embedding(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.kernel_size == m.stride and max(m.kernel_size) > 1


def _preset_targets(model: nn.Module, preset: str):
    """CLIP-style ViT: the patch-embedding conv, the attention in_proj and out_proj (not MLPs, biases, norms,
    embeddings), as the official config masks."""
    out = []
    for name, m in model.named_modules():
        if _inside_parametrization(name):
            continue
        if _is_patch_embedding(m):
            out.append((name, m, "weight"))
        elif isinstance(m, nn.MultiheadAttention):
            if m.in_proj_weight is not None:
                out.append((name, m, "in_proj_weight"))
            else:  # separate q, k, v projections
                out += [(name, m, p) for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
            out.append((f"{name}.out_proj" if name else "out_proj", m.out_proj, "weight"))
    return out


def _select(model: nn.Module, targets) -> list:
    if isinstance(targets, str):
        _checks.check_choice("masktune.apply", "targets", targets, PRESETS)
        return _preset_targets(model, targets)
    targets = list(targets)
    types = tuple(t for t in targets if isinstance(t, type))
    patterns = [t for t in targets if isinstance(t, str)]
    if len(types) + len(patterns) != len(targets):
        _checks.fail("masktune.apply", "targets", "a preset name, or name patterns and module types",
                     repr(targets), TypeError)
    out = []
    for name, m in model.named_modules():
        if _inside_parametrization(name):
            continue
        # a weight masked by an earlier apply() is still a target (and is then left as it is)
        masked = list(m.parametrizations.keys()) if parametrize.is_parametrized(m) else []
        if types and isinstance(m, types) and (isinstance(getattr(m, "weight", None), nn.Parameter)
                                               or "weight" in masked):
            out.append((name, m, "weight"))
            continue
        for pname in [pn for pn, _ in m.named_parameters(recurse=False)] + masked:
            full = f"{name}.{pname}" if name else pname
            if any(fnmatch.fnmatchcase(full, pat) for pat in patterns):
                out.append((name, m, pname))
    return out


def _inside_parametrization(module_name: str) -> bool:
    return module_name.startswith("parametrizations.") or ".parametrizations." in module_name


def apply(model: nn.Module, targets: Union[str, Iterable] = "clip_vit", init: float = 1e-2,
          threshold: float = 5e-3) -> nn.Module:
    """Masks the selected weights of model in place (returns it). targets: "clip_vit", or parameter-name patterns
    (fnmatch, e.g. "*.attn.in_proj_weight") and module types (their `weight`)."""
    chosen = _select(model, targets)
    if not chosen:
        _checks.fail("masktune.apply", "targets", "at least one matching weight", f"none in {type(model).__name__}")
    for _, m, pname in chosen:
        if parametrize.is_parametrized(m, pname):
            continue
        w = getattr(m, pname)
        parametrize.register_parametrization(m, pname, ScoreMask(w.detach(), init, threshold))
        m.parametrizations[pname].original.requires_grad_(False)
    return model


def masks(model: nn.Module) -> dict:
    """{qualified weight name: its ScoreMask}."""
    out = {}
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m):
            for pname, plist in m.parametrizations.items():
                for p in plist:
                    if isinstance(p, ScoreMask):
                        out[f"{name}.{pname}" if name else pname] = p
    return out


def scores(model: nn.Module) -> list:
    return [sm.score for sm in masks(model).values()]


def sparsity(model: nn.Module) -> float:
    """The fraction of masked weights kept (score > threshold)."""
    ms = masks(model).values()
    total = sum(sm.score.numel() for sm in ms)
    if total == 0:
        return 1.0
    return float(sum(int(sm.mask().sum()) for sm in ms)) / total


def score_l2(model: nn.Module) -> torch.Tensor:
    """Σ over masked layers of ‖score‖₂ (not squared); the official task loss adds 1e-4 × this."""
    ss = scores(model)
    if not ss:
        _checks.fail("masktune.score_l2", "model", "a model with masks (masktune.apply)", "none")
    return torch.stack([s.float().norm() for s in ss]).sum()


def export(model: nn.Module) -> dict:
    """The masks as packed bits: {name: {"shape": tuple, "bits": uint8 tensor, 1 bit per weight}}."""
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    out = {}
    for name, sm in masks(model).items():
        flat = sm.mask().flatten().cpu()
        pad = (-flat.numel()) % 8
        bits = torch.cat([flat, flat.new_zeros(pad)]).view(-1, 8).to(torch.uint8)
        out[name] = {"shape": tuple(sm.score.shape), "bits": (bits * weights).sum(1).to(torch.uint8)}
    return out


def load(model: nn.Module, exported: dict) -> nn.Module:
    """Restores exported masks into a model prepared with the same apply(): each score is set on the kept or the
    dropped side of its threshold."""
    current = masks(model)
    for name, entry in exported.items():
        if name not in current:
            _checks.fail("masktune.load", "exported", f"masks of this model ({', '.join(current) or 'none'})",
                         f"a mask for {name!r}")
        sm = current[name]
        shape = tuple(entry["shape"])
        if shape != tuple(sm.score.shape):
            _checks.fail("masktune.load", f"exported[{name!r}]", f"shape {tuple(sm.score.shape)}", f"shape {shape}")
        n = sm.score.numel()
        bits = entry.get("bits") if isinstance(entry, dict) else None
        need = (n + 7) // 8
        if not isinstance(bits, torch.Tensor) or bits.dim() != 1 or bits.numel() != need:
            got = _checks.describe(bits) if isinstance(bits, torch.Tensor) else type(bits).__name__
            _checks.fail("masktune.load", f"exported[{name!r}]['bits']", f"a 1-D tensor of {need} packed bytes "
                         f"(the {n} mask bits of shape {shape})", got)
        bits = bits.to(torch.uint8).cpu()
        unpacked = ((bits[:, None] >> torch.arange(7, -1, -1, dtype=torch.uint8)) & 1).flatten()[:n].bool()
        margin = max(abs(sm.threshold), 1e-3)
        with torch.no_grad():
            sm.score.copy_(torch.where(unpacked.view(shape).to(sm.score.device),
                                       torch.tensor(sm.threshold + margin), torch.tensor(sm.threshold - margin)))
    return model


def step(model: nn.Module, task_loss: torch.Tensor, reg_loss: torch.Tensor, optimizer: torch.optim.Optimizer,
         lam: float, *, generator: Optional[torch.Generator] = None, impl=None) -> None:
    """One official R-AMT step on the mask scores: g_b = ∂reg_loss/∂scores (the one extra copy kept), then
    g_a = ∂task_loss/∂scores by backward, then score.grad ← ((1 − λ) + λ·1[P > U])·g_a, then optimizer.step()."""
    ss = scores(model)
    if not ss:
        _checks.fail("masktune.step", "model", "a model with masks (masktune.apply)", "none")
    g_b = torch.autograd.grad(reg_loss, ss, retain_graph=True, allow_unused=True)
    g_b = [torch.zeros_like(s) if g is None else g for s, g in zip(ss, g_b)]
    optimizer.zero_grad(set_to_none=True)
    task_loss.backward()
    for s in ss:
        if s.grad is None:
            s.grad = torch.zeros_like(s)
    graddrop_(ss, [s.grad for s in ss], g_b, lam=lam, generator=generator, impl=impl)
    optimizer.step()
