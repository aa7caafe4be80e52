"""The op registry: every public op, the kernel engine behind it, and how one call picks its impl.

An ``Engine`` is one kernel family: per impl, the torch.library ops it is made of (by role, e.g. "fwd", "bwd"),
and the dtypes that impl takes. An ``OpSpec`` is one public op (``regops.conr_loss``, ``regops.ot.sinkhorn``):
the engines it runs on. ``python -m regops info``, the tests' impl parametrization, the bench and the GPU
validation record all read this table; a new op is one entry here (docs/adding_an_op.md).

Impl rules (the same for every op):
- ``impl="<name>"`` asks for that impl and raises if it cannot run here (or cannot take the input's dtype).
- ``REGOPS_IMPL`` is a preference: used when it can run, else auto.
- auto: on CPU tensors the C++ kernel if built, else the reference; on CUDA tensors a CUDA or Triton kernel
  only if ``gpu_validated.txt`` lists it for that op (it passed its tests on a real GPU), else the reference.
  No kernel that has never run on a GPU is chosen silently.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Optional

import torch

from . import _checks
from ._loader import LOAD_ERROR, has_kernel, triton_available, triton_interpreted
from .reference import sinkhorn as _reference_sinkhorn

IMPLS = ("reference", "cpu", "cuda", "triton")
KERNEL_IMPLS = ("cpu", "cuda", "triton")


@dataclass(frozen=True)
class Autograd:
    """How autograd treats one role of an engine:
    - "formula": its op module registers a backward (register_autograd);
    - "double_backward": a backward op, differentiable once: a gradient reaching it raises;
    - "no_grad": a solver step run where no gradient is wanted: a gradient reaching it raises;
    - "mutating": it writes its outputs in place and runs below autograd.
    ``public`` is the op named in the error, ``what`` what is not differentiable."""
    kind: str
    public: str = ""
    what: str = ""


_FORMULA = Autograd("formula")


@dataclass(frozen=True)
class Engine:
    """One kernel family.
    - ``ops[impl][role]``: a ``regops::`` op name for the kernel impls (the function itself where the reference has
      the same roles); an impl's first role is the one whose registration proves the impl is built.
    - ``dtypes[impl]``: the input dtypes that impl takes when asked for by name (absent: any the op takes);
      ``auto_dtypes[impl]``: those auto picks it for (absent: ``dtypes``).
    - ``autograd[role]``: how autograd treats that role's ops (ops/_autograd.py registers it)."""
    name: str
    ops: Mapping[str, Mapping[str, str]]
    dtypes: Mapping[str, tuple] = field(default_factory=dict)
    auto_dtypes: Mapping[str, tuple] = field(default_factory=dict)
    autograd: Mapping[str, Autograd] = field(default_factory=dict)

    def impls(self) -> tuple:
        """The reference (always) and the kernel impls this engine has."""
        return ("reference",) + tuple(i for i in KERNEL_IMPLS if i in self.ops)


@dataclass(frozen=True)
class OpSpec:
    """One public op. ``name``: where users call it (``regops.<name>``); ``engine``: the kernels it picks an impl
    of; ``needs[impl]``: the role of the engine that impl needs, where it is not the first."""
    name: str
    engine: Optional[Engine]
    needs: Mapping[str, str] = field(default_factory=dict)

    def impls(self) -> tuple:
        return self.engine.impls() if self.engine is not None else ("reference",)

    def probe(self, impl: str) -> Optional[str]:
        ops = self.engine.ops.get(impl, {}) if self.engine is not None else {}
        role = self.needs.get(impl)
        if role is not None:
            return ops.get(role)
        return next(iter(ops.values()), None)


# ---- the engines ----

CONTRASTIVE = Engine("contrastive", ops={
    "cpu": {"fwd": "contrastive_fwd", "bwd": "contrastive_bwd"},
    "cuda": {"fwd": "contrastive_fwd", "bwd": "contrastive_bwd"},
    "triton": {"fwd": "contrastive_fwd_triton", "bwd": "contrastive_bwd_triton"},
}, autograd={"fwd": _FORMULA, "bwd": Autograd("double_backward", "conr_loss/supcon_loss/focal_supcon_loss")})

ORTHONORMAL = Engine("orthonormal", ops={
    "cpu": {"fwd": "orthonormal_penalty_fwd", "bwd": "orthonormal_penalty_bwd",
            "grad_accumulate": "orthonormal_grad_accumulate_"},
    "cuda": {"fwd": "orthonormal_penalty_fwd", "bwd": "orthonormal_penalty_bwd"},
    "triton": {"fwd": "orthonormal_penalty_fwd_triton", "bwd": "orthonormal_penalty_bwd_triton"},
}, autograd={"fwd": _FORMULA, "bwd": Autograd("double_backward", "orthonormal_penalty"),
             "grad_accumulate": Autograd("mutating")})

_SINKHORN_ROLES = ("update", "update_dense", "cost_grad", "apply")
SINKHORN = Engine("sinkhorn", ops={
    "reference": {r: getattr(_reference_sinkhorn, r) for r in _SINKHORN_ROLES},
    "cpu": {r: f"sinkhorn_{r}" for r in _SINKHORN_ROLES},
    "cuda": {r: f"sinkhorn_{r}" for r in _SINKHORN_ROLES},
    "triton": {r: f"sinkhorn_{r}_triton" for r in _SINKHORN_ROLES},
}, dtypes={"triton": (torch.float32,)}, autograd={
    "update": Autograd("no_grad", "ot.sinkhorn", "a Sinkhorn potential update"),
    "update_dense": Autograd("no_grad", "ot.sinkhorn_from_cost", "a Sinkhorn potential update"),
    "cost_grad": Autograd("double_backward", "ot.sinkhorn"),
    "apply": Autograd("no_grad", "ot.apply_plan", "the streamed plan product P·v"),
})

# P²OT's pass runs on its float32 kernel matrix whatever the logits' dtype; auto keeps float64 logits on the
# reference (the official solver's precision), asking for triton by name is allowed.
P2OT = Engine("p2ot", ops={
    "cpu": {"scaling_pass": "p2ot_scaling_pass"},
    "cuda": {"scaling_pass": "p2ot_scaling_pass"},
    "triton": {"scaling_pass": "p2ot_scaling_pass_triton"},
}, auto_dtypes={"triton": (torch.float32,)},
   autograd={"scaling_pass": Autograd("no_grad", "p2ot_plan", "the scaling pass")})

GRADDROP = Engine("graddrop", ops={
    "cpu": {"apply": "graddrop_apply_", "keep_prob": "graddrop_keep_prob"},
    "cuda": {"apply": "graddrop_apply_", "keep_prob": "graddrop_keep_prob"},
    "triton": {"apply": "graddrop_apply_triton", "keep_prob": "graddrop_keep_prob_triton"},
}, autograd={"apply": Autograd("mutating"), "keep_prob": Autograd("no_grad", "graddrop_keep_prob", "the keep probability")})

# The preference engine's row math (ops/_fused_linear.py runs the chunk loop and the GEMMs around it).
FUSED_LINEAR = Engine("fused_linear", ops={
    "cpu": {"stats": "logsoftmax_rows", "grad": "logsoftmax_rows_grad_"},
    "cuda": {"stats": "logsoftmax_rows", "grad": "logsoftmax_rows_grad_"},
    "triton": {"stats": "logsoftmax_rows_triton", "grad": "logsoftmax_rows_grad_triton"},
}, autograd={"stats": Autograd("no_grad", "fused_linear_preference_loss", "the log-softmax row kernel"),
             "grad": Autograd("mutating")})

# Classification-side row losses (decoupled mixup, ELR): loss and gradient in one row pass; the backward is
# regops::row_grad_scale (ops/_row_grad.py), which raises on a double backward.
CLASS_ROWS = Engine("class_rows", ops={
    "cpu": {"mixup": "mixup_rows", "elr": "elr_rows"},
    "cuda": {"mixup": "mixup_rows", "elr": "elr_rows"},
    "triton": {"mixup": "mixup_rows_triton", "elr": "elr_rows_triton"},
}, autograd={"mixup": _FORMULA, "elr": _FORMULA})

# Parameter repulsion ("Adapt then Unlearn"): per-tensor sums over the whole list, one fwd and one bwd call.
REPULSION = Engine("repulsion", ops={
    "cpu": {"fwd": "repulsion_fwd", "bwd": "repulsion_bwd"},
    "cuda": {"fwd": "repulsion_fwd", "bwd": "repulsion_bwd"},
    "triton": {"fwd": "repulsion_fwd_triton", "bwd": "repulsion_bwd_triton"},
}, autograd={"fwd": _FORMULA, "bwd": Autograd("double_backward", "param_repulsion")})

# Batched spectral norms: one power-iteration call for the whole weight list, and its outer-product backward.
SPECTRAL = Engine("spectral", ops={
    "cpu": {"power": "spectral_power", "outer": "spectral_outer"},
    "cuda": {"power": "spectral_power", "outer": "spectral_outer"},
    "triton": {"power": "spectral_power_triton", "outer": "spectral_outer_triton"},
}, autograd={"power": _FORMULA, "outer": Autograd("double_backward", "spectral_norm_penalty")})

ENGINES = (CONTRASTIVE, ORTHONORMAL, SINKHORN, P2OT, GRADDROP, FUSED_LINEAR, CLASS_ROWS, REPULSION, SPECTRAL)
ENGINE_BY_NAME = {e.name: e for e in ENGINES}

# ---- the public ops (their name is their path under regops) ----

OPS: dict[str, OpSpec] = {spec.name: spec for spec in (
    OpSpec("orthonormal_penalty", ORTHONORMAL),
    OpSpec("sorsa_ortho_loss", ORTHONORMAL),
    OpSpec("sorsa_regularize_", ORTHONORMAL, needs={"cpu": "grad_accumulate"}),
    OpSpec("conr_loss", CONTRASTIVE),
    OpSpec("supcon_loss", CONTRASTIVE),
    OpSpec("focal_supcon_loss", CONTRASTIVE),
    OpSpec("hard_pair_mixup", None),
    OpSpec("kd_loss", None),
    OpSpec("ot.sinkhorn", SINKHORN),
    OpSpec("ot.sinkhorn_from_cost", SINKHORN),
    OpSpec("ot.sinkhorn_divergence", SINKHORN),
    OpSpec("monge_gap", SINKHORN),
    OpSpec("p2ot_plan", P2OT),
    OpSpec("sp2ot_plan", P2OT),
    OpSpec("graddrop_", GRADDROP),
    OpSpec("graddrop_keep_prob", GRADDROP),
    OpSpec("preference_loss", None),
    OpSpec("fused_linear_preference_loss", FUSED_LINEAR),
    OpSpec("rrpo_loss", FUSED_LINEAR),
    OpSpec("kl_to_reference", FUSED_LINEAR),
    OpSpec("cream_consistency", None),
    OpSpec("decoupled_mixup_loss", CLASS_ROWS),
    OpSpec("elr_loss", CLASS_ROWS, needs={"cpu": "elr", "cuda": "elr", "triton": "elr"}),
    OpSpec("spectral_norm_penalty", SPECTRAL),
    OpSpec("adversarial_state_noise", None),
    OpSpec("param_repulsion", REPULSION),
    # Contractive auto-encoders (Rifai et al. 2011; Alain & Bengio, "What Regularized Auto-Encoders Learn from the
    # Data Generating Distribution"): reference only
    OpSpec("contractive_penalty", None),
    OpSpec("sigmoid_ae_jacobian_penalty", None),
    OpSpec("cae_encoder_penalty", None),
    # Locally Regularized Neural Differential Equations (Pal et al., ICML 2023): reference only
    OpSpec("local_error_penalty", None),
    OpSpec("sample_regularization_time", None),
    # VGNN (Zhu & Razavian, CHIL 2021; NYUMedML/GNN_for_EHR) and LSA (Khalooei et al.; khalooei/LSA): reference only
    OpSpec("gaussian_kl", None),
    OpSpec("reparameterize", None),
    OpSpec("select_present_nodes", None),
    OpSpec("layer_relative_error", None),
    OpSpec("lsa.most_vulnerable_layers", None),
    OpSpec("lsa.layerwise_penalty", None),
    # CoRe (context regularizers), DORNet (contrastive ratio), RoMaP (masked L1 anchor), VPRSNN ensembles
    # (hyperactive neurons): reference only
    OpSpec("context_embedding_reg", None),
    OpSpec("context_attention_reg", None),
    OpSpec("contrast_ratio_loss", None),
    OpSpec("masked_l1_anchor", None),
    OpSpec("hyperactive_neuron_mask", None),
    OpSpec("apply_hyperactive_mask", None),
    OpSpec("calibrate_hyperactive_threshold", None),
)}

# Schemas that belong to no engine: build facts and the CPU output cache (csrc/ops.cpp).
UTILITY_SCHEMAS = ("_build_info", "_cpu_cache_clear", "_cpu_cache_idle_bytes")


def spec(op: str) -> OpSpec:
    try:
        return OPS[op]
    except KeyError:
        raise KeyError(f"regops: {op!r} is not a registered op (regops._registry.OPS)") from None


# ---- which impls can run, and which one a call gets ----

def gpu_validated_path() -> Path:
    return Path(__file__).with_name("gpu_validated.txt")


@lru_cache(None)
def gpu_validated() -> frozenset:
    """(op, impl) pairs that passed their tests on a real GPU (written by scripts/gpu_check.sh)."""
    path = gpu_validated_path()
    pairs = set()
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].split()
            if len(line) == 2:
                pairs.add((line[0], line[1]))
    return frozenset(pairs)


def available(op: str, impl: str, device: torch.device) -> tuple[bool, str]:
    """Can `impl` run `op` on `device`? Returns (ok, why not)."""
    s = spec(op)
    if impl == "reference":
        return True, ""
    if impl not in KERNEL_IMPLS:
        return False, f"unknown impl {impl!r}"
    name = s.probe(impl)
    if name is None:
        return False, f"regops.{op} has no {impl} kernel"
    if impl in ("cpu", "cuda"):
        if device.type != impl:
            return False, f"the {impl} kernel takes {impl.upper()} tensors, got device {device}"
        if not has_kernel(name, impl.upper()):
            if impl == "cpu":
                return False, "this build has no compiled CPU kernels (regops._C is missing: " + str(LOAD_ERROR) + ")"
            return False, "this build has no CUDA kernels (built with REGOPS_NO_CUDA=1 or without nvcc)"
        return True, ""
    if not triton_available():
        return False, "triton is not installed"
    if not hasattr(torch.ops.regops, name):
        return False, f"the triton op regops::{name} is not registered"
    if device.type == "cpu" and not triton_interpreted():
        return False, "the triton kernel runs on CPU tensors only under TRITON_INTERPRET=1"
    if device.type not in ("cpu", "cuda"):
        return False, f"the triton kernel takes CUDA tensors, got device {device}"
    return True, ""


def available_impls(op: str, device, *, include_reference: bool = True) -> list[str]:
    device = torch.device(device)
    return [i for i in IMPLS if (include_reference or i != "reference") and available(op, i, device)[0]]


def resolve_impl(op: str, impl, device: torch.device) -> str:
    """Pick the impl for one call on `device` (see the module docstring); dtypes are `pick`'s business."""
    if impl is not None and impl != "auto":
        if impl not in IMPLS:
            raise ValueError(f"regops.{op}: impl: expected one of None, 'auto', " + ", ".join(repr(i) for i in IMPLS)
                             + f", got {impl!r}")
        ok, why = available(op, impl, device)
        if not ok:
            raise RuntimeError(f"regops.{op}: impl: expected an impl that can run here, got {impl!r}: {why}")
        return impl
    pref = os.environ.get("REGOPS_IMPL", "auto")
    if pref in IMPLS and available(op, pref, device)[0]:
        return pref
    if device.type == "cuda":
        for cand in ("cuda", "triton"):
            if (op, cand) in gpu_validated() and available(op, cand, device)[0]:
                return cand
        return "reference"
    if device.type == "cpu" and available(op, "cpu", device)[0]:
        return "cpu"
    return "reference"


@torch._dynamo.assume_constant_result
def _resolve_constant(op: str, impl, device_type: str) -> str:
    # torch.compile treats the choice as a constant of the trace: it depends on the device type, not the data
    return resolve_impl(op, impl, torch.device(device_type))


def pick(op: str, impl, t: torch.Tensor, arg: str) -> str:
    """The impl for a call whose main input is `t` (named `arg` in errors): `resolve_impl`, then the dtype rule.
    An impl that does not take t's dtype raises when asked for by name; auto falls back to the reference."""
    chosen = _resolve_constant(op, impl, t.device.type)
    engine = spec(op).engine
    if engine is None or chosen == "reference":
        return chosen
    explicit = impl is not None and impl != "auto"
    takes = engine.dtypes.get(chosen)
    if takes is not None and t.dtype not in takes:
        if explicit:
            names = ", ".join(_checks.dtype_name(d) for d in takes)
            _checks.fail(op, arg, f"dtype {names} for impl={chosen!r}", _checks.dtype_name(t.dtype), TypeError)
        return "reference"
    auto_takes = engine.auto_dtypes.get(chosen)
    if not explicit and auto_takes is not None and t.dtype not in auto_takes:
        return "reference"
    return chosen


def kernel(engine_name: str, impl: str, role: str):
    """One callable of an engine's impl: ``kernel("sinkhorn", "cpu", "update")(...)``. Plain lookups, so
    torch.compile traces through them."""
    op = ENGINE_BY_NAME[engine_name].ops[impl][role]
    return op if callable(op) else getattr(torch.ops.regops, op)


def precise_impl(engine: Engine, chosen: str, device: torch.device) -> str:
    """The impl that runs a float64 pass for `chosen`: itself when it takes float64, else the compiled kernel of
    the same device where there is one, else the reference."""
    takes = engine.dtypes.get(chosen)
    if takes is None or torch.float64 in takes:
        return chosen
    compiled = device.type if device.type in ("cpu", "cuda") else None
    probe = next(iter(engine.ops.get(compiled, {}).values()), None) if compiled else None
    return compiled if probe and has_kernel(probe, compiled.upper()) else "reference"
