"""sinkhorn_update / _update_dense / _cost_grad / _apply: csrc/include/regops/sinkhorn_checks.h, word for word."""
from __future__ import annotations

from typing import Optional

import torch

from . import check_device, check_dim, check_dtype_in, check_like, check_same_device, check_same_dtype, describe, fail

_FLOATS = (torch.float32, torch.float64)


def check_clouds(op: str, x, y, eps, cost: int, device_type: Optional[str]):
    """Returns (B, N, M, d)."""
    check_dim(op, "x", x, 3, " (B, N, d)")
    check_dtype_in(op, "x", x, _FLOATS)
    check_device(op, "x", x, device_type)
    B, N, d = x.shape
    check_dim(op, "y", y, 3, " (B, M, d)")
    if y.shape[0] != B or y.shape[2] != d:
        fail(op, "y", f"shape ({B}, M, {d}) (the batch and width of x)", describe(y))
    check_same_dtype(op, "y", y, x, "x")
    check_same_device(op, "y", y, x, "x")
    if y.shape[1] < 1:
        fail(op, "y", "at least one point (M >= 1)", describe(y))
    check_like(op, "eps", eps, (B,), x, "x")
    if not 0 <= cost <= 2:
        fail(op, "cost", "0 (sqeuclidean), 1 (euclidean) or 2 (cosine)", str(cost))
    return B, N, y.shape[1], d


def check_update(x, y, pot, log_w, tau, eps, cost: int, device_type: Optional[str]):
    op = "sinkhorn_update"
    B, N, M, d = check_clouds(op, x, y, eps, cost, device_type)
    check_like(op, "pot", pot, (B, M), x, "x")
    check_like(op, "log_w", log_w, (B, N), x, "x")
    check_like(op, "tau", tau, (B, N), x, "x")
    return B, N, M, d


def check_weighted(op: str, x, y, f, g, v, eps, cost: int, device_type: Optional[str]):
    """sinkhorn_cost_grad (v None) and sinkhorn_apply."""
    B, N, M, d = check_clouds(op, x, y, eps, cost, device_type)
    check_like(op, "f", f, (B, N), x, "x")
    check_like(op, "g", g, (B, M), x, "x")
    if v is not None:
        check_dim(op, "v", v, 3, " (B, M, k)")
        check_like(op, "v", v, (B, M, v.shape[2]), x, "x")
    return B, N, M, d


def check_dense(cost_matrix, pot, log_w, tau, eps, transpose: bool, device_type: Optional[str]):
    """Returns (B, rows out, reduced)."""
    op = "sinkhorn_update_dense"
    C = cost_matrix
    check_dim(op, "cost_matrix", C, 3, " (B, N, M)")
    check_dtype_in(op, "cost_matrix", C, _FLOATS)
    check_device(op, "cost_matrix", C, device_type)
    B, N, M = C.shape
    out_n, red_n = (M, N) if transpose else (N, M)
    if red_n < 1:
        fail(op, "cost_matrix", "at least one " + ("row" if transpose else "column"), describe(C))
    check_like(op, "pot", pot, (B, red_n), C, "cost_matrix")
    check_like(op, "log_w", log_w, (B, out_n), C, "cost_matrix")
    check_like(op, "tau", tau, (B, out_n), C, "cost_matrix")
    check_like(op, "eps", eps, (B,), C, "cost_matrix")
    return B, out_n, red_n


def fake_update(x, y, pot, log_w, tau, eps, cost):
    B, N, _, _ = check_update(x, y, pot, log_w, tau, eps, cost, None)
    return x.new_empty((B, N))


def fake_update_dense(cost_matrix, pot, log_w, tau, eps, transpose):
    B, out_n, _ = check_dense(cost_matrix, pot, log_w, tau, eps, transpose, None)
    return cost_matrix.new_empty((B, out_n))


def fake_cost_grad(x, y, f, g, eps, cost):
    B, N, _, d = check_weighted("sinkhorn_cost_grad", x, y, f, g, None, eps, cost, None)
    return x.new_empty((B, N, d))


def fake_apply(x, y, f, g, v, eps, cost):
    B, N, _, _ = check_weighted("sinkhorn_apply", x, y, f, g, v, eps, cost, None)
    return x.new_empty((B, N, v.shape[2]))
