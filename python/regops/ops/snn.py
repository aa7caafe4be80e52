"""The hyperactive-neuron regularization of "Ensembles of Compact, Region-specific & Regularized Spiking Neural
Networks for Scalable Place Recognition" (Hussaini, Milford, Fischer; QVPR/VPRSNN at commit d38f30c), reference
only: a count, a comparison and a column mask.

Official code (``modular_snn/``):
- ``modular_snn_config_evaluation.py`` ``process`` L163: ``neuron_spikes = np.count_nonzero(ref_record, axis=0)``,
  per neuron the number of reference images on which it fired at least once (not a spike total);
- the same file, ``ignore_hyperactive_neurons`` L252-265: with ``threshold_val != 0``, a neuron whose count is
  ``< threshold_val`` is kept, every other one (count >= threshold) has its whole column of a copy of the query
  response matrix set to 0; threshold 0 disables the step;
- ``modular_snn_evaluation.py`` L72: the thresholds swept on the first ``num_cal`` places of the query traverse,
  ``[0, 5, 10, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200]``; the READMEs pick the best by hand on R@1 (the code
  selects nothing), and ``ens_seq/process_ensembles.py`` hardcodes chosen values, some outside the sweep (220, 300).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .. import _checks, _registry

SWEEP = (0, 5, 10, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200)


def _device(t) -> torch.device:
    return t.device if isinstance(t, torch.Tensor) else torch.device("cpu")


def _threshold(op: str, threshold) -> float:
    if threshold is None:
        _checks.fail(op, "threshold", "a number >= 0 (0 disables)", "None", TypeError)
    return _checks.number(op, "threshold", threshold, low=0, what="a finite number >= 0 (0 disables)")


def _counts_from_record(op: str, ref_spikes) -> torch.Tensor:
    _checks.check_tensor(op, "ref_spikes", ref_spikes, ndims=(2,))
    if ref_spikes.is_complex():
        _checks.fail(op, "ref_spikes", "a real or bool tensor", _checks.dtype_name(ref_spikes.dtype), TypeError)
    if ref_spikes.is_floating_point():
        _checks.check_finite_eager(op, "ref_spikes", ref_spikes.detach())
    return (ref_spikes.detach() != 0).sum(0)                      # np.count_nonzero(ref_record, axis=0)


def _check_counts(op: str, counts) -> torch.Tensor:
    _checks.check_tensor(op, "counts", counts, ndims=(1,))
    if counts.dtype == torch.bool or counts.is_complex():
        _checks.fail(op, "counts", "an integer (or whole-valued floating) tensor", _checks.dtype_name(counts.dtype),
                     TypeError)
    c = counts.detach()
    if not torch.compiler.is_compiling() and _checks.check_finite_enabled(c.device) and c.numel():
        if c.is_floating_point():
            bad = ~torch.isfinite(c) | (c != c.round())
            if bool(bad.any()):
                i = int(bad.nonzero()[0, 0])
                _checks.fail(op, "counts", "whole numbers (images with a spike, per neuron)", f"{c[i].item()} at "
                             f"index {i}")
        if bool((c < 0).any()):
            i = int((c < 0).nonzero()[0, 0])
            _checks.fail(op, "counts", "counts >= 0", f"{c[i].item()} at index {i}")
    return c


def hyperactive_neuron_mask(ref_spikes: Optional[torch.Tensor] = None, threshold=None, *,
                            counts: Optional[torch.Tensor] = None, impl=None) -> torch.Tensor:
    """The neurons to remove, a bool (n_neurons,) tensor, True = hyperactive: count >= threshold, all False for
    threshold 0 (the official ``ignore_hyperactive_neurons`` rule).

    Give exactly one of ``ref_spikes``, the reference traverse's (n_images, n_neurons) spike record (any real or
    bool dtype; the count is the number of images with a nonzero entry, ``np.count_nonzero(ref_record, axis=0)``),
    or ``counts``, those per-neuron counts (n_neurons,), integer or whole-valued floating, >= 0. ``threshold``: a
    number >= 0 (ints in the official sweep; a float compares the same way). Not differentiable (a bool mask)."""
    op = "hyperactive_neuron_mask"
    if (ref_spikes is None) == (counts is None):
        _checks.fail(op, "ref_spikes", "exactly one of ref_spikes and counts",
                     "both" if ref_spikes is not None else "neither", TypeError)
    _registry.resolve_impl(op, impl, _device(ref_spikes if ref_spikes is not None else counts))
    thr = _threshold(op, threshold)
    c = _counts_from_record(op, ref_spikes) if ref_spikes is not None else _check_counts(op, counts)
    if thr == 0:
        return torch.zeros(c.shape, dtype=torch.bool, device=c.device)
    return c >= thr


def apply_hyperactive_mask(query_responses: torch.Tensor, mask: torch.Tensor, *, impl=None) -> torch.Tensor:
    """The query responses with the hyperactive neurons' columns set to 0, as a new tensor (the official works on
    ``np.copy``). ``query_responses``: (..., n_neurons), officially (n_query_images, n_neurons); ``mask``: bool
    (n_neurons,), True = remove (``hyperactive_neuron_mask``). A masked entry becomes 0 whatever it held (NaN
    included, as the official assignment); the gradient is 0 there and 1 elsewhere."""
    op = "apply_hyperactive_mask"
    _registry.resolve_impl(op, impl, _device(query_responses))
    _checks.check_tensor(op, "query_responses", query_responses)
    if query_responses.dim() == 0:
        _checks.fail(op, "query_responses", "a tensor (..., n_neurons)", "a 0-D tensor")
    if query_responses.is_complex() or query_responses.dtype == torch.bool:
        _checks.fail(op, "query_responses", "a real tensor", _checks.dtype_name(query_responses.dtype), TypeError)
    _checks.check_tensor(op, "mask", mask, ndims=(1,), dtypes=(torch.bool,))
    n = query_responses.shape[-1]
    if mask.shape[0] != n:
        _checks.fail(op, "mask", f"shape ({n},) (query_responses' neurons)", f"shape {tuple(mask.shape)}")
    if mask.device != query_responses.device:
        _checks.fail(op, "mask", f"device {query_responses.device} (as query_responses)", f"device {mask.device}",
                     RuntimeError)
    return torch.where(mask, torch.zeros((), dtype=query_responses.dtype, device=query_responses.device),
                       query_responses)


def calibrate_hyperactive_threshold(ref_spikes: torch.Tensor, query_responses_cal: torch.Tensor,
                                    metric: Callable[[torch.Tensor, float], float], *,
                                    thresholds: Sequence = SWEEP, impl=None) -> tuple:
    """The official threshold sweep, with the selection the READMEs make by hand made automatic: for each
    threshold, ``metric(apply_hyperactive_mask(query_responses_cal, mask(threshold)), threshold)`` (higher is better,
    e.g. R@1 on the calibration places; the ground truth is the metric's), then the best.

    ``ref_spikes``: the reference record (n_images, n_neurons) (the counts are computed once);
    ``query_responses_cal``: the calibration query responses (n_cal, n_neurons), the first ``num_cal`` places of
    the query traverse officially; ``thresholds``: distinct numbers >= 0, the official sweep by default.
    Returns ``(best_threshold, {threshold: score})``; ties go to the smallest threshold (the least pruning). The
    metric must return a finite number. A host-side loop (Python callback): not for torch.compile."""
    op = "calibrate_hyperactive_threshold"
    _registry.resolve_impl(op, impl, _device(query_responses_cal))
    if not callable(metric):
        _checks.fail(op, "metric", "a callable metric(masked_query_responses, threshold) -> float",
                     type(metric).__name__, TypeError)
    if isinstance(thresholds, torch.Tensor):
        thresholds = thresholds.detach().reshape(-1).tolist()
    if not isinstance(thresholds, (list, tuple)):
        _checks.fail(op, "thresholds", "a sequence of numbers >= 0", type(thresholds).__name__, TypeError)
    if len(thresholds) == 0:
        _checks.fail(op, "thresholds", "at least one threshold", "an empty sequence")
    thr = []
    for i, v in enumerate(thresholds):
        _checks.number(op, f"thresholds[{i}]", v, low=0, what="a finite number >= 0 (0 disables)")
        if v in thr:
            _checks.fail(op, f"thresholds[{i}]", "distinct thresholds", f"{v!r} twice")
        thr.append(v)
    counts = _counts_from_record(op, ref_spikes)
    _checks.check_tensor(op, "query_responses_cal", query_responses_cal, ndims=(2,))
    if query_responses_cal.shape[1] != counts.shape[0]:
        _checks.fail(op, "query_responses_cal", f"{counts.shape[0]} neurons (as ref_spikes)",
                     f"shape {tuple(query_responses_cal.shape)}")
    if ref_spikes.device != query_responses_cal.device:
        _checks.fail(op, "ref_spikes", f"device {query_responses_cal.device} (as query_responses_cal)",
                     f"device {ref_spikes.device}", RuntimeError)
    scores = {}
    for v in thr:
        mask = hyperactive_neuron_mask(counts=counts, threshold=v)
        masked = apply_hyperactive_mask(query_responses_cal, mask)
        scores[v] = _checks.number(op, "metric", metric(masked, v),
                                   what=f"a finite number from metric(..., {v!r})")
    best = max(sorted(scores), key=lambda t: scores[t])   # max keeps the first of equals: the smallest threshold
    return best, scores
