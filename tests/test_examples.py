"""The examples run (shortened) and do what they say."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_monge_gap_map_learns_and_plots(tmp_path):
    mod = _load("monge_gap_map")
    fit_start, _ = mod.main(["--steps", "1", "--no-plot"])
    out = tmp_path / "map.png"
    plot = importlib.util.find_spec("matplotlib") is not None
    fit_end, gap = mod.main(["--steps", "120"] + (["--out", str(out)] if plot else ["--no-plot"]))
    assert fit_end < 0.5 * fit_start  # the map moves the source onto the target
    assert gap >= 0
    if plot:
        assert out.exists() and out.stat().st_size > 10_000
    else:
        pytest.skip("matplotlib not installed: the plot was not checked")
