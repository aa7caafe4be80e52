"""The Sinkhorn iteration (no autograd): half-updates on point clouds or a cost matrix, and the marginal error
checked every check_every iterations."""
from __future__ import annotations

import torch


class _PointCloud:
    def __init__(self, x, y, cost, kernels):
        self.x, self.y, self.cost, self.k = x, y, cost, kernels

    def update_f(self, g, log_a, tau_a, eps):
        return self.k.update(self.x, self.y, g, log_a, tau_a, eps, self.cost)

    def update_g(self, f, log_b, tau_b, eps):
        return self.k.update(self.y, self.x, f, log_b, tau_b, eps, self.cost)


class _Dense:
    def __init__(self, C, kernels):
        self.C, self.k = C, kernels

    def update_f(self, g, log_a, tau_a, eps):
        return self.k.update_dense(self.C, g, log_a, tau_a, eps, False)

    def update_g(self, f, log_b, tau_b, eps):
        return self.k.update_dense(self.C, f, log_b, tau_b, eps, True)


def _marginal_error(f, g_old, g_new, a, b, log_a, tau_a, tau_b, eps, unbalanced):
    """L1 marginal error of the state (f, g_old), from the g update g_new it implies (no extra pass)."""
    e = eps[:, None]
    col = torch.where(b > 0, b * torch.exp((g_old - g_new / tau_b) / e), torch.zeros_like(b))
    if not unbalanced:
        return (col - b).abs().sum(1)
    # After an f update, P1_i = a_i·e^{f_i(1 − 1/τ_i)/eps}.
    row = torch.where(a > 0, a * torch.exp(f * (1 - 1 / tau_a) / e), torch.zeros_like(a))
    fit_a = _marginal_fit(a, f, tau_a, e)
    fit_b = _marginal_fit(b, g_old, tau_b, e)
    return (row - fit_a).abs().sum(1) + (col - fit_b).abs().sum(1)


def _marginal_fit(w, pot, tau, e):
    # OTT's grad_of_marginal_fit: w·e^{−pot/ρ}, ρ = eps·τ/(1−τ); w where τ = 1.
    rho_inv = (1 - tau) / (e * tau)
    return torch.where(w > 0, w * torch.exp(-torch.nan_to_num(pot, neginf=0.0) * rho_inv), torch.zeros_like(w))


def _iterate(engine, f, g, a, b, log_a, log_b, tau_a, tau_b, eps_at, n_anneal, target, *, max_iter, tol, check_every,
             unbalanced):
    """The Sinkhorn loop (no autograd). Returns f, g, n_iter (B,), err (B,)."""
    B = f.shape[0]
    active = torch.ones(B, dtype=torch.bool, device=f.device)
    n_iter = torch.full((B,), max_iter, dtype=torch.int64, device=f.device)
    err = torch.full((B,), float("inf"), dtype=f.dtype, device=f.device)
    some_frozen = False
    it = 0
    for it in range(max_iter):
        eps_t = eps_at(it)
        g_new = engine.update_g(f, log_b, tau_b, eps_t)
        if tol > 0 and it > 0 and it % check_every == 0 and it > n_anneal:
            err_now = _marginal_error(f, g, g_new, a, b, log_a, tau_a, tau_b, target, unbalanced)
            err = torch.where(active, err_now, err)
            done = active & (err_now < tol)
            n_iter = torch.where(done, torch.full_like(n_iter, it), n_iter)
            active = active & ~done
            if not torch.compiler.is_compiling():
                if not bool(active.any()):  # the only host sync: every check_every iterations
                    return f, g, n_iter, err
                some_frozen = not bool(active.all())
            else:
                some_frozen = True
        if some_frozen:
            g_new = torch.where(active[:, None], g_new, g)
        g = g_new
        f_new = engine.update_f(g, log_a, tau_a, eps_t)
        f = torch.where(active[:, None], f_new, f) if some_frozen else f_new
    # After max_iter iterations: the error of the final state, through one more g update at the target eps.
    g_next = engine.update_g(f, log_b, tau_b, target)
    err_now = _marginal_error(f, g, g_next, a, b, log_a, tau_a, tau_b, target, unbalanced)
    err = torch.where(active, err_now, err)
    return f, g, n_iter, err
