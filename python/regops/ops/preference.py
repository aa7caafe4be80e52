"""Preference regularizers: DPO/cDPO + SFT (RPO), CREAM's consistency, RRPO, and the KL penalty to a reference
(demonstration-regularized RL), on the chunked fused-linear engine (ops/_fused_linear.py): the B·T·V logits never
exist. ``impl="reference"`` materializes them (regops/reference/preference.py, the oracle)."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import _checks, _registry
from .._constants import acc_dtype
from ..reference import preference as reference
from . import _fused_linear as engine

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
SFT_REDUCTIONS = ("token_mean", "seq_mean", "sum")
KL_MODES = {"forward": reference.FORWARD_KL, "reverse": reference.REVERSE_KL}


# ---- argument checks ----

def _float_tensor(op, arg, t, ndims):
    _checks.check_tensor(op, arg, t, ndims=ndims)
    if t.dtype not in FLOAT_DTYPES:
        _checks.fail(op, arg, "dtype float32, float64 or bfloat16", _checks.describe(t), TypeError)
    return t


def _same_device(op, arg, t, ref, ref_arg):
    if t.device != ref.device:
        _checks.fail(op, arg, f"device {ref.device} (as {ref_arg})", _checks.describe(t), RuntimeError)


def _check_head(op, x_arg, x, w_arg, w, lead):
    """x (*lead, H) against w (V, H); returns V."""
    _float_tensor(op, x_arg, x, (len(lead) + 1,))
    if tuple(x.shape[:-1]) != tuple(lead):
        _checks.fail(op, x_arg, f"leading shape {tuple(lead)} (as targets)", _checks.describe(x))
    _float_tensor(op, w_arg, w, (2,))
    _same_device(op, w_arg, w, x, x_arg)
    if w.dtype != x.dtype:
        _checks.fail(op, w_arg, f"dtype {_checks.dtype_name(x.dtype)} (as {x_arg})", _checks.describe(w), TypeError)
    if w.shape[1] != x.shape[-1]:
        _checks.fail(op, w_arg, f"shape (V, {x.shape[-1]}) (H of {x_arg})", _checks.describe(w))
    if w.shape[0] < 1:
        _checks.fail(op, w_arg, "at least one vocabulary row (V >= 1)", _checks.describe(w))
    return w.shape[0]


def _check_targets(op, targets, vocab, ignore_index, device):
    _checks.check_tensor(op, "targets", targets)
    if targets.dtype != torch.int64:
        _checks.fail(op, "targets", "dtype int64", _checks.describe(targets), TypeError)
    if targets.device != device:
        _checks.fail(op, "targets", f"device {device} (as hidden)", _checks.describe(targets), RuntimeError)
    if torch.compiler.is_compiling() or not _checks.check_finite_enabled(targets.device):
        return
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab))
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        _checks.fail(op, "targets", f"class indices in [0, {vocab}) or ignore_index {ignore_index}",
                     f"{int(targets[idx])} at index {idx}")


def _check_pairs(op, targets):
    _checks.check_tensor(op, "targets", targets, ndims=(2,))
    rows = targets.shape[0]
    if rows == 0 or rows % 2:
        _checks.fail(op, "targets", "an even, non-zero number of rows (2B, T): chosen rows first, then rejected",
                     f"shape {tuple(targets.shape)}")
    if targets.shape[1] == 0:
        _checks.fail(op, "targets", "at least one token per row (2B, T >= 1)", f"shape {tuple(targets.shape)}")
    return rows // 2


def _chunk(op, chunk_size, vocab, device):
    if chunk_size is None:
        return engine.default_chunk_rows(vocab, device)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        _checks.fail(op, "chunk_size", "a positive int (rows of logits per chunk) or None", repr(chunk_size))
    return chunk_size


def _label_smoothing(op, value, B, device, dtype):
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        if value.shape != (B,):
            _checks.fail(op, "label_smoothing", f"a float or a tensor of shape ({B},) (one per pair)",
                         _checks.describe(value))
        if not value.is_floating_point():
            _checks.fail(op, "label_smoothing", "a floating-point tensor", _checks.describe(value), TypeError)
        _same_device(op, "label_smoothing", value, torch.empty(0, device=device), "the inputs")
        if not torch.compiler.is_compiling() and _checks.check_finite_enabled(value.device):
            if not bool(((value >= 0) & (value <= 1)).all()):
                _checks.fail(op, "label_smoothing", "values in [0, 1]", f"min {float(value.min())}, max "
                             f"{float(value.max())}")
        return value.detach().to(dtype)
    return _checks.number(op, "label_smoothing", value, low=0, high=1, what="a number in [0, 1]")


def _check_finite_result(op, args, *values):
    if torch.compiler.is_compiling() or not _checks.check_finite_enabled(values[0].device):
        return
    for v in values:
        if not bool(torch.isfinite(v).all()):
            _checks.fail(op, args, "finite values", "a non-finite log-prob or KL (the input holds NaN/Inf or "
                         "overflows)")


def _needs(x, weight):
    on = torch.is_grad_enabled()
    return on and x.requires_grad, on and weight is not None and weight.requires_grad


def _token_logps(op, x, weight, targets, ignore_index, chunk, chosen, need_dx, need_dweight, ref_x=None,
                 ref_weight=None, kl_mode=0):
    """Per-token (logp, kl, ref_logp), each (N,), through the engine; differentiable in x and weight."""
    save = need_dx and not need_dweight and kl_mode == 0  # a frozen head: keep d logp/dx, skip the second pass
    logp, kl, ref_logp, _ = torch.ops.regops.fused_linear_logprobs(x, weight, targets, ref_x, ref_weight, kl_mode,
                                                                   ignore_index, chunk, chosen, save)
    return logp, kl, ref_logp


# ---- DPO / cDPO / RPO on log-probs ----

def preference_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *, beta: float = 0.1,
                    label_smoothing=0.0, sft_weight: float = 0.0, chosen_nll: Optional[torch.Tensor] = None,
                    reduction: str = "mean", impl=None):
    """DPO with conservative (cDPO) label smoothing, plus an SFT term (RPO), on summed sequence log-probs (B,).

    loss_i = −(1−ε_i)·logσ(Δ_i) − ε_i·logσ(−Δ_i) + sft_weight·nll_i,  Δ_i = β·[(π_c − ref_c) − (π_r − ref_r)]
    - ``label_smoothing`` ε: a float or a per-pair tensor (B,) (CREAM: ε = 1 − C, see ``cream_consistency``).
    - ``nll_i`` is ``chosen_nll`` as given ((B,) or a scalar, e.g. TRL's token-mean NLL: TRL's ``rpo_alpha``), else
      −policy_chosen_logps (the official RPO, alignment-handbook ``rpo_trainer.py``: ``sft_weight = β·η``).
    - ``reduction``: "mean" (TRL, RPO), "sum" or "none".
    Returns (loss, chosen_rewards, rejected_rewards); the rewards are β·(π − ref), detached. The log-prob level is
    cheap elementwise math: the reference impl only (``fused_linear_preference_loss`` is the fused one).
    """
    op = "preference_loss"
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    tensors = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    for name, t in zip(names, tensors):
        _float_tensor(op, name, t, (1,))
    _registry.resolve_impl(op, impl, policy_chosen_logps.device)
    B = policy_chosen_logps.shape[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.shape != (B,):
            _checks.fail(op, name, f"shape ({B},) (as policy_chosen_logps: one value per pair)", _checks.describe(t))
        _same_device(op, name, t, policy_chosen_logps, names[0])
    beta = _checks.number(op, "beta", beta, low=0, low_open=True, what="a finite positive number")
    sft_weight = _checks.number(op, "sft_weight", sft_weight)
    _checks.check_choice(op, "reduction", reduction, ("mean", "sum", "none"))
    if B == 0 and reduction == "mean":  # the mean of no pair is NaN
        _checks.fail(op, names[0], "at least one pair for reduction='mean'", _checks.describe(policy_chosen_logps))
    acc = acc_dtype(policy_chosen_logps.dtype)
    eps = _label_smoothing(op, label_smoothing, B, policy_chosen_logps.device, acc)
    for name, t in zip(names, tensors):
        _checks.check_finite_eager(op, name, t.detach())
    pc, pr = policy_chosen_logps.to(acc), policy_rejected_logps.to(acc)
    rc, rr = ref_chosen_logps.detach().to(acc), ref_rejected_logps.detach().to(acc)
    losses = reference.dpo_losses(pc - rc, pr - rr, beta, eps)
    if sft_weight != 0:
        if chosen_nll is None:
            nll = -pc
        else:
            _float_tensor(op, "chosen_nll", chosen_nll, (0, 1))
            if chosen_nll.dim() == 1 and chosen_nll.shape != (B,):
                _checks.fail(op, "chosen_nll", f"a scalar or shape ({B},)", _checks.describe(chosen_nll))
            _same_device(op, "chosen_nll", chosen_nll, policy_chosen_logps, names[0])
            _checks.check_finite_eager(op, "chosen_nll", chosen_nll.detach())
            nll = chosen_nll.to(acc)
        losses = losses + sft_weight * nll
    loss = losses.mean() if reduction == "mean" else losses.sum() if reduction == "sum" else losses
    return loss, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


# ---- the fused-linear ops ----

def fused_linear_preference_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                                 ref_logps: Optional[torch.Tensor] = None, ref_hidden: Optional[torch.Tensor] = None,
                                 ref_weight: Optional[torch.Tensor] = None, beta: float = 0.1,
                                 sft_weight: float = 0.0, sft_reduction: str = "token_mean", label_smoothing=0.0,
                                 ignore_index: int = -100, chunk_size: Optional[int] = None, impl=None):
    """DPO/cDPO + SFT (RPO) straight from the last hidden states: ``hidden (2B, T, H) @ weight (V, H)ᵀ`` are the
    policy logits, never materialized. Rows: the B chosen sequences first, then the B rejected ones;
    ``targets (2B, T)`` int64 are the already shifted next tokens, ``ignore_index`` for prompt and padding.

    - The reference: ``ref_logps (2B,)`` precomputed summed log-probs (which TRL's Liger path refuses), or
      ``ref_hidden (2B, T, H')`` with ``ref_weight (V, H')`` (run on the same engine, without gradient), or neither
      (reference-free: ref log-probs 0).
    - ``label_smoothing``: cDPO's ε, a float or a per-pair tensor (B,) (CREAM).
    - ``sft_weight > 0`` is RPO; one log-sum-exp per token serves both terms. ``sft_reduction`` picks the
      published normalization of the chosen NLL:
        "sum"        the official RPO "cumulative" version (YSLIU627/Regularized-Preference-Optimization,
                     alignment-handbook ``rpo_trainer.py``): mean over pairs of the summed NLL; its recipe is
                     ``sft_weight = β·η`` with η 0.005, β 0.01;
        "seq_mean"   the official "average" version (its OpenRLHF trainer, which its README calls generally
                     better): mean over pairs of each sequence's token-mean NLL; weight ``nll_loss_coef``
                     (0.2 with β 0.5 in its script);
        "token_mean" TRL's ``rpo_alpha`` (``loss_type=["sigmoid", "sft"]``) and Liger's ``compute_nll_loss``: the
                     NLL averaged over every non-ignored chosen token of the batch.
    - loss = mean over pairs of the cDPO term + sft_weight·SFT. A sequence without a valid token contributes 0.
    - dweight and the LSE accumulate in float32 (float64 for float64 inputs) whatever the input dtype: unlike
      Liger's bf16 dweight (Liger #414, #512).
    - Memory: O(chunk_size·V) for the logits. With a trainable head the gradient takes a second pass that
      recomputes each chunk's logits (one extra GEMM; the sequence-level DPO coefficient is known only after
      every token is seen). With a frozen head (``weight.requires_grad=False``, as under LoRA) one pass.
    Returns (loss, chosen_rewards, rejected_rewards), rewards β·(π − ref) per pair, detached.
    """
    op = "fused_linear_preference_loss"
    B = _check_pairs(op, targets)
    vocab = _check_head(op, "hidden", hidden, "weight", weight, targets.shape)
    _check_targets(op, targets, vocab, ignore_index, hidden.device)
    if ref_logps is not None:
        if ref_hidden is not None or ref_weight is not None:
            _checks.fail(op, "ref_logps", "either ref_logps or ref_hidden and ref_weight", "both")
        _float_tensor(op, "ref_logps", ref_logps, (1,))
        if ref_logps.shape != (2 * B,):
            _checks.fail(op, "ref_logps", f"shape ({2 * B},) (one summed log-prob per row of targets)",
                         _checks.describe(ref_logps))
        _same_device(op, "ref_logps", ref_logps, hidden, "hidden")
        _checks.check_finite_eager(op, "ref_logps", ref_logps.detach())
    elif (ref_hidden is None) != (ref_weight is None):
        _checks.fail(op, "ref_weight" if ref_weight is None else "ref_hidden", "ref_hidden and ref_weight together",
                     "only one of them")
    elif ref_hidden is not None:
        if _check_head(op, "ref_hidden", ref_hidden, "ref_weight", ref_weight, targets.shape) != vocab:
            _checks.fail(op, "ref_weight", f"{vocab} vocabulary rows (as weight)", _checks.describe(ref_weight))
        _same_device(op, "ref_hidden", ref_hidden, hidden, "hidden")
    beta = _checks.number(op, "beta", beta, low=0, low_open=True, what="a finite positive number")
    sft_weight = _checks.number(op, "sft_weight", sft_weight)
    _checks.check_choice(op, "sft_reduction", sft_reduction, SFT_REDUCTIONS)
    acc = acc_dtype(hidden.dtype)
    eps = _label_smoothing(op, label_smoothing, B, hidden.device, acc)
    chunk = _chunk(op, chunk_size, vocab, hidden.device)
    chosen = _registry.pick(op, impl, hidden, "hidden")
    if chosen == "reference":
        out = reference.fused_linear_preference(hidden, weight, targets, ref_logps, ref_hidden, ref_weight, beta,
                                                sft_weight, sft_reduction, eps, ignore_index)
        _check_finite_result(op, "hidden/weight", *out)
        return out
    rows, T = targets.shape
    y = targets.reshape(-1)
    x = hidden.reshape(rows * T, -1)
    if ref_logps is None and ref_hidden is not None:
        with torch.no_grad():
            ref_tok, _, _ = _token_logps(op, ref_hidden.reshape(rows * T, -1), ref_weight, y, ignore_index, chunk,
                                         chosen, False, False)
        _check_finite_result(op, "ref_hidden/ref_weight", ref_tok)
        ref_logps = ref_tok.view(rows, T).sum(-1)
    elif ref_logps is None:
        ref_logps = hidden.new_zeros((rows,), dtype=acc)
    need_dx, need_dweight = _needs(hidden, weight)
    tok, _, _ = _token_logps(op, x, weight, y, ignore_index, chunk, chosen, need_dx, need_dweight)
    _check_finite_result(op, "hidden/weight", tok)
    valid = targets != ignore_index
    return reference.preference_from_token_logps(tok.view(rows, T), valid, ref_logps.detach(), beta, eps,
                                                 sft_weight, sft_reduction)


def rrpo_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ref_hidden: torch.Tensor,
              ref_weight: torch.Tensor, segments: torch.Tensor, *, beta: float = 0.1, alpha: float = 0.01,
              ignore_index: int = -100, chunk_size: Optional[int] = None, impl=None):
    """RRPO (Refined Regularized Preference Optimization, pritamqu/RRPO ``llava/losses.py``), fused-linear over the
    policy and the reference: rows as ``fused_linear_preference_loss`` (chosen first, then rejected).

    - δ_t = log π(y_t) − log π_ref(y_t); ``segments (2B, T)`` int64 gives each token its segment id: k > 0 for the
      k-th span where chosen and rejected differ (the official ``<MASK>`` spans), 0 elsewhere. A segment's margin is
      the sum of δ_t over its tokens, and the DPO logit is Σ_k (m^w_k − m^l_k), the sum over the segments.
    - Plus α·Σ over the chosen response tokens (target not ignored) of the full-vocabulary KL(π_ref‖π)_t, summed
      without length normalization, as the official code does; the rejected KL is not in the loss.
    - loss = mean over pairs of −logσ(β·logit) + α·KL_chosen. Defaults β 0.1, α 0.01 (the official run scripts;
      its dataclass default α is 0.1).
    - Departures: tokens whose target is ignore_index add no δ even inside a segment (the official code relies
      on its signs being 0 there); the reference log-probs come from log_softmax, so an underflowing π_ref gives
      0, not the official softmax().log()'s NaN.
    Returns (loss, chosen_rewards, rejected_rewards) = (…, β·Σ_k m^w_k, β·Σ_k m^l_k), the rewards detached.
    The backward recomputes the chunks (policy and reference logits) in a second pass.
    """
    op = "rrpo_loss"
    _check_pairs(op, targets)
    vocab = _check_head(op, "hidden", hidden, "weight", weight, targets.shape)
    if _check_head(op, "ref_hidden", ref_hidden, "ref_weight", ref_weight, targets.shape) != vocab:
        _checks.fail(op, "ref_weight", f"{vocab} vocabulary rows (as weight)", _checks.describe(ref_weight))
    _same_device(op, "ref_hidden", ref_hidden, hidden, "hidden")
    _check_targets(op, targets, vocab, ignore_index, hidden.device)
    _checks.check_tensor(op, "segments", segments)
    if segments.shape != targets.shape or segments.dtype != torch.int64:
        _checks.fail(op, "segments", f"an int64 tensor of shape {tuple(targets.shape)} (as targets)",
                     _checks.describe(segments), TypeError if segments.shape == targets.shape else ValueError)
    _same_device(op, "segments", segments, hidden, "hidden")
    beta = _checks.number(op, "beta", beta, low=0, low_open=True, what="a finite positive number")
    alpha = _checks.number(op, "alpha", alpha)
    chunk = _chunk(op, chunk_size, vocab, hidden.device)
    chosen = _registry.pick(op, impl, hidden, "hidden")
    if chosen == "reference":
        out = reference.rrpo(hidden, weight, targets, ref_hidden, ref_weight, segments, beta, alpha, ignore_index)
        _check_finite_result(op, "hidden/weight/ref_hidden/ref_weight", *out)
        return out
    rows, T = targets.shape
    y = targets.reshape(-1)
    rx = ref_hidden.detach().reshape(rows * T, -1)
    if rx.dtype != hidden.dtype:
        rx = rx.to(hidden.dtype)
    need_dx, need_dweight = _needs(hidden, weight)
    tok, kl, ref_tok = _token_logps(op, hidden.reshape(rows * T, -1), weight, y, ignore_index, chunk, chosen,
                                    need_dx, need_dweight, rx, ref_weight.detach().to(hidden.dtype),
                                    reference.FORWARD_KL)
    valid = targets != ignore_index
    # only the values the loss reads, as on the reference (whose check sees the outputs): the log-probs of the
    # tokens in a segment, the KL of the chosen responses' tokens
    tok_read = ((segments != 0) & valid).reshape(-1)
    kl_read = (valid & (torch.arange(rows, device=valid.device) < rows // 2)[:, None]).reshape(-1)
    _check_finite_result(op, "hidden/weight/ref_hidden/ref_weight", torch.where(tok_read, tok, 0),
                         torch.where(tok_read, ref_tok, 0), torch.where(kl_read, kl, 0))
    return reference.rrpo_from_token_logps(tok.view(rows, T), ref_tok.view(rows, T), kl.view(rows, T), valid,
                                           segments, beta, alpha)


def kl_to_reference(input: torch.Tensor, ref: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                    weight: Optional[torch.Tensor] = None, ref_weight: Optional[torch.Tensor] = None,
                    direction: str = "forward", reduction: str = "mean", chunk_size: Optional[int] = None,
                    impl=None):
    """The token-wise KL penalty between a policy and a reference (behaviour-cloned) policy: the regularizer of
    demonstration-regularized RL (E[Σ r − λ·KL(π‖π_BC)]) and of RRPO, on the fused-linear engine.

    - The policy: ``input (..., V)`` logits, or hidden states ``input (..., H)`` with ``weight (V, H)`` (the
      logits never exist). The reference likewise: ``ref (..., V)`` logits or log-probs (they are normalized
      again), or ``ref (..., H')`` with ``ref_weight (V, H')``. The reference gets no gradient.
    - ``direction``: "forward" KL(π_ref‖π) = Σ_v π_ref (log π_ref − log π) (RRPO's, mass-covering), or "reverse"
      KL(π‖π_ref) (the demonstration-regularized RL paper's, and TRL's KL penalty).
    - ``mask (...)`` bool: the tokens that count (None: all). ``reduction``: "mean" over the masked tokens (0 when
      there is none), "sum", or "none" (per token, 0 where masked out).
    "mean"/"sum" compute the gradient in the forward, one pass; "none" recomputes the chunks in its backward.
    """
    op = "kl_to_reference"
    _checks.check_choice(op, "direction", direction, tuple(KL_MODES))
    _checks.check_choice(op, "reduction", reduction, ("mean", "sum", "none"))
    _float_tensor(op, "input", input, None)
    if input.dim() < 1:
        _checks.fail(op, "input", "a tensor of shape (..., V) or (..., H)", _checks.describe(input))
    lead = tuple(input.shape[:-1])
    if weight is not None:
        vocab = _check_head(op, "input", input, "weight", weight, lead)
    else:
        vocab = input.shape[-1]
        if vocab < 1:
            _checks.fail(op, "input", "at least one class (..., V >= 1)", _checks.describe(input))
    if ref_weight is not None:
        if _check_head(op, "ref", ref, "ref_weight", ref_weight, lead) != vocab:
            _checks.fail(op, "ref_weight", f"{vocab} vocabulary rows (the policy's V)", _checks.describe(ref_weight))
    else:
        _float_tensor(op, "ref", ref, None)
        if tuple(ref.shape) != lead + (vocab,):
            _checks.fail(op, "ref", f"shape {lead + (vocab,)} (the policy's logits)", _checks.describe(ref))
    _same_device(op, "ref", ref, input, "input")
    if mask is None:
        mask = torch.ones(lead, dtype=torch.bool, device=input.device)
    else:
        _checks.check_tensor(op, "mask", mask)
        if mask.dtype != torch.bool or tuple(mask.shape) != lead:
            _checks.fail(op, "mask", f"a bool tensor of shape {lead}", _checks.describe(mask),
                         TypeError if tuple(mask.shape) == lead else ValueError)
        _same_device(op, "mask", mask, input, "input")
    kl_mode = KL_MODES[direction]
    chunk = _chunk(op, chunk_size, vocab, input.device)
    chosen = _registry.pick(op, impl, input, "input")
    if chosen == "reference":
        out = reference.kl_to_reference(input, weight, ref, ref_weight, mask, kl_mode, reduction)
        _check_finite_result(op, "input/ref", out)
        return out
    n = math.prod(lead)
    x = input.reshape(n, input.shape[-1])
    rx = ref.detach().reshape(n, ref.shape[-1])
    if rx.dtype != input.dtype:
        rx = rx.to(input.dtype)
    rw = ref_weight.detach().to(input.dtype) if ref_weight is not None else None
    m = mask.reshape(n)
    y = torch.where(m, 0, -1).to(torch.int64)  # any class: only the KL is used; -1 marks the skipped rows
    acc = acc_dtype(input.dtype)
    need_dx, need_dweight = _needs(input, weight)
    if reduction == "none":
        _, kl, _ = _token_logps(op, x, weight, y, -1, chunk, chosen, need_dx, need_dweight, rx, rw, kl_mode)
        _check_finite_result(op, "input/ref", kl)
        return kl.view(lead)
    coef_kl = m.to(acc)
    if reduction == "mean":
        coef_kl = coef_kl / m.sum().clamp(min=1).to(acc)
    loss, _, kl, _, _ = torch.ops.regops.fused_linear_linear_loss(
        x, weight, y, rx, rw, torch.zeros_like(coef_kl), coef_kl, kl_mode, -1, chunk, chosen, need_dx, need_dweight)
    _check_finite_result(op, "input/ref", kl)
    return loss


def cream_consistency(prev_rewards: torch.Tensor, cur_rewards: torch.Tensor, method: str = "kendall", *,
                      impl=None) -> torch.Tensor:
    """CREAM's consistency rate C per prompt between two rankings of the same n responses, batched: rewards
    (B, n) under the previous and the current model (Raibows/CREAM ``cal_consistency.py``).

    - "kendall": C = (τ_b + 1)/2 with Kendall's τ-b, equal to ``scipy.stats.kendalltau(prev, cur)`` per row.
    - "spearman": C = (ρ + 1)/2, ρ Spearman's (average ranks for ties, as ``scipy.stats.spearmanr``).
    - A row where either ranking is all tied (or n = 1) has no correlation: C = 0.5 (scipy gives NaN).
    - Departure: the official code ranks with ``rankdata(method="ordinal")`` first, which breaks ties by position;
      pass distinct rewards to match it exactly.
    The CREAM loss is cDPO with ε = 1 − C per pair::

        C = regops.cream_consistency(prev_rewards, cur_rewards)
        loss, *_ = regops.preference_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=1 - C)

    Returns C (B,) in the rewards' accumulation dtype, no gradient. Reference impl only (an (n, n) sign table).
    """
    op = "cream_consistency"
    _checks.check_choice(op, "method", method, ("kendall", "spearman"))
    _float_tensor(op, "prev_rewards", prev_rewards, (2,))
    _float_tensor(op, "cur_rewards", cur_rewards, (2,))
    if cur_rewards.shape != prev_rewards.shape:
        _checks.fail(op, "cur_rewards", f"shape {tuple(prev_rewards.shape)} (as prev_rewards)",
                     _checks.describe(cur_rewards))
    _same_device(op, "cur_rewards", cur_rewards, prev_rewards, "prev_rewards")
    _registry.resolve_impl(op, impl, prev_rewards.device)
    for name, t in (("prev_rewards", prev_rewards), ("cur_rewards", cur_rewards)):
        _checks.check_finite_eager(op, name, t.detach())
    acc = torch.float64 if torch.float64 in (prev_rewards.dtype, cur_rewards.dtype) else torch.float32
    a, b = prev_rewards.detach().to(acc), cur_rewards.detach().to(acc)
    if method == "kendall":
        sa = torch.sign(a[:, :, None] - a[:, None, :])
        sb = torch.sign(b[:, :, None] - b[:, None, :])
        n = a.shape[1]
        pairs = n * (n - 1)  # ordered pairs: every count below is doubled alike
        num = (sa * sb).sum((1, 2))
        den = torch.sqrt((pairs - (sa == 0).sum((1, 2)) + n).to(acc) * (pairs - (sb == 0).sum((1, 2)) + n).to(acc))
    else:
        ra, rb = _average_ranks(a), _average_ranks(b)
        ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
        num = (ra * rb).sum(1)
        den = torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    corr = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    return (corr.clamp(-1, 1) + 1) / 2


def _average_ranks(x):
    """Ranks 1..n per row, ties sharing their average rank (scipy.stats.rankdata's "average")."""
    less = (x[:, None, :] < x[:, :, None]).sum(-1)
    equal = (x[:, None, :] == x[:, :, None]).sum(-1)
    return less.to(x.dtype) + (equal.to(x.dtype) + 1) / 2
