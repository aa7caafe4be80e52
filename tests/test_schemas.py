"""Every regops schema registered in this process, straight through ``torch.ops.regops.*``:

- opcheck (schema, fake kernel, autograd registration, AOT dispatch with dynamic shapes) on valid samples;
- one argument contract per schema: the same bad arguments raise the same exception with the same message on every
  backend registered here (the C++ CPU kernel, the Triton op under the interpreter, and the fake kernels of both,
  on meta tensors). The contracts: csrc/include/regops/<family>_checks.h (CPU and CUDA glue) and
  python/regops/contracts/<family>.py (Triton host code and fake kernels).

The schema list comes from the dispatcher and the registry, so a new schema without samples or bad-argument cases
here fails, as triton/_compile.py fails a jit kernel without a compile spec."""
import pytest
import torch

import regops  # noqa: F401  (registers the ops)
from regops import _loader, _registry

from conftest import triton_schema
def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _rows(n, d, seed=0, grad=False):
    return torch.randn(n, d, generator=_g(seed)).requires_grad_(grad)


def _contrastive_supcon(grad=True):
    return [_rows(6, 3, grad=grad), None, torch.tensor([0, 1, 0, 1, 2, 2]), None, None, None, None, 2, 0, 0.5,
            0.0, 0.0, 2.0]


def _contrastive_conr(grad=True):
    y = torch.linspace(0, 1, 6)[:, None]
    return [_rows(6, 3, grad=grad), None, y, None, y.flip(0), None, torch.ones(6), 0, 0, 0.5, 0.2, 0.1, 2.0]


def _contrastive_bwd():
    fwd = _contrastive_supcon(grad=False)
    rows, stats = torch.ops.regops.contrastive_fwd(*fwd)
    return [torch.ones(6)] + fwd[:7] + [stats] + fwd[7:]


def _mats(grad=True):
    return [(torch.randn(3, 4, 6, generator=_g()) / 3).requires_grad_(grad), False]


def _ortho_bwd():
    mats, _ = _mats(grad=False)
    _, residual = torch.ops.regops.orthonormal_penalty_fwd(mats, False)
    return [torch.ones(3), mats, residual, False]


def _clouds(B=2, N=5, M=4, d=3):
    return torch.randn(B, N, d, generator=_g(1)), torch.randn(B, M, d, generator=_g(2))


def _update():
    x, y = _clouds()
    return [x, y, torch.zeros(2, 4), torch.full((2, 5), -1.6), torch.ones(2, 5), torch.full((2,), 0.5), 0]


def _dense():
    return [torch.rand(2, 5, 4, generator=_g(3)), torch.zeros(2, 4), torch.full((2, 5), -1.6), torch.ones(2, 5),
            torch.full((2,), 0.5), False]


def _cost_grad():
    x, y = _clouds()
    return [x, y, torch.zeros(2, 5), torch.zeros(2, 4), torch.full((2,), 0.5), 1]


def _apply():
    x, y = _clouds()
    return [x, y, torch.zeros(2, 5), torch.zeros(2, 4), torch.randn(2, 4, 2, generator=_g(4)), torch.full((2,), 0.5), 2]


def _mass():
    x, y = _clouds()
    return [x.requires_grad_(), y, torch.zeros(2, 5), torch.zeros(2, 4), torch.full((2,), 0.5), 0, "reference"]


def _p2ot():
    return [torch.rand(6, 4, generator=_g(5)) + 0.1, torch.ones(4), torch.full((6,), 1 / 6)]


def _graddrop():
    ts = [torch.randn(3, 4, generator=_g(6)), torch.randn(5, generator=_g(7))]
    return [[torch.empty_like(t) for t in ts], ts, [t.flip(0) for t in ts], 0.5, 11]


def _keep_prob():
    return [torch.randn(3, 4, generator=_g(8)), torch.randn(3, 4, generator=_g(9))]


def _grad_accumulate():
    mats = [torch.randn(4, 6, generator=_g(10)) / 3, torch.randn(4, 6, generator=_g(11)) / 3]
    return [mats, [torch.zeros_like(m) for m in mats], 0.1, False]


def _lsm_rows(kl_mode=1):
    z = torch.randn(5, 7, generator=_g(12))
    q = torch.randn(5, 7, generator=_g(13)) if kl_mode else None
    return [z, torch.tensor([0, 6, -100, 3, 2]), q, kl_mode, -100]


def _rows_grad(kl_mode=2):
    z, y, q, mode, ignore = _lsm_rows(kl_mode)
    return [z, y, q, torch.randn(5, generator=_g(14)), torch.randn(5, generator=_g(15)), mode, ignore]


def _head(grad=True):
    x = torch.randn(6, 4, generator=_g(16), dtype=torch.float64).requires_grad_(grad)
    w = torch.randn(9, 4, generator=_g(17), dtype=torch.float64).requires_grad_(grad)
    return x, w, torch.tensor([1, -100, 8, 0, 3, 3]), torch.randn(6, 4, generator=_g(18), dtype=torch.float64), \
        torch.randn(9, 4, generator=_g(19), dtype=torch.float64)


def _logprobs():
    x, w, y, rx, rw = _head()
    return [x, w, y, rx, rw, 1, -100, 4, "cpu", False]


def _logprobs_saved():
    x, w, y, _, _ = _head()
    return [x, w.detach(), y, None, None, 0, -100, 4, "cpu", True]


def _logprobs_bwd():
    x, w, y, rx, rw = _head(grad=False)
    g = torch.linspace(-1, 1, 6, dtype=torch.float64)
    return [g, g.flip(0), x, w, y, rx, rw, 2, -100, 4, "cpu", True, True]


def _linear_loss():
    x, w, y, rx, rw = _head()
    g = torch.linspace(0, 1, 6, dtype=torch.float64)
    return [x, w, y, rx, rw, g, g.flip(0), 1, -100, 4, "cpu", True, True]


# schema (its C++ name; the Triton op of the same role shares the samples) -> sample argument lists
def _mixup_rows(want_grad=True, C=5):
    z = _rows(4, C, grad=want_grad)
    return [z, torch.tensor([[0, 1], [2, 2], [C - 1, 0], [3, 1]]) % C, torch.rand(4, 4, generator=_g(3)), want_grad]


def _elr_rows(want_grad=True):
    t = torch.rand(4, 5, generator=_g(4)) / 5
    return [_rows(4, 5, grad=want_grad), torch.tensor([0, 4, 2, 2]), t, 0.7, 3.0, want_grad]


def _row_grad_scale():
    return [torch.rand(4, generator=_g(5)), torch.randn(4, 5, generator=_g(6)), torch.randn(4, 5).to(torch.bfloat16)]


SAMPLES = {
    "contrastive_fwd": [_contrastive_supcon, _contrastive_conr],
    "contrastive_bwd": [_contrastive_bwd],
    "orthonormal_penalty_fwd": [_mats],
    "orthonormal_penalty_bwd": [_ortho_bwd],
    "orthonormal_grad_accumulate_": [_grad_accumulate],
    "sinkhorn_update": [_update],
    "sinkhorn_update_dense": [_dense],
    "sinkhorn_cost_grad": [_cost_grad],
    "sinkhorn_apply": [_apply],
    "sinkhorn_mass": [_mass],
    "p2ot_scaling_pass": [_p2ot],
    "graddrop_apply_": [_graddrop],
    "graddrop_keep_prob": [_keep_prob],
    "logsoftmax_rows": [_lsm_rows, lambda: _lsm_rows(0)],
    "logsoftmax_rows_grad_": [_rows_grad, lambda: _rows_grad(0)],
    "fused_linear_logprobs": [_logprobs, _logprobs_saved],
    "fused_linear_logprobs_backward": [_logprobs_bwd],
    "fused_linear_linear_loss": [_linear_loss],
    "mixup_rows": [_mixup_rows, lambda: _mixup_rows(False), lambda: _mixup_rows(True, C=2)],
    "elr_rows": [_elr_rows, lambda: _elr_rows(False)],
    "row_grad_scale": [_row_grad_scale],
}
# parameter repulsion (repulsion_fwd / repulsion_bwd and their Triton ops)
def _rep_lists(grad=True, dtype=torch.float32):
    ps = [torch.randn(3, 4, generator=_g(20), dtype=dtype).requires_grad_(grad),
          torch.randn(5, generator=_g(21), dtype=dtype).requires_grad_(grad), torch.tensor(0.5, dtype=dtype)]
    return [ps, [torch.randn(p.shape, generator=_g(22 + i), dtype=dtype) for i, p in enumerate(ps)]]


SAMPLES.update({
    "repulsion_fwd": [_rep_lists, lambda: _rep_lists(dtype=torch.float64)],
    "repulsion_bwd": [lambda: [torch.randn(3, generator=_g(25))] + _rep_lists(grad=False)],
})

# batched spectral norms (spectral_power / spectral_outer and their Triton ops)
def _spec_lists(grad=True, dtype=torch.float32):
    ws = [torch.randn(3, 4, generator=_g(30), dtype=dtype).requires_grad_(grad),
          torch.randn(5, 1, generator=_g(31), dtype=dtype).requires_grad_(grad)]
    acc = regops._constants.acc_dtype(dtype)
    u = torch.randn(sum(w.shape[0] for w in ws), generator=_g(32)).to(acc)
    v = torch.randn(sum(w.shape[1] for w in ws), generator=_g(33)).to(acc)
    return ws, u, v


SAMPLES.update({
    "spectral_power": [lambda: [*_spec_lists(), 1, 1e-12], lambda: [*_spec_lists(dtype=torch.float64), 3, 1e-12]],
    "spectral_outer": [lambda: (lambda ws, u, v: [torch.randn(2, generator=_g(36)), u, v, ws])(
        *_spec_lists(grad=False))],
})


TRITON_OF = {t: c for e in _registry.ENGINES for role, c in e.ops.get("cpu", {}).items()
             for t in [e.ops.get("triton", {}).get(role)] if t}
# Build facts and the output cache take no tensors: nothing for opcheck to check.
NO_TENSORS = set(_registry.UTILITY_SCHEMAS)


def registered_schemas() -> list[str]:
    return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("regops::"))


def _samples_for(name):
    return SAMPLES.get(name) or SAMPLES.get(TRITON_OF.get(name, ""), [])


def test_every_registered_schema_has_samples():
    missing = [n for n in registered_schemas() if n not in NO_TENSORS and not _samples_for(n)]
    assert not missing, f"regops schemas without opcheck samples in tests/test_opcheck.py: {missing}"


OPCHECK_CASES = [(n, i) for n in registered_schemas() if n not in NO_TENSORS for i in range(len(_samples_for(n)))]


@pytest.mark.parametrize("name,index", OPCHECK_CASES, ids=[f"{n}[{i}]" for n, i in OPCHECK_CASES])
def test_opcheck(name, index):
    op = getattr(torch.ops.regops, name)
    if name in TRITON_OF and not _loader.triton_interpreted():
        pytest.skip("the samples are CPU tensors: Triton runs them only under TRITON_INTERPRET=1")
    args = _samples_for(name)[index]()
    torch.library.opcheck(op, args)


# ---- bad arguments: one contract per schema ----
def _f32(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _ids(*shape, k=3):
    return torch.randint(0, k, shape, generator=torch.Generator().manual_seed(1))


# ---- the cases: schema -> {case: a function returning the schema's arguments, one of them bad} ----

def _supcon(**kw):
    args = dict(anchors=_f32(5, 3), candidates=None, labels=_ids(5), cand_labels=None, preds=None, cand_preds=None,
                weights=None, kind=2, offset=0, temperature=0.1, threshold=0.0, push=0.0, label_norm=2.0)
    args.update(kw)
    return list(args.values())


def _conr(**kw):
    args = dict(anchors=_f32(5, 3), candidates=None, labels=_f32(5, 1), cand_labels=None, preds=_f32(5, 1),
                cand_preds=None, weights=torch.ones(5), kind=0, offset=0, temperature=0.1, threshold=0.5, push=0.1,
                label_norm=2.0)
    args.update(kw)
    return list(args.values())


def _bwd_args(fwd_args, grad=None, stats=None):
    n = fwd_args[0].shape[0]
    grad = torch.ones(n) if grad is None else grad
    stats = torch.zeros(n, 4) if stats is None else stats
    return [grad] + fwd_args[:7] + [stats] + fwd_args[7:]


CONTRASTIVE_FWD = {
    "anchors 1-D": lambda: _supcon(anchors=_f32(5)),
    "anchors float16": lambda: _supcon(anchors=_f32(5, 3).half()),
    "kind out of range": lambda: _supcon(kind=7),
    "temperature 0": lambda: _supcon(temperature=0.0),
    "temperature nan": lambda: _supcon(temperature=float("nan")),
    "anchors without columns": lambda: _supcon(anchors=_f32(5, 0)),
    "offset without candidates": lambda: _supcon(offset=1),
    "candidates of another width": lambda: _supcon(candidates=_f32(6, 4), cand_labels=_ids(6)),
    "candidates float64": lambda: _supcon(candidates=_f32(6, 3).double(), cand_labels=_ids(6)),
    "offset past the candidates": lambda: _supcon(candidates=_f32(6, 3), cand_labels=_ids(6), offset=2),
    "labels of another length": lambda: _supcon(labels=_ids(4)),
    "labels float": lambda: _supcon(labels=_ids(5).float()),
    "cand_labels missing": lambda: _supcon(candidates=_f32(6, 3)),
    "cand_labels of another length": lambda: _supcon(candidates=_f32(6, 3), cand_labels=_ids(5)),
    "label_norm 0": lambda: _conr(label_norm=0.0),
    "threshold inf": lambda: _conr(threshold=float("inf")),
    "push nan": lambda: _conr(push=float("nan")),
    "ConR labels without columns": lambda: _conr(labels=_f32(5, 0)),
    "ConR labels float64": lambda: _conr(labels=_f32(5, 1).double()),
    "ConR preds missing": lambda: _conr(preds=None),
    "ConR preds of another width": lambda: _conr(preds=_f32(5, 2)),
    "ConR cand_preds missing": lambda: _conr(candidates=_f32(6, 3), cand_labels=_f32(6, 1)),
    "ConR weights missing": lambda: _conr(weights=None),
    "ConR weights of another length": lambda: _conr(weights=torch.ones(4)),
    "ConR weights float64": lambda: _conr(weights=torch.ones(5, dtype=torch.float64)),
}

CONTRASTIVE_BWD = {
    "anchors float16": lambda: _bwd_args(_supcon(anchors=_f32(5, 3).half())),
    "kind out of range": lambda: _bwd_args(_supcon(kind=9)),
    "grad_row_loss of another length": lambda: _bwd_args(_supcon(), grad=torch.ones(4)),
    "grad_row_loss int64": lambda: _bwd_args(_supcon(), grad=torch.ones(5, dtype=torch.int64)),
    "row_stats of another width": lambda: _bwd_args(_supcon(), stats=torch.zeros(5, 3)),
    "row_stats float64": lambda: _bwd_args(_supcon(), stats=torch.zeros(5, 4, dtype=torch.float64)),
}

ORTHONORMAL_FWD = {
    "mats 2-D": lambda: [_f32(4, 5), False],
    "mats float16": lambda: [_f32(2, 4, 5).half(), False],
    "mats int64": lambda: [torch.ones(2, 4, 5, dtype=torch.int64), True],
}

ORTHONORMAL_BWD = {
    "mats 2-D": lambda: [torch.ones(3), _f32(4, 5), torch.zeros(3, 4, 4), False],
    "grad_values of another length": lambda: [torch.ones(2), _f32(3, 4, 5), torch.zeros(3, 4, 4), False],
    "grad_values int64": lambda: [torch.ones(3, dtype=torch.int64), _f32(3, 4, 5), torch.zeros(3, 4, 4), False],
    "residual of another shape": lambda: [torch.ones(3), _f32(3, 4, 5), torch.zeros(3, 5, 5), False],
    "residual float64": lambda: [torch.ones(3), _f32(3, 4, 5), torch.zeros(3, 4, 4, dtype=torch.float64), True],
    "residual of bfloat16 mats in bfloat16": lambda: [torch.ones(3), _f32(3, 4, 5).bfloat16(),
                                                      torch.zeros(3, 4, 4).bfloat16(), False],
}


def _bad_update(**kw):
    B, N, M, d = 2, 5, 4, 3
    args = dict(x=_f32(B, N, d), y=_f32(B, M, d), pot=torch.zeros(B, M), log_w=torch.zeros(B, N),
                tau=torch.ones(B, N), eps=torch.ones(B), cost=0)
    args.update(kw)
    return list(args.values())


def _bad_weighted(v=False, **kw):
    B, N, M, d = 2, 5, 4, 3
    args = dict(x=_f32(B, N, d), y=_f32(B, M, d), f=torch.zeros(B, N), g=torch.zeros(B, M))
    if v:
        args["v"] = torch.ones(B, M, 2)
    args.update(eps=torch.ones(B), cost=1)
    args.update(kw)
    return list(args.values())


def _bad_dense(**kw):
    B, N, M = 2, 5, 4
    args = dict(cost_matrix=_f32(B, N, M), pot=torch.zeros(B, M), log_w=torch.zeros(B, N), tau=torch.ones(B, N),
                eps=torch.ones(B), transpose=False)
    args.update(kw)
    return list(args.values())


SINKHORN_UPDATE = {
    "x 2-D": lambda: _bad_update(x=_f32(5, 3)),
    "x float16": lambda: _bad_update(x=_f32(2, 5, 3).half()),
    "y 2-D": lambda: _bad_update(y=_f32(4, 3)),
    "y of another width": lambda: _bad_update(y=_f32(2, 4, 2)),
    "y of another batch": lambda: _bad_update(y=_f32(3, 4, 3)),
    "y float64": lambda: _bad_update(y=_f32(2, 4, 3).double()),
    "y without points": lambda: _bad_update(y=_f32(2, 0, 3), pot=torch.zeros(2, 0)),
    "eps of another length": lambda: _bad_update(eps=torch.ones(1)),
    "eps float64": lambda: _bad_update(eps=torch.ones(2, dtype=torch.float64)),
    "cost out of range": lambda: _bad_update(cost=3),
    "pot of another shape": lambda: _bad_update(pot=torch.zeros(2, 5)),
    "log_w float64": lambda: _bad_update(log_w=torch.zeros(2, 5, dtype=torch.float64)),
    "tau of another shape": lambda: _bad_update(tau=torch.ones(2, 4)),
}

SINKHORN_COST_GRAD = {
    "x 2-D": lambda: _bad_weighted(x=_f32(5, 3)),
    "f of another shape": lambda: _bad_weighted(f=torch.zeros(2, 4)),
    "g float64": lambda: _bad_weighted(g=torch.zeros(2, 4, dtype=torch.float64)),
    "cost out of range": lambda: _bad_weighted(cost=-1),
}

SINKHORN_APPLY = {
    "v 2-D": lambda: _bad_weighted(v=True)[:4] + [torch.ones(2, 4)] + _bad_weighted()[4:],
    "v of another length": lambda: _bad_weighted(v=True)[:4] + [torch.ones(2, 5, 2)] + _bad_weighted()[4:],
    "v float64": lambda: _bad_weighted(v=True)[:4] + [torch.ones(2, 4, 2, dtype=torch.float64)] + _bad_weighted()[4:],
    "f of another shape": lambda: _bad_weighted(v=True, f=torch.zeros(5)),
}

SINKHORN_DENSE = {
    "cost_matrix 2-D": lambda: _bad_dense(cost_matrix=_f32(5, 4)),
    "cost_matrix int64": lambda: _bad_dense(cost_matrix=torch.ones(2, 5, 4, dtype=torch.int64)),
    "no columns to reduce": lambda: _bad_dense(cost_matrix=_f32(2, 5, 0), pot=torch.zeros(2, 0)),
    "no rows to reduce (transpose)": lambda: _bad_dense(cost_matrix=_f32(2, 0, 4), pot=torch.zeros(2, 0),
                                                    log_w=torch.zeros(2, 4), tau=torch.ones(2, 4), transpose=True),
    "pot of the other side": lambda: _bad_dense(pot=torch.zeros(2, 5)),
    "log_w of the other side (transpose)": lambda: _bad_dense(transpose=True),
    "eps float64": lambda: _bad_dense(eps=torch.ones(2, dtype=torch.float64)),
}

P2OT_PASS = {
    "kernel 1-D": lambda: [_f32(6), torch.ones(6), torch.ones(6)],
    "kernel float16": lambda: [_f32(5, 3).half(), torch.ones(3).half(), torch.ones(5).half()],
    "col_scale of another length": lambda: [_f32(5, 3), torch.ones(4), torch.ones(5)],
    "row_target float64": lambda: [_f32(5, 3), torch.ones(3), torch.ones(5, dtype=torch.float64)],
}


def _lists(n=2, **kw):
    args = dict(out=[torch.empty(3, 4) for _ in range(n)], grads_task=[_f32(3, 4) for _ in range(n)],
                grads_reg=[_f32(3, 4) for _ in range(n)], lam=0.5, seed=7)
    args.update(kw)
    return list(args.values())


GRADDROP_APPLY = {
    "grads_task shorter": lambda: _lists(grads_task=[_f32(3, 4)]),
    "grads_reg longer": lambda: _lists(grads_reg=[_f32(3, 4)] * 3),
    "lam above 1": lambda: _lists(lam=1.5),
    "out float64": lambda: _lists(out=[torch.empty(3, 4, dtype=torch.float64)] * 2,
                                  grads_task=[_f32(3, 4).double()] * 2, grads_reg=[_f32(3, 4).double()] * 2),
    "out not contiguous": lambda: _lists(out=[torch.empty(3, 4), torch.empty(4, 3).t()]),
    "grads_task dtype": lambda: _lists(grads_task=[_f32(3, 4), _f32(3, 4).half()]),
    "grads_reg shape": lambda: _lists(grads_reg=[_f32(3, 4), _f32(4, 3)]),
}

GRADDROP_KEEP_PROB = {
    "grad_task float64": lambda: [_f32(3, 4).double(), _f32(3, 4).double()],
    "grad_reg dtype": lambda: [_f32(3, 4), _f32(3, 4).half()],
    "grad_reg shape": lambda: [_f32(3, 4), _f32(4, 3)],
}

def _rows_args(**kw):
    args = dict(logits=_f32(4, 6), targets=torch.tensor([0, 1, 5, -100]), ref_logits=_f32(4, 6), kl_mode=1,
                ignore_index=-100)
    args.update(kw)
    return list(args.values())


def _rows_grad_args(**kw):
    args = dict(logits=_f32(4, 6), targets=torch.tensor([0, 1, 5, -100]), ref_logits=None, grad_logp=_f32(4),
                grad_kl=_f32(4), kl_mode=0, ignore_index=-100)
    args.update(kw)
    return list(args.values())


LOGSOFTMAX_ROWS = {
    "logits 1-D": lambda: _rows_args(logits=_f32(6), targets=torch.tensor([0])),
    "logits float16": lambda: _rows_args(logits=_f32(4, 6).half(), ref_logits=_f32(4, 6).half()),
    "no vocabulary": lambda: _rows_args(logits=_f32(4, 0), ref_logits=_f32(4, 0)),
    "targets of another length": lambda: _rows_args(targets=torch.tensor([0, 1])),
    "targets int32": lambda: _rows_args(targets=torch.tensor([0, 1, 5, 2], dtype=torch.int32)),
    "kl_mode 3": lambda: _rows_args(kl_mode=3),
    "ref_logits missing": lambda: _rows_args(ref_logits=None),
    "ref_logits for kl_mode 0": lambda: _rows_args(kl_mode=0),
    "ref_logits shape": lambda: _rows_args(ref_logits=_f32(4, 5)),
    "ref_logits dtype": lambda: _rows_args(ref_logits=_f32(4, 6).double()),
}

LOGSOFTMAX_ROWS_GRAD = {
    "grad_logp of another length": lambda: _rows_grad_args(grad_logp=_f32(3)),
    "grad_kl float64": lambda: _rows_grad_args(grad_kl=_f32(4).double()),
    "logits 3-D": lambda: _rows_grad_args(logits=_f32(2, 2, 6)),
}

def _mixup_rows_args(**kw):
    a = dict(logits=_f32(4, 5), classes=_ids(4, 2), coeffs=_f32(4, 4), want_grad=True)
    a.update(kw)
    return list(a.values())


MIXUP_ROWS = {
    "logits 1-D": lambda: _mixup_rows_args(logits=_f32(5)),
    "logits int": lambda: _mixup_rows_args(logits=_ids(4, 5)),
    "logits with no class": lambda: _mixup_rows_args(logits=_f32(4, 0)),
    "classes (B,)": lambda: _mixup_rows_args(classes=_ids(4)),
    "classes int32": lambda: _mixup_rows_args(classes=_ids(4, 2).int()),
    "coeffs (B, 3)": lambda: _mixup_rows_args(coeffs=_f32(4, 3)),
    "coeffs float64 for float32 logits": lambda: _mixup_rows_args(coeffs=_f32(4, 4).double()),
}


def _elr_rows_args(**kw):
    a = dict(logits=_f32(4, 5), targets=_ids(4), buffer_rows=_f32(4, 5).abs() / 5, beta=0.7, lam=3.0,
             want_grad=True)
    a.update(kw)
    return list(a.values())


ELR_ROWS = {
    "logits 3-D": lambda: _elr_rows_args(logits=_f32(2, 2, 5)),
    "targets of another length": lambda: _elr_rows_args(targets=_ids(3)),
    "targets float": lambda: _elr_rows_args(targets=_f32(4)),
    "buffer_rows of another width": lambda: _elr_rows_args(buffer_rows=_f32(4, 6)),
    "buffer_rows bfloat16": lambda: _elr_rows_args(buffer_rows=_f32(4, 5).to(torch.bfloat16)),
    "beta 1": lambda: _elr_rows_args(beta=1.0),
    "lam inf": lambda: _elr_rows_args(lam=float("inf")),
}

BAD_ARGS = {
    "contrastive_fwd": CONTRASTIVE_FWD, "contrastive_bwd": CONTRASTIVE_BWD,
    "orthonormal_penalty_fwd": ORTHONORMAL_FWD, "orthonormal_penalty_bwd": ORTHONORMAL_BWD,
    "sinkhorn_update": SINKHORN_UPDATE, "sinkhorn_cost_grad": SINKHORN_COST_GRAD, "sinkhorn_apply": SINKHORN_APPLY,
    "sinkhorn_update_dense": SINKHORN_DENSE, "p2ot_scaling_pass": P2OT_PASS,
    "graddrop_apply_": GRADDROP_APPLY, "graddrop_keep_prob": GRADDROP_KEEP_PROB,
    "logsoftmax_rows": LOGSOFTMAX_ROWS, "logsoftmax_rows_grad_": LOGSOFTMAX_ROWS_GRAD,
    "mixup_rows": MIXUP_ROWS, "elr_rows": ELR_ROWS,
}
def _rep(**kw):
    args = dict(params=[_f32(3, 4), _f32(5)], anchor_means=[_f32(3, 4), _f32(5)])
    args.update(kw)
    return list(args.values())


REPULSION_FWD = {
    # (an empty list never reaches a kernel: the dispatcher has no tensor to dispatch on; param_repulsion raises)
    "anchor_means shorter": lambda: _rep(anchor_means=[_f32(3, 4)]),
    "params int64": lambda: _rep(params=[torch.ones(3, 4, dtype=torch.int64), torch.ones(5, dtype=torch.int64)],
                                 anchor_means=[torch.ones(3, 4, dtype=torch.int64), torch.ones(5, dtype=torch.int64)]),
    "params of two dtypes": lambda: _rep(params=[_f32(3, 4), _f32(5).double()]),
    "anchor_means shape": lambda: _rep(anchor_means=[_f32(4, 3), _f32(5)]),
    "anchor_means dtype": lambda: _rep(anchor_means=[_f32(3, 4), _f32(5).bfloat16()]),
}

REPULSION_BWD = {
    "grad_sums of another length": lambda: [torch.ones(3)] + _rep(),
    "grad_sums float64 for float32 params": lambda: [torch.ones(2, dtype=torch.float64)] + _rep(),
    "grad_sums bfloat16 for bfloat16 params": lambda: [torch.ones(2).bfloat16()] + _rep(
        params=[_f32(3, 4).bfloat16(), _f32(5).bfloat16()], anchor_means=[_f32(3, 4).bfloat16(), _f32(5).bfloat16()]),
    "anchor_means longer": lambda: [torch.ones(2)] + _rep(anchor_means=[_f32(3, 4), _f32(5), _f32(1)]),
}

BAD_ARGS.update({"repulsion_fwd": REPULSION_FWD, "repulsion_bwd": REPULSION_BWD})


def _spec(weights=None, u=None, v=None, n=1, eps=1e-12):
    ws = [_f32(3, 4), _f32(5, 1)] if weights is None else weights
    u = torch.ones(8) if u is None else u
    v = torch.ones(5) if v is None else v
    return [ws, u, v, n, eps]


def _spec_outer(grad=None, **kw):
    ws, u, v, _, _ = _spec(**kw)
    return [torch.ones(2) if grad is None else grad, u, v, ws]


SPECTRAL_POWER = {
    "weights 1-D": lambda: _spec(weights=[_f32(3), _f32(5, 1)]),
    "weights 3-D": lambda: _spec(weights=[_f32(3, 2, 2), _f32(5, 1)]),
    "weights int64": lambda: _spec(weights=[torch.ones(3, 4, dtype=torch.int64), torch.ones(5, 1, dtype=torch.int64)]),
    "weights of two dtypes": lambda: _spec(weights=[_f32(3, 4), _f32(5, 1).double()]),
    "weights empty": lambda: _spec(weights=[_f32(3, 0), _f32(5, 1)], v=torch.ones(1)),
    "u shorter": lambda: _spec(u=torch.ones(7)),
    "u 2-D": lambda: _spec(u=torch.ones(8, 1)),
    "v longer": lambda: _spec(v=torch.ones(6)),
    "v float64 for float32 weights": lambda: _spec(v=torch.ones(5, dtype=torch.float64)),
    "u bfloat16 for bfloat16 weights": lambda: _spec(weights=[_f32(3, 4).bfloat16(), _f32(5, 1).bfloat16()],
                                                     u=torch.ones(8).bfloat16()),
    "n_power_iterations 0": lambda: _spec(n=0),
    "eps 0": lambda: _spec(eps=0.0),
    "eps nan": lambda: _spec(eps=float("nan")),
}

SPECTRAL_OUTER = {
    "grad_sigmas of another length": lambda: _spec_outer(grad=torch.ones(3)),
    "grad_sigmas float64 for float32 weights": lambda: _spec_outer(grad=torch.ones(2, dtype=torch.float64)),
    "grad_sigmas 2-D": lambda: _spec_outer(grad=torch.ones(2, 1)),
    "v shorter": lambda: _spec_outer(v=torch.ones(4)),
    "u longer": lambda: _spec_outer(u=torch.ones(9)),
}

BAD_ARGS.update({"spectral_power": SPECTRAL_POWER, "spectral_outer": SPECTRAL_OUTER})
# Schemas with a single backend (nothing to compare) or none of their own.
NOT_COMPARED = {"orthonormal_grad_accumulate_": "a CPU kernel only, no other backend to agree with"}


def _to_meta(x):
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    if isinstance(x, list):
        return [_to_meta(t) for t in x]
    return x


def backends(schema: str):
    """(name, op, convert-the-arguments) for every backend of `schema` registered in this process."""
    out = []
    if _loader.schema_registered(schema):
        op = getattr(torch.ops.regops, schema)
        if _loader.has_kernel(schema, "CPU"):
            out.append(("cpu", op, lambda a: a))
        out.append(("fake", op, _to_meta))
    tname = triton_schema(schema)
    if tname and _loader.triton_available() and _loader.triton_interpreted() and hasattr(torch.ops.regops, tname):
        top = getattr(torch.ops.regops, tname)
        out.append(("triton", top, lambda a: a))
        out.append(("triton fake", top, _to_meta))
    return out


def _outcome(fn, args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001  (the type is what the test compares)
        return type(exc).__name__, str(exc).split("\n")[0]
    return None


PARAMS = [(schema, case) for schema, cases in BAD_ARGS.items() for case in cases]


@pytest.mark.parametrize("schema,case", PARAMS, ids=[f"{s}: {c}" for s, c in PARAMS])
def test_same_error_on_every_backend(schema, case):
    runs = backends(schema)
    if len(runs) < 2:
        pytest.skip(f"{schema}: fewer than two backends here")
    got = {name: _outcome(op, convert(BAD_ARGS[schema][case]())) for name, op, convert in runs}
    # the fakes ran on meta copies of the same CPU tensors
    got = {k: v and (v[0], v[1].replace("device meta", "device cpu")) for k, v in got.items()}
    for name, outcome in got.items():
        assert outcome is not None, f"{schema} on {name} accepted the bad argument ({case}): {got}"
        assert outcome[1].startswith("regops."), got
    assert len(set(got.values())) == 1, got


def test_every_schema_has_contract_cases():
    names = {n for e in _registry.ENGINES for impl in ("cpu", "cuda") for n in e.ops.get(impl, {}).values()}
    missing = sorted(n for n in names if n not in BAD_ARGS and n not in NOT_COMPARED)
    assert not missing, f"schemas without contract cases in tests/test_op_contracts.py: {missing}"
