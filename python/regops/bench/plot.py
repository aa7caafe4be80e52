"""Plots of a bench run, per op: median time and peak memory against the problem size, log-log, one line per
provider. Written as PNGs with matplotlib's Agg backend (no display needed); matplotlib comes with the `bench`
extra and is imported only when a plot is asked for."""
from __future__ import annotations

import math
import re
from pathlib import Path

from .harness import row_number
from .report import provider_kind

INSTALL_HINT = "pip install regops[bench]"


def require_matplotlib() -> None:
    """Fails early, before any timing, where --plot cannot be served."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"regops bench: --plot: expected matplotlib ({INSTALL_HINT}), got ImportError: {exc}")


def check_plot_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise SystemExit(f"regops bench: --plot: expected a directory, got the file {path}")


def file_stem(op: str) -> str:
    """An op name as a file name: "ot.sinkhorn/iter" -> "ot.sinkhorn_iter", "rpo (frozen head)" -> "rpo_frozen_head"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", op).strip("_.") or "op"


def _distinct(rows, column: str) -> str:
    return ", ".join(dict.fromkeys(str(r[column]) for r in rows))


def title(op: str, rows: list[dict]) -> str:
    dates = ", ".join(dict.fromkeys(str(r["timestamp"])[:10] for r in rows))
    return (f"{op}\n{_distinct(rows, 'machine')} · {_distinct(rows, 'device')} · torch {_distinct(rows, 'torch')}"
            f" · {dates}")


def _series(rows: list[dict], column: str) -> dict:
    """provider -> [(size value, y, size label)], sorted by size; rows without a positive value are left out
    (a log axis cannot show them)."""
    series = {}
    for r in rows:
        x, y = row_number(r, "size_value"), row_number(r, column)
        if x > 0 and y > 0 and not (math.isnan(x) or math.isnan(y)):
            series.setdefault(r["provider"], []).append((x, y, r["size"]))
    return {p: sorted(points) for p, points in series.items()}


def _figure(op: str, rows: list[dict], series: dict, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(8, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    ax = fig.add_subplot()
    for provider, points in series.items():
        kind = provider_kind(provider)
        # Bounds (and partial rows) are not implementations: dashed, so the eye does not rank them with the rest.
        style = dict(linestyle="--", marker="x") if kind in ("bound", "partial") else dict(marker="o")
        if kind == "regops":
            style["linewidth"] = 2.5
        ax.plot([p[0] for p in points], [p[1] for p in points], label=provider, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("problem size (elements; from the size label where a case gives none)")
    ax.set_ylabel(ylabel)
    ax.set_title(title(op, rows), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    labels = {}  # size value -> its labels (shapes of one element count share a tick)
    for points in series.values():
        for x, _, label in points:
            labels.setdefault(x, dict.fromkeys(()))[label] = None
    if len(labels) <= 6:  # few sizes: their labels under the axis say more than the element counts alone
        ticks = sorted(labels)
        ax.set_xticks(ticks, ["\n".join(labels[x]) + f"\n{x:.3g}" for x in ticks], fontsize=7)
        ax.xaxis.set_minor_locator(NullLocator())  # the x axis only: y keeps its minor ticks, the only labelled
        # ones where the values span less than a decade
    ax.legend(fontsize=8)
    return fig


def plot_rows(rows: list[dict], out_dir: Path) -> list[Path]:
    """DIR/<op>_time.png and DIR/<op>_memory.png for each op of the rows whose status is ok; returns the files."""
    require_matplotlib()
    check_plot_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_op = {}
    for r in rows:
        if r["status"] == "ok":
            by_op.setdefault(r["op"], []).append(r)
    written, stems = [], set()
    for op, op_rows in by_op.items():
        stem = file_stem(op)
        while stem in stems:  # two ops that sanitize alike ("a/b", "a b") keep apart
            stem += "_"
        stems.add(stem)
        for column, suffix, ylabel in (("median_ms", "time", "median time per call (ms)"),
                                       ("peak_mib", "memory", "peak memory above the inputs (MiB)")):
            series = _series(op_rows, column)
            if not series:
                if column == "peak_mib":
                    print(f"plot: no peak memory for {op} in these rows (--no-memory?): no {stem}_{suffix}.png")
                continue
            path = out_dir / f"{stem}_{suffix}.png"
            _figure(op, op_rows, series, ylabel).savefig(path)
            written.append(path)
    return written
