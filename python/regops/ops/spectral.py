"""Lipschitz regularization of a value function, after Zheng, Wang, Xu, Huang, "Is Model Ensemble Necessary?
Model-based RL via a Single Model with Lipschitz Regularized Value Function" (ICLR 2023).

No official code is public. The paper's abstract (read through the search tool; its method section could not be
retrieved here) names two mechanisms that regularize the Lipschitz condition of the value function directly:
regularizing the value network's spectral norm, and computing adversarial noise on the (model-generated)
states. These two ops are those building blocks, written from that text and from the standard definitions it
relies on (spectral normalization: Miyato et al. 2018 and ``torch.nn.utils.parametrizations.spectral_norm``;
adversarial noise: FGSM, Goodfellow et al. 2015, and PGD, Madry et al. 2018). How the paper weighs and combines
them in its loss (hinge target, coefficient, which network) is the caller's choice, exposed as options.

- ``spectral_norm_penalty``: σ_max of every weight matrix by power iteration, batched over all layers.
- ``adversarial_state_noise``: the ε-ball perturbation of the states that most moves the value (FGSM/PGD).

Two impls of the spectral norms, one formula:
- the reference (``impl="reference"``): layers of one shape form a group; groups of small matrices are stacked into
  a workspace and iterated with ``bmm`` (one call per group instead of ~10 ops per layer), larger ones one ``mv``
  per layer (stacking a 50 MB list costs more than the loop's overhead). σ = (Wᵀu)ᵀv reuses the last Wᵀu, so the
  loop's third product is not needed; the backward is one outer product per layer (dσ_l/dW_l = u_l v_lᵀ) in a
  custom autograd Function.
- the kernels (``regops::spectral_power`` / ``spectral_outer``: csrc/cpu/spectral.cpp, csrc/cuda/spectral*, and
  triton/spectral.py; math in csrc/include/regops/spectral_math.h): the whole list's power iteration in one call
  (every matrix read twice per step, W v by rows and Wᵀu by columns) and every gradient in one call, written
  into reused buffers on the CPU. The figures are in the README bench table.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .. import _checks, _registry
from .._constants import acc_dtype
from .._loader import schema_registered, triton_available
from ..contracts import spectral as contract

# Groups of matrices with at least this many elements iterate one layer at a time (torch.mv), smaller ones are
# stacked and iterated with bmm: below it the per-op overhead dominates, above it the stacking copy does.
_PER_LAYER_NUMEL = 1 << 16
_NORM_EPS = 1e-12  # torch.nn.utils.parametrizations.spectral_norm's default eps for F.normalize


# ---------------------------------------------------------------------------------------------- the kernels

def _power_setup_context(ctx, inputs, output):
    weights = inputs[0]
    _, u_out, v_out = output
    ctx.save_for_backward(u_out, v_out, *weights)
    ctx.mark_non_differentiable(u_out, v_out)
    ctx.set_materialize_grads(False)


def _make_power_backward(outer):
    def backward(ctx, grad_sigma, *_):
        u, v, *weights = ctx.saved_tensors
        if grad_sigma is None:
            return [None] * len(weights), None, None, None, None
        # dσ_l/dW_l = u_l v_lᵀ with the returned (final) u, v held constant; the vectors get no gradient
        return list(outer(grad_sigma.contiguous(), u, v, weights)), None, None, None, None
    return backward


if schema_registered("spectral_power"):
    torch.library.register_fake("regops::spectral_power")(contract.fake_power)
    torch.library.register_fake("regops::spectral_outer")(contract.fake_outer)
    torch.library.register_autograd("regops::spectral_power",
                                    _make_power_backward(lambda *a: torch.ops.regops.spectral_outer(*a)),
                                    setup_context=_power_setup_context)

if triton_available() and importlib.util.find_spec("regops.triton.spectral") is not None:
    from ..triton import spectral as _triton_spectral  # noqa: F401  (registers the triton ops)

    torch.library.register_autograd("regops::spectral_power_triton",
                                    _make_power_backward(lambda *a: torch.ops.regops.spectral_outer_triton(*a)),
                                    setup_context=_power_setup_context)


def _check_sigmas(sigma: torch.Tensor, weights: list, indices) -> None:
    """Never a silent NaN, at the cost of L values: a non-finite σ (sigma[k] of weights[indices[k]]) names the
    non-finite weight entry behind it, or says that the finite weight overflowed. Called before the vectors of those
    weights are written back, so that the state of a bad weight keeps its last good vectors (not NaN for every later
    step). Eager only; on CUDA under REGOPS_CHECK_FINITE=1."""
    if torch.compiler.is_compiling() or not _checks.check_finite_enabled(sigma.device):
        return
    bad = ~torch.isfinite(sigma.detach())
    if not bool(bad.any()):
        return
    i = indices[int(bad.nonzero()[0])]
    arg = f"module_or_weights[{i}]"
    _checks.check_finite_eager("spectral_norm_penalty", arg, weights[i].detach())
    _checks.fail("spectral_norm_penalty", arg, "finite values",
                 f"a spectral norm of {sigma[bad][0].item()} from finite entries (it overflows)")


def _kernel_sigmas(chosen: str, weights: list, state, n_power_iterations: int) -> torch.Tensor:
    """σ of every weight through the compiled power iteration: one call per weight dtype (the kernels take one dtype
    per list), the matrices in the state's group order so that each group's vectors are one slice of the
    concatenated u, v; the state is updated in place. σ is differentiable through the kernel's own backward."""
    power = _registry.kernel("spectral", chosen, "power")
    by_dtype: dict = {}
    for g in state.groups:
        by_dtype.setdefault(g.dtype, []).append(g)
    parts, order = [], []
    for groups in by_dtype.values():
        idx = [i for g in groups for i in g.indices]
        mats = [weights[i] if weights[i].dim() == 2 else weights[i].reshape(g.shape) for g in groups
                for i in g.indices]
        if len(groups) == 1:
            u, v = groups[0].u.reshape(-1), groups[0].v.reshape(-1)
        else:
            u, v = torch.cat([g.u.reshape(-1) for g in groups]), torch.cat([g.v.reshape(-1) for g in groups])
        sigma, u_new, v_new = power(mats, u, v, n_power_iterations, _NORM_EPS)
        _check_sigmas(sigma, weights, idx)
        with torch.no_grad():
            ou = ov = 0
            for g in groups:
                n = len(g.indices)
                g.u.copy_(u_new[ou:ou + n * g.shape[0]].view(n, g.shape[0]))
                g.v.copy_(v_new[ov:ov + n * g.shape[1]].view(n, g.shape[1]))
                ou, ov = ou + n * g.shape[0], ov + n * g.shape[1]
        parts.append(sigma)
        order += idx
    sigma = parts[0] if len(parts) == 1 else torch.cat(parts)
    if order == list(range(len(weights))):
        return sigma
    inverse = [0] * len(order)
    for pos, i in enumerate(order):
        inverse[i] = pos
    return sigma[torch.tensor(inverse, device=sigma.device)]


# ---------------------------------------------------------------------------------------------- spectral norm

@dataclass
class _Group:
    """Layers of one matrix shape (h, w), dtype and device: their indices in the weight list and their stacked
    power-iteration vectors u (G, h), v (G, w) in the accumulation dtype."""
    shape: tuple
    dtype: torch.dtype
    indices: tuple
    u: torch.Tensor
    v: torch.Tensor
    workspace: Optional[torch.Tensor] = None   # the stacked weights of the last call (eager only), reused


class SpectralNormState:
    """The power-iteration vectors of a weight list, kept between steps (like the ``_u``/``_v`` buffers of
    ``torch.nn.utils.parametrizations.spectral_norm``). Keyed by the ordered list of the weights' shapes, dtypes
    and device (``signature``): passing it back with a weight list of another signature raises. The vectors are
    stored per group of equal matrix shape, in float32 for bf16/fp16 weights, else in the weights' dtype, and
    updated in place by every call. Groups of small matrices (stacked for bmm) also keep their stacking
    workspace here between calls: one more copy of those weights, in the accumulation dtype."""

    def __init__(self, signature: tuple, groups: list):
        self.signature = signature
        self.groups = groups

    @classmethod
    def init(cls, weights, *, generator: Optional[torch.Generator] = None) -> "SpectralNormState":
        """Random normalized u, v per layer (standard normal, then unit norm, as torch's spectral_norm does
        before its 15 warm-up iterations; regops does no warm-up: pass n_power_iterations for that)."""
        weights = list(weights)
        sig = _signature(weights)
        groups = []
        for (h, w, dtype), idx in _group_indices(sig).items():
            device = weights[idx[0]].device
            acc = acc_dtype(dtype)
            u = torch.randn(len(idx), h, generator=generator, dtype=acc, device="cpu").to(device)
            v = torch.randn(len(idx), w, generator=generator, dtype=acc, device="cpu").to(device)
            groups.append(_Group((h, w), dtype, idx, F.normalize(u, dim=1, eps=_NORM_EPS),
                                 F.normalize(v, dim=1, eps=_NORM_EPS)))
        return cls(sig, groups)

    @classmethod
    def from_vectors(cls, weights, us, vs) -> "SpectralNormState":
        """A state holding the given per-layer vectors (u_l of length out, v_l of length in), e.g. copied from
        torch's spectral_norm buffers ``_u``/``_v``."""
        weights = list(weights)
        state = cls.init(weights)
        us, vs = list(us), list(vs)
        if len(us) != len(weights) or len(vs) != len(weights):
            _checks.fail("spectral_norm_penalty", "us, vs", f"{len(weights)} vectors each (one per weight)",
                         f"{len(us)} and {len(vs)}")
        for g in state.groups:
            for k, i in enumerate(g.indices):
                g.u[k].copy_(us[i].detach().reshape(-1))
                g.v[k].copy_(vs[i].detach().reshape(-1))
        return state

    def u(self, i: int) -> torch.Tensor:
        """Layer i's left vector (a view into the state)."""
        g, k = self._find(i)
        return g.u[k]

    def v(self, i: int) -> torch.Tensor:
        g, k = self._find(i)
        return g.v[k]

    def clone(self) -> "SpectralNormState":
        return SpectralNormState(self.signature, [_Group(g.shape, g.dtype, g.indices, g.u.clone(), g.v.clone())
                                                 for g in self.groups])

    def _find(self, i: int):
        for g in self.groups:
            if i in g.indices:
                return g, g.indices.index(i)
        raise IndexError(f"regops.SpectralNormState: layer {i} out of range (0..{len(self.signature) - 2})")

    def __repr__(self) -> str:
        return (f"SpectralNormState({len(self.signature) - 1} layers in {len(self.groups)} groups: "
                + ", ".join(f"{len(g.indices)}x{g.shape[0]}x{g.shape[1]}" for g in self.groups) + ")")


def _matrix_shape(t: torch.Tensor) -> tuple:
    # torch's spectral_norm with dim=0: (out, -1)
    return (t.shape[0], t.numel() // t.shape[0] if t.shape[0] else 0)


def _signature(weights) -> tuple:
    return tuple((*_matrix_shape(t), t.dtype) for t in weights) + ((weights[0].device.type,) if weights else ())


def _group_indices(sig: tuple) -> dict:
    groups: dict = {}
    for i, key in enumerate(sig[:-1]):
        groups.setdefault(key, []).append(i)
    return {k: tuple(v) for k, v in groups.items()}


def _collect_weights(op: str, module_or_weights) -> list:
    """A module: every parameter with dim ≥ 2 (Linear, Conv*, Embedding, bilinear weights; biases and norm
    scales are 1-D and left out), in ``named_parameters()`` order (shared parameters once). A tensor: one layer.
    A list/tuple: those tensors, each must be ≥ 2-D."""
    if isinstance(module_or_weights, torch.nn.Module):
        weights = [p for _, p in module_or_weights.named_parameters() if p.dim() >= 2]
        if not weights:
            _checks.fail(op, "module_or_weights", "a module with at least one parameter of dim >= 2",
                         f"{type(module_or_weights).__name__} without one")
        return weights
    if isinstance(module_or_weights, torch.Tensor):
        module_or_weights = [module_or_weights]
    if not isinstance(module_or_weights, (list, tuple)):
        _checks.fail(op, "module_or_weights", "an nn.Module, a tensor or a list of tensors",
                     type(module_or_weights).__name__, TypeError)
    weights = list(module_or_weights)
    if not weights:
        _checks.fail(op, "module_or_weights", "at least one weight", "an empty list")
    for i, t in enumerate(weights):
        arg = f"module_or_weights[{i}]"
        _checks.check_tensor(op, arg, t)
        if not t.is_floating_point():
            _checks.fail(op, arg, "a floating-point tensor", f"dtype {_checks.dtype_name(t.dtype)}", TypeError)
        if t.dim() < 2:
            _checks.fail(op, arg, "a weight of dim >= 2 (reshaped to (out, -1))",
                         f"a {t.dim()}-D tensor of shape {tuple(t.shape)}")
        if t.numel() == 0:
            _checks.fail(op, arg, "a non-empty weight", f"shape {tuple(t.shape)}")
        if t.device != weights[0].device:
            _checks.fail(op, arg, f"device {weights[0].device} (as module_or_weights[0])", f"device {t.device}",
                         RuntimeError)
    return weights


def _stacked(g: _Group, mats: list, acc: torch.dtype) -> torch.Tensor:
    """The group's matrices as one (G, h, w) tensor in the accumulation dtype. Eagerly they are copied into a
    workspace kept in the state (a fresh 50 MB tensor per step costs more in page faults than the copy itself);
    under torch.compile a plain stack (Inductor plans the buffer)."""
    if torch.compiler.is_compiling():
        out = torch.stack(mats)
        return out if out.dtype == acc else out.to(acc)
    buf = g.workspace
    if buf is None or buf.shape != (len(mats), *g.shape) or buf.dtype != acc or buf.device != mats[0].device:
        buf = g.workspace = torch.empty((len(mats), *g.shape), dtype=acc, device=mats[0].device)
    torch._foreach_copy_(list(buf.unbind(0)), mats)
    return buf


class _SigmaFromVectors(torch.autograd.Function):
    """σ_l = u_lᵀ W_l v_l with u, v constants: forward returns the already computed values, backward
    dL/dW_l = g_l · u_l v_lᵀ (one batched outer product per group). Once differentiable."""

    @staticmethod
    def forward(ctx, sigma, us, vs, layout, *weights):
        ctx.save_for_backward(*us, *vs)
        ctx.layout = layout
        return sigma.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        n = len(saved) // 2
        us, vs = saved[:n], saved[n:]
        layout = ctx.layout  # per group: (indices, positions in sigma), and the weight shapes/dtypes
        groups, shapes = layout
        grads = [None] * len(shapes)
        for gi, (indices, offset) in enumerate(groups):
            gu = us[gi] * grad[offset:offset + len(indices)].to(us[gi].dtype)[:, None]
            for k, i in enumerate(indices):
                # one outer product per layer, each its own .grad: a (G, h, w) block would be page-faulted in
                # anew every step, and its per-layer views would pin it whole
                shape, dtype = shapes[i]
                grads[i] = torch.outer(gu[k], vs[gi][k]).to(dtype).reshape(shape)
        return (None, None, None, None, *grads)



def spectral_norm_penalty(module_or_weights, n_power_iterations: int = 1, state: Optional[SpectralNormState] = None,
                          *, reduction: str = "sum", target: Optional[float] = None,
                          generator: Optional[torch.Generator] = None, impl=None):
    """The spectral norms σ_l = σ_max(W_l) of a network's weight matrices by power iteration, and a penalty on
    them. Returns ``(penalty, sigmas, state)``:

    - ``sigmas``: (L,) tensor, σ_l = u_lᵀ W_l v_l after ``n_power_iterations`` steps u ← normalize(W v),
      v ← normalize(Wᵀ u) (torch's spectral_norm order and eps 1e-12), differentiable in the weights with u, v
      held constant (dσ_l/dW_l = u_l v_lᵀ, the exact gradient of σ_max once u, v have converged);
    - ``penalty``: ``reduction`` ("sum" Σ_l, "mean", "max", or "none": the (L,) vector) of σ_l, or with
      ``target=c`` of the hinge max(σ_l − c, 0)² (a soft constraint σ_l ≤ c; the paper regularizes the value
      network's spectral norm but its exact penalty form could not be read here, hence the options);
    - ``state``: the ``SpectralNormState`` with the updated u, v (updated in place when passed in; created with
      random normalized vectors, from ``generator``, when None). Pass it back next step: the estimate then
      converges to the true σ over training steps, as torch's spectral_norm does.

    ``module_or_weights``: an ``nn.Module`` (every parameter with dim ≥ 2: Linear, Conv, Embedding weights, not
    biases or norm scales), one tensor, or a list of tensors of dim ≥ 2, all on one device. Each weight is viewed
    as (out, −1) (torch's spectral_norm with dim=0; ConvTranspose weights would need dim=1 there: transpose them
    yourself). Layers of equal matrix shape and dtype form a group; groups of small matrices (< 64K elements)
    are stacked into a workspace kept in the state and iterated together with ``bmm``, larger ones one ``mv``
    per layer (module docstring). The gradient is once differentiable (no double backward). bf16/fp16
    weights iterate and return σ in float32. ``torch.compile(fullgraph=True)`` traces it on a weight list with
    a state created outside. ``impl``: None/"auto" (the CPU kernel on CPU tensors where built), "reference",
    "cpu", "cuda" or "triton"; every impl keeps the same state and gives the same σ to rounding."""
    op = "spectral_norm_penalty"
    weights = _collect_weights(op, module_or_weights)
    chosen = _registry.pick(op, impl, weights[0], "module_or_weights")
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int):
        _checks.fail(op, "n_power_iterations", "an int >= 1", f"{type(n_power_iterations).__name__} "
                     f"{n_power_iterations!r}", TypeError)
    if n_power_iterations < 1:
        _checks.fail(op, "n_power_iterations", "an int >= 1", repr(n_power_iterations))
    _checks.check_choice(op, "reduction", reduction, ("sum", "mean", "max", "none"))
    if target is not None:
        target = _checks.number(op, "target", target, low=0, what="a finite number >= 0")
    sig = _signature(weights)
    if state is None:
        state = SpectralNormState.init(weights, generator=generator)
    elif not isinstance(state, SpectralNormState):
        _checks.fail(op, "state", "a SpectralNormState or None", type(state).__name__, TypeError)
    elif state.signature != sig:
        _checks.fail(op, "state", "a state made for these weights: " + _describe_sig(sig),
                     "one made for " + _describe_sig(state.signature))
    elif state.groups and state.groups[0].u.device != weights[0].device:
        _checks.fail(op, "state", f"vectors on device {weights[0].device} (as the weights)",
                     f"device {state.groups[0].u.device}", RuntimeError)

    if chosen != "reference":
        sigmas = _kernel_sigmas(chosen, weights, state, n_power_iterations)
        return _penalty(sigmas, target, reduction), sigmas, state

    sig_parts, us, vs, layout_groups, offset = [], [], [], [], 0
    with torch.no_grad():
        for g in state.groups:
            h, w = g.shape
            acc = g.u.dtype
            if h * w >= _PER_LAYER_NUMEL:
                # large matrices: one mv per layer already streams W at memory bandwidth; stacking would add a
                # full copy of the weights (measured slower on the CPU, regops/bench/cases/spectral.py)
                ts, vs_new, us_new = [], [], []
                for k, i in enumerate(g.indices):
                    W = weights[i].detach().reshape(h, w)
                    W = W if W.dtype == acc else W.to(acc)
                    uk, vk = g.u[k], g.v[k]
                    for _ in range(n_power_iterations):
                        uk = F.normalize(torch.mv(W, vk), dim=0, eps=_NORM_EPS)
                        tk = torch.mv(W.t(), uk)
                        vk = F.normalize(tk, dim=0, eps=_NORM_EPS)
                    us_new.append(uk)
                    vs_new.append(vk)
                    ts.append(tk)
                u, v, t = torch.stack(us_new), torch.stack(vs_new), torch.stack(ts)
            else:
                mats = _stacked(g, [weights[i].detach().reshape(h, w) for i in g.indices], acc)
                u, v = g.u, g.v
                for _ in range(n_power_iterations):
                    # row-vector products (bmm of (G, 1, k) by (G, k, n)): BLAS's fastest layout for them here
                    u = F.normalize(torch.bmm(v.unsqueeze(1), mats.transpose(1, 2)).squeeze(1), dim=1,
                                    eps=_NORM_EPS)
                    t = torch.bmm(u.unsqueeze(1), mats).squeeze(1)   # Wᵀu
                    v = F.normalize(t, dim=1, eps=_NORM_EPS)
            sig_parts.append((t * v).sum(1))   # uᵀ W v = (Wᵀu)ᵀ v
            _check_sigmas(sig_parts[-1], weights, g.indices)
            g.u.copy_(u)
            g.v.copy_(v)
            us.append(u)
            vs.append(v)
            layout_groups.append((g.indices, offset))
            offset += len(g.indices)
        sigma_grouped = torch.cat(sig_parts)
    shapes = tuple((tuple(t.shape), t.dtype) for t in weights)
    sigma_grouped = _SigmaFromVectors.apply(sigma_grouped, tuple(us), tuple(vs), (tuple(layout_groups), shapes),
                                            *weights)
    order = [i for g in state.groups for i in g.indices]
    if order != list(range(len(weights))):
        inverse = [0] * len(order)
        for pos, i in enumerate(order):
            inverse[i] = pos
        sigmas = sigma_grouped[torch.tensor(inverse, device=sigma_grouped.device)]
    else:
        sigmas = sigma_grouped
    return _penalty(sigmas, target, reduction), sigmas, state


def _penalty(sigmas: torch.Tensor, target: Optional[float], reduction: str) -> torch.Tensor:
    terms = sigmas if target is None else torch.clamp(sigmas - target, min=0) ** 2
    if reduction == "sum":
        return terms.sum()
    if reduction == "mean":
        return terms.mean()
    if reduction == "max":
        return terms.max()
    return terms


def _describe_sig(sig: tuple) -> str:
    if not sig:
        return "no weights"
    shapes = ", ".join(f"{h}x{w} {_checks.dtype_name(d)}" for h, w, d in sig[:-1])
    return f"{len(sig) - 1} matrices ({shapes}) on {sig[-1]}"


# ---------------------------------------------------------------------------------------------- adversarial noise

def adversarial_state_noise(value_fn, states: torch.Tensor, eps: float, steps: int = 1, norm: str = "l2", *,
                            step_size: Optional[float] = None, direction: str = "increase",
                            random_start: bool = False, generator: Optional[torch.Generator] = None,
                            impl=None) -> torch.Tensor:
    """Adversarially perturbed states s + δ, ‖δ_i‖ ≤ eps per sample, δ chosen to move the value most: FGSM
    for ``steps=1``, PGD (Madry et al.) for more, as the paper's adversarial-noise mechanism uses it on
    model-generated states to regularize the value function's local Lipschitz constant.

    ``value_fn(states)`` → values with first dim B (trailing dims are summed per sample); it must treat samples
    independently (no batch statistics). ``states``: (B, ...) floating tensor, any trailing shape; each sample's
    perturbation is normed over all its trailing elements. ``direction="increase"`` ascends Σ_i V(s_i + δ_i),
    "decrease" descends it (the pessimistic target). One step with δ₀ = 0 (or uniform in the ball with
    ``random_start``):
    - ``norm="linf"``: δ ← clip(δ + α·sign(g), −eps, eps) (FGSM: δ = eps·sign(∇V));
    - ``norm="l2"``: δ ← Π_ball(δ + α·g/‖g‖), Π_ball(x) = x·min(1, eps/‖x‖) (FGSM: δ = eps·∇V/‖∇V‖).
    A zero gradient gives a zero step (no NaN). α = ``step_size``, default eps for steps=1 and 2.5·eps/steps
    for PGD. eps = 0 returns the states unchanged (value_fn is not called).

    Returns the perturbed states, detached (a new tensor). Gradients are taken with ``torch.autograd.grad``
    with respect to δ only, under ``enable_grad`` (so it works inside a ``no_grad`` target computation):
    value_fn's parameters get no ``.grad``. Reference impl only."""
    op = "adversarial_state_noise"
    _checks.check_tensor(op, "states", states)
    _registry.resolve_impl(op, impl, states.device)
    if not callable(value_fn):
        _checks.fail(op, "value_fn", "a callable", type(value_fn).__name__, TypeError)
    if not states.is_floating_point():
        _checks.fail(op, "states", "a floating-point tensor", f"dtype {_checks.dtype_name(states.dtype)}", TypeError)
    if states.dim() < 1 or states.shape[0] == 0:
        _checks.fail(op, "states", "a batch (B, ...) with B >= 1", f"shape {tuple(states.shape)}")
    eps = _checks.number(op, "eps", eps, low=0, what="a finite number >= 0")
    if isinstance(steps, bool) or not isinstance(steps, int):
        _checks.fail(op, "steps", "an int >= 1", f"{type(steps).__name__} {steps!r}", TypeError)
    if steps < 1:
        _checks.fail(op, "steps", "an int >= 1", repr(steps))
    _checks.check_choice(op, "norm", norm, ("l2", "linf"))
    _checks.check_choice(op, "direction", direction, ("increase", "decrease"))
    if step_size is None:
        alpha = eps if steps == 1 else 2.5 * eps / steps
    else:
        alpha = _checks.number(op, "step_size", step_size, low=0, what="a finite number >= 0")
    base = states.detach()
    if eps == 0 or states.numel() == 0:
        return base.clone()
    sign = 1.0 if direction == "increase" else -1.0
    B = base.shape[0]
    view = (B,) + (1,) * (base.dim() - 1)
    acc = acc_dtype(base.dtype)

    def per_sample_norm(x):
        return x.reshape(B, -1).to(acc).norm(dim=1).reshape(view)

    def project(d):
        if norm == "linf":
            return d.clamp(-eps, eps)
        n = per_sample_norm(d)
        return (d.to(acc) * torch.clamp(eps / torch.clamp(n, min=torch.finfo(acc).tiny), max=1.0)).to(d.dtype)

    if random_start:
        if norm == "linf":
            delta = (torch.rand(base.shape, generator=generator, dtype=acc) * 2 - 1).to(base) * eps
        else:
            g = torch.randn(base.shape, generator=generator, dtype=acc)
            g = g / torch.clamp(g.reshape(B, -1).norm(dim=1).reshape(view), min=torch.finfo(acc).tiny)
            r = torch.rand(view, generator=generator, dtype=acc) ** (1.0 / max(1, base[0].numel()))
            delta = (g * r * eps).to(base)
    else:
        delta = torch.zeros_like(base)
    with torch.enable_grad():
        for _ in range(steps):
            d = delta.detach().requires_grad_(True)
            values = value_fn(base + d)
            if not isinstance(values, torch.Tensor) or values.dim() < 1 or values.shape[0] != B:
                got = (f"shape {tuple(values.shape)}" if isinstance(values, torch.Tensor)
                       else type(values).__name__)
                _checks.fail(op, "value_fn", f"values of shape ({B}, ...) for states of batch {B}", got)
            total = values.sum()
            grad = torch.autograd.grad(total, d, allow_unused=True)[0] if total.requires_grad else None
            if grad is None:  # the value does not depend on the states
                grad = torch.zeros_like(d)
            grad = grad * sign
            if norm == "linf":
                step = grad.sign()
            else:
                gn = per_sample_norm(grad)
                step = (grad.to(acc) / torch.clamp(gn, min=torch.finfo(acc).tiny)).to(base.dtype)
                step = torch.where(gn > 0, step, torch.zeros_like(step))
            delta = project(delta.detach() + alpha * step)
    return (base + delta).detach()
