"""The Triton gradient-dropout kernel (regops/triton/graddrop.py) on a GPU, bit for bit against the torch
reference (regops.reference.graddrop). Skips without a CUDA device.

The small cases compare with the reference evaluated on CPU copies (the same bits on CUDA as on the CPU is the
claim); the 160-tensor, 25M-element list compares with the reference run on the same CUDA tensors (the CPU
reference would take minutes there). Exact equality: the same bits wherever the expected value is not NaN,
NaN where it is NaN.

A test marked gpu_validates and parametrized by `impl` vouches for those (op, impl) pairs (conftest.py,
scripts/gpu_check.sh): it must not skip except when the impl cannot run at all.
"""
import pytest
import torch

from regops import _loader
from regops.reference import graddrop as ref

from conftest import requires_cuda

IMPLS = ["triton"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPE_IDS = ["float32", "bfloat16", "float16"]
SHAPES = [(0,), (1,), (3,), (5,), (1023,), (37, 51), (4100,)]
LAMS = [0.0, 0.3, 1.0]
_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}

if _loader.triton_available():
    from regops.triton import graddrop as tg  # noqa: F401  (registers the triton ops)

pytestmark = [requires_cuda, pytest.mark.cuda]


def need(impl):
    ok, why = _loader.impl_available("graddrop_", impl, torch.device("cuda"), {"triton": "graddrop_apply_triton"})
    if not ok:
        pytest.skip(f"{impl} not available: {why}")


def apply_op(out, task, reg, lam, seed):
    return torch.ops.regops.graddrop_apply_triton(out, task, reg, lam, seed)


def keep_prob_op(a, b):
    return torch.ops.regops.graddrop_keep_prob_triton(a, b)


def assert_same_bits(actual, expected):
    """Same dtype, shape, NaN positions, and bits everywhere else (so +0 and -0 differ); on expected's device."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    actual = actual.to(expected.device)
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), nan)
    ia, ie = actual.view(_INT[actual.dtype])[~nan], expected.view(_INT[expected.dtype])[~nan]
    if not torch.equal(ia, ie):
        bad = (ia != ie).nonzero()[:5].flatten()
        raise AssertionError(f"{int((ia != ie).sum())} of {ie.numel()} elements differ, e.g. "
                             f"{actual[~nan][bad].tolist()} vs {expected[~nan][bad].tolist()}")


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
@pytest.mark.parametrize("impl", IMPLS)
def test_philox_known_answers(impl):
    need(impl)
    rows = torch.tensor([[0] * 6, [0xFFFFFFFF] * 6], dtype=torch.int64, device="cuda")
    words = tg.philox_words(rows).cpu().tolist()
    assert words[0] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert words[1] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    g = torch.Generator().manual_seed(1)
    rnd = torch.randint(0, 1 << 32, (5000, 6), generator=g, dtype=torch.int64)
    rnd[:, 4:] = torch.tensor([0x12345678, 0xFEDCBA98])
    exp = torch.stack(ref.philox4x32_10(*rnd[:, :4].unbind(1), 0x12345678, 0xFEDCBA98), 1)
    assert torch.equal(tg.philox_words(rnd.cuda()).cpu(), exp)


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_keep_prob_matches_reference(impl, dtype):
    need(impl)
    for i, shape in enumerate(SHAPES + [(1 << 20,), (1000, 999)]):
        a, b = pair(shape, dtype, seed=i)
        got = keep_prob_op(a, b)
        assert got.device == a.device
        assert_same_bits(got, ref.keep_prob(a.cpu(), b.cpu()).to(dtype))


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_special_values(impl, dtype):
    """Zeros of both signs, ±inf, NaN and subnormals (no flush to zero may differ from the reference)."""
    need(impl)
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
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("lam", LAMS)
def test_apply_matches_reference(impl, dtype, lam):
    need(impl)
    seed = 12345678901
    pairs = [pair(s, dtype, seed=i) for i, s in enumerate(SHAPES)]
    task, reg = [p[0] for p in pairs], [p[1] for p in pairs]
    put_nonfinite(task[4], reg[4], seed=1)
    out = [torch.full_like(a, 7.0) for a in task]
    counts = apply_op(out, task, reg, lam, seed)
    assert counts.dtype == torch.int64 and counts.device == task[0].device
    assert torch.equal(counts, expected_counts(task, reg))
    for o, e in zip(out, expected_cpu(task, reg, lam, seed)):
        assert_same_bits(o, e)


@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_apply_mixed_list(impl, inplace):
    """The three dtypes mixed over odd sizes, 2-D and empty tensors, a 4-byte-aligned view (the unaligned
    variant) and a transposed input; out[t] is grads_task[t] when inplace (the transposed one excepted)."""
    need(impl)
    shapes = SHAPES + [(2, 3), (0, 7), (70001,)]
    task, reg = [], []
    for i, s in enumerate(shapes):
        a, b = pair(s, DTYPES[i % 3], seed=10 + i)
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
@pytest.mark.parametrize("impl", IMPLS)
def test_apply_large_list(impl):
    """160 tensors, 25M elements in all, the three dtypes mixed: one launch per dtype over ~24k programs."""
    need(impl)
    g = torch.Generator().manual_seed(7)
    raw = torch.rand(160, generator=g, dtype=torch.float64) ** 3
    sizes = (raw / raw.sum() * 25_000_000).long().clamp(min=1)
    sizes[0], sizes[1], sizes[2] = 1, 3, 1023
    sizes[-1] += 25_000_000 - int(sizes.sum())
    assert int(sizes.sum()) == 25_000_000 and int(sizes.min()) >= 1
    task, reg = [], []
    for i, n in enumerate(sizes.tolist()):
        shape = (n // 7, 7) if n % 7 == 0 and n > 7 else (n,)
        a, b = pair(shape, DTYPES[i % 3], seed=1000 + i)
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
