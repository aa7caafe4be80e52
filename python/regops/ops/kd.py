"""Knowledge distillation: R-AMT's reg loss (wuw2019/R-AMT), reference only (a softmax pair; torch fuses it)."""
from __future__ import annotations

import torch

from .. import _checks, _registry
from .._constants import acc_dtype


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0,
            kind: str = "soft_ce", *, impl=None) -> torch.Tensor:
    """Knowledge distillation, batch mean, teacher detached. "soft_ce" (the official value):
    −Σ softmax(t/T)·log_softmax(s/T)·T²; "kl" subtracts the teacher's entropy term (same student gradient)."""
    op = "kd_loss"
    _checks.check_choice(op, "kind", kind, ("soft_ce", "kl"))
    _registry.resolve_impl(op, impl, student_logits.device if isinstance(student_logits, torch.Tensor)
                           else torch.device("cpu"))  # the reference only: a named kernel impl raises
    for arg, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        _checks.check_tensor(op, arg, t)
        if not t.is_floating_point():
            _checks.fail(op, arg, "a floating-point tensor", _checks.dtype_name(t.dtype), TypeError)
    if student_logits.shape != teacher_logits.shape:
        _checks.fail(op, "teacher_logits", f"shape {tuple(student_logits.shape)} (as student_logits)",
                     f"shape {tuple(teacher_logits.shape)}")
    if teacher_logits.device != student_logits.device:
        _checks.fail(op, "teacher_logits", f"device {student_logits.device} (as student_logits)",
                     f"device {teacher_logits.device}", RuntimeError)
    if student_logits.dim() == 0 or student_logits.shape[-1] == 0 or student_logits.numel() == 0:
        _checks.fail(op, "student_logits", "at least one sample of at least one class (..., C)",
                     f"shape {tuple(student_logits.shape)}")
    T = _checks.number(op, "T", T, low=0, low_open=True, what="a finite positive temperature")
    for arg, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        _checks.check_finite_eager(op, arg, t.detach())
    acc = acc_dtype(student_logits.dtype)
    p_t = torch.softmax(teacher_logits.detach().to(acc) / T, dim=-1)
    log_s = torch.log_softmax(student_logits.to(acc) / T, dim=-1)
    per = -(p_t * log_s).sum(-1)
    if kind == "kl":
        per = per + torch.special.xlogy(p_t, p_t).sum(-1)
    return per.mean() * (T * T)
