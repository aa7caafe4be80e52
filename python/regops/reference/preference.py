"""The preference losses with the logits materialized: the oracle of the chunked engine, the fallback where no
kernel runs, and the eager baseline of the bench. Every formula on log-probs lives here once; the engine path
(ops/preference.py) feeds the same functions its per-token log-probs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._constants import acc_dtype

FORWARD_KL, REVERSE_KL = 1, 2


# ---- formulas on log-probs (shared with the engine path) ----

def dpo_losses(chosen_logratio, rejected_logratio, beta, label_smoothing):
    """Per-pair sigmoid DPO with conservative (cDPO) smoothing ε: −(1−ε)·logσ(Δ) − ε·logσ(−Δ), Δ = β·(c − r)."""
    delta = beta * (chosen_logratio - rejected_logratio)
    return -(1 - label_smoothing) * F.logsigmoid(delta) - label_smoothing * F.logsigmoid(-delta)


def sft_term(token_logp, valid, sft_reduction):
    """The chosen NLL, in one of the three published normalizations (token_logp, valid: (B, T) chosen rows).
    A row (or a batch) without a valid token contributes 0."""
    if sft_reduction == "sum":          # official RPO, "cumulative": mean over pairs of the summed NLL
        return -token_logp.sum(-1).mean()
    if sft_reduction == "seq_mean":     # official RPO, "average": mean over pairs of the per-sequence token mean
        n = valid.sum(-1).clamp(min=1).to(token_logp.dtype)
        return -(token_logp.sum(-1) / n).mean()
    n = valid.sum().clamp(min=1).to(token_logp.dtype)  # token_mean: TRL rpo_alpha / Liger compute_nll_loss
    return -token_logp.sum() / n


def preference_from_token_logps(token_logp, valid, ref_seq_logps, beta, label_smoothing, sft_weight, sft_reduction):
    """(loss, chosen_rewards, rejected_rewards) from per-token policy log-probs (2B, T) (0 where not valid) and the
    reference's summed log-probs (2B,)."""
    B = token_logp.shape[0] // 2
    seq = token_logp.sum(-1)
    ref = ref_seq_logps.to(seq.dtype)
    chosen, rejected = seq[:B] - ref[:B], seq[B:] - ref[B:]
    loss = dpo_losses(chosen, rejected, beta, label_smoothing).mean()
    if sft_weight != 0:
        loss = loss + sft_weight * sft_term(token_logp[:B], valid[:B], sft_reduction)
    return loss, (beta * chosen).detach(), (beta * rejected).detach()


def rrpo_from_token_logps(token_logp, ref_token_logp, token_kl, valid, segments, beta, alpha):
    """RRPO (pritamqu/RRPO): −logσ(β·Σ_segments (m_w − m_l)) + α·Σ_chosen tokens KL(π_ref‖π)_t, mean over pairs.
    A segment's margin m is the sum of δ_t = log π − log π_ref over its tokens (segment id > 0)."""
    B = token_logp.shape[0] // 2
    in_segment = (segments != 0) & valid
    delta = torch.where(in_segment, token_logp - ref_token_logp, torch.zeros_like(token_logp))
    margin = delta.sum(-1)
    chosen, rejected = margin[:B], margin[B:]
    kl_chosen = torch.where(valid[:B], token_kl[:B], torch.zeros_like(token_kl[:B])).sum(-1)
    loss = (-F.logsigmoid(beta * (chosen - rejected)) + alpha * kl_chosen).mean()
    return loss, (beta * chosen).detach(), (beta * rejected).detach()


def kl_reduce(token_kl, mask, reduction):
    token_kl = torch.where(mask, token_kl, torch.zeros_like(token_kl))
    if reduction == "sum":
        return token_kl.sum()
    if reduction == "mean":
        return token_kl.sum() / mask.sum().clamp(min=1).to(token_kl.dtype)
    return token_kl


# ---- materialized logits ----

def _log_softmax(x, weight):
    logits = x if weight is None else x @ weight.t()
    return torch.log_softmax(logits.to(acc_dtype(logits.dtype)), dim=-1)


def token_logps(x, weight, targets, ignore_index):
    """log π(y_t) per token (…,), 0 where the target is ignore_index; the (…, V) logits exist in full."""
    logp = _log_softmax(x, weight)
    valid = targets != ignore_index
    y = torch.where(valid, targets, torch.zeros_like(targets))
    tok = logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, tok, torch.zeros_like(tok)), valid, logp


def token_kl(log_p, log_q, kl_mode):
    if kl_mode == FORWARD_KL:
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def fused_linear_preference(hidden, weight, targets, ref_logps, ref_hidden, ref_weight, beta, sft_weight,
                            sft_reduction, label_smoothing, ignore_index):
    tok, valid, _ = token_logps(hidden, weight, targets, ignore_index)
    if ref_logps is None:
        if ref_hidden is not None:
            with torch.no_grad():
                ref_tok, _, _ = token_logps(ref_hidden, ref_weight, targets, ignore_index)
            ref_logps = ref_tok.sum(-1)
        else:
            ref_logps = torch.zeros(tok.shape[0], dtype=tok.dtype, device=tok.device)
    return preference_from_token_logps(tok, valid, ref_logps.detach(), beta, label_smoothing, sft_weight,
                                       sft_reduction)


def rrpo(hidden, weight, targets, ref_hidden, ref_weight, segments, beta, alpha, ignore_index):
    tok, valid, log_p = token_logps(hidden, weight, targets, ignore_index)
    with torch.no_grad():
        ref_tok, _, log_q = token_logps(ref_hidden, ref_weight, targets, ignore_index)
    kl = token_kl(log_p, log_q.to(log_p.dtype), FORWARD_KL)
    return rrpo_from_token_logps(tok, ref_tok.to(tok.dtype), kl, valid, segments, beta, alpha)


def kl_to_reference(x, weight, ref, ref_weight, mask, kl_mode, reduction):
    log_p = _log_softmax(x, weight)
    with torch.no_grad():
        log_q = _log_softmax(ref, ref_weight).to(log_p.dtype)
    return kl_reduce(token_kl(log_p, log_q, kl_mode), mask, reduction)
