"""the contrastive engine behind conr_loss, supcon_loss and focal_supcon_loss.

Every impl computes per-anchor losses ℓ_i (and |P_i|) of L2-normalized rows; this module gathers candidates
across ranks, picks the impl and reduces ℓ to the loss. The kernels normalize the rows themselves. The kernels
(``regops::contrastive_fwd``/``_bwd`` on CPU and CUDA, ``..._triton``) stream the similarity in tiles and
save only row_stats (n, 4) for the backward; the reference (reference/contrastive.py) materializes N×M.

Across ranks (``process_group``): anchors are the local rows, candidates the rows of all ranks, gathered
with their gradient (torch.distributed.nn.functional.all_gather sends it back to the owner). Each rank's
loss is its share, scaled so that the mean over ranks (what DDP's gradient averaging computes) equals the
loss of one process over the concatenated batch.
"""
from __future__ import annotations

import importlib.util

import torch

from .. import _checks, _registry
from .._constants import CONR_AGEDB, CONR_NYUD2, FOCAL, ROW_STATS, SUPCON, acc_dtype  # noqa: F401  (SUPCON: the op modules')
from .._loader import schema_registered, triton_available
from ..contracts import contrastive as contract
from ..reference import contrastive as reference


def _setup_context(ctx, inputs, output):
    (anchors, candidates, labels, cand_labels, preds, cand_preds, weights, *scalars) = inputs
    _, row_stats = output
    ctx.save_for_backward(anchors, candidates, labels, cand_labels, preds, cand_preds, weights, row_stats)
    ctx.scalars = scalars
    ctx.mark_non_differentiable(row_stats)


def _make_backward(bwd_op):
    def backward(ctx, grad_row_loss, _grad_row_stats):
        anchors, candidates, labels, cand_labels, preds, cand_preds, weights, row_stats = ctx.saved_tensors
        nones = (None,) * (5 + len(ctx.scalars))
        if grad_row_loss is None:
            return (None, None) + nones
        grad_a, grad_c = bwd_op(grad_row_loss.contiguous(), anchors, candidates, labels, cand_labels, preds,
                                cand_preds, weights, row_stats, *ctx.scalars)
        return (grad_a, grad_c if candidates is not None else None) + nones
    return backward


if schema_registered("contrastive_fwd"):  # an older _C build lacks them
    torch.library.register_fake("regops::contrastive_fwd")(contract.fake_fwd)
    torch.library.register_fake("regops::contrastive_bwd")(contract.fake_bwd)
    torch.library.register_autograd("regops::contrastive_fwd",
                                    _make_backward(lambda *a: torch.ops.regops.contrastive_bwd(*a)),
                                    setup_context=_setup_context)

if triton_available() and importlib.util.find_spec("regops.triton.contrastive") is not None:
    from ..triton import contrastive as _triton_contrastive  # noqa: F401  (registers the triton ops)

    torch.library.register_autograd("regops::contrastive_fwd_triton",
                                    _make_backward(lambda *a: torch.ops.regops.contrastive_bwd_triton(*a)),
                                    setup_context=_setup_context)


def check_features(op: str, features, dtypes) -> int:
    """features: an (N, D) float tensor with N, D ≥ 1; returns N."""
    _checks.check_tensor(op, "features", features, ndims=(2,), dtypes=dtypes)
    if features.shape[0] == 0:
        _checks.fail(op, "features", "at least one row", f"shape {tuple(features.shape)}")
    if features.shape[1] == 0:
        _checks.fail(op, "features", "at least one column", f"shape {tuple(features.shape)}")
    return features.shape[0]


def _world(process_group):
    import torch.distributed as dist
    return dist.get_world_size(process_group), dist.get_rank(process_group)


def _gather(t: torch.Tensor, process_group, *, grad: bool) -> torch.Tensor:
    import torch.distributed as dist
    if grad:
        from torch.distributed.nn.functional import all_gather
        return torch.cat(all_gather(t.contiguous(), group=process_group))
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(process_group))]
    dist.all_gather(parts, t.contiguous(), group=process_group)
    return torch.cat(parts)


def _check_equal_sizes(op: str, n: int, process_group, device: torch.device) -> None:
    if torch.compiler.is_compiling():
        return
    sizes = _gather(torch.tensor([n], device=device), process_group, grad=False).tolist()
    if len(set(sizes)) != 1:
        _checks.fail(op, "features", "the same number of rows on every rank of process_group",
                     f"rows per rank {sizes}")


def row_losses(op: str, kind: int, features: torch.Tensor, labels: torch.Tensor, preds, weights, *,
               temperature: float, threshold: float = 0.0, push: float = 0.0, label_norm: float = 2.0,
               process_group=None, impl=None):
    """Per-anchor losses ℓ (n,) and |P| (n,) of the local rows, plus (world size, candidates M).

    labels/preds: (n, L) in the accumulation dtype for ConR, (n,) int64 for SupCon; weights (n,) or None."""
    chosen = _registry.pick(op, impl, features, "features")
    acc = acc_dtype(features.dtype)
    if chosen != "cpu":  # the CPU kernel checks finiteness in its normalization pass, for free
        _checks.check_finite_eager(op, "features", features)
    # The kernels normalize the rows themselves (and take the gradient back through it); the reference uses
    # autograd through a scale-safe F.normalize.
    x = features.to(acc).contiguous() if chosen != "reference" else reference.normalize_rows(features.to(acc))
    n = x.shape[0]
    world, offset = 1, 0
    xc = lc = pc = None
    if process_group is not None:
        world, rank = _world(process_group)
        _check_equal_sizes(op, n, process_group, features.device)
        offset = rank * n
        xc = _gather(x, process_group, grad=True)
        lc = _gather(labels, process_group, grad=False)
        pc = _gather(preds, process_group, grad=False) if preds is not None else None
    m = n if xc is None else xc.shape[0]
    if weights is None and kind in (CONR_AGEDB, CONR_NYUD2):
        weights = torch.ones(n, dtype=acc, device=features.device)

    if chosen == "reference":
        zc, lc_r, pc_r = (x, labels, preds) if xc is None else (xc, lc, pc)
        if kind in (CONR_AGEDB, CONR_NYUD2):
            rows, n_pos = reference.conr_rows(x, zc, offset, labels, lc_r, preds, pc_r, weights,
                                              nyud2=kind == CONR_NYUD2, temperature=temperature,
                                              threshold=threshold, push=push, label_norm=label_norm)
        else:
            rows, n_pos = reference.supcon_rows(x, zc, offset, labels, lc_r, temperature=temperature,
                                                focal=kind == FOCAL)
        return rows, n_pos.to(acc), world, m

    fwd = _registry.kernel("contrastive", chosen, "fwd")
    args = (x, xc, labels, lc, preds, pc, weights, kind, offset, float(temperature), float(threshold), float(push),
            float(label_norm))
    if torch.compiler.is_compiling() or chosen != "cpu":
        rows, stats = fwd(*args)
    else:
        try:
            rows, stats = fwd(*args)
        except ValueError as exc:  # the kernel's finiteness check: say it in the public op's words
            if "expected finite values" in str(exc):
                _checks.check_finite_eager(op, "features", features)
            raise
    return rows, stats[:, 3], world, m


def reduce_loss(kind: int, rows, n_pos, weights, world: int, m: int, process_group=None) -> torch.Tensor:
    """The loss of the local anchors from their per-anchor losses (see the module docstring for ranks)."""
    n = rows.shape[0]
    if kind == CONR_AGEDB and weights is not None:
        return (weights.to(rows.dtype) * rows).sum() / n
    if kind == FOCAL:
        anchors = (n_pos > 0).sum()
        if process_group is not None:
            import torch.distributed as dist
            anchors = anchors.clone()
            dist.all_reduce(anchors, group=process_group)
        return -world * rows.sum() / (m * anchors.clamp_min(1).to(rows.dtype))
    return rows.sum() / n
