"""The regops bench under pytest-benchmark: `pytest bench/ --benchmark-only` times the cases that
`python -m regops bench` times. Both take them from regops.bench.harness.discover, so a case is defined once,
in python/regops/bench/cases/<family>.py.

Options (besides pytest-benchmark's own):
  --regops-full           every size (default: the quick sizes, as `python -m regops bench --quick`)
  --regops-device D       cpu (default) or cuda
  --regops-op NAME        only this op, or every op of this bench module (repeatable; `python -m regops bench --list`)
  --regops-memory         peak memory per case, in benchmark.extra_info["peak_mib"] (CPU: a subprocess per case)

Each case: setup() once, untimed; the first call timed apart (extra_info["first_call_ms"]: it holds compilation);
a warm-up call that sizes the rounds: as many as --benchmark-max-time allows (default 1 s), at least
--benchmark-min-rounds (default 5), at most a case's min_reps. REGOPS_BENCH_MAX_REPS (smoke runs): no warm-up and at
most that many rounds. On CUDA the timed call synchronizes, and each round starts with a cold L2 (harness.flush_l2,
untimed). Bound rows are timed part by part (ids ending |partN, extra_info["part_weight"]): bound = Σ weight · time.

Not part of the test suite (pyproject's testpaths is tests/) and independent of tests/conftest.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest
import torch

from regops.bench import harness


@dataclass
class BenchItem:
    """One timed entry: a case, or one part of a bound row (its parts are timed one by one, as the harness does)."""
    case: harness.Case
    part: Optional[int] = None  # index into case.parts

    @property
    def id(self) -> str:
        return self.case.id if self.part is None else f"{self.case.id}|part{self.part + 1}"

    def call(self, state):
        if self.part is None:
            return self.case.fn(state)
        return self.case.parts[self.part][1](state)


def pytest_addoption(parser):
    group = parser.getgroup("regops", "regops bench cases (bench/conftest.py)")
    group.addoption("--regops-full", action="store_true", help="every size (default: the quick sizes)")
    group.addoption("--regops-device", choices=("cpu", "cuda"), default="cpu", help="where the inputs live")
    group.addoption("--regops-op", action="append", default=None, metavar="NAME",
                    help="only this op, or every op of this bench module (repeatable)")
    group.addoption("--regops-memory", action="store_true",
                    help="measure each case's peak memory into benchmark.extra_info['peak_mib']")


def bench_device(config) -> torch.device:
    device = torch.device(config.getoption("--regops-device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("regops bench: --regops-device: expected a CUDA device for cuda, got none here")
    return device


def bench_items(config) -> list[BenchItem]:
    quick, ops = not config.getoption("--regops-full"), config.getoption("--regops-op")
    device = bench_device(config)
    cases = harness.discover(quick, device, ops)
    if not cases:
        known = sorted({c.op for c in harness.discover(quick, device)}
                       | {harness.module_stem(m) for m in harness.case_modules()})
        raise pytest.UsageError(f"regops bench: --regops-op: expected an op or a bench module ({', '.join(known)}), "
                                f"got {', '.join(ops)}")
    items = []
    for case in cases:
        items += [BenchItem(case, i) for i in range(len(case.parts))] if case.parts else [BenchItem(case)]
    return items


BENCH_ITEMS = pytest.StashKey[list]()


def pytest_configure(config):
    # Here rather than at collection: a wrong --regops-* option ends the run with its message, not a traceback.
    config.stash[BENCH_ITEMS] = bench_items(config)


def pytest_generate_tests(metafunc):
    if "bench_item" in metafunc.fixturenames:
        items = metafunc.config.stash[BENCH_ITEMS]
        metafunc.parametrize("bench_item", items, ids=[item.id for item in items])


@pytest.fixture(scope="session")
def bench_settings(request) -> dict:
    """The device and flags of this session; configures torch as the harness does (threads, seed)."""
    device = bench_device(request.config)
    harness.configure(device)
    return dict(device=device, quick=not request.config.getoption("--regops-full"),
                memory=request.config.getoption("--regops-memory"),
                min_rounds=request.config.getoption("benchmark_min_rounds"),
                max_time_s=float(request.config.getoption("benchmark_max_time")))
