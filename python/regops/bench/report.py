"""The Markdown summary of a bench run: per (op, size), regops' fastest provider against regops' reference, the
official code and the best peer, in time and in peak memory. The table users read first; the CSV holds the rest."""
from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Optional

from .harness import row_number

REGOPS_KERNELS = ("cpu", "cuda", "triton")
# Providers whose names do not say what they are (the rest follow the rules of provider_kind).
NAMED_KINDS = {
    "official": "official",
    "loop": "official",             # graddrop_: the official step's formula, per tensor
    "eager-loop": "official",       # spectral_norm_penalty: the per-layer loop of torch's spectral_norm
    "eager": "reference",           # rpo: regops' reference impl (the materialized formula)
    "float64-entries": "reference", # sinkhorn default-eps: regops' previous formulation of the pass
    "svd": "reference",             # sorsa_init: the exact SVD, what svd_lowrank replaces
    "svd_lowrank": "regops",        # sorsa_init: regops' randomized init, the fast path
    "torch linear_cross_entropy (SFT only)": "partial",  # the SFT term alone: less work than the op
}
KINDS = ("regops", "reference", "official", "peer", "bound", "partial")


def provider_kind(provider: str) -> str:
    """What a provider of the bench is:

    regops     regops' own fast impls: the kernels cpu, cuda, triton, also as a suffix (regularize_-cpu)
    reference  regops' pure-PyTorch reference, compiled or not (reference, compiled-reference, ...)
    official   the paper's code (official), or the established formulation where the op has none
    bound      a lower bound (*-bound): the time of the work any impl must do, not an impl
    partial    computes part of the op only: not comparable
    peer       another library's impl (pot, ott-jax, geomloss, liger, ...)
    """
    if provider in NAMED_KINDS:
        return NAMED_KINDS[provider]
    if provider.endswith("-bound"):
        return "bound"
    last = provider.rsplit("-", 1)[-1]
    if last in REGOPS_KERNELS:
        return "regops"
    if last == "reference":
        return "reference"
    return "peer"


def git_commit() -> str:
    """The commit of the regops checkout this process imported regops from, else the build facts' commit, else
    "unknown". (Not the working directory's repository: that may be the user's project, not regops.)"""
    import regops
    from regops import _loader

    package = Path(regops.__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if top and (Path(top) / "python" / "regops").resolve() == package:
            commit = subprocess.run(["git", "-C", top, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
            if commit:
                return commit
    except (OSError, subprocess.SubprocessError):
        pass
    return (_loader.BUILD_FACTS or {}).get("commit") or "unknown"


def _fastest(rows: list[dict]) -> Optional[dict]:
    timed = [r for r in rows if not math.isnan(row_number(r, "median_ms"))]
    return min(timed, key=lambda r: row_number(r, "median_ms")) if timed else None


def _ratio(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return "–"
    if x == 0:
        return "≈0×"  # regops' peak rounded to 0 in the CSV (its resolution is 0.1 MiB)
    if x < 0.1:
        return f"{x:.2g}×"  # two significant digits: 0.00× would hide how small it is
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×" if x < 100 else f"{x:.0f}×"


def _ms(x: float) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _speed_cell(ours: Optional[dict], other: Optional[dict], usual_name: Optional[str]) -> str:
    if ours is None or other is None:
        return "–"
    cell = _ratio(row_number(other, "median_ms") / row_number(ours, "median_ms"))
    return cell if other["provider"] == usual_name else f"{cell} ({other['provider']})"


def _memory_cell(ours: Optional[dict], other: Optional[dict]) -> str:
    if ours is None or other is None:
        return "–"
    theirs = row_number(other, "peak_mib")
    return "–" if not theirs > 0 else _ratio(row_number(ours, "peak_mib") / theirs)


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per (op, size) in run order: the fastest provider of each kind among the rows whose status is ok."""
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["op"], r["size"]), []).append(r)
    out = []
    for (op, size), group in groups.items():
        best = {kind: _fastest([r for r in group if provider_kind(r["provider"]) == kind]) for kind in KINDS}
        out.append(dict(op=op, size=size, **best))
    return out


def _distinct(rows, column: str) -> str:
    return ", ".join(dict.fromkeys(str(r[column]) for r in rows)) or "?"


def header_line(rows: list[dict], commit: str) -> str:
    quick = {str(r["quick"]) for r in rows}
    mode = "quick" if quick == {"1"} else "full" if quick == {"0"} else "quick and full"
    return (f"{_distinct(rows, 'machine')} · {_distinct(rows, 'device')} · {_distinct(rows, 'threads')} threads · "
            f"torch {_distinct(rows, 'torch')} · regops {_distinct(rows, 'regops')} (commit {commit}) · {mode} · "
            f"run {_distinct(rows, 'timestamp')}")


COLUMNS = ("op", "size", "regops", "median ms", "peak MiB", "speed vs reference", "speed vs official",
           "speed vs best peer", "memory vs reference", "memory vs official", "memory vs best peer")


def _cell_text(text: str) -> str:
    return text.replace("|", "\\|")  # size labels and op names may hold a pipe: it would split the cell


def report_markdown(rows: list[dict], command: str, commit: Optional[str] = None, source: str = "") -> str:
    """The summary as Markdown: a header (machine, versions, commit, command) and one table row per (op, size)."""
    commit = git_commit() if commit is None else commit
    lines = ["# regops bench report", "", header_line(rows, commit), "", f"command: `{command}`"]
    if source:
        lines += ["", f"rows: {source}"]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 3 + "---:|" * (len(COLUMNS) - 3)]
    for s in summary_rows(rows):
        ours = s["regops"]
        cells = [s["op"], s["size"], ours["provider"] if ours else "–",
                 _ms(row_number(ours, "median_ms")) if ours else "–",
                 _ms(row_number(ours, "peak_mib")) if ours else "–",
                 _speed_cell(ours, s["reference"], "reference"), _speed_cell(ours, s["official"], "official"),
                 _speed_cell(ours, s["peer"], None),
                 _memory_cell(ours, s["reference"]), _memory_cell(ours, s["official"]), _memory_cell(ours, s["peer"])]
        lines.append("| " + " | ".join(_cell_text(c) for c in cells) + " |")
    left_out = sum(1 for r in rows if r["status"] != "ok")
    lines += [
        "",
        "regops: the fastest of regops' kernels (cpu, cuda, triton; svd_lowrank for sorsa_init) at that size. "
        "Speed: the other provider's median time / regops' (> 1: regops is faster). Memory: regops' peak memory "
        "above the inputs / the other's (< 1: regops needs less). reference: the fastest of regops' pure-PyTorch "
        "references (named where it is not `reference`); official: the paper's code or the established "
        "formulation; best peer: the fastest other library, named. Lower bounds (*-bound) and partial rows are "
        "not compared. –: absent, or not measured.",
    ]
    if left_out:
        lines += ["", f"{left_out} row(s) not ok (skipped or failed) are left out; the CSV says why."]
    return "\n".join(lines) + "\n"


def write_report(text: str, path: Optional[str]) -> None:
    """To stdout where path is None or "-", else to the file."""
    if path in (None, "-"):
        print(text, end="", flush=True)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote the report to {target}", flush=True)


def check_report_path(path: Optional[str]) -> None:
    if path not in (None, "-") and Path(path).is_dir():
        raise SystemExit(f"regops bench: --report: expected a file to write, got the directory {path}")
