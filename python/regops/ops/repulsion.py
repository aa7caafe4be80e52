"""Parameter repulsion of "Adapt then Unlearn" (Tiwary, Guha, Panda, Prathosh), fused over a whole parameter list.

The official regularizer (atriguha/Adapt_Unlearn, ``calc_difference_param_new`` in
``Unlearning/Unlearning_MNIST/train_different_losses.py``) pushes the generator θ away from K negatively adapted
copies φ_1..φ_K:

    R = (Σ_{tensors p} Σ_{k=1..K} mean((φ_{k,p} − θ_p)²)) / |P| / 2 · K

(the code writes ``value/2*len(ckpt_gens)``, which Python reads as (value/2)·K: normalize="official" keeps it,
normalize="mean" drops the ·K/2). The K anchor sets reduce to their per-tensor mean φ̄_p:

    Σ_k mean((φ_{k,p} − θ_p)²) = K·mean((θ_p − φ̄_p)²) + c_p,    c_p = Σ_k mean((φ_{k,p} − φ̄_p)²)

so a training step reads only θ and φ̄ (``RepulsionAnchors`` holds φ̄, Σ_p c_p and K, built once). One kernel call
gives the per-tensor sums Σ_e (θ_e − φ̄_e)² (repulsion_fwd; its backward repulsion_bwd writes every gradient in one
call as well); the reduction to the scalar loss is here.
"""
from __future__ import annotations

import importlib.util
from typing import Sequence

import torch

from .. import _checks, _registry
from .._constants import acc_dtype
from .._loader import schema_registered, triton_available
from ..contracts import repulsion as contract
from ..reference import repulsion as reference

OP = "param_repulsion"
DTYPES = contract.DTYPES


def _setup_context(ctx, inputs, output):
    params, means = inputs
    ctx.n = len(params)
    ctx.save_for_backward(*params, *means)


def _make_backward(bwd):
    def backward(ctx, grad_sums):
        none = [None] * ctx.n
        if grad_sums is None:
            return none, none
        saved = ctx.saved_tensors
        # the anchor means are frozen (RepulsionAnchors detaches them): no gradient flows to them
        return list(bwd(grad_sums.contiguous(), list(saved[:ctx.n]), list(saved[ctx.n:]))), none
    return backward


if schema_registered("repulsion_fwd"):
    torch.library.register_fake("regops::repulsion_fwd")(contract.fake_fwd)
    torch.library.register_fake("regops::repulsion_bwd")(contract.fake_bwd)
    torch.library.register_autograd("regops::repulsion_fwd",
                                    _make_backward(lambda *a: torch.ops.regops.repulsion_bwd(*a)),
                                    setup_context=_setup_context)

if triton_available() and importlib.util.find_spec("regops.triton.repulsion") is not None:
    from ..triton import repulsion as _triton_repulsion  # noqa: F401  (registers the triton ops)

    torch.library.register_autograd("regops::repulsion_fwd_triton",
                                    _make_backward(lambda *a: torch.ops.regops.repulsion_bwd_triton(*a)),
                                    setup_context=_setup_context)


def _as_list(arg, xs):
    if isinstance(xs, torch.Tensor):
        return [xs]
    if not isinstance(xs, (list, tuple)):
        try:
            xs = list(xs)
        except TypeError:
            _checks.fail(OP, arg, "a sequence of tensors", type(xs).__name__, TypeError)
    return list(xs)


class RepulsionAnchors:
    """The anchors of ``param_repulsion`` reduced once to what a step needs: per tensor the mean φ̄_p of the K
    anchor sets (in the anchors' dtype, detached), const = Σ_p c_p (float64) and K.

    ``anchors``: one list of tensors (K = 1: φ̄ is the anchors themselves, no copy unless non-contiguous) or a list
    of K lists (the K adapted models, each a list of tensors in the order of the params). Build it once from frozen
    anchors and pass it to every step. With bfloat16/float16 anchors and K > 1, φ̄ is computed in float64 and
    rounded to the dtype (c_p stays float64)."""

    def __init__(self, anchors):
        sets = _as_list("anchors", anchors)
        if len(sets) == 0:
            _checks.fail(OP, "anchors", "at least one tensor", "an empty list")
        if all(isinstance(a, torch.Tensor) for a in sets):
            sets = [sets]
        sets = [_as_list(f"anchors[{k}]", s) for k, s in enumerate(sets)]
        n = len(sets[0])
        if n == 0:
            _checks.fail(OP, "anchors[0]", "at least one tensor", "an empty list")
        for k, s in enumerate(sets):
            if len(s) != n:
                _checks.fail(OP, f"anchors[{k}]", f"{n} tensors (as anchors[0])", f"{len(s)} tensors")
            for i, a in enumerate(s):
                arg = f"anchors[{k}][{i}]" if len(sets) > 1 else f"anchors[{i}]"
                _checks.check_tensor(OP, arg, a, dtypes=DTYPES)
                ref = sets[0][i] if k > 0 else sets[0][0]
                if k > 0 and a.shape != ref.shape:
                    _checks.fail(OP, arg, f"shape {tuple(ref.shape)} (as anchors[0][{i}])", f"shape {tuple(a.shape)}")
                if a.dtype != ref.dtype:
                    _checks.fail(OP, arg, f"dtype {_checks.dtype_name(ref.dtype)} (as the first anchor)",
                                 f"dtype {_checks.dtype_name(a.dtype)}", TypeError)
                if a.device != ref.device:
                    _checks.fail(OP, arg, f"device {ref.device} (as the first anchor)", f"device {a.device}",
                                 RuntimeError)
        self.k = len(sets)
        if self.k == 1:
            self.means = [a.detach().contiguous() for a in sets[0]]
            self.const = 0.0
        else:
            means64, consts = reference.anchor_stats(sets)
            finite = torch.compiler.is_compiling() or bool(torch.isfinite(torch.stack(consts)).all())
            for i, c in enumerate(consts):
                if not finite and not bool(torch.isfinite(c)):
                    for k, s in enumerate(sets):
                        _checks.check_finite_eager(OP, f"anchors[{k}][{i}]", s[i])
                    _checks.fail(OP, f"anchors[*][{i}]", "finite values", "a spread that overflows float64")
            self.means = [m.to(sets[0][i].dtype).contiguous() for i, m in enumerate(means64)]
            self.const = sum(consts)  # a float64 0-dim tensor

    def __len__(self) -> int:
        return len(self.means)


def _check_params(params, anchors: RepulsionAnchors):
    if len(params) == 0:
        _checks.fail(OP, "params", "at least one tensor", "an empty list")
    if len(anchors.means) != len(params):
        _checks.fail(OP, "anchors", f"{len(params)} tensors per set (one per param)", f"{len(anchors.means)}")
    p0 = params[0]
    for i, (p, m) in enumerate(zip(params, anchors.means)):
        _checks.check_tensor(OP, f"params[{i}]", p, dtypes=DTYPES)
        if p.numel() == 0:
            _checks.fail(OP, f"params[{i}]", "a tensor with at least one element (the official mean of an empty "
                         "tensor is NaN)", f"shape {tuple(p.shape)}")
        if p.dtype != p0.dtype:
            _checks.fail(OP, f"params[{i}]", f"dtype {_checks.dtype_name(p0.dtype)} (as params[0])",
                         f"dtype {_checks.dtype_name(p.dtype)}", TypeError)
        if p.device != p0.device:
            _checks.fail(OP, f"params[{i}]", f"device {p0.device} (as params[0])", f"device {p.device}", RuntimeError)
        if m.shape != p.shape:
            _checks.fail(OP, f"anchors[{i}]", f"shape {tuple(p.shape)} (as params[{i}])", f"shape {tuple(m.shape)}")
        if m.dtype != p.dtype:
            _checks.fail(OP, f"anchors[{i}]", f"dtype {_checks.dtype_name(p.dtype)} (as params[{i}])",
                         f"dtype {_checks.dtype_name(m.dtype)}", TypeError)
        if m.device != p.device:
            _checks.fail(OP, f"anchors[{i}]", f"device {p.device} (as params[{i}])", f"device {m.device}",
                         RuntimeError)


def _check_sums(sums, params, means) -> None:
    # One check of T numbers instead of a finiteness pass over the data: NaN/Inf in θ or φ̄, and overflow, show here.
    if torch.compiler.is_compiling() or not _checks.check_finite_enabled(sums.device):
        return
    bad = ~torch.isfinite(sums.detach())
    if bool(bad.any()):
        t = int(bad.nonzero()[0])
        _checks.check_finite_eager(OP, f"params[{t}]", params[t].detach())
        _checks.check_finite_eager(OP, f"anchors[{t}]", means[t])
        _checks.fail(OP, f"params[{t}]", "finite values", f"a squared distance to the anchors that overflows "
                     f"{_checks.dtype_name(sums.dtype)} (tensor {t})")


def param_repulsion(params: Sequence[torch.Tensor], anchors, *, kind: str = "inverse", gamma: float = 1.0,
                    normalize: str = "official", impl=None) -> torch.Tensor:
    """The repulsion loss of "Adapt then Unlearn" between the params θ and K anchor sets φ_k (module docstring).

    R = (Σ_p Σ_k mean((φ_{k,p} − θ_p)²)) / |P| / 2 · K for normalize="official" (the official code's precedence);
    normalize="mean" drops the ·K/2: R = Σ_p Σ_k mean(...) / |P|. |P| = len(params). The loss:

    - kind="inverse": γ/R (the official "reci"); R = 0 raises (on CPU always, on CUDA with REGOPS_CHECK_FINITE=1);
    - kind="exp": 100·exp(−γR) (the official hard-coded 100, γ in the exponent);
    - kind="neg_l2": −γR (the official "l2").

    The official val_factor is 1/γ. Its defaults: γ = 1 (``--gamma``, MNIST, train_different_losses.py) and
    γ = −0.1 (``--gamma`` of the CelebA-HQ and AFHQ unlearn_main.py), a negative γ that attracts instead of
    repelling; the repository README runs MNIST with γ = 1.2 (neg_l2) and CelebA-HQ with γ = 0.8 (exp).

    params: a list of tensors (one dtype of float32, float64, bfloat16, float16 and one device; any strides).
    anchors: a list of tensors (K = 1), a list of K such lists, or a ``RepulsionAnchors`` (precomputed: the fast
    path for K > 1). The anchors get no gradient. Returns a 0-dim tensor in the accumulation dtype (float32 for
    float32/bfloat16/float16 params, float64 for float64).
    """
    _checks.check_choice(OP, "kind", kind, reference.KINDS)
    _checks.check_choice(OP, "normalize", normalize, reference.NORMALIZE)
    gamma = _checks.number(OP, "gamma", gamma)
    params = _as_list("params", params)
    if not isinstance(anchors, RepulsionAnchors):
        anchors = RepulsionAnchors(anchors)
    _check_params(params, anchors)
    chosen = _registry.pick(OP, impl, params[0], "params")
    means = anchors.means
    if chosen == "reference":
        sums = torch.stack([((p.double() - m.double()) ** 2).sum() for p, m in zip(params, means)])
    else:
        sums = _registry.kernel("repulsion", chosen, "fwd")(params, means)
    _check_sums(sums, params, means)  # in the dtype the sums were accumulated in: its overflow names it
    sums = sums.double()
    weights = torch.tensor([anchors.k / p.numel() for p in params], dtype=torch.float64, device=sums.device)
    r = ((sums * weights).sum() + anchors.const) * reference.scale(normalize, len(params), anchors.k)
    if kind == "inverse" and not torch.compiler.is_compiling() and _checks.check_finite_enabled(r.device) \
            and bool(r.detach() == 0):
        _checks.fail(OP, "params", "params that differ from the anchors (kind='inverse' is γ/R, infinite at R = 0)",
                     "R = 0")
    return reference.loss(r, kind, gamma).to(acc_dtype(params[0].dtype))
