"""The fused log-softmax rows in pure PyTorch: the oracle of the row kernels (csrc/include/regops/logsoftmax_math.h).

Same contract as torch.ops.regops.logsoftmax_rows / logsoftmax_rows_grad_ (the latter returns the gradient instead
of writing it in place)."""
from __future__ import annotations

import torch

from .._constants import acc_dtype

NO_KL, FORWARD_KL, REVERSE_KL = 0, 1, 2


def rows(logits, targets, ref_logits, kl_mode, ignore_index, grad_logp=None, grad_kl=None):
    """(logp, ref_logp, kl) per row, and with grad_logp/grad_kl the gradient d(grad_logp·logp + grad_kl·kl)/dlogits."""
    acc = acc_dtype(logits.dtype)
    z = logits.to(acc)
    valid = targets != ignore_index
    y = torch.where(valid, targets, torch.zeros_like(targets))
    lse = torch.logsumexp(z, dim=-1)
    log_p = z - lse[:, None]
    logp = log_p.gather(-1, y[:, None]).squeeze(-1)
    kl = torch.zeros_like(lse)
    ref_logp = torch.zeros_like(lse)
    if kl_mode != NO_KL:
        log_q = torch.log_softmax(ref_logits.to(acc), dim=-1)
        ref_logp = log_q.gather(-1, y[:, None]).squeeze(-1)
        kl = (log_q.exp() * (log_q - log_p) if kl_mode == FORWARD_KL else log_p.exp() * (log_p - log_q)).sum(-1)
    zero = torch.zeros_like(lse)
    logp, ref_logp, kl = (torch.where(valid, t, zero) for t in (logp, ref_logp, kl))
    if grad_logp is None:
        return logp, ref_logp, kl
    p = log_p.exp()
    g = -grad_logp[:, None] * p
    g = g.scatter_add(-1, y[:, None], grad_logp[:, None])
    if kl_mode == FORWARD_KL:
        g = g + grad_kl[:, None] * (p - log_q.exp())
    elif kl_mode == REVERSE_KL:
        g = g + grad_kl[:, None] * p * (log_p - log_q - kl[:, None])
    g = torch.where(valid[:, None], g, torch.zeros_like(g))
    return logp, ref_logp, kl, g.to(logits.dtype)
