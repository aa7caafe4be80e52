"""One benchmark per case of regops.bench.cases (see conftest.py): `pytest bench/ --benchmark-only`."""
from __future__ import annotations

import time

import pytest
import torch

from regops.bench import harness

pytest.importorskip("pytest_benchmark", reason="pytest bench/ needs pytest-benchmark: pip install regops[bench]")

MAX_ROUNDS = 200  # the harness's cap on a full run's repetitions


def _timed_ms(call) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1e3


def test_case(bench_item, bench_settings, benchmark):
    case, device = bench_item.case, bench_settings["device"]
    why = harness.skip_reason(case)
    if why:
        pytest.skip(why)
    benchmark.group = f"{case.op} {case.size}"
    benchmark.extra_info.update(op=case.op, size=case.size, size_value=case.problem_size, provider=case.provider,
                                mode=case.mode, baseline=case.baseline, note=case.note)
    if bench_item.part is not None:
        benchmark.extra_info["part_weight"] = case.parts[bench_item.part][0]  # the bound = Σ weight · part's time
    state = case.setup()  # untimed, once: the repetitions reuse the inputs, as in the harness
    cuda = device.type == "cuda"

    def call():
        bench_item.call(state)
        if cuda:
            torch.cuda.synchronize()  # a wall-clock timer: the kernels must have finished

    flush = None
    if cuda:
        flush_buffer = harness.l2_flush_buffer(device)

        def flush():
            harness.flush_l2(flush_buffer)  # a cold L2 per round, as the harness's CUDA timing has
            torch.cuda.synchronize()  # finished before the round's clock starts

    if flush:
        flush()
    benchmark.extra_info["first_call_ms"] = _timed_ms(call)  # compilation included: not a round
    if harness.MAX_REPS:  # a smoke run, as in the harness: no warm-up, at most MAX_REPS rounds
        rounds = min(bench_settings["min_rounds"], harness.MAX_REPS)
    else:
        if flush:
            flush()
        warm_ms = _timed_ms(call)  # the warm-up, and the estimate that sizes the rounds
        fit = int(bench_settings["max_time_s"] * 1e3 / max(warm_ms, 1e-3))  # rounds within --benchmark-max-time
        rounds = max(bench_settings["min_rounds"], min(MAX_ROUNDS, fit))
        if case.min_reps:
            rounds = min(rounds, case.min_reps)
    benchmark.pedantic(call, setup=flush, rounds=rounds, warmup_rounds=0)
    del state
    if bench_settings["memory"] and case.memory and bench_item.part is None:
        if cuda:
            torch.cuda.empty_cache()
            benchmark.extra_info["peak_mib"] = harness.measure_memory_here(case, device) / harness.MIB
        else:
            peak_mib, error = harness.memory_subprocess(case, bench_settings["quick"])
            benchmark.extra_info["peak_mib"] = peak_mib
            if error:
                benchmark.extra_info["memory_error"] = error
