"""The Monge gap, value and gradient in y = T(x) (what a training step needs), at OTT's defaults (eps = 0.05·std(C),
tol 1e-3, d = 2 as in the tutorial): regops against OTT-JAX's monge_gap_from_samples computation (jit of value_and_grad;
its first call, with compilation, is reported apart). Same tolerance and eps on both sides."""
from __future__ import annotations

import importlib.util

import torch

import regops
from regops import _registry
from regops.ot import _backend

from ..harness import Case

SIZES = [256, 1024, 4096]
QUICK = [256, 1024]
D = 2


def _pair(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    A = torch.tensor([[1.2, 0.3], [-0.4, 0.9]])
    y = x @ A + 0.5 + 0.1 * torch.randn(n, D, generator=g)
    return x.to(device), y.to(device)


def cases(quick: bool, device: torch.device) -> list[Case]:
    out = []
    for n in (QUICK if quick else SIZES):
        size = f"n={n} d={D}"

        def setup(n=n):
            x, y = _pair(n, device)
            return x, y.requires_grad_()

        def run(impl):
            def fn(s):
                x, y = s
                y.grad = None
                regops.monge_gap(x, y, impl=impl).backward()
            return fn

        def ott_setup(n=n):
            import jax
            import jax.numpy as jnp
            from ott.geometry import pointcloud
            from ott.problems.linear import linear_problem
            from ott.solvers.linear import sinkhorn

            def monge_gap_from_samples(x_, y_):
                # ott.neural.methods.monge_gap's computation (that module needs flax to import)
                geom = pointcloud.PointCloud(x_, y_)
                out = sinkhorn.Sinkhorn()(linear_problem.LinearProblem(geom))
                return jnp.mean(jax.vmap(geom.cost_fn)(x_, y_)) - out.ent_reg_cost

            x, y = _pair(n, "cpu")
            fn = jax.jit(jax.value_and_grad(lambda y_, x_: monge_gap_from_samples(x_, y_)))
            return fn, jnp.asarray(x.numpy()), jnp.asarray(y.numpy())

        def ott_run(s):
            fn, x, y = s
            v, g = fn(y, x)
            g.block_until_ready()

        have_ott = importlib.util.find_spec("ott") is not None and device.type == "cpu"
        out.append(Case("monge_gap", size, "ott-jax", ott_setup, ott_run, baseline="ott-jax",
                        predicted_bytes=8 * n * n * 4, skip=None if have_ott else "ott-jax not installed (or GPU run)",
                        note="jit(value_and_grad(monge_gap_from_samples)); 1st call compiles"))
        out.append(Case("monge_gap", size, "reference", setup, run("reference"), baseline="ott-jax",
                        predicted_bytes=8 * n * n * 4))
        for impl in (["cpu"] if device.type == "cpu" else ["cuda", "triton"]):
            ok, why = _registry.available("ot.sinkhorn", impl, device)
            out.append(Case("monge_gap", size, impl, setup, run(impl), baseline="ott-jax",
                            predicted_bytes=64 * n * D * 4 + 2**20, skip=None if ok else why))
    return out
