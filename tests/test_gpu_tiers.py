"""The GPU check's quick tier (scripts/gpu_check.sh runs `pytest -m "cuda and gpu_quick"`) holds a test of every
CUDA and Triton kernel: for each (op, impl) of the registry with impl cuda or triton, at least one quick test that
vouches for it (conftest.py's GPU validation record). A new op's kernels need a quick test, or this fails. No GPU
needed.

Without a GPU the GPU tests skip at import or at setup, so pytest cannot list their items here. Instead each test
module that mentions gpu_validates is read with `ast` and its module-level test functions are expanded the way
pytest parametrizes them, from the source of their decorators:
- marks: `pytest.mark.NAME(...)` on the function, in the module's `pytestmark` and in the `marks=` of a
  `pytest.param(...)` of a parametrize list; conftest's `gpu_test(ops, impls)` stands for the marks cuda,
  gpu_validates(*ops) and a parametrize of impl over impls, also through a module-level name bound to it;
- values: literals, module-level names, `+` of lists, `list(...)`, `tuple(...)`, `zip(...)`, a dict's keys,
  constant subscripts; any other expression (a dtype, a call) is one value the reader does not look into.
An item is quick when it has gpu_quick from the function, the module or any of its parameters, as for pytest -m.
A quick item with the cuda mark, gpu_validates and an `impl` parameter covers (op, impl) for each op it names.
A vouching test whose parametrize lists cannot be read this way fails here: spell them out as literals or names.
Also here: the quick tier stays within QUICK_TIER_MAX_ITEMS, and conftest's record and per-kernel summary on sample
tests. `python tests/test_gpu_tiers.py` prints the quick tier: items per file and the tests covering each kernel."""
import ast
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import regops
from conftest import gpu_kernel_pairs

TESTS = Path(__file__).resolve().parent
QUICK_TIER_MAX_ITEMS = 150  # the quick tier must leave the GPU check's build and bench room in ~6 minutes
OPAQUE = object()  # a value the reader does not evaluate


class Unreadable(Exception):
    """A decorator of a vouching test that the reader cannot evaluate."""


@dataclass(frozen=True)
class Mark:
    """pytest.mark.NAME(*args, **kwargs), its arguments as ast nodes (evaluated where needed)."""
    name: str
    args: tuple = ()
    kwargs: tuple = ()  # (name, node) pairs


@dataclass(frozen=True)
class Param:
    """pytest.param(*values, marks=...)."""
    values: tuple
    marks: tuple


@dataclass(frozen=True)
class Item:
    path: str
    function: str
    params: dict
    marks: tuple

    def has(self, name):
        return any(m.name == name for m in self.marks)


def dotted(node):
    """"pytest.mark.cuda" for that attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id] + parts[::-1])


class Module:
    def __init__(self, path: Path):
        self.path = path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.names = {}  # module-level assignments; the last one wins, as at import
        for node in self.tree.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.names[target.id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                self.names[node.target.id] = node.value

    def where(self, node):
        return f"{self.path.name}:{getattr(node, 'lineno', '?')}"

    # ---- values ----

    def value(self, node, depth=0):
        if depth > 50:
            raise Unreadable(f"{self.where(node)}: names refer to each other too deeply")
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            out = []
            for elt in node.elts:
                if isinstance(elt, ast.Starred):
                    out.extend(self.sequence(elt.value, depth + 1))
                else:
                    out.append(self.value(elt, depth + 1))
            return tuple(out)
        if isinstance(node, ast.Dict):
            return tuple(self.value(k, depth + 1) for k in node.keys if k is not None)  # iterating gives the keys
        if isinstance(node, ast.Name):
            return self.value(self.names[node.id], depth + 1) if node.id in self.names else OPAQUE
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.value(node.left, depth + 1), self.value(node.right, depth + 1)
            return left + right if isinstance(left, tuple) and isinstance(right, tuple) else OPAQUE
        if isinstance(node, ast.Subscript):
            base, index = self.value(node.value, depth + 1), self.value(node.slice, depth + 1)
            if isinstance(base, tuple) and isinstance(index, int) and -len(base) <= index < len(base):
                return base[index]
            return OPAQUE
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            return Mark(name[len("pytest.mark."):]) if name and name.startswith("pytest.mark.") else OPAQUE
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        return OPAQUE

    def call(self, node, depth):
        name = dotted(node.func)
        if name == "pytest.param":
            marks = next((kw.value for kw in node.keywords if kw.arg == "marks"), None)
            return Param(tuple(self.value(a, depth + 1) for a in node.args), self.marks(marks, depth))
        if name in ("list", "tuple") and len(node.args) == 1 and not node.keywords:
            return self.sequence(node.args[0], depth + 1)
        if name == "zip" and not node.keywords:
            return tuple(zip(*(self.sequence(a, depth + 1) for a in node.args)))
        if name == "gpu_test" and len(node.args) == 2:  # conftest.gpu_test(ops, impls)
            ops, impls = node.args
            return (Mark("cuda"), Mark("gpu_validates", (ast.Starred(value=ops),)),
                    Mark("parametrize", (ast.Constant("impl"), impls)))
        if name and name.startswith("pytest.mark."):
            return Mark(name[len("pytest.mark."):], tuple(node.args), tuple((kw.arg, kw.value) for kw in node.keywords))
        return OPAQUE

    def sequence(self, node, depth=0):
        v = self.value(node, depth)
        if not isinstance(v, tuple):
            raise Unreadable(f"{self.where(node)}: expected a list this reader can evaluate, got {ast.unparse(node)}")
        return v

    def marks(self, node, depth=0):
        """The Marks of a decorator, a pytestmark or a marks= value (anything else, e.g. an imported name: none)."""
        if node is None:
            return ()
        v = self.value(node, depth)
        found = v if isinstance(v, tuple) else (v,)
        return tuple(m for m in found if isinstance(m, Mark))

    def args(self, mark):
        out = []
        for a in mark.args:
            out.extend(self.sequence(a.value) if isinstance(a, ast.Starred) else [self.value(a)])
        return out

    # ---- items ----

    def items(self):
        module_marks = self.marks(self.names.get("pytestmark"))
        for fn in self.tree.body:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name.startswith("test"):
                yield from self.function_items(fn, module_marks)

    def function_items(self, fn, module_marks):
        marks = list(module_marks)
        for dec in fn.decorator_list:
            marks += self.marks(dec)
        grids = [m for m in marks if m.name == "parametrize"]
        marks = [m for m in marks if m.name != "parametrize"]
        vouches = any(m.name == "gpu_validates" for m in marks)
        try:
            axes = [self.grid(m) for m in grids]
        except Unreadable:
            if vouches or any("gpu_quick" in ast.dump(d) for d in fn.decorator_list):
                raise
            return  # not a vouching test: it cannot cover a kernel, and its lists need not be readable
        for combo in itertools.product(*axes):
            params, extra = {}, []
            for values, param_marks in combo:
                params.update(values)
                extra += param_marks
            yield Item(self.path.name, fn.name, params, tuple(marks + extra))

    def grid(self, mark):
        """One parametrize: [(values by argname, marks)] per entry."""
        given = dict(zip(("argnames", "argvalues"), mark.args)) | dict(mark.kwargs)
        if "argnames" not in given or "argvalues" not in given:
            raise Unreadable(f"{self.path.name}: a parametrize without argnames or argvalues")
        names_node, values_node = given["argnames"], given["argvalues"]
        names = self.value(names_node)
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
        if not isinstance(names, (tuple, list)) or not names or not all(isinstance(n, str) for n in names):
            raise Unreadable(f"{self.where(names_node)}: expected parametrize argnames, got {ast.unparse(names_node)}")
        entries = []
        for entry in self.sequence(values_node):
            values, entry_marks = (entry.values, entry.marks) if isinstance(entry, Param) else (entry, ())
            if not isinstance(entry, Param) and len(names) == 1:
                values = (values,)
            if not isinstance(values, tuple) or len(values) != len(names):
                raise Unreadable(f"{self.where(values_node)}: an entry of {ast.unparse(values_node)} does not "
                                 f"match the argnames {names}")
            entries.append((dict(zip(names, values)), entry_marks))
        return entries


def gpu_test_modules():
    """The test modules that can vouch for a GPU kernel (not this one: it names the marks in its strings)."""
    modules = []
    for path in sorted(TESTS.glob("test_*.py")):
        text = path.read_text()
        if path.name != Path(__file__).name and ("gpu_validates" in text or "gpu_test(" in text):
            modules.append(Module(path))
    return modules


def quick_tier():
    """(quick items, {(op, impl): [covering "file::function"]}) from the GPU test modules."""
    quick, covered = [], {}
    for module in gpu_test_modules():
        for item in module.items():
            if not item.has("gpu_quick"):
                continue
            quick.append(item)
            impl = item.params.get("impl")
            if not (item.has("cuda") and isinstance(impl, str)):
                continue
            for mark in item.marks:
                if mark.name == "gpu_validates":
                    for op in module.args(mark):
                        covered.setdefault((op, impl), [])
                        where = f"{item.path}::{item.function}"
                        if where not in covered[(op, impl)]:
                            covered[(op, impl)].append(where)
    return quick, covered


def test_every_gpu_kernel_has_a_quick_test():
    _, covered = quick_tier()
    missing = [f"{op} {impl}" for op, impl in gpu_kernel_pairs() if (op, impl) not in covered]
    assert not missing, ("no test marked gpu_quick (with cuda, gpu_validates and an impl parameter) vouches for: "
                         + ", ".join(missing))


def test_quick_items_run_in_the_quick_tier():
    """gpu_check.sh selects `cuda and gpu_quick`: a quick item without the cuda mark would never run there."""
    quick, _ = quick_tier()
    stray = sorted({f"{i.path}::{i.function}" for i in quick if not i.has("cuda")})
    assert not stray, f"marked gpu_quick but not cuda: {stray}"


def test_quick_tier_stays_small():
    quick, _ = quick_tier()
    per_file = {}
    for item in quick:
        per_file[item.path] = per_file.get(item.path, 0) + 1
    assert len(quick) <= QUICK_TIER_MAX_ITEMS, f"{len(quick)} quick items > {QUICK_TIER_MAX_ITEMS}: {per_file}"


def test_reader_expands_parametrize_like_pytest(tmp_path):
    """The reader on a module of the shapes the GPU tests use: names, pytest.param marks, gpu_test aliases."""
    path = tmp_path / "test_sample.py"
    path.write_text('''
import pytest
from conftest import gpu_test
OPS = ("a", "b")
IMPL_DTYPES = [("cuda", torch.float32), pytest.param("triton", torch.float32, marks=pytest.mark.gpu_quick)]
SIZES = [1, pytest.param(2, marks=[pytest.mark.gpu_quick])]
pytestmark = [pytest.mark.cuda]
alias = gpu_test(OPS, ["cuda", "triton"])

@pytest.mark.gpu_validates(*OPS)
@pytest.mark.parametrize("impl,dtype", IMPL_DTYPES)
def test_pairs(impl, dtype): pass

@alias
@pytest.mark.parametrize("n", SIZES + [3])
@pytest.mark.parametrize("shape", list(zip([(1, 2), (3, 4)], ["x", "y"])))
def test_alias(impl, n, shape): pass

@pytest.mark.parametrize("x", ["reference"] + unknown())
def test_unreadable_but_not_vouching(x): pass
''')
    items = list(Module(path).items())
    by_fn = {}
    for item in items:
        by_fn.setdefault(item.function, []).append(item)
    assert len(by_fn["test_pairs"]) == 2 and len(by_fn["test_alias"]) == 2 * 3 * 2
    assert "test_unreadable_but_not_vouching" not in by_fn
    quick_pairs = [i.params["impl"] for i in by_fn["test_pairs"] if i.has("gpu_quick")]
    assert quick_pairs == ["triton"] and all(i.has("cuda") for i in items)
    quick_alias = [i for i in by_fn["test_alias"] if i.has("gpu_quick")]
    assert {(i.params["impl"], i.params["n"]) for i in quick_alias} == {("cuda", 2), ("triton", 2)}
    assert all(i.has("gpu_validates") for i in by_fn["test_alias"])
    path.write_text(path.read_text() + '''
@pytest.mark.gpu_validates("a")
@pytest.mark.parametrize("impl", make_impls())
def test_vouching_unreadable(impl): pass
''')
    with pytest.raises(Unreadable, match="make_impls"):
        list(Module(path).items())


RECORD_SAMPLE = """
import pytest

@pytest.mark.gpu_validates("conr_loss", "supcon_loss")
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_pass(impl):
    pass

@pytest.mark.gpu_validates("conr_loss")
@pytest.mark.parametrize("impl", ["triton"])
def test_skip(impl):
    pytest.skip("no triton here")

@pytest.mark.gpu_validates("supcon_loss")
@pytest.mark.parametrize("impl", ["cuda"])
def test_fail(impl):
    assert False

@pytest.mark.gpu_validates("graddrop_")
@pytest.mark.parametrize("impl", ["cuda"])
def test_interrupted(impl):
    import os, signal, time
    os.kill(os.getpid(), signal.SIGTERM)  # as gpu_check.sh's timeout does
    time.sleep(30)

@pytest.mark.gpu_validates("graddrop_keep_prob")
@pytest.mark.parametrize("impl", ["cuda"])
def test_after_the_interruption(impl):
    pass

@pytest.mark.gpu_validates("p2ot_plan")
@pytest.mark.parametrize("impl", ["cuda"])
def test_deselected(impl):
    pass
"""


def test_record_and_summary_per_kernel(tmp_path):
    """conftest's GPU record on CPU-only sample tests (the record does not look at devices): a SIGTERM stops the
    session as gpu_check.sh's time limit does, -k deselects one test; every status of the summary, and only the
    passing pairs written."""
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "test_sample.py").write_text(RECORD_SAMPLE)
    out = tmp_path / "gpu_validated.txt"
    python_dir = str(Path(regops.__file__).resolve().parents[1])  # the regops this session imports
    env = dict(os.environ, REGOPS_GPU_SUMMARY="1", REGOPS_GPU_VALIDATED_OUT=str(out), REGOPS_GPU_TIER="quick",
               PYTHONPATH=os.pathsep.join([python_dir, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not deselected",
                          "test_sample.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == pytest.ExitCode.INTERRUPTED, run.stdout[-3000:] + run.stderr[-3000:]
    lines = {line.split(":", 1)[0][len("kernel "):]: line.split(": ", 1)[1]
             for line in run.stdout.splitlines() if line.startswith("kernel ")}
    assert len(lines) == len(gpu_kernel_pairs())
    assert lines["conr_loss cuda"] == "passed (1 test)"
    assert lines["supcon_loss triton"] == "passed (1 test)"
    assert lines["conr_loss triton"] == "skipped (1 of 2: no triton here)"
    assert lines["supcon_loss cuda"] == "failed (1 of 2: test_sample.py::test_fail[cuda])"
    assert lines["graddrop_ cuda"] == "not run (1 of 1 did not run, e.g. test_sample.py::test_interrupted[cuda])"
    assert lines["graddrop_keep_prob cuda"].startswith("not run (1 of 1 did not run")
    assert lines["p2ot_plan cuda"] == "not run (no selected test vouches for it)"
    assert [line for line in out.read_text().splitlines() if not line.startswith("#")] == \
        ["conr_loss cuda", "supcon_loss triton"]
    assert "tier: quick" in out.read_text()


if __name__ == "__main__":
    quick, covered = quick_tier()
    per_file = {}
    for item in quick:
        per_file[item.path] = per_file.get(item.path, 0) + 1
    print(f"quick tier: {len(quick)} items (at most {QUICK_TIER_MAX_ITEMS})")
    for name, n in sorted(per_file.items()):
        print(f"  {n:4d}  {name}")
    print("kernels:")
    for op, impl in gpu_kernel_pairs():
        print(f"  {op} {impl}: " + (", ".join(covered.get((op, impl), [])) or "NOT COVERED"))
