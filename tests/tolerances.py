"""Per-dtype tolerances, and FlashAttention's rule for low precision: the kernel's error against the exact
(float64) result is at most 2x the error of PyTorch's own result in that dtype (plus a tiny floor)."""
import torch

TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-9),
    torch.float32: dict(atol=1e-5, rtol=2e-5),
    torch.bfloat16: dict(atol=1e-2, rtol=2e-2),
}


def assert_close(actual, expected, dtype=None, **override):
    """Elementwise rtol, and an atol relative to the tensor's scale (max|expected|, at least 1): entries that
    come out of long cancelling sums carry rounding of the size of the largest terms, not of themselves."""
    tol = dict(TOL[dtype or expected.dtype])
    tol.update(override)
    if expected.numel():
        tol["atol"] = tol["atol"] * max(1.0, expected.detach().abs().max().item())
    torch.testing.assert_close(actual.to(expected.dtype), expected, **tol)


def assert_lowp_rule(kernel_out, torch_lowp_out, exact, floor=1e-6):
    """max|kernel − exact| ≤ 2·max|torch_lowp − exact| + floor."""
    exact = exact.double()
    err_kernel = (kernel_out.double() - exact).abs().max().item()
    err_torch = (torch_lowp_out.double() - exact).abs().max().item()
    assert err_kernel <= 2 * err_torch + floor, f"kernel error {err_kernel:.3e} > 2x torch's own {err_torch:.3e}"


_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def assert_same_bits(actual, expected):
    """Same dtype, shape, NaN positions, and bits everywhere else (so +0 and -0 differ); on expected's device."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    actual = actual.to(expected.device)
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), nan)
    ia, ie = actual.view(_BITS[actual.dtype])[~nan], expected.view(_BITS[expected.dtype])[~nan]
    if not torch.equal(ia, ie):
        bad = (ia != ie).nonzero()[:5].flatten()
        raise AssertionError(f"{int((ia != ie).sum())} of {ie.numel()} elements differ, e.g. "
                             f"{actual[~nan][bad].tolist()} vs {expected[~nan][bad].tolist()}")


def sinkhorn_grad_scale(x, y, f, g, eps, cost):
    """The scale of the terms of Σ_j P_ij (A_ij x_i − W_ij y_j), the streamed cost gradient: max of
    Σ_j P_ij (|A_ij||x_i| + |W_ij||y_j|) (the result itself can cancel to ~0, e.g. the cosine in d = 1)."""
    from regops._constants import COSINE_RIDGE, EUCLIDEAN, SQEUCLIDEAN
    from regops.reference import sinkhorn as ref

    x, y, f, g, eps = (t.double() for t in (x, y, f, g, eps))
    P = ref.plan(x, y, f, g, eps, cost)
    if cost == SQEUCLIDEAN:
        A = W = 2 * P
    elif cost == EUCLIDEAN:
        dist = ref.sqdist_matrix(x, y).sqrt()
        A = W = torch.where(dist > 0, P / dist.clamp_min(1e-300), torch.zeros_like(P))
    else:
        nx, ny = x.norm(dim=-1), y.norm(dim=-1)
        D = nx[:, :, None] * ny[:, None, :] + COSINE_RIDGE
        W = P / D
        A = P * (x @ y.transpose(1, 2)).abs() * ny[:, None, :] / (nx.clamp_min(1e-300)[:, :, None] * D * D)
    terms = A.abs().sum(2, keepdim=True) * x.abs() + W.abs() @ y.abs()
    return terms.max().item() if terms.numel() else 0.0
