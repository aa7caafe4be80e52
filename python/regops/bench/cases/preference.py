"""RPO (DPO + token-mean SFT, reference-free so every provider computes the same thing) from hidden states on the
fused-linear engine, fwd+bwd, against the materialized eager formula (regops' reference impl), Liger-Kernel's
chunked DPO loss (pure PyTorch, ``compiled=False``, chunks of one pair) where it is installed, and torch's own
chunked ``F.linear_cross_entropy`` for the SFT part alone (a partial row: no DPO term). "frozen" rows keep the
head fixed (``weight.requires_grad=False``, as under LoRA): only the hidden states get a gradient.
Sizes: the issue's B=2 and B=8 pairs at T=1024, H=2048, V=32000 (full run); --quick runs B=1, T=256."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import regops
from regops import _registry

from ..harness import Case

H, V = 2048, 32000
SFT = 1.0


def _setup(B, T, device, frozen):
    def make():
        g = torch.Generator().manual_seed(0)
        h = torch.randn(2 * B, T, H, generator=g).to(device).requires_grad_()
        w = (torch.randn(V, H, generator=g) * 0.02).to(device).requires_grad_(not frozen)
        y = torch.randint(0, V, (2 * B, T), generator=g).to(device)
        y[:, : T // 8] = -100  # prompts
        return h, w, y
    return make


def _step(impl):
    def run(s):
        h, w, y = s
        h.grad = w.grad = None
        loss, _, _ = regops.fused_linear_preference_loss(h, w, y, sft_weight=SFT, impl=impl)
        loss.backward()
    return run


def _liger():
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
    except Exception as exc:  # noqa: BLE001  (any import failure: the row records why)
        return None, f"liger-kernel is not importable: {type(exc).__name__}"
    loss_fn = LigerFusedLinearDPOLoss(beta=0.1, alpha=SFT, compute_nll_loss=True, compiled=False,
                                      use_ref_model=False)

    def run(s):
        h, w, y = s
        h.grad = w.grad = None
        loss = loss_fn(w, h, y)[0]
        loss.backward()
    return run, None


def _torch_linear_ce(s):
    h, w, y = s
    h.grad = w.grad = None
    B = y.shape[0] // 2
    F.linear_cross_entropy(h[:B].flatten(0, 1), w, y[:B].flatten(), ignore_index=-100).backward()


def cases(quick: bool, device: torch.device) -> list[Case]:
    sizes = [(1, 256)] if quick else [(2, 1024), (8, 1024)]
    impls = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    liger, liger_skip = _liger()
    out = []
    for B, T in sizes:
        rows = 2 * B * T
        logits_bytes = 4 * rows * V
        reps = None if quick else 3  # a full-size repetition takes tens of seconds on 2 cores
        for frozen in (False, True):
            op = "rpo (frozen head)" if frozen else "rpo"
            size = f"{B}x{T}x{H}x{V}"
            setup = _setup(B, T, device, frozen)
            out.append(Case(op, size, "eager", setup, _step("reference"), baseline="eager", min_reps=reps,
                            predicted_bytes=4 * logits_bytes + 8 * V * H,
                            note="materialized logits, log_softmax, autograd"))
            for impl in impls:
                ok, why = _registry.available("fused_linear_preference_loss", impl, device)
                out.append(Case(op, size, impl, setup, _step(impl), baseline="eager", min_reps=reps,
                                predicted_bytes=8 * V * H + 4 * rows * H, skip=None if ok else why,
                                note="token chunks; trainable head: a second pass" if not frozen else "one pass"))
            out.append(Case(op, size, "liger", setup, liger, baseline="eager", min_reps=reps, skip=liger_skip,
                            predicted_bytes=2 * 4 * 2 * T * V + 8 * V * H,
                            note="LigerFusedLinearDPOLoss, compiled=False, 1 pair per chunk"))
            if hasattr(F, "linear_cross_entropy"):
                out.append(Case(op, size, "torch linear_cross_entropy (SFT only)", setup, _torch_linear_ce,
                                baseline="eager", min_reps=reps, predicted_bytes=8 * V * H + logits_bytes,
                                note="the NLL part alone, torch's chunked op"))
    return out
