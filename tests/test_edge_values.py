"""Valid-but-extreme and invalid inputs found by probing the public ops: each gives the right number or the
project's error (`regops.<op>: <arg>: expected …, got …`), never a silent NaN, inf or garbage."""
import math

import pytest
import torch

import regops

from conftest import cpu_impls

PAIR_IMPLS = ["reference"] + cpu_impls("conr_loss")
ORTHO_IMPLS = ["reference"] + cpu_impls("orthonormal_penalty")


def features(n=12, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 3])
VALUES = (torch.arange(12) % 4).float() / 4


@pytest.mark.parametrize("impl", PAIR_IMPLS)
@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e20), (torch.bfloat16, 1e30), (torch.float64, 1e200)])
def test_contrastive_losses_are_scale_invariant_for_huge_rows(impl, dtype, scale):
    f = features().to(dtype)
    big = f * scale
    assert torch.isfinite(big).all()
    for fn in (lambda x: regops.supcon_loss(x, LABELS, impl=impl),
               lambda x: regops.focal_supcon_loss(x, LABELS, impl=impl),
               lambda x: regops.conr_loss(x, VALUES.to(x.dtype if x.dtype != torch.bfloat16 else torch.float32),
                                          VALUES.flip(0).to(x.dtype if x.dtype != torch.bfloat16 else torch.float32),
                                          impl=impl)):
        # bf16 rounds f·scale differently from f: compare with the rounded rows scaled back
        want = fn((big.double() / scale).to(dtype))
        got = fn(big)
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-5 if dtype != torch.bfloat16 else 1e-2,
                                   atol=1e-6 if dtype != torch.bfloat16 else 1e-2)


@pytest.mark.parametrize("impl", ORTHO_IMPLS)
def test_orthonormal_penalty_raises_when_the_gram_overflows(impl):
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)) * 1e20
    with pytest.raises(ValueError, match=r"regops\.orthonormal_penalty: mats: expected finite values"):
        regops.orthonormal_penalty(x, side="rows", impl=impl)


@pytest.mark.parametrize("impl", ORTHO_IMPLS)
def test_sorsa_regularize_overflow_raises_and_changes_nothing(impl):
    A = torch.nn.Parameter(torch.randn(4, 6) * 1e20)
    B = torch.nn.Parameter(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"regops\.sorsa_regularize_: mats\[0\]: expected finite values"):
        regops.sorsa_regularize_([(A, B)], gamma=0.1, lr=1.0, impl=impl)
    assert A.grad.abs().sum() == 0 and B.grad.abs().sum() == 0


@pytest.mark.parametrize("impl", ORTHO_IMPLS)
def test_sorsa_regularize_rejects_an_expanded_grad(impl):
    A = torch.nn.Parameter(torch.randn(4, 6))
    B = torch.nn.Parameter(torch.randn(5, 4))
    A.grad = torch.zeros(1, 1).expand(4, 6)
    with pytest.raises(ValueError, match=r"regops\.sorsa_regularize_: A\[0\]\.grad: expected a gradient whose "):
        regops.sorsa_regularize_([(A, B)], gamma=0.1, lr=1.0, impl=impl)


@pytest.mark.skipif("cpu" not in ORTHO_IMPLS, reason="no compiled CPU kernel in this build")
def test_grad_accumulate_op_rejects_overlapping_grads():
    m = [torch.randn(4, 6), torch.randn(4, 6)]
    shared = torch.zeros(4, 6)
    with pytest.raises(ValueError, match=r"grads\[0\]: expected a gradient whose elements do not share memory"):
        torch.ops.regops.orthonormal_grad_accumulate_(m, [torch.zeros(1, 1).expand(4, 6), shared], 1.0, False)
    with pytest.raises(ValueError, match=r"grads\[1\]: expected a gradient that shares no memory"):
        torch.ops.regops.orthonormal_grad_accumulate_(m, [shared, shared], 1.0, False)


def test_number_arguments():
    f = features()
    with pytest.raises(TypeError, match=r"regops\.supcon_loss: temperature: expected a positive finite number"):
        regops.supcon_loss(f, LABELS, temperature=True)
    with pytest.raises(ValueError, match=r"regops\.supcon_loss: temperature"):
        regops.supcon_loss(f, LABELS, temperature=math.nan)
    # a 0-dim tensor is a number
    torch.testing.assert_close(regops.supcon_loss(f, LABELS, temperature=torch.tensor(0.1)),
                               regops.supcon_loss(f, LABELS, temperature=0.1))
    with pytest.raises(TypeError, match=r"labels: expected real labels"):
        regops.supcon_loss(f, LABELS.to(torch.complex64))
    with pytest.raises(TypeError, match=r"regops\.p2ot_plan: rho: expected a mass in \(0, 1\]"):
        regops.p2ot_plan(f, "0.5")
    with pytest.raises(TypeError, match=r"regops\.p2ot_plan: max_iter"):
        regops.p2ot_plan(f, 0.5, max_iter=True)


def test_p2ot_rejects_non_finite_init_similarity_lam_mm_tol():
    z = features(10, 4)
    with pytest.raises(ValueError, match=r"regops\.p2ot_plan: init: expected a log column scaling without NaN"):
        regops.p2ot_plan(z, 0.3, init=torch.tensor([0.0, math.nan, 0.0, 0.0, 0.0]), impl="reference")
    S = torch.zeros(10, 10)
    S[0, 1] = math.inf
    with pytest.raises(ValueError, match=r"regops\.sp2ot_plan: similarity: expected finite values"):
        regops.sp2ot_plan(z, 0.3, S)
    with pytest.raises(ValueError, match=r"regops\.sp2ot_plan: lam: expected a finite number"):
        regops.sp2ot_plan(z, 0.3, torch.zeros(10, 10), lam=math.nan)
    for bad in (math.nan, -1.0):
        with pytest.raises(ValueError, match=r"regops\.sp2ot_plan: mm_tol"):
            regops.sp2ot_plan(z, 0.3, torch.zeros(10, 10), mm_tol=bad)
    # a −inf entry (a zero-mass column, as ρ = 1 leaves) is a valid warm start
    _, state = regops.p2ot_plan(z, 1.0, impl="reference")
    plan, _ = regops.p2ot_plan(z, 0.5, init=state, impl="reference")
    assert torch.isfinite(plan).all()


def test_topk_gaussian_similarity_checks():
    f = features(6, 3)
    with pytest.raises(ValueError, match=r"features: expected finite values"):
        regops.topk_gaussian_similarity(torch.where(f > 1, math.nan, f))
    with pytest.raises(ValueError, match=r"features: expected at least one column"):
        regops.topk_gaussian_similarity(torch.zeros(6, 0))
    for sigma in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match=r"sigma: expected a positive finite number"):
            regops.topk_gaussian_similarity(f, sigma=sigma)


def test_graddrop_keep_prob_rejects_nan_and_has_no_gradient():
    a = torch.randn(5, requires_grad=True)
    with pytest.raises(ValueError, match=r"regops\.graddrop_keep_prob: g_task: expected finite values"):
        regops.graddrop_keep_prob(torch.full((5,), math.nan), torch.ones(5))
    assert not regops.graddrop_keep_prob(a, torch.ones(5)).requires_grad


def test_plan_utilities_check_their_inputs():
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    a = torch.full((6,), 1 / 5)
    a[2] = 0
    out = regops.ot.sinkhorn(x, x + 1, a=a, eps=0.5)
    with pytest.raises(ValueError, match=r"regops\.ot\.barycentric_map: a: expected positive weights"):
        regops.ot.barycentric_map(out)
    out = regops.ot.sinkhorn(x, x + 1, eps=0.5)
    with pytest.raises(ValueError, match=r"regops\.ot\.apply_plan: v: expected finite values"):
        regops.ot.apply_plan(out, torch.full((6,), math.nan))


def test_kd_loss_checks_its_inputs():
    from regops import masktune
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(TypeError, match=r"regops\.kd_loss: student_logits: expected a torch\.Tensor, got list"):
        masktune.kd_loss(s.tolist(), t)
    with pytest.raises(ValueError, match=r"regops\.kd_loss: teacher_logits: expected finite values, got nan"):
        masktune.kd_loss(s, torch.where(t > 0, t, torch.full_like(t, math.nan)))
    with pytest.raises(ValueError, match=r"regops\.kd_loss: T: expected a finite positive temperature, got inf"):
        masktune.kd_loss(s, t, T=math.inf)
    with pytest.raises(TypeError, match=r"regops\.kd_loss: T: expected a finite positive temperature, got bool"):
        masktune.kd_loss(s, t, T=True)
    with pytest.raises(ValueError, match=r"regops\.kd_loss: student_logits: expected at least one sample"):
        masktune.kd_loss(s[:0], t[:0])
    with pytest.raises(TypeError, match=r"regops\.kd_loss: student_logits: expected a floating-point tensor"):
        masktune.kd_loss(s.long(), t)
    # float64 stays float64 (was rounded through float32); a 0-dim tensor T works
    s64 = s.double().requires_grad_()
    v = masktune.kd_loss(s64, t.double(), T=torch.tensor(2.0))
    assert v.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: masktune.kd_loss(x, t.double(), T=2.0), (s64,))


def test_monge_gap_loss_lambda_is_checked():
    for bad in (math.nan, -1.0, math.inf):
        with pytest.raises(ValueError, match=r"regops\.nn\.MongeGapLoss: lambda_: expected a finite number >= 0"):
            regops.nn.MongeGapLoss(lambda_=bad)
    with pytest.raises(TypeError, match=r"regops\.nn\.MongeGapLoss: lambda_"):
        regops.nn.MongeGapLoss(lambda_="1")
    assert regops.nn.MongeGapLoss(lambda_=torch.tensor(0.5)).lambda_ == 0.5


def test_masktune_load_rejects_truncated_bits():
    from regops import masktune
    m = masktune.apply(torch.nn.Sequential(torch.nn.Linear(5, 7)), targets=[torch.nn.Linear])
    exported = masktune.export(m)
    name = next(iter(exported))
    exported[name] = dict(exported[name], bits=exported[name]["bits"][:-1])
    with pytest.raises(ValueError, match=r"regops\.masktune\.load: exported\['0\.weight'\]\['bits'\]: expected a "
                                         r"1-D tensor of 5 packed bytes \(the 35 mask bits"):
        masktune.load(m, exported)


def test_sinkhorn_eps_and_init_errors_are_clear():
    x = torch.randn(2, 6, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"regops\.ot\.sinkhorn: eps: expected a number, or a tensor of 1 or 2 "
                                         r"values \(one per problem\), got shape \(3,\)"):
        regops.ot.sinkhorn(x, x + 1, eps=torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"regops\.ot\.sinkhorn: eps: expected positive finite values, got eps "
                                         r"\[0\.5, -0\.25\]"):
        regops.ot.sinkhorn(x, x + 1, eps=torch.tensor([0.5, -0.25]))
    with pytest.raises(ValueError, match=r"regops\.ot\.sinkhorn: eps: expected a positive finite number, got "
                                         r"-0\.5"):
        regops.ot.sinkhorn(x, x + 1, eps=torch.tensor(-0.5))
    with pytest.raises(TypeError, match=r"regops\.ot\.sinkhorn: eps: expected a positive finite number, got bool"):
        regops.ot.sinkhorn(x, x + 1, eps=True)
    out = regops.ot.sinkhorn(x, x + 1, eps=torch.tensor([0.5, 0.25]))  # one eps per problem
    assert out.eps.tolist() == [0.5, 0.25]
    f = torch.zeros(6)
    f[3] = math.nan
    with pytest.raises(ValueError, match=r"regops\.ot\.sinkhorn: init: expected potentials without NaN or \+inf, "
                                         r"got init f with nan"):
        regops.ot.sinkhorn(x[0], x[0] + 1, eps=0.5, init=(f, torch.zeros(6)))
    with pytest.raises(ValueError, match=r"regops\.ot\.sinkhorn: init: expected potentials of shapes"):
        regops.ot.sinkhorn(x, x + 1, eps=0.5, init=(torch.zeros(3, 6), torch.zeros(6)))


def test_composite_ops_name_themselves_in_errors():
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^regops\.ot\.sinkhorn_divergence: a: "):
        regops.ot.sinkhorn_divergence(x, x + 1, a=-torch.ones(6), eps=0.5)
    with pytest.raises(ValueError, match=r"^regops\.ot\.sinkhorn_divergence: tau_a: "):
        regops.ot.sinkhorn_divergence(x, x + 1, tau_a=2.0, eps=0.5)
    with pytest.raises(ValueError, match=r"^regops\.monge_gap: eps: "):
        regops.monge_gap(x, x + 1, eps=-1.0)
    if "triton" in cpu_impls("monge_gap"):
        with pytest.raises(TypeError, match=r"^regops\.monge_gap: x: expected dtype float32 for impl='triton'"):
            regops.monge_gap(x, x + 1, eps=0.5, impl="triton")


def test_iterative_solvers_reject_meta_tensors():
    m = torch.device("meta")
    x = torch.randn(6, 2, device=m)
    cases = [("ot.sinkhorn", "x", lambda: regops.ot.sinkhorn(x, x, eps=0.1)),
             ("ot.sinkhorn_from_cost", "C", lambda: regops.ot.sinkhorn_from_cost(x, eps=0.1)),
             ("monge_gap", "x", lambda: regops.monge_gap(x, x, eps=0.1)),
             ("p2ot_plan", "logits", lambda: regops.p2ot_plan(x, 0.5, impl="reference")),
             ("sp2ot_plan", "logits", lambda: regops.sp2ot_plan(x, 0.5, torch.ones(6, 6, device=m)))]
    for op, arg, call in cases:
        with pytest.raises(RuntimeError, match=rf"regops\.{op}: {arg}: expected a tensor with data .* got a meta"):
            call()
    # the closed-form ops propagate shapes on meta tensors
    assert regops.supcon_loss(x, torch.zeros(6, dtype=torch.long, device=m), impl="reference").device == m
