"""The bad-input contract (tests/contract_cases.py), walked: every registered op has cases; every rejected input
raises the documented exception with the documented message, the same on the reference and on every CPU kernel
impl; every accepted edge input gives finite outputs on all of them; the README holds the rendered table."""
import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from regops import _registry

from conftest import cpu_impls
from contract_cases import ALL_CASES, Accepted, Rejected

REPO = Path(__file__).resolve().parents[1]


def _load_table_script():
    spec = importlib.util.spec_from_file_location("contract_table", REPO / "scripts" / "contract_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def impls(op):
    return ["reference"] + cpu_impls(op)


def _params(kind):
    return [pytest.param(op, case, id=f"{op}: {case.arg + ': ' if kind is Rejected else ''}{case.what}")
            for op, cases in ALL_CASES.items() for case in cases if isinstance(case, kind)]


def test_every_registered_op_has_contract_cases():
    missing = sorted(set(_registry.OPS) - set(ALL_CASES))
    unknown = sorted(set(ALL_CASES) - set(_registry.OPS))
    assert not missing, (f"ops without contract cases: {missing}; add their Rejected and Accepted cases to _CASES in "
                         "tests/contract_cases.py, then run python scripts/contract_table.py --write-readme")
    assert not unknown, f"tests/contract_cases.py has cases for ops that are not registered: {unknown}"
    for op, cases in ALL_CASES.items():
        kinds = {type(c) for c in cases}
        assert kinds == {Rejected, Accepted}, f"{op}: the contract needs rejected and accepted cases, has {kinds}"
        assert all(c.match.startswith("^" + "regops\\." + op.replace(".", "\\.") + ": ")
                   for c in cases if isinstance(c, Rejected)), f"{op}: a pattern does not start with its prefix"


@pytest.mark.parametrize("op,case", _params(Rejected))
def test_rejected(op, case):
    raised = {}
    for impl in impls(op):
        with pytest.raises(case.exc, match=case.match) as info:
            case.call(impl)
        assert type(info.value) is case.exc, f"impl={impl}: {type(info.value).__name__}, not {case.exc.__name__}"
        raised[impl] = str(info.value)
    assert len(set(raised.values())) == 1, f"the impls word the error differently: {raised}"


def _non_finite(out, where="out"):
    """The places in out (tensors, numbers, sequences, dicts, dataclasses) that hold NaN or Inf."""
    if isinstance(out, torch.Tensor):
        if (out.is_floating_point() or out.is_complex()) and not bool(torch.isfinite(out).all()):
            yield f"{where} {out.detach().flatten()[:8].tolist()}"
    elif isinstance(out, float):
        if not math.isfinite(out):
            yield f"{where} = {out}"
    elif isinstance(out, (list, tuple)):
        for i, item in enumerate(out):
            yield from _non_finite(item, f"{where}[{i}]")
    elif isinstance(out, dict):
        for key, item in out.items():
            yield from _non_finite(item, f"{where}[{key!r}]")
    elif dataclasses.is_dataclass(out):
        for f in dataclasses.fields(out):
            yield from _non_finite(getattr(out, f.name), f"{where}.{f.name}")


@pytest.mark.parametrize("op,case", _params(Accepted))
def test_accepted(op, case):
    for impl in impls(op):
        bad = list(_non_finite(case.call(impl)))
        assert not bad, f"impl={impl}: non-finite outputs: {bad}"


def test_readme_holds_the_rendered_table():
    table = _load_table_script()
    text = (REPO / "README.md").read_text()
    section = table.readme_section(text)
    fix = "run python scripts/contract_table.py --write-readme"
    assert section is not None, (f"README.md lacks the markers {table.START} and {table.END} around the "
                                 f"bad-input contract table: add them, then {fix}")
    assert section == table.render_markdown(), f"README.md's contract table is not the rendered one: {fix}"
