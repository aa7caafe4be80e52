"""regops benchmark harness: every module of regops.bench.cases, providers timed side by side in one process.

A bench module exposes ``cases(quick: bool, device: torch.device) -> list[Case]``. Each case is one
(op, size, provider): ``setup()`` builds the inputs (untimed), ``fn(state)`` is the timed call. The
harness times each case (first call reported apart: it holds compilation), takes the median, p20 and
p80 of the repetitions, then measures peak memory: on CPU in a fresh subprocess per case
(``python -m regops bench --memory-case ID``), on CUDA with the allocator's peak counter. On CUDA every timed
repetition starts with a cold L2 (flush_l2). The same cases serve pytest-benchmark: ``pytest bench/
--benchmark-only`` in a checkout (bench/conftest.py calls discover).

Run it as ``python -m regops bench [--quick] [--op NAME] [--device cpu|cuda] [--csv PATH] [--no-memory]
[--list] [--plot DIR] [--report [PATH]]``. Rows are appended to --csv, by default ./bench/results/<cpu|cuda>.csv
where the current directory has a bench/results/ folder (a regops checkout: the CSVs behind the README), else to
./regops-bench-<cpu|cuda>.csv. A run stamps all its rows with one timestamp; size_value, the last column, is the
problem's element count (Case.size_value, else size_value_from_label), the plots' x axis.

--plot DIR draws DIR/<op>_time.png and DIR/<op>_memory.png (regops.bench.plot; needs matplotlib); --report [PATH]
writes the Markdown summary (regops.bench.report) to PATH or stdout. ``python -m regops bench --from-csv PATH
[--run latest|all|TIMESTAMP] [--op NAME] [--plot DIR] [--report [PATH]]`` does both for rows already in a CSV
(the latest run by default; the report on stdout where neither is asked for), timing nothing.

Environment: REGOPS_BENCH_THREADS (CPU threads, default 2), REGOPS_BENCH_PROGRESS (tqdm|plain, see progress),
REGOPS_BENCH_MAX_REPS (smoke runs only: caps the timed repetitions and skips the warm-up).
"""
from __future__ import annotations

import csv
import ctypes
import datetime
import gc
import importlib
import json
import math
import os
import pkgutil
import platform
import re
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import regops

from . import cases as cases_package
from .progress import Progress

MEMORY_LIMIT_BYTES = 12 * 2**30   # cases predicted to need more are skipped, not run
CPU_THREADS = int(os.environ.get("REGOPS_BENCH_THREADS", "2"))
# Smoke runs (the CLI's tests): at most this many timed repetitions and no warm-up. Their figures are not
# measurements; the CSV's reps column shows it.
MAX_REPS = int(os.environ.get("REGOPS_BENCH_MAX_REPS", "0")) or None
MIB = 2**20


@dataclass
class Case:
    op: str                         # op name: the --op filter and the first table column
    size: str                       # size label, e.g. "448x16x4096"
    provider: str                   # who computes it: "official", "reference", "cpu", ...
    setup: Callable[[], Any]        # builds the inputs; its result is passed to fn (and parts)
    fn: Optional[Callable[[Any], Any]] = None
    baseline: Optional[str] = "official"   # provider of the same (op, size) that speedups are relative to
    mode: str = "full"              # what fn times: fwd, bwd or full (fwd+bwd)
    predicted_bytes: int = 0        # total memory the case needs, inputs included
    # For bound rows: (weight, fn) pairs, each timed on its own; one repetition = Σ weight·time.
    parts: tuple = ()
    skip: Optional[str] = None      # why it cannot run here (unavailable impl); recorded, not run
    memory: bool = True             # measure its peak memory (False for rows that are not an op)
    min_reps: Optional[int] = None  # fewer timed repetitions than the default (minute-long cases)
    note: str = ""
    # Elements of the problem (e.g. N·M), the plots' x axis; None: size_value_from_label(size).
    size_value: Optional[float] = None

    @property
    def id(self) -> str:
        return f"{self.op}|{self.size}|{self.provider}"

    @property
    def problem_size(self) -> Optional[float]:
        return self.size_value if self.size_value is not None else size_value_from_label(self.size)


# An integer with the names assigned to it: "N=M=1000" gives ("N=M=", "1000").
_LABEL_INTEGER = re.compile(r"((?:[A-Za-z_]\w*=)*)(\d+)")


def size_value_from_label(label: str) -> Optional[float]:
    """The product of the integers in a size label: "N=256 D=128" -> 32768, "448x16x4096" -> 448·16·4096. A value
    assigned to several names counts once per name ("N=M=1000 d=3" -> 1000·1000·3). None if it holds none."""
    found = _LABEL_INTEGER.findall(label)
    if not found:
        return None
    value = 1.0
    for names, digits in found:
        value *= float(digits) ** max(1, names.count("="))
    return value


@dataclass
class Result:
    case: Case
    status: str = "ok"              # ok | skipped: ... | error: ...
    times_ms: list = field(default_factory=list)
    first_ms: float = math.nan      # the first call, compilation included
    load: float = math.nan          # 1-minute load average when its group started (CPU noise)
    peak_mib: float = math.nan
    speedup: float = math.nan

    @property
    def median(self) -> float:
        return percentile(self.times_ms, 50)


def percentile(xs, q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without needing numpy."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ---------------------------------------------------------------------------------------------- discovery

def case_modules() -> list:
    """The bench modules of regops.bench.cases, by name (imported: their imports are light)."""
    names = sorted(info.name for info in pkgutil.iter_modules(cases_package.__path__) if not info.ispkg)
    return [importlib.import_module(f"{cases_package.__name__}.{name}") for name in names]


def module_stem(module) -> str:
    return module.__name__.rsplit(".", 1)[-1]


def _selected(case: Case, stem: str, ops) -> bool:
    # An op name, or a module name (--op orthonormal; bench_orthonormal, its name before the move, too).
    return not ops or case.op in ops or stem in ops or f"bench_{stem}" in ops


def discover(quick: bool, device: torch.device, ops=None) -> list[Case]:
    """Cases of every bench module, filtered by op name (or by module name: --op orthonormal)."""
    found = []
    for module in case_modules():
        stem = module_stem(module)
        found += [case for case in module.cases(quick, device) if _selected(case, stem, ops)]
    return found


def list_cases(quick: bool, device: torch.device) -> None:
    """The ops and their providers, per bench module, without timing anything."""
    print(f"regops bench cases ({device}, {'quick' if quick else 'full'}); --op takes an op or a module name")
    for module in case_modules():
        print(f"{module_stem(module)}:")
        by_op = {}  # op -> {provider: why it cannot run here, or None}; insertion order is the run order
        sizes = {}
        for case in module.cases(quick, device):
            providers = by_op.setdefault(case.op, {})
            why = skip_reason(case)
            if case.provider not in providers or providers[case.provider] is not None:
                providers[case.provider] = why
            sizes.setdefault(case.op, set()).add(case.size)
        for op, providers in by_op.items():
            names = [p if why is None else f"{p} (unavailable)" for p, why in providers.items()]
            n = len(sizes[op])
            print(f"  {op} ({n} size{'s' if n != 1 else ''}): {', '.join(names)}")


def configure(device: torch.device) -> None:
    if device.type == "cpu":
        torch.set_num_threads(CPU_THREADS)  # the same thread count everywhere: comparable rows
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------- timing

def _timer(device: torch.device):
    """Returns time_ms(callable) for the device: wall clock on CPU, CUDA events on the GPU."""
    if device.type == "cuda":
        def time_ms(call):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        return time_ms

    def time_ms(call):
        t0 = time.perf_counter()
        call()
        return (time.perf_counter() - t0) * 1e3
    return time_ms


L2_FLUSH_BYTES = 256 * MIB   # several times a GPU's L2 (an H100's holds 50 MB)


def flush_l2(buffer: torch.Tensor) -> None:
    """Overwrites `buffer`, larger than the GPU's L2, so the next timed call finds none of its inputs there.

    Without it a memory-bound kernel re-reads what its previous repetition left in L2 and looks faster than it is
    in a training step, where other work runs in between (triton.testing.do_bench flushes the same way). Enqueued
    before the call's start event: the write is not part of the time."""
    buffer.zero_()


def l2_flush_buffer(device: torch.device) -> torch.Tensor:
    return torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device=device)


def _one_rep(case: Case, state, time_ms, before_each: Optional[Callable[[], None]] = None) -> float:
    """One repetition's time; `before_each` (the L2 flush) runs before every timed call, each part's too."""
    def timed(call):
        if before_each is not None:
            before_each()
        return time_ms(call)

    if case.parts:
        return sum(w * timed(lambda f=f: f(state)) for w, f in case.parts)
    return timed(lambda: case.fn(state))


def _error(exc: Exception) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"error: {type(exc).__name__}: {first}"[:200]


def skip_reason(case: Case) -> Optional[str]:
    if case.skip:
        return case.skip
    if case.predicted_bytes > MEMORY_LIMIT_BYTES:
        return f"predicted {case.predicted_bytes / 2**30:.1f} GiB > {MEMORY_LIMIT_BYTES / 2**30:.0f} GiB"
    return None


def time_group(cases: list[Case], device: torch.device, quick: bool) -> list[Result]:
    """Times the providers of one (op, size) together: each gets its first call (timed apart: it holds any
    compilation) and a short warm-up, then the repetitions go round-robin over the providers, so a burst
    of load on a shared machine lands on all of them rather than on whichever ran at that moment. On CUDA each
    timed repetition starts with a cold L2 (flush_l2)."""
    min_reps, max_reps, budget_ms, warm_ms = (5, 20, 400, 100) if quick else (10, 200, 3000, 500)
    if MAX_REPS:
        min_reps, max_reps, warm_ms = min(min_reps, MAX_REPS), min(max_reps, MAX_REPS), 0
    time_ms = _timer(device)
    load = load_average()
    results = [Result(c, load=load) for c in cases]
    live = []  # [result, state, repetitions wanted]
    for r in results:
        why = skip_reason(r.case)
        if why:
            r.status = f"skipped: {why}"
            continue
        try:
            state = r.case.setup()
            r.first_ms = _one_rep(r.case, state, time_ms)
            warm, spent = [], 0.0
            while spent < warm_ms and len(warm) < 5:  # the first call may be compilation: not an estimate
                warm.append(_one_rep(r.case, state, time_ms))
                spent += warm[-1]
            floor = min_reps if r.case.min_reps is None else min(min_reps, r.case.min_reps)
            estimate_ms = min(warm) if warm else r.first_ms  # no warm-up only in smoke runs (MAX_REPS)
            live.append([r, state, max(floor, min(max_reps, int(budget_ms / max(estimate_ms, 1e-3))))])
        except Exception as exc:  # one failing provider must not end the run
            r.status = _error(exc)
    gc.collect()
    # One buffer per group: allocating it per repetition would cost more. Not on CPU: there the write would
    # add tens of ms to every repetition, and the CPU rows time warm-cache calls throughout.
    flush_buffer = l2_flush_buffer(device) if device.type == "cuda" and live else None
    flush = None if flush_buffer is None else (lambda: flush_l2(flush_buffer))
    gc.disable()  # a collection inside a repetition is noise, not the op's cost
    try:
        while live:
            for entry in list(live):
                r, state, wanted = entry
                try:
                    r.times_ms.append(_one_rep(r.case, state, time_ms, before_each=flush))
                except Exception as exc:
                    r.status, r.times_ms = _error(exc), []
                if r.status != "ok" or len(r.times_ms) >= wanted:
                    live.remove(entry)
    finally:
        gc.enable()
    del live, flush, flush_buffer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def groups(cases: list[Case], mem_budget: float) -> list[list[Case]]:
    """Consecutive cases of one (op, size), split where their inputs would not fit in memory together."""
    out, used = [], 0.0
    for c in cases:
        same = out and (out[-1][0].op, out[-1][0].size) == (c.op, c.size)
        if same and used + c.predicted_bytes <= mem_budget:
            out[-1].append(c)
            used += c.predicted_bytes
        else:
            out.append([c])
            used = c.predicted_bytes
    return out


# ---------------------------------------------------------------------------------------------- memory

def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Resets the kernel's RSS high-water mark (Linux ≥ 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_freed_heap() -> None:
    """Hands freed heap pages back to the OS, so the baseline RSS holds the inputs and not leftovers."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_memory_here(case: Case, device: torch.device) -> int:
    """Peak extra bytes of one call above its inputs, in this process (the subprocess on CPU)."""
    def run(state):
        return [f(state) for _, f in case.parts] if case.parts else case.fn(state)

    resettable = device.type == "cuda" or _reset_peak_rss()
    if resettable:
        # Warm up on throwaway inputs: compilation and one-time workspaces are not per-call memory, and
        # gradients it leaves behind must not sit in the baseline (a call allocates them).
        run(case.setup())
        gc.collect()
    state = case.setup()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(state)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    _release_freed_heap()
    regops.empty_cache()  # buffers regops cached during the warm-up are per-call memory: count them
    if resettable:
        _reset_peak_rss()
        base = _proc_status_kib("VmRSS")
        run(state)
        return (_proc_status_kib("VmHWM") - base) * 1024
    # No resettable high-water mark: ru_maxrss after building the inputs vs after one (cold) call.
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(state)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024


def memory_subprocess(case: Case, quick: bool, timeout_s: float = 300) -> tuple[float, str]:
    """Runs one case's memory measurement in a fresh interpreter: (peak MiB, error text or "")."""
    # Through the package's CLI: the child imports regops the way this process did (installed or PYTHONPATH).
    cmd = [sys.executable, "-m", "regops", "bench", "--device", "cpu", "--memory-case", case.id] \
        + (["--quick"] if quick else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return math.nan, f"memory subprocess timed out after {timeout_s:.0f} s"
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        err = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return math.nan, f"memory subprocess failed: {err}"[:200]
    return json.loads(lines[-1])["peak_bytes"] / MIB, ""


def _memory_line(progress: Progress, r: Result) -> str:
    c = r.case
    return f"  peak memory [{progress.done + 1}/{progress.total}] {c.op} {c.size} {c.provider}: " \
        f"{_fmt(r.peak_mib, 1)} MiB"


def measure_memory(results: list[Result], device: torch.device, quick: bool) -> None:
    todo = [r for r in results if r.status == "ok" and r.case.memory]
    if device.type == "cuda":
        progress = Progress(len(todo), label="peak memory")
        for r in todo:
            try:
                r.peak_mib = measure_memory_here(r.case, device) / MIB
            except Exception as exc:
                r.case.note = (r.case.note + f"; memory: {type(exc).__name__}").lstrip("; ")
            gc.collect()
            torch.cuda.empty_cache()
            progress.line(_memory_line(progress, r))
            progress.update()
        progress.close()
        return
    # In parallel only where the CPUs allow it without oversubscription (threads that lose their core turn
    # a call many times slower) and where the memory allows it.
    workers = max(1, (os.cpu_count() or 1) // torch.get_num_threads())
    if any(r.case.predicted_bytes * workers > _proc_meminfo_bytes("MemAvailable") / 2 for r in todo):
        workers = 1
    print(f"peak memory: {len(todo)} subprocesses, {workers} at a time ...", flush=True)
    progress = Progress(len(todo), label="peak memory")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for r, (peak, err) in zip(todo, pool.map(lambda r: memory_subprocess(r.case, quick), todo)):
            r.peak_mib = peak
            if err:
                r.case.note = (r.case.note + "; " + err).lstrip("; ")
            progress.line(_memory_line(progress, r) + (f" ({err})" if err else ""))
            progress.update()
    progress.close()


def _memory_available(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return _proc_meminfo_bytes("MemAvailable")


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def _warn_if_shared(device: torch.device, own_load: float) -> None:
    """Other processes on the CPUs wreck multi-threaded timings (a thread that loses its core stalls every
    parallel region, often for a whole scheduler slice); say so, since the numbers alone do not show it."""
    others = load_average() - own_load
    free = (os.cpu_count() or 1) - torch.get_num_threads()
    if device.type == "cpu" and others > free + 1.0:  # slack: the average lags by a minute
        print(f"warning: load average {load_average():.1f} on {os.cpu_count()} CPUs: other processes share them, "
              f"so timings with {torch.get_num_threads()} threads are unreliable (REGOPS_BENCH_THREADS=1 is "
              "steadier)", flush=True)


def _proc_meminfo_bytes(key: str) -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return math.inf


# ---------------------------------------------------------------------------------------------- report

def machine_description(device: torch.device) -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    desc = f"{model} x{os.cpu_count()}"
    if device.type == "cuda":
        desc += f"; {torch.cuda.get_device_name(device)}"
    return desc


def add_speedups(results: list[Result]) -> None:
    medians = {(r.case.op, r.case.size, r.case.provider): r.median for r in results if r.status == "ok"}
    for r in results:
        base = medians.get((r.case.op, r.case.size, r.case.baseline))
        if r.status == "ok" and base is not None:
            r.speedup = base / r.median


def _fmt(x: float, digits: int = 2) -> str:
    if math.isnan(x):
        return "-"
    if abs(x) < 1:
        return f"{x:.3g}"  # microsecond-scale calls keep their significant digits
    return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:.0f}"


TABLE_COLUMNS = (("op", 20), ("size", 14), ("provider", 22), ("median ms", 11), ("p20", 10), ("p80", 10),
                 ("reps", 5), ("1st call ms", 12), ("peak MiB", 9), ("speedup", 9))


def print_table(results: list[Result]) -> None:
    print("".join(name.ljust(w) if i < 3 else name.rjust(w) for i, (name, w) in enumerate(TABLE_COLUMNS)))
    last_group = None
    for r in results:
        c = r.case
        if last_group is not None and (c.op, c.size) != last_group:
            print()
        last_group = (c.op, c.size)
        head = c.op.ljust(20) + c.size.ljust(14) + c.provider.ljust(22)
        if r.status != "ok":
            print(head + "  " + r.status)
            continue
        speed = f"{r.speedup:.2f}x" if not math.isnan(r.speedup) else "-"
        cells = (_fmt(r.median), _fmt(percentile(r.times_ms, 20)), _fmt(percentile(r.times_ms, 80)),
                 str(len(r.times_ms)), _fmt(r.first_ms, 1), _fmt(r.peak_mib, 1), speed)
        print(head + "".join(v.rjust(w) for v, (_, w) in zip(cells, TABLE_COLUMNS[3:])))
    baselines = sorted({(r.case.op, r.case.baseline) for r in results if r.case.baseline})
    print("speedup = the baseline's median / this median; baselines: "
          + ", ".join(f"{op}: {b}" for op, b in baselines))
    print("1st call includes compilation; peak MiB: extra memory of one call above its inputs"
          " (CPU: RSS high-water mark in a subprocess; CUDA: max_memory_allocated)")
    notes = {}  # one line per distinct note, naming the cases it applies to
    for r in results:
        if r.case.note:
            notes.setdefault((r.case.op, r.case.provider, r.case.note), []).append(r.case.size)
    for (op, provider, note), sizes in notes.items():
        print(f"note {op} {provider} ({', '.join(sizes)}): {note}")


CSV_FIELDS = ("timestamp", "machine", "device", "threads", "torch", "regops", "quick", "load1", "op", "size",
              "provider", "mode", "status", "median_ms", "p20_ms", "p80_ms", "reps", "first_call_ms", "peak_mib",
              "baseline", "speedup", "note", "size_value")
# The layout before size_value: such files are upgraded in place (the column is derived from the labels).
CSV_FIELDS_BEFORE_SIZE_VALUE = CSV_FIELDS[:-1]


def _num(x: float, digits: int = 4):
    return "" if math.isnan(x) else round(x, digits)


def _size_cell(value: Optional[float]):
    if value is None:
        return ""
    return int(value) if float(value).is_integer() else value


def csv_rows(results: list[Result], device: torch.device, quick: bool) -> list[dict]:
    """One CSV row (column -> value) per result; every row of a run carries the same timestamp."""
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    common = dict(timestamp=stamp, machine=machine_description(device), device=str(device),
                  threads=torch.get_num_threads(), torch=torch.__version__, regops=regops.__version__, quick=int(quick))
    rows = []
    for r in results:
        c = r.case
        rows.append(dict(common, load1=_num(r.load, 2), op=c.op, size=c.size, provider=c.provider, mode=c.mode,
                         status=r.status, median_ms=_num(r.median), p20_ms=_num(percentile(r.times_ms, 20)),
                         p80_ms=_num(percentile(r.times_ms, 80)), reps=len(r.times_ms),
                         first_call_ms=_num(r.first_ms), peak_mib=_num(r.peak_mib, 1),
                         baseline=c.baseline or "", speedup=_num(r.speedup, 3), note=c.note,
                         size_value=_size_cell(c.problem_size)))
    return rows


def _upgrade_csv_layout(path: Path) -> None:
    """Rewrites a CSV of the layout before size_value with that column, derived from each row's size label."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for row in rows:
            w.writerow(dict(row, size_value=_size_cell(size_value_from_label(row["size"]))))
    os.replace(tmp, path)  # all or nothing: an interrupted upgrade leaves the old file


def write_csv(rows: list[dict], path: Path) -> Path:
    """Appends the rows to the CSV at path; returns the file written (another one where path has a foreign layout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if header and tuple(header) == CSV_FIELDS_BEFORE_SIZE_VALUE:
            _upgrade_csv_layout(path)
            print(f"upgraded {path}: a size_value column, derived from the size labels", flush=True)
        elif header and tuple(header) != CSV_FIELDS:  # another layout: never mix columns in one file
            path = path.with_name(f"{path.stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}{path.suffix}")
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
    return path


# Columns the plots and the report read; older CSVs lack size_value only.
CSV_COLUMNS_READ = ("timestamp", "machine", "device", "threads", "torch", "regops", "quick", "op", "size", "provider",
                    "status", "median_ms", "peak_mib")


def read_csv(path: Path) -> list[dict]:
    """The rows of a bench CSV (column -> text); where size_value is absent or empty it is derived from the label."""
    if not path.is_file():
        sys.exit(f"regops bench: --from-csv: expected an existing CSV file, got {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS_READ if c not in (reader.fieldnames or ())]
        if missing:
            sys.exit(f"regops bench: --from-csv: expected a regops bench CSV (columns {', '.join(CSV_COLUMNS_READ)}), "
                     f"got {path} without {', '.join(missing)}")
        rows = list(reader)
    for row in rows:
        if row.get("size_value") in (None, ""):
            row["size_value"] = _size_cell(size_value_from_label(row["size"]))
    return rows


def row_number(row: dict, column: str) -> float:
    """A numeric cell of a row, read from a CSV (text) or made by csv_rows (numbers); NaN where empty."""
    value = row.get(column)
    return math.nan if value in (None, "") else float(value)


def _stamp_order(stamp: str):
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()  # offsets compared as instants
    except ValueError:
        return math.inf  # not ISO: written by hand, kept apart from the real runs' order


def select_run(rows: list[dict], run: str = "latest") -> list[dict]:
    """The rows of one run (write_csv stamps all rows of a run with one timestamp): "latest", a timestamp, or
    "all": every run, the newest row of each (device, op, size, provider) kept, in their first order."""
    if not rows:
        return []
    stamps = sorted({r["timestamp"] for r in rows}, key=_stamp_order)
    if run == "latest":
        return [r for r in rows if r["timestamp"] == stamps[-1]]
    if run == "all":
        newest = {}
        for r in sorted(rows, key=lambda r: _stamp_order(r["timestamp"])):  # stable: file order within a run
            newest[(r["device"], r["op"], r["size"], r["provider"])] = r
        order = {}
        for r in rows:
            order.setdefault((r["device"], r["op"], r["size"], r["provider"]), len(order))
        return sorted(newest.values(), key=lambda r: order[(r["device"], r["op"], r["size"], r["provider"])])
    if run in stamps:
        return [r for r in rows if r["timestamp"] == run]
    sys.exit(f"regops bench: --run: expected latest, all or a timestamp of the CSV ({', '.join(stamps)}), got {run}")


# ---------------------------------------------------------------------------------------------- entry points

def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("regops bench: --device cuda, but torch sees no CUDA device here")
    if device.type not in ("cpu", "cuda"):
        sys.exit(f"regops bench: --device {name}: the bench runs on cpu or cuda")
    return device


def default_csv_path(device: torch.device, cwd: Optional[Path] = None) -> Path:
    """./bench/results/<cpu|cuda>.csv in a regops checkout (the CSVs behind the README), else a file here."""
    cwd = Path.cwd() if cwd is None else cwd
    kind = "cuda" if device.type == "cuda" else "cpu"
    results_dir = cwd / "bench" / "results"
    return results_dir / f"{kind}.csv" if results_dir.is_dir() else cwd / f"regops-bench-{kind}.csv"


def _case_line(r: Result, done: int, total: int) -> str:
    summary = f"{_fmt(r.median)} ms ({len(r.times_ms)} reps, 1st call {_fmt(r.first_ms, 1)} ms)" \
        if r.status == "ok" else r.status
    return f"  [{done}/{total}] {r.case.op} {r.case.size} {r.case.provider}: {summary}"


def check_outputs(plot_dir: Optional[str], report: Optional[str]) -> None:
    """Refuses --plot / --report that could not be written, before anything is timed."""
    if plot_dir is not None:
        from . import plot
        plot.require_matplotlib()
        plot.check_plot_dir(Path(plot_dir))
    if report is not None:
        from . import report as report_module
        report_module.check_report_path(report)


def render(rows: list[dict], plot_dir: Optional[str], report: Optional[str], command: str, source: str = "") -> None:
    """The plots (--plot DIR) and the Markdown report (--report [PATH]) of the rows."""
    if plot_dir is not None:
        from . import plot
        written = plot.plot_rows(rows, Path(plot_dir))
        print(f"wrote {len(written)} plot(s) to {plot_dir}" + (f": {', '.join(p.name for p in written)}" if written
                                                                else " (no row is ok)"), flush=True)
    if report is not None:
        from . import report as report_module
        report_module.write_report(report_module.report_markdown(rows, command, source=source), report)


def ops_filter(rows: list[dict], ops) -> list[dict]:
    """The rows of the ops named (an op, or a bench module: --op orthonormal), as --op selects cases."""
    if not ops:
        return rows
    of_modules = {c.op for m in case_modules() if module_stem(m) in ops or f"bench_{module_stem(m)}" in ops
                  for c in m.cases(False, torch.device("cpu"))}
    kept = [r for r in rows if r["op"] in ops or r["op"] in of_modules]
    if not kept:
        sys.exit(f"regops bench: --op: expected an op of the rows ({', '.join(dict.fromkeys(r['op'] for r in rows))}) "
                 f"or its bench module, got {', '.join(ops)}")
    return kept


def from_csv_main(csv_path: str, run: str = "latest", ops=None, plot_dir: Optional[str] = None,
                  report: Optional[str] = None, command: str = "") -> list[dict]:
    """Plots and reports rows of an existing CSV, timing nothing; with neither --plot nor --report, the report
    goes to stdout."""
    check_outputs(plot_dir, report)
    rows = read_csv(Path(csv_path))
    if not rows:
        sys.exit(f"regops bench: --from-csv: expected rows, got only a header in {csv_path}")
    selected = ops_filter(select_run(rows, run), ops)
    source = f"{csv_path}, --run {run}"  # the header names the runs' timestamps
    if plot_dir is None and report is None:
        report = "-"
    render(selected, plot_dir, report, command, source=source)
    return selected


def main(quick: bool = False, ops=None, csv_path: Optional[str] = None, memory: bool = True,
         device: str = "cpu", plot_dir: Optional[str] = None, report: Optional[str] = None,
         command: str = "") -> list[Result]:
    device = resolve_device(device)
    check_outputs(plot_dir, report)
    configure(device)
    cases = discover(quick, device, ops)
    if not cases:
        known = sorted({c.op for c in discover(quick, device)} | {module_stem(m) for m in case_modules()})
        sys.exit(f"regops bench: no cases for --op {ops}; known ops and modules: {', '.join(known)}")
    print(f"regops bench on {machine_description(device)} ({device}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}, {'quick' if quick else 'full'}: {len(cases)} cases", flush=True)
    _warn_if_shared(device, own_load=1.0)  # the 1-minute average still holds this process's start-up
    results = []
    t0 = time.perf_counter()
    mem_budget = min(MEMORY_LIMIT_BYTES, _memory_available(device) / 2)
    progress = Progress(len(cases), label="timing")
    for group in groups(cases, mem_budget):
        # A group's providers are timed together (round-robin), so its cases finish together.
        for r in time_group(group, device, quick):
            results.append(r)
            progress.line(_case_line(r, len(results), len(cases)))
        progress.update(len(group))
    progress.close()
    t_timing = time.perf_counter() - t0
    if memory:
        measure_memory(results, device, quick)
    add_speedups(results)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s (timing {t_timing:.0f} s)\n")
    _warn_if_shared(device, own_load=torch.get_num_threads())
    print_table(results)
    rows = csv_rows(results, device, quick)
    written = write_csv(rows, Path(csv_path) if csv_path else default_csv_path(device))
    print(f"\nappended {len(results)} rows to {written}", flush=True)
    if plot_dir is not None or report is not None:
        print()
        render(rows, plot_dir, report, command, source=f"this run, appended to {written}")
    return results


def memory_case_main(case_id: str, quick: bool, device: str = "cpu") -> int:
    """The child side of memory_subprocess: one case's peak bytes, as a JSON line on stdout."""
    device = resolve_device(device)
    configure(device)
    op = case_id.split("|", 1)[0]
    case = next((c for c in discover(quick, device, [op]) if c.id == case_id), None)
    if case is None:
        print(f"no case {case_id!r}", file=sys.stderr)
        return 2
    print(json.dumps({"id": case.id, "peak_bytes": measure_memory_here(case, device)}))
    return 0
