"""The hyperactive-neuron ops against transcriptions of QVPR/VPRSNN (modular_snn/modular_snn_config_evaluation.py:
process L163 np.count_nonzero, ignore_hyperactive_neurons L252-265; the sweep of modular_snn_evaluation.py L72):
polarity, counts vs record, the sweep and its ties, gradients, compile, fuzzing, bad input."""
import re

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import regops  # noqa: F401  (loads the package the ops live in)
from regops import apply_hyperactive_mask, calibrate_hyperactive_threshold, hyperactive_neuron_mask
from regops.ops.snn import SWEEP


def official_ignore(neuron_spikes, testing_result_monitor, threshold_val):
    """ignore_hyperactive_neurons as written."""
    testing_result_monitor = np.copy(testing_result_monitor)
    if threshold_val != 0:
        for n in range(testing_result_monitor.shape[1]):
            if neuron_spikes[n] < threshold_val:
                continue
            testing_result_monitor[:, n] = np.zeros(testing_result_monitor.shape[0])
    return testing_result_monitor


def records(n_ref, n_query, n_neurons, seed=0, p=None):
    g = np.random.default_rng(seed)
    p = g.uniform(0, 1, n_neurons) if p is None else p          # per-neuron firing probability
    ref = (g.uniform(0, 1, (n_ref, n_neurons)) < p) * g.integers(1, 4, (n_ref, n_neurons))
    query = g.uniform(0, 5, (n_query, n_neurons))
    return ref.astype(np.float64), query


@pytest.mark.smoke
@pytest.mark.parametrize("threshold", SWEEP + (220, 300, 7.5))
def test_matches_official(threshold):
    ref, query = records(200, 30, 64, seed=1)
    neuron_spikes = np.count_nonzero(ref, axis=0)
    want = official_ignore(neuron_spikes, query, threshold)
    mask = hyperactive_neuron_mask(torch.from_numpy(ref), threshold)
    got = apply_hyperactive_mask(torch.from_numpy(query), mask)
    np.testing.assert_array_equal(got.numpy(), want)
    assert mask.dtype == torch.bool and mask.shape == (64,)
    if threshold == 0:
        assert not mask.any()


def test_polarity_counts_and_record():
    # neuron j fires on exactly j of the 10 images, with spike totals far above j
    ref = torch.zeros(10, 11, dtype=torch.int64)
    for j in range(11):
        ref[:j, j] = 50
    counts = torch.arange(11)
    for thr in (0, 1, 4, 10, 11):
        a = hyperactive_neuron_mask(ref, thr)
        b = hyperactive_neuron_mask(counts=counts, threshold=thr)
        c = hyperactive_neuron_mask(counts=counts.double(), threshold=thr)
        assert torch.equal(a, b) and torch.equal(a, c)
        # hyperactive iff count >= threshold (a neuron with count == threshold is removed), none at threshold 0
        assert a.tolist() == [thr != 0 and j >= thr for j in range(11)]
    # the count is of images with a spike, not of spikes: totals of 50 would flag every firing neuron at 20
    assert hyperactive_neuron_mask(ref, 20).sum() == 0
    # bool and float records count the same
    assert torch.equal(hyperactive_neuron_mask(ref.bool(), 4), hyperactive_neuron_mask(ref.double(), 4))


def test_apply_is_a_copy_and_overwrites():
    q = torch.tensor([[1.0, float("nan"), 3.0], [4.0, 5.0, float("inf")]])
    mask = torch.tensor([False, True, True])
    out = apply_hyperactive_mask(q, mask)
    assert out.tolist() == [[1.0, 0.0, 0.0], [4.0, 0.0, 0.0]]       # as the official assignment
    assert q[0, 1].isnan() and q[1, 2].isinf()                        # the input untouched
    assert out.data_ptr() != q.data_ptr()
    qi = torch.tensor([[3, 4], [5, 6]])
    assert apply_hyperactive_mask(qi, torch.tensor([True, False])).tolist() == [[0, 4], [0, 6]]
    # the gradient: 0 on removed columns, 1 elsewhere
    x = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: apply_hyperactive_mask(x, mask), (x,))
    apply_hyperactive_mask(x, mask).sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 0.0]] * 4


def recall_at_1(masked, threshold):
    """R@1 with ground truth query i <-> reference place i: nearest row of REF_RESPONSES, on the neurons the mask
    kept (columns the masking zeroed are left out of the reference too)."""
    kept = masked.abs().sum(0) != 0
    d = torch.cdist(masked[:, kept], REF_RESPONSES[:, kept])
    return (d.argmin(1) == torch.arange(masked.shape[0])).double().mean().item()


# 12 places, 40 neurons: neurons 0..9 fire on all 100 reference images (hyperactive) and respond to place i + 1
# five times louder than the others; neuron j >= 10 fires on j - 10 images
g = torch.Generator().manual_seed(0)
REF_RESPONSES = torch.rand(12, 40, generator=g, dtype=torch.float64)
REF_RESPONSES[:, :10] *= 5
COUNTS = torch.tensor([100] * 10 + list(range(30)))
REF_RECORD = (torch.arange(100)[:, None] < COUNTS[None, :]).double() * 3
QUERY = REF_RESPONSES + 0.01 * torch.rand(12, 40, generator=g, dtype=torch.float64)
QUERY[:, :10] = REF_RESPONSES.roll(-1, 0)[:, :10]


def test_calibrate_sweep_and_ties():
    best, scores = calibrate_hyperactive_threshold(REF_RECORD, QUERY, recall_at_1)
    assert list(scores) == list(SWEEP)
    for thr, s in scores.items():   # each score is the metric on the official masking
        want = official_ignore(np.count_nonzero(REF_RECORD.numpy(), axis=0), QUERY.numpy(), thr)
        assert s == recall_at_1(torch.from_numpy(want), thr)
    # nothing removed (0, and thresholds above the hyperactive count 100): the loud neurons point at place i + 1
    assert scores[0] == 0.0 and scores[120] == scores[200] == 0.0
    # 40..100 remove exactly the hyperactive neurons: every place found; the smallest of them wins the tie
    assert all(scores[t] == 1.0 for t in (40, 60, 80, 100)) and best == min(t for t in SWEEP if scores[t] == 1.0)
    # ties go to the smallest threshold, whatever the order given
    calls = []
    best, scores = calibrate_hyperactive_threshold(REF_RECORD, QUERY, lambda m, t: calls.append(t) or 1.0,
                                                   thresholds=(40, 5, 300, 10))
    assert best == 5 and calls == [40, 5, 300, 10] and set(scores) == {40, 5, 300, 10}
    best, _ = calibrate_hyperactive_threshold(REF_RECORD, QUERY, lambda m, t: torch.tensor(-abs(t - 100.0)),
                                              thresholds=torch.tensor([0, 50, 100, 150]))
    assert best == 100


@given(n_ref=st.integers(0, 30), n_neurons=st.integers(0, 20), thr=st.integers(0, 35), seed=st.integers(0, 99))
def test_fuzz(n_ref, n_neurons, thr, seed):
    ref, query = records(n_ref, 5, n_neurons, seed=seed)
    want = official_ignore(np.count_nonzero(ref, axis=0), query, thr)
    got = apply_hyperactive_mask(torch.from_numpy(query), hyperactive_neuron_mask(torch.from_numpy(ref), thr))
    np.testing.assert_array_equal(got.numpy(), want)


def test_compile_fullgraph():
    ref = (torch.rand(50, 16) < 0.4).float()
    q = torch.rand(8, 16)

    def f(ref, q):
        return apply_hyperactive_mask(q, hyperactive_neuron_mask(ref, 20))
    torch._dynamo.reset()
    assert torch.equal(torch.compile(f, fullgraph=True, backend="aot_eager")(ref, q), f(ref, q))


def _raises(kind, msg, fn, *a, **k):
    with pytest.raises(kind, match="^" + re.escape(msg) + "$"):
        fn(*a, **k)


def test_bad_input():
    ref = torch.ones(5, 4)
    M = "regops.hyperactive_neuron_mask: "
    f = hyperactive_neuron_mask
    _raises(ValueError, M + "threshold: expected a finite number >= 0 (0 disables), got -5", f, ref, -5)
    _raises(TypeError, M + "threshold: expected a number >= 0 (0 disables), got None", f, ref)
    _raises(TypeError, M + "ref_spikes: expected exactly one of ref_spikes and counts, got both", f, ref, 5,
            counts=torch.ones(4, dtype=torch.long))
    _raises(TypeError, M + "ref_spikes: expected exactly one of ref_spikes and counts, got neither", f, None, 5)
    _raises(ValueError, M + "counts: expected whole numbers (images with a spike, per neuron), got 2.5 at index 1",
            f, counts=torch.tensor([1.0, 2.5]), threshold=5)
    _raises(ValueError, M + "counts: expected counts >= 0, got -1 at index 0", f, counts=torch.tensor([-1, 2]),
            threshold=5)
    _raises(TypeError, M + "counts: expected an integer (or whole-valued floating) tensor, got bool", f,
            counts=torch.tensor([True]), threshold=5)
    _raises(ValueError, M + "counts: expected a 1-D tensor, got 2-D tensor of shape (5, 4)", f, counts=ref,
            threshold=5)
    _raises(ValueError, M + "ref_spikes: expected a 2-D tensor, got 1-D tensor of shape (4,)", f, ref[0], 5)
    _raises(ValueError, M + "ref_spikes: expected finite values, got nan at index (0, 0)", f,
            torch.tensor([[float("nan")]]), 5)

    A = "regops.apply_hyperactive_mask: "
    g = apply_hyperactive_mask
    _raises(ValueError, A + "mask: expected shape (4,) (query_responses' neurons), got shape (3,)", g,
            torch.ones(2, 4), torch.zeros(3, dtype=torch.bool))
    _raises(TypeError, A + "mask: expected dtype in (bool), got int64", g, torch.ones(2, 4),
            torch.zeros(4, dtype=torch.long))
    _raises(ValueError, A + "query_responses: expected a tensor (..., n_neurons), got a 0-D tensor", g,
            torch.tensor(1.0), torch.zeros(1, dtype=torch.bool))

    C = "regops.calibrate_hyperactive_threshold: "
    h = calibrate_hyperactive_threshold
    q = torch.rand(3, 4)
    _raises(ValueError, C + "query_responses_cal: expected 4 neurons (as ref_spikes), got shape (3, 5)", h, ref,
            torch.rand(3, 5), recall_at_1)
    _raises(TypeError, C + "metric: expected a callable metric(masked_query_responses, threshold) -> float, got str",
            h, ref, q, "r@1")
    _raises(ValueError, C + "thresholds[1]: expected distinct thresholds, got 5 twice", h, ref, q, recall_at_1,
            thresholds=(5, 5))
    _raises(ValueError, C + "thresholds[0]: expected a finite number >= 0 (0 disables), got -1", h, ref, q,
            recall_at_1, thresholds=(-1,))
    _raises(ValueError, C + "thresholds: expected at least one threshold, got an empty sequence", h, ref, q,
            recall_at_1, thresholds=())
    _raises(ValueError, C + "metric: expected a finite number from metric(..., 0), got nan", h, ref, q,
            lambda m, t: float("nan"), thresholds=(0,))
    _raises(RuntimeError, C + "impl: expected an impl that can run here, got 'cpu': "
            "regops.calibrate_hyperactive_threshold has no cpu kernel", h, ref, q, recall_at_1, impl="cpu")
