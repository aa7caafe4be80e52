"""VGNN's variational regularizer (Zhu & Razavian, "Variationally Regularized Graph-based Representation Learning
for Electronic Health Records", CHIL 2021; official code NYUMedML/GNN_for_EHR, commit 65cd210, ``model.py``, class
``VariationalGNN``). Reference only: elementwise math that torch fuses.

What the official code does, per patient (``encoder_decoder``, L191-201):

    h = parameterize(h_nodes).view(-1, 2, d)        # every graph node: Linear d -> 2d, then dropout
    mu, logvar = h[:, 0, :], h[:, 1, :]             # (num_nodes, d)
    z = reparameterise(mu, logvar)                  # L177-183: eps·exp(0.5·logvar) + mu in training, mu in eval
    mu, logvar = mu[data, :], logvar[data, :]       # data: the patient's multi-hot LongTensor (D,) of 0/1
    kl = 0.5 * sum(logvar.exp() - logvar - 1 + mu.pow(2)) / mu.size(0)

summed over the batch (``forward`` L211-212, and again over the batches in ``utils.train``) and added to the BCE
loss as ``lbd * kl`` (``--lbd`` default 1; declared ``type=int``, so a non-integer weight fails to parse there).

- ``gaussian_kl``: KL(N(mu, exp(logvar)) ‖ N(0, I)) with that normalization (``reduction="official"``).
- ``reparameterize``: the reparameterisation, with an explicit generator.
- ``select_present_nodes``: the node selection the indexing above intends. ``mu[data, :]`` with a 0/1 LongTensor
  is integer indexing, not a mask: every absent code picks row 0 (the padding node) and every present code row 1
  (the first code's node), so the KL regularizes nodes 0 and 1 only, D times in all, and never the nodes the
  patient's codes use (feature j is node j + 1: ``data_to_edges`` adds 1). The intended rows are
  ``mu[data.nonzero() + 1]``.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _checks, _registry
from .._constants import acc_dtype

REDUCTIONS = ("official", "sum", "mean", "none")
_MULTI_HOT_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_floating(op: str, arg: str, t) -> torch.Tensor:
    _checks.check_tensor(op, arg, t)
    if not t.is_floating_point():
        _checks.fail(op, arg, "a floating-point tensor", _checks.dtype_name(t.dtype), TypeError)
    return t


def _check_pair(op: str, mu, logvar, batched_nodes: bool = False) -> None:
    _check_floating(op, "mu", mu)
    _check_floating(op, "logvar", logvar)
    if batched_nodes and mu.dim() not in (2, 3):
        _checks.fail(op, "mu", "a (N, d) or (B, N, d) tensor", f"shape {tuple(mu.shape)}")
    if logvar.shape != mu.shape:
        _checks.fail(op, "logvar", f"shape {tuple(mu.shape)} (as mu)", f"shape {tuple(logvar.shape)}")
    if logvar.dtype != mu.dtype:
        _checks.fail(op, "logvar", f"dtype {_checks.dtype_name(mu.dtype)} (as mu)",
                     _checks.dtype_name(logvar.dtype), TypeError)
    if logvar.device != mu.device:
        _checks.fail(op, "logvar", f"device {mu.device} (as mu)", f"device {logvar.device}", RuntimeError)


def _positive_int(op: str, arg: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        _checks.fail(op, arg, f"an int >= {low}", f"{type(v).__name__} {v!r}", TypeError)
    if v < low:
        _checks.fail(op, arg, f"an int >= {low}", repr(v))
    return v


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, *, reduction: str = "official",
                feature_count: Optional[int] = None, impl=None) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) ‖ N(0, I)), elementwise 0.5·(exp(logvar) − logvar − 1 + mu²), as VGNN's
    regularizer (NYUMedML/GNN_for_EHR ``model.py`` ``VariationalGNN.encoder_decoder`` L201).

    ``mu``, ``logvar``: (N, d) one patient's node statistics, or (B, N, d) a batch of them (same shape, dtype and
    device). ``reduction``:

    - ``"official"`` (default): per patient Σ over its N × d entries divided by F, summed over the batch:
      Σ_b Σ_{n,k} term / F. F = ``feature_count``, default N, the official ``mu.size(0)``: after the official
      indexing ``mu[data, :]`` the tensor has one row per vocabulary feature, so N = D (the feature count, not
      the number of present codes nor d). Pass ``feature_count=D`` to keep the official scale on the rows that
      ``select_present_nodes`` returns (F is the same for every patient, so the concatenated rows of a whole
      batch give the same value as the per-patient sum). A (N, d) input is one patient: Σ term / F.
    - ``"sum"``: Σ over every entry; ``"mean"``: the mean over every entry (raises on an empty input);
      ``"none"``: the elementwise terms, mu's shape.

    Departures: the official code sums and divides in the model's dtype; here bfloat16/float16 inputs compute in
    float32 and the result is float32 (float32 and float64 stay as they are). exp(logvar) − 1 − logvar is
    computed as expm1(logvar) − logvar (no cancellation at logvar ≈ 0, where the naive form loses every digit).
    Nothing is clamped: a term overflows to inf where exp(logvar) or mu² exceeds the compute dtype (float32:
    logvar > 88.7), and inf is what the op returns then; non-finite inputs raise (eagerly, on CPU tensors).
    Differentiable (float64 gradcheck); works under torch.compile(fullgraph=True)."""
    op = "gaussian_kl"
    _check_pair(op, mu, logvar, batched_nodes=True)
    _checks.check_choice(op, "reduction", reduction, REDUCTIONS)
    if feature_count is not None:
        feature_count = _positive_int(op, "feature_count", feature_count)
    _registry.pick(op, impl, mu, "mu")  # the reference only: a named kernel impl raises
    _checks.check_finite_eager(op, "mu", mu.detach())
    _checks.check_finite_eager(op, "logvar", logvar.detach())
    acc = acc_dtype(mu.dtype)
    m, lv = mu.to(acc), logvar.to(acc)
    terms = 0.5 * ((torch.expm1(lv) - lv) + m * m)
    if reduction == "none":
        return terms
    if reduction == "sum":
        return terms.sum()
    if reduction == "mean":
        if terms.numel() == 0:
            _checks.fail(op, "mu", "at least one entry for reduction='mean'", f"shape {tuple(mu.shape)}")
        return terms.mean()
    F = feature_count if feature_count is not None else mu.shape[-2]
    if F == 0:
        _checks.fail(op, "mu", "at least one node per patient (the official divisor N) or a feature_count",
                     f"shape {tuple(mu.shape)}")
    return terms.sum() / F


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, *, generator: Optional[torch.Generator] = None,
                   training: bool = True, impl=None) -> torch.Tensor:
    """z = eps·exp(0.5·logvar) + mu with eps ~ N(0, I) drawn from ``generator`` (torch's default generator when
    None), or ``mu`` itself when ``training=False``: VGNN's ``VariationalGNN.reparameterise``
    (NYUMedML/GNN_for_EHR ``model.py`` L177-183), which reads the module's ``self.training`` and draws with
    ``std.data.new(std.size()).normal_()``.

    ``mu``, ``logvar``: floating tensors of one shape, dtype and device (any shape). The generator must be on
    mu's device type. Differentiable in mu (gradient 1) and logvar (0.5·eps·std). Departures: eps comes from an
    explicit generator, and bfloat16/float16 inputs draw eps and compute in float32, then round the sample to
    their dtype (the official draws and computes in the model's dtype)."""
    op = "reparameterize"
    _check_pair(op, mu, logvar)
    if not isinstance(training, bool):
        _checks.fail(op, "training", "a bool", f"{type(training).__name__} {training!r}", TypeError)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            _checks.fail(op, "generator", "None or a torch.Generator", type(generator).__name__, TypeError)
        if generator.device.type != mu.device.type:
            _checks.fail(op, "generator", f"a generator on {mu.device.type} (as mu)",
                         f"a generator on {generator.device}", RuntimeError)
    _registry.pick(op, impl, mu, "mu")  # the reference only
    if not training:
        return mu
    _checks.check_finite_eager(op, "mu", mu.detach())
    _checks.check_finite_eager(op, "logvar", logvar.detach())
    acc = acc_dtype(mu.dtype)
    eps = torch.randn(mu.shape, generator=generator, dtype=acc, device=mu.device)
    return (eps * torch.exp(0.5 * logvar.to(acc)) + mu.to(acc)).to(mu.dtype)


def select_present_nodes(node_stats: torch.Tensor, multi_hot: torch.Tensor, *, offset: int = 1,
                         impl=None) -> torch.Tensor:
    """The rows of ``node_stats`` of the codes present in ``multi_hot``: node j + ``offset`` for every feature j
    with multi_hot[j] == 1 (offset 1: VGNN's node 0 is the padding node, ``data_to_edges`` adds 1), in feature
    order. What the official ``mu = mu[data, :]`` (NYUMedML/GNN_for_EHR ``model.py``
    ``VariationalGNN.encoder_decoder``) intends; the official line itself is integer indexing with the 0/1 values::

        data = torch.tensor([0, 1, 0, 1])        # D = 4 features, codes 1 and 3 present
        mu[data, :]                              # rows [0, 1, 0, 1]: the padding node and node 1, D rows
        select_present_nodes(mu, data)           # rows [2, 4]: the nodes of codes 1 and 3

    so the official KL regularizes only nodes 0 and 1 (and divides by D). Use
    ``gaussian_kl(select_present_nodes(mu, data), select_present_nodes(logvar, data), feature_count=D)`` for the
    intended regularizer at the official scale.

    ``node_stats``: (num_nodes, d) one patient's node statistics with ``multi_hot`` (D,), or (B, num_nodes, d)
    with ``multi_hot`` (B, D): then the selected rows of all patients are concatenated patient by patient,
    (Σ_b n_b, d) (the official ``"official"`` KL with a fixed feature_count is additive over patients, so this
    gives the batch sum). ``multi_hot``: bool or integer, values 0/1, D + offset ≤ num_nodes. Differentiable in
    node_stats; the output's row count depends on the data, so torch.compile(fullgraph=True) needs
    ``capture_dynamic_output_shape_ops``."""
    op = "select_present_nodes"
    _checks.check_tensor(op, "node_stats", node_stats, ndims=(2, 3))
    _checks.check_tensor(op, "multi_hot", multi_hot, ndims=(node_stats.dim() - 1,))
    if multi_hot.dtype not in _MULTI_HOT_DTYPES:
        _checks.fail(op, "multi_hot", "a bool or integer tensor of 0/1", _checks.dtype_name(multi_hot.dtype),
                     TypeError)
    if multi_hot.device != node_stats.device:
        _checks.fail(op, "multi_hot", f"device {node_stats.device} (as node_stats)", f"device {multi_hot.device}",
                     RuntimeError)
    offset = _positive_int(op, "offset", offset, low=0)
    _registry.pick(op, impl, node_stats, "node_stats")  # the reference only
    batched = node_stats.dim() == 3
    if batched and multi_hot.shape[0] != node_stats.shape[0]:
        _checks.fail(op, "multi_hot", f"{node_stats.shape[0]} rows (one per patient of node_stats)",
                     f"shape {tuple(multi_hot.shape)}")
    D, num_nodes = multi_hot.shape[-1], node_stats.shape[-2]
    if D + offset > num_nodes:
        _checks.fail(op, "multi_hot", f"at most {num_nodes - offset} features (num_nodes {num_nodes} − offset "
                     f"{offset})", f"{D} features")
    if multi_hot.dtype != torch.bool and multi_hot.numel():
        bad = (multi_hot != 0) & (multi_hot != 1)
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            _checks.fail(op, "multi_hot", "values 0 or 1", f"{multi_hot[idx].item()} at index {idx}")
    # feature j sits at node j + offset; the padding node(s) and the nodes past the features are never selected
    mask = multi_hot != 0
    mask = torch.cat([mask.new_zeros(mask.shape[:-1] + (offset,)), mask,
                      mask.new_zeros(mask.shape[:-1] + (num_nodes - D - offset,))], dim=-1)
    return node_stats[mask]
