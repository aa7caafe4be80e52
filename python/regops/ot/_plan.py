"""Using a solution: the plan P (materialized on request), P·v streamed, and the barycentric map."""
from __future__ import annotations

from typing import Optional

import torch

from .. import _checks
from ..reference import sinkhorn as reference
from ._backend import Kernels
from ._options import SinkhornOutput


def _batched_potentials(out):
    f, g = out.f, out.g
    if not out._batched:
        f, g = f[None], g[None]
    eps = out.eps if out._batched else out.eps.reshape(1)
    return f, g, eps


def transport_plan(out: SinkhornOutput) -> torch.Tensor:
    """P (N, M) or (B, N, M), materialized on request: exp((f_i + g_j − C_ij)/eps)."""
    f, g, eps = _batched_potentials(out)
    C = out._C if out._C is not None else reference.cost_matrix(out._x, out._y, out._cost)
    P = reference.plan_from_cost(C, f, g, eps)
    return P if out._batched else P[0]


def apply_plan(out: SinkhornOutput, v: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
    """P·v (transpose=False; v (M,) or (M, k), batched (B, M, k)) or Pᵀ·v (v over the N points), streamed."""
    op = "ot.apply_plan"
    f, g, eps = _batched_potentials(out)
    n_in = f.shape[1] if transpose else g.shape[1]
    _checks.check_tensor(op, "v", v, ndims=(1, 2, 3))
    vec = v.dim() == 1 or (out._batched and v.dim() == 2)
    vb = v.unsqueeze(-1) if vec else v
    vb = vb if vb.dim() == 3 else vb.unsqueeze(0)
    if vb.shape[1] != n_in:
        _checks.fail(op, "v", f"{n_in} rows (the points P is applied over)", f"shape {tuple(v.shape)}")
    if not torch.compiler.is_compiling():
        _checks.check_finite_eager(op, "v", v)
    vb = vb.to(device=f.device, dtype=f.dtype).expand(f.shape[0], -1, -1).contiguous()
    if out._C is not None:
        P = reference.plan_from_cost(out._C, f, g, eps)
        res = torch.bmm(P.transpose(1, 2) if transpose else P, vb)
    else:
        k = Kernels(out._impl)
        if transpose:
            res = k.apply(out._y, out._x, g, f, vb, eps, out._cost)
        else:
            res = k.apply(out._x, out._y, f, g, vb, eps, out._cost)
    if vec:
        res = res[..., 0]
    return res if out._batched else res[0]


def barycentric_map(out: SinkhornOutput, y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """T(x_i) = (P y)_i / a_i: the entropic map of each source point (y: the target points, by default the solve's)."""
    if y is None:
        if out._y is None:
            _checks.fail("ot.barycentric_map", "y", "the target points for a solve from a cost matrix", "None")
        y = out._y + out._shift
        y = y if out._batched else y[0]
    a = out._a if out._batched else out._a[0]
    if not torch.compiler.is_compiling() and bool((a <= 0).any()):
        i = tuple(int(j) for j in (a <= 0).nonzero()[0])
        _checks.fail("ot.barycentric_map", "a", "positive weights (a point of zero mass has no image)",
                     f"a{list(i)} = {float(a[i])}")
    Py = apply_plan(out, y)
    return Py / a[..., None]
