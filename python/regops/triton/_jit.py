"""Device helpers shared by the Triton kernels (``@triton.jit`` functions named ``_*``: inlined into the kernels
that call them, exempt from the ``KERNELS`` compile-spec rule of ``_compile.py``)."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _cast_rn(x, DTYPE: tl.constexpr):
    """x (float32, or float64 for a float64 DTYPE) in DTYPE. bfloat16 is rounded to nearest even on the bits (NaN ->
    0x7FC0, as torch), because the interpreter's own float32 -> bfloat16 cast truncates."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        rb = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rb = tl.where(x != x, 0x7FC0, rb)
        return rb.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DTYPE)
