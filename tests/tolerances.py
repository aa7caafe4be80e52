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
