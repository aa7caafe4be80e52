"""The entropic regularization: eps from the cost's statistics (computed without C) and eps schedules."""
from __future__ import annotations

import math

import torch

from .. import _checks
from .._constants import COSINE, SQEUCLIDEAN
from ..reference import sinkhorn as reference


DEFAULT_EPSILON_SCALE = 0.05
_STAT_CHUNK = 1 << 22  # cost entries per chunk when statistics need a pass over C


def sqeuclidean_moments(x: torch.Tensor, y: torch.Tensor):
    """mean and mean-square of C_ij = ‖x_i − y_j‖² over all pairs, per problem, in float64, without C."""
    x, y = x.double(), y.double()
    sx, sy = x.pow(2).sum(-1), y.pow(2).sum(-1)
    mx, my = x.mean(1), y.mean(1)
    mean = sx.mean(1) + sy.mean(1) - 2 * (mx * my).sum(-1)
    # E[C²] = E‖x‖⁴ + E‖y‖⁴ + 2E‖x‖²E‖y‖² + 4E⟨x,y⟩² − 4E[‖x‖²x]·ȳ − 4E[‖y‖²y]·x̄
    Sx = torch.einsum("bni,bnj->bij", x, x) / x.shape[1]
    Sy = torch.einsum("bmi,bmj->bij", y, y) / y.shape[1]
    cross = (Sx * Sy).sum((1, 2))
    tx = (sx[:, :, None] * x).mean(1)
    ty = (sy[:, :, None] * y).mean(1)
    msq = (sx.pow(2).mean(1) + sy.pow(2).mean(1) + 2 * sx.mean(1) * sy.mean(1) + 4 * cross
           - 4 * (tx * my).sum(-1) - 4 * (ty * mx).sum(-1))
    return mean, msq


def cost_moments(x, y, cost: int):
    """(mean C, mean C²) per problem, in float64; streamed over row chunks for the costs with no closed form.

    The chunks are formed in the clouds' dtype (float32: the solve's precision, and OTT's) and summed in float64,
    so both moments come from the same entries and std² = E[C²] − E[C]² keeps its digits; forming the entries in
    float64 cost 5× the time and 2× the memory for a heuristic eps."""
    if cost == SQEUCLIDEAN:
        return sqeuclidean_moments(x, y)
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    rows = max(1, _STAT_CHUNK // max(M, 1))
    s1 = x.new_zeros(B, dtype=torch.float64)
    s2 = x.new_zeros(B, dtype=torch.float64)
    for i in range(0, N, rows):
        if cost == reference.EUCLIDEAN:  # C² first (GEMM form, one temporary), then C in place
            xi = x[:, i:i + rows]
            c = torch.bmm(xi, y.transpose(1, 2)).mul_(-2)
            c.add_(xi.square().sum(-1)[:, :, None]).add_(y.square().sum(-1)[:, None, :]).clamp_min_(0)
            s2 += c.sum((1, 2), dtype=torch.float64)
            s1 += c.sqrt_().sum((1, 2), dtype=torch.float64)
        else:
            c = reference.cost_matrix(x[:, i:i + rows], y, cost)
            s1 += c.sum((1, 2), dtype=torch.float64)
            s2 += c.square_().sum((1, 2), dtype=torch.float64)
    return s1 / (N * M), s2 / (N * M)


def _statistic(mean, msq, which):
    if which == "mean":
        return mean
    return (msq - mean * mean).clamp_min(0).sqrt()  # population std, as OTT's


def resolve_eps(op, eps, relative_epsilon, moments, B, like):
    """(B,) eps in like's dtype: eps absolute; None → 0.05·std(C); with relative_epsilon, (eps or 0.05)·stat(C)."""
    if isinstance(eps, torch.Tensor) and eps.numel() != 1 and relative_epsilon is None:
        if eps.dim() != 1 or eps.numel() != B:
            _checks.fail(op, "eps", f"a number, or a tensor of 1 or {B} values (one per problem)",
                         f"shape {tuple(eps.shape)}")
        if eps.is_complex() or eps.dtype == torch.bool:
            _checks.fail(op, "eps", "a real tensor", _checks.dtype_name(eps.dtype), TypeError)
        e = eps.detach().to(device=like.device, dtype=like.dtype)
        if not torch.compiler.is_compiling() and bool(((e <= 0) | ~torch.isfinite(e)).any()):
            _checks.fail(op, "eps", "positive finite values", f"eps {e.tolist()}")
        return e
    elif eps is not None and relative_epsilon is None:
        if isinstance(eps, torch.Tensor) and torch.compiler.is_compiling():
            return eps.detach().to(device=like.device, dtype=like.dtype).reshape(-1).expand(B)
        value = _checks.number(op, "eps", eps, low=0, low_open=True, what="a positive finite number")
        return torch.full((B,), value, dtype=like.dtype, device=like.device)
    else:
        scale = DEFAULT_EPSILON_SCALE if eps is None else _checks.number(
            op, "eps", eps, low=0, low_open=True, what="a positive finite scale of the cost statistic")
        mean, msq = moments()
        e = (scale * _statistic(mean, msq, relative_epsilon or "std")).to(like.dtype)
    if not torch.compiler.is_compiling() and bool(((e <= 0) | ~torch.isfinite(e)).any()):
        _checks.fail(op, "eps", f"a positive eps ({relative_epsilon or 'std'}(C) is 0 when all costs are equal; "
                     "pass eps= then)", f"eps {e.tolist()}")
    return e


def _schedule(op, eps_schedule, target, diameter_cost):
    """A function it -> (B,) eps for iteration it, and the number of annealing iterations (after which eps = target).

    None: constant. A float s in (0, 1): GeomLoss-style ε-scaling, eps_t = max(c_max·s^t, target), from c_max the
    largest cost (the cloud's diameter). A pair (init, decay): OTT's Epsilon, eps_t = max(init·decay^t, 1)·target."""
    if eps_schedule is None:
        return (lambda it: target), 0
    if isinstance(eps_schedule, (tuple, list)) and len(eps_schedule) == 2:
        # finite numbers (a string was float()'s bare error, an infinite init log(0)'s math domain error below)
        init, decay = (_checks.number(op, "eps_schedule", v, what="(init > 0, decay in (0, 1])") for v in eps_schedule)
        if not (init > 0 and 0 < decay <= 1):
            _checks.fail(op, "eps_schedule", "(init > 0, decay in (0, 1])", repr(eps_schedule))
        n = 0 if init <= 1 or decay == 1 else math.ceil(math.log(1 / init) / math.log(decay))
        return (lambda it: target * max(init * decay ** it, 1.0)), n
    s = _checks.number(op, "eps_schedule", eps_schedule, what="a scaling factor in (0, 1), or a pair (init, decay)")
    if not 0 < s < 1:
        _checks.fail(op, "eps_schedule", "a scaling factor in (0, 1), or a pair (init, decay)", repr(eps_schedule))
    start = diameter_cost()
    ratio = (start / target).max().item()
    n = 0 if ratio <= 1 else math.ceil(math.log(ratio) / -math.log(s))
    return (lambda it: torch.maximum(start * s ** it, target) if it < n else target), n


def _max_cost(x, y, cost):
    """An upper bound of C from the clouds' bounding box (the start of ε-scaling)."""
    if cost == COSINE:
        return torch.full((x.shape[0],), 2.0, dtype=torch.float64, device=x.device)
    pts = torch.cat([x, y], 1)
    diam = (pts.amax(1) - pts.amin(1)).double().pow(2).sum(-1).sqrt()
    return diam.pow(2) if cost == SQEUCLIDEAN else diam
