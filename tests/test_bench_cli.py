"""`python -m regops bench` as a user outside the repository runs it: --list, a quick run from another
directory (the bench ships in the package, regops.bench), the progress lines, the default CSV path."""
import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import regops
from regops import _registry
from regops.bench import harness
from regops.bench.progress import Progress, format_seconds

# "<done>/<total> cases [<elapsed> elapsed, ETA <left>]": the plain line and the tqdm bar's format alike
PROGRESS_LINE = re.compile(r"\d+/\d+ cases \[\d+:\d\d(:\d\d)? elapsed, ETA (\d+:\d\d(:\d\d)?|\?)\]")


def cli_env(**env) -> dict:
    """The environment of a fresh interpreter that imports this same regops, whatever the working directory."""
    package_parent = str(Path(regops.__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]), **env)


def run_cli(args, cwd, **env):
    """The CLI in a fresh interpreter that imports this same regops, whatever the working directory."""
    return subprocess.run([sys.executable, "-m", "regops", "bench", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.smoke
def test_list_names_every_case_module_and_op(tmp_path):
    out = run_cli(["--list"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    modules = harness.case_modules()
    assert len(modules) >= 10  # the package data travelled: every bench module, not an empty cases/
    for module in modules:
        assert f"\n{harness.module_stem(module)}:\n" in out.stdout
        for case in module.cases(False, torch.device("cpu")):
            assert f"  {case.op} (" in out.stdout, case.op
            assert case.provider in out.stdout
    assert "  sorsa_ortho_loss (3 sizes): official, reference, cpu" in out.stdout


@pytest.mark.smoke
def test_list_into_a_closed_pipe_exits_quietly(tmp_path):
    # `--list | head -3` with the reader gone before the first write: every write fails, deterministically.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run([sys.executable, "-m", "regops", "bench", "--list"], cwd=tmp_path, env=cli_env(),
                             stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert out.returncode == 141, out.stderr
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr


@pytest.mark.smoke
def test_quick_run_outside_the_repository_writes_its_csv(tmp_path):
    csv_path = tmp_path / "rows.csv"
    # One repetition per provider and the plain progress lines (a pipe, but REGOPS_BENCH_PROGRESS pins it).
    out = run_cli(["--quick", "--op", "sorsa_ortho_loss", "--no-memory", "--csv", str(csv_path)], cwd=tmp_path,
                  REGOPS_BENCH_MAX_REPS="1", REGOPS_BENCH_PROGRESS="plain")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and {r["op"] for r in rows} == {"sorsa_ortho_loss"}
    assert {r["provider"] for r in rows} == {"official", "reference", "cpu"}
    cpu_kernel = _registry.available("sorsa_ortho_loss", "cpu", torch.device("cpu"))[0]
    for r in rows:  # the cpu rows are skipped, not failed, where no compiled kernels load
        if r["provider"] != "cpu" or cpu_kernel:
            assert (r["status"], r["reps"]) == ("ok", "1"), r
        else:
            assert r["status"].startswith("skipped"), r
    case_lines = [line for line in out.stdout.splitlines() if re.match(r"\s+\[\d+/9\] sorsa_ortho_loss ", line)]
    assert len(case_lines) == 9  # one line per case as it finishes
    assert PROGRESS_LINE.search(out.stdout), out.stdout[-2000:]
    assert "timing: 9/9 cases" in out.stdout
    assert not (tmp_path / "bench").exists()


def test_default_csv_path_follows_the_working_directory(tmp_path):
    cpu = torch.device("cpu")
    assert harness.default_csv_path(cpu, tmp_path) == tmp_path / "regops-bench-cpu.csv"
    (tmp_path / "bench" / "results").mkdir(parents=True)
    assert harness.default_csv_path(cpu, tmp_path) == tmp_path / "bench" / "results" / "cpu.csv"


def test_unknown_op_names_the_known_ones(tmp_path):
    out = run_cli(["--op", "no_such_op", "--no-memory"], cwd=tmp_path)
    assert out.returncode != 0
    assert "known ops and modules" in out.stderr and "sorsa_ortho_loss" in out.stderr


def test_plain_progress_counts_and_estimates(capsys):
    progress = Progress(4, label="timing", use_tqdm=False)
    progress.update(1)
    progress.update(3)
    progress.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(PROGRESS_LINE.search(line) for line in lines)
    assert "timing: 4/4 cases" in lines[-1] and lines[-1].endswith("ETA 00:00]")
    assert format_seconds(3725) == "1:02:05" and format_seconds(float("nan")) == "?"


def test_tqdm_progress_has_the_same_figures():
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    progress = Progress(4, label="timing", stream=stream, use_tqdm=True)
    progress.update(2)
    progress.close()
    assert PROGRESS_LINE.search(stream.getvalue()), stream.getvalue()


def _flush_log(monkeypatch, device_type: str) -> list:
    """time_group on a case and a two-part bound row, logging each timed call and each L2 flush in order. The
    CUDA path runs without a GPU: its timer, flush buffer and empty_cache are the CPU's stand-ins."""
    log = []
    monkeypatch.setattr(harness, "MAX_REPS", 3)
    monkeypatch.setattr(harness, "flush_l2", lambda buffer: log.append("flush"))
    if device_type == "cuda":
        cpu_timer = harness._timer(torch.device("cpu"))
        monkeypatch.setattr(harness, "_timer", lambda device: cpu_timer)
        monkeypatch.setattr(harness, "l2_flush_buffer", lambda device: torch.empty(1, dtype=torch.int8))
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    cases = [harness.Case("op", "8", "kernel", lambda: None, lambda s: log.append("kernel")),
             harness.Case("op", "8", "two-part-bound", lambda: None, memory=False,
                          parts=((1.0, lambda s: log.append("part")), (0.5, lambda s: log.append("part"))))]
    results = harness.time_group(cases, torch.device(device_type), quick=True)
    assert [len(r.times_ms) for r in results] == [3, 3]
    return log


def test_cpu_timing_does_not_flush_the_cache(monkeypatch):
    assert "flush" not in _flush_log(monkeypatch, "cpu")


def test_cuda_timing_flushes_l2_before_every_timed_call(monkeypatch):
    log = _flush_log(monkeypatch, "cuda")
    # The first call of each provider comes before the flush buffer exists (untimed for the medians); then
    # round-robin: every timed call, each part of the bound row included, right after a flush.
    round_robin = log[log.index("flush"):]
    assert round_robin == ["flush", "kernel", "flush", "part", "flush", "part"] * 3


def test_size_value_is_the_product_of_the_label_integers():
    assert harness.size_value_from_label("N=256 D=128") == 32768
    assert harness.size_value_from_label("448x16x4096") == 448 * 16 * 4096
    assert harness.size_value_from_label("N=M=1000 d=3") == 1000 * 1000 * 3  # N and M both 1000
    assert harness.size_value_from_label("4096x4096 r=128") == 4096 * 4096 * 128
    assert harness.size_value_from_label("tiny") is None
    case = harness.Case("op", "N=2 D=3", "cpu", lambda: None, lambda s: None)
    assert case.problem_size == 6
    stated = harness.Case("op", "resnet50:161x25.56M,K=2", "cpu", lambda: None, size_value=25.56e6)
    assert stated.problem_size == 25.56e6


def _old_layout_csv(path, rows):
    """A CSV of the layout before size_value, as the earlier runs wrote them."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=harness.CSV_FIELDS_BEFORE_SIZE_VALUE)
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in harness.CSV_FIELDS_BEFORE_SIZE_VALUE})


def test_csv_gets_size_value_and_old_files_are_upgraded(tmp_path):
    path = tmp_path / "cpu.csv"
    _old_layout_csv(path, [dict(timestamp="2026-01-01T00:00:00+00:00", op="conr_loss", size="N=256 D=128",
                                provider="cpu", status="ok", median_ms="1.5")])
    result = harness.Result(harness.Case("orthonormal_penalty", "2x3x4", "cpu", lambda: None, lambda s: None),
                            times_ms=[1.0, 2.0, 3.0])
    written = harness.write_csv(harness.csv_rows([result], torch.device("cpu"), quick=True), path)
    assert written == path  # upgraded in place, not forked into a second file
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == harness.CSV_FIELDS and reader.fieldnames[-1] == "size_value"
    assert [(r["op"], r["size_value"]) for r in rows] == [("conr_loss", "32768"), ("orthonormal_penalty", "24")]
    assert rows[1]["median_ms"] == "2.0"


def test_reading_an_old_csv_derives_size_value(tmp_path):
    path = tmp_path / "old.csv"
    _old_layout_csv(path, [dict(timestamp="t", machine="m", device="cpu", op="x", size="N=M=10 d=2", provider="cpu",
                                status="ok")])
    (row,) = harness.read_csv(path)
    assert harness.row_number(row, "size_value") == 200


def test_select_run_picks_the_latest_one_a_named_one_or_the_newest_rows_of_all():
    def row(stamp, provider, median):
        return dict(timestamp=stamp, device="cpu", op="op", size="8", provider=provider, median_ms=median)
    first, second = "2026-01-01T10:00:00+00:00", "2026-01-01T11:00:00+02:00"  # later on its clock, earlier in time
    rows = [row(first, "cpu", "1"), row(first, "reference", "2"), row(second, "cpu", "3")]
    assert harness.select_run(rows) == rows[:2]
    assert harness.select_run(rows, second) == rows[2:]
    assert harness.select_run(rows, "all") == [rows[0], rows[1]]  # cpu's newest row is the first run's
    with pytest.raises(SystemExit, match="regops bench: --run: expected latest, all or a timestamp"):
        harness.select_run(rows, "yesterday")


def test_every_bench_provider_has_a_kind():
    from regops.bench.report import KINDS, provider_kind

    for device in ("cpu", "cuda"):  # the CUDA cases are built without a GPU: their providers are names
        for case in harness.discover(False, torch.device(device)):
            assert provider_kind(case.provider) in KINDS, case.id
    expected = {"cpu": "regops", "cuda": "regops", "triton": "regops", "regularize_-triton": "regops",
                "svd_lowrank": "regops", "reference": "reference", "compiled-reference": "reference",
                "autograd-reference": "reference", "regularize_-reference": "reference", "eager": "reference",
                "official": "official", "loop": "official", "pot": "peer", "ott-jax": "peer", "geomloss": "peer",
                "liger": "peer", "foreach": "peer", "gemm-bound": "bound", "2-reads-bound": "bound",
                "torch linear_cross_entropy (SFT only)": "partial"}
    assert {p: provider_kind(p) for p in expected} == expected


def _rows(**columns_by_provider):
    """Result rows of one (op, size), as read from a CSV: provider -> (median ms, peak MiB or "")."""
    common = dict(timestamp="2026-01-01T00:00:00+00:00", machine="Test CPU x2", device="cpu", threads="2",
                  torch="2.0", regops="0.1.0", quick="1", op="op/a", size="N=8 D=2", size_value="16", status="ok")
    return [dict(common, provider=p.replace("_", "-"), median_ms=str(ms), peak_mib=str(mib))
            for p, (ms, mib) in columns_by_provider.items()]


def test_report_compares_regops_fastest_kernel_with_reference_official_and_best_peer():
    from regops.bench.report import report_markdown

    rows = _rows(official=(8.0, 40.0), reference=(4.0, 20.0), compiled_reference=(2.0, 10.0), cpu=(1.0, 5.0),
                 pot=(3.0, ""), geomloss=(1.5, 2.5), gemm_bound=(0.5, ""))
    rows.append(dict(rows[0], provider="triton", status="skipped: no triton", median_ms=""))
    text = report_markdown(rows, command="python -m regops bench --report", commit="abc1234")
    assert "Test CPU x2 · cpu · 2 threads · torch 2.0 · regops 0.1.0 (commit abc1234) · quick" in text
    assert "command: `python -m regops bench --report`" in text
    (line,) = [line for line in text.splitlines() if line.startswith("| op/a ")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    # regops' cpu against the fastest reference (compiled), the official code, the fastest peer (geomloss)
    assert cells == ["op/a", "N=8 D=2", "cpu", "1", "5", "2.00× (compiled-reference)", "8.00×", "1.50× (geomloss)",
                     "0.50×", "0.12×", "2.00×"]
    assert "1 row(s) not ok" in text


def test_report_without_a_kernel_row_or_memory_says_so():
    from regops.bench.report import report_markdown

    text = report_markdown(_rows(official=(2.0, ""), reference=(1.0, "")), command="c", commit="x")
    (line,) = [line for line in text.splitlines() if line.startswith("| op/a ")]
    assert [c.strip() for c in line.strip("|").split("|")][2:] == ["–"] * 9


def test_plot_files_per_op(tmp_path):
    pytest.importorskip("matplotlib")
    from regops.bench import plot

    assert plot.file_stem("ot.sinkhorn/iter") == "ot.sinkhorn_iter"
    assert plot.file_stem("rpo (frozen head)") == "rpo_frozen_head"
    rows = _rows(reference=(4.0, 20.0), cpu=(1.0, 5.0)) + [
        dict(r, size="N=16 D=2", size_value="32", median_ms="3") for r in _rows(reference=(8.0, 40.0), cpu=(2.0, 9.0))]
    rows += [dict(r, op="no memory", peak_mib="") for r in rows]
    written = plot.plot_rows(rows, tmp_path / "plots")
    assert [p.name for p in written] == ["op_a_time.png", "op_a_memory.png", "no_memory_time.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    from regops.bench import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(SystemExit, match=r"regops bench: --plot: expected matplotlib \(pip install regops\[bench\]\)"):
        plot.require_matplotlib()


@pytest.mark.smoke
def test_from_csv_reports_and_plots_an_old_csv_without_timing(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "old.csv"
    old, new = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"
    _old_layout_csv(path, [dict(r, timestamp=old) for r in _rows(reference=(9.0, 1.0), cpu=(9.0, 1.0))]
                    + [dict(r, timestamp=new) for r in _rows(reference=(4.0, 20.0), cpu=(1.0, 5.0))])
    out = run_cli(["--from-csv", str(path), "--report", str(tmp_path / "report.md"), "--plot", str(tmp_path / "p")],
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = (tmp_path / "report.md").read_text()
    assert f"run {new}" in report and "| op/a | N=8 D=2 | cpu | 1 | 5 | 4.00× |" in report  # the latest run only
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["op_a_memory.png", "op_a_time.png"]
    assert "regops bench on" not in out.stdout  # nothing timed

    out = run_cli(["--from-csv", str(tmp_path / "missing.csv")], cwd=tmp_path)
    assert out.returncode != 0 and "regops bench: --from-csv: expected an existing CSV file, got" in out.stderr
    out = run_cli(["--run", "all", "--op", "sorsa_ortho_loss"], cwd=tmp_path)
    assert out.returncode != 0 and "--run: expected --from-csv with it" in out.stderr


@pytest.mark.smoke
def test_pytest_benchmark_times_the_same_cases(tmp_path):
    pytest.importorskip("pytest_benchmark")
    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    if not (bench_dir / "test_bench.py").is_file():
        pytest.skip("no bench/ folder next to tests/ (an installed package, not a checkout)")
    op = "sorsa_ortho_loss"
    out = subprocess.run([sys.executable, "-m", "pytest", str(bench_dir), "--benchmark-only", "--regops-op", op, "-q",
                          "--benchmark-min-rounds=1", "-p", "no:cacheprovider"],
                         cwd=tmp_path, env=cli_env(REGOPS_BENCH_MAX_REPS="1"), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    cases = harness.discover(True, torch.device("cpu"), [op])
    ran = sum(1 for c in cases if harness.skip_reason(c) is None)
    assert re.search(rf"\b{ran} passed", out.stdout), out.stdout[-2000:]
    for size in dict.fromkeys(c.size for c in cases):  # one benchmark group per (op, size), as the harness groups
        assert f"benchmark '{op} {size}'" in out.stdout, size
