"""The dual costs reg_ot_cost and ent_reg_cost at fixed potentials, with digits kept where eps dwarfs the costs."""
from __future__ import annotations

import torch

from .. import _checks
from ._options import CostPrecisionWarning


def _dual_costs(f, g, a, b, tau_a, tau_b, eps, mass):
    """OTT's compute_kl_reg_cost with f, g held fixed (differentiable in a, b and, through mass, in C)."""
    e = eps[:, None]

    def div(w, pot, tau):
        pos = w > 0
        unb_side = tau < 1
        log_w = torch.log(torch.where(pos, w, torch.ones_like(w)))  # no 0·(1/0) in the backward at w = 0
        fw = torch.where(pos, pot, torch.zeros_like(pot)) - e * log_w
        bal = w * fw
        rho = e * tau / torch.where(unb_side, 1 - tau, torch.ones_like(tau))
        unb = -w * rho * torch.expm1(-torch.where(unb_side, fw, torch.zeros_like(fw)) / rho)
        return torch.where(pos, torch.where(unb_side, unb, bal), torch.zeros_like(bal)).sum(1)

    reg = div(a, f, tau_a) + div(b, g, tau_b) + eps * (a.sum(1) * b.sum(1) - mass)
    ent = reg - eps * (_entropy(a) + _entropy(b))
    return reg, ent


# Relative error of reg_ot_cost above which the mass is recomputed in float64, and above which a warning says so.
COST_RECOMPUTE_RTOL = 1e-5
COST_WARN_RTOL = 1e-4


def _mass_rounding(f, g, eps, mass, dtype):
    """A bound on |Δ(eps·ΣP)| from rounding in dtype: each row mass exp((f_i − out_i)/eps) carries a relative error
    of about u·(|f_i| + |out_i| + |g_j − c_ij|)/eps + u·log₂M, and eps times it is what the dual form subtracts."""
    spread = 3 * (_finite_abs_max(f) + _finite_abs_max(g)) + 8 * eps.detach().double()
    return torch.finfo(dtype).eps * mass.detach().double().abs() * spread


def _costs(op, f, g, a, b, tau_a, tau_b, eps, mass_fn, cost_scale, balanced):
    """The dual costs, with digits kept where eps dwarfs the costs.

    reg_ot_cost subtracts eps·ΣP from eps·Σa·Σb; the difference is of the order of the costs, so when eps is many
    orders above them the working dtype's rounding of ΣP (about u·eps) swamps it. Then ΣP and the dual form are
    evaluated again in float64 at the same (float32) potentials: the dual is stationary there, so storing the
    potentials in float32 costs only about (u₃₂·|f|)²/eps. If even that leaves fewer than ~4 digits, warn.
    Balanced potentials are first moved to an even split (f − c, g + c: the same plan), since with eps huge the
    solve leaves f̃ = f − eps·log a and g̃ near ±eps·log N, and c·(Σa − Σb) would turn the masses' last-bit
    difference into an error of the order of the costs."""
    mass = mass_fn(f, g, None)
    reg, ent = _dual_costs(f, g, a, b, tau_a, tau_b, eps, mass)
    if torch.compiler.is_compiling():
        return reg, ent
    dtype = reg.dtype
    # Compared with |reg|, or a thousandth of the largest cost where reg is near 0 (x = y); all-zero costs are exact.
    floor = 1e-3 * cost_scale().to(torch.float64)
    scale = torch.maximum(reg.detach().double().abs(), floor)
    err = _mass_rounding(f, g, eps, mass, dtype)
    if not bool(((err > COST_RECOMPUTE_RTOL * scale) & (scale > 0)).any()):
        return reg, ent
    if dtype != torch.float64:
        d = torch.float64
        f64, g64 = f.double(), g.double()
        if balanced:
            f64, g64 = _split_evenly(f64, g64, a.detach().to(d), b.detach().to(d), eps.detach().to(d))
        mass = mass_fn(f64, g64, d)
        reg, ent = _dual_costs(f64, g64, a.to(d), b.to(d), tau_a.to(d), tau_b.to(d), eps.to(d), mass)
        u = torch.finfo(dtype).eps
        stored = (u * (_finite_abs_max(f) + _finite_abs_max(g))).pow(2) / eps.detach().double()
        err = _mass_rounding(f64, g64, eps, mass, d) + stored
        scale = torch.maximum(reg.detach().abs(), floor)
        reg, ent = reg.to(dtype), ent.to(dtype)
    bad = (err > COST_WARN_RTOL * scale) & (scale > 0)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        _checks.warn(f"regops.{op}: eps {eps[i].item():.4g} dwarfs the costs (reg_ot_cost {reg[i].item():.4g}, "
                      f"rounding error up to {err[i].item():.2g}): the costs have few correct digits; lower eps"
                      + ("" if dtype == torch.float64 else " or pass float64 inputs"), CostPrecisionWarning)
    return reg, ent


def _split_evenly(f, g, a, b, eps):
    """(f − c, g + c) with c making the a- and b-weighted means of f̃ = f − eps·log a and g̃ equal."""
    e = eps[:, None]

    def mean_tilde(p, w):
        pos = w > 0
        t = torch.where(pos, p - e * torch.log(torch.where(pos, w, torch.ones_like(w))), torch.zeros_like(p))
        return (w * t).sum(1) / w.sum(1)

    c = 0.5 * (mean_tilde(f, a) - mean_tilde(g, b))
    return f - c[:, None], g + c[:, None]


def _finite_abs_max(p):
    p = p.detach().double()
    return torch.where(torch.isfinite(p), p.abs(), torch.zeros_like(p)).amax(1)


def _entropy(w):
    pos = w > 0
    return -torch.where(pos, w * torch.log(torch.where(pos, w, torch.ones_like(w))), torch.zeros_like(w)).sum(1)
