"""The bad-input contract of every public op, as data: what each op rejects (with which exception and message)
and which edge inputs it accepts (with finite outputs).

``ALL_CASES[op]`` (op: a name of ``regops._registry.OPS``) is a list of
- ``Rejected(arg, what, call, exc, match)``: ``call(impl)`` raises ``exc`` with a message matching ``match``
  (``re.search``; every pattern starts with ``^regops.<op>: <arg>: expected``);
- ``Accepted(what, call)``: ``call(impl)`` returns outputs (tensors, numbers, nested sequences or dataclasses of
  them) that are all finite.

tests/test_contract.py runs every case on the reference and on every CPU kernel impl of the op (the messages must
be the same on all of them); scripts/contract_table.py renders the table the README holds. A new op gets its cases
here, in ``_CASES`` below. Every call builds its own inputs, so an in-place op never sees another impl's result.
Device mixes use the meta device as the second device (no GPU needed); CPU/CUDA mixes are not in the table.
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import regops

META = torch.device("meta")
F32, F64, BF16, F16, I64, I32 = torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.int32


@dataclass(frozen=True)
class Rejected:
    arg: str           # the argument the message names
    what: str          # the bad input, in words
    call: Callable     # call(impl) makes the bad call
    exc: type          # the exception class it raises
    match: str         # a regex its message matches (re.search)


@dataclass(frozen=True)
class Accepted:
    what: str          # the edge input, in words
    call: Callable     # call(impl) returns the outputs, all finite


_REGEX_SPECIAL = set(".^$*+?{}[]\\|()")


def literal(text: str) -> str:
    """text as a regex matching itself; spaces and dashes stay as they are, so the README's patterns stay readable."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def expect(op: str, arg: str, expected: str, got: str = "") -> str:
    """The pattern of ``regops.<op>: <arg>: expected <expected>…, got <got>…``: `expected` and `got` are literal
    beginnings of the two parts of the message."""
    pattern = "^" + literal(f"regops.{op}: {arg}: expected {expected}")
    return pattern + (".*, got " + literal(got) if got else "")


def _rejecter(op: str):
    def rejected(arg, what, call, exc, expected, got=""):
        return Rejected(arg, what, call, exc, expect(op, arg, expected, got))
    return rejected


# ---- inputs ----

def rn(*shape, seed=0, dtype=F32):
    """Standard normal values, the same for the same seed (float64 draws rounded to dtype)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout (every other element of a buffer twice as long)."""
    out = torch.stack([t, t], dim=-1)[..., 0]
    assert not out.is_contiguous() or t.numel() <= 1
    return out


def with_nan(t: torch.Tensor, index=None) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0 if index is None else index] = math.nan
    return t


def ints(*values, dtype=I64):
    return torch.tensor(values, dtype=dtype)


def on_meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(t, device=META)


def grads_of(loss: torch.Tensor, *inputs):
    """loss and its gradients with respect to inputs (for cases whose backward must stay finite too)."""
    return (loss,) + torch.autograd.grad(loss, inputs)


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


# ---- orthonormality: orthonormal_penalty, sorsa_ortho_loss, sorsa_regularize_ ----

def _orthonormal_penalty():
    op = "orthonormal_penalty"
    rej = _rejecter(op)

    def pen(mats, impl, **kw):
        kw.setdefault("side", "rows")
        return regops.orthonormal_penalty(mats, impl=impl, **kw)

    m = lambda: rn(3, 5)  # noqa: E731
    return [
        rej("mats", "1-D tensor", lambda impl: pen(rn(5), impl), ValueError, "a 2-D or 3-D tensor", "1-D tensor"),
        rej("mats", "4-D tensor", lambda impl: pen(rn(1, 2, 3, 5), impl), ValueError, "a 2-D or 3-D tensor",
            "4-D tensor"),
        rej("mats", "wrong dtype (int64)", lambda impl: pen(ints(1, 2, 3, 4).reshape(2, 2), impl), TypeError,
            "dtype in (float32, float64, bfloat16)", "int64"),
        rej("mats", "wrong dtype (float16)", lambda impl: pen(m().half(), impl), TypeError,
            "dtype in (float32, float64, bfloat16)", "float16"),
        rej("mats", "a zero-size dimension", lambda impl: pen(rn(0, 5), impl), ValueError,
            "matrices with no zero-size dimension", "shape (0, 5)"),
        rej("mats", "neither a tensor nor a list", lambda impl: pen("M", impl), TypeError,
            "a tensor or a list of 2-D tensors", "str"),
        rej("mats", "empty list", lambda impl: pen([], impl), ValueError, "at least one matrix", "an empty list"),
        rej("mats[1]", "3-D tensor in a list", lambda impl: pen([m(), rn(2, 3, 5)], impl), ValueError,
            "a 2-D tensor", "3-D tensor"),
        rej("mats[1]", "mixed dtypes in a list", lambda impl: pen([m(), m().double()], impl), TypeError,
            "dtype float32 (as mats[0])", "dtype float64"),
        rej("mats[1]", "device mix (CPU + meta) in a list", lambda impl: pen([m(), on_meta(m())], impl),
            RuntimeError, "device cpu (as mats[0])", "device meta"),
        rej("mats", "NaN entry", lambda impl: pen(with_nan(m()), impl), ValueError, "finite values",
            "nan at index (0, 0, 0)"),
        rej("mats", "finite entries whose Gram overflows (1e20, float32)", lambda impl: pen(m() * 1e20, impl),
            ValueError, "finite values", "a non-finite penalty for matrix 0"),
        rej("side", "unknown side", lambda impl: pen(m(), impl, side="diag"), ValueError,
            "one of 'rows', 'cols'", "'diag'"),
        rej("reduction", "unknown reduction", lambda impl: pen(m(), impl, reduction="max"), ValueError,
            "one of 'mean', 'sum', 'none'", "'max'"),
        Accepted("a single 1×1 matrix", lambda impl: pen(rn(1, 1), impl)),
        Accepted("a single row (1×n), squared", lambda impl: pen(rn(1, 5), impl, squared=True)),
        Accepted("an all-zero matrix", lambda impl: pen(torch.zeros(3, 5), impl, reduction="none")),
        Accepted("an exactly orthonormal matrix (identity), with its gradient", _orthonormal_identity_grad),
        Accepted("non-contiguous (transposed) matrices, side='cols'",
                 lambda impl: pen(rn(2, 5, 3).transpose(1, 2), impl, side="cols", reduction="none")),
        Accepted("a list of different shapes, bfloat16", lambda impl: pen([m().bfloat16(), rn(4, 2).bfloat16()],
                                                                         impl, reduction="sum")),
    ]


def _orthonormal_identity_grad(impl):
    # the non-squared norm at 0: its gradient must be 0, not 0/0
    x = leaf(torch.eye(4))
    return grads_of(regops.orthonormal_penalty(x, side="rows", impl=impl), x)


def _sorsa_ortho_loss():
    op = "sorsa_ortho_loss"
    rej = _rejecter(op)

    def loss(As, Bs, impl):
        return regops.sorsa_ortho_loss(As, Bs, impl=impl)

    A, B = lambda: rn(2, 6), lambda: rn(5, 2, seed=1)  # noqa: E731  (r = 2, in = 6, out = 5)
    return [
        rej("As", "1-D tensor", lambda impl: loss(rn(6), [B()], impl), ValueError, "a 2-D or 3-D tensor",
            "1-D tensor"),
        rej("Bs", "neither a tensor nor a list", lambda impl: loss([A()], "B", impl), TypeError,
            "a tensor or a list of 2-D tensors", "str"),
        rej("Bs", "mismatched lengths (2 A, 1 B)", lambda impl: loss([A(), A()], [B()], impl), ValueError,
            "2 matrices (one per A)", "1"),
        rej("As", "empty lists", lambda impl: loss([], [], impl), ValueError, "at least one matrix", "none"),
        rej("As[0]", "wrong dtype (int64)", lambda impl: loss([A().long()], [B()], impl), TypeError,
            "dtype in (float32, float64, bfloat16)", "int64"),
        rej("Bs", "stacked factors of a wrong dtype (float16)", lambda impl: loss(rn(1, 2, 6), rn(1, 5, 2).half(),
                                                                                 impl),
            TypeError, "dtype in (float32, float64, bfloat16)", "float16"),
        rej("Bs[0]", "3-D tensor in a list", lambda impl: loss([A()], [rn(1, 5, 2)], impl), ValueError,
            "a 2-D tensor", "3-D tensor"),
        rej("Bs", "stacked 3-D tensor with a zero-size dimension", lambda impl: loss(rn(1, 2, 6), rn(1, 0, 2), impl),
            ValueError, "matrices with no zero-size dimension", "shape (1, 0, 2)"),
        rej("As", "NaN entry", lambda impl: loss([with_nan(A())], [B()], impl), ValueError, "finite values",
            "nan at index (0, 0, 0)"),
        Accepted("a single rank-1 pair (A 1×1, B 1×1)", lambda impl: loss([rn(1, 1)], [rn(1, 1)], impl)),
        Accepted("exactly orthonormal factors (identity)", lambda impl: loss([torch.eye(3)], [torch.eye(3)], impl)),
        Accepted("all-zero factors", lambda impl: loss([torch.zeros(2, 6)], [torch.zeros(5, 2)], impl)),
        Accepted("stacked non-contiguous factors", lambda impl: loss(strided(rn(3, 2, 6)), strided(rn(3, 5, 2)), impl)),
    ]


def _sorsa_pair(a=None, b=None):
    a = rn(2, 6) if a is None else a
    b = rn(5, 2, seed=1) if b is None else b
    return nn.Parameter(a), nn.Parameter(b)


def _sorsa_step(impl, pairs=None, **kw):
    pairs = [_sorsa_pair()] if pairs is None else pairs
    kw.setdefault("gamma", 0.1)
    kw.setdefault("lr", 1e-3)
    value = regops.sorsa_regularize_(pairs, impl=impl, **kw)
    return [value] + [t.grad for pair in pairs for t in pair]


def _sorsa_layer(impl):
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    with torch.no_grad():
        linear.weight.copy_(rn(5, 6))
    layer = regops.nn.SORSALinear.from_linear(linear, 2)
    value = regops.sorsa_regularize_(nn.Sequential(layer, nn.ReLU()), 0.1, 1e-3, impl=impl)
    return value, layer.A.grad, layer.B.grad


def _expanded_grad_pair():
    a, b = _sorsa_pair()
    a.grad = torch.zeros(1, 1).expand(2, 6)
    return [(a, b)]


def _sorsa_regularize_():
    op = "sorsa_regularize_"
    rej = _rejecter(op)
    return [
        rej("gamma", "NaN", lambda impl: _sorsa_step(impl, gamma=math.nan), ValueError, "a finite number", "nan"),
        rej("gamma", "a string", lambda impl: _sorsa_step(impl, gamma="0.1"), TypeError, "a finite number", "'0.1'"),
        rej("lr", "zero learning rate", lambda impl: _sorsa_step(impl, lr=0.0), ValueError,
            "a positive learning rate", "0.0"),
        rej("lr", "infinite learning rate", lambda impl: _sorsa_step(impl, lr=math.inf), ValueError,
            "a finite number", "inf"),
        rej("model_or_params", "empty list", lambda impl: _sorsa_step(impl, pairs=[]), ValueError,
            "at least one SORSA layer or (A, B) pair", "none"),
        rej("model_or_params", "a module without SORSA layers",
            lambda impl: regops.sorsa_regularize_(nn.Linear(3, 2), 0.1, 1.0, impl=impl), ValueError,
            "at least one SORSA layer or (A, B) pair", "none"),
        rej("model_or_params[0]", "neither a layer nor a pair", lambda impl: _sorsa_step(impl, pairs=[5]), TypeError,
            "a SORSALinear or an (A, B) pair", "int"),
        rej("A[0]", "3-D factor", lambda impl: _sorsa_step(impl, pairs=[_sorsa_pair(a=rn(1, 2, 6))]), ValueError,
            "a 2-D tensor", "3-D tensor"),
        rej("B[0]", "wrong dtype (float16)", lambda impl: _sorsa_step(impl, pairs=[_sorsa_pair(b=rn(5, 2).half())]),
            TypeError, "dtype in (float32, float64, bfloat16)", "float16"),
        rej("params[1]", "A and B of different dtypes",
            lambda impl: _sorsa_step(impl, pairs=[_sorsa_pair(b=rn(5, 2).double())]), TypeError,
            "dtype float32 (as params[0])", "dtype float64"),
        rej("A[0].grad", "an expanded .grad (elements share memory)",
            lambda impl: _sorsa_step(impl, pairs=_expanded_grad_pair()), ValueError,
            "a gradient whose elements do not share memory"),
        rej("mats[0]", "finite entries whose penalty overflows (1e20, float32)",
            lambda impl: _sorsa_step(impl, pairs=[_sorsa_pair(a=rn(2, 6) * 1e20)]), ValueError, "finite values",
            "a non-finite penalty"),
        Accepted("a single rank-1 pair", lambda impl: _sorsa_step(impl, pairs=[_sorsa_pair(rn(1, 6), rn(5, 1))])),
        Accepted("exactly orthonormal factors (identity): zero gradient, not 0/0",
                 lambda impl: _sorsa_step(impl, pairs=[_sorsa_pair(torch.eye(3), torch.eye(3))])),
        Accepted("all-zero factors", lambda impl: _sorsa_step(impl, pairs=[_sorsa_pair(torch.zeros(2, 6),
                                                                                     torch.zeros(5, 2))])),
        Accepted("non-contiguous factors", lambda impl: _sorsa_step(impl, pairs=[_sorsa_pair(strided(rn(2, 6)),
                                                                                           strided(rn(5, 2)))])),
        Accepted("a model holding a SORSALinear", _sorsa_layer),
    ]


# ---- the contrastive engine: conr_loss, supcon_loss, focal_supcon_loss ----

def _features_cases(loss, rej):
    """The features checks every contrastive op shares; loss(features, impl) makes the call."""
    return [
        rej("features", "1-D tensor", lambda impl: loss(rn(6), impl), ValueError, "a 2-D tensor", "1-D tensor"),
        rej("features", "3-D tensor", lambda impl: loss(rn(6, 2, 3), impl), ValueError, "a 2-D tensor",
            "3-D tensor"),
        rej("features", "wrong dtype (int64)", lambda impl: loss(torch.ones(6, 3, dtype=I64), impl), TypeError,
            "dtype in (float32, float64, bfloat16, float16)", "int64"),
        rej("features", "empty batch (no rows)", lambda impl: loss(rn(0, 3), impl), ValueError, "at least one row",
            "shape (0, 3)"),
        rej("features", "no columns", lambda impl: loss(rn(6, 0), impl), ValueError, "at least one column",
            "shape (6, 0)"),
        rej("features", "NaN entry", lambda impl: loss(with_nan(rn(6, 3), 4), impl), ValueError, "finite values",
            "nan at index (1, 1)"),
    ]


def _conr_loss():
    op = "conr_loss"
    rej = _rejecter(op)
    y = lambda n=6: torch.linspace(0, 1, n)  # noqa: E731

    def conr(impl, features=None, labels=None, preds=None, **kw):
        f = rn(6, 3) if features is None else features
        n = f.shape[0] if f.dim() else 6
        labels = y(n) if labels is None else labels
        preds = y(n).flip(0) if preds is None else preds
        return regops.conr_loss(f, labels, preds, impl=impl, **kw)

    return _features_cases(lambda f, impl: conr(impl, f, y(), y()), rej) + [
        rej("labels", "3-D tensor", lambda impl: conr(impl, labels=rn(6, 1, 1)), ValueError, "a 1-D or 2-D tensor",
            "3-D tensor"),
        rej("labels", "mismatched lengths (5 labels, 6 rows)", lambda impl: conr(impl, labels=y(5)), ValueError,
            "6 rows (one per feature row)", "shape (5,)"),
        rej("preds", "shape other than labels'", lambda impl: conr(impl, preds=rn(6, 2)), ValueError,
            "the shape of labels (6,)", "shape (6, 2)"),
        rej("labels", "NaN label", lambda impl: conr(impl, labels=with_nan(y())), ValueError, "finite values",
            "nan at index (0,)"),
        rej("preds", "complex predictions", lambda impl: conr(impl, preds=y().to(torch.complex64)), TypeError,
            "real values", "dtype complex64"),
        rej("labels", "device mix (CPU + meta)", lambda impl: conr(impl, labels=on_meta(y())), RuntimeError,
            "device cpu (as features)", "device meta"),
        rej("weights", "2-D weights", lambda impl: conr(impl, weights=torch.ones(6, 1)), ValueError, "a 1-D tensor",
            "2-D tensor"),
        rej("weights", "mismatched lengths", lambda impl: conr(impl, weights=torch.ones(5)), ValueError,
            "shape (6,)", "shape (5,)"),
        rej("weights", "complex weights", lambda impl: conr(impl, weights=torch.ones(6, dtype=torch.complex64)),
            TypeError, "real weights", "dtype complex64"),
        rej("weights", "non-finite weights", lambda impl: conr(impl, weights=with_nan(torch.ones(6))), ValueError,
            "finite values", "nan at index (0,)"),
        rej("weights", "negative weights", lambda impl: conr(impl, weights=-torch.ones(6)), ValueError,
            "weights >= 0", "min -1.0"),
        rej("temperature", "zero temperature", lambda impl: conr(impl, temperature=0.0), ValueError,
            "a positive number", "0.0"),
        rej("temperature", "a string", lambda impl: conr(impl, temperature="0.1"), TypeError, "a positive number",
            "str '0.1'"),
        rej("threshold", "infinite threshold", lambda impl: conr(impl, threshold=math.inf), ValueError,
            "a finite number", "inf"),
        rej("label_norm", "zero norm order", lambda impl: conr(impl, label_norm=0), ValueError,
            "a positive number or inf", "0"),
        rej("variant", "unknown variant", lambda impl: conr(impl, variant="imdb"), ValueError,
            "one of 'agedb', 'nyud2'", "'imdb'"),
        rej("push", "negative push for variant 'nyud2'", lambda impl: conr(impl, variant="nyud2", push=-0.1),
            ValueError, "a number >= 0 for variant 'nyud2'", "-0.1"),
        Accepted("a single sample (N=1)", lambda impl: conr(impl, rn(1, 3), y(1), y(1))),
        Accepted("all-equal labels and predictions",
                 lambda impl: conr(impl, labels=torch.full((6,), 0.5), preds=torch.full((6,), 0.5))),
        Accepted("zero feature rows (before normalization)",
                 lambda impl: conr(impl, torch.cat([torch.zeros(3, 3), rn(3, 3)]))),
        Accepted("all feature rows zero", lambda impl: conr(impl, torch.zeros(6, 3))),
        Accepted("non-contiguous features", lambda impl: conr(impl, strided(rn(6, 3)))),
        Accepted("(N, L) labels, integer labels, weights", lambda impl: conr(
            impl, labels=torch.arange(12).reshape(6, 2), preds=torch.arange(12).reshape(6, 2).flip(0),
            weights=torch.rand(6, generator=torch.Generator().manual_seed(0)))),
        Accepted("zero weights", lambda impl: conr(impl, weights=torch.zeros(6))),
        Accepted("tiny temperature (1e-4)", lambda impl: conr(impl, temperature=1e-4)),
        Accepted("variant 'nyud2', label_norm=inf, bfloat16",
                 lambda impl: conr(impl, rn(6, 3).bfloat16(), variant="nyud2", label_norm=math.inf)),
    ]


def _supcon_cases(op):
    rej = _rejecter(op)
    fn = getattr(regops, op)
    labels6 = lambda: ints(0, 1, 0, 1, 2, 2)  # noqa: E731

    def loss(impl, features=None, labels=None, **kw):
        f = rn(6, 3) if features is None else features
        return fn(f, labels6() if labels is None else labels, impl=impl, **kw)

    return _features_cases(lambda f, impl: loss(impl, f), rej) + [
        rej("labels", "2-D labels", lambda impl: loss(impl, labels=labels6()[:, None]), ValueError, "a 1-D tensor",
            "2-D tensor"),
        rej("labels", "mismatched lengths (5 labels, 6 rows)", lambda impl: loss(impl, labels=labels6()[:5]),
            ValueError, "shape (6,) (one per feature row)", "shape (5,)"),
        rej("labels", "complex labels", lambda impl: loss(impl, labels=labels6().to(torch.complex64)), TypeError,
            "real labels", "dtype complex64"),
        rej("labels", "NaN label (float labels)", lambda impl: loss(impl, labels=with_nan(labels6().float())),
            ValueError, "finite values", "nan at index (0,)"),
        rej("labels", "device mix (CPU + meta)", lambda impl: loss(impl, labels=on_meta(labels6())), RuntimeError,
            "device cpu (as features)", "device meta"),
        rej("temperature", "zero temperature", lambda impl: loss(impl, temperature=0.0), ValueError,
            "a positive finite number", "0.0"),
        rej("temperature", "NaN temperature", lambda impl: loss(impl, temperature=math.nan), ValueError,
            "a positive finite number", "nan"),
        rej("temperature", "a bool", lambda impl: loss(impl, temperature=True), TypeError, "a positive finite number",
            "bool True"),
        Accepted("a single sample (N=1)", lambda impl: loss(impl, rn(1, 3), ints(0))),
        Accepted("all-equal labels", lambda impl: loss(impl, labels=torch.zeros(6, dtype=I64))),
        Accepted("all-distinct labels (no anchor has a positive)", lambda impl: loss(impl, labels=torch.arange(6))),
        Accepted("zero feature rows (before normalization)",
                 lambda impl: loss(impl, torch.cat([torch.zeros(2, 3), rn(4, 3)]))),
        Accepted("all feature rows zero", lambda impl: loss(impl, torch.zeros(6, 3))),
        Accepted("non-contiguous features", lambda impl: loss(impl, strided(rn(6, 3)))),
        Accepted("float labels", lambda impl: loss(impl, labels=torch.tensor([0.5, 1.5, 0.5, 1.5, 2.0, 2.0]))),
        Accepted("tiny temperature (1e-4)", lambda impl: loss(impl, temperature=1e-4)),
        Accepted("bfloat16 and float16 features", lambda impl: (loss(impl, rn(6, 3).bfloat16()),
                                                               loss(impl, rn(6, 3).half()))),
    ]


# ---- hard_pair_mixup, kd_loss (reference only) ----

def _kernel_by_name(op, call):
    """A reference-only op asked for a kernel impl by name raises (the impl the test passes is replaced)."""
    return Rejected("impl", "a kernel impl by name (the op is reference only)", lambda impl: call("cpu"),
                    RuntimeError, expect(op, "impl", "an impl that can run here", "'cpu'"))


def _hard_pair_mixup():
    op = "hard_pair_mixup"
    rej = _rejecter(op)
    labels6 = lambda: ints(0, 1, 2, 0, 1, 2)  # noqa: E731

    def mix(impl, features=None, labels=None, **kw):
        kw.setdefault("generator", torch.Generator().manual_seed(0))
        return regops.hard_pair_mixup(rn(6, 4) if features is None else features,
                                      labels6() if labels is None else labels, impl=impl, **kw)

    return [
        rej("features", "1-D tensor", lambda impl: mix(impl, rn(6)), ValueError, "a 2-D tensor", "1-D tensor"),
        rej("features", "wrong dtype (int64)", lambda impl: mix(impl, torch.ones(6, 4, dtype=I64)), TypeError,
            "dtype in (float32, float64, bfloat16, float16)", "int64"),
        rej("features", "empty batch", lambda impl: mix(impl, rn(0, 4), ints()), ValueError, "at least one row",
            "shape (0, 4)"),
        rej("features", "NaN entry", lambda impl: mix(impl, with_nan(rn(6, 4))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("labels", "2-D labels", lambda impl: mix(impl, labels=labels6()[:, None]), ValueError, "a 1-D tensor",
            "2-D tensor"),
        rej("labels", "wrong dtype (float32)", lambda impl: mix(impl, labels=labels6().float()), TypeError,
            "dtype in (int64, int32, int16, int8, uint8)", "float32"),
        rej("labels", "mismatched lengths", lambda impl: mix(impl, labels=labels6()[:5]), ValueError,
            "shape (6,) (one per feature row)", "shape (5,)"),
        rej("labels", "negative class id", lambda impl: mix(impl, labels=ints(-1, 1, 2, 0, 1, 2)), ValueError,
            "class ids >= 0", "values in [-1, 2]"),
        rej("labels", "class id >= num_classes", lambda impl: mix(impl, num_classes=2), ValueError,
            "class ids in [0, 2)", "values in [0, 2]"),
        rej("labels", "device mix (CPU + meta)", lambda impl: mix(impl, labels=on_meta(labels6())), RuntimeError,
            "device cpu (as features)", "device meta"),
        rej("num_classes", "zero classes", lambda impl: mix(impl, num_classes=0), ValueError,
            "None or a positive int", "0"),
        rej("mixup_alpha", "zero alpha", lambda impl: mix(impl, mixup_alpha=0.0), ValueError,
            "a positive finite number", "0.0"),
        rej("negative_lam_min", "outside [0, 1]", lambda impl: mix(impl, negative_lam_min=1.5), ValueError,
            "a number in [0, 1]", "1.5"),
        rej("mining", "unknown rule", lambda impl: mix(impl, mining="hardest"), ValueError,
            "one of 'official', 'strict'", "'hardest'"),
        rej("detach_originals", "not a bool", lambda impl: mix(impl, detach_originals=1), TypeError, "a bool", "1"),
        rej("generator", "not a generator", lambda impl: mix(impl, generator=0), TypeError,
            "None or a torch.Generator", "int"),
        _kernel_by_name(op, lambda impl: mix(impl)),
        Accepted("a single sample (N=1)", lambda impl: mix(impl, rn(1, 4), ints(0))),
        Accepted("all-equal labels", lambda impl: mix(impl, labels=torch.zeros(6, dtype=I64))),
        Accepted("all-equal labels, strict mining", lambda impl: mix(impl, labels=torch.zeros(6, dtype=I64),
                                                                    mining="strict")),
        Accepted("zero feature rows (before normalization)",
                 lambda impl: mix(impl, torch.cat([torch.zeros(3, 4), rn(3, 4)]))),
        Accepted("non-contiguous features", lambda impl: mix(impl, strided(rn(6, 4)))),
        Accepted("negative_lam_min 0 and 1, tiny alpha", lambda impl: (mix(impl, negative_lam_min=0.0),
                                                                       mix(impl, negative_lam_min=1.0,
                                                                           mixup_alpha=1e-3))),
        Accepted("bfloat16 features, uint8 labels", lambda impl: mix(impl, rn(6, 4).bfloat16(),
                                                                    labels6().to(torch.uint8))),
    ]


def _kd_loss():
    op = "kd_loss"
    rej = _rejecter(op)

    def kd(impl, s=None, t=None, **kw):
        return regops.kd_loss(rn(4, 5) if s is None else s, rn(4, 5, seed=1) if t is None else t, impl=impl, **kw)

    return [
        rej("student_logits", "not a tensor (a list)", lambda impl: kd(impl, rn(4, 5).tolist()), TypeError,
            "a torch.Tensor", "list"),
        rej("student_logits", "wrong dtype (int64)", lambda impl: kd(impl, torch.ones(4, 5, dtype=I64)), TypeError,
            "a floating-point tensor", "int64"),
        rej("teacher_logits", "shape other than the student's", lambda impl: kd(impl, t=rn(4, 6)), ValueError,
            "shape (4, 5) (as student_logits)", "shape (4, 6)"),
        rej("teacher_logits", "device mix (CPU + meta)", lambda impl: kd(impl, t=on_meta(rn(4, 5))), RuntimeError,
            "device cpu (as student_logits)", "device meta"),
        rej("student_logits", "empty batch", lambda impl: kd(impl, rn(0, 5), rn(0, 5)), ValueError,
            "at least one sample of at least one class", "shape (0, 5)"),
        rej("student_logits", "0-D tensor", lambda impl: kd(impl, torch.tensor(1.0), torch.tensor(1.0)), ValueError,
            "at least one sample of at least one class", "shape ()"),
        rej("teacher_logits", "NaN entry", lambda impl: kd(impl, t=with_nan(rn(4, 5))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("T", "infinite temperature", lambda impl: kd(impl, T=math.inf), ValueError,
            "a finite positive temperature", "inf"),
        rej("T", "zero temperature", lambda impl: kd(impl, T=0.0), ValueError, "a finite positive temperature",
            "0.0"),
        rej("T", "a bool", lambda impl: kd(impl, T=True), TypeError, "a finite positive temperature", "bool"),
        rej("kind", "unknown kind", lambda impl: kd(impl, kind="mse"), ValueError, "one of 'soft_ce', 'kl'",
            "'mse'"),
        _kernel_by_name(op, lambda impl: kd(impl)),
        Accepted("a single sample (1, C)", lambda impl: kd(impl, rn(1, 5), rn(1, 5, seed=1))),
        Accepted("one class (N, 1)", lambda impl: kd(impl, rn(4, 1), rn(4, 1, seed=1))),
        Accepted("one sample as a 1-D tensor (C,)", lambda impl: kd(impl, rn(5), rn(5, seed=1), kind="kl")),
        Accepted("(B, T, C) logits", lambda impl: kd(impl, rn(2, 3, 5), rn(2, 3, 5, seed=1))),
        Accepted("extreme logits (±1e4)", lambda impl: kd(impl, rn(4, 5).sign() * 1e4, -rn(4, 5).sign() * 1e4,
                                                          kind="kl")),
        Accepted("all-equal logits", lambda impl: kd(impl, torch.zeros(4, 5), torch.zeros(4, 5), kind="kl")),
        Accepted("tiny temperature (1e-6)", lambda impl: kd(impl, T=1e-6)),
        Accepted("non-contiguous logits", lambda impl: kd(impl, strided(rn(4, 5)), strided(rn(4, 5, seed=1)))),
    ]


# ---- optimal transport: ot.sinkhorn, ot.sinkhorn_from_cost, ot.sinkhorn_divergence, monge_gap ----

def _clouds(n=6, m=5, d=2):
    return rn(n, d, seed=1), rn(m, d, seed=2) + 0.5


def _costs(out):
    return out.reg_ot_cost, out.ent_reg_cost


def _cloud_cases(solve, rej):
    """The point-cloud checks sinkhorn and sinkhorn_divergence share; solve(impl, x, y, **kw) makes the call."""
    x, y = _clouds()
    return [
        rej("x", "1-D tensor", lambda impl: solve(impl, rn(6), y), ValueError, "a 2-D or 3-D tensor", "1-D tensor"),
        rej("x", "wrong dtype (int64)", lambda impl: solve(impl, x.long(), y), TypeError, "a floating-point tensor",
            "dtype int64"),
        rej("y", "points of another dimension", lambda impl: solve(impl, x, rn(5, 3)), ValueError,
            "points of dimension 2 in a batch of 1 (as x)", "shape (1, 5, 3)"),
        rej("y", "dtype other than x's", lambda impl: solve(impl, x, y.double()), TypeError, "dtype float32 (as x)",
            "dtype float64"),
        rej("x", "empty cloud (no points)", lambda impl: solve(impl, rn(0, 2), y), ValueError, "at least one point",
            "shape (1, 0, 2)"),
        rej("x", "points of dimension 0", lambda impl: solve(impl, rn(6, 0), rn(5, 0)), ValueError,
            "points of dimension >= 1", "shape (1, 6, 0)"),
        rej("x", "NaN coordinate", lambda impl: solve(impl, with_nan(x, 3), y), ValueError, "finite values",
            "nan at index (1, 1)"),
        rej("y", "a meta tensor (no data)", lambda impl: solve(impl, x, on_meta(y)), RuntimeError,
            "a tensor with data", "a meta tensor"),
        rej("eps", "negative eps", lambda impl: solve(impl, x, y, eps=-0.5), ValueError, "a positive finite number",
            "-0.5"),
        rej("eps", "zero eps", lambda impl: solve(impl, x, y, eps=0.0), ValueError, "a positive finite number",
            "0.0"),
        rej("eps", "a bool", lambda impl: solve(impl, x, y, eps=True), TypeError, "a positive finite number",
            "bool True"),
        rej("eps", "eps=None where all costs are equal (std(C) = 0)",
            lambda impl: solve(impl, torch.ones(3, 2), torch.ones(4, 2)), ValueError, "a positive eps",
            "eps [0.0]"),
        rej("tau_a", "tau outside (0, 1]", lambda impl: solve(impl, x, y, eps=0.5, tau_a=1.5), ValueError,
            "a value in (0, 1]", "1.5"),
        rej("tau_b", "a string", lambda impl: solve(impl, x, y, eps=0.5, tau_b="0.5"), TypeError,
            "a value in (0, 1]", "str '0.5'"),
        rej("cost", "unknown cost", lambda impl: solve(impl, x, y, eps=0.5, cost="l1"), ValueError,
            "one of 'sqeuclidean', 'euclidean', 'cosine'", "'l1'"),
        rej("max_iter", "zero iterations", lambda impl: solve(impl, x, y, eps=0.5, max_iter=0), ValueError,
            "an int >= 1", "0"),
        rej("max_iter", "a bool", lambda impl: solve(impl, x, y, eps=0.5, max_iter=True), TypeError,
            "an int >= 1", "bool True"),
        rej("tol", "negative tol", lambda impl: solve(impl, x, y, eps=0.5, tol=-1.0), ValueError, "a number >= 0",
            "-1.0"),
        rej("tol", "a string", lambda impl: solve(impl, x, y, eps=0.5, tol="1e-3"), TypeError, "a number >= 0",
            "str '1e-3'"),
        rej("check_every", "zero", lambda impl: solve(impl, x, y, eps=0.5, check_every=0), ValueError,
            "an int >= 1", "0"),
        rej("on_nonconvergence", "unknown rule", lambda impl: solve(impl, x, y, eps=0.5, on_nonconvergence="stop"),
            ValueError, "one of 'warn', 'raise', 'ignore'", "'stop'"),
        rej("relative_epsilon", "unknown statistic", lambda impl: solve(impl, x, y, relative_epsilon="max"),
            ValueError, "one of None, 'mean', 'std'", "'max'"),
        rej("a", "negative weights", lambda impl: solve(impl, x, y, a=-torch.ones(6) / 6, eps=0.5), ValueError,
            "non-negative weights", "min -0.166667"),
        rej("a", "mismatched lengths", lambda impl: solve(impl, x, y, a=torch.ones(5) / 5, eps=0.5), ValueError,
            "shape (6,) or (1, 6)", "shape (5,)"),
        rej("a", "3-D weights", lambda impl: solve(impl, x, y, a=torch.ones(1, 1, 6), eps=0.5), ValueError,
            "a 1-D or 2-D tensor", "3-D tensor"),
        rej("a", "all-zero weights", lambda impl: solve(impl, x, y, a=torch.zeros(6), eps=0.5), ValueError,
            "weights with a positive sum", "sums [0.0]"),
        rej("b", "non-finite weights", lambda impl: solve(impl, x, y, b=with_nan(torch.ones(5) / 5), eps=0.5),
            ValueError, "finite values", "nan at index (0, 0)"),
        rej("b", "complex weights", lambda impl: solve(impl, x, y, b=torch.ones(5, dtype=torch.complex64) / 5,
                                                       eps=0.5),
            TypeError, "real weights", "dtype complex64"),
    ]


def _sinkhorn():
    op = "ot.sinkhorn"
    rej = _rejecter(op)

    def solve(impl, x=None, y=None, **kw):
        x0, y0 = _clouds()
        return regops.ot.sinkhorn(x0 if x is None else x, y0 if y is None else y, impl=impl, **kw)

    x, y = _clouds()
    return _cloud_cases(solve, rej) + [
        rej("b", "total mass other than a's (balanced)", lambda impl: solve(impl, b=torch.ones(5), eps=0.5),
            ValueError, "the total mass of a for balanced OT", "sums a [1.0"),
        rej("eps", "a tensor of 3 values for 2 problems", lambda impl: solve(impl, rn(2, 6, 2), rn(2, 5, 2),
                                                                             eps=torch.tensor([0.1, 0.2, 0.3])),
            ValueError, "a number, or a tensor of 1 or 2 values (one per problem)", "shape (3,)"),
        rej("tau_b", "a per-point tau of 0", lambda impl: solve(impl, eps=0.5, tau_b=torch.zeros(5)), ValueError,
            "values in (0, 1]", "min 0"),
        rej("eps_schedule", "a factor outside (0, 1)", lambda impl: solve(impl, eps=0.5, eps_schedule=1.5),
            ValueError, "a scaling factor in (0, 1), or a pair (init, decay)", "1.5"),
        rej("eps_schedule", "a pair with init 0", lambda impl: solve(impl, eps=0.5, eps_schedule=(0.0, 0.5)),
            ValueError, "(init > 0, decay in (0, 1])", "(0.0, 0.5)"),
        rej("eps_schedule", "a string", lambda impl: solve(impl, eps=0.5, eps_schedule="fast"), TypeError,
            "a scaling factor in (0, 1), or a pair (init, decay)", "str 'fast'"),
        rej("eps_schedule", "a pair with an infinite init", lambda impl: solve(impl, eps=0.5,
                                                                              eps_schedule=(math.inf, 0.5)),
            ValueError, "(init > 0, decay in (0, 1])", "inf"),
        rej("init", "potentials of the wrong shapes", lambda impl: solve(impl, eps=0.5, init=(torch.zeros(5),
                                                                                            torch.zeros(5))),
            ValueError, "potentials of shapes (6,) and (5,)", "shapes (5,) and (5,)"),
        rej("init", "a NaN potential", lambda impl: solve(impl, eps=0.5, init=(with_nan(torch.zeros(6)),
                                                                              torch.zeros(5))),
            ValueError, "potentials without NaN or +inf", "init f with nan"),
        rej("init", "neither an output nor a pair", lambda impl: solve(impl, eps=0.5, init="warm"), TypeError,
            "None, a SinkhornOutput or a pair (f, g)", "str"),
        Accepted("a single point each (N = M = 1)", lambda impl: solve(impl, rn(1, 2), rn(1, 2, seed=1), eps=0.1)),
        Accepted("identical clouds", lambda impl: solve(impl, x, x.clone(), eps=0.5)),
        Accepted("all points equal, with eps", lambda impl: solve(impl, torch.ones(3, 2), torch.ones(4, 2), eps=0.5)),
        Accepted("tiny eps (1e-8)", lambda impl: solve(impl, eps=1e-8, max_iter=20, on_nonconvergence="ignore")),
        Accepted("non-contiguous clouds", lambda impl: solve(impl, strided(x), strided(y), eps=0.5)),
        Accepted("a zero-weight point (its potential is -inf: the costs stay finite)",
                 lambda impl: _costs(solve(impl, a=torch.tensor([0.0, 0.2, 0.2, 0.2, 0.2, 0.2]), eps=0.5))),
        Accepted("unbalanced (tau 0.5), batched",
                 lambda impl: solve(impl, rn(2, 6, 2), rn(2, 5, 2, seed=1), eps=0.5, tau_a=0.5, tau_b=0.5)),
        Accepted("cosine cost with a zero point", lambda impl: solve(impl, torch.cat([torch.zeros(1, 2), x[1:]]), y,
                                                                     cost="cosine", eps=0.5)),
        Accepted("eps=None, relative_epsilon='mean', bfloat16 clouds",
                 lambda impl: solve(impl, x.bfloat16(), y.bfloat16(), relative_epsilon="mean")),
    ]


def _sinkhorn_from_cost():
    op = "ot.sinkhorn_from_cost"
    rej = _rejecter(op)
    cost = lambda: rn(6, 5).abs()  # noqa: E731

    def solve(impl, C=None, **kw):
        return regops.ot.sinkhorn_from_cost(cost() if C is None else C, impl=impl, **kw)

    return [
        rej("C", "1-D tensor", lambda impl: solve(impl, rn(6)), ValueError, "a 2-D or 3-D tensor", "1-D tensor"),
        rej("C", "wrong dtype (int64)", lambda impl: solve(impl, torch.ones(6, 5, dtype=I64)), TypeError,
            "a floating-point tensor", "dtype int64"),
        rej("C", "no columns", lambda impl: solve(impl, rn(6, 0)), ValueError, "at least one row and one column",
            "shape (1, 6, 0)"),
        rej("C", "NaN cost", lambda impl: solve(impl, with_nan(cost())), ValueError, "finite values",
            "nan at index (0, 0, 0)"),
        rej("C", "a meta tensor (no data)", lambda impl: solve(impl, on_meta(cost())), RuntimeError,
            "a tensor with data", "a meta tensor"),
        rej("a", "mismatched lengths", lambda impl: solve(impl, a=torch.ones(5) / 5, eps=0.5), ValueError,
            "shape (6,) or (1, 6)", "shape (5,)"),
        rej("b", "negative weights", lambda impl: solve(impl, b=-torch.ones(5) / 5, eps=0.5), ValueError,
            "non-negative weights", "min -0.2"),
        rej("eps", "zero eps", lambda impl: solve(impl, eps=0.0), ValueError, "a positive finite number", "0.0"),
        rej("eps", "eps=None with a constant cost (std(C) = 0)", lambda impl: solve(impl, torch.ones(6, 5)),
            ValueError, "a positive eps", "eps [0.0]"),
        rej("tau_b", "tau outside (0, 1]", lambda impl: solve(impl, eps=0.5, tau_b=0.0), ValueError,
            "a value in (0, 1]", "0.0"),
        rej("max_iter", "not an int", lambda impl: solve(impl, eps=0.5, max_iter=10.0), ValueError, "an int >= 1",
            "10.0"),
        Accepted("a 1×1 cost", lambda impl: solve(impl, torch.ones(1, 1), eps=0.1)),
        Accepted("a constant cost, with eps", lambda impl: solve(impl, torch.ones(6, 5), eps=0.5)),
        Accepted("negative costs", lambda impl: solve(impl, -cost(), eps=0.5)),
        Accepted("tiny eps (1e-8)", lambda impl: solve(impl, eps=1e-8, max_iter=20, on_nonconvergence="ignore")),
        Accepted("a non-contiguous (transposed) cost", lambda impl: solve(impl, rn(5, 6).abs().t(), eps=0.5)),
        Accepted("unbalanced (tau 0.5), batched", lambda impl: solve(impl, rn(2, 6, 5).abs(), eps=0.5, tau_a=0.5)),
    ]


def _sinkhorn_divergence():
    op = "ot.sinkhorn_divergence"
    rej = _rejecter(op)

    def div(impl, x=None, y=None, **kw):
        x0, y0 = _clouds()
        return regops.ot.sinkhorn_divergence(x0 if x is None else x, y0 if y is None else y, impl=impl, **kw)

    x, y = _clouds()
    return _cloud_cases(div, rej) + [
        Accepted("a single point each (N = M = 1)", lambda impl: div(impl, rn(1, 2), rn(1, 2, seed=1), eps=0.1)),
        Accepted("identical clouds (divergence 0)", lambda impl: div(impl, x, x.clone(), eps=0.5)),
        Accepted("tiny eps (1e-8)", lambda impl: div(impl, eps=1e-8, max_iter=20, on_nonconvergence="ignore")),
        Accepted("non-contiguous clouds", lambda impl: div(impl, strided(x), strided(y), eps=0.5)),
        Accepted("static_b, unbalanced (tau 0.5)", lambda impl: div(impl, eps=0.5, static_b=True, tau_a=0.5,
                                                                    tau_b=0.5)),
    ]


def _monge_gap():
    op = "monge_gap"
    rej = _rejecter(op)
    x = lambda: rn(6, 2, seed=1)  # noqa: E731

    def gap(impl, x0=None, y0=None, **kw):
        x0 = x() if x0 is None else x0
        return regops.monge_gap(x0, x0 * 2 + 1 if y0 is None else y0, impl=impl, **kw)

    return [
        rej("x", "1-D tensor", lambda impl: gap(impl, rn(6), rn(6)), ValueError, "a 2-D or 3-D tensor", "1-D tensor"),
        rej("y", "shape other than x's", lambda impl: gap(impl, x(), rn(5, 2)), ValueError,
            "the shape of x (6, 2) (y = T(x) is row-paired with x)", "shape (5, 2)"),
        rej("x", "wrong dtype (int64)", lambda impl: gap(impl, x().long(), x().long()), TypeError,
            "a floating-point tensor", "dtype int64"),
        rej("y", "NaN coordinate", lambda impl: gap(impl, y0=with_nan(x())), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("cost", "unknown cost", lambda impl: gap(impl, cost="l1"), ValueError,
            "one of 'sqeuclidean', 'euclidean', 'cosine'", "'l1'"),
        rej("eps", "negative eps", lambda impl: gap(impl, eps=-1.0), ValueError, "a positive finite number", "-1.0"),
        rej("eps", "eps=None with a single point (std(C) = 0)", lambda impl: gap(impl, rn(1, 2)), ValueError,
            "a positive eps", "eps [0.0]"),
        rej("max_iter", "zero iterations", lambda impl: gap(impl, max_iter=0), ValueError, "an int >= 1", "0"),
        Accepted("a single point (N=1), with eps", lambda impl: gap(impl, rn(1, 2), eps=0.1)),
        Accepted("the identity map (y = x)", lambda impl: gap(impl, y0=x(), eps=0.5)),
        Accepted("the identity map, euclidean cost (its subgradient at 0)",
                 lambda impl: gap(impl, y0=x(), cost="euclidean", eps=0.5)),
        Accepted("tiny eps (1e-8)", lambda impl: gap(impl, eps=1e-8, max_iter=20, on_nonconvergence="ignore")),
        Accepted("non-contiguous points, batched", lambda impl: gap(impl, strided(rn(2, 6, 2)), eps=2.0)),
    ]


# ---- P²OT / SP²OT pseudo-labels ----

def _logits_cases(plan, rej):
    """The logits and parameter checks p2ot_plan and sp2ot_plan share; plan(impl, logits, rho, **kw)."""
    z = lambda: rn(6, 3)  # noqa: E731
    return [
        rej("logits", "1-D tensor", lambda impl: plan(impl, rn(6), 0.5), ValueError, "a 2-D tensor", "1-D tensor"),
        rej("logits", "wrong dtype (int64)", lambda impl: plan(impl, torch.ones(6, 3, dtype=I64), 0.5), TypeError,
            "a floating-point tensor", "dtype int64"),
        rej("logits", "empty batch", lambda impl: plan(impl, rn(0, 3), 0.5), ValueError, "at least one row",
            "shape (0, 3)"),
        rej("logits", "no clusters (K = 0)", lambda impl: plan(impl, rn(6, 0), 0.5), ValueError,
            "K >= 1 columns (clusters)", "shape (6, 0)"),
        rej("logits", "NaN logit", lambda impl: plan(impl, with_nan(z()), 0.5), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("logits", "a meta tensor (no data)", lambda impl: plan(impl, on_meta(z()), 0.5), RuntimeError,
            "a tensor with data", "a meta tensor"),
        rej("rho", "zero mass", lambda impl: plan(impl, z(), 0.0), ValueError, "a mass in (0, 1]", "0.0"),
        rej("rho", "mass above 1", lambda impl: plan(impl, z(), 1.5), ValueError, "a mass in (0, 1]", "1.5"),
        rej("rho", "a string", lambda impl: plan(impl, z(), "0.5"), TypeError, "a mass in (0, 1]", "str '0.5'"),
        rej("eps", "zero eps", lambda impl: plan(impl, z(), 0.5, eps=0.0), ValueError, "a positive finite number",
            "0.0"),
        rej("gamma", "negative gamma", lambda impl: plan(impl, z(), 0.5, gamma=-1.0), ValueError,
            "a positive finite number", "-1.0"),
        rej("max_iter", "a bool", lambda impl: plan(impl, z(), 0.5, max_iter=True), TypeError,
            "a number, not a bool", "True"),
        rej("max_iter", "zero iterations", lambda impl: plan(impl, z(), 0.5, max_iter=0), ValueError, "an int >= 1",
            "0"),
        rej("tol", "negative tol", lambda impl: plan(impl, z(), 0.5, tol=-1.0), ValueError, "a number >= 0", "-1.0"),
        rej("on_nonconvergence", "unknown rule", lambda impl: plan(impl, z(), 0.5, on_nonconvergence="stop"),
            ValueError, "one of 'warn', 'raise', 'ignore'", "'stop'"),
    ]


def _p2ot_plan():
    op = "p2ot_plan"
    rej = _rejecter(op)

    def plan(impl, logits, rho, **kw):
        kw.setdefault("max_iter", 200)
        kw.setdefault("on_nonconvergence", "ignore")
        out, state = regops.p2ot_plan(logits, rho, impl=impl, **kw)
        return out, state.log_col_scaling[:-1] if rho == 1 else state.log_col_scaling

    return _logits_cases(plan, rej) + [
        rej("init", "a scaling of the wrong shape", lambda impl: plan(impl, rn(6, 3), 0.5, init=torch.zeros(3)),
            ValueError, "a P2OTState (or log column scaling) of shape (4,)", "Tensor of shape (3,)"),
        rej("init", "a NaN scaling", lambda impl: plan(impl, rn(6, 3), 0.5, init=with_nan(torch.zeros(4), 1)),
            ValueError, "a log column scaling without NaN or +inf", "nan at index 1"),
        Accepted("a single sample (N=1)", lambda impl: plan(impl, rn(1, 3), 0.5)),
        Accepted("one cluster (K=1)", lambda impl: plan(impl, rn(6, 1), 0.5)),
        Accepted("full mass (rho = 1; the virtual column's scaling is -inf)", lambda impl: plan(impl, rn(6, 3), 1.0)),
        Accepted("all-equal logits", lambda impl: plan(impl, torch.zeros(6, 3), 0.5)),
        Accepted("confident logits (x50)", lambda impl: plan(impl, rn(6, 3) * 50, 0.3)),
        Accepted("tiny eps (1e-5)", lambda impl: plan(impl, rn(6, 3) * 5, 0.5, eps=1e-5, max_iter=50)),
        Accepted("non-contiguous logits, float64", lambda impl: plan(impl, strided(rn(6, 3, dtype=F64)), 0.5)),
    ]


def _sp2ot_plan():
    op = "sp2ot_plan"
    rej = _rejecter(op)

    def plan(impl, logits, rho, similarity=None, **kw):
        kw.setdefault("max_iter", 100)
        kw.setdefault("mm_iters", 3)
        kw.setdefault("on_nonconvergence", "ignore")
        n = logits.shape[0] if logits.dim() else 6
        S = torch.zeros(n, n) if similarity is None else similarity
        out, state = regops.sp2ot_plan(logits, rho, S, impl=impl, **kw)
        return out, state.log_col_scaling[:-1] if rho == 1 else state.log_col_scaling

    z = lambda: rn(6, 3)  # noqa: E731
    return _logits_cases(plan, rej) + [
        rej("similarity", "not a tensor", lambda impl: plan(impl, z(), 0.5, [[0.0]]), TypeError, "a torch.Tensor",
            "list"),
        rej("similarity", "shape other than (N, N)", lambda impl: plan(impl, z(), 0.5, torch.zeros(6, 5)),
            ValueError, "shape (6, 6)", "shape (6, 5)"),
        rej("similarity", "NaN similarity", lambda impl: plan(impl, z(), 0.5, with_nan(torch.zeros(6, 6))),
            ValueError, "finite values", "nan at index (0, 0)"),
        rej("lam", "NaN weight", lambda impl: plan(impl, z(), 0.5, lam=math.nan), ValueError, "a finite number",
            "nan"),
        rej("mm_iters", "zero iterations", lambda impl: plan(impl, z(), 0.5, mm_iters=0), ValueError,
            "an int >= 1", "0"),
        rej("mm_iters", "not an int", lambda impl: plan(impl, z(), 0.5, mm_iters=1.5), TypeError, "an int >= 1",
            "1.5"),
        rej("mm_tol", "negative tolerance", lambda impl: plan(impl, z(), 0.5, mm_tol=-1.0), ValueError,
            "a finite number >= 0", "-1.0"),
        Accepted("a single sample (N=1)", lambda impl: plan(impl, rn(1, 3), 0.5)),
        Accepted("zero similarity", lambda impl: plan(impl, z(), 0.5)),
        Accepted("a sparse top-k similarity", lambda impl: plan(impl, z(), 0.5,
                                                                regops.topk_gaussian_similarity(rn(6, 4), k=2))),
        Accepted("full mass (rho = 1, lam = 0)", lambda impl: plan(impl, z(), 1.0, torch.ones(6, 6))),
        Accepted("non-contiguous logits and similarity", lambda impl: plan(impl, strided(z()), 0.5,
                                                                           strided(torch.rand(6, 6)))),
    ]


# ---- gradient dropout: graddrop_, graddrop_keep_prob ----

def _graddrop_step(impl, params=None, task=None, reg=None, **kw):
    params = [torch.zeros(3)] if params is None else params
    task = [rn(3)] if task is None else task
    reg = [rn(3, seed=1)] if reg is None else reg
    kw.setdefault("lam", 0.5)
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    done = regops.graddrop_(params, task, reg, impl=impl, **kw)
    return [done] + [p.grad if isinstance(p, torch.Tensor) else None for p in params]


def _graddrop_():
    op = "graddrop_"
    rej = _rejecter(op)
    step = _graddrop_step
    return [
        rej("grads_task", "mismatched lengths", lambda impl: step(impl, task=[rn(3), rn(3)]), ValueError,
            "1 tensors (one per param)", "2 tensors"),
        rej("lam", "outside [0, 1]", lambda impl: step(impl, lam=1.5), ValueError, "a value in [0, 1]", "1.5"),
        rej("lam", "NaN", lambda impl: step(impl, lam=math.nan), ValueError, "a value in [0, 1]", "nan"),
        rej("lam", "a string", lambda impl: step(impl, lam="0.5"), TypeError, "a value in [0, 1]", "str '0.5'"),
        rej("nonfinite", "unknown rule", lambda impl: step(impl, nonfinite="ignore"), ValueError,
            "one of 'raise', 'skip'", "'ignore'"),
        rej("params", "not a sequence", lambda impl: step(impl, params=5), TypeError, "a sequence of tensors", "int"),
        rej("params[0]", "not a tensor", lambda impl: step(impl, params=[0.0]), TypeError, "a torch.Tensor", "float"),
        rej("grads_task[0]", "wrong dtype (float64)", lambda impl: step(impl, params=[torch.zeros(3, dtype=F64)],
                                                                        task=[rn(3, dtype=F64)]),
            TypeError, "dtype in (float32, bfloat16, float16)", "float64"),
        rej("grads_reg[0]", "shape other than the param's", lambda impl: step(impl, reg=[rn(4)]), ValueError,
            "shape (3,) (as params[0])", "shape (4,)"),
        rej("grads_reg[0]", "dtype other than grads_task's", lambda impl: step(impl, reg=[rn(3).bfloat16()]),
            TypeError, "dtype float32 (as grads_task[0])", "dtype bfloat16"),
        rej("grads_task[0]", "dtype other than the param's",
            lambda impl: step(impl, params=[torch.zeros(3, dtype=BF16)]), TypeError, "dtype bfloat16 (as params[0])",
            "dtype float32"),
        rej("grads_reg[0]", "device mix (CPU + meta)", lambda impl: step(impl, reg=[on_meta(rn(3))]), RuntimeError,
            "device cpu (as params[0])", "device meta"),
        rej("grads_task/grads_reg", "non-finite gradients", lambda impl: step(impl, task=[with_nan(rn(3))]),
            ValueError, "finite gradients", "non-finite values in tensors 0 (1)"),
        Accepted("a single one-element tensor", lambda impl: step(impl, [torch.zeros(1)], [rn(1)], [rn(1, seed=1)])),
        Accepted("an empty list", lambda impl: step(impl, [], [], [])),
        Accepted("lam 0 and lam 1", lambda impl: step(impl, lam=0.0) + step(impl, lam=1.0)),
        Accepted("zero gradients (P = 1/2)", lambda impl: step(impl, task=[torch.zeros(3)], reg=[torch.zeros(3)])),
        Accepted("non-contiguous gradients, two tensors, bfloat16",
                 lambda impl: step(impl, [torch.zeros(2, 3, dtype=BF16), torch.zeros(4, dtype=BF16)],
                                   [strided(rn(2, 3).bfloat16()), rn(4).bfloat16()],
                                   [strided(rn(2, 3, seed=1).bfloat16()), rn(4, seed=1).bfloat16()])),
        Accepted("NaN gradients with nonfinite='skip' (returns False, .grad untouched)",
                 lambda impl: step(impl, task=[with_nan(rn(3))], nonfinite="skip")),
    ]


def _graddrop_keep_prob():
    op = "graddrop_keep_prob"
    rej = _rejecter(op)

    def keep(impl, a=None, b=None):
        return regops.graddrop_keep_prob(rn(4) if a is None else a, rn(4, seed=1) if b is None else b, impl=impl)

    return [
        rej("g_task", "not a tensor", lambda impl: keep(impl, [0.0] * 4), TypeError, "a torch.Tensor", "list"),
        rej("g_task", "wrong dtype (float64)", lambda impl: keep(impl, rn(4, dtype=F64)), TypeError,
            "dtype in (float32, bfloat16, float16)", "float64"),
        rej("g_reg", "wrong dtype (int64)", lambda impl: keep(impl, b=ints(1, 2, 3, 4)), TypeError,
            "dtype in (float32, bfloat16, float16)", "int64"),
        rej("g_reg", "shape other than g_task's", lambda impl: keep(impl, b=rn(3)), ValueError,
            "shape (4,) (as g_task)", "shape (3,)"),
        rej("g_reg", "dtype other than g_task's", lambda impl: keep(impl, b=rn(4).bfloat16()), TypeError,
            "dtype float32 (as g_task)", "dtype bfloat16"),
        rej("g_reg", "device mix (CPU + meta)", lambda impl: keep(impl, b=on_meta(rn(4))), RuntimeError,
            "device cpu (as g_task)", "device meta"),
        rej("g_task", "NaN entry", lambda impl: keep(impl, with_nan(rn(4))), ValueError, "finite values",
            "nan at index (0,)"),
        Accepted("zero gradients (P = 1/2)", lambda impl: keep(impl, torch.zeros(4), torch.zeros(4))),
        Accepted("0-D tensors", lambda impl: keep(impl, torch.tensor(1.0), torch.tensor(-1.0))),
        Accepted("empty tensors", lambda impl: keep(impl, torch.zeros(0), torch.zeros(0))),
        Accepted("huge gradients (1e38)", lambda impl: keep(impl, torch.full((4,), 1e38), torch.full((4,), -3e38))),
        Accepted("non-contiguous, bfloat16 and float16", lambda impl: (
            keep(impl, strided(rn(2, 3).bfloat16()), strided(rn(2, 3, seed=1).bfloat16())),
            keep(impl, rn(4).half(), rn(4, seed=1).half()))),
    ]


# ---- preference regularizers: preference_loss, fused_linear_preference_loss, rrpo_loss, kl_to_reference,
# cream_consistency ----

def _logps(b=3, seed=0):
    return [-rn(b, seed=seed + i).abs() * 10 for i in range(4)]


def _preference_loss():
    op = "preference_loss"
    rej = _rejecter(op)

    def loss(impl, logps=None, **kw):
        return regops.preference_loss(*(_logps() if logps is None else logps), impl=impl, **kw)

    def replaced(i, t):
        logps = _logps()
        logps[i] = t
        return logps

    return [
        rej("policy_chosen_logps", "2-D tensor", lambda impl: loss(impl, replaced(0, rn(3, 1))), ValueError,
            "a 1-D tensor", "2-D tensor"),
        rej("policy_chosen_logps", "wrong dtype (int64)", lambda impl: loss(impl, replaced(0, ints(1, 2, 3))),
            TypeError, "dtype float32, float64 or bfloat16", "shape (3,), dtype int64"),
        rej("policy_rejected_logps", "mismatched lengths", lambda impl: loss(impl, replaced(1, rn(2))), ValueError,
            "shape (3,) (as policy_chosen_logps: one value per pair)", "shape (2,)"),
        rej("ref_rejected_logps", "device mix (CPU + meta)", lambda impl: loss(impl, replaced(3, on_meta(rn(3)))),
            RuntimeError, "device cpu (as policy_chosen_logps)", "shape (3,), dtype float32, device meta"),
        rej("ref_chosen_logps", "NaN log-prob", lambda impl: loss(impl, replaced(2, with_nan(rn(3)))), ValueError,
            "finite values", "nan at index (0,)"),
        rej("policy_chosen_logps", "empty batch with reduction='mean'",
            lambda impl: loss(impl, [torch.zeros(0)] * 4), ValueError, "at least one pair for reduction='mean'",
            "shape (0,)"),
        rej("beta", "zero beta", lambda impl: loss(impl, beta=0.0), ValueError, "a finite positive number", "0.0"),
        rej("label_smoothing", "outside [0, 1]", lambda impl: loss(impl, label_smoothing=1.5), ValueError,
            "a number in [0, 1]", "1.5"),
        rej("label_smoothing", "a tensor of the wrong shape", lambda impl: loss(impl, label_smoothing=torch.zeros(2)),
            ValueError, "a float or a tensor of shape (3,) (one per pair)", "shape (2,)"),
        rej("label_smoothing", "per-pair values outside [0, 1]",
            lambda impl: loss(impl, label_smoothing=torch.tensor([0.0, 0.5, 2.0])), ValueError, "values in [0, 1]",
            "min 0.0, max 2.0"),
        rej("label_smoothing", "an integer tensor", lambda impl: loss(impl, label_smoothing=ints(0, 1, 0)),
            TypeError, "a floating-point tensor", "shape (3,), dtype int64"),
        rej("sft_weight", "NaN weight", lambda impl: loss(impl, sft_weight=math.nan), ValueError, "a finite number",
            "nan"),
        rej("chosen_nll", "mismatched lengths", lambda impl: loss(impl, sft_weight=1.0, chosen_nll=rn(2)),
            ValueError, "a scalar or shape (3,)", "shape (2,)"),
        rej("reduction", "unknown reduction", lambda impl: loss(impl, reduction="max"), ValueError,
            "one of 'mean', 'sum', 'none'", "'max'"),
        _kernel_by_name(op, lambda impl: loss(impl)),
        Accepted("a single pair (B=1)", lambda impl: loss(impl, _logps(1))),
        Accepted("an empty batch with reduction='sum' and 'none'",
                 lambda impl: loss(impl, [torch.zeros(0)] * 4, reduction="sum")[:1]
                 + loss(impl, [torch.zeros(0)] * 4, reduction="none")),
        Accepted("extreme log-ratios (±1e4)", lambda impl: loss(impl, [torch.full((3,), -1e4), torch.zeros(3),
                                                                       torch.zeros(3), torch.full((3,), -1e4)],
                                                                sft_weight=0.5)),
        Accepted("equal chosen and rejected log-probs", lambda impl: loss(impl, [torch.full((3,), -2.0)] * 4)),
        Accepted("per-pair label smoothing at 0 and 1, a scalar chosen_nll",
                 lambda impl: loss(impl, label_smoothing=torch.tensor([0.0, 1.0, 0.5]), sft_weight=1.0,
                                   chosen_nll=torch.tensor(2.0))),
        Accepted("non-contiguous log-probs, bfloat16", lambda impl: loss(impl, [strided(t).bfloat16()
                                                                               for t in _logps()])),
    ]


def _head(rows=2, T=3, H=4, V=5, seed=0, dtype=F32):
    """hidden (rows, T, H), weight (V, H), targets (rows, T) with a few ignored tokens."""
    hidden = rn(rows, T, H, seed=seed, dtype=dtype)
    weight = rn(V, H, seed=seed + 1, dtype=dtype) / 2
    targets = torch.arange(rows * T).reshape(rows, T) % V
    targets[:, 0] = -100
    return hidden, weight, targets


def _fused_linear_preference_loss():
    op = "fused_linear_preference_loss"
    rej = _rejecter(op)

    def loss(impl, hidden=None, weight=None, targets=None, **kw):
        h0, w0, t0 = _head()
        return regops.fused_linear_preference_loss(h0 if hidden is None else hidden, w0 if weight is None else weight,
                                                   t0 if targets is None else targets, impl=impl, **kw)

    h, w, t = _head()
    return [
        rej("targets", "1-D tensor", lambda impl: loss(impl, targets=t[0]), ValueError, "a 2-D tensor",
            "1-D tensor"),
        rej("targets", "an odd number of rows", lambda impl: loss(impl, h[:1], targets=t[:1]), ValueError,
            "an even, non-zero number of rows (2B, T)", "shape (1, 3)"),
        rej("targets", "empty batch (no rows)", lambda impl: loss(impl, h[:0], targets=t[:0]), ValueError,
            "an even, non-zero number of rows (2B, T)", "shape (0, 3)"),
        rej("targets", "no tokens (T = 0)", lambda impl: loss(impl, h[:, :0], targets=t[:, :0]), ValueError,
            "at least one token per row", "shape (2, 0)"),
        rej("targets", "wrong dtype (int32)", lambda impl: loss(impl, targets=t.int()), TypeError, "dtype int64",
            "shape (2, 3), dtype int32"),
        rej("targets", "a class index outside [0, V)", lambda impl: loss(impl, targets=t.clamp_min(0) + 1),
            ValueError, "class indices in [0, 5) or ignore_index -100", "5 at index (1, 1)"),
        rej("targets", "device mix (CPU + meta)", lambda impl: loss(impl, targets=on_meta(t)), RuntimeError,
            "device cpu (as hidden)", "shape (2, 3), dtype int64, device meta"),
        rej("hidden", "2-D tensor", lambda impl: loss(impl, h[0]), ValueError, "a 3-D tensor", "2-D tensor"),
        rej("hidden", "wrong dtype (float16)", lambda impl: loss(impl, h.half()), TypeError,
            "dtype float32, float64 or bfloat16", "shape (2, 3, 4), dtype float16"),
        rej("hidden", "leading shape other than targets'", lambda impl: loss(impl, h[:, :2]), ValueError,
            "leading shape (2, 3) (as targets)", "shape (2, 2, 4)"),
        rej("weight", "hidden size other than hidden's", lambda impl: loss(impl, weight=rn(5, 3)), ValueError,
            "shape (V, 4) (H of hidden)", "shape (5, 3)"),
        rej("weight", "dtype other than hidden's", lambda impl: loss(impl, weight=w.double()), TypeError,
            "dtype float32 (as hidden)", "shape (5, 4), dtype float64"),
        rej("weight", "empty vocabulary (V = 0)", lambda impl: loss(impl, weight=w[:0]), ValueError,
            "at least one vocabulary row (V >= 1)", "shape (0, 4)"),
        rej("ref_logps", "both ref_logps and ref_hidden", lambda impl: loss(impl, ref_logps=rn(2), ref_hidden=h,
                                                                            ref_weight=w),
            ValueError, "either ref_logps or ref_hidden and ref_weight", "both"),
        rej("ref_weight", "ref_hidden without ref_weight", lambda impl: loss(impl, ref_hidden=h), ValueError,
            "ref_hidden and ref_weight together", "only one of them"),
        rej("ref_logps", "mismatched lengths", lambda impl: loss(impl, ref_logps=rn(3)), ValueError,
            "shape (2,) (one summed log-prob per row of targets)", "shape (3,)"),
        rej("ref_logps", "NaN log-prob", lambda impl: loss(impl, ref_logps=with_nan(rn(2))), ValueError,
            "finite values", "nan at index (0,)"),
        rej("ref_weight", "vocabulary other than weight's", lambda impl: loss(impl, ref_hidden=h, ref_weight=w[:4]),
            ValueError, "5 vocabulary rows (as weight)", "shape (4, 4)"),
        rej("beta", "zero beta", lambda impl: loss(impl, beta=0.0), ValueError, "a finite positive number", "0.0"),
        rej("sft_reduction", "unknown reduction", lambda impl: loss(impl, sft_reduction="mean"), ValueError,
            "one of 'token_mean', 'seq_mean', 'sum'", "'mean'"),
        rej("label_smoothing", "outside [0, 1]", lambda impl: loss(impl, label_smoothing=-0.1), ValueError,
            "a number in [0, 1]", "-0.1"),
        rej("chunk_size", "zero rows per chunk", lambda impl: loss(impl, chunk_size=0), ValueError,
            "a positive int (rows of logits per chunk) or None", "0"),
        rej("hidden/weight", "NaN hidden state", lambda impl: loss(impl, with_nan(h, 5)), ValueError,
            "finite values", "a non-finite log-prob or KL"),
        Accepted("a single pair of one token, one-word vocabulary (B=1, T=1, V=1)",
                 lambda impl: loss(impl, *_head(2, 1, 4, 1), sft_weight=1.0)),
        Accepted("every token ignored, SFT on (each reduction)",
                 lambda impl: [loss(impl, targets=torch.full((2, 3), -100), sft_weight=1.0, sft_reduction=r)
                               for r in ("token_mean", "seq_mean", "sum")]),
        Accepted("ref_logps given; per-pair label smoothing",
                 lambda impl: loss(impl, ref_logps=-rn(2).abs(), label_smoothing=torch.tensor([0.3]))),
        Accepted("a reference head (ref_hidden, ref_weight), SFT, chunk_size 1",
                 lambda impl: loss(impl, ref_hidden=rn(2, 3, 2, seed=5), ref_weight=rn(5, 2, seed=6),
                                   sft_weight=0.5, chunk_size=1)),
        Accepted("non-contiguous hidden states, bfloat16",
                 lambda impl: loss(impl, strided(h).bfloat16(), w.bfloat16())),
        Accepted("extreme logits (hidden x1e3)", lambda impl: loss(impl, h * 1e3, sft_weight=1.0)),
    ]


def _rrpo_loss():
    op = "rrpo_loss"
    rej = _rejecter(op)

    def loss(impl, hidden=None, weight=None, targets=None, ref_hidden=None, ref_weight=None, segments=None, **kw):
        h0, w0, t0 = _head()
        rh, rw, _ = _head(seed=7)
        seg = torch.tensor([[0, 1, 1], [0, 1, 0]])
        return regops.rrpo_loss(h0 if hidden is None else hidden, w0 if weight is None else weight,
                                t0 if targets is None else targets, rh if ref_hidden is None else ref_hidden,
                                rw if ref_weight is None else ref_weight, seg if segments is None else segments,
                                impl=impl, **kw)

    h, w, t = _head()
    return [
        rej("targets", "an odd number of rows", lambda impl: loss(impl, h[:1], targets=t[:1], ref_hidden=h[:1],
                                                                  segments=t[:1]),
            ValueError, "an even, non-zero number of rows (2B, T)", "shape (1, 3)"),
        rej("hidden", "wrong dtype (float16)", lambda impl: loss(impl, h.half()), TypeError,
            "dtype float32, float64 or bfloat16", "shape (2, 3, 4), dtype float16"),
        rej("ref_hidden", "leading shape other than targets'", lambda impl: loss(impl, ref_hidden=h[:, :2]),
            ValueError, "leading shape (2, 3) (as targets)", "shape (2, 2, 4)"),
        rej("ref_weight", "vocabulary other than weight's", lambda impl: loss(impl, ref_weight=w[:4]), ValueError,
            "5 vocabulary rows (as weight)", "shape (4, 4)"),
        rej("ref_hidden", "device mix (CPU + meta)", lambda impl: loss(impl, ref_hidden=on_meta(h),
                                                                       ref_weight=on_meta(w)),
            RuntimeError, "device cpu (as hidden)", "shape (2, 3, 4), dtype float32, device meta"),
        rej("targets", "a class index outside [0, V)", lambda impl: loss(impl, targets=t.clamp_min(0) + 1),
            ValueError, "class indices in [0, 5) or ignore_index -100", "5 at index (1, 1)"),
        rej("segments", "shape other than targets'", lambda impl: loss(impl, segments=t[:, :2]), ValueError,
            "an int64 tensor of shape (2, 3) (as targets)", "shape (2, 2)"),
        rej("segments", "wrong dtype (int32)", lambda impl: loss(impl, segments=t.int()), TypeError,
            "an int64 tensor of shape (2, 3) (as targets)", "shape (2, 3), dtype int32"),
        rej("beta", "zero beta", lambda impl: loss(impl, beta=0.0), ValueError, "a finite positive number", "0.0"),
        rej("alpha", "NaN weight", lambda impl: loss(impl, alpha=math.nan), ValueError, "a finite number", "nan"),
        rej("chunk_size", "not an int", lambda impl: loss(impl, chunk_size=2.0), ValueError,
            "a positive int (rows of logits per chunk) or None", "2.0"),
        rej("hidden/weight/ref_hidden/ref_weight", "NaN hidden state", lambda impl: loss(impl, with_nan(h, 5)),
            ValueError, "finite values", "a non-finite log-prob or KL"),
        Accepted("a single pair of one token (B=1, T=1)", lambda impl: loss(
            impl, *_head(2, 1), ref_hidden=_head(2, 1, seed=7)[0], segments=torch.ones(2, 1, dtype=I64))),
        Accepted("every token ignored", lambda impl: loss(impl, targets=torch.full((2, 3), -100))),
        Accepted("no differing segment (segments all 0)", lambda impl: loss(impl, segments=torch.zeros(2, 3,
                                                                                                     dtype=I64))),
        Accepted("policy equal to the reference", lambda impl: loss(impl, ref_hidden=h.clone(), ref_weight=w.clone())),
        Accepted("non-contiguous hidden states, chunk_size 1", lambda impl: loss(impl, strided(h), chunk_size=1)),
    ]


def _kl_to_reference():
    op = "kl_to_reference"
    rej = _rejecter(op)

    def kl(impl, x=None, ref=None, mask=None, **kw):
        return regops.kl_to_reference(rn(4, 5) if x is None else x, rn(4, 5, seed=1) if ref is None else ref, mask,
                                      impl=impl, **kw)

    return [
        rej("direction", "unknown direction", lambda impl: kl(impl, direction="both"), ValueError,
            "one of 'forward', 'reverse'", "'both'"),
        rej("reduction", "unknown reduction", lambda impl: kl(impl, reduction="max"), ValueError,
            "one of 'mean', 'sum', 'none'", "'max'"),
        rej("input", "0-D tensor", lambda impl: kl(impl, torch.tensor(1.0), torch.tensor(1.0)), ValueError,
            "a tensor of shape (..., V) or (..., H)", "shape (), dtype float32"),
        rej("input", "wrong dtype (float16)", lambda impl: kl(impl, rn(4, 5).half()), TypeError,
            "dtype float32, float64 or bfloat16", "shape (4, 5), dtype float16"),
        rej("input", "no classes (V = 0)", lambda impl: kl(impl, rn(4, 0), rn(4, 0)), ValueError,
            "at least one class (..., V >= 1)", "shape (4, 0)"),
        rej("ref", "shape other than input's", lambda impl: kl(impl, ref=rn(4, 6)), ValueError,
            "shape (4, 5) (the policy's logits)", "shape (4, 6)"),
        rej("ref", "device mix (CPU + meta)", lambda impl: kl(impl, ref=on_meta(rn(4, 5))), RuntimeError,
            "device cpu (as input)", "shape (4, 5), dtype float32, device meta"),
        rej("mask", "not a bool tensor", lambda impl: kl(impl, mask=torch.ones(4)), TypeError,
            "a bool tensor of shape (4,)", "shape (4,), dtype float32"),
        rej("mask", "shape other than the tokens'", lambda impl: kl(impl, mask=torch.ones(5, dtype=torch.bool)),
            ValueError, "a bool tensor of shape (4,)", "shape (5,)"),
        rej("weight", "hidden size other than input's", lambda impl: kl(impl, rn(4, 3), weight=rn(5, 2)), ValueError,
            "shape (V, 3) (H of input)", "shape (5, 2)"),
        rej("ref_weight", "vocabulary other than the policy's", lambda impl: kl(impl, ref=rn(4, 3),
                                                                                ref_weight=rn(6, 3)),
            ValueError, "5 vocabulary rows (the policy's V)", "shape (6, 3)"),
        rej("chunk_size", "zero rows per chunk", lambda impl: kl(impl, chunk_size=0), ValueError,
            "a positive int (rows of logits per chunk) or None", "0"),
        rej("input/ref", "NaN logit", lambda impl: kl(impl, with_nan(rn(4, 5))), ValueError, "finite values",
            "a non-finite log-prob or KL"),
        Accepted("a single token (1, V)", lambda impl: kl(impl, rn(1, 5), rn(1, 5, seed=1))),
        Accepted("an empty batch (0, V), each reduction",
                 lambda impl: [kl(impl, rn(0, 5), rn(0, 5), reduction=r) for r in ("mean", "sum", "none")]),
        Accepted("every token masked out (mean is 0)", lambda impl: kl(impl, mask=torch.zeros(4, dtype=torch.bool))),
        Accepted("a one-word vocabulary (V=1)", lambda impl: kl(impl, rn(4, 1), rn(4, 1, seed=1), direction="reverse")),
        Accepted("policy equal to the reference", lambda impl: kl(impl, ref=rn(4, 5), reduction="none")),
        Accepted("extreme logits (±1e4)", lambda impl: kl(impl, rn(4, 5).sign() * 1e4, -rn(4, 5).sign() * 1e4)),
        Accepted("hidden states with heads (input (2, 3, H) @ weight, ref_weight)",
                 lambda impl: kl(impl, rn(2, 3, 4), rn(2, 3, 2, seed=1), weight=rn(5, 4, seed=2),
                                 ref_weight=rn(5, 2, seed=3))),
        Accepted("non-contiguous logits, bfloat16", lambda impl: kl(impl, strided(rn(4, 5)).bfloat16(),
                                                                     rn(4, 5, seed=1).bfloat16())),
    ]


def _cream_consistency():
    op = "cream_consistency"
    rej = _rejecter(op)

    def rate(impl, a=None, b=None, **kw):
        return regops.cream_consistency(rn(2, 4) if a is None else a, rn(2, 4, seed=1) if b is None else b,
                                        impl=impl, **kw)

    return [
        rej("prev_rewards", "1-D tensor", lambda impl: rate(impl, rn(4)), ValueError, "a 2-D tensor", "1-D tensor"),
        rej("prev_rewards", "wrong dtype (int64)", lambda impl: rate(impl, torch.ones(2, 4, dtype=I64)), TypeError,
            "dtype float32, float64 or bfloat16", "shape (2, 4), dtype int64"),
        rej("cur_rewards", "shape other than prev_rewards'", lambda impl: rate(impl, b=rn(2, 3)), ValueError,
            "shape (2, 4) (as prev_rewards)", "shape (2, 3)"),
        rej("cur_rewards", "device mix (CPU + meta)", lambda impl: rate(impl, b=on_meta(rn(2, 4))), RuntimeError,
            "device cpu (as prev_rewards)", "shape (2, 4), dtype float32, device meta"),
        rej("prev_rewards", "NaN reward", lambda impl: rate(impl, with_nan(rn(2, 4))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("method", "unknown method", lambda impl: rate(impl, method="pearson"), ValueError,
            "one of 'kendall', 'spearman'", "'pearson'"),
        _kernel_by_name(op, lambda impl: rate(impl)),
        Accepted("a single response per prompt (n=1)", lambda impl: rate(impl, rn(2, 1), rn(2, 1, seed=1))),
        Accepted("all-tied rewards, both methods", lambda impl: (rate(impl, torch.zeros(2, 4)),
                                                                 rate(impl, torch.zeros(2, 4), method="spearman"))),
        Accepted("an empty batch (B=0)", lambda impl: rate(impl, rn(0, 4), rn(0, 4))),
        Accepted("identical rankings", lambda impl: rate(impl, rn(2, 4), rn(2, 4), method="spearman")),
        Accepted("non-contiguous rewards, bfloat16", lambda impl: rate(impl, strided(rn(2, 4)).bfloat16(),
                                                                        rn(2, 4, seed=1).bfloat16())),
    ]


# ---- class-row losses: decoupled_mixup_loss, elr_loss ----

def _decoupled_mixup_loss():
    op = "decoupled_mixup_loss"
    rej = _rejecter(op)

    def loss(impl, logits=None, a=None, b=None, lam=0.3, **kw):
        return regops.decoupled_mixup_loss(rn(4, 5) if logits is None else logits,
                                           ints(0, 1, 2, 3) if a is None else a, ints(1, 1, 4, 0) if b is None else b,
                                           lam, impl=impl, **kw)

    return [
        rej("logits", "3-D tensor", lambda impl: loss(impl, rn(4, 5, 1)), ValueError, "a 2-D tensor", "3-D tensor"),
        rej("logits", "wrong dtype (float16)", lambda impl: loss(impl, rn(4, 5).half()), TypeError,
            "dtype in (float32, float64, bfloat16)", "float16"),
        rej("logits", "no classes", lambda impl: loss(impl, rn(4, 0)), ValueError, "at least one class (N, C >= 1)",
            "shape (4, 0)"),
        rej("logits", "empty batch", lambda impl: loss(impl, rn(0, 5), ints(), ints()), ValueError,
            "at least one row (the loss is a batch mean)", "shape (0, 5)"),
        rej("logits", "NaN logit", lambda impl: loss(impl, with_nan(rn(4, 5))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("target_a", "wrong dtype (float32)", lambda impl: loss(impl, a=ints(0, 1, 2, 3).float()), TypeError,
            "dtype in (int64, int32)", "float32"),
        rej("target_b", "mismatched lengths", lambda impl: loss(impl, b=ints(0, 1, 2)), ValueError,
            "shape (4,) (one class per row of logits)", "shape (3,)"),
        rej("target_a", "a class index outside [0, C)", lambda impl: loss(impl, a=ints(0, 1, 2, 5)), ValueError,
            "class indices in [0, 5)", "5"),
        rej("target_b", "device mix (CPU + meta)", lambda impl: loss(impl, b=on_meta(ints(0, 1, 2, 3))),
            RuntimeError, "device cpu (as logits)", "device meta"),
        rej("lam", "outside [0, 1]", lambda impl: loss(impl, lam=1.5), ValueError, "a mixing ratio in [0, 1]",
            "1.5"),
        rej("lam", "NaN", lambda impl: loss(impl, lam=math.nan), ValueError, "a mixing ratio in [0, 1]", "nan"),
        rej("eta", "negative weight", lambda impl: loss(impl, eta=-1.0), ValueError, "a finite non-negative weight",
            "-1.0"),
        rej("mode", "unknown mode", lambda impl: loss(impl, mode="all"), ValueError, "one of 'both', 'less', 'more'",
            "'all'"),
        rej("lam_scale", "unknown scale", lambda impl: loss(impl, lam_scale="exp"), ValueError,
            "one of 'pow', 'none'", "'exp'"),
        rej("lam_thr", "zero threshold", lambda impl: loss(impl, lam_thr=0.0), ValueError,
            "a finite positive threshold", "0.0"),
        Accepted("a single sample of one class (N=1, C=1)", lambda impl: loss(impl, rn(1, 1), ints(0), ints(0))),
        Accepted("lam 0 and lam 1", lambda impl: (loss(impl, lam=0.0), loss(impl, lam=1.0))),
        Accepted("all-equal targets (target_a == target_b)", lambda impl: loss(impl, a=ints(2, 2, 2, 2),
                                                                               b=ints(2, 2, 2, 2))),
        Accepted("extreme logits (±1e4)", lambda impl: loss(impl, rn(4, 5).sign() * 1e4)),
        Accepted("non-contiguous logits, int32 targets, official_pairing=False",
                 lambda impl: loss(impl, strided(rn(4, 5)), ints(0, 1, 2, 3, dtype=I32), ints(1, 1, 4, 0, dtype=I32),
                                   official_pairing=False)),
        Accepted("bfloat16 logits, mode 'less', lam_scale 'none'",
                 lambda impl: loss(impl, rn(4, 5).bfloat16(), mode="less", lam_scale="none")),
    ]


def _elr_step(impl, logits=None, targets=None, index=None, buffer=None, **kw):
    logits = rn(4, 5) if logits is None else logits
    targets = ints(0, 1, 2, 3) if targets is None else targets
    index = ints(3, 0, 7, 5) if index is None else index
    buffer = torch.full((10, 5), 0.2) if buffer is None else buffer
    return regops.elr_loss(logits, targets, index, buffer, impl=impl, **kw), buffer


def _elr_loss():
    op = "elr_loss"
    rej = _rejecter(op)
    step = _elr_step
    return [
        rej("logits", "3-D tensor", lambda impl: step(impl, rn(4, 5, 1)), ValueError, "a 2-D tensor", "3-D tensor"),
        rej("logits", "wrong dtype (float16)", lambda impl: step(impl, rn(4, 5).half()), TypeError,
            "dtype in (float32, float64, bfloat16)", "float16"),
        rej("logits", "empty batch", lambda impl: step(impl, rn(0, 5), ints(), ints()), ValueError,
            "at least one row (the loss is a batch mean)", "shape (0, 5)"),
        rej("logits", "no classes", lambda impl: step(impl, rn(4, 0), buffer=torch.zeros(10, 0)), ValueError,
            "at least one class (B, C >= 1)", "shape (4, 0)"),
        rej("logits", "NaN logit", lambda impl: step(impl, with_nan(rn(4, 5))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("buffer", "wrong dtype (bfloat16)", lambda impl: step(impl, buffer=torch.zeros(10, 5, dtype=BF16)),
            TypeError, "dtype in (float32, float64)", "bfloat16"),
        rej("buffer", "classes other than logits'", lambda impl: step(impl, buffer=torch.zeros(10, 4)), ValueError,
            "shape (N, 5) (one row of C = 5 classes per training sample)", "shape (10, 4)"),
        rej("buffer", "device mix (CPU + meta)", lambda impl: step(impl, buffer=torch.zeros(10, 5, device=META)),
            RuntimeError, "device cpu (as logits)", "device meta"),
        rej("buffer", "NaN buffer entry", lambda impl: step(impl, buffer=with_nan(torch.full((10, 5), 0.2), 15)),
            ValueError, "finite values", "nan at index (3, 0)"),
        rej("targets", "wrong dtype (float32)", lambda impl: step(impl, targets=ints(0, 1, 2, 3).float()), TypeError,
            "dtype in (int64, int32)", "float32"),
        rej("index", "mismatched lengths", lambda impl: step(impl, index=ints(0, 1, 2)), ValueError,
            "shape (4,) (one entry per row of logits)", "shape (3,)"),
        rej("targets", "a class index outside [0, C)", lambda impl: step(impl, targets=ints(0, 1, 2, 5)), ValueError,
            "class indices in [0, 5)", "5"),
        rej("index", "a sample index outside the buffer", lambda impl: step(impl, index=ints(0, 1, 2, 10)),
            ValueError, "sample indices (rows of buffer) in [0, 10)", "10"),
        rej("index", "duplicate sample indices", lambda impl: step(impl, index=ints(0, 1, 1, 2)), ValueError,
            "distinct sample indices within one batch", "index 1 2 times"),
        rej("beta", "momentum 1", lambda impl: step(impl, beta=1.0), ValueError, "a momentum in [0, 1)", "1.0"),
        rej("beta", "negative momentum", lambda impl: step(impl, beta=-0.1), ValueError, "a momentum in [0, 1)",
            "-0.1"),
        rej("lam", "NaN weight", lambda impl: step(impl, lam=math.nan), ValueError, "a finite number", "nan"),
        Accepted("a single sample of one class (B=1, C=1)",
                 lambda impl: step(impl, rn(1, 1), ints(0), ints(0), torch.ones(1, 1))),
        Accepted("all-equal targets", lambda impl: step(impl, targets=ints(1, 1, 1, 1))),
        Accepted("an all-zero buffer, beta 0", lambda impl: step(impl, buffer=torch.zeros(10, 5), beta=0.0)),
        Accepted("a one-hot buffer agreeing with confident logits (log(1 − ⟨t, p⟩) at the clamp)",
                 lambda impl: step(impl, torch.eye(5)[:4] * 1e4, buffer=torch.eye(5).repeat(2, 1))),
        Accepted("non-contiguous logits, int32 indices, float64 buffer",
                 lambda impl: step(impl, strided(rn(4, 5)), ints(0, 1, 2, 3, dtype=I32), ints(3, 0, 7, 5, dtype=I32),
                                   torch.full((10, 5), 0.2, dtype=F64))),
        Accepted("bfloat16 logits", lambda impl: step(impl, rn(4, 5).bfloat16())),
    ]


# ---- spectral_norm_penalty, adversarial_state_noise ----

def _spectral_norm_penalty():
    op = "spectral_norm_penalty"
    rej = _rejecter(op)

    def pen(impl, weights=None, *args, **kw):
        kw.setdefault("generator", torch.Generator().manual_seed(0))
        return regops.spectral_norm_penalty([rn(4, 3)] if weights is None else weights, *args, impl=impl, **kw)[:2]

    def other_state(impl):
        state = regops.SpectralNormState.init([rn(3, 3)])
        return regops.spectral_norm_penalty([rn(4, 3)], state=state, impl=impl)

    return [
        rej("module_or_weights[0]", "1-D weight", lambda impl: pen(impl, [rn(4)]), ValueError,
            "a weight of dim >= 2 (reshaped to (out, -1))", "a 1-D tensor"),
        rej("module_or_weights[0]", "wrong dtype (int64)", lambda impl: pen(impl, [torch.ones(4, 3, dtype=I64)]),
            TypeError, "a floating-point tensor", "dtype int64"),
        rej("module_or_weights[0]", "empty weight", lambda impl: pen(impl, [rn(0, 3)]), ValueError,
            "a non-empty weight", "shape (0, 3)"),
        rej("module_or_weights[1]", "not a tensor", lambda impl: pen(impl, [rn(4, 3), "W"]), TypeError,
            "a torch.Tensor", "str"),
        rej("module_or_weights[1]", "device mix (CPU + meta)", lambda impl: pen(impl, [rn(4, 3), on_meta(rn(2, 2))]),
            RuntimeError, "device cpu (as module_or_weights[0])", "device meta"),
        rej("module_or_weights[0]", "NaN weight", lambda impl: pen(impl, [with_nan(rn(4, 3))]), ValueError,
            "finite values", "nan at index (0, 0)"),
        rej("module_or_weights", "empty list", lambda impl: pen(impl, []), ValueError, "at least one weight",
            "an empty list"),
        rej("module_or_weights", "neither a module nor tensors", lambda impl: pen(impl, "W"), TypeError,
            "an nn.Module, a tensor or a list of tensors", "str"),
        rej("module_or_weights", "a module without weights of dim >= 2", lambda impl: pen(impl, nn.ReLU()),
            ValueError, "a module with at least one parameter of dim >= 2", "ReLU without one"),
        rej("n_power_iterations", "zero iterations", lambda impl: pen(impl, None, 0), ValueError, "an int >= 1", "0"),
        rej("n_power_iterations", "a bool", lambda impl: pen(impl, None, True), TypeError, "an int >= 1",
            "bool True"),
        rej("reduction", "unknown reduction", lambda impl: pen(impl, reduction="min"), ValueError,
            "one of 'sum', 'mean', 'max', 'none'", "'min'"),
        rej("target", "negative target", lambda impl: pen(impl, target=-1.0), ValueError, "a finite number >= 0",
            "-1.0"),
        rej("state", "not a state", lambda impl: pen(impl, state={}), TypeError, "a SpectralNormState or None",
            "dict"),
        rej("state", "a state made for other weights", other_state, ValueError,
            "a state made for these weights: 1 matrices (4x3 float32) on cpu",
            "one made for 1 matrices (3x3 float32) on cpu"),
        Accepted("a single 1×1 weight", lambda impl: pen(impl, [rn(1, 1)])),
        Accepted("an all-zero weight (sigma 0)", lambda impl: pen(impl, [torch.zeros(4, 3)], target=0.0)),
        Accepted("a zero and a rank-1 weight, 3 iterations, reduction 'max'",
                 lambda impl: pen(impl, [torch.zeros(2, 2), torch.ones(3, 2)], 3, reduction="max")),
        Accepted("non-contiguous (transposed) and 4-D (conv) weights",
                 lambda impl: pen(impl, [rn(3, 4).t(), rn(2, 3, 2, 2)], reduction="none")),
        Accepted("a module, bfloat16", lambda impl: pen(impl, nn.Linear(3, 4).to(BF16))),
    ]


def _adversarial_state_noise():
    op = "adversarial_state_noise"
    rej = _rejecter(op)
    value = lambda s: (s ** 2).sum(-1)  # noqa: E731

    def noise(impl, states=None, eps=0.1, fn=value, **kw):
        return regops.adversarial_state_noise(fn, rn(4, 3) if states is None else states, eps, impl=impl, **kw)

    return [
        rej("states", "not a tensor", lambda impl: noise(impl, [[0.0]]), TypeError, "a torch.Tensor", "list"),
        rej("states", "wrong dtype (int64)", lambda impl: noise(impl, torch.ones(4, 3, dtype=I64)), TypeError,
            "a floating-point tensor", "dtype int64"),
        rej("states", "0-D tensor", lambda impl: noise(impl, torch.tensor(1.0)), ValueError,
            "a batch (B, ...) with B >= 1", "shape ()"),
        rej("states", "empty batch", lambda impl: noise(impl, rn(0, 3)), ValueError, "a batch (B, ...) with B >= 1",
            "shape (0, 3)"),
        rej("value_fn", "not callable", lambda impl: noise(impl, fn=None), TypeError, "a callable", "NoneType"),
        rej("value_fn", "values of another batch size", lambda impl: noise(impl, fn=lambda s: s.sum()), ValueError,
            "values of shape (4, ...) for states of batch 4", "shape ()"),
        rej("eps", "negative eps", lambda impl: noise(impl, eps=-0.1), ValueError, "a finite number >= 0", "-0.1"),
        rej("eps", "NaN eps", lambda impl: noise(impl, eps=math.nan), ValueError, "a finite number >= 0", "nan"),
        rej("steps", "zero steps", lambda impl: noise(impl, steps=0), ValueError, "an int >= 1", "0"),
        rej("steps", "not an int", lambda impl: noise(impl, steps=1.5), TypeError, "an int >= 1", "float 1.5"),
        rej("norm", "unknown norm", lambda impl: noise(impl, norm="l1"), ValueError, "one of 'l2', 'linf'", "'l1'"),
        rej("direction", "unknown direction", lambda impl: noise(impl, direction="up"), ValueError,
            "one of 'increase', 'decrease'", "'up'"),
        rej("step_size", "negative step", lambda impl: noise(impl, step_size=-1.0), ValueError,
            "a finite number >= 0", "-1.0"),
        _kernel_by_name(op, lambda impl: noise(impl)),
        Accepted("a single state (B=1)", lambda impl: noise(impl, rn(1, 3))),
        Accepted("eps = 0 (the smallest allowed: states unchanged)", lambda impl: noise(impl, eps=0.0)),
        Accepted("a value that does not depend on the states (zero gradient)",
                 lambda impl: noise(impl, fn=lambda s: torch.zeros(s.shape[0]), steps=3)),
        Accepted("zero states (gradient 0 at the origin), linf, PGD with a random start",
                 lambda impl: noise(impl, torch.zeros(4, 3), norm="linf", steps=3, random_start=True,
                                    generator=torch.Generator().manual_seed(0))),
        Accepted("non-contiguous (B, ...) states, decreasing", lambda impl: noise(impl, strided(rn(4, 2, 3)),
                                                                                  fn=lambda s: s.sum((1, 2)),
                                                                                  direction="decrease")),
    ]


# ---- param_repulsion ----

def _param_repulsion():
    op = "param_repulsion"
    rej = _rejecter(op)

    def rep(impl, params=None, anchors=None, **kw):
        params = [rn(3, 2), rn(4)] if params is None else params
        anchors = [rn(3, 2, seed=1), rn(4, seed=1)] if anchors is None else anchors
        return regops.param_repulsion(params, anchors, impl=impl, **kw)

    return [
        rej("params[0]", "wrong dtype (int64)", lambda impl: rep(impl, [torch.ones(3, dtype=I64)],
                                                                 [torch.ones(3)]),
            TypeError, "dtype in (float32, float64, bfloat16, float16)", "int64"),
        rej("params", "empty list", lambda impl: rep(impl, [], [rn(3)]), ValueError, "at least one tensor",
            "an empty list"),
        rej("params[0]", "empty tensor", lambda impl: rep(impl, [rn(0)], [rn(0)]), ValueError,
            "a tensor with at least one element", "shape (0,)"),
        rej("params[1]", "dtype other than params[0]'s", lambda impl: rep(impl, [rn(3, 2), rn(4).double()]),
            TypeError, "dtype float32 (as params[0])", "dtype float64"),
        rej("anchors", "one anchor per param missing", lambda impl: rep(impl, anchors=[rn(3, 2)]), ValueError,
            "2 tensors per set (one per param)", "1"),
        rej("anchors[1]", "shape other than the param's", lambda impl: rep(impl, anchors=[rn(3, 2), rn(5)]),
            ValueError, "shape (4,) (as params[1])", "shape (5,)"),
        rej("anchors[0]", "dtype other than the param's", lambda impl: rep(impl, anchors=[rn(3, 2, dtype=F64)]
                                                                           + [rn(4, dtype=F64)]),
            TypeError, "dtype float32 (as params[0])", "dtype float64"),
        rej("anchors[1]", "device mix (CPU + meta)", lambda impl: rep(impl, anchors=[rn(3, 2), on_meta(rn(4))]),
            RuntimeError, "device cpu (as the first anchor)", "device meta"),
        rej("anchors", "empty list", lambda impl: rep(impl, anchors=[]), ValueError, "at least one tensor",
            "an empty list"),
        rej("anchors[1]", "anchor sets of different lengths", lambda impl: rep(impl, anchors=[[rn(3, 2), rn(4)],
                                                                                             [rn(3, 2)]]),
            ValueError, "2 tensors (as anchors[0])", "1 tensors"),
        rej("params", "params equal to the anchors (kind='inverse': R = 0)",
            lambda impl: rep(impl, [rn(3, 2), rn(4)], [rn(3, 2), rn(4)]), ValueError,
            "params that differ from the anchors", "R = 0"),
        rej("params[0]", "NaN param", lambda impl: rep(impl, [with_nan(rn(3, 2)), rn(4)]), ValueError,
            "finite values", "nan at index (0, 0)"),
        rej("kind", "unknown kind", lambda impl: rep(impl, kind="l1"), ValueError, "one of 'inverse', 'exp', 'neg_l2'",
            "'l1'"),
        rej("normalize", "unknown normalization", lambda impl: rep(impl, normalize="sum"), ValueError,
            "one of 'official', 'mean'", "'sum'"),
        rej("gamma", "NaN", lambda impl: rep(impl, gamma=math.nan), ValueError, "a finite number", "nan"),
        Accepted("a single one-element param", lambda impl: rep(impl, [torch.ones(1)], [torch.zeros(1)])),
        Accepted("params equal to the anchors, kinds 'exp' and 'neg_l2' (R = 0)",
                 lambda impl: (rep(impl, [rn(3)], [rn(3)], kind="exp"), rep(impl, [rn(3)], [rn(3)], kind="neg_l2"))),
        Accepted("K = 3 anchor sets, normalize='mean'",
                 lambda impl: rep(impl, anchors=[[rn(3, 2, seed=k), rn(4, seed=k)] for k in (1, 2, 3)],
                                  normalize="mean")),
        Accepted("non-contiguous params, bfloat16", lambda impl: rep(impl, [strided(rn(3, 2)).bfloat16()],
                                                                     [rn(3, 2, seed=1).bfloat16()])),
        Accepted("huge distances (1e18: squares near float32's largest)",
                 lambda impl: rep(impl, [torch.full((3,), 1e18)], [torch.full((3,), -1e18)], kind="exp")),
    ]


# ---- contractive penalties (reference only) ----

class _Encoder(nn.Module):
    def __init__(self, d=3, h=2):
        super().__init__()
        self.linear = nn.Linear(d, h)
        with torch.no_grad():
            self.linear.weight.copy_(rn(h, d, seed=3))
            self.linear.bias.copy_(rn(h, seed=4))

    def forward(self, x):
        return torch.sigmoid(self.linear(x))


def _contractive_penalty():
    op = "contractive_penalty"
    rej = _rejecter(op)

    def pen(impl, x=None, fn=None, **kw):
        return regops.contractive_penalty(rn(4, 3) if x is None else x, _Encoder() if fn is None else fn, impl=impl,
                                          **kw)

    return [
        rej("x", "not a tensor", lambda impl: pen(impl, [[0.0]]), TypeError, "a torch.Tensor", "list"),
        rej("x", "wrong dtype (int64)", lambda impl: pen(impl, torch.ones(4, 3, dtype=I64)), TypeError,
            "a floating-point tensor", "dtype int64"),
        rej("x", "0-D tensor", lambda impl: pen(impl, torch.tensor(1.0)), ValueError, "a batch (B, ...)",
            "a 0-D tensor"),
        rej("x", "empty batch", lambda impl: pen(impl, rn(0, 3)), ValueError, "a batch (B, ...) with B >= 1",
            "shape (0, 3)"),
        rej("x", "NaN entry", lambda impl: pen(impl, with_nan(rn(4, 3))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("fn", "not callable", lambda impl: pen(impl, fn=3), TypeError, "a callable", "int"),
        rej("fn", "outputs of another batch size", lambda impl: pen(impl, fn=lambda x: x.sum(0), method="hutchinson"),
            ValueError, "a tensor of shape (4, ...) for x of batch 4", "shape (3,)"),
        rej("fn", "integer outputs", lambda impl: pen(impl, fn=lambda x: (x > 0).long()), TypeError,
            "a floating-point output", "dtype int64"),
        rej("method", "unknown method", lambda impl: pen(impl, method="fd"), ValueError,
            "one of 'exact', 'hutchinson'", "'fd'"),
        rej("reduction", "unknown reduction", lambda impl: pen(impl, reduction="max"), ValueError,
            "one of 'mean', 'sum', 'none'", "'max'"),
        rej("n_samples", "zero draws", lambda impl: pen(impl, n_samples=0), ValueError, "an int >= 1", "0"),
        rej("n_samples", "not an int", lambda impl: pen(impl, n_samples=2.0), TypeError, "an int >= 1",
            "float 2.0"),
        rej("generator", "not a generator", lambda impl: pen(impl, generator=0), TypeError,
            "a torch.Generator or None", "int"),
        _kernel_by_name(op, lambda impl: pen(impl)),
        Accepted("a single sample (B=1)", lambda impl: pen(impl, rn(1, 3))),
        Accepted("a constant function (zero Jacobian), both methods",
                 lambda impl: (pen(impl, fn=lambda x: torch.zeros(x.shape[0], 2)),
                               pen(impl, fn=lambda x: 0 * x, method="hutchinson"))),
        Accepted("saturated units (x1e4)", lambda impl: pen(impl, rn(4, 3) * 1e4)),
        Accepted("non-contiguous (B, ...) inputs, Hutchinson with a generator",
                 lambda impl: pen(impl, strided(rn(4, 2, 3)), lambda x: x.sum(1), method="hutchinson", n_samples=2,
                                  generator=torch.Generator().manual_seed(0), reduction="none")),
    ]


def _sigmoid_ae_jacobian_penalty():
    op = "sigmoid_ae_jacobian_penalty"
    rej = _rejecter(op)

    def pen(impl, x=None, We=None, be=None, Wd=None, **kw):
        return regops.sigmoid_ae_jacobian_penalty(rn(4, 3) if x is None else x, rn(2, 3, seed=1) if We is None else We,
                                                  rn(2, seed=2) if be is None else be,
                                                  rn(3, 2, seed=3) if Wd is None else Wd, impl=impl, **kw)

    return [
        rej("x", "wrong dtype (int64)", lambda impl: pen(impl, torch.ones(4, 3, dtype=I64)), TypeError,
            "a floating-point tensor", "dtype int64"),
        rej("x", "3-D batch", lambda impl: pen(impl, rn(4, 3, 1)), ValueError, "a 2-D batch (B, D)", "shape (4, 3, 1)"),
        rej("x", "empty batch", lambda impl: pen(impl, rn(0, 3)), ValueError, "a batch (B, D) with B >= 1",
            "shape (0, 3)"),
        rej("x", "NaN entry", lambda impl: pen(impl, with_nan(rn(4, 3))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("W_enc", "not a tensor", lambda impl: pen(impl, We=[[0.0]]), TypeError, "a torch.Tensor", "list"),
        rej("W_enc", "input size other than x's (a (D, H) weight)", lambda impl: pen(impl, We=rn(3, 2)), ValueError,
            "shape (H, 3), the encoder weight as nn.Linear(D, H) stores it", "shape (3, 2)"),
        rej("b_enc", "shape other than (H,)", lambda impl: pen(impl, be=rn(3)), ValueError, "shape (2,)",
            "shape (3,)"),
        rej("W_dec", "shape other than (D, H)", lambda impl: pen(impl, Wd=rn(2, 3)), ValueError, "shape (3, 2)",
            "shape (2, 3)"),
        rej("W_enc", "dtype other than x's", lambda impl: pen(impl, We=rn(2, 3, dtype=F64)), TypeError,
            "dtype float32 (as x)", "dtype float64"),
        rej("W_dec", "device mix (CPU + meta)", lambda impl: pen(impl, Wd=on_meta(rn(3, 2))), RuntimeError,
            "device cpu (as x)", "device meta"),
        rej("W_dec", "non-finite weights", lambda impl: pen(impl, Wd=with_nan(rn(3, 2))), ValueError,
            "finite values", "nan at index (0, 0)"),
        rej("reduction", "unknown reduction", lambda impl: pen(impl, reduction="max"), ValueError,
            "one of 'mean', 'sum', 'none'", "'max'"),
        _kernel_by_name(op, lambda impl: pen(impl)),
        Accepted("a single sample, one hidden unit (B=1, H=1)",
                 lambda impl: pen(impl, rn(1, 3), rn(1, 3), rn(1), rn(3, 1))),
        Accepted("all-zero weights", lambda impl: pen(impl, We=torch.zeros(2, 3), Wd=torch.zeros(3, 2))),
        Accepted("saturated units (x1e4): value 0", lambda impl: pen(impl, rn(4, 3) * 1e4, reduction="none")),
        Accepted("non-contiguous inputs, float16", lambda impl: pen(impl, strided(rn(4, 3)).half(),
                                                                    rn(2, 3, seed=1).half(), rn(2, seed=2).half(),
                                                                    rn(3, 2, seed=3).half())),
    ]


def _cae_encoder_penalty():
    op = "cae_encoder_penalty"
    rej = _rejecter(op)
    h = lambda: torch.sigmoid(rn(4, 2))  # noqa: E731

    def pen(impl, hidden=None, W=None):
        return regops.cae_encoder_penalty(h() if hidden is None else hidden, rn(2, 3) if W is None else W, impl=impl)

    return [
        rej("h", "wrong dtype (int64)", lambda impl: pen(impl, torch.ones(4, 2, dtype=I64)), TypeError,
            "a floating-point tensor", "dtype int64"),
        rej("h", "3-D tensor", lambda impl: pen(impl, h()[:, :, None]), ValueError,
            "a 2-D batch of sigmoid encoder outputs (B, H)", "shape (4, 2, 1)"),
        rej("h", "empty batch", lambda impl: pen(impl, h()[:0]), ValueError, "a batch (B, H) with B >= 1",
            "shape (0, 2)"),
        rej("h", "values outside [0, 1] (a pre-activation)", lambda impl: pen(impl, rn(4, 2) * 3), ValueError,
            "sigmoid outputs in [0, 1]", "values in ["),
        rej("h", "NaN entry", lambda impl: pen(impl, with_nan(h())), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("W", "not a tensor", lambda impl: pen(impl, W=[[0.0]]), TypeError, "a torch.Tensor", "list"),
        rej("W", "1-D weight", lambda impl: pen(impl, W=rn(2)), ValueError, "a 2-D encoder weight (H, D)",
            "shape (2,)"),
        rej("W", "a (D, H) weight (the tutorial's layout)", lambda impl: pen(impl, W=rn(3, 2)), ValueError,
            "shape (2, D): W.shape[0] == h.shape[1] = 2", "shape (3, 2)"),
        rej("W", "dtype other than h's", lambda impl: pen(impl, W=rn(2, 3, dtype=F64)), TypeError,
            "dtype float32 (as h)", "dtype float64"),
        _kernel_by_name(op, lambda impl: pen(impl)),
        Accepted("a single sample, one unit (B=1, H=1)", lambda impl: pen(impl, h()[:1, :1], rn(1, 3))),
        Accepted("saturated outputs (exactly 0 and 1)", lambda impl: pen(impl, torch.tensor([[0.0, 1.0]] * 4))),
        Accepted("non-contiguous h, bfloat16", lambda impl: pen(impl, strided(h()).bfloat16(), rn(2, 3).bfloat16())),
    ]


# ---- local error of a neural ODE step (reference only) ----

def _decay(t, y):
    return -y + torch.sin(t)


def _zero_field_error(impl):
    y = leaf(torch.zeros(3))
    return grads_of(regops.local_error_penalty(lambda t, u: 0 * u, 0.0, y, 0.1, detach="none", impl=impl), y)


def _local_error_penalty():
    op = "local_error_penalty"
    rej = _rejecter(op)

    def pen(impl, f=_decay, t=0.0, y=None, dt=0.1, **kw):
        return regops.local_error_penalty(f, t, rn(4, 3) if y is None else y, dt, impl=impl, **kw)

    return [
        rej("solver", "unknown solver", lambda impl: pen(impl, solver="rk4"), ValueError,
            "one of 'tsit5', 'dopri5'", "'rk4'"),
        rej("detach", "unknown rule", lambda impl: pen(impl, detach="all"), ValueError, "one of 'official', 'none'",
            "'all'"),
        rej("y", "not a tensor", lambda impl: pen(impl, y=[0.0]), TypeError, "a torch.Tensor", "list"),
        rej("y", "wrong dtype (int64)", lambda impl: pen(impl, y=torch.ones(3, dtype=I64)), TypeError,
            "a floating-point tensor", "int64"),
        rej("y", "empty state", lambda impl: pen(impl, y=rn(0, 3)), ValueError, "a non-empty state", "shape (0, 3)"),
        rej("y", "NaN entry", lambda impl: pen(impl, y=with_nan(rn(4, 3))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("f", "not callable", lambda impl: pen(impl, f=None), TypeError, "a callable f(t, y)", "NoneType"),
        rej("f", "f returns another shape", lambda impl: pen(impl, f=lambda t, y: y[0]), ValueError,
            "f(t, y) to return y's shape (4, 3)", "shape (3,)"),
        rej("f", "f returns another dtype", lambda impl: pen(impl, f=lambda t, y: y.double()), TypeError,
            "f(t, y) to return y's dtype float32", "dtype float64"),
        rej("f", "f returns a non-tensor", lambda impl: pen(impl, f=lambda t, y: 0.0), TypeError,
            "f(t, y) to return a torch.Tensor", "float"),
        rej("t", "NaN time", lambda impl: pen(impl, t=math.nan), ValueError, "a finite time", "nan"),
        rej("t", "a 1-D tensor time", lambda impl: pen(impl, t=torch.zeros(1)), TypeError,
            "a finite time (a number or 0-dim tensor)", "a tensor of shape (1,)"),
        rej("dt", "zero step", lambda impl: pen(impl, dt=0.0), ValueError, "a finite nonzero step", "0.0"),
        rej("dt", "infinite step (a 0-dim tensor)", lambda impl: pen(impl, dt=torch.tensor(math.inf)), ValueError,
            "a finite nonzero step", "inf"),
        rej("atol", "zero tolerance", lambda impl: pen(impl, atol=0.0), ValueError, "a finite positive tolerance",
            "0.0"),
        rej("rtol", "negative tolerance", lambda impl: pen(impl, rtol=-1.0), ValueError,
            "a finite positive tolerance", "-1.0"),
        _kernel_by_name(op, lambda impl: pen(impl)),
        Accepted("a one-element state", lambda impl: pen(impl, y=rn(1))),
        Accepted("a zero state of a zero field (error 0), with the gradient (the square root's subgradient)",
                 _zero_field_error),
        Accepted("a backward step (dt < 0), dopri5", lambda impl: pen(impl, dt=-0.5, solver="dopri5")),
        Accepted("tiny tolerances (atol = rtol = 1e-30)", lambda impl: pen(impl, atol=1e-30, rtol=1e-30)),
        Accepted("non-contiguous state, tensor t and dt, detach='none'",
                 lambda impl: pen(impl, t=torch.tensor(1.0), y=strided(rn(4, 3)), dt=torch.tensor(0.2),
                                  detach="none")),
    ]


def _sample_regularization_time():
    op = "sample_regularization_time"
    rej = _rejecter(op)

    def draw(impl, t0=0.0, t1=1.0, **kw):
        kw.setdefault("generator", torch.Generator().manual_seed(0))
        return regops.sample_regularization_time(t0, t1, impl=impl, **kw)

    return [
        rej("t0", "NaN start", lambda impl: draw(impl, t0=math.nan), ValueError, "a finite start time", "nan"),
        rej("t0", "a string", lambda impl: draw(impl, t0="0"), TypeError, "a finite start time", "str '0'"),
        rej("t1", "infinite end", lambda impl: draw(impl, t1=math.inf), ValueError, "a finite end time", "inf"),
        rej("t1", "end before start", lambda impl: draw(impl, t0=1.0, t1=1.0), ValueError,
            "an end time greater than t0 = 1.0", "1.0"),
        rej("t1", "an interval that overflows float64", lambda impl: draw(impl, t0=-1e308, t1=1e308), ValueError,
            "an interval t1 - t0 that is finite in float64", "1e+308"),
        rej("generator", "not a generator", lambda impl: draw(impl, generator=0), TypeError,
            "a torch.Generator or None", "int"),
        _kernel_by_name(op, lambda impl: draw(impl)),
        Accepted("the smallest interval (t1 = t0 + 5e-324)", lambda impl: draw(impl, 0.0, 5e-324)),
        Accepted("negative times, 0-dim tensor bounds", lambda impl: draw(impl, torch.tensor(-3.0),
                                                                          torch.tensor(-2.0))),
        Accepted("the global generator", lambda impl: draw(impl, generator=None)),
    ]


# ---- VGNN: gaussian_kl, reparameterize, select_present_nodes (reference only) ----

def _gaussian_kl():
    op = "gaussian_kl"
    rej = _rejecter(op)

    def kl(impl, mu=None, logvar=None, **kw):
        return regops.gaussian_kl(rn(5, 3) if mu is None else mu, rn(5, 3, seed=1) if logvar is None else logvar,
                                  impl=impl, **kw)

    return [
        rej("mu", "wrong dtype (int64)", lambda impl: kl(impl, torch.ones(5, 3, dtype=I64)), TypeError,
            "a floating-point tensor", "int64"),
        rej("mu", "1-D tensor", lambda impl: kl(impl, rn(5), rn(5)), ValueError, "a (N, d) or (B, N, d) tensor",
            "shape (5,)"),
        rej("logvar", "shape other than mu's", lambda impl: kl(impl, logvar=rn(5, 2)), ValueError,
            "shape (5, 3) (as mu)", "shape (5, 2)"),
        rej("logvar", "dtype other than mu's", lambda impl: kl(impl, logvar=rn(5, 3, dtype=F64)), TypeError,
            "dtype float32 (as mu)", "float64"),
        rej("logvar", "device mix (CPU + meta)", lambda impl: kl(impl, logvar=on_meta(rn(5, 3))), RuntimeError,
            "device cpu (as mu)", "device meta"),
        rej("logvar", "NaN entry", lambda impl: kl(impl, logvar=with_nan(rn(5, 3))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("reduction", "unknown reduction", lambda impl: kl(impl, reduction="max"), ValueError,
            "one of 'official', 'sum', 'mean', 'none'", "'max'"),
        rej("feature_count", "zero features", lambda impl: kl(impl, feature_count=0), ValueError, "an int >= 1",
            "0"),
        rej("feature_count", "a bool", lambda impl: kl(impl, feature_count=True), TypeError, "an int >= 1",
            "bool True"),
        rej("mu", "no nodes with reduction='official'", lambda impl: kl(impl, rn(0, 3), rn(0, 3)), ValueError,
            "at least one node per patient (the official divisor N) or a feature_count", "shape (0, 3)"),
        rej("mu", "no entries with reduction='mean'", lambda impl: kl(impl, rn(0, 3), rn(0, 3), reduction="mean"),
            ValueError, "at least one entry for reduction='mean'", "shape (0, 3)"),
        _kernel_by_name(op, lambda impl: kl(impl)),
        Accepted("a single node (1, 1)", lambda impl: kl(impl, rn(1, 1), rn(1, 1, seed=1))),
        Accepted("the prior itself (mu = logvar = 0: KL 0)", lambda impl: kl(impl, torch.zeros(5, 3),
                                                                             torch.zeros(5, 3))),
        Accepted("very negative log-variances (-80)", lambda impl: kl(impl, logvar=torch.full((5, 3), -80.0))),
        Accepted("no nodes, with feature_count or reduction='sum'",
                 lambda impl: (kl(impl, rn(0, 3), rn(0, 3), feature_count=4),
                               kl(impl, rn(2, 0, 3), rn(2, 0, 3), reduction="sum"))),
        Accepted("non-contiguous (B, N, d), float16", lambda impl: kl(impl, strided(rn(2, 5, 3)).half(),
                                                                      rn(2, 5, 3, seed=1).half())),
    ]


def _reparameterize():
    op = "reparameterize"
    rej = _rejecter(op)

    def z(impl, mu=None, logvar=None, **kw):
        kw.setdefault("generator", torch.Generator().manual_seed(0))
        return regops.reparameterize(rn(5, 3) if mu is None else mu, rn(5, 3, seed=1) if logvar is None else logvar,
                                     impl=impl, **kw)

    return [
        rej("mu", "wrong dtype (int64)", lambda impl: z(impl, torch.ones(5, 3, dtype=I64)), TypeError,
            "a floating-point tensor", "int64"),
        rej("logvar", "shape other than mu's", lambda impl: z(impl, logvar=rn(5, 2)), ValueError,
            "shape (5, 3) (as mu)", "shape (5, 2)"),
        rej("logvar", "dtype other than mu's", lambda impl: z(impl, logvar=rn(5, 3, dtype=F64)), TypeError,
            "dtype float32 (as mu)", "float64"),
        rej("logvar", "device mix (CPU + meta)", lambda impl: z(impl, logvar=on_meta(rn(5, 3))), RuntimeError,
            "device cpu (as mu)", "device meta"),
        rej("mu", "NaN entry", lambda impl: z(impl, with_nan(rn(5, 3))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("logvar", "NaN entry", lambda impl: z(impl, logvar=with_nan(rn(5, 3))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("training", "not a bool", lambda impl: z(impl, training=1), TypeError, "a bool", "int 1"),
        rej("generator", "not a generator", lambda impl: z(impl, generator=0), TypeError, "None or a torch.Generator",
            "int"),
        _kernel_by_name(op, lambda impl: z(impl)),
        Accepted("a single entry", lambda impl: z(impl, rn(1), rn(1, seed=1))),
        Accepted("an empty tensor", lambda impl: z(impl, rn(0, 3), rn(0, 3))),
        Accepted("very negative log-variances (-100: std 0)", lambda impl: z(impl, logvar=torch.full((5, 3), -100.0))),
        Accepted("eval mode (training=False returns mu)", lambda impl: z(impl, training=False)),
        Accepted("non-contiguous, bfloat16", lambda impl: z(impl, strided(rn(5, 3)).bfloat16(),
                                                            rn(5, 3, seed=1).bfloat16())),
    ]


def _select_present_nodes():
    op = "select_present_nodes"
    rej = _rejecter(op)

    def sel(impl, stats=None, hot=None, **kw):
        return regops.select_present_nodes(rn(6, 3) if stats is None else stats, ints(0, 1, 0, 1) if hot is None
                                           else hot, impl=impl, **kw)

    return [
        rej("node_stats", "1-D tensor", lambda impl: sel(impl, rn(6)), ValueError, "a 2-D or 3-D tensor",
            "1-D tensor"),
        rej("multi_hot", "2-D codes for one patient", lambda impl: sel(impl, hot=ints(0, 1, 0, 1)[None]), ValueError,
            "a 1-D tensor", "2-D tensor"),
        rej("multi_hot", "wrong dtype (float32)", lambda impl: sel(impl, hot=ints(0, 1, 0, 1).float()), TypeError,
            "a bool or integer tensor of 0/1", "float32"),
        rej("multi_hot", "a value other than 0/1", lambda impl: sel(impl, hot=ints(0, 2, 0, 1)), ValueError,
            "values 0 or 1", "2 at index (1,)"),
        rej("multi_hot", "more features than nodes", lambda impl: sel(impl, hot=ints(0, 1, 0, 1, 1, 0)), ValueError,
            "at most 5 features (num_nodes 6 − offset 1)", "6 features"),
        rej("multi_hot", "mismatched batch sizes", lambda impl: sel(impl, rn(2, 6, 3), ints(0, 1, 0, 1)[None]),
            ValueError, "2 rows (one per patient of node_stats)", "shape (1, 4)"),
        rej("multi_hot", "device mix (CPU + meta)", lambda impl: sel(impl, hot=on_meta(ints(0, 1, 0, 1))),
            RuntimeError, "device cpu (as node_stats)", "device meta"),
        rej("offset", "negative offset", lambda impl: sel(impl, offset=-1), ValueError, "an int >= 0", "-1"),
        rej("offset", "a bool", lambda impl: sel(impl, offset=True), TypeError, "an int >= 0", "bool True"),
        _kernel_by_name(op, lambda impl: sel(impl)),
        Accepted("no code present (an empty selection)", lambda impl: sel(impl, hot=torch.zeros(4, dtype=I64))),
        Accepted("a single present code of a single feature", lambda impl: sel(impl, rn(2, 1), ints(1))),
        Accepted("every code present, offset 0, bool codes", lambda impl: sel(impl, hot=torch.ones(6, dtype=torch.bool),
                                                                              offset=0)),
        Accepted("a batch of patients, non-contiguous statistics",
                 lambda impl: sel(impl, strided(rn(2, 6, 3)), ints(0, 1, 0, 1, 1, 1, 0, 0).reshape(2, 4))),
    ]


# ---- LSA: layer_relative_error, lsa.most_vulnerable_layers, lsa.layerwise_penalty (reference only) ----

def _layer_relative_error():
    op = "layer_relative_error"
    rej = _rejecter(op)

    def err(impl, clean=None, adv=None, **kw):
        return regops.layer_relative_error(rn(4, 3) if clean is None else clean,
                                           rn(4, 3, seed=1) if adv is None else adv, impl=impl, **kw)

    return [
        rej("acts_clean", "wrong dtype (int64)", lambda impl: err(impl, torch.ones(4, 3, dtype=I64)), TypeError,
            "a floating-point tensor", "int64"),
        rej("acts_adv", "shape other than acts_clean's", lambda impl: err(impl, adv=rn(4, 2)), ValueError,
            "shape (4, 3) (as acts_clean)", "shape (4, 2)"),
        rej("acts_adv", "dtype other than acts_clean's", lambda impl: err(impl, adv=rn(4, 3, dtype=F64)), TypeError,
            "dtype float32 (as acts_clean)", "float64"),
        rej("acts_adv", "device mix (CPU + meta)", lambda impl: err(impl, adv=on_meta(rn(4, 3))), RuntimeError,
            "device cpu (as acts_clean)", "device meta"),
        rej("acts_adv", "NaN entry", lambda impl: err(impl, adv=with_nan(rn(4, 3))), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("acts_clean", "zero clean activation with eps = 0", lambda impl: err(impl, torch.zeros(4, 3)), ValueError,
            "an activation of nonzero norm", "norm 0"),
        rej("acts_clean", "a zero sample with per_sample=True, eps = 0",
            lambda impl: err(impl, torch.cat([rn(3, 3), torch.zeros(1, 3)]), per_sample=True), ValueError,
            "an activation of nonzero norm", "norm 0 (sample 3)"),
        rej("acts_clean", "0-D activations with per_sample=True",
            lambda impl: err(impl, torch.tensor(1.0), torch.tensor(2.0), per_sample=True), ValueError,
            "a batch (B, ...) for per_sample=True", "a 0-D tensor"),
        rej("per_sample", "not a bool", lambda impl: err(impl, per_sample=1), TypeError, "a bool", "int 1"),
        rej("eps", "negative eps", lambda impl: err(impl, eps=-1.0), ValueError, "a finite number >= 0", "-1.0"),
        _kernel_by_name(op, lambda impl: err(impl)),
        Accepted("a single element", lambda impl: err(impl, rn(1), rn(1, seed=1))),
        Accepted("eps = 0 (the smallest allowed) on nonzero activations, per sample",
                 lambda impl: err(impl, per_sample=True)),
        Accepted("zero clean and perturbed activations with a tiny eps (1e-30)",
                 lambda impl: err(impl, torch.zeros(4, 3), torch.zeros(4, 3), eps=1e-30)),
        Accepted("an empty batch, per sample", lambda impl: err(impl, rn(0, 3), rn(0, 3), per_sample=True)),
        Accepted("equal activations (error 0), with the gradient", lambda impl: _relative_error_grad(impl)),
        Accepted("non-contiguous, float16", lambda impl: err(impl, strided(rn(4, 3)).half(), rn(4, 3, seed=1).half())),
    ]


def _relative_error_grad(impl):
    clean, adv = leaf(rn(4, 3)), leaf(rn(4, 3))
    return grads_of(regops.layer_relative_error(clean, adv, impl=impl), clean, adv)


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ELU())
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(rn(*p.shape, seed=10 + i))
    return model


def _lsa_most_vulnerable_layers():
    op = "lsa.most_vulnerable_layers"
    rej = _rejecter(op)
    x = lambda: rn(4, 3)  # noqa: E731

    def top(impl, model=None, xc=None, xa=None, k=1, **kw):
        xc = x() if xc is None else xc
        return regops.lsa.most_vulnerable_layers(_model() if model is None else model, xc,
                                                 xc + 0.1 if xa is None else xa, k, impl=impl, **kw)

    dead = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    with torch.no_grad():
        dead[0].weight.zero_()
        dead[0].bias.fill_(-1.0)
    return [
        rej("model", "not a module", lambda impl: top(impl, model=lambda t: t), TypeError, "a torch.nn.Module",
            "function"),
        rej("x", "not a tensor", lambda impl: top(impl, xc=[[0.0]], xa=x()), TypeError, "a torch.Tensor", "list"),
        rej("x_adv", "shape other than x's", lambda impl: top(impl, xa=rn(3, 3)), ValueError, "shape (4, 3) (as x)",
            "shape (3, 3)"),
        rej("x_adv", "device mix (CPU + meta)", lambda impl: top(impl, xa=on_meta(x())), RuntimeError,
            "device cpu (as x)", "device meta"),
        rej("k", "zero layers", lambda impl: top(impl, k=0), ValueError, "an int >= 1", "0"),
        rej("k", "a bool", lambda impl: top(impl, k=True), TypeError, "an int >= 1", "bool True"),
        rej("k", "more layers than recorded", lambda impl: top(impl, k=3), ValueError,
            "an int in [1, 2] (the recorded layer calls)", "3"),
        rej("eps", "negative eps", lambda impl: top(impl, eps=-1.0), ValueError, "a finite number >= 0", "-1.0"),
        rej("module_types", "not module classes", lambda impl: top(impl, module_types=("ReLU",)), TypeError,
            "a torch.nn.Module subclass or a non-empty tuple of them", "('ReLU',)"),
        rej("model", "no module of the probed types", lambda impl: top(impl, model=nn.Linear(3, 3)), ValueError,
            "at least one module of type ReLU, ELU, LeakyReLU", "none"),
        rej("layer '1' on x", "a dead activation (all zero on x) with eps = 0", lambda impl: top(impl, model=dead),
            ValueError, "an activation of nonzero norm", "norm 0"),
        _kernel_by_name(op, lambda impl: top(impl)),
        Accepted("a batch of one, every layer", lambda impl: top(impl, xc=rn(1, 3), k=2)),
        Accepted("x_adv equal to x (errors 0)", lambda impl: top(impl, xa=x(), k=2)),
        Accepted("a dead activation with a tiny eps (1e-30)", lambda impl: top(impl, model=dead, eps=1e-30)),
        Accepted("non-contiguous inputs", lambda impl: top(impl, xc=strided(x()), xa=strided(x() + 0.1))),
    ]


def _lsa_layerwise_penalty():
    op = "lsa.layerwise_penalty"
    rej = _rejecter(op)
    x = lambda: rn(4, 3)  # noqa: E731

    def pen(impl, layers=("1", "3"), xc=None, xa=None, model=None, **kw):
        xc = x() if xc is None else xc
        return regops.lsa.layerwise_penalty(_model() if model is None else model, xc, xc + 0.1 if xa is None else xa,
                                            layers, impl=impl, **kw)

    return [
        rej("model", "not a module", lambda impl: pen(impl, model=lambda t: t), TypeError, "a torch.nn.Module",
            "function"),
        rej("x_adv", "shape other than x's", lambda impl: pen(impl, xa=rn(3, 3)), ValueError, "shape (4, 3) (as x)",
            "shape (3, 3)"),
        rej("layers", "a string", lambda impl: pen(impl, "1"), TypeError, "a sequence of layer names", "str"),
        rej("layers", "empty", lambda impl: pen(impl, []), ValueError, "at least one layer name",
            "an empty sequence"),
        rej("layers[0]", "not a string", lambda impl: pen(impl, [1]), TypeError, "a str", "int"),
        rej("layers", "duplicate names", lambda impl: pen(impl, ["1", "1"]), ValueError, "distinct names",
            "'1' more than once"),
        rej("layers", "unknown module name", lambda impl: pen(impl, ["relu"]), ValueError,
            "names of modules of model ('0', '1', '2', '3')", "'relu'"),
        rej("layers", "a call index past the module's calls", lambda impl: pen(impl, ["1#1"]), ValueError,
            "a call made by the forward (module '1' was called 1 times)", "'1#1'"),
        rej("gamma", "a list of the wrong length", lambda impl: pen(impl, gamma=[1.0]), ValueError,
            "a number or 2 numbers (one per layer)", "1 numbers"),
        rej("gamma", "negative weight", lambda impl: pen(impl, gamma=-1.0), ValueError,
            "a finite number >= 0 or a sequence of them", "-1.0"),
        rej("eps", "negative eps", lambda impl: pen(impl, eps=-1.0), ValueError, "a finite number >= 0", "-1.0"),
        rej("return_outputs", "not a bool", lambda impl: pen(impl, return_outputs=1), TypeError, "a bool", "int 1"),
        rej("layer '1' on x", "a dead activation (all zero on x) with eps = 0",
            lambda impl: pen(impl, xc=-torch.ones(4, 3), model=_dead_relu_model()), ValueError,
            "an activation of nonzero norm", "norm 0"),
        _kernel_by_name(op, lambda impl: pen(impl)),
        Accepted("a batch of one", lambda impl: pen(impl, xc=rn(1, 3))),
        Accepted("x_adv equal to x (penalty 0), with the gradient", _layerwise_grad),
        Accepted("a dead activation with a tiny eps (1e-30)",
                 lambda impl: pen(impl, xc=-torch.ones(4, 3), model=_dead_relu_model(), eps=1e-30)),
        Accepted("per-layer gamma with a zero weight, non-layer module names, return_outputs",
                 lambda impl: pen(impl, ["0", "2"], gamma=[0.0, 2.0], return_outputs=True)),
        Accepted("non-contiguous inputs", lambda impl: pen(impl, xc=strided(x()), xa=strided(x() + 0.1))),
    ]


def _dead_relu_model():
    model = _model()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)
    return model


def _layerwise_grad(impl):
    model = _model()
    x = rn(4, 3)
    value = regops.lsa.layerwise_penalty(model, x, x.clone(), ["1", "3"], impl=impl)
    return grads_of(value, *model.parameters())


# ---- CoRe context regularizers, DORNet, RoMaP (reference only) ----

def _context_embedding_reg():
    op = "context_embedding_reg"
    rej = _rejecter(op)
    E = lambda seed=0: rn(2, 6, 4, seed=seed)  # noqa: E731

    def reg(impl, a=None, b=None, concept=2, eot=4, **kw):
        return regops.context_embedding_reg(E() if a is None else a, E(1) if b is None else b, concept,
                                            eot_index=eot, impl=impl, **kw)

    return [
        rej("E_reg", "1-D tensor", lambda impl: reg(impl, rn(6), rn(6)), ValueError, "a 2-D or 3-D tensor",
            "1-D tensor"),
        rej("E_reg", "wrong dtype (int64)", lambda impl: reg(impl, torch.ones(2, 6, 4, dtype=I64)), TypeError,
            "dtype in (float16, bfloat16, float32, float64)", "int64"),
        rej("E_ref", "shape other than E_reg's", lambda impl: reg(impl, b=rn(2, 6, 3)), ValueError,
            "shape (2, 6, 4) (as E_reg)", "shape (2, 6, 3)"),
        rej("E_ref", "dtype other than E_reg's", lambda impl: reg(impl, b=E().double()), TypeError,
            "dtype float32 (as E_reg)", "float64"),
        rej("E_ref", "device mix (CPU + meta)", lambda impl: reg(impl, b=on_meta(E())), RuntimeError,
            "device cpu (as E_reg)", "device meta"),
        rej("E_reg", "empty batch", lambda impl: reg(impl, rn(0, 6, 4), rn(0, 6, 4)), ValueError,
            "at least one prompt of at least one token and one channel (B, T, C)", "shape (0, 6, 4)"),
        rej("E_ref", "NaN entry", lambda impl: reg(impl, b=with_nan(E())), ValueError, "finite values",
            "nan at index (0, 0, 0)"),
        rej("concept_index", "negative position", lambda impl: reg(impl, concept=-1), ValueError,
            "a position >= 0", "-1"),
        rej("concept_index", "concept after EOT", lambda impl: reg(impl, concept=4, eot=4), ValueError,
            "concept_index + concept_len <= eot_index (the concept before EOT)",
            "concept_index 4, concept_len 1, eot_index 4"),
        rej("eot_index", "EOT past the last token", lambda impl: reg(impl, eot=6), ValueError, "a position < T = 6",
            "6"),
        rej("concept_index", "a float tensor", lambda impl: reg(impl, concept=torch.tensor(2.0)), TypeError,
            "an int or an integer tensor", "a tensor of dtype float32"),
        rej("eot_index", "a tensor of the wrong length", lambda impl: reg(impl, eot=ints(4, 4, 4)), ValueError,
            "an int or an integer tensor of shape () or (2,)", "shape (3,)"),
        rej("concept_len", "zero tokens", lambda impl: reg(impl, concept_len=0), ValueError, "an int >= 1", "0"),
        rej("eps", "zero eps", lambda impl: reg(impl, eps=0.0), ValueError, "a finite eps > 0", "0.0"),
        rej("cos_dim", "unknown axis", lambda impl: reg(impl, cos_dim="head"), ValueError,
            "one of 'token', 'feature'", "'head'"),
        rej("reduction", "unknown reduction", lambda impl: reg(impl, reduction="max"), ValueError,
            "one of 'mean', 'sum', 'none'", "'max'"),
        _kernel_by_name(op, lambda impl: reg(impl)),
        Accepted("a single prompt (T, C)", lambda impl: reg(impl, rn(6, 4), rn(6, 4, seed=1))),
        Accepted("zero embeddings (cosine 0), both axes, a tiny eps (1e-30)",
                 lambda impl: [reg(impl, torch.zeros(2, 6, 4), E(1), eps=1e-30, cos_dim=c) for c in ("token",
                                                                                                 "feature")]),
        Accepted("the shortest prompt (SOT, concept, EOT), per-prompt positions",
                 lambda impl: reg(impl, rn(2, 3, 4), rn(2, 3, 4, seed=1), concept=ints(1, 0), eot=ints(2, 1),
                                  reduction="none")),
        Accepted("non-contiguous embeddings, bfloat16", lambda impl: reg(impl, strided(E()).bfloat16(),
                                                                          E(1).bfloat16())),
    ]


def _context_attention_reg():
    op = "context_attention_reg"
    rej = _rejecter(op)
    A = lambda seed=0, shape=(2, 6, 2, 3): torch.rand(*shape, generator=torch.Generator().manual_seed(seed))  # noqa

    def reg(impl, a=None, b=None, concept=2, eot=4, **kw):
        return regops.context_attention_reg([A()] if a is None else a, [A(1)] if b is None else b, concept,
                                            eot_index=eot, impl=impl, **kw)

    return [
        rej("A_reg", "not a list", lambda impl: reg(impl, a={"0": A()}), TypeError,
            "a list of per-layer attention tensors", "dict"),
        rej("A_reg", "empty list", lambda impl: reg(impl, a=[]), ValueError, "at least one cross-attention layer",
            "an empty list"),
        rej("A_ref", "layer count other than A_reg's", lambda impl: reg(impl, b=[A(1), A(2)]), ValueError,
            "1 layers (as A_reg)", "2"),
        rej("A_reg[0]", "3-D tensor", lambda impl: reg(impl, a=[A()[..., 0]], b=[A(1)[..., 0]]), ValueError,
            "a 2-D or 4-D tensor", "3-D tensor"),
        rej("A_reg[0]", "wrong dtype (int64)", lambda impl: reg(impl, a=[torch.ones(2, 6, dtype=I64)],
                                                                b=[torch.ones(2, 6)]), TypeError,
            "dtype in (float16, bfloat16, float32, float64)", "int64"),
        rej("A_ref[0]", "shape other than A_reg[0]'s", lambda impl: reg(impl, b=[A(1, (2, 6, 2, 2))]), ValueError,
            "shape (2, 6, 2, 3) (as A_reg[0])", "shape (2, 6, 2, 2)"),
        rej("A_reg[1]", "(B, T) other than layer 0's", lambda impl: reg(impl, a=[A(), A(2, (2, 5, 2, 3))],
                                                                     b=[A(1), A(3, (2, 5, 2, 3))]),
            ValueError, "(B, T) = (2, 6) (as A_reg[0])", "shape (2, 5, 2, 3)"),
        rej("A_reg[0]", "no pixels", lambda impl: reg(impl, a=[A(0, (2, 6, 2, 0))], b=[A(1, (2, 6, 2, 0))]),
            ValueError, "at least one sample, token, head and pixel", "shape (2, 6, 2, 0)"),
        rej("A_ref[0]", "device mix (CPU + meta)", lambda impl: reg(impl, b=[on_meta(A(1))]), RuntimeError,
            "device cpu (as A_reg[0])", "device meta"),
        rej("A_ref[0]", "dtype other than A_reg[0]'s", lambda impl: reg(impl, b=[A(1).double()]), TypeError,
            "dtype float32 (as A_reg[0])", "float64"),
        rej("A_reg[0]", "NaN entry", lambda impl: reg(impl, a=[with_nan(A())]), ValueError, "finite values",
            "nan at index (0, 0, 0, 0)"),
        rej("eot_index", "EOT past the last token", lambda impl: reg(impl, eot=6), ValueError, "a position < T = 6",
            "6"),
        rej("concept_len", "a bool", lambda impl: reg(impl, concept_len=True), TypeError, "an int >= 1", "bool True"),
        rej("reduction", "unknown reduction", lambda impl: reg(impl, reduction="max"), ValueError,
            "one of 'mean', 'sum', 'none'", "'max'"),
        _kernel_by_name(op, lambda impl: reg(impl)),
        Accepted("a single sample, already reduced (B, T) layers of different resolutions",
                 lambda impl: reg(impl, [A(0, (1, 6)), A(2, (1, 6, 1, 4))], [A(1, (1, 6)), A(3, (1, 6, 1, 4))])),
        Accepted("a single tensor as one layer, all-zero attention", lambda impl: reg(impl, torch.zeros(2, 6),
                                                                                     torch.zeros(2, 6))),
        Accepted("equal attention (MSE 0)", lambda impl: reg(impl, [A()], [A()], reduction="none")),
        Accepted("non-contiguous, float16", lambda impl: reg(impl, [strided(A()).half()], [A(1).half()],
                                                             reduction="mean")),
    ]


def _contrast_ratio_loss():
    op = "contrast_ratio_loss"
    rej = _rejecter(op)
    levels = lambda seed=0: [rn(2, 3, seed=seed), rn(2, 1, 2, seed=seed + 1)]  # noqa: E731

    def loss(impl, a=None, p=None, n=None, weights=(0.5, 1.0), **kw):
        return regops.contrast_ratio_loss(levels() if a is None else a, levels(2) if p is None else p,
                                          levels(4) if n is None else n, weights=weights, impl=impl, **kw)

    return [
        rej("anchor_feats", "a tensor, not a list", lambda impl: loss(impl, a=rn(2, 3)), TypeError,
            "a list of per-level feature tensors", "Tensor"),
        rej("weights[1]", "negative weight", lambda impl: loss(impl, weights=(0.5, -1.0)), ValueError,
            "a finite weight >= 0", "-1.0"),
        rej("weights", "empty", lambda impl: loss(impl, [], [], [], weights=()), ValueError, "at least one level",
            "an empty sequence"),
        rej("pos_feats", "level count other than weights'", lambda impl: loss(impl, p=levels(2)[:1]), ValueError,
            "2 feature levels (one per weight)", "1"),
        rej("ratio", "not a bool", lambda impl: loss(impl, ratio=1), TypeError, "a bool", "int 1"),
        rej("eps", "zero eps", lambda impl: loss(impl, eps=0.0), ValueError, "a finite eps > 0", "0.0"),
        rej("anchor_feats[0]", "wrong dtype (int64)", lambda impl: loss(impl, a=[torch.ones(2, 3, dtype=I64),
                                                                                 rn(2, 1, 2)]),
            TypeError, "dtype in (float16, bfloat16, float32, float64)", "int64"),
        rej("neg_feats[1]", "shape other than the anchor's", lambda impl: loss(impl, n=[rn(2, 3), rn(2, 2)]),
            ValueError, "shape (2, 1, 2) (as anchor_feats[1])", "shape (2, 2)"),
        rej("anchor_feats[0]", "empty level", lambda impl: loss(impl, [rn(0, 3), rn(2, 1, 2)], [rn(0, 3), rn(2, 1, 2)],
                                                                [rn(0, 3), rn(2, 1, 2)]),
            ValueError, "at least one element", "shape (0, 3)"),
        rej("pos_feats[1]", "dtype other than the anchor's", lambda impl: loss(impl, p=[rn(2, 3), rn(2, 1, 2,
                                                                                                   dtype=F64)]),
            TypeError, "dtype float32 (as anchor_feats[0])", "float64"),
        rej("neg_feats[0]", "device mix (CPU + meta)", lambda impl: loss(impl, n=[on_meta(rn(2, 3)), rn(2, 1, 2)]),
            RuntimeError, "device cpu (as anchor_feats[0])", "device meta"),
        rej("pos_feats[0]", "NaN entry", lambda impl: loss(impl, p=[with_nan(rn(2, 3)), rn(2, 1, 2)]), ValueError,
            "finite values", "nan at index (0, 0)"),
        _kernel_by_name(op, lambda impl: loss(impl)),
        Accepted("a single level of one element", lambda impl: loss(impl, [rn(1)], [rn(1, seed=1)], [rn(1, seed=2)],
                                                                   weights=[1.0])),
        Accepted("anchor equal to the positive (0)", lambda impl: loss(impl, p=levels())),
        Accepted("anchor equal to the negative (denominator eps)", lambda impl: loss(impl, n=levels())),
        Accepted("zero weights, ratio=False", lambda impl: loss(impl, weights=(0.0, 0.0), ratio=False)),
        Accepted("non-contiguous, float16", lambda impl: loss(impl, [strided(t).half() for t in levels()],
                                                              [t.half() for t in levels(2)],
                                                              [t.half() for t in levels(4)])),
    ]


def _masked_l1_anchor():
    op = "masked_l1_anchor"
    rej = _rejecter(op)
    img = lambda seed=0: rn(2, 3, 4, 4, seed=seed)  # noqa: E731
    mask = lambda: (rn(2, 1, 4, 4, seed=9) > 0).float()  # noqa: E731

    def l1(impl, r=None, t=None, m=None, **kw):
        return regops.masked_l1_anchor(img() if r is None else r, img(1) if t is None else t,
                                       mask() if m is None else m, impl=impl, **kw)

    return [
        rej("render", "wrong dtype (int64)", lambda impl: l1(impl, torch.ones(2, 3, 4, 4, dtype=I64)), TypeError,
            "dtype in (float16, bfloat16, float32, float64)", "int64"),
        rej("target", "shape other than render's", lambda impl: l1(impl, t=rn(2, 3, 4, 3)), ValueError,
            "shape (2, 3, 4, 4) (as render)", "shape (2, 3, 4, 3)"),
        rej("target", "dtype other than render's", lambda impl: l1(impl, t=img(1).double()), TypeError,
            "dtype float32 (as render)", "float64"),
        rej("mask", "wrong dtype (int64)", lambda impl: l1(impl, m=mask().long()), TypeError,
            "dtype in (float16, bfloat16, float32, float64, bool)", "int64"),
        rej("mask", "a shape that does not broadcast to render's", lambda impl: l1(impl, m=torch.ones(2, 2, 4, 4)),
            ValueError, "a shape that broadcasts to render's (2, 3, 4, 4)", "shape (2, 2, 4, 4)"),
        rej("mask", "soft mask values outside [0, 1]", lambda impl: l1(impl, m=mask() * 1.5), ValueError,
            "values in [0, 1]", "1.5 at index"),
        rej("mask", "device mix (CPU + meta)", lambda impl: l1(impl, m=on_meta(mask())), RuntimeError,
            "device cpu (as render)", "device meta"),
        rej("render", "NaN entry", lambda impl: l1(impl, with_nan(img())), ValueError, "finite values",
            "nan at index (0, 0, 0, 0)"),
        rej("render", "empty render with reduction='pixel_mean'",
            lambda impl: l1(impl, rn(0, 3), rn(0, 3), torch.ones(3), reduction="pixel_mean"), ValueError,
            "at least one element for reduction='pixel_mean'", "shape (0, 3)"),
        rej("reduction", "unknown reduction", lambda impl: l1(impl, reduction="max"), ValueError,
            "one of 'mean', 'pixel_mean', 'sum', 'none'", "'max'"),
        _kernel_by_name(op, lambda impl: l1(impl)),
        Accepted("an all-zero mask (mean is 0)", lambda impl: l1(impl, m=torch.zeros(2, 1, 4, 4))),
        Accepted("a single element", lambda impl: l1(impl, rn(1), rn(1, seed=1), torch.ones(1))),
        Accepted("an empty render with reduction='mean'", lambda impl: l1(impl, rn(0, 3), rn(0, 3), torch.ones(3))),
        Accepted("an (H, W) bool mask, each reduction", lambda impl: [
            l1(impl, m=torch.eye(4, dtype=torch.bool), reduction=r) for r in ("mean", "pixel_mean", "sum", "none")]),
        Accepted("non-contiguous, float16", lambda impl: l1(impl, strided(img()).half(), img(1).half(),
                                                            mask().half())),
    ]


# ---- VPRSNN hyperactive neurons (reference only) ----

def _spikes(seed=0, images=5, neurons=4):
    return (rn(images, neurons, seed=seed) > 0).float()


def _hyperactive_neuron_mask():
    op = "hyperactive_neuron_mask"
    rej = _rejecter(op)

    def mask(impl, spikes=None, threshold=2, counts=None):
        if counts is None and spikes is None:
            spikes = _spikes()
        return regops.hyperactive_neuron_mask(spikes, threshold, counts=counts, impl=impl)

    return [
        rej("ref_spikes", "both ref_spikes and counts", lambda impl: mask(impl, _spikes(), counts=ints(1, 2)),
            TypeError, "exactly one of ref_spikes and counts", "both"),
        rej("threshold", "None", lambda impl: mask(impl, threshold=None), TypeError, "a number >= 0 (0 disables)",
            "None"),
        rej("threshold", "negative threshold", lambda impl: mask(impl, threshold=-1), ValueError,
            "a finite number >= 0 (0 disables)", "-1"),
        rej("ref_spikes", "1-D record", lambda impl: mask(impl, _spikes()[0]), ValueError, "a 2-D tensor",
            "1-D tensor"),
        rej("ref_spikes", "complex record", lambda impl: mask(impl, _spikes().to(torch.complex64)), TypeError,
            "a real or bool tensor", "complex64"),
        rej("ref_spikes", "NaN entry", lambda impl: mask(impl, with_nan(_spikes())), ValueError, "finite values",
            "nan at index (0, 0)"),
        rej("counts", "2-D counts", lambda impl: mask(impl, counts=ints(1, 2)[None]), ValueError, "a 1-D tensor",
            "2-D tensor"),
        rej("counts", "bool counts", lambda impl: mask(impl, counts=torch.ones(3, dtype=torch.bool)), TypeError,
            "an integer (or whole-valued floating) tensor", "bool"),
        rej("counts", "fractional counts", lambda impl: mask(impl, counts=torch.tensor([1.0, 2.5])), ValueError,
            "whole numbers (images with a spike, per neuron)", "2.5 at index 1"),
        rej("counts", "negative counts", lambda impl: mask(impl, counts=ints(1, -2)), ValueError, "counts >= 0",
            "-2 at index 1"),
        _kernel_by_name(op, lambda impl: mask(impl)),
        Accepted("threshold 0 (disabled)", lambda impl: mask(impl, threshold=0)),
        Accepted("a single image of a single neuron", lambda impl: mask(impl, _spikes(images=1, neurons=1))),
        Accepted("no spikes at all, bool record", lambda impl: mask(impl, torch.zeros(5, 4, dtype=torch.bool))),
        Accepted("counts, whole-valued floats", lambda impl: mask(impl, counts=torch.tensor([0.0, 3.0, 7.0]),
                                                                  threshold=2.5)),
        Accepted("a non-contiguous record", lambda impl: mask(impl, strided(_spikes()))),
    ]


def _apply_hyperactive_mask():
    op = "apply_hyperactive_mask"
    rej = _rejecter(op)
    keep = lambda: torch.tensor([True, False, False, True])  # noqa: E731

    def apply(impl, q=None, m=None):
        return regops.apply_hyperactive_mask(rn(3, 4) if q is None else q, keep() if m is None else m, impl=impl)

    return [
        rej("query_responses", "not a tensor", lambda impl: apply(impl, [[0.0]]), TypeError, "a torch.Tensor", "list"),
        rej("query_responses", "0-D tensor", lambda impl: apply(impl, torch.tensor(1.0)), ValueError,
            "a tensor (..., n_neurons)", "a 0-D tensor"),
        rej("query_responses", "bool responses", lambda impl: apply(impl, torch.ones(3, 4, dtype=torch.bool)),
            TypeError, "a real tensor", "bool"),
        rej("mask", "wrong dtype (int64)", lambda impl: apply(impl, m=keep().long()), TypeError, "dtype in (bool)",
            "int64"),
        rej("mask", "2-D mask", lambda impl: apply(impl, m=keep()[None]), ValueError, "a 1-D tensor", "2-D tensor"),
        rej("mask", "neuron count other than the responses'", lambda impl: apply(impl, m=keep()[:3]), ValueError,
            "shape (4,) (query_responses' neurons)", "shape (3,)"),
        rej("mask", "device mix (CPU + meta)", lambda impl: apply(impl, m=on_meta(keep())), RuntimeError,
            "device cpu (as query_responses)", "device meta"),
        _kernel_by_name(op, lambda impl: apply(impl)),
        Accepted("a single neuron", lambda impl: apply(impl, rn(3, 1), torch.tensor([True]))),
        Accepted("every neuron masked, NaN entries included (they become 0)",
                 lambda impl: apply(impl, torch.full((3, 4), math.nan), torch.ones(4, dtype=torch.bool))),
        Accepted("no query (0, n)", lambda impl: apply(impl, rn(0, 4))),
        Accepted("non-contiguous (..., n) responses, integer dtype",
                 lambda impl: (apply(impl, strided(rn(2, 3, 4))), apply(impl, torch.ones(3, 4, dtype=I64)))),
    ]


def _calibrate_hyperactive_threshold():
    op = "calibrate_hyperactive_threshold"
    rej = _rejecter(op)
    score = lambda q, t: float(q.sum())  # noqa: E731

    def calibrate(impl, spikes=None, q=None, metric=score, **kw):
        best, scores = regops.calibrate_hyperactive_threshold(_spikes() if spikes is None else spikes,
                                                              rn(3, 4) if q is None else q, metric, impl=impl, **kw)
        return best, list(scores.values())

    return [
        rej("metric", "not callable", lambda impl: calibrate(impl, metric=None), TypeError,
            "a callable metric(masked_query_responses, threshold) -> float", "NoneType"),
        rej("thresholds", "not a sequence", lambda impl: calibrate(impl, thresholds=5), TypeError,
            "a sequence of numbers >= 0", "int"),
        rej("thresholds", "empty", lambda impl: calibrate(impl, thresholds=[]), ValueError, "at least one threshold",
            "an empty sequence"),
        rej("thresholds[1]", "negative threshold", lambda impl: calibrate(impl, thresholds=[0, -5]), ValueError,
            "a finite number >= 0 (0 disables)", "-5"),
        rej("thresholds[1]", "duplicate thresholds", lambda impl: calibrate(impl, thresholds=[2, 2]), ValueError,
            "distinct thresholds", "2 twice"),
        rej("ref_spikes", "1-D record", lambda impl: calibrate(impl, _spikes()[0]), ValueError, "a 2-D tensor",
            "1-D tensor"),
        rej("ref_spikes", "complex record", lambda impl: calibrate(impl, _spikes().to(torch.complex64)), TypeError,
            "a real or bool tensor", "complex64"),
        rej("query_responses_cal", "1-D responses", lambda impl: calibrate(impl, q=rn(4)), ValueError,
            "a 2-D tensor", "1-D tensor"),
        rej("query_responses_cal", "neuron count other than the record's", lambda impl: calibrate(impl, q=rn(3, 5)),
            ValueError, "4 neurons (as ref_spikes)", "shape (3, 5)"),
        rej("ref_spikes", "device mix (CPU + meta)", lambda impl: calibrate(impl, on_meta(_spikes())), RuntimeError,
            "device cpu (as query_responses_cal)", "device meta"),
        rej("metric", "a NaN score", lambda impl: calibrate(impl, metric=lambda q, t: math.nan), ValueError,
            "a finite number from metric(..., 0)", "nan"),
        _kernel_by_name(op, lambda impl: calibrate(impl)),
        Accepted("a single threshold", lambda impl: calibrate(impl, thresholds=[0])),
        Accepted("a single neuron, a single calibration query", lambda impl: calibrate(impl, _spikes(neurons=1),
                                                                                      rn(1, 1))),
        Accepted("equal scores everywhere (ties go to the smallest threshold)",
                 lambda impl: calibrate(impl, metric=lambda q, t: 1.0)),
        Accepted("thresholds as a tensor, a non-contiguous record",
                 lambda impl: calibrate(impl, strided(_spikes()), thresholds=torch.tensor([0.0, 1.0, 3.0]))),
    ]


# ---- the table: one entry per registered op, in the registry's order ----

_CASES = {
    "orthonormal_penalty": _orthonormal_penalty,
    "sorsa_ortho_loss": _sorsa_ortho_loss,
    "sorsa_regularize_": _sorsa_regularize_,
    "conr_loss": _conr_loss,
    "supcon_loss": lambda: _supcon_cases("supcon_loss"),
    "focal_supcon_loss": lambda: _supcon_cases("focal_supcon_loss"),
    "hard_pair_mixup": _hard_pair_mixup,
    "kd_loss": _kd_loss,
    "ot.sinkhorn": _sinkhorn,
    "ot.sinkhorn_from_cost": _sinkhorn_from_cost,
    "ot.sinkhorn_divergence": _sinkhorn_divergence,
    "monge_gap": _monge_gap,
    "p2ot_plan": _p2ot_plan,
    "sp2ot_plan": _sp2ot_plan,
    "graddrop_": _graddrop_,
    "graddrop_keep_prob": _graddrop_keep_prob,
    "preference_loss": _preference_loss,
    "fused_linear_preference_loss": _fused_linear_preference_loss,
    "rrpo_loss": _rrpo_loss,
    "kl_to_reference": _kl_to_reference,
    "cream_consistency": _cream_consistency,
    "decoupled_mixup_loss": _decoupled_mixup_loss,
    "elr_loss": _elr_loss,
    "spectral_norm_penalty": _spectral_norm_penalty,
    "adversarial_state_noise": _adversarial_state_noise,
    "param_repulsion": _param_repulsion,
    "contractive_penalty": _contractive_penalty,
    "sigmoid_ae_jacobian_penalty": _sigmoid_ae_jacobian_penalty,
    "cae_encoder_penalty": _cae_encoder_penalty,
    "local_error_penalty": _local_error_penalty,
    "sample_regularization_time": _sample_regularization_time,
    "gaussian_kl": _gaussian_kl,
    "reparameterize": _reparameterize,
    "select_present_nodes": _select_present_nodes,
    "layer_relative_error": _layer_relative_error,
    "lsa.most_vulnerable_layers": _lsa_most_vulnerable_layers,
    "lsa.layerwise_penalty": _lsa_layerwise_penalty,
    "context_embedding_reg": _context_embedding_reg,
    "context_attention_reg": _context_attention_reg,
    "contrast_ratio_loss": _contrast_ratio_loss,
    "masked_l1_anchor": _masked_l1_anchor,
    "hyperactive_neuron_mask": _hyperactive_neuron_mask,
    "apply_hyperactive_mask": _apply_hyperactive_mask,
    "calibrate_hyperactive_threshold": _calibrate_hyperactive_threshold,
}

ALL_CASES: dict = {op: build() for op, build in _CASES.items()}
