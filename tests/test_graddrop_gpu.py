"""R-AMT gradient dropout on a GPU: the CUDA kernels torch.ops.regops.graddrop_apply_ and graddrop_keep_prob against
regops.reference.graddrop on the same CUDA tensors, bit for bit (the kernel and the reference compute the same
float32 operations and the same Philox4x32-10 uniforms); and against the CPU kernel when it is built. Skips
without a CUDA device.

A test marked gpu_validates and parametrized by `impl` vouches for those (op, impl) pairs (conftest.py,
scripts/gpu_check.sh): it must not skip except when the impl cannot run at all."""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

import regops  # noqa: E402,F401  (loads regops._C)
from regops import _loader, _registry  # noqa: E402

from conftest import need, requires_cuda  # noqa: E402,F401
from tolerances import assert_same_bits  # noqa: E402
from regops.reference import graddrop as ref  # noqa: E402

pytestmark = [pytest.mark.cuda]

OP = "graddrop_"
IMPLS = ["cuda"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
SEED = 0x1234_5678_9ABC_DEF1  # both key words non-zero
# Odd sizes around the 4-element Philox groups and the kernel's 4096-element chunks, a 2-D and an empty 3-D shape.
SHAPES = [(0,), (1,), (2,), (3,), (4,), (5,), (7,), (8,), (1023,), (1024,), (4095,), (4096,), (4097,), (8193,),
          (37, 51), (3, 0, 5), (2, 3, 4, 5), (12289,)]




def has_cpu_kernel():
    return _registry.available(OP, "cpu", torch.device("cpu"))[0]


def grads(shape, dtype, gen):
    """(grad_task, grad_reg): mixed signs and magnitudes (P spread over [0, 1]), a few exact zeros."""
    a = torch.randn(shape, device="cuda", generator=gen) * 10.0 ** torch.randint(-3, 2, shape, device="cuda",
                                                                                  generator=gen)
    b = torch.randn(shape, device="cuda", generator=gen) * a.abs().mean().nan_to_num(1.0) * 2
    a = torch.where(torch.rand(shape, device="cuda", generator=gen) < 0.02, torch.zeros_like(a), a)
    return a.to(dtype), b.to(dtype)


def gen(seed=0):
    return torch.Generator(device="cuda").manual_seed(seed)


def assert_bits(got, exp):
    """The same dtype, shape and bits; NaN positions must agree (their payloads may differ)."""
    assert got.dtype == exp.dtype and got.shape == exp.shape, (got.dtype, got.shape, exp.dtype, exp.shape)
    nan = torch.isnan(exp)
    assert torch.equal(torch.isnan(got), nan)
    g, e = got.contiguous().view(BITS[got.dtype]), exp.contiguous().view(BITS[exp.dtype])
    assert torch.equal(g[~nan], e[~nan]), f"{(g != e).sum().item()} of {g.numel()} elements differ"


def expected(a_list, b_list, lam, seed):
    return [ref.apply(a, b, lam, seed, t) for t, (a, b) in enumerate(zip(a_list, b_list))]


def apply_(out, a, b, lam, seed):
    return torch.ops.regops.graddrop_apply_(out, a, b, lam, seed)


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lam", [0.0, pytest.param(0.3, marks=pytest.mark.gpu_quick), 1.0])
def test_apply_matches_reference(impl, dtype, lam):
    need(OP, impl)
    g = gen(1)
    pairs = [grads(s, dtype, g) for s in SHAPES]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    a0, b0 = [x.clone() for x in a], [x.clone() for x in b]
    out = [torch.full_like(x, float("nan")) for x in a]
    counts = apply_(out, a, b, lam, SEED)
    assert counts.dtype == torch.int64 and counts.shape == (len(SHAPES),) and counts.device == a[0].device
    assert counts.tolist() == [0] * len(SHAPES)
    for t, (o, e) in enumerate(zip(out, expected(a, b, lam, SEED))):
        assert_bits(o, e)
    for x, x0 in zip(a + b, a0 + b0):  # inputs untouched
        assert_bits(x, x0)


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed", [pytest.param(0, marks=pytest.mark.gpu_quick), -5, 2**63 - 1])
def test_apply_mixed_list_in_place(impl, seed):
    """~30 odd-shaped tensors of all three dtypes; out is grads_task (in place); a misaligned contiguous view (no
    vector access) and a transposed (non-contiguous) grads_reg."""
    need(OP, impl)
    g = gen(2)
    a, b = [], []
    sizes = [0, 1, 3, 5, 6, 9, 31, 33, 255, 1023, 1025, 4095, 4097, 5000, 8191, 12345, (37, 51), (7, 3, 11),
             (64, 64), (1, 4096), (2, 0), 17, 100, 2047, 3, 65537, (13, 13), 10, 4, 2]
    for i, s in enumerate(sizes):
        shape = s if isinstance(s, tuple) else (s,)
        x, y = grads(shape, DTYPES[i % 3], g)
        a.append(x)
        b.append(y)
    # a contiguous view at an odd element offset: its pointer is not 4-element aligned
    base_a, base_b = grads((4100,), torch.bfloat16, g)
    a.append(base_a[1:4098])
    b.append(base_b[3:4100])
    base_a, base_b = grads((1001,), torch.float32, g)
    a.append(base_a[2:1001])
    b.append(base_b[1:1000])
    # a non-contiguous grads_reg
    x, y = grads((51, 37), torch.float16, g)
    a.append(x.t().contiguous())
    b.append(y.t())
    a0 = [x.clone() for x in a]
    exp = expected(a0, b, 0.3, seed)
    counts = apply_(a, a, b, 0.3, seed)
    assert counts.tolist() == [0] * len(a)
    for o, e in zip(a, exp):
        assert_bits(o, e)
    # the same call again from the saved inputs repeats the bits; another seed changes them
    again = [x.clone() for x in a0]
    apply_(again, a0, b, 0.3, seed)
    for o, e in zip(again, a):
        assert_bits(o, e)
    other = [x.clone() for x in a0]
    apply_(other, a0, b, 0.3, seed ^ 1)
    assert any(not torch.equal(o, e) for o, e in zip(other, a) if o.numel() > 100)


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_non_finite_counts(impl, dtype):
    need(OP, impl)
    g = gen(3)
    shapes = [(100,), (4097,), (7,), (33, 3), (5000,)]
    pairs = [grads(s, dtype, g) for s in shapes]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    a[1][3] = float("inf")
    b[1][4096] = float("-inf")           # the last, partial group of its tensor
    b[3][10, 2] = float("nan")
    a[4][17] = float("nan")
    b[4][17] = float("inf")              # both non-finite at one element: counted once
    a[4][4999] = float("-inf")
    b[4][0] = float("nan")
    out = [torch.empty_like(x) for x in a]
    counts = apply_(out, a, b, 0.3, 7)
    assert counts.device == a[0].device and counts.dtype == torch.int64
    assert counts.tolist() == [0, 2, 0, 1, 3]
    for o, e in zip(out, expected(a, b, 0.3, 7)):
        assert_bits(o, e)
    # lam = 1: inf·0 is NaN, as in the reference
    counts = apply_(out, a, b, 1.0, 7)
    assert counts.tolist() == [0, 2, 0, 1, 3]
    for o, e in zip(out, expected(a, b, 1.0, 7)):
        assert_bits(o, e)


def vit_like_shapes():
    """160 tensors, ~25M elements: a ViT-S/16-like parameter list plus a few odd extras."""
    d, mlp = 384, 1536
    shapes = [(d, 3, 16, 16), (d,), (1, 1, d), (1, 197, d)]
    for _ in range(12):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (mlp, d), (mlp,), (d, mlp), (d,)]
    shapes += [(d,), (d,), (1000, d), (1000,)]
    shapes += [(3, 5, 7), (1,), (12289,), (4096, 65), (1234, 567), (999,), (2, 2), (0,)]
    assert len(shapes) == 160
    return shapes


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", IMPLS)
def test_apply_large_list(impl):
    need(OP, impl)
    g = gen(4)
    shapes = vit_like_shapes()
    pairs = [grads(s, torch.float32, g) for s in shapes]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    assert 20_000_000 < sum(x.numel() for x in a) < 30_000_000
    out = [torch.empty_like(x) for x in a]
    counts = apply_(out, a, b, 0.5, SEED)
    assert counts.tolist() == [0] * 160
    largest = max(range(160), key=lambda t: a[t].numel())
    for t in sorted({0, 1, 2, 6, largest, 150, 155, 157, 159}):
        assert_bits(out[t], ref.apply(a[t], b[t], 0.5, SEED, t))
    again = [torch.empty_like(x) for x in a]
    apply_(again, a, b, 0.5, SEED)
    assert all(torch.equal(o, e) for o, e in zip(again, out))
    # bfloat16, in place: the same bits as out-of-place
    a16 = [x.to(torch.bfloat16) for x in a]
    b16 = [x.to(torch.bfloat16) for x in b]
    out16 = [torch.empty_like(x) for x in a16]
    apply_(out16, a16, b16, 0.5, SEED)
    apply_(a16, a16, b16, 0.5, SEED)
    assert all(torch.equal(o, e) for o, e in zip(a16, out16))
    assert_bits(out16[largest], ref.apply(a[largest].to(torch.bfloat16), b16[largest], 0.5, SEED, largest))


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", IMPLS)
def test_apply_matches_cpu_kernel(impl):
    """The CUDA and CPU kernels give the same bits (finite inputs: NaN payloads may differ across devices)."""
    need(OP, impl)
    if not has_cpu_kernel():
        pytest.skip("this build has no CPU kernel of graddrop_apply_")
    g = gen(5)
    a, b = [], []
    for i, s in enumerate([1, 3, 4097, 65536 + 5, (37, 51), 0, 100_003, (300, 301), 31, 32, 33]):
        shape = s if isinstance(s, tuple) else (s,)
        x, y = grads(shape, DTYPES[i % 3], g)
        a.append(x)
        b.append(y)
    out = [torch.empty_like(x) for x in a]
    counts = apply_(out, a, b, 0.25, SEED)
    a_cpu, b_cpu = [x.cpu() for x in a], [x.cpu() for x in b]
    out_cpu = [torch.empty_like(x) for x in a_cpu]
    counts_cpu = apply_(out_cpu, a_cpu, b_cpu, 0.25, SEED)
    assert counts.cpu().tolist() == counts_cpu.tolist()
    for o, e in zip(out, out_cpu):
        assert_bits(o.cpu(), e)


@pytest.mark.gpu_validates("graddrop_", "graddrop_keep_prob")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (5,), pytest.param((37, 51), marks=pytest.mark.gpu_quick), (4097,)])
def test_keep_prob(impl, dtype, shape):
    need(OP, impl)
    a, b = grads(shape, dtype, gen(6))
    if a.numel() >= 5:
        a.view(-1)[1] = float("inf")
        b.view(-1)[2] = float("nan")
        a.view(-1)[3] = 0.0
        b.view(-1)[3] = 0.0  # P = (0/1e-8 + 1)/2 = 0.5
        a.view(-1)[4] = -1.0
        b.view(-1)[4] = 1.0  # P = 0.5 as well (num 0)
    p = torch.ops.regops.graddrop_keep_prob(a, b)
    assert p.device == a.device
    assert_bits(p, ref.keep_prob(a, b).to(dtype))
    if len(shape) == 2:  # non-contiguous inputs
        assert_bits(torch.ops.regops.graddrop_keep_prob(a.t(), b.t()), ref.keep_prob(a.t(), b.t()).to(dtype))


# ---- argument errors ----

def lists(n=4, dtype=torch.float32):
    g = gen(7)
    pairs = [grads((10 + i,), dtype, g) for i in range(n)]
    return [torch.empty_like(p[0]) for p in pairs], [p[0] for p in pairs], [p[1] for p in pairs]


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", IMPLS)
def test_apply_errors(impl):
    need(OP, impl)
    out, a, b = lists()
    with pytest.raises(ValueError, match=r"^regops\.graddrop_: grads_task: expected 4 tensors \(as out\), got 3"):
        apply_(out, a[:3], b, 0.3, 0)
    with pytest.raises(ValueError, match=r"^regops\.graddrop_: grads_reg: expected 4 tensors \(as out\), got 5"):
        apply_(out, a, b + b[:1], 0.3, 0)
    bad = list(b)
    bad[1] = torch.zeros(3, device="cuda")
    with pytest.raises(ValueError, match=r"regops\.graddrop_: grads_reg\[1\]: expected shape \[11\] .*got shape \[3\]"):
        apply_(out, a, bad, 0.3, 0)
    bad = list(a)
    bad[2] = a[2].to(torch.bfloat16)
    with pytest.raises(TypeError, match=r"regops\.graddrop_: grads_task\[2\]: expected dtype Float .*got .*BFloat16"):
        apply_(out, bad, b, 0.3, 0)
    bad = list(b)
    bad[3] = b[3].cpu()
    with pytest.raises(RuntimeError, match=r"regops\.graddrop_: grads_reg\[3\]: expected device cuda.*device cpu"):
        apply_(out, a, bad, 0.3, 0)
    bad = list(out)
    bad[0] = torch.empty(2, 5, device="cuda").t()  # shape (5, 2), not contiguous
    bad_a, bad_b = list(a), list(b)
    bad_a[0], bad_b[0] = torch.zeros(5, 2, device="cuda"), torch.zeros(5, 2, device="cuda")
    with pytest.raises(ValueError, match=r"regops\.graddrop_: out\[0\]: expected a contiguous tensor"):
        apply_(bad, bad_a, bad_b, 0.3, 0)
    out64, a64, b64 = ([x.double() for x in lst] for lst in (out, a, b))
    with pytest.raises(TypeError, match=r"regops\.graddrop_: out\[0\]: expected dtype float32, bfloat16 or float16"):
        apply_(out64, a64, b64, 0.3, 0)
    with pytest.raises(ValueError, match=r"regops\.graddrop_: lam: expected a value in \[0, 1\]"):
        apply_(out, a, b, 1.5, 0)


@pytest.mark.gpu_validates("graddrop_", "graddrop_keep_prob")
@pytest.mark.parametrize("impl", IMPLS)
def test_keep_prob_errors(impl):
    need(OP, impl)
    a, b = grads((3, 4), torch.float32, gen(8))
    with pytest.raises(ValueError, match=r"regops\.graddrop_keep_prob: grad_reg: expected shape \[3, 4\]"):
        torch.ops.regops.graddrop_keep_prob(a, b[:2])
    with pytest.raises(TypeError, match=r"regops\.graddrop_keep_prob: grad_reg: expected dtype Float"):
        torch.ops.regops.graddrop_keep_prob(a, b.half())
    with pytest.raises(TypeError, match=r"regops\.graddrop_keep_prob: grad_task: expected dtype float32, bfloat16"):
        torch.ops.regops.graddrop_keep_prob(a.double(), b.double())
    with pytest.raises(RuntimeError, match=r"regops\.graddrop_keep_prob: grad_reg: expected device cuda"):
        torch.ops.regops.graddrop_keep_prob(a, b.cpu())


# ================================================================================================
# The Triton kernel (regops/triton/graddrop.py) on the GPU, bit for bit against the torch reference. The small
# cases compare with the reference evaluated on CPU copies (the same bits on CUDA as on the CPU is the claim); the
# 160-tensor, 25M-element list compares with the reference run on the same CUDA tensors.
# ================================================================================================
if _loader.triton_available():
    from regops.triton import graddrop as tg  # noqa: F401  (registers the triton ops)
T_IMPLS = ["triton"]
T_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPE_IDS = ["float32", "bfloat16", "float16"]
T_SHAPES = [(0,), (1,), (3,), (5,), (1023,), (37, 51), (4100,)]
LAMS = [0.0, 0.3, 1.0]






def apply_op(out, task, reg, lam, seed):
    return torch.ops.regops.graddrop_apply_triton(out, task, reg, lam, seed)


def keep_prob_op(a, b):
    return torch.ops.regops.graddrop_keep_prob_triton(a, b)


def pair(shape, dtype, seed=0, device="cuda"):
    """(a, b) in `dtype`: magnitudes over 1e-3 .. 1e3, exact zeros, b = −a, b = a and b = 0 cases."""
    g = torch.Generator(device=device).manual_seed(seed)
    n = 1
    for s in shape:
        n *= s
    kw = dict(generator=g, device=device)
    a = torch.randn(n, dtype=torch.float64, **kw) * 10.0 ** torch.randint(-3, 4, (n,), **kw)
    b = torch.randn(n, dtype=torch.float64, **kw) * 10.0 ** torch.randint(-3, 4, (n,), **kw)
    kind = torch.randint(0, 8, (n,), **kw)
    b = torch.where(kind == 0, -a, b)
    b = torch.where(kind == 1, a, b)
    b = torch.where(kind == 2, torch.zeros_like(b), b)
    a = torch.where(kind == 3, torch.zeros_like(a), a)
    return a.to(dtype).reshape(shape), b.to(dtype).reshape(shape)


def put_nonfinite(a, b, seed, k=2):
    """Writes NaN, ±inf at k random places of each of a and b (in place)."""
    n = a.numel()
    if n == 0:
        return
    g = torch.Generator().manual_seed(seed)
    for flat in (a.view(-1), b.view(-1)):
        for v in (float("nan"), float("inf"), float("-inf"))[:k + 1]:
            flat[int(torch.randint(0, n, (1,), generator=g))] = v


def expected_counts(task, reg):
    return torch.stack([(~(torch.isfinite(a) & torch.isfinite(b))).sum() for a, b in zip(task, reg)]).to(torch.int64)


def expected_cpu(task, reg, lam, seed):
    return [ref.apply(a.cpu(), b.cpu(), lam, seed, t) for t, (a, b) in enumerate(zip(task, reg))]


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", T_IMPLS)
def test_philox_known_answers(impl):
    need(OP, impl)
    rows = torch.tensor([[0] * 6, [0xFFFFFFFF] * 6], dtype=torch.int64, device="cuda")
    words = tg.philox_words(rows).cpu().tolist()
    assert words[0] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert words[1] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    g = torch.Generator().manual_seed(1)
    rnd = torch.randint(0, 1 << 32, (5000, 6), generator=g, dtype=torch.int64)
    rnd[:, 4:] = torch.tensor([0x12345678, 0xFEDCBA98])
    exp = torch.stack(ref.philox4x32_10(*rnd[:, :4].unbind(1), 0x12345678, 0xFEDCBA98), 1)
    assert torch.equal(tg.philox_words(rnd.cuda()).cpu(), exp)


@pytest.mark.gpu_quick
@pytest.mark.gpu_validates("graddrop_", "graddrop_keep_prob")
@pytest.mark.parametrize("impl", T_IMPLS)
@pytest.mark.parametrize("dtype", T_DTYPES, ids=DTYPE_IDS)
def test_keep_prob_matches_reference(impl, dtype):
    need(OP, impl)
    for i, shape in enumerate(T_SHAPES + [(1 << 20,), (1000, 999)]):
        a, b = pair(shape, dtype, seed=i)
        got = keep_prob_op(a, b)
        assert got.device == a.device
        assert_same_bits(got, ref.keep_prob(a.cpu(), b.cpu()).to(dtype))


@pytest.mark.gpu_validates("graddrop_", "graddrop_keep_prob")
@pytest.mark.parametrize("impl", T_IMPLS)
@pytest.mark.parametrize("dtype", T_DTYPES, ids=DTYPE_IDS)
def test_special_values(impl, dtype):
    """Zeros of both signs, ±inf, NaN and subnormals (no flush to zero may differ from the reference)."""
    need(OP, impl)
    inf, nan = float("inf"), float("nan")
    tiny = torch.finfo(dtype).tiny
    vals = [0.0, -0.0, 1.0, -1.0, inf, -inf, nan, tiny, -tiny, tiny / 4, -tiny / 3, 3e-39, -3e-39, 1e-30, 1e30,
            torch.finfo(dtype).max, 2.5e-45]
    a = torch.tensor([x for x in vals for _ in vals] * 8, dtype=torch.float64).to(dtype)
    b = torch.tensor([y for _ in vals for y in vals] * 8, dtype=torch.float64).to(dtype)
    assert_same_bits(keep_prob_op(a.cuda(), b.cuda()), ref.keep_prob(a, b).to(dtype))
    for lam in LAMS + [0.7]:
        out = [torch.empty_like(a, device="cuda")]
        counts = apply_op(out, [a.cuda()], [b.cuda()], lam, 11)
        assert_same_bits(out[0], ref.apply(a, b, lam, 11, 0))
        assert int(counts[0]) == int((~(torch.isfinite(a) & torch.isfinite(b))).sum())


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", T_IMPLS)
@pytest.mark.parametrize("dtype", T_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("lam", [0.0, pytest.param(0.3, marks=pytest.mark.gpu_quick), 1.0])
def test_triton_apply_matches_reference(impl, dtype, lam):
    need(OP, impl)
    seed = 12345678901
    pairs = [pair(s, dtype, seed=i) for i, s in enumerate(T_SHAPES)]
    task, reg = [p[0] for p in pairs], [p[1] for p in pairs]
    put_nonfinite(task[4], reg[4], seed=1)
    out = [torch.full_like(a, 7.0) for a in task]
    counts = apply_op(out, task, reg, lam, seed)
    assert counts.dtype == torch.int64 and counts.device == task[0].device
    assert torch.equal(counts, expected_counts(task, reg))
    for o, e in zip(out, expected_cpu(task, reg, lam, seed)):
        assert_same_bits(o, e)


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", T_IMPLS)
@pytest.mark.parametrize("inplace", [False, pytest.param(True, marks=pytest.mark.gpu_quick)], ids=["out", "inplace"])
def test_apply_mixed_list(impl, inplace):
    """The three dtypes mixed over odd sizes, 2-D and empty tensors, a 4-byte-aligned view (the unaligned
    variant) and a transposed input; out[t] is grads_task[t] when inplace (the transposed one excepted)."""
    need(OP, impl)
    shapes = T_SHAPES + [(2, 3), (0, 7), (70001,)]
    task, reg = [], []
    for i, s in enumerate(shapes):
        a, b = pair(s, T_DTYPES[i % 3], seed=10 + i)
        task.append(a)
        reg.append(b)
    ua, ub = pair((5001,), torch.float16, seed=50)
    task.append(ua[1:])
    reg.append(ub[1:])
    ta, tb = pair((33, 65), torch.bfloat16, seed=51)
    task.append(ta.t())
    reg.append(tb.t())
    put_nonfinite(task[5], reg[5], seed=2)
    exp = expected_cpu(task, reg, 0.3, -5)
    exp_counts = expected_counts(task, reg)
    out = list(task) if inplace else [torch.empty_like(a) for a in task]
    out[-1] = torch.empty(task[-1].shape, dtype=task[-1].dtype, device="cuda")
    counts = apply_op(out, task, reg, 0.3, -5)
    assert torch.equal(counts, exp_counts)
    for o, e in zip(out, exp):
        assert_same_bits(o, e)


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", T_IMPLS)
def test_triton_apply_large_list(impl):
    """160 tensors, 25M elements in all, the three dtypes mixed: one launch per dtype over ~24k programs."""
    need(OP, impl)
    g = torch.Generator().manual_seed(7)
    raw = torch.rand(160, generator=g, dtype=torch.float64) ** 3
    sizes = (raw / raw.sum() * 25_000_000).long().clamp(min=1)
    sizes[0], sizes[1], sizes[2] = 1, 3, 1023
    sizes[-1] += 25_000_000 - int(sizes.sum())
    assert int(sizes.sum()) == 25_000_000 and int(sizes.min()) >= 1
    task, reg = [], []
    for i, n in enumerate(sizes.tolist()):
        shape = (n // 7, 7) if n % 7 == 0 and n > 7 else (n,)
        a, b = pair(shape, T_DTYPES[i % 3], seed=1000 + i)
        if i % 17 == 5:
            put_nonfinite(a, b, seed=i, k=1)
        task.append(a)
        reg.append(b)
    exp_counts = expected_counts(task, reg)
    seed = 0x5EED_0000_0000_0001
    exp = [ref.apply(a, b, 0.25, seed, t) for t, (a, b) in enumerate(zip(task, reg))]
    out = [torch.empty_like(a) for a in task]
    counts = apply_op(out, task, reg, 0.25, seed)
    assert torch.equal(counts, exp_counts)
    for o, e in zip(out, exp):
        assert_same_bits(o, e)
    # in place, on the same inputs: the same bits
    counts2 = apply_op(task, task, reg, 0.25, seed)
    assert torch.equal(counts2, exp_counts)
    for a, e in zip(task, exp):
        assert_same_bits(a, e)
