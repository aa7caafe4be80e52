"""contrastive_fwd / contrastive_bwd: csrc/include/regops/contrastive_checks.h, word for word."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import _constants
from . import (check_device, check_dim, check_dtype_in, check_float_dtype, check_same_device, check_same_dtype,
               check_shape, describe, fail, num_str, shape_str)

KINDS = "0 (ConR agedb), 1 (ConR nyud2), 2 (SupCon) or 3 (focal SupCon)"


def _conr_rows(op, arg, t, rows, L, anchors) -> None:
    ok = t.dim() == 2 and t.shape[0] == rows and (t.shape[1] >= 1 if L < 0 else t.shape[1] == L)
    if not ok:
        fail(op, arg, f"shape ({rows}, L) with L >= 1" if L < 0 else f"shape {shape_str((rows, L))}", describe(t))
    check_same_dtype(op, arg, t, anchors, "anchors")
    check_same_device(op, arg, t, anchors, "anchors")


def _class_ids(op, arg, t, rows, anchors) -> None:
    check_shape(op, arg, t, (rows,), " (one class id per row)")
    if t.dtype != torch.int64:
        fail(op, arg, "dtype int64 (class ids)", describe(t), TypeError)
    check_same_device(op, arg, t, anchors, "anchors")


def check(op: str, anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind: int, offset: int,
          temperature: float, threshold: float, push: float, label_norm: float, device_type: Optional[str]):
    """Returns (n, M, D, L) (L = 1 for SupCon)."""
    check_dim(op, "anchors", anchors, 2, " (n, D)")
    check_dtype_in(op, "anchors", anchors, (torch.float32, torch.float64), " (feature rows in the accumulation dtype)")
    check_device(op, "anchors", anchors, device_type)
    if not 0 <= kind <= 3:
        fail(op, "kind", KINDS, str(kind))
    if not (math.isfinite(temperature) and temperature > 0):
        fail(op, "temperature", "a positive finite number", num_str(temperature))
    if anchors.shape[1] < 1:
        fail(op, "anchors", "at least one column", describe(anchors))
    n, d = anchors.shape
    symmetric = candidates is None
    if symmetric:
        if offset != 0:
            fail(op, "offset", "0 when candidates is None", str(offset))
        m = n
    else:
        if not isinstance(candidates, torch.Tensor) or candidates.dim() != 2 or candidates.shape[1] != d:
            fail(op, "candidates", f"a 2-D tensor (M, {d}) (the width of anchors)", describe(candidates))
        check_same_dtype(op, "candidates", candidates, anchors, "anchors")
        check_same_device(op, "candidates", candidates, anchors, "anchors")
        m = candidates.shape[0]
        if not 0 <= offset <= m - n:
            fail(op, "offset", f"anchors to sit at candidates[offset : offset + n] (0 <= offset <= {m - n})",
                 str(offset))

    def cand_needed(arg, t):
        if not symmetric and t is None:
            fail(op, arg, "a tensor (candidates are given)", "None")

    if kind in (_constants.CONR_AGEDB, _constants.CONR_NYUD2):
        if not label_norm > 0:
            fail(op, "label_norm", "a positive number or inf", num_str(label_norm))
        if not math.isfinite(threshold):
            fail(op, "threshold", "a finite number", num_str(threshold))
        if not math.isfinite(push):
            fail(op, "push", "a finite number", num_str(push))
        _conr_rows(op, "labels", labels, n, -1, anchors)
        L = labels.shape[1]
        if preds is None:
            fail(op, "preds", "a tensor (ConR needs predictions)", "None")
        _conr_rows(op, "preds", preds, n, L, anchors)
        cand_needed("cand_labels", cand_labels)
        cand_needed("cand_preds", cand_preds)
        if not symmetric:
            _conr_rows(op, "cand_labels", cand_labels, m, L, anchors)
            _conr_rows(op, "cand_preds", cand_preds, m, L, anchors)
        if weights is None:
            fail(op, "weights", "a tensor (ConR needs the anchors' weights)", "None")
        check_shape(op, "weights", weights, (n,), " (one weight per anchor)")
        check_same_dtype(op, "weights", weights, anchors, "anchors")
        check_same_device(op, "weights", weights, anchors, "anchors")
        return n, m, d, L
    _class_ids(op, "labels", labels, n, anchors)
    cand_needed("cand_labels", cand_labels)
    if not symmetric:
        _class_ids(op, "cand_labels", cand_labels, m, anchors)
    return n, m, d, 1


def fake_fwd(anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind, offset, temperature,
             threshold, push, label_norm):
    n, *_ = check("contrastive_fwd", anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind, offset,
                  temperature, threshold, push, label_norm, None)
    return anchors.new_empty((n,)), anchors.new_empty((n, _constants.ROW_STATS))


def fake_bwd(grad_row_loss, anchors, candidates, labels, cand_labels, preds, cand_preds, weights, row_stats, kind,
             offset, temperature, threshold, push, label_norm):
    check("contrastive_bwd", anchors, candidates, labels, cand_labels, preds, cand_preds, weights, kind, offset,
          temperature, threshold, push, label_norm, None)
    check_grads("contrastive_bwd", anchors, grad_row_loss, row_stats)
    grad_c = torch.empty_like(candidates) if candidates is not None else anchors.new_empty((0, anchors.shape[1]))
    return torch.empty_like(anchors), grad_c


def check_grads(op: str, anchors, grad_row_loss, row_stats) -> None:
    n = anchors.shape[0]
    check_shape(op, "grad_row_loss", grad_row_loss, (n,))
    check_float_dtype(op, "grad_row_loss", grad_row_loss)
    check_same_device(op, "grad_row_loss", grad_row_loss, anchors, "anchors")
    check_shape(op, "row_stats", row_stats, (n, _constants.ROW_STATS))
    check_same_dtype(op, "row_stats", row_stats, anchors, "anchors")
    check_same_device(op, "row_stats", row_stats, anchors, "anchors")
