"""RoMaP's L1 anchor term ("Robust 3D-Masked Part-level Editing in 3D Gaussian Splatting with Regularized Score
Distillation Sampling", Kim, Jang, Chun, ICCV 2025), reference only: a masked L1 mean, which torch runs as it is.

No official code: the repository (janeyeon/RoMaP) marks the regularized SDS loss "coming soon", and the paper's
equation could not be read here. This op follows the abstract's description ("an L1 anchor loss ... confines
modifications only to the target region"): the L1 distance between the render and the SLaMP-edited target image,
restricted to the part mask. The SDS term itself needs a diffusion model and is out of scope.
"""
from __future__ import annotations

import torch

from .. import _checks, _registry
from .._constants import acc_dtype

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def masked_l1_anchor(render: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, reduction: str = "mean",
                     impl=None) -> torch.Tensor:
    """The masked L1 anchor: ``mask · |render − target|``, reduced.

    ``render``, ``target``: one shape, e.g. (B, C, H, W); ``mask``: a bool or floating tensor that broadcasts to it
    without changing its shape ((B, 1, H, W), (B, C, H, W), (H, W), ...), a soft mask with values in [0, 1]
    allowed (checked eagerly).

    ``reduction``:
    - "mean" (default): the mean over the masked elements, Σ m·|r − t| / Σ m, the sums over the mask broadcast to
      ``render``'s shape (a (B, 1, H, W) mask counts each pixel C times: the per-element mean). An all-zero mask
      gives 0, not NaN (nothing to anchor).
    - "pixel_mean": the plain mean over all elements, Σ m·|r − t| / numel (for a 0/1 mask, ``F.l1_loss(m·r,
      m·t)``): the other reading of the paper's text.
    - "sum": Σ m·|r − t|; "none": the elementwise m·|r − t| (``render``'s shape).

    Departures / uncertainties: the formula is from the abstract only (see the module docstring), so which
    normalization the paper uses is not pinned; "mean" is the default (a loss weight that does not move with the
    mask's area). Written as a norm, λ·‖M ⊙ (render − target)‖₁, the term is ``reduction="sum"``. The mask is not detached: pass
    ``mask.detach()`` when it comes from the model being trained. Values in float32 for half inputs."""
    op = "masked_l1_anchor"
    _checks.check_choice(op, "reduction", reduction, ("mean", "pixel_mean", "sum", "none"))
    _registry.resolve_impl(op, impl, render.device if isinstance(render, torch.Tensor) else torch.device("cpu"))
    for arg, t in (("render", render), ("target", target)):
        _checks.check_tensor(op, arg, t, dtypes=FLOATS)
    _checks.check_tensor(op, "mask", mask, dtypes=FLOATS + (torch.bool,))
    if target.shape != render.shape:
        _checks.fail(op, "target", f"shape {tuple(render.shape)} (as render)", f"shape {tuple(target.shape)}")
    if target.dtype != render.dtype:
        _checks.fail(op, "target", f"dtype {_checks.dtype_name(render.dtype)} (as render)",
                     _checks.dtype_name(target.dtype), TypeError)
    for arg, t in (("target", target), ("mask", mask)):
        if t.device != render.device:
            _checks.fail(op, arg, f"device {render.device} (as render)", f"device {t.device}", RuntimeError)
    try:
        ok = torch.broadcast_shapes(mask.shape, render.shape) == render.shape
    except RuntimeError:
        ok = False
    if not ok:
        _checks.fail(op, "mask", f"a shape that broadcasts to render's {tuple(render.shape)}",
                     f"shape {tuple(mask.shape)}")
    if render.numel() == 0 and reduction == "pixel_mean":
        _checks.fail(op, "render", "at least one element for reduction='pixel_mean'", f"shape {tuple(render.shape)}")
    for arg, t in (("render", render), ("target", target), ("mask", mask)):
        if t.is_floating_point():
            _checks.check_finite_eager(op, arg, t.detach())
    if mask.is_floating_point() and not torch.compiler.is_compiling() and _checks.check_finite_enabled(mask.device):
        bad = (mask.detach() < 0) | (mask.detach() > 1)
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            _checks.fail(op, "mask", "values in [0, 1]", f"{mask[idx].item()} at index {idx}")
    acc = acc_dtype(render.dtype)
    m = mask.to(acc)
    per = m * (render.to(acc) - target.to(acc)).abs()
    if reduction == "none":
        return per
    num = per.sum()
    if reduction == "sum":
        return num
    if reduction == "pixel_mean":
        return num / render.numel()
    # mask total over render's shape; where it is 0 the numerator is 0 too: 0 / 1
    den = m.expand(render.shape).sum()
    return num / torch.where(den > 0, den, torch.ones_like(den))
