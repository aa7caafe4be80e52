"""The Triton gradient-dropout kernel (regops/triton/graddrop.py) against the torch reference, bit for bit.

The ops are called directly (torch.ops.regops.graddrop_apply_triton / graddrop_keep_prob_triton) and compared
with regops.reference.graddrop with exact equality: the same bits wherever the expected value is not NaN, NaN
where it is NaN (torch.equal would call NaN unequal to itself). On CPU-only machines the conftest sets
TRITON_INTERPRET=1, so the kernel runs interpreted (small sizes); on a CUDA machine the same tests run on
CUDA tensors (tests/test_graddrop_triton_gpu.py adds the GPU-only ones).
"""
import pytest
import torch

import regops  # noqa: F401  (registers the ops)
from regops._loader import triton_available
from regops.reference import graddrop as ref

# The interpreter evaluates NaN/inf inputs with numpy, which warns.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

if not triton_available():
    pytest.skip("triton is not installed", allow_module_level=True)

from regops.triton import graddrop as tg  # noqa: E402  (registers the triton ops)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPE_IDS = ["float32", "bfloat16", "float16"]
SHAPES = [(0,), (1,), (3,), (5,), (1023,), (37, 51)]
LAMS = [0.0, 0.3, 1.0]
SEEDS = [0, 12345678901, -7]
_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def apply_op(out, task, reg, lam, seed):
    return torch.ops.regops.graddrop_apply_triton(out, task, reg, lam, seed)


def keep_prob_op(a, b):
    return torch.ops.regops.graddrop_keep_prob_triton(a, b)


def assert_same_bits(actual, expected):
    """Same dtype, shape, NaN positions, and bits everywhere else (so +0 and -0 differ)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    actual, expected = actual.cpu(), expected.cpu()
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), nan)
    ia, ie = actual.view(_INT[actual.dtype])[~nan], expected.view(_INT[expected.dtype])[~nan]
    if not torch.equal(ia, ie):
        bad = (ia != ie).nonzero()[:5].flatten()
        raise AssertionError(f"{int((ia != ie).sum())} of {ie.numel()} elements differ, e.g. "
                             f"{actual[~nan][bad].tolist()} vs {expected[~nan][bad].tolist()}")


def pair(shape, dtype, seed=0):
    """(a, b) of `shape` in `dtype`: magnitudes over 1e-3 .. 1e3, exact zeros, b = −a, b = a and b = 0 cases
    (P = 0, 1, 0.5 and the ties of the float32 arithmetic)."""
    g = torch.Generator().manual_seed(seed)
    n = 1
    for s in shape:
        n *= s
    a = torch.randn(n, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-3, 4, (n,), generator=g)
    b = torch.randn(n, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-3, 4, (n,), generator=g)
    kind = torch.randint(0, 8, (n,), generator=g)
    b = torch.where(kind == 0, -a, b)
    b = torch.where(kind == 1, a, b)
    b = torch.where(kind == 2, torch.zeros_like(b), b)
    a = torch.where(kind == 3, torch.zeros_like(a), a)
    a, b = a.to(dtype).reshape(shape), b.to(dtype).reshape(shape)
    return a.to(DEVICE), b.to(DEVICE)


def with_nonfinite(a, b, seed=0):
    """Copies of a and b with NaN, +inf and −inf at a few places of each; the expected non-finite count."""
    a, b = a.clone(), b.clone()
    n = a.numel()
    if n:
        g = torch.Generator().manual_seed(seed + 100)
        fa, fb = a.view(-1), b.view(-1)
        for flat, vals in ((fa, (float("nan"), float("inf"), float("-inf"))), (fb, (float("inf"), float("nan")))):
            for v in vals:
                flat[int(torch.randint(0, n, (1,), generator=g))] = v
    bad = ~(torch.isfinite(a) & torch.isfinite(b))
    return a, b, int(bad.sum())


def expected_list(task, reg, lam, seed):
    return [ref.apply(a, b, lam, seed, t) for t, (a, b) in enumerate(zip(task, reg))]


def expected_counts(task, reg):
    return torch.tensor([int((~(torch.isfinite(a) & torch.isfinite(b))).sum()) for a, b in zip(task, reg)],
                        dtype=torch.int64)


# ----------------------------------------------------------------------------------------------
# Philox
# ----------------------------------------------------------------------------------------------
def test_philox_known_answers():
    rows = torch.tensor([[0] * 6, [0xFFFFFFFF] * 6], dtype=torch.int64, device=DEVICE)
    words = tg.philox_words(rows).cpu().tolist()
    assert words[0] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert words[1] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def test_philox_matches_reference():
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 1 << 32, (777, 6), generator=g, dtype=torch.int64)
    # the reference takes one key per call: all rows under key 0, then a few rows under their own keys
    zero = rows.clone()
    zero[:, 4:] = 0
    exp = torch.stack(ref.philox4x32_10(*rows[:, :4].unbind(1), 0, 0), 1)
    assert torch.equal(tg.philox_words(zero.to(DEVICE)).cpu(), exp)
    got = tg.philox_words(rows.to(DEVICE)).cpu()
    for r in range(0, 777, 97):
        c = rows[r : r + 1, :4].unbind(1)
        want = torch.stack(ref.philox4x32_10(*c, int(rows[r, 4]), int(rows[r, 5])), 1)
        assert torch.equal(got[r : r + 1], want)


# ----------------------------------------------------------------------------------------------
# keep_prob
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(0,), (1,), (5,), (1023,), (37, 51), (3000,)])
def test_keep_prob_matches_reference(dtype, shape):
    a, b = pair(shape, dtype, seed=sum(shape))
    got = keep_prob_op(a, b)
    assert got.device == a.device
    assert_same_bits(got, ref.keep_prob(a.cpu(), b.cpu()).to(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_keep_prob_special_values(dtype):
    inf, nan = float("inf"), float("nan")
    tiny = torch.finfo(dtype).tiny
    vals = [0.0, -0.0, 1.0, -1.0, inf, -inf, nan, tiny, -tiny, tiny / 4, 3e-39, -3e-39, 1e-30, 1e30]
    a = torch.tensor([x for x in vals for _ in vals], dtype=torch.float64).to(dtype)
    b = torch.tensor([y for _ in vals for y in vals], dtype=torch.float64).to(dtype)
    got = keep_prob_op(a.to(DEVICE), b.to(DEVICE))
    assert_same_bits(got, ref.keep_prob(a, b).to(dtype))


def test_keep_prob_non_contiguous():
    a, b = pair((40, 30), torch.float32, seed=3)
    got = keep_prob_op(a.t(), b.t())
    assert got.is_contiguous()
    assert_same_bits(got, ref.keep_prob(a.t().cpu(), b.t().cpu()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_keep_prob_opcheck(dtype):
    a, b = pair((7, 5), dtype, seed=4)
    torch.library.opcheck(torch.ops.regops.graddrop_keep_prob_triton.default, (a, b))


# ----------------------------------------------------------------------------------------------
# apply
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("lam", LAMS)
def test_apply_matches_reference(dtype, lam):
    seed = 12345678901
    pairs = [pair(s, dtype, seed=i) for i, s in enumerate(SHAPES)]
    task, reg = [p[0] for p in pairs], [p[1] for p in pairs]
    out = [torch.full_like(a, 7.0) for a in task]
    counts = apply_op(out, task, reg, lam, seed)
    assert counts.dtype == torch.int64 and counts.device == task[0].device
    assert torch.equal(counts.cpu(), torch.zeros(len(task), dtype=torch.int64))
    for o, e in zip(out, expected_list([a.cpu() for a in task], [b.cpu() for b in reg], lam, seed)):
        assert_same_bits(o, e)
    if lam > 0:  # not vacuous: some elements kept, some dropped
        o, a = out[-1].float(), task[-1].float()
        nz = a != 0
        assert bool((o[nz] == a[nz]).any()) and bool((o[nz] != a[nz]).any())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_apply_mixed_list(seed, inplace):
    """A list mixing the three dtypes over the odd sizes (each dtype group is one launch), with 2-D, empty
    and multi-block tensors; out[t] is grads_task[t] when inplace."""
    shapes = SHAPES + [(2, 3), (4100,), (0, 7)]
    task, reg = [], []
    for i, s in enumerate(shapes):
        a, b = pair(s, DTYPES[i % 3], seed=10 + i)
        task.append(a)
        reg.append(b)
    exp = expected_list([a.cpu() for a in task], [b.cpu() for b in reg], 0.3, seed)
    out = task if inplace else [torch.empty_like(a) for a in task]
    ptrs = [a.data_ptr() for a in task]
    counts = apply_op(out, task, reg, 0.3, seed)
    assert torch.equal(counts.cpu(), torch.zeros(len(shapes), dtype=torch.int64))
    if inplace:
        assert [a.data_ptr() for a in task] == ptrs
    for o, e in zip(out, exp):
        assert_same_bits(o, e)


def test_apply_one_launch_per_dtype(monkeypatch):
    """Three dtypes among six non-empty tensors (and an empty one): three launches."""
    launches = []
    kernel = tg.graddrop_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return kernel[grid]

    monkeypatch.setattr(tg, "graddrop_kernel", Counting())
    monkeypatch.setattr(tg._host, "check_device", lambda *args: None)
    shapes = [(5,), (1023,), (37, 51), (3,), (0,), (2000,), (1,)]
    task, reg = [], []
    for i, s in enumerate(shapes):
        a, b = pair(s, DTYPES[i % 3], seed=i)
        task.append(a)
        reg.append(b)
    out = [torch.empty_like(a) for a in task]
    apply_op(out, task, reg, 0.5, 3)
    # programs of 1024 elements: float32 5, 3, 1 -> 3; bfloat16 1023, 0 -> 1; float16 1887, 2000 -> 2 + 2
    assert sorted(g[0] for g in launches) == [1, 3, 4]
    for o, e in zip(out, expected_list([a.cpu() for a in task], [b.cpu() for b in reg], 0.5, 3)):
        assert_same_bits(o, e)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_apply_nonfinite_counts(dtype):
    task, reg, want = [], [], []
    for i, s in enumerate([(1,), (5,), (1023,), (37, 51), (3,)]):
        a, b = pair(s, dtype, seed=20 + i)
        if i != 4:  # the last one stays finite
            a, b, _ = with_nonfinite(a, b, seed=i)
        task.append(a)
        reg.append(b)
    out = [torch.empty_like(a) for a in task]
    counts = apply_op(out, task, reg, 0.3, 99)
    exp_counts = expected_counts([a.cpu() for a in task], [b.cpu() for b in reg])
    assert int(exp_counts[2]) >= 4 and int(exp_counts[4]) == 0
    assert torch.equal(counts.cpu(), exp_counts)
    for o, e in zip(out, expected_list([a.cpu() for a in task], [b.cpu() for b in reg], 0.3, 99)):
        assert_same_bits(o, e)


def test_apply_unaligned_and_non_contiguous():
    """Data pointers off the 16-byte alignment (the unaligned kernel variant) and non-contiguous inputs
    (element e is the row-major index of the logical shape)."""
    base_a, base_b = pair((1 + 2100,), torch.float32, seed=30)
    a1, b1 = base_a[1:], base_b[1:]                       # 4-byte aligned views
    a2, b2 = pair((30, 40), torch.float32, seed=31)
    a2, b2 = a2.t(), b2.t()                               # transposed: copied by the op
    store = torch.empty(2101 + 1200, device=DEVICE)
    out = [store[1:2101], store[2101:].view(40, 30)]
    task, reg = [a1, a2], [b1, b2]
    counts = apply_op(out, task, reg, 0.3, 5)
    assert torch.equal(counts.cpu(), torch.zeros(2, dtype=torch.int64))
    for o, e in zip(out, expected_list([a.cpu() for a in task], [b.cpu() for b in reg], 0.3, 5)):
        assert_same_bits(o, e)


def test_apply_opcheck():
    task = [pair((5,), torch.float32, seed=1)[0], pair((7, 3), torch.bfloat16, seed=2)[0]]
    reg = [pair((5,), torch.float32, seed=3)[1], pair((7, 3), torch.bfloat16, seed=4)[1]]
    out = [torch.empty_like(a) for a in task]
    torch.library.opcheck(torch.ops.regops.graddrop_apply_triton.default, (out, task, reg, 0.3, 5))


def test_apply_empty_list():
    counts = apply_op([], [], [], 0.3, 1)
    assert counts.dtype == torch.int64 and counts.shape == (0,)


def test_apply_tensor_index_and_seed_change_the_mask():
    """The same values at list index 0 and 1, or under two seeds, drop different elements."""
    a, b = pair((1023,), torch.float32, seed=40)
    out = [torch.empty_like(a), torch.empty_like(a)]
    apply_op(out, [a, a], [b, b], 0.5, 1)
    assert not torch.equal(out[0], out[1])
    again = [torch.empty_like(a)]
    apply_op(again, [a], [b], 0.5, 2)
    assert not torch.equal(out[0], again[0])


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
def _lists(n=4, dtype=torch.float32):
    task = [torch.randn(3, device=DEVICE, dtype=dtype) for _ in range(n)]
    reg = [torch.randn(3, device=DEVICE, dtype=dtype) for _ in range(n)]
    return [torch.empty_like(a) for a in task], task, reg


def _replace(xs, i, v):
    xs = list(xs)
    xs[i] = v
    return xs


@pytest.mark.parametrize("case,exc,msg", [
    ("reg_len", ValueError, "regops.graddrop_: grads_reg: expected a list of 4 tensors (as grads_task), got 3"),
    ("out_len", ValueError, "regops.graddrop_: out: expected a list of 4 tensors (as grads_task), got 5"),
    ("reg_shape", ValueError, "regops.graddrop_: grads_reg[3]: expected shape (3,) (as grads_task[3]), got shape (4,)"),
    ("out_shape", ValueError, "regops.graddrop_: out[1]: expected shape (3,) (as grads_task[1]), got shape (3, 1)"),
    ("reg_dtype", TypeError, "regops.graddrop_: grads_reg[2]: expected dtype float32 (as grads_task[2]), got float16"),
    ("out_dtype", TypeError, "regops.graddrop_: out[0]: expected dtype float32 (as grads_task[0]), got bfloat16"),
    ("task_dtype", TypeError,
     "regops.graddrop_: grads_task[1]: expected dtype in (float32, bfloat16, float16), got float64"),
    ("task_device", RuntimeError, "regops.graddrop_: grads_task[2]: expected device"),
    ("reg_device", RuntimeError, "regops.graddrop_: grads_reg[3]: expected device"),
    ("out_noncontig", ValueError, "regops.graddrop_: out[2]: expected a contiguous tensor, got strides (2,)"),
])
def test_apply_errors(case, exc, msg):
    out, task, reg = _lists()
    if case == "reg_len":
        reg = reg[:3]
    elif case == "out_len":
        out = out + [out[0]]
    elif case == "reg_shape":
        reg = _replace(reg, 3, torch.randn(4, device=DEVICE))
    elif case == "out_shape":
        out = _replace(out, 1, torch.empty(3, 1, device=DEVICE))
    elif case == "reg_dtype":
        reg = _replace(reg, 2, reg[2].half())
    elif case == "out_dtype":
        out = _replace(out, 0, out[0].bfloat16())
    elif case == "task_dtype":
        task = _replace(task, 1, task[1].double())
        reg = _replace(reg, 1, reg[1].double())
        out = _replace(out, 1, out[1].double())
    elif case == "task_device":
        task = _replace(task, 2, task[2].to("meta"))
    elif case == "reg_device":
        reg = _replace(reg, 3, reg[3].to("meta"))
    elif case == "out_noncontig":
        out = _replace(out, 2, torch.empty(6, device=DEVICE)[::2])
    with pytest.raises(exc) as info:
        apply_op(out, task, reg, 0.3, 1)
    assert str(info.value).startswith(msg), str(info.value)


@pytest.mark.parametrize("case,exc,msg", [
    ("dtype", TypeError, "regops.graddrop_keep_prob: grad_task: expected dtype in (float32, bfloat16, float16), "
                         "got float64"),
    ("reg_dtype", TypeError, "regops.graddrop_keep_prob: grad_reg: expected dtype float32 (as grad_task), "
                             "got bfloat16"),
    ("shape", ValueError, "regops.graddrop_keep_prob: grad_reg: expected shape (3,) (as grad_task), got shape (2,)"),
    ("device", RuntimeError, "regops.graddrop_keep_prob: grad_reg: expected device"),
])
def test_keep_prob_errors(case, exc, msg):
    a, b = torch.randn(3, device=DEVICE), torch.randn(3, device=DEVICE)
    if case == "dtype":
        a, b = a.double(), b.double()
    elif case == "reg_dtype":
        b = b.bfloat16()
    elif case == "shape":
        b = b[:2]
    elif case == "device":
        b = b.to("meta")
    with pytest.raises(exc) as info:
        keep_prob_op(a, b)
    assert str(info.value).startswith(msg), str(info.value)
