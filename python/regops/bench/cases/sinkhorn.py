"""Sinkhorn (regops.ot), two views, float32:

ot.sinkhorn/iter: time per iteration at a fixed iteration count (tol = 0), so every provider does the same work.
  cpu / cuda / triton  the solver's loop body: the g update then the f update, streamed (the kernels alone)
  pot                  POT's sinkhorn_log on the torch backend, on its cost matrix ot.dist(x, y) (built untimed)
  reference            regops' dense log-domain reference (torch.logsumexp over the materialized C)
  exp-bound            torch.exp over N·M values (L3-resident chunks), twice per iteration: the exps any
                       log-domain iteration needs
  sgemm-bound          torch.mm of the same (N, d)×(d, M) products in 4096² tiles, twice per iteration
  Per-iteration bound = max(exp-bound, sgemm-bound). Pair-updates/s = 2·N·M / time.

ot.sinkhorn/solve: a whole solve to tol = 1e-3 at OTT's default eps = 0.05·std(C), from the points.
  cpu          regops.ot.sinkhorn(x, y) with its defaults
  ott-jax      OTT-JAX's Sinkhorn (jit; the first call, with compilation, is reported apart)
  pot          POT's sinkhorn2(method="sinkhorn_log"), torch f32, stopThr = 1e-3 (its error is the L2 norm,
               checked every 10 iterations), the cost matrix built inside
  geomloss     GeomLoss SamplesLoss("sinkhorn", debias=False, tensorized), blur² = eps/2 (its cost is ‖x−y‖²/2);
               its iteration count comes from its ε-scaling schedule (scaling 0.5), not from a tolerance

ot.sinkhorn/default-eps: the statistics pass behind eps=None for the costs with no closed form (euclidean,
  cosine): mean and mean square of C over all N·M pairs, streamed in row chunks.
  cpu              regops (entries in float32, sums in float64: ot/_epsilon.py::cost_moments)
  float64-entries  the same pass with the entries formed in float64 (the previous formulation)
"""
from __future__ import annotations

import importlib.util
import math
import os

import torch

from regops import _registry
from regops._constants import COST_IDS
from regops.ot import _backend
from regops.ot import _epsilon, _solver
from regops.reference import sinkhorn as reference

from ..harness import Case

F32 = 4
ITER_SIZES = [(1000, 3), (1000, 64), (10000, 2), (10000, 3), (10000, 64), (50000, 3), (50000, 64), (100000, 3)]
SOLVE_SIZES = [(1000, 3), (10000, 3), (10000, 64)]
QUICK_ITER = [(1000, 3), (1000, 64)]
QUICK_SOLVE = [(1000, 3)]
EXP_CHUNK = 1 << 18
GEMM_TILE = 4096


def _clouds(n, d, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, d, generator=g) * 0.8 + 0.5
    return x.to(device), y.to(device)


def _eps(x, y):
    """OTT's default, 0.05·std(C), as every provider gets it."""
    mean, msq = _epsilon.sqeuclidean_moments(x[None], y[None])
    return float(0.05 * (msq - mean * mean).clamp_min(0).sqrt())


def _iterations(n, d):
    if n >= 100000:
        return 1
    if n >= 50000:
        return 1 if d > 16 else 2
    return 3 if n * d >= 10000 * 64 else 10


def _reps(n, d):
    return 1 if n >= 50000 else (3 if n >= 10000 else None)


def _have(module):
    return importlib.util.find_spec(module) is not None


def iter_cases(sizes, device):
    out = []
    op = "ot.sinkhorn/iter"
    for n, d in sizes:
        size = f"N=M={n} d={d}"
        k = _iterations(n, d)
        reps = _reps(n, d)
        nm = n * n * F32
        kern_bytes = 8 * n * d * F32 + 64 * 2**20

        def kernel_setup(n=n, d=d):
            x, y = _clouds(n, d, device)
            m = x.mean(0, keepdim=True)
            x, y = (x - m)[None].contiguous(), (y - m)[None].contiguous()
            eps = torch.tensor([_eps(x[0], y[0])], device=device)
            a = torch.full((1, n), 1.0 / n, device=device)
            return x, y, torch.log(a), torch.ones_like(a), eps

        def loop(kernels, k=k):
            def run(s):
                x, y, log_w, tau, eps = s
                f = torch.zeros_like(log_w)
                for _ in range(k):
                    g = kernels.update(y, x, f, log_w, tau, eps, 0)
                    f = kernels.update(x, y, g, log_w, tau, eps, 0)
                return f
            return run

        for impl in (["cpu"] if device.type == "cpu" else ["cuda", "triton"]):
            ok, why = _registry.available("ot.sinkhorn", impl, device)
            kernels = _backend.Kernels(impl) if ok else None
            out.append(Case(op, size, impl, kernel_setup, parts=((1.0 / k, loop(kernels)),) if ok else (),
                            baseline="pot", predicted_bytes=kern_bytes, skip=None if ok else why, min_reps=reps,
                            note=f"per iteration ({k} timed per repetition)"))

        def dense_setup(n=n, d=d):
            x, y = _clouds(n, d, device)
            C = reference.cost_matrix(x[None], y[None], 0)
            eps = torch.tensor([_eps(x, y)], device=device)
            a = torch.full((1, n), 1.0 / n, device=device)
            return C, torch.log(a), torch.ones_like(a), eps

        def dense_loop(s, k=k):
            C, log_w, tau, eps = s
            f = torch.zeros_like(log_w)
            for _ in range(k):
                g = reference.update_dense(C, f, log_w, tau, eps, True)
                f = reference.update_dense(C, g, log_w, tau, eps, False)
            return f

        def pot_setup(n=n, d=d):
            import ot
            x, y = _clouds(n, d, device)
            a = torch.full((n,), 1.0 / n, device=device)
            return ot.dist(x, y), a, _eps(x, y)

        def pot_run(s, k=k):
            import ot
            M, a, eps = s
            ot.bregman.sinkhorn_log(a, a, M, eps, numItermax=k, stopThr=0.0, warn=False)

        out.append(Case(op, size, "pot", pot_setup, parts=((1.0 / k, pot_run),), baseline="pot",
                        predicted_bytes=5 * nm, skip=None if _have("ot") else "POT is not installed",
                        min_reps=reps, note=f"per iteration ({k} timed per repetition); C built untimed"))
        out.append(Case(op, size, "reference", dense_setup, parts=((1.0 / k, dense_loop),), baseline="pot",
                        predicted_bytes=5 * nm, min_reps=reps, note="per iteration; C built untimed"))

        def exp_setup(n=n):
            return torch.randn(EXP_CHUNK, device=device), torch.empty(EXP_CHUNK, device=device), n * n

        def exp_pass(s):
            src, dst, total = s
            for _ in range(math.ceil(total / EXP_CHUNK)):
                torch.exp(src, out=dst)

        def gemm_setup(n=n, d=d):
            x, y = _clouds(n, d, device)
            return x, y, torch.empty(GEMM_TILE, GEMM_TILE, device=device)

        def gemm_pass(s):
            x, y, buf = s
            for i in range(0, x.shape[0], GEMM_TILE):
                xi = x[i:i + GEMM_TILE]
                for j in range(0, y.shape[0], GEMM_TILE):
                    yj = y[j:j + GEMM_TILE]
                    torch.mm(xi, yj.T, out=buf[:xi.shape[0], :yj.shape[0]])

        out.append(Case(op, size, "exp-bound", exp_setup, parts=((2.0, exp_pass),), baseline="pot", memory=False,
                        predicted_bytes=0, min_reps=reps, note="torch.exp over 2·N·M values"))
        out.append(Case(op, size, "sgemm-bound", gemm_setup, parts=((2.0, gemm_pass),), baseline="pot",
                        memory=False, predicted_bytes=0, min_reps=reps, note="torch.mm, 2·(N,d)×(d,M)"))
    return out


def solve_cases(sizes, device):
    out = []
    op = "ot.sinkhorn/solve"
    for n, d in sizes:
        size = f"N=M={n} d={d}"
        nm = n * n * F32
        reps = _reps(n, d)

        def setup(n=n, d=d):
            x, y = _clouds(n, d, device)
            return x, y, _eps(x, y)

        def regops_fn(impl):
            def run(s):
                x, y, _ = s
                out = _solver.sinkhorn(x, y, impl=impl, max_iter=20000)
                return out.reg_ot_cost.item()
            return run

        for impl in (["cpu"] if device.type == "cpu" else ["cuda", "triton"]):
            ok, why = _registry.available("ot.sinkhorn", impl, device)
            out.append(Case(op, size, impl, setup, regops_fn(impl), baseline="ott-jax",
                            predicted_bytes=8 * n * d * F32 + 64 * 2**20, skip=None if ok else why, min_reps=reps))

        def ott_setup(n=n, d=d):
            import jax
            import jax.numpy as jnp
            from ott.geometry import pointcloud
            from ott.problems.linear import linear_problem
            from ott.solvers.linear import sinkhorn

            x, y = _clouds(n, d, "cpu")

            @jax.jit
            def solve(x, y):
                geom = pointcloud.PointCloud(x, y)
                return sinkhorn.Sinkhorn(max_iterations=20000)(linear_problem.LinearProblem(geom)).reg_ot_cost

            return solve, jnp.asarray(x.numpy()), jnp.asarray(y.numpy())

        def ott_run(s):
            solve, x, y = s
            return float(solve(x, y).block_until_ready())

        ott_ok = device.type == "cpu" and _have("ott") and _have("jax")
        out.append(Case(op, size, "ott-jax", ott_setup, ott_run, baseline="ott-jax", predicted_bytes=4 * nm,
                        skip=None if ott_ok else "ott-jax not installed (or not a CPU run)", min_reps=reps,
                        note="jit; the first call holds the compilation"))

        def pot_run(s):
            import ot
            x, y, eps = s
            a = torch.full((x.shape[0],), 1.0 / x.shape[0], device=x.device)
            return float(ot.sinkhorn2(a, a, ot.dist(x, y), eps, method="sinkhorn_log", stopThr=1e-3,
                                      numItermax=20000, warn=False))

        out.append(Case(op, size, "pot", setup, pot_run, baseline="ott-jax", predicted_bytes=5 * nm,
                        skip=None if _have("ot") else "POT is not installed", min_reps=reps,
                        note="stopThr 1e-3 on its L2 marginal error"))

        def geomloss_run(s):
            from geomloss import SamplesLoss
            x, y, eps = s
            loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), scaling=0.5, debias=False,
                               backend="tensorized")
            return float(loss(x, y))

        out.append(Case(op, size, "geomloss", setup, geomloss_run, baseline="ott-jax", predicted_bytes=6 * nm,
                        skip=None if _have("geomloss") else "geomloss is not installed", min_reps=reps,
                        note="tensorized, ε-scaling 0.5: its own iteration count"))
    return out


EPS_SIZES = [(20000, 3), (20000, 64)]
QUICK_EPS = [(2000, 3)]


def _moments_float64_entries(x, y, cost):
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    rows = max(1, _epsilon._STAT_CHUNK // M)
    s1 = x.new_zeros(B, dtype=torch.float64)
    s2 = x.new_zeros(B, dtype=torch.float64)
    for i in range(0, N, rows):
        c = reference.cost_matrix(x[:, i:i + rows].double(), y.double(), cost)
        s1 += c.sum((1, 2))
        s2 += c.pow(2).sum((1, 2))
    return s1 / (N * M), s2 / (N * M)


def eps_cases(sizes, device):
    out = []
    for cost in ("euclidean", "cosine"):
        op = f"ot.sinkhorn/default-eps {cost}"
        cid = COST_IDS[cost]
        for n, d in sizes:
            size = f"N=M={n} d={d}"

            def setup(n=n, d=d):
                x, y = _clouds(n, d, device)
                return x[None], y[None]

            def ours(s, cid=cid):
                return _epsilon.cost_moments(*s, cid)[0].item()

            def float64_entries(s, cid=cid):
                return _moments_float64_entries(*s, cid)[0].item()

            chunk = _epsilon._STAT_CHUNK * 8
            out.append(Case(op, size, "cpu" if device.type == "cpu" else device.type, setup, ours,
                            baseline="float64-entries", predicted_bytes=2 * n * d * F32 + 2 * chunk, min_reps=3))
            out.append(Case(op, size, "float64-entries", setup, float64_entries, baseline="float64-entries",
                            predicted_bytes=2 * n * d * F32 + 4 * chunk, min_reps=3))
    return out


def cases(quick: bool, device: torch.device) -> list[Case]:
    if os.environ.get("REGOPS_BENCH_SINKHORN_SIZES"):  # e.g. "10000x2,10000x64": the per-iteration view only
        sizes = [tuple(int(v) for v in s.split("x")) for s in os.environ["REGOPS_BENCH_SINKHORN_SIZES"].split(",")]
        return iter_cases(sizes, device)
    return (iter_cases(QUICK_ITER if quick else ITER_SIZES, device)
            + solve_cases(QUICK_SOLVE if quick else SOLVE_SIZES, device)
            + eps_cases(QUICK_EPS if quick else EPS_SIZES, device))
