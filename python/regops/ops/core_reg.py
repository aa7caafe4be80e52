"""CoRe's context regularizers ("CoRe: Context-Regularized Text Embedding Learning for Text-to-Image
Personalization", pangy9/CoRe at commit 308f55b), reference only: a masked cosine and a masked MSE, which torch
runs as they are.

Both compare a prompt holding the learned concept token(s) ("a photo of a S*", the *regularized* side, ``*_reg``)
with the same prompt holding the category word ("a photo of a dog", the *reference* side, ``*_ref``) on the
**context** tokens only: the positions before the concept (SOT included) and those after it up to and including
EOT; the concept itself and the padding after EOT are left out.

- ``context_embedding_reg``: ``utils.py`` ``get_context_embedding_loss`` (L65-138, called from ``train.py``
  L1496-1515) on the text-encoder outputs.
- ``context_attention_reg``: ``train.py`` L1517-1569 on the cross-attention probabilities that
  ``modules/hook.py`` ``UNetCrossAttentionHooker`` records.

The official weights (``train.sh``: ``--embedding_cosine_weight 1.5e-4``, ``--attention_mean_weight 0.05``) are
the caller's: both ops return the unweighted term.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from .. import _checks, _registry
from .._constants import acc_dtype

Index = Union[int, torch.Tensor]
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _position(op: str, arg: str, v, B: int, device: torch.device) -> torch.Tensor:
    """An int, or an integer tensor of shape () or (B,): one position per sample, as a (B, 1) LongTensor."""
    if isinstance(v, torch.Tensor):
        if v.dtype == torch.bool or v.is_floating_point() or v.is_complex():
            _checks.fail(op, arg, "an int or an integer tensor", f"a tensor of dtype {_checks.dtype_name(v.dtype)}",
                         TypeError)
        if v.dim() > 1 or (v.dim() == 1 and v.shape[0] != B):
            _checks.fail(op, arg, f"an int or an integer tensor of shape () or ({B},)", f"shape {tuple(v.shape)}")
        return v.to(device=device, dtype=torch.long).reshape(-1, 1).expand(B, 1)
    if isinstance(v, bool) or not isinstance(v, (int, torch.SymInt)):
        _checks.fail(op, arg, "an int or an integer tensor", f"{type(v).__name__} {v!r}", TypeError)
    return torch.full((B, 1), int(v), dtype=torch.long, device=device)


def _check_positions(op: str, start, eot, concept_len: int, T: int) -> None:
    """0 <= concept_index, concept_index + concept_len <= eot_index < T: the concept lies before EOT, so the kept
    set (SOT..concept, concept end..EOT) always holds EOT and is never empty. Data-dependent on tensors: skipped
    while torch.compile traces (ints are checked always)."""
    tensors = isinstance(start, torch.Tensor) or isinstance(eot, torch.Tensor)
    if tensors and torch.compiler.is_compiling():
        return
    s = start.reshape(-1).tolist() if isinstance(start, torch.Tensor) else [int(start)]
    e = eot.reshape(-1).tolist() if isinstance(eot, torch.Tensor) else [int(eot)]
    n = max(len(s), len(e))
    s, e = (s * n if len(s) == 1 else s), (e * n if len(e) == 1 else e)
    for b, (si, ei) in enumerate(zip(s, e)):
        at = f" (sample {b})" if tensors else ""
        if si < 0:
            _checks.fail(op, "concept_index", "a position >= 0", f"{si}{at}")
        if si + concept_len > ei:
            _checks.fail(op, "concept_index", "concept_index + concept_len <= eot_index (the concept before EOT)",
                         f"concept_index {si}, concept_len {concept_len}, eot_index {ei}{at}")
        if ei >= T:
            _checks.fail(op, "eot_index", f"a position < T = {T}", f"{ei}{at}")


def _keep(op: str, concept_index, eot_index, concept_len: int, B: int, T: int, device) -> torch.Tensor:
    """The kept positions, a (B, T) bool tensor: t < concept_index or concept_index + concept_len <= t <=
    eot_index (the official ``cat([x[:, :start], x[:, start + len: eot + 1]], dim=1)``)."""
    s = _position(op, "concept_index", concept_index, B, device)
    e = _position(op, "eot_index", eot_index, B, device)
    _check_positions(op, concept_index, eot_index, concept_len, T)
    t = torch.arange(T, device=device)[None, :]
    return (t < s) | ((t >= s + concept_len) & (t <= e))


def context_mask(T: int, concept_index: Index, *, eot_index: Index, concept_len: int = 1, batch: int = 1,
                 device=None) -> torch.Tensor:
    """The context positions both CoRe regularizers keep, as a (batch, T) bool tensor (see ``_keep``)."""
    op = "context_mask"
    concept_len = _check_concept_len(op, concept_len)
    return _keep(op, concept_index, eot_index, concept_len, batch, T,
                 torch.device("cpu") if device is None else torch.device(device))


def _check_concept_len(op: str, concept_len) -> int:
    if isinstance(concept_len, bool) or not isinstance(concept_len, (int, torch.SymInt)):
        _checks.fail(op, "concept_len", "an int >= 1", f"{type(concept_len).__name__} {concept_len!r}", TypeError)
    if concept_len < 1:
        _checks.fail(op, "concept_len", "an int >= 1", repr(concept_len))
    return int(concept_len)


def _reduce(per: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.mean()


def context_embedding_reg(E_reg: torch.Tensor, E_ref: torch.Tensor, concept_index: Index, *, eot_index: Index,
                          concept_len: int = 1, cos_dim: str = "token", eps: float = 1e-8,
                          reduction: str = "mean", impl=None) -> torch.Tensor:
    """CoRe's context embedding regularizer: 1 − cos(E_reg, E_ref) on the context tokens.

    ``E_reg``, ``E_ref``: text-encoder outputs (B, T, C) or (T, C) (one prompt) of the concept prompt and the
    category prompt. ``concept_index``: the concept's first token (the official ``start_index``, where the
    placeholder id sits); ``concept_len``: its token count (the official ``len(object_tokens)``); ``eot_index``: the
    EOT position (the official ``eot_index``, ``(ids == 49407).nonzero()``). Each is an int or an integer tensor
    (B,) (one per prompt). ``eot_index`` is required: padding after EOT is excluded, and only the tokenizer's ids
    say where it starts.

    ``cos_dim="token"`` (the official, ``F.cosine_similarity(cat_cond, obj_cond, dim=1).mean()`` on (1, T', C)
    tensors): per feature channel the cosine across the kept tokens, then the mean over channels. ``"feature"``:
    the per-token cosine over the C features, then the mean over kept tokens (the more usual reading of
    "embedding cosine", offered as an option, not the official value).

    Zero-norm vectors follow ``F.cosine_similarity`` (which this op calls): each norm is clamped to ``eps`` before
    the division, so a zero vector has cosine 0 (its term is 1), never NaN.

    Departures: the official takes one prompt (B = 1); here a batch of prompts, reduced by ``reduction`` ("mean"
    over prompts, the official for B = 1; "sum"; "none": the (B,) per-prompt terms). The official slices the
    category prompt at ``start + len(category_tokens)`` with the concept prompt's ``eot_index``, which lines up only
    when both have the same token count; here one ``concept_len`` serves both (the case that works officially).
    Values in float32 for half inputs. Neither side is detached (officially the category side carries no learned
    token, so no gradient reaches the embedding through it)."""
    op = "context_embedding_reg"
    _checks.check_choice(op, "cos_dim", cos_dim, ("token", "feature"))
    _checks.check_choice(op, "reduction", reduction, ("mean", "sum", "none"))
    _registry.resolve_impl(op, impl, E_reg.device if isinstance(E_reg, torch.Tensor) else torch.device("cpu"))
    for arg, t in (("E_reg", E_reg), ("E_ref", E_ref)):
        _checks.check_tensor(op, arg, t, ndims=(2, 3), dtypes=FLOATS)
    if E_ref.shape != E_reg.shape:
        _checks.fail(op, "E_ref", f"shape {tuple(E_reg.shape)} (as E_reg)", f"shape {tuple(E_ref.shape)}")
    if E_ref.dtype != E_reg.dtype:
        _checks.fail(op, "E_ref", f"dtype {_checks.dtype_name(E_reg.dtype)} (as E_reg)",
                     _checks.dtype_name(E_ref.dtype), TypeError)
    if E_ref.device != E_reg.device:
        _checks.fail(op, "E_ref", f"device {E_reg.device} (as E_reg)", f"device {E_ref.device}", RuntimeError)
    single = E_reg.dim() == 2
    x, y = (E_reg[None], E_ref[None]) if single else (E_reg, E_ref)
    B, T, C = x.shape
    if B == 0 or T == 0 or C == 0:
        _checks.fail(op, "E_reg", "at least one prompt of at least one token and one channel (B, T, C)",
                     f"shape {tuple(E_reg.shape)}")
    concept_len = _check_concept_len(op, concept_len)
    eps = _checks.number(op, "eps", eps, low=0, low_open=True, what="a finite eps > 0")
    keep = _keep(op, concept_index, eot_index, concept_len, B, T, x.device)  # (B, T)
    for arg, t in (("E_reg", E_reg), ("E_ref", E_ref)):
        _checks.check_finite_eager(op, arg, t.detach())
    acc = acc_dtype(x.dtype)
    x, y, m = x.to(acc), y.to(acc), keep.to(acc)
    if cos_dim == "token":
        # zeroed positions add nothing to the dot products and norms over the token axis: exactly the cosine of
        # the concatenated kept slices
        cos = F.cosine_similarity(x * m[..., None], y * m[..., None], dim=1, eps=eps)   # (B, C)
        per = 1 - cos.mean(1)
    else:
        cos = F.cosine_similarity(x, y, dim=2, eps=eps)                   # (B, T)
        per = 1 - (cos * m).sum(1) / m.sum(1).clamp_min(1)
    out = _reduce(per, reduction)
    return out[0] if single and reduction == "none" else out


def _layers(op: str, arg: str, A) -> list:
    if isinstance(A, torch.Tensor):
        return [A]
    if not isinstance(A, (list, tuple)):
        _checks.fail(op, arg, "a list of per-layer attention tensors", type(A).__name__, TypeError)
    if len(A) == 0:
        _checks.fail(op, arg, "at least one cross-attention layer", "an empty list")
    return list(A)


def context_attention_reg(A_reg: Sequence[torch.Tensor], A_ref: Sequence[torch.Tensor], concept_index: Index, *,
                          eot_index: Index, concept_len: int = 1, reduction: str = "sum",
                          impl=None) -> torch.Tensor:
    """CoRe's context attention regularizer: the MSE between the per-token mean cross-attention of the concept
    prompt and of the category prompt on the context tokens, per sample, summed over samples and layers, divided by
    the number of layers.

    ``A_reg``, ``A_ref``: one tensor per cross-attention layer (a list; a single tensor is one layer), each the
    attention probabilities (B, T, heads, HW) as ``UNetCrossAttentionHooker`` records them, or already reduced to
    (B, T). Layers may differ in heads and HW (the UNet's resolutions); every layer has the same (B, T), and
    ``A_ref[i]`` the shape of ``A_reg[i]``. Per layer (``train.py`` L1551-1566): ``mean((2, 3))`` -> (B, T), keep
    the context tokens (the positions of ``context_embedding_reg``, SOT and EOT included), per sample
    ``F.mse_loss`` (the mean over the kept tokens); the sum over samples and layers, divided by the number of
    layers only (L1567).

    ``reduction``: "sum" over samples (the official), "mean" (divided by B as well), "none" (the (B,) per-sample
    terms, each averaged over layers). Departures: none in value; positions may differ per sample (tensors (B,)),
    where the official uses one prompt repeated over the batch. Values in float32 for half inputs. Neither side is
    detached (officially the category side's attention carries no learned token)."""
    op = "context_attention_reg"
    _checks.check_choice(op, "reduction", reduction, ("mean", "sum", "none"))
    A_reg, A_ref = _layers(op, "A_reg", A_reg), _layers(op, "A_ref", A_ref)
    first = A_reg[0]
    _registry.resolve_impl(op, impl, first.device if isinstance(first, torch.Tensor) else torch.device("cpu"))
    if len(A_ref) != len(A_reg):
        _checks.fail(op, "A_ref", f"{len(A_reg)} layers (as A_reg)", f"{len(A_ref)}")
    for i, (a, r) in enumerate(zip(A_reg, A_ref)):
        _checks.check_tensor(op, f"A_reg[{i}]", a, ndims=(2, 4), dtypes=FLOATS)
        _checks.check_tensor(op, f"A_ref[{i}]", r, ndims=(2, 4), dtypes=FLOATS)
        if r.shape != a.shape:
            _checks.fail(op, f"A_ref[{i}]", f"shape {tuple(a.shape)} (as A_reg[{i}])", f"shape {tuple(r.shape)}")
        if a.shape[:2] != first.shape[:2]:
            _checks.fail(op, f"A_reg[{i}]", f"(B, T) = {tuple(first.shape[:2])} (as A_reg[0])",
                         f"shape {tuple(a.shape)}")
        if a.numel() == 0:
            _checks.fail(op, f"A_reg[{i}]", "at least one sample, token, head and pixel", f"shape {tuple(a.shape)}")
    for arg, layers in (("A_reg", A_reg), ("A_ref", A_ref)):
        for i, t in enumerate(layers):
            if t.device != first.device:
                _checks.fail(op, f"{arg}[{i}]", f"device {first.device} (as A_reg[0])", f"device {t.device}",
                             RuntimeError)
            if t.dtype != first.dtype:
                _checks.fail(op, f"{arg}[{i}]", f"dtype {_checks.dtype_name(first.dtype)} (as A_reg[0])",
                             _checks.dtype_name(t.dtype), TypeError)
    B, T = first.shape[:2]
    concept_len = _check_concept_len(op, concept_len)
    acc = acc_dtype(first.dtype)
    m = _keep(op, concept_index, eot_index, concept_len, B, T, first.device).to(acc)   # (B, T)
    for i, (a, r) in enumerate(zip(A_reg, A_ref)):
        _checks.check_finite_eager(op, f"A_reg[{i}]", a.detach())
        _checks.check_finite_eager(op, f"A_ref[{i}]", r.detach())
    n_kept = m.sum(1).clamp_min(1)
    per = None
    for a, r in zip(A_reg, A_ref):
        a, r = a.to(acc), r.to(acc)
        if a.dim() == 4:
            a, r = a.mean((2, 3)), r.mean((2, 3))
        layer = ((a - r).square() * m).sum(1) / n_kept                   # (B,): F.mse_loss per sample
        per = layer if per is None else per + layer
    per = per / len(A_reg)
    return _reduce(per, reduction)
