"""Overall progress of a bench run: done/total, elapsed and an estimate of the time left.

A tqdm bar where tqdm is installed (the `bench` extra) and stderr is a terminal; otherwise, as in logs and
pipes where a redrawn bar turns into one long line, a printed line per step with the same figures.
REGOPS_BENCH_PROGRESS=tqdm|plain overrides the choice.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO


def format_seconds(seconds: float) -> str:
    """mm:ss, or h:mm:ss past an hour (tqdm's format, so both modes read alike)."""
    if seconds != seconds or seconds == float("inf"):  # NaN or inf: nothing finished yet
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _want_tqdm(stream: TextIO) -> bool:
    choice = os.environ.get("REGOPS_BENCH_PROGRESS", "auto")
    if choice == "plain":
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return choice == "tqdm" or stream.isatty()


class Progress:
    """Counts finished steps (cases) of one phase; `line` prints a per-step line without breaking the bar."""

    def __init__(self, total: int, unit: str = "cases", label: str = "", stream: Optional[TextIO] = None,
                 use_tqdm: Optional[bool] = None):
        self.total, self.unit, self.label = total, unit, label
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._bar = None
        if use_tqdm if use_tqdm is not None else _want_tqdm(self.stream):
            from tqdm import tqdm
            head = f"{label}: " if label else ""  # literal text in bar_format: labels hold no braces
            self._bar = tqdm(total=total, file=self.stream, dynamic_ncols=True,
                             bar_format=head + "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} " + unit
                                        + " [{elapsed} elapsed, ETA {remaining}]")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self) -> float:
        """Time left at the mean pace so far (cases differ in cost; the estimate firms up as groups finish)."""
        if self.done == 0:
            return float("nan")
        return self.elapsed() / self.done * (self.total - self.done)

    def status(self) -> str:
        head = f"{self.label}: " if self.label else ""
        return (f"{head}{self.done}/{self.total} {self.unit} [{format_seconds(self.elapsed())} elapsed, "
                f"ETA {format_seconds(self.eta())}]")

    def line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            print("  -- " + self.status(), flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
