"""Layers Sustainability Analysis (Khalooei, Homayounpour & Amirmazlaghani, "Layer-wise Regularized Adversarial
Training using Layers Sustainability Analysis (LSA) framework"; official code khalooei/LSA, commit e4f9e8e,
``LayerSustainabilityAnalysis/layersustainabilityanalysis.py``, class ``LayerSustainabilityAnalysis``).
Reference only: two norms per layer.

The official code has one measure, ``representation_comparisons`` (L160-168): forward hooks on the model's
activation modules collect each output for a clean and a perturbed batch, and per hooked output it returns
``np.linalg.norm(Fc - Fa) / np.linalg.norm(Fc)`` on numpy copies (the 2-norm of the whole flattened batch tensor).
It has no most-vulnerable-layer (MVL) rule and no training term; the README states the layer-wise regularizer
LR = Σ_{l∈M} γ_l·CM_LSA(φ_l(x), φ_l(x̂)), added to the adversarial-training loss, "[To be completed ...]".

- ``layer_relative_error``: the measure, in torch (differentiable), with a per-sample variant and an eps.
- ``most_vulnerable_layers`` (``regops.lsa``): the measure on every activation module, ranked; the top k.
- ``layerwise_penalty`` (``regops.lsa``): LR on chosen layers, with gradients.

Departures from the official hooks (L115-141), for both module-level functions:
- modules are matched with isinstance(module, module_types) (subclasses included), not by the class-name
  string ``layer.__str__().split('(')[0]`` in ("ReLU", "ELU", "LeakyReLU"); functional activations (F.relu) are
  not modules and are never hooked, as officially;
- every matching module is hooked once (the official selection over ``model._modules`` can hook a ReLU twice,
  and then records its output twice per forward);
- the hooks are removed when the function returns or raises (the official discards the handles: hooks
  accumulate across calls and keep the recorded tensors alive);
- the model's train/eval mode is left as the caller set it (the official constructor calls ``model.eval()``):
  call ``model.eval()`` first for the official behaviour of dropout and batch norm;
- a module called several times in one forward (a reused ReLU) is recorded per call: the first call under its
  module name, call i ≥ 1 under ``"<name>#<i>"``; the clean and perturbed forwards must make the same calls;
- each recorded output is cloned when recorded (so a later in-place op cannot change it; the official keeps a
  reference to the tensor);
- a clean activation with zero norm raises unless eps > 0 (the official returns inf or nan).
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

from .. import _checks, _registry
from .._constants import acc_dtype

DEFAULT_MODULE_TYPES = (nn.ReLU, nn.ELU, nn.LeakyReLU)


def _relative_error(op, clean, adv, per_sample, eps, arg_clean="acts_clean"):
    acc = acc_dtype(clean.dtype)
    c, a = clean.to(acc), adv.to(acc)
    if per_sample:
        per = math.prod(c.shape[1:])  # not -1: an empty batch has no inferable row length
        c, a = c.reshape(c.shape[0], per), a.reshape(a.shape[0], per)
        num = torch.linalg.vector_norm(c - a, dim=1)
        den = torch.linalg.vector_norm(c, dim=1)
    else:
        num = torch.linalg.vector_norm((c - a).reshape(-1))
        den = torch.linalg.vector_norm(c.reshape(-1))
    if eps == 0 and not torch.compiler.is_compiling():  # data-dependent: skipped while torch.compile traces
        zero = den.detach() == 0
        if bool(zero.any()):
            where = f" (sample {int(zero.nonzero()[0, 0])})" if per_sample else ""
            _checks.fail(op, arg_clean, "an activation of nonzero norm (the denominator of the relative error; "
                         "pass eps > 0 to allow zero)", f"norm 0{where}")
    return num / (den + eps) if eps else num / den


def _check_acts(op: str, clean, adv, per_sample: bool, names=("acts_clean", "acts_adv")) -> None:
    for arg, t in zip(names, (clean, adv)):
        _checks.check_tensor(op, arg, t)
        if not t.is_floating_point():
            _checks.fail(op, arg, "a floating-point tensor", _checks.dtype_name(t.dtype), TypeError)
    if adv.shape != clean.shape:
        _checks.fail(op, names[1], f"shape {tuple(clean.shape)} (as {names[0]})", f"shape {tuple(adv.shape)}")
    if adv.dtype != clean.dtype:
        _checks.fail(op, names[1], f"dtype {_checks.dtype_name(clean.dtype)} (as {names[0]})",
                     _checks.dtype_name(adv.dtype), TypeError)
    if adv.device != clean.device:
        _checks.fail(op, names[1], f"device {clean.device} (as {names[0]})", f"device {adv.device}", RuntimeError)
    if per_sample and clean.dim() == 0:
        _checks.fail(op, names[0], "a batch (B, ...) for per_sample=True", "a 0-D tensor")


def _check_eps(op: str, eps) -> float:
    return _checks.number(op, "eps", eps, low=0, what="a finite number >= 0")


def layer_relative_error(acts_clean: torch.Tensor, acts_adv: torch.Tensor, *, per_sample: bool = False,
                         eps: float = 0.0, impl=None) -> torch.Tensor:
    """‖F_clean − F_adv‖_F / ‖F_clean‖_F, LSA's comparison measure (khalooei/LSA
    ``layersustainabilityanalysis.py`` ``LayerSustainabilityAnalysis.representation_comparisons`` L160-168:
    ``np.linalg.norm(Fc - Fa) / np.linalg.norm(Fc)`` on the flattened arrays).

    ``acts_clean``, ``acts_adv``: one layer's activations for the clean and the perturbed batch, floating, same
    shape, dtype and device (any shape). ``per_sample=False`` (the official): one ratio over the whole tensor,
    0-D. ``per_sample=True``: a ratio per sample along dim 0, shape (B,) (B = 0 gives an empty result).
    ``eps`` > 0 divides by ‖F_clean‖ + eps; with eps = 0 (the official) a zero denominator raises ValueError
    (eagerly, on every device: one host sync on CUDA; under torch.compile the check cannot run and 0/0 gives
    nan, x/0 inf, as the official).

    Departures: differentiable in both inputs (the official copies to numpy); at F_clean = F_adv the gradient of
    the numerator's norm is taken as 0. bfloat16/float16 compute in float32 and return float32. The official's
    ``measure`` argument is ignored there and does not exist here. Works under torch.compile(fullgraph=True)."""
    op = "layer_relative_error"
    if not isinstance(per_sample, bool):
        _checks.fail(op, "per_sample", "a bool", f"{type(per_sample).__name__} {per_sample!r}", TypeError)
    _check_acts(op, acts_clean, acts_adv, per_sample)
    eps = _check_eps(op, eps)
    _registry.pick(op, impl, acts_clean, "acts_clean")  # the reference only: a named kernel impl raises
    _checks.check_finite_eager(op, "acts_clean", acts_clean.detach())
    _checks.check_finite_eager(op, "acts_adv", acts_adv.detach())
    return _relative_error(op, acts_clean, acts_adv, per_sample, eps)


# ----------------------------------------------------------------------------------------- hooks on a model

def _check_model_inputs(op: str, model, x, x_adv) -> None:
    if not isinstance(model, nn.Module):
        _checks.fail(op, "model", "a torch.nn.Module", type(model).__name__, TypeError)
    _checks.check_tensor(op, "x", x)
    _checks.check_tensor(op, "x_adv", x_adv)
    if x_adv.shape != x.shape:
        _checks.fail(op, "x_adv", f"shape {tuple(x.shape)} (as x)", f"shape {tuple(x_adv.shape)}")
    if x_adv.device != x.device:
        _checks.fail(op, "x_adv", f"device {x.device} (as x)", f"device {x_adv.device}", RuntimeError)


def _record(op: str, model: nn.Module, modules, inputs):
    """Run model(inp) for each input with forward hooks on `modules` ({name: module}); per input, the outputs
    in call order as {record name: tensor} (call i ≥ 1 of a module is "<name>#<i>"). The hooks are removed on
    return and on error. Returns (records per input, model outputs)."""
    records, counts = {}, {}

    def hook_for(name):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor):
                _checks.fail(op, "model", f"module {name!r} to return a tensor", type(output).__name__, TypeError)
            i = counts.get(name, 0)
            counts[name] = i + 1
            records[name if i == 0 else f"{name}#{i}"] = output.clone()
        return hook

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(hook_for(name)))
        out_records, outputs = [], []
        for inp in inputs:
            records, counts = {}, {}
            outputs.append(model(inp))
            out_records.append(records)
    finally:
        for h in handles:
            h.remove()
    return out_records, outputs


def _matched_modules(op: str, model: nn.Module, module_types) -> dict:
    types = module_types if isinstance(module_types, tuple) else (module_types,)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        _checks.fail(op, "module_types", "a torch.nn.Module subclass or a non-empty tuple of them",
                     repr(module_types), TypeError)
    mods = {name: m for name, m in model.named_modules() if isinstance(m, types)}
    if not mods:
        names = ", ".join(t.__name__ for t in types)
        _checks.fail(op, "model", f"at least one module of type {names}", "none")
    return mods


def _same_calls(op: str, clean: dict, adv: dict) -> None:
    a, b = list(clean), list(adv)
    if a != b:
        i = next((i for i, (p, q) in enumerate(zip(a, b)) if p != q), min(len(a), len(b)))
        want = repr(a[i]) if i < len(a) else "no call"
        got = repr(b[i]) if i < len(b) else "no call"
        _checks.fail(op, "x_adv", f"a forward that makes the hooked calls of x's ({len(a)} calls; call {i}: {want})",
                     f"{len(b)} calls; call {i}: {got}")


def most_vulnerable_layers(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, k: int, *,
                           module_types=DEFAULT_MODULE_TYPES, eps: float = 0.0, impl=None) -> list:
    """The k most vulnerable layers of ``model``: LSA's relative error ‖φ_l(x) − φ_l(x_adv)‖_F / ‖φ_l(x)‖_F
    (``regops.layer_relative_error`` over the whole batch, as khalooei/LSA ``representation_comparisons``) for
    the output of every call of every module that isinstance-matches ``module_types`` (default ReLU, ELU,
    LeakyReLU: the official ``selected_probs``), sorted by it, largest first (ties in forward order), the first k.

    Returns a list of k ``(name, relative error as a float)``; names are ``model.named_modules()`` names, with
    ``"#<i>"`` for call i ≥ 1 of a module called more than once per forward (these names are what
    ``layerwise_penalty`` takes). Runs ``model(x)`` and ``model(x_adv)`` under torch.no_grad with forward hooks
    that are removed afterwards, also when the model raises; the model's train/eval mode is left as it is.
    ``k``: an int in [1, number of recorded calls]; ``eps``: as layer_relative_error (a dead activation, all
    zero on the clean batch, raises when eps = 0).

    Ours: the official repository has no MVL rule (the paper selects the layers of largest comparison measure);
    this ranks the official measure. Departures of the hooks: module docstring (regops.ops.lsa)."""
    op = "lsa.most_vulnerable_layers"
    _check_model_inputs(op, model, x, x_adv)
    if isinstance(k, bool) or not isinstance(k, int):
        _checks.fail(op, "k", "an int >= 1", f"{type(k).__name__} {k!r}", TypeError)
    if k < 1:
        _checks.fail(op, "k", "an int >= 1", repr(k))
    eps = _check_eps(op, eps)
    _registry.pick(op, impl, x, "x")  # the reference only
    mods = _matched_modules(op, model, module_types)
    with torch.no_grad():
        (clean, adv), _ = _record(op, model, mods, (x, x_adv))
    _same_calls(op, clean, adv)
    if k > len(clean):
        _checks.fail(op, "k", f"an int in [1, {len(clean)}] (the recorded layer calls)", repr(k))
    scores = []
    for name in clean:
        _check_acts(op, clean[name], adv[name], False, names=(f"layer {name!r} on x", f"layer {name!r} on x_adv"))
        scores.append((name, float(_relative_error(op, clean[name], adv[name], False, eps,
                                                   arg_clean=f"layer {name!r} on x"))))
    scores.sort(key=lambda s: -s[1])  # stable: ties keep forward order
    return scores[:k]


def _split_name(name: str):
    base, sep, idx = name.rpartition("#")
    if sep and idx.isdigit() and int(idx) >= 1 and str(int(idx)) == idx:
        return base, int(idx)
    return name, 0


def layerwise_penalty(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, layers: Sequence[str], *,
                      gamma: Union[float, Sequence[float]] = 1.0, eps: float = 0.0, return_outputs: bool = False,
                      impl=None):
    """LSA's layer-wise regularizer LR = Σ_{l ∈ layers} γ_l·‖φ_l(x) − φ_l(x_adv)‖_F / ‖φ_l(x)‖_F (the official
    README's LR, with the official measure of khalooei/LSA ``representation_comparisons``; the repository has no
    code for it), to add to the adversarial-training loss.

    ``layers``: a non-empty sequence of distinct names, as ``most_vulnerable_layers`` returns them: any module of
    ``model.named_modules()`` (not only activations), ``"<name>#<i>"`` for its call i ≥ 1 in one forward.
    ``gamma``: a number >= 0 for every layer, or one per layer. ``eps``: as layer_relative_error. Runs
    ``model(x)`` and ``model(x_adv)`` with gradients enabled and forward hooks on the named modules (removed on
    return and on error); the gradient flows through both forwards to the parameters (and to x_adv: pass
    ``x_adv.detach()`` to stop it). ``return_outputs=True`` returns ``(LR, (model(x), model(x_adv)))`` so that
    the training loss can reuse the forwards. LR is 0-D, float32 for bfloat16/float16 activations.

    Unknown names raise ValueError before the forward (a call index past the module's calls after it)."""
    op = "lsa.layerwise_penalty"
    _check_model_inputs(op, model, x, x_adv)
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        _checks.fail(op, "layers", "a sequence of layer names", type(layers).__name__, TypeError)
    layers = list(layers)
    if not layers:
        _checks.fail(op, "layers", "at least one layer name", "an empty sequence")
    for i, name in enumerate(layers):
        if not isinstance(name, str):
            _checks.fail(op, f"layers[{i}]", "a str", type(name).__name__, TypeError)
    if len(set(layers)) != len(layers):
        dup = next(n for n in layers if layers.count(n) > 1)
        _checks.fail(op, "layers", "distinct names", f"{dup!r} more than once")
    if isinstance(gamma, (list, tuple)):
        if len(gamma) != len(layers):
            _checks.fail(op, "gamma", f"a number or {len(layers)} numbers (one per layer)", f"{len(gamma)} numbers")
        gammas = [_checks.number(op, f"gamma[{i}]", g, low=0, what="a finite number >= 0")
                  for i, g in enumerate(gamma)]
    else:
        gammas = [_checks.number(op, "gamma", gamma, low=0, what="a finite number >= 0 or a sequence of them")]
        gammas = gammas * len(layers)
    eps = _check_eps(op, eps)
    if not isinstance(return_outputs, bool):
        _checks.fail(op, "return_outputs", "a bool", f"{type(return_outputs).__name__} {return_outputs!r}",
                     TypeError)
    _registry.pick(op, impl, x, "x")  # the reference only
    named = dict(model.named_modules())
    mods = {}
    for name in layers:
        base, _ = _split_name(name)
        if base not in named:
            known = [n for n in named if n]
            shown = ", ".join(repr(n) for n in known[:8]) + (", ..." if len(known) > 8 else "")
            _checks.fail(op, "layers", f"names of modules of model ({shown})", repr(name))
        mods[base] = named[base]
    (clean, adv), outputs = _record(op, model, mods, (x, x_adv))
    _same_calls(op, clean, adv)
    total = None
    for name, g in zip(layers, gammas):
        if name not in clean:
            base, i = _split_name(name)
            calls = sum(1 for n in clean if _split_name(n)[0] == base)
            _checks.fail(op, "layers", f"a call made by the forward (module {base!r} was called {calls} times)",
                         repr(name))
        _check_acts(op, clean[name], adv[name], False, names=(f"layer {name!r} on x", f"layer {name!r} on x_adv"))
        term = _relative_error(op, clean[name], adv[name], False, eps, arg_clean=f"layer {name!r} on x") * g
        total = term if total is None else total + term
    return (total, tuple(outputs)) if return_outputs else total


__all__ = ["layer_relative_error", "most_vulnerable_layers", "layerwise_penalty"]
