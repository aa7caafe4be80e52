"""Triton kernels, registered as torch.library custom ops."""
