"""The op registry (regops/_registry.py) is the one list of ops: the public API, the GPU validation record and the
impl rules agree with it."""
import inspect

import pytest
import torch

import regops
from regops import _registry


def _public(path: str):
    obj = regops
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _takes_impl(fn) -> bool:
    return "impl" in inspect.signature(fn).parameters


@pytest.mark.smoke
def test_every_registered_op_is_public_and_takes_impl():
    for name, spec in _registry.OPS.items():
        fn = _public(name)
        assert callable(fn), name
        assert _takes_impl(fn), f"regops.{name} has no impl= argument"
        module = name.rsplit(".", 1)[0] if "." in name else None
        exported = _public(module).__all__ if module else regops.__all__
        assert name.rsplit(".", 1)[-1] in exported, f"regops.{name} is registered but not in __all__"


@pytest.mark.smoke
def test_every_public_op_is_registered():
    submodules = sorted({name.rsplit(".", 1)[0] for name in _registry.OPS if "." in name})
    for module, prefix in [(regops, "")] + [(_public(m), m + ".") for m in submodules]:
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isfunction(obj) and _takes_impl(obj):
                assert prefix + attr in _registry.OPS, f"regops.{prefix}{attr} takes impl= but is not registered"


def test_engines_name_their_schemas_once():
    seen = {}
    for engine in _registry.ENGINES:
        for impl, roles in engine.ops.items():
            assert impl in _registry.IMPLS, (engine.name, impl)
            for role, name in roles.items():
                if isinstance(name, str):
                    assert seen.setdefault((impl, name), engine.name) == engine.name, name
    for spec in _registry.OPS.values():
        for impl, role in spec.needs.items():
            assert role in spec.engine.ops[impl], (spec.name, impl, role)


def test_gpu_validated_names_registered_ops():
    for op, impl in _registry.gpu_validated():
        assert op in _registry.OPS and impl in ("cuda", "triton"), (op, impl)


def test_impl_rules():
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match=r"^regops\.conr_loss: impl: expected one of None, 'auto', 'reference'"):
        _registry.resolve_impl("conr_loss", "fast", cpu)
    with pytest.raises(RuntimeError, match=r"^regops\.kd_loss: impl: expected an impl that can run here, got 'cpu': "
                                           r"regops\.kd_loss has no cpu kernel"):
        _registry.resolve_impl("kd_loss", "cpu", cpu)
    with pytest.raises(RuntimeError, match=r"the cuda kernel takes CUDA tensors, got device cpu"):
        _registry.resolve_impl("ot.sinkhorn", "cuda", cpu)
    assert _registry.resolve_impl("hard_pair_mixup", None, cpu) == "reference"
    with pytest.raises(KeyError, match="not a registered op"):
        _registry.spec("no_such_op")


def test_dtype_rule(monkeypatch):
    x64 = torch.zeros(3, 2, dtype=torch.float64)
    if "triton" in _registry.available_impls("ot.sinkhorn", "cpu"):
        with pytest.raises(TypeError, match=r"^regops\.ot\.sinkhorn: x: expected dtype float32 for impl='triton', "
                                            r"got float64"):
            _registry.pick("ot.sinkhorn", "triton", x64, "x")
        monkeypatch.setenv("REGOPS_IMPL", "triton")  # a preference, not a request: float64 falls back
        assert _registry.pick("ot.sinkhorn", None, x64, "x") == "reference"
        assert _registry.pick("ot.sinkhorn", None, x64.float(), "x") == "triton"
        # P²OT's pass takes any logits dtype when asked for by name; auto keeps float64 logits on the reference
        assert _registry.pick("p2ot_plan", "triton", x64, "logits") == "triton"
        assert _registry.pick("p2ot_plan", None, x64, "logits") == "reference"
