"""One sample input for every registered op: the single place a test that covers "every op" gets its inputs.

``ALL[name](dtype=torch.float64, seed=0, n=7)`` returns a ``Sample`` for the public op ``regops.<name>`` (every key
of ``regops._registry.OPS``; tests/test_op_samples.py fails when an op has none). ``n`` is the size that varies
(a batch, row or point count; odd by default), so a test can run one op at several sizes (torch.compile's
dynamic shapes): no Python number of a call follows n, since torch.compile would make it a constant.
``VARIANTS["op[variant]"]`` are samples of other code paths of one op (a frozen head, another reduction).
``dtype_for(name, impl)`` is the dtype a sample runs in on an impl, ``impls(name)`` the impls that run here.

- ``call(impl)``: runs the op on the sample's fixed inputs with that impl. It is repeatable: state an op updates
  (an ELR buffer, ``.grad`` fields, a generator) is made anew inside each call. For a mutating op it returns what
  the op wrote (the ``.grad`` tensors), cloned, next to the op's return value, so that impls can be compared.
- ``inputs``: the floating leaf tensors that require grad and get a gradient from ``scalar(call(impl))``.
- ``aux``: floating tensors without grad that the op reads (labels given as values, frozen features): version
  counter tests modify those too.
- ``differentiable``: ``scalar(output)`` can be backpropagated to ``inputs``; ``returns``: "tensor", "tuple" or
  "other" (a named tuple, a list, a number); ``scalar(output)``: a 0-dim tensor that depends on every
  differentiable output (a fixed, uneven weighting of its elements); ``mutates``: the op writes into its
  arguments (a trailing ``_``, or documented as in place).

Inputs are tiny (the reference in float64 runs each in milliseconds) and valid: away from kinks (|x| at 0, clamps),
with every class present, solvers with a fixed iteration count (``tol=0``) so that no host sync stops them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

import regops
from regops import _registry


def weighted_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ w·t with fixed weights in [0.5, 1.5]: an uneven upstream gradient, the same on every impl."""
    if not t.is_floating_point():
        t = t.double()  # a mask or a count
    if t.dim() == 0:
        return t
    w = torch.linspace(0.5, 1.5, t.numel(), dtype=t.dtype, device=t.device).reshape(t.shape)
    return (w * t).sum()


def _scalar_of_tensor(out):
    return weighted_sum(out)


def _scalar_of_first(out):
    return weighted_sum(out[0])


@dataclass
class Sample:
    call: Callable[[Optional[str]], Any]
    inputs: list
    differentiable: bool = True
    returns: str = "tensor"
    scalar: Callable[[Any], torch.Tensor] = _scalar_of_tensor
    mutates: bool = False
    aux: list = field(default_factory=list)


class _Maker:
    """Seeded draws of one sample: every tensor of a sample comes from one generator, so seed fixes them all."""

    def __init__(self, dtype, seed):
        self.dtype = dtype
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, grad=True, scale=1.0, shift=0.0):
        t = torch.randn(*shape, generator=self.gen, dtype=torch.float64) * scale + shift
        return t.to(self.dtype).requires_grad_(grad)

    def rand(self, *shape, grad=True, low=0.0, high=1.0):
        t = low + (high - low) * torch.rand(*shape, generator=self.gen, dtype=torch.float64)
        return t.to(self.dtype).requires_grad_(grad)

    def randint(self, high, *shape):
        return torch.randint(0, high, shape, generator=self.gen)


def _labels(n, classes=3):
    """n class ids with every class present at least twice (each anchor has a positive)."""
    return torch.arange(n) % classes


SAMPLES: dict[str, Callable[..., Sample]] = {}


def sample_for(name):
    def register(fn):
        if name not in _registry.OPS:
            raise KeyError(f"op_samples: {name!r} is not a registered op")
        SAMPLES[name] = fn
        return fn
    return register


# ---- the orthonormal engine ----

@sample_for("orthonormal_penalty")
def _orthonormal_penalty(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    mats = m.randn(3, 4, n, scale=0.5)
    return Sample(lambda impl: regops.orthonormal_penalty(mats, side="rows", impl=impl), [mats])


@sample_for("sorsa_ortho_loss")
def _sorsa_ortho_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    As, Bs = m.randn(2, 3, n, scale=0.5), m.randn(2, 5, 3, scale=0.5)
    return Sample(lambda impl: regops.sorsa_ortho_loss(As, Bs, impl=impl), [As, Bs])


@sample_for("sorsa_regularize_")
def _sorsa_regularize_(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    A, B = m.randn(3, n, scale=0.5), m.randn(5, 3, scale=0.5)

    def call(impl):
        A.grad, B.grad = torch.zeros_like(A), torch.zeros_like(B)
        value = regops.sorsa_regularize_([(A, B)], gamma=0.1, lr=0.5, impl=impl)
        return value, A.grad.clone(), B.grad.clone()
    return Sample(call, [A, B], differentiable=False, returns="tuple", scalar=_scalar_of_first, mutates=True)


# ---- the contrastive engine ----

@sample_for("conr_loss")
def _conr_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    features = m.randn(n, 4)
    labels = m.rand(n, grad=False)
    preds = (labels + 0.3 * m.randn(n, grad=False)).detach()
    # a threshold below the label spread, so that anchors have both positives and negatives
    return Sample(lambda impl: regops.conr_loss(features, labels, preds, temperature=0.5, threshold=0.3, impl=impl),
                  [features], aux=[labels, preds])


@sample_for("supcon_loss")
def _supcon_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    features, labels = m.randn(n, 4), _labels(n)
    return Sample(lambda impl: regops.supcon_loss(features, labels, temperature=0.5, impl=impl), [features])


@sample_for("focal_supcon_loss")
def _focal_supcon_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    features, labels = m.randn(n, 4), _labels(n)
    return Sample(lambda impl: regops.focal_supcon_loss(features, labels, temperature=0.5, impl=impl), [features])


@sample_for("hard_pair_mixup")
def _hard_pair_mixup(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    features, labels = m.randn(n, 4), _labels(n)

    def call(impl):
        return regops.hard_pair_mixup(features, labels, num_classes=3, generator=torch.Generator().manual_seed(seed),
                                      impl=impl)
    return Sample(call, [features], returns="other", scalar=lambda out: weighted_sum(out.features))


@sample_for("kd_loss")
def _kd_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    student, teacher = m.randn(n, 5), m.randn(n, 5, grad=False)
    return Sample(lambda impl: regops.kd_loss(student, teacher, T=2.0, impl=impl), [student], aux=[teacher])


# ---- the Sinkhorn engine (tol=0: exactly max_iter iterations, no host sync) ----

def _sinkhorn_output_cost(out):
    return out.reg_ot_cost


@sample_for("ot.sinkhorn")
def _sinkhorn(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    x, y = m.randn(n, 2), m.randn(5, 2, shift=0.5)
    return Sample(lambda impl: regops.ot.sinkhorn(x, y, eps=0.5, max_iter=8, tol=0, impl=impl), [x, y],
                  returns="other", scalar=_sinkhorn_output_cost)


@sample_for("ot.sinkhorn_from_cost")
def _sinkhorn_from_cost(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    C = m.rand(n, 5, low=0.1, high=2.0)
    return Sample(lambda impl: regops.ot.sinkhorn_from_cost(C, eps=0.5, max_iter=8, tol=0, impl=impl), [C],
                  returns="other", scalar=_sinkhorn_output_cost)


@sample_for("ot.sinkhorn_divergence")
def _sinkhorn_divergence(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    x, y = m.randn(n, 2), m.randn(5, 2, shift=0.5)
    return Sample(lambda impl: regops.ot.sinkhorn_divergence(x, y, eps=0.5, max_iter=8, tol=0, impl=impl), [x, y])


@sample_for("monge_gap")
def _monge_gap(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    x = m.randn(n, 2)
    y = m.randn(n, 2, scale=0.3, shift=0.5)
    return Sample(lambda impl: regops.monge_gap(x, y, eps=0.5, max_iter=8, tol=0, impl=impl), [x, y])


# ---- the P²OT engine (pseudo-labels: no gradient) ----

@sample_for("p2ot_plan")
def _p2ot_plan(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    logits = m.randn(n, 4, grad=False, scale=2.0)
    return Sample(lambda impl: regops.p2ot_plan(logits, 0.5, max_iter=50, on_nonconvergence="ignore", impl=impl)[0],
                  [], differentiable=False, aux=[logits])


@sample_for("sp2ot_plan")
def _sp2ot_plan(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    logits = m.randn(n, 4, grad=False, scale=2.0)
    similarity = m.rand(n, n, grad=False, high=0.2)

    def call(impl):
        return regops.sp2ot_plan(logits, 0.5, similarity, lam=0.5, mm_iters=2, max_iter=50,
                                 on_nonconvergence="ignore", impl=impl)[0]
    return Sample(call, [], differentiable=False, aux=[logits, similarity])


# ---- GradDrop ----

@sample_for("graddrop_")
def _graddrop_(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    params = [m.randn(n, 3), m.randn(4)]
    grads_task = [m.randn(n, 3, grad=False), m.randn(4, grad=False)]
    grads_reg = [m.randn(n, 3, grad=False), m.randn(4, grad=False)]

    def call(impl):
        for p in params:
            p.grad = None
        ok = regops.graddrop_(params, grads_task, grads_reg, lam=0.5, generator=torch.Generator().manual_seed(seed),
                              impl=impl)
        return (torch.tensor(ok),) + tuple(p.grad.clone() for p in params)
    return Sample(call, params, differentiable=False, returns="tuple", scalar=lambda out: weighted_sum(out[1]),
                  mutates=True, aux=grads_task + grads_reg)


@sample_for("graddrop_keep_prob")
def _graddrop_keep_prob(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    g_task, g_reg = m.randn(n, 5), m.randn(n, 5)
    # the inputs require grad, yet the keep probability is a mask statistic: no gradient on any impl
    return Sample(lambda impl: regops.graddrop_keep_prob(g_task, g_reg, impl=impl), [], differentiable=False,
                  aux=[g_task, g_reg])


# ---- preference losses and the fused-linear engine ----

@sample_for("preference_loss")
def _preference_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    pc, pr = m.randn(n, shift=-5.0), m.randn(n, shift=-5.0)
    rc, rr = m.randn(n, grad=False, shift=-5.0), m.randn(n, grad=False, shift=-5.0)
    return Sample(lambda impl: regops.preference_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1, sft_weight=0.2,
                                                      impl=impl),
                  [pc, pr], returns="tuple", scalar=_scalar_of_first, aux=[rc, rr])


def _token_batch(m, pairs, T, H=4, V=6):
    """hidden (2·pairs, T, H), a head (V, H), targets with some ignored positions, a reference head."""
    hidden, weight = m.randn(2 * pairs, T, H), m.randn(V, H, scale=0.5)
    targets = m.randint(V, 2 * pairs, T)
    targets[:, 0] = -100  # a prompt token
    ref_hidden, ref_weight = m.randn(2 * pairs, T, H, grad=False), m.randn(V, H, grad=False, scale=0.5)
    return hidden, weight, targets, ref_hidden, ref_weight


@sample_for("fused_linear_preference_loss")
def _fused_linear_preference_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    hidden, weight, targets, ref_hidden, ref_weight = _token_batch(m, 2, n)

    def call(impl):
        return regops.fused_linear_preference_loss(hidden, weight, targets, ref_hidden=ref_hidden,
                                                   ref_weight=ref_weight, beta=0.5, sft_weight=0.3, chunk_size=5,
                                                   impl=impl)
    return Sample(call, [hidden, weight], returns="tuple", scalar=_scalar_of_first, aux=[ref_hidden, ref_weight])


@sample_for("rrpo_loss")
def _rrpo_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    hidden, weight, targets, ref_hidden, ref_weight = _token_batch(m, 2, n)
    segments = m.randint(3, *targets.shape)

    def call(impl):
        return regops.rrpo_loss(hidden, weight, targets, ref_hidden, ref_weight, segments, beta=0.5, alpha=0.1,
                                chunk_size=5, impl=impl)
    return Sample(call, [hidden, weight], returns="tuple", scalar=_scalar_of_first, aux=[ref_hidden, ref_weight])


@sample_for("kl_to_reference")
def _kl_to_reference(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    hidden, weight = m.randn(n, 4), m.randn(6, 4, scale=0.5)
    ref = m.randn(n, 6, grad=False)
    mask = torch.arange(n) % 3 != 1
    return Sample(lambda impl: regops.kl_to_reference(hidden, ref, mask, weight=weight, chunk_size=4, impl=impl),
                  [hidden, weight], aux=[ref])


@sample_for("cream_consistency")
def _cream_consistency(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    prev, cur = m.randn(3, n, grad=False), m.randn(3, n, grad=False)
    return Sample(lambda impl: regops.cream_consistency(prev, cur, impl=impl), [], differentiable=False,
                  aux=[prev, cur])


# ---- the class-rows engine ----

@sample_for("decoupled_mixup_loss")
def _decoupled_mixup_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    logits = m.randn(n, 5)
    target_a, target_b = m.randint(5, n), m.randint(5, n)
    return Sample(lambda impl: regops.decoupled_mixup_loss(logits, target_a, target_b, 0.3, impl=impl), [logits])


@sample_for("elr_loss")
def _elr_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    logits, targets = m.randn(n, 5), m.randint(5, n)
    index = torch.randperm(n + 3, generator=m.gen)[:n]
    buffer0 = torch.softmax(m.randn(n + 3, 5, grad=False), 1)

    def call(impl):
        # the op updates its buffer rows in place: each call starts from the same buffer
        return regops.elr_loss(logits, targets, index, buffer0.clone(), impl=impl)
    return Sample(call, [logits], mutates=True)


# ---- spectral norms, repulsion, adversarial states ----

@sample_for("spectral_norm_penalty")
def _spectral_norm_penalty(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    weights = [m.randn(n, 3), m.randn(4, 2, 3), m.randn(n, 3)]

    def call(impl):
        return regops.spectral_norm_penalty(weights, 2, generator=torch.Generator().manual_seed(seed), impl=impl)[:2]
    return Sample(call, weights, returns="tuple", scalar=lambda out: out[0] + weighted_sum(out[1]))


@sample_for("adversarial_state_noise")
def _adversarial_state_noise(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    W = m.randn(3, 2, grad=False)
    states = m.randn(n, 3, grad=False)
    value = lambda s: torch.tanh(s @ W).sum(1)  # noqa: E731
    # the perturbed states are returned detached: no gradient
    return Sample(lambda impl: regops.adversarial_state_noise(value, states, 0.1, steps=2, impl=impl), [],
                  differentiable=False, aux=[states, W])


@sample_for("param_repulsion")
def _param_repulsion(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    params = [m.randn(n, 3), m.randn(5)]
    anchors = [[m.randn(n, 3, grad=False), m.randn(5, grad=False)] for _ in range(2)]
    return Sample(lambda impl: regops.param_repulsion(params, anchors, kind="inverse", impl=impl), params,
                  aux=[a for k in anchors for a in k])


# ---- contractive auto-encoders ----

@sample_for("contractive_penalty")
def _contractive_penalty(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    x, W = m.randn(n, 3), m.randn(3, 4, scale=0.7)
    encoder = lambda z: torch.tanh(z @ W)  # noqa: E731
    return Sample(lambda impl: regops.contractive_penalty(x, encoder, impl=impl), [x, W])


@sample_for("sigmoid_ae_jacobian_penalty")
def _sigmoid_ae_jacobian_penalty(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    x, W_enc, b_enc, W_dec = m.randn(n, 4), m.randn(3, 4), m.randn(3), m.randn(4, 3)
    return Sample(lambda impl: regops.sigmoid_ae_jacobian_penalty(x, W_enc, b_enc, W_dec, impl=impl),
                  [x, W_enc, b_enc, W_dec])


@sample_for("cae_encoder_penalty")
def _cae_encoder_penalty(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    h, W = m.rand(n, 3, low=0.1, high=0.9), m.randn(3, 4)
    return Sample(lambda impl: regops.cae_encoder_penalty(h, W, impl=impl), [h, W])


# ---- local regularization of neural ODEs ----

@sample_for("local_error_penalty")
def _local_error_penalty(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    W = m.randn(3, 3, scale=0.5)
    y = m.randn(n, 3, grad=False)
    field_fn = lambda t, z: torch.tanh(z @ W) * (1 + t)  # noqa: E731
    # detach="official": the state and times are constants, the gradient goes to the field's parameters
    return Sample(lambda impl: regops.local_error_penalty(field_fn, 0.2, y, 0.3, atol=1e-3, rtol=1e-3, impl=impl),
                  [W], aux=[y])


@sample_for("sample_regularization_time")
def _sample_regularization_time(dtype=torch.float64, seed=0, n=7):
    # no tensor argument: n sizes nothing
    def call(impl):
        return regops.sample_regularization_time(0.0, 2.0, torch.Generator().manual_seed(seed), impl=impl)
    return Sample(call, [], differentiable=False, returns="other", scalar=lambda out: torch.tensor(out))


# ---- VGNN ----

@sample_for("gaussian_kl")
def _gaussian_kl(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    mu, logvar = m.randn(n, 3), m.randn(n, 3, scale=0.5)
    return Sample(lambda impl: regops.gaussian_kl(mu, logvar, impl=impl), [mu, logvar])


@sample_for("reparameterize")
def _reparameterize(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    mu, logvar = m.randn(n, 3), m.randn(n, 3, scale=0.5)
    return Sample(lambda impl: regops.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(seed),
                                                     impl=impl),
                  [mu, logvar])


@sample_for("select_present_nodes")
def _select_present_nodes(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    node_stats = m.randn(n + 1, 3)
    multi_hot = (torch.arange(n) % 2 == 0).long()
    return Sample(lambda impl: regops.select_present_nodes(node_stats, multi_hot, impl=impl), [node_stats])


# ---- LSA ----

@sample_for("layer_relative_error")
def _layer_relative_error(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    clean = m.randn(n, 4)
    adv = (clean.detach() + 0.3 * m.randn(n, 4, grad=False)).requires_grad_()
    return Sample(lambda impl: regops.layer_relative_error(clean, adv, impl=impl), [clean, adv])


def _lsa_model(m):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4), torch.nn.ELU(),
                                torch.nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(m.randn(*p.shape, grad=False))
    return model.to(m.dtype)


@sample_for("lsa.most_vulnerable_layers")
def _most_vulnerable_layers(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    model = _lsa_model(m)
    x = m.randn(n, 3, grad=False)
    x_adv = (x + 0.3 * m.randn(n, 3, grad=False)).detach()
    # a ranking (names and floats), computed without gradient
    return Sample(lambda impl: regops.lsa.most_vulnerable_layers(model, x, x_adv, 2, impl=impl), [],
                  differentiable=False, returns="other", scalar=lambda out: torch.tensor([v for _, v in out]).sum(),
                  aux=[x, x_adv])


@sample_for("lsa.layerwise_penalty")
def _layerwise_penalty(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    model = _lsa_model(m)
    x = m.randn(n, 3, grad=False)
    x_adv = (x + 0.3 * m.randn(n, 3, grad=False)).detach().requires_grad_()
    return Sample(lambda impl: regops.lsa.layerwise_penalty(model, x, x_adv, ["1", "3"], gamma=[1.0, 0.5], impl=impl),
                  [*model[0].parameters(), *model[2].parameters(), x_adv], aux=[x])  # the last Linear is after them


# ---- CoRe, DORNet, RoMaP ----

@sample_for("context_embedding_reg")
def _context_embedding_reg(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    E_reg, E_ref = m.randn(2, n, 4), m.randn(2, n, 4)
    # context tokens: SOT, the prompt before and after the concept, EOT; padding after it (positions fixed, so
    # that no Python int follows n: torch.compile would specialize on it)
    return Sample(lambda impl: regops.context_embedding_reg(E_reg, E_ref, 2, eot_index=5, impl=impl),
                  [E_reg, E_ref])


@sample_for("context_attention_reg")
def _context_attention_reg(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    A_reg = [torch.softmax(m.randn(2, n, 2, 3, grad=False), 1).requires_grad_(), m.rand(2, n)]
    A_ref = [torch.softmax(m.randn(2, n, 2, 3, grad=False), 1).requires_grad_(), m.rand(2, n)]
    return Sample(lambda impl: regops.context_attention_reg(A_reg, A_ref, 2, eot_index=5, impl=impl),
                  A_reg + A_ref)


@sample_for("contrast_ratio_loss")
def _contrast_ratio_loss(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    anchor = [m.randn(1, 2, n, 3), m.randn(1, 3, 2, n)]
    pos = [m.randn(1, 2, n, 3, grad=False), m.randn(1, 3, 2, n, grad=False)]
    neg = [m.randn(1, 2, n, 3, grad=False), m.randn(1, 3, 2, n, grad=False)]
    # positives and negatives are stop-gradient (the official .detach())
    return Sample(lambda impl: regops.contrast_ratio_loss(anchor, pos, neg, weights=(0.5, 1.0), impl=impl), anchor,
                  aux=pos + neg)


@sample_for("masked_l1_anchor")
def _masked_l1_anchor(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    render, target = m.randn(2, 3, n, 4), m.randn(2, 3, n, 4)
    mask = m.rand(2, 1, n, 4, low=0.1, high=0.9)
    return Sample(lambda impl: regops.masked_l1_anchor(render, target, mask, impl=impl), [render, target, mask])


# ---- VPRSNN hyperactive neurons ----

def _spikes(m, images, neurons):
    return (m.rand(images, neurons, grad=False) > 0.5).to(m.dtype)


@sample_for("hyperactive_neuron_mask")
def _hyperactive_neuron_mask(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    spikes = _spikes(m, 5, n)
    return Sample(lambda impl: regops.hyperactive_neuron_mask(spikes, 3, impl=impl), [], differentiable=False,
                  aux=[spikes])


@sample_for("apply_hyperactive_mask")
def _apply_hyperactive_mask(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    responses = m.randn(4, n)
    mask = torch.arange(n) % 3 == 0
    return Sample(lambda impl: regops.apply_hyperactive_mask(responses, mask, impl=impl), [responses])


@sample_for("calibrate_hyperactive_threshold")
def _calibrate_hyperactive_threshold(dtype=torch.float64, seed=0, n=7):
    m = _Maker(dtype, seed)
    spikes, responses = _spikes(m, 5, n), m.randn(4, n, grad=False)
    score = lambda masked, threshold: float(masked.sum())  # noqa: E731  (higher is better)

    def call(impl):
        return regops.calibrate_hyperactive_threshold(spikes, responses, score, thresholds=(0, 2, 4), impl=impl)
    return Sample(call, [], differentiable=False, returns="other", scalar=lambda out: torch.tensor(float(out[0])),
                  aux=[spikes, responses])


ALL: dict[str, Callable[..., Sample]] = dict(sorted(SAMPLES.items()))


# ---- other code paths of one op, for the autograd tests: "op[variant]" -> sample fn ----

def op_of(label: str) -> str:
    """The registered op of an ALL or VARIANTS key."""
    return label.split("[", 1)[0]


def _frozen_head(dtype=torch.float64, seed=0, n=7):
    """A frozen head (LoRA): the kernels keep d logp/dx from the forward and skip the second pass."""
    sample = _fused_linear_preference_loss(dtype, seed, n)
    hidden, weight = sample.inputs
    weight.requires_grad_(False)
    sample.inputs, sample.aux = [hidden], sample.aux + [weight]
    return sample


def _kl_per_token(dtype=torch.float64, seed=0, n=7):
    """reduction="none": the backward recomputes the chunks (mean and sum compute the gradient in the forward)."""
    m = _Maker(dtype, seed)
    hidden, weight = m.randn(n, 4), m.randn(6, 4, scale=0.5)
    ref = m.randn(n, 6, grad=False)
    return Sample(lambda impl: regops.kl_to_reference(hidden, ref, weight=weight, reduction="none", chunk_size=4,
                                                      impl=impl),
                  [hidden, weight], aux=[ref])


VARIANTS: dict[str, Callable[..., Sample]] = {
    "fused_linear_preference_loss[frozen_head]": _frozen_head,
    "kl_to_reference[none]": _kl_per_token,
}

# Ops that take no float64 on any impl (their docstrings: float32, bfloat16, float16).
FLOAT32_ONLY = frozenset({"graddrop_", "graddrop_keep_prob"})


def dtype_for(name: str, impl: str) -> torch.dtype:
    """float64 where the op and the impl take it (the registry's Engine.dtypes), else float32. Anything else
    that rejects float64 is a bug of the op, not of the sample. name: an ALL or VARIANTS key."""
    name = op_of(name)
    engine = _registry.OPS[name].engine
    takes = engine.dtypes.get(impl) if engine is not None else None
    if name in FLOAT32_ONLY or (takes is not None and torch.float64 not in takes):
        return torch.float32
    return torch.float64


def impls(name: str) -> list:
    """The reference and every kernel impl that runs the op on CPU tensors here. name: an ALL or VARIANTS key."""
    from conftest import cpu_impls
    return ["reference"] + cpu_impls(op_of(name))


def flat_tensors(out) -> list:
    """The tensors of an op's output, in order (named tuples, lists, tuples, dicts, dataclasses); numbers as 0-dim
    float64 tensors, strings dropped: what impls are compared on."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, bool):
        return [torch.tensor(out)]
    if isinstance(out, (int, float)):
        return [torch.tensor(float(out), dtype=torch.float64)]
    if isinstance(out, str) or out is None:
        return []
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in flat_tensors(k) + flat_tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flat_tensors(v)]
    if hasattr(out, "__dataclass_fields__"):
        return [t for name in out.__dataclass_fields__ if not name.startswith("_")
                for t in flat_tensors(getattr(out, name))]
    raise TypeError(f"op_samples: cannot flatten an output of type {type(out).__name__}")
