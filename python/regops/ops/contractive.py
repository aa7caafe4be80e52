"""Contractive penalties: the squared Frobenius norm of an input Jacobian, ‖∂f(x)/∂x‖²_F, per sample.

- Rifai et al., "Contractive Auto-Encoders: Explicit Invariance During Feature Extraction" (ICML 2011): the CAE adds
  λ·‖J_f(x)‖²_F of the *encoder* f(x) = s(Wx + b) to the reconstruction loss (``cae_encoder_penalty``).
- Alain & Bengio, "What Regularized Auto-Encoders Learn from the Data Generating Distribution" (ICLR 2013 / JMLR
  2014): the contraction of the *reconstruction* r(x) = g(f(x)), λ·‖∂r/∂x‖²_F (the CRAE), makes r(x) − x estimate
  σ²·∂log p/∂x as the penalty vanishes (``sigmoid_ae_jacobian_penalty`` for the one-hidden-layer case).
- ``contractive_penalty``: the same norm for any per-sample function, exactly (torch.func) or by Hutchinson's
  estimator.

Official code the closed forms are checked against (tests/test_contractive.py transcribes both):
- LISA DeepLearningTutorials ``code/cA.py``, class ``cA``: ``get_jacobian`` (J = h(1−h)·W with W of shape (D, H),
  units in the columns) and ``get_cost_updates`` (``L_jacob = T.sum(J ** 2) / n_batchsize``);
- pylearn2 ``pylearn2/models/autoencoder.py``, ``ContractiveAutoencoder.contraction_penalty``:
  ``dot(sqr(act_grad), sqr(W).sum(axis=0)).sum() / X.shape[0]``, W of shape (nvis, nhid).

Reference impl only: each is a few matmuls or a torch.func transform that torch already fuses."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .. import _checks, _registry
from .._constants import acc_dtype

_REDUCTIONS = ("mean", "sum", "none")


def _floating(op: str, arg: str, t) -> torch.Tensor:
    _checks.check_tensor(op, arg, t)
    if not t.is_floating_point():
        _checks.fail(op, arg, "a floating-point tensor", f"dtype {_checks.dtype_name(t.dtype)}", TypeError)
    return t


def _like(op: str, arg: str, t: torch.Tensor, ref: torch.Tensor, ref_arg: str) -> None:
    if t.device != ref.device:
        _checks.fail(op, arg, f"device {ref.device} (as {ref_arg})", f"device {t.device}", RuntimeError)
    if t.dtype != ref.dtype:
        _checks.fail(op, arg, f"dtype {_checks.dtype_name(ref.dtype)} (as {ref_arg})",
                     f"dtype {_checks.dtype_name(t.dtype)}", TypeError)


def _batch(op: str, arg: str, t: torch.Tensor, what: str) -> None:
    if t.shape[0] == 0:
        _checks.fail(op, arg, f"{what} with B >= 1", f"shape {tuple(t.shape)}")


def _reduce(per: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per


def _check_out(op: str, out, batch: int, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != batch:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        _checks.fail(op, "fn", f"a tensor of shape ({batch}, ...) {what}", got)
    if not out.is_floating_point():
        _checks.fail(op, "fn", "a floating-point output", f"dtype {_checks.dtype_name(out.dtype)}", TypeError)
    return out


def contractive_penalty(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], *, method: str = "exact",
                        n_samples: int = 1, reduction: str = "mean", generator: Optional[torch.Generator] = None,
                        impl=None) -> torch.Tensor:
    """Per sample ‖∂fn(x)_i/∂x_i‖²_F, the squared Frobenius norm of fn's input Jacobian, reduced over the batch.

    ``x``: (B, ...) floating, B >= 1, any trailing shape; ``fn`` maps (B, ...) -> (B, ...) (any trailing output
    shape). fn must treat samples independently: no mixing across the batch (no BatchNorm in train mode, no
    attention over the batch), and deterministic (dropout off) — the exact method feeds each sample alone, the
    Hutchinson one relies on the batch Jacobian being block diagonal.

    - ``method="exact"``: ``torch.func.vmap(torch.func.jacrev(...))`` over the samples, each sample fed to fn as a
      batch of one; builds the (B, out, in) Jacobian, so for moderate sizes only.
    - ``method="hutchinson"``: E_v ‖J v‖² = ‖J‖²_F with v ~ N(0, I) in input space, one ``torch.func.jvp`` on the
      whole batch per draw, averaged over ``n_samples`` draws (unbiased; variance 2‖JᵀJ‖²_F / n_samples per
      sample). v is drawn with ``generator`` (on x's device; the global RNG when None), in float32 for low
      precision inputs.

    ``reduction``: "mean" over the batch (Rifai's divide-by-batch), "sum", or "none" (shape (B,)). The result is in
    x's dtype (float32 for bfloat16/float16 inputs) and differentiable with respect to x and to fn's parameters,
    so it can be added to a loss. Reference impl only."""
    op = "contractive_penalty"
    _floating(op, "x", x)
    _registry.resolve_impl(op, impl, x.device)
    if not callable(fn):
        _checks.fail(op, "fn", "a callable", type(fn).__name__, TypeError)
    _checks.check_choice(op, "method", method, ("exact", "hutchinson"))
    _checks.check_choice(op, "reduction", reduction, _REDUCTIONS)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int):
        _checks.fail(op, "n_samples", "an int >= 1", f"{type(n_samples).__name__} {n_samples!r}", TypeError)
    if n_samples < 1:
        _checks.fail(op, "n_samples", "an int >= 1", repr(n_samples))
    if x.dim() < 1:
        _checks.fail(op, "x", "a batch (B, ...)", "a 0-D tensor")
    _batch(op, "x", x, "a batch (B, ...)")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            _checks.fail(op, "generator", "a torch.Generator or None", type(generator).__name__, TypeError)
        if method == "hutchinson" and generator.device.type != x.device.type:
            _checks.fail(op, "generator", f"a generator on {x.device.type} (as x)",
                         f"a generator on {generator.device}", RuntimeError)
    _checks.check_finite_eager(op, "x", x.detach())
    B = x.shape[0]
    acc = acc_dtype(x.dtype)

    if method == "exact":
        def one(xi):
            out = _check_out(op, fn(xi.unsqueeze(0)), 1, "for a sample fed as a batch of one")
            return out.squeeze(0)

        jac = torch.func.vmap(torch.func.jacrev(one))(x)  # (B, *out, *in)
        per = jac.to(acc).reshape(B, -1).square().sum(1)
        return _reduce(per, reduction)

    def batch(z):
        return _check_out(op, fn(z), B, f"for x of batch {B}")

    per = None
    for _ in range(n_samples):
        v = torch.randn(x.shape, generator=generator, dtype=acc, device=x.device).to(x.dtype)
        _, jv = torch.func.jvp(batch, (x,), (v,))
        sq = jv.to(acc).reshape(B, -1).square().sum(1)
        per = sq if per is None else per + sq
    return _reduce(per / n_samples, reduction)


def _check_finite_weights(op: str, named) -> None:
    for arg, t in named:
        _checks.check_finite_eager(op, arg, t.detach())


def sigmoid_ae_jacobian_penalty(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, *,
                                reduction: str = "mean", impl=None) -> torch.Tensor:
    """‖∂r/∂x‖²_F per sample, closed form, for the one-hidden-layer auto-encoder with a sigmoid encoder and a
    *linear* decoder, r(x) = W_dec·s(W_enc x + b_enc) + c (Alain & Bengio's contractive reconstruction penalty).

    Shapes as nn.Linear stores them: ``x`` (B, D), ``W_enc`` (H, D), ``b_enc`` (H,), ``W_dec`` (D, H); the decoder
    bias c does not enter the Jacobian. With h = s(W_enc x + b_enc) and d = h ∘ (1 − h), ∂r/∂x = W_dec diag(d)
    W_enc, so ‖∂r/∂x‖²_F = dᵀ((W_decᵀW_dec) ∘ (W_enc W_encᵀ)) d: O(B·H² + H²·D), never a (B, D, D) tensor. The
    H×H matrix is positive semidefinite (Schur product of two Gram matrices), so the value is >= 0; rounding
    can leave a tiny negative, which is clamped to 0 (where the true value is 0, so is its gradient).

    A sigmoid *decoder* r = s(W_dec h + c) has ∂r/∂x = diag(e) W_dec diag(d) W_enc with e = r ∘ (1 − r), which
    depends on the sample through e as well; that is not this op (use ``contractive_penalty`` for it).

    ``reduction``: "mean" (over the batch), "sum", "none" (shape (B,)). Computed in x's dtype (float32 for
    bfloat16/float16). Reference impl only."""
    op = "sigmoid_ae_jacobian_penalty"
    _floating(op, "x", x)
    _registry.resolve_impl(op, impl, x.device)
    _checks.check_choice(op, "reduction", reduction, _REDUCTIONS)
    for arg, t in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec)):
        _checks.check_tensor(op, arg, t)
    if x.dim() != 2:
        _checks.fail(op, "x", "a 2-D batch (B, D)", f"shape {tuple(x.shape)}")
    B, D = x.shape
    if W_enc.dim() != 2 or W_enc.shape[1] != D:
        _checks.fail(op, "W_enc", f"shape (H, {D}), the encoder weight as nn.Linear(D, H) stores it (D = x.shape[1]"
                     f" = {D})", f"shape {tuple(W_enc.shape)}")
    H = W_enc.shape[0]
    if b_enc.shape != (H,):
        _checks.fail(op, "b_enc", f"shape ({H},) (H = W_enc.shape[0])", f"shape {tuple(b_enc.shape)}")
    if W_dec.shape != (D, H):
        _checks.fail(op, "W_dec", f"shape ({D}, {H}) = (D, H), the decoder weight as nn.Linear(H, D) stores it",
                     f"shape {tuple(W_dec.shape)}")
    for arg, t in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec)):
        _like(op, arg, t, x, "x")
    _batch(op, "x", x, "a batch (B, D)")
    _check_finite_weights(op, (("x", x), ("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec)))
    acc = acc_dtype(x.dtype)
    xa, We, be, Wd = x.to(acc), W_enc.to(acc), b_enc.to(acc), W_dec.to(acc)
    h = torch.sigmoid(torch.addmm(be, xa, We.t()))  # (B, H)
    d = h * (1 - h)
    M = (Wd.t() @ Wd) * (We @ We.t())  # (H, H)
    per = ((d @ M) * d).sum(1).clamp_min(0)
    return _reduce(per, reduction)


def cae_encoder_penalty(h: torch.Tensor, W: torch.Tensor, *, impl=None) -> torch.Tensor:
    """Rifai's CAE term: the encoder Jacobian's squared Frobenius norm averaged over the batch,
    Σ_n Σ_j (h_nj(1 − h_nj))²·‖W_j‖² / B, for a sigmoid encoder h = s(Wx + b).

    ``h``: (B, H), the sigmoid encoder's outputs (values in [0, 1]; gradients flow through h into the encoder);
    ``W``: (H, D), the encoder weight as nn.Linear(D, H) stores it, row j the weights of unit j. A (D, H) weight
    (cA.py's and pylearn2's layout) raises: pass its transpose.

    Official code: DeepLearningTutorials ``code/cA.py`` (``cA.get_jacobian``, ``cA.get_cost_updates``) and
    pylearn2 ``ContractiveAutoencoder.contraction_penalty``, both with W of shape (D, H) (units in the columns;
    regops sums ‖W_j‖² over the rows of the transposed layout instead). Departure: the Python 3 port of cA.py
    computes ``L_jacob = T.sum(J ** 2) // n_batchsize``, Theano floor division, which floors the value and
    gives a zero gradient (lisa-lab/DeepLearningTutorials#164; the line read ``/`` before the port, as
    pylearn2's does). regops divides truly. Reference impl only."""
    op = "cae_encoder_penalty"
    _floating(op, "h", h)
    _registry.resolve_impl(op, impl, h.device)
    _checks.check_tensor(op, "W", W)
    if h.dim() != 2:
        _checks.fail(op, "h", "a 2-D batch of sigmoid encoder outputs (B, H)", f"shape {tuple(h.shape)}")
    H = h.shape[1]
    if W.dim() != 2:
        _checks.fail(op, "W", f"a 2-D encoder weight (H, D) with H = h.shape[1] = {H}", f"shape {tuple(W.shape)}")
    if W.shape[0] != H:
        hint = " (a (D, H) weight as in cA.py/pylearn2? pass W.t())" if W.shape[1] == H else ""
        _checks.fail(op, "W", f"shape ({H}, D): W.shape[0] == h.shape[1] = {H}, one row per hidden unit as "
                     f"nn.Linear(D, H).weight stores it{hint}", f"shape {tuple(W.shape)}")
    _like(op, "W", W, h, "h")
    _batch(op, "h", h, "a batch (B, H)")
    _check_finite_weights(op, (("h", h), ("W", W)))
    if not torch.compiler.is_compiling() and _checks.check_finite_enabled(h.device) and h.numel():
        lo, hi = torch.aminmax(h.detach())
        if lo.item() < 0 or hi.item() > 1:
            _checks.fail(op, "h", "sigmoid outputs in [0, 1] (pass s(Wx + b), not the pre-activation)",
                         f"values in [{lo.item()}, {hi.item()}]")
    acc = acc_dtype(h.dtype)
    ha = h.to(acc)
    d2 = (ha * (1 - ha)).square()  # (B, H)
    per_unit = W.to(acc).square().sum(1)  # ‖W_j‖², (H,)
    return (d2 @ per_unit).sum() / h.shape[0]
