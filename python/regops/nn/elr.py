"""regops.nn.ELRLoss: the ELR loss with its (N_train, C) target buffer (regops.elr_loss has the formula)."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .. import _checks
from ..ops.elr import OP, elr_step


class ELRLoss(nn.Module):
    """ELR (shengliu66/ELR ``elr_loss``): forward(logits, targets, index) with index the samples' dataset indices.

    The target buffer is a registered float32 buffer (`target`, zeros at the start, as the official one): it moves
    with .to(), and survives state_dict()/load_state_dict(). Official configs: CIFAR-10 symmetric noise β 0.7, λ 3;
    CIFAR-100 β 0.9, λ 7; CIFAR-10 asymmetric β 0.9, λ 1.

    process_group: None (each rank updates the rows of its own samples only: a row is current on the rank that
    saw the sample last) or a torch.distributed group (or dist.group.WORLD): every rank's new rows are
    all-gathered and written on every rank, so the buffers stay identical across ranks. Ranks must then pass
    batches of the same size."""

    def __init__(self, num_examples: int, num_classes: int, beta: float = 0.7, lam: float = 3.0, *,
                 process_group=None, impl=None):
        super().__init__()
        for arg, v in (("num_examples", num_examples), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                _checks.fail(OP, arg, "a positive int", repr(v), TypeError if not isinstance(v, int) else ValueError)
        self.beta = _checks.number(OP, "beta", beta, low=0.0, what="a momentum in [0, 1)")
        if self.beta >= 1.0:
            _checks.fail(OP, "beta", "a momentum in [0, 1)", repr(beta))
        self.lam = _checks.number(OP, "lam", lam)
        self.process_group = process_group
        self.impl = impl
        self.register_buffer("target", torch.zeros(num_examples, num_classes, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        rows, new_rows = elr_step(logits, targets, index, self.target, self.beta, self.lam, self.impl)
        idx = index.long()
        new_rows = new_rows.to(self.target.dtype)
        with torch.no_grad():
            if self.process_group is not None and dist.is_available() and dist.is_initialized():
                world = dist.get_world_size(self.process_group)
                all_idx = [torch.empty_like(idx) for _ in range(world)]
                all_rows = [torch.empty_like(new_rows) for _ in range(world)]
                dist.all_gather(all_idx, idx.contiguous(), group=self.process_group)
                dist.all_gather(all_rows, new_rows.contiguous(), group=self.process_group)
                idx, new_rows = torch.cat(all_idx), torch.cat(all_rows)
            self.target.index_copy_(0, idx, new_rows)
        return rows.mean()

    def extra_repr(self) -> str:
        n, c = self.target.shape
        return f"num_examples={n}, num_classes={c}, beta={self.beta}, lam={self.lam}"
