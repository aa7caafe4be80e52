"""Core-tuning's hard pair mining feature mixup ("Unleashing the Power of Contrastive Self-Supervised Visual
Models via Contrast-Regularized Fine-Tuning", NeurIPS 2021).

Semantics are the official code's: `feature_mixup` in Core-tuning.py of Vanint/Core-tuning (the file's only
version, commit 354779056aaa4943a9f487d9a57706784ee2eceb, unchanged at HEAD f70e1bf). Line numbers below are
that file's. For a batch of N backbone features f (N, D) with class ids y (N,):

- Block 0, the batch itself (L157-158): f, and the one-hot labels e_y (L156, `to_one_hot` L149-153). The
  official code stores `features.clone().detach()` here (L157): no gradient reaches f through these rows.
- Block 1, "hard negative pair generation" (L170-184): a random permutation π (L171-172; the code's comment
  L173 says partners need not really be negatives), λ1_i ~ Beta(α, α) raised to at least 0.8 (L176-179),
  row i = (1 − λ1_i)·f_i + λ1_i·f_π(i), labels (1 − λ1_i)·e_yi + λ1_i·e_yπ(i) (L181-182).
- Block 2, "hard positive pair generation" (L186-201): on cosine similarities s = f̂ f̂ᵀ of the L2-normalized
  features (L160, L166; used only to choose, never mixed), with P = same label minus the diagonal and
  Q = different label (L161-165):
    hn_i = argmax_j s_ij·Q_ij (L168, L187)   and   hp_i = argmin_j s_ij·P_ij (L167, L190),
  the masked-out entries taking part as exact zeros, first index on ties; then every hp_i == 0 becomes i
  (L191-193, meant as "no positive: use the anchor itself"). λ2_i ~ Beta(α, α), not clamped (L196-197);
  row i = λ2_i·f_hp(i) + (1 − λ2_i)·f_hn(i), labels mixed alike (L198-199).
- Returned (L200-205): the 3N rows [block 0; block 1; block 2] and their 3N soft labels. The model feeds the
  rows to the classifier (soft-label cross-entropy, L424-426) and to the projection head, which
  L2-normalizes (L127-128, L146), then to the focal contrastive loss (L428). That loss turns the soft labels
  into class ids by encoding each row as Σ_k y_k·10^k and label-encoding the codes (L224-237): rows are
  positives of each other when their soft labels are equal.
- Training defaults: `--mixup_alpha` 1 (L52, and the README's training command), so λ ~ Uniform(0, 1); the
  0.8 floor is hard-coded (L178-179); the mixed features are not normalized (the head normalizes later).

Here the same three blocks come back as `HardPairMixup(features, soft_labels, groups)`. `groups` are int64 ids,
equal exactly when the soft-label rows are equal: pass them as the labels of `regops.focal_supcon_loss` on the
projected, normalized rows. Departures, all documented:
- `groups` compare soft labels exactly. The official float32 10^k code merges soft labels that round to the
  same code (and from 20 classes on `10**np.arange(C)` overflows int64), so its grouping is lossy.
- The random numbers come from torch, not Python's `random` and NumPy (so they differ from any official run):
  `torch.randperm(N)`, then one `torch._sample_dirichlet` draw of shape (2, N, 2) with concentration α in
  float64 ([0, :, 0] is λ1, [1, :, 0] is λ2), both on the generator's device (features' device when
  `generator` is None, drawn from that device's default generator), then moved to the features' device.
- `mining="strict"` (not the default) chooses among true positives / negatives only: hp_i = argmin over
  P_i (i when P_i is empty), hn_i = argmax over Q_i (i when Q_i is empty). Under the official rule the masked
  zeros compete: with the non-negative features of the official ReLU backbone every s_ij ≥ 0, so hp_i is
  usually a masked zero, and hp_i = i for every row whose label differs from y_0.
- `detach_originals=False` (not the default) lets gradient flow through block 0 too.
- bf16/fp16 select and mix in fp32 and round the mixed rows once; soft labels are fp32 (fp64 for fp64 input).

Memory: outputs 3N·(D + C); the selection never forms the N×N similarity, it runs over row blocks of
`BLOCK_ROWS` (1024) rows, fewer when N > 32768 so a block holds at most 2^25 entries: at most about
2^25·10 bytes (≈320 MiB, fp32; twice that for fp64) of scratch for any N. The work is O(N²·D), as in the
official code; no Python loop over samples.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import _checks
from .._constants import acc_dtype
from .. import _registry

OP = "hard_pair_mixup"
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
LABEL_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
MINING = ("official", "strict")
BLOCK_ROWS = 1024  # rows of the similarity matrix held at once while choosing pairs ...
BLOCK_ELEMS = 1 << 25  # ... fewer when N is so large that BLOCK_ROWS·N would pass this


class HardPairMixup(NamedTuple):
    features: torch.Tensor     # (3N, D), features' dtype: [originals; random-pair mixes; hard-pair mixes]
    soft_labels: torch.Tensor  # (3N, C), fp32 (fp64 for fp64 features): the mixed one-hot labels
    groups: torch.Tensor       # (3N,), int64: equal exactly when the soft-label rows are equal


# Not traced by torch.compile: a generator's draws and the loop over row blocks would make N a constant of the
# graph (a recompile for every new batch size); run eagerly, the graphs around them keep N symbolic.
@torch.compiler.disable
def draw(n: int, alpha: float, generator, device: torch.device):
    """The random numbers of one call: (π, raw λ1, raw λ2), π int64 (N,), λ float64 (N,), on `device`."""
    dev = generator.device if generator is not None else device
    perm = torch.randperm(n, generator=generator, device=dev)
    conc = torch.full((2, n, 2), float(alpha), dtype=torch.float64, device=dev)
    lam = torch._sample_dirichlet(conc, generator)[..., 0]
    return perm.to(device), lam[0].to(device), lam[1].to(device)


@torch.compiler.disable
@torch.no_grad()
def hard_pair_indices(features: torch.Tensor, labels: torch.Tensor, mining: str = "official",
                      block_rows: int | None = None):
    """(hp, hn): per anchor, the index of its hard positive and hard negative (see the module docstring).
    Works on `block_rows` rows of the cosine-similarity matrix at a time (default: BLOCK_ROWS, or fewer so
    that a block holds at most BLOCK_ELEMS entries)."""
    n = features.shape[0]
    if block_rows is None:
        block_rows = min(BLOCK_ROWS, BLOCK_ELEMS // max(n, 1))
    block_rows = max(1, int(block_rows))
    dev = features.device
    z = F.normalize(features.detach().to(acc_dtype(features.dtype)), dim=1)  # official F.normalize, eps 1e-12
    cols = torch.arange(n, device=dev)
    hp = torch.empty(n, dtype=torch.int64, device=dev)
    hn = torch.empty(n, dtype=torch.int64, device=dev)
    for s in range(0, n, block_rows):  # over row blocks, not samples
        e = min(n, s + block_rows)
        rows = cols[s:e]
        sim = z[s:e] @ z.T                                          # (b, N) cosine similarities
        same = labels[s:e, None] == labels[None, :]                 # the negatives are ~same
        if mining == "official":
            # The official products s·mask: masked entries are zeros that take part in the arg-extrema (their
            # sign, -0 there, does not change a comparison). argmax/argmin return the first of ties.
            hn[s:e] = sim.masked_fill(same, 0).argmax(dim=1)
            same[rows - s, rows] = False                            # now the positives
            idx = sim.masked_fill_(~same, 0).argmin(dim=1)
            hp[s:e] = torch.where(idx == 0, rows, idx)
        else:
            idx = sim.masked_fill(same, -math.inf).argmax(dim=1)
            hn[s:e] = torch.where(same.all(dim=1), rows, idx)
            same[rows - s, rows] = False
            idx = sim.masked_fill_(~same, math.inf).argmin(dim=1)
            hp[s:e] = torch.where(same.any(dim=1), idx, rows)
    return hp, hn


def _check_number(arg, v, lo, hi, lo_open, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or (v <= lo if lo_open else v < lo) or v > hi:
        _checks.fail(OP, arg, what, repr(v))


def hard_pair_mixup(features, labels, *, num_classes: int | None = None, mixup_alpha: float = 1.0,
                    negative_lam_min: float = 0.8, mining: str = "official", detach_originals: bool = True,
                    generator: torch.Generator | None = None, impl=None) -> HardPairMixup:
    """Core-tuning's feature mixup on backbone features (N, D) and integer class ids labels (N,), as the
    official `feature_mixup` (Core-tuning.py L155-205; details and departures in this module's docstring):

        rows [0, N):   f_i (detached, as officially, unless detach_originals=False), labels one-hot
        rows [N, 2N):  (1 − λ1_i)·f_i + λ1_i·f_π(i),      λ1 = max(Beta(α, α), negative_lam_min), π random
        rows [2N, 3N): λ2_i·f_hp(i) + (1 − λ2_i)·f_hn(i),  λ2 = Beta(α, α); hp/hn the hardest positive /
                       negative by cosine similarity (`mining="official"`: the released code's rule)

    with the soft labels mixed by the same λ. Returns `HardPairMixup(features (3N, D), soft_labels (3N, C),
    groups (3N,))`; C = `num_classes`, or labels.max() + 1 when None. The features are not normalized: apply
    the projection head and normalization, then `regops.focal_supcon_loss(z, out.groups)`; the official code
    also trains the classifier on all 3N rows with soft-label cross-entropy. Defaults are the official ones
    (α = 1, floor 0.8). Deterministic given `generator` (a CPU generator also serves CUDA features); the
    gradient flows to `features` through the mixed rows (and through block 0 when detach_originals=False)."""
    _checks.check_tensor(OP, "features", features, ndims=(2,), dtypes=DTYPES)
    n = features.shape[0]
    if n == 0:
        _checks.fail(OP, "features", "at least one row", f"shape {tuple(features.shape)}")
    _checks.check_tensor(OP, "labels", labels, ndims=(1,), dtypes=LABEL_DTYPES)
    if labels.shape[0] != n:
        _checks.fail(OP, "labels", f"shape ({n},) (one per feature row)", f"shape {tuple(labels.shape)}")
    if labels.device != features.device:
        _checks.fail(OP, "labels", f"device {features.device} (as features)", f"device {labels.device}", RuntimeError)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        _checks.fail(OP, "num_classes", "None or a positive int", repr(num_classes))
    _check_number("mixup_alpha", mixup_alpha, 0.0, math.inf, True, "a positive finite number")
    _check_number("negative_lam_min", negative_lam_min, 0.0, 1.0, False, "a number in [0, 1]")
    _checks.check_choice(OP, "mining", mining, MINING)
    if not isinstance(detach_originals, bool):
        _checks.fail(OP, "detach_originals", "a bool", repr(detach_originals), TypeError)
    if generator is not None and not isinstance(generator, torch.Generator):
        _checks.fail(OP, "generator", "None or a torch.Generator", type(generator).__name__, TypeError)
    _registry.resolve_impl(OP, impl, features.device)  # only the reference: a named kernel impl raises
    _checks.check_finite_eager(OP, "features", features)
    labels = labels.detach().to(torch.int64)
    if num_classes is None or (not torch.compiler.is_compiling() and _checks.check_finite_enabled(labels.device)):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            want = "class ids >= 0" if num_classes is None else f"class ids in [0, {num_classes})"
            _checks.fail(OP, "labels", want, f"values in [{lo}, {hi}]")
        if num_classes is None:
            num_classes = hi + 1

    dev = features.device
    acc = acc_dtype(features.dtype)
    perm, lam1, lam2 = draw(n, mixup_alpha, generator, dev)
    lam1 = lam1.clamp_min(float(negative_lam_min)).to(acc)[:, None]  # official: clamp in float64, then .float()
    lam2 = lam2.to(acc)[:, None]
    hp, hn = hard_pair_indices(features, labels, mining)

    f = features.to(acc)
    mixed1 = (1 - lam1) * f + lam1 * f[perm]
    mixed2 = lam2 * f[hp] + (1 - lam2) * f[hn]
    originals = features.detach() if detach_originals else features
    out = torch.cat([originals, mixed1.to(features.dtype), mixed2.to(features.dtype)])

    onehot = F.one_hot(labels, num_classes).to(acc)
    soft = torch.cat([onehot, (1 - lam1) * onehot + lam1 * onehot[perm],
                      lam2 * onehot[hp] + (1 - lam2) * onehot[hn]])
    groups = torch.unique(soft, dim=0, return_inverse=True)[1].reshape(-1)
    return HardPairMixup(out, soft, groups)
