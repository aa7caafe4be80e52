"""P²OT and SP²OT pseudo-labels (rhfeiyang/PPOT, rhfeiyang/SPPOT) on regops' Sinkhorn.

The official solver (SemiCurrSinkhornKnopp) scales Q = exp(−Ĉ/ε), Ĉ = [C | 0], C = −log_softmax(logits), in
float64: a = Pa/(Q b); b = Pb/(Qᵀ a); b[:K] = b[:K]^τ (τ = γ/(γ+ε): a KL relaxation of the real columns), until
‖b − b_prev‖₂ ≤ tol. Q ≈ softmax^{1/ε} underflows even in float64 for confident logits.

The kernels keep that iteration but stabilized (POT's sinkhorn_stabilized idea): potentials α, β absorbed into
K = exp((α ⊕ β − Ĉ)/ε) (float32 is enough: its rows are normalized when formed, a column whose entries all lie
below e^-30 is lifted by its own scale, and the exponents are formed in float64 where float32 would round them
by more than 1e-4), and scalings u, v near 1.
One fused pass over K per iteration gives u = Pa/(K v) and the column sums Kᵀu (regops::p2ot_scaling_pass);
then v = (Pb/Kᵀu)^τ·e^{(τ−1)β/ε}. Every check_every iterations (the only host sync) the error is taken, and
u, v are absorbed into α, β (K re-formed from an exact log-domain row step) when they drift. Across ranks
(process_group) rows are sharded and only the column sums are all-reduced, as SwAV does.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Optional

import torch

from .. import _checks, _registry
from .._loader import schema_registered, triton_available
from ..contracts import p2ot as contract
from ..reference import p2ot as reference
from ._backend import Kernels as SinkhornKernels
from ._options import NonConvergenceWarning, SinkhornNotConverged, _check_options
CHECK_EVERY = 10
ABSORB_LOG = 20.0  # re-form K once |log u| or |log v| has moved this far since K was formed
LIFT_LOG = 30.0    # a column of K whose largest entry is below e^-LIFT_LOG is scaled to largest entry 1
MAX_RECOVERIES = 5
EXPONENT_RTOL = 1e-4  # K's exponents are formed in float64 when their float32 rounding could exceed this


if schema_registered("p2ot_scaling_pass"):
    torch.library.register_fake("regops::p2ot_scaling_pass")(contract.fake_pass)

if triton_available() and importlib.util.find_spec("regops.triton.p2ot") is not None:
    from ..triton import p2ot as _triton_p2ot  # noqa: F401  (registers the triton op)


@dataclass
class P2OTState:
    """The solver's column scaling, log b (K+1,) in float64 (the official solver keeps b between calls).
    Interchangeable across impls; pass it as `init` to warm-start."""
    log_col_scaling: torch.Tensor
    n_iter: int = 0
    converged: bool = False
    error: float = math.nan


def rho_schedule(step, total, rho0: float = 0.1, kind: str = "sigmoid") -> float:
    """P²OT's mass schedule: sigmoid ρ_t = ρ0 + (1−ρ0)·exp(−5(1−t/T)²), or linear ρ0 + (1−ρ0)·t/T."""
    _checks.check_choice("rho_schedule", "kind", kind, ("sigmoid", "linear"))
    if total <= 0:
        _checks.fail("rho_schedule", "total", "a positive number of steps", repr(total))
    t = min(max(float(step) / float(total), 0.0), 1.0)
    if kind == "linear":
        return rho0 + (1 - rho0) * t
    return rho0 + (1 - rho0) * math.exp(-5 * (1 - t) ** 2)


def _explicit(impl):
    return impl is not None and impl != "auto"


def _pick(op, impl, t):
    chosen = _registry.pick(op, impl, t, "logits")
    if chosen == "triton" and not torch.compiler.is_compiling():
        # before any kernel runs, so a device problem names this op, not the Sinkhorn step it calls first
        from ..triton import _host
        _host.check_device(f"regops.{op}", t, _triton_p2ot.p2ot_pass_kernel)
    return chosen


def _pass(chosen):
    return _registry.kernel("p2ot", chosen, "scaling_pass")


def _check_logits(op, logits):
    _checks.check_tensor(op, "logits", logits, ndims=(2,))
    _checks.check_has_data(op, "logits", logits)
    if not logits.is_floating_point():
        _checks.fail(op, "logits", "a floating-point tensor", f"dtype {_checks.dtype_name(logits.dtype)}", TypeError)
    if logits.shape[0] == 0:
        _checks.fail(op, "logits", "at least one row", f"shape {tuple(logits.shape)}")
    if logits.shape[1] == 0:
        _checks.fail(op, "logits", "K >= 1 columns (clusters)", f"shape {tuple(logits.shape)}")
    if not torch.compiler.is_compiling():
        _checks.check_finite_eager(op, "logits", logits)


def _check_params(op, rho, eps, gamma, max_iter, tol, on_nonconvergence):
    """Returns (rho, eps, gamma) as floats."""
    rho = _checks.number(op, "rho", rho, low=0, low_open=True, high=1, what="a mass in (0, 1]")
    eps = _checks.number(op, "eps", eps, low=0, low_open=True, what="a positive finite number")
    gamma = _checks.number(op, "gamma", gamma, low=0, low_open=True, what="a positive finite number")
    for name, v in (("max_iter", max_iter), ("tol", tol)):
        if isinstance(v, bool):
            _checks.fail(op, name, "a number, not a bool", repr(v), TypeError)
    _check_options(op, max_iter, tol, CHECK_EVERY, on_nonconvergence, None)
    return rho, eps, gamma


def _world(process_group):
    if process_group is None:
        return 1
    import torch.distributed as dist
    return dist.get_world_size(process_group)


def _marginals(K, rho, eps, gamma, n_global, device):
    log_col = torch.full((K + 1,), math.log(rho / K), dtype=torch.float64, device=device)
    log_col[K] = math.log1p(-rho) if rho < 1 else -math.inf
    tau = torch.full((K + 1,), gamma / (gamma + eps), dtype=torch.float64, device=device)
    tau[K] = 1.0
    return log_col, tau


def _neg_log_count(shape, n_global, dtype, device):
    """A tensor of −log(n_global): from the count as a tensor, never math.log of it, so that under torch.compile
    with dynamic shapes the row count stays symbolic (math.log would make each N a constant of the graph)."""
    return torch.full(shape, 1.0, dtype=torch.float64, device=device).mul_(n_global).log_().neg_().to(dtype)


def _init_log_b(op, init, Kc, device):
    if init is None:
        return torch.full((Kc,), -math.log(Kc), dtype=torch.float64, device=device)
    lb = init.log_col_scaling if isinstance(init, P2OTState) else init
    if not isinstance(lb, torch.Tensor) or lb.shape != (Kc,):
        _checks.fail(op, "init", f"a P2OTState (or log column scaling) of shape ({Kc},)",
                     f"{type(init).__name__}" + (f" of shape {tuple(lb.shape)}" if isinstance(lb, torch.Tensor) else ""))
    lb = lb.detach().to(device=device, dtype=torch.float64)
    # −inf is a column of zero scaling (the virtual column at ρ = 1); NaN or +inf is no scaling at all
    if not torch.compiler.is_compiling() and bool((torch.isnan(lb) | (lb == math.inf)).any()):
        i = int((torch.isnan(lb) | (lb == math.inf)).nonzero()[0])
        _checks.fail(op, "init", "a log column scaling without NaN or +inf", f"{float(lb[i])} at index {i}")
    return lb


def _solve_stabilized(op, C_hat, n_global, log_col, tau, eps, log_b0, *, max_iter, tol, chosen, process_group):
    """The kernels' path. Returns (plan (N, Kc) in C_hat's dtype, log_b (Kc,) float64, n_iter, err).

    K_ij = exp((α_i − Ĉ_ij)/ε + c_j) and log b = c + log v, with c a float64 column offset set when K is formed
    (`form`): c_j = β_j/ε, the column's potential, lifted by the column's own scale where the whole column of K
    would lie below e^−LIFT_LOG. Confident logits make some column's iterate mass ~1e-43 (below float32's normal
    range) while its scaling b_j is astronomically large: lifted, that column of K has its largest entry 1, v_j
    carries the small mass (an underflow to 0 there only drops terms < 1e-38 from row sums ≈ 1/N), and log b is
    updated from the column sums Kᵀu and c in float64, so no column sum underflows."""
    dt, dev = C_hat.dtype, C_hat.device
    N, Kc = C_hat.shape
    sk = SinkhornKernels(chosen)
    scaling_pass = _pass(chosen)
    e1 = torch.full((1,), eps, dtype=dt, device=dev)
    row_target = torch.full((N,), 1.0, dtype=dt, device=dev).div_(n_global)
    log_row = _neg_log_count((1, N), n_global, dt, dev)
    neg_log_n = _neg_log_count((1,), n_global, torch.float64, dev)
    ones_n = torch.ones((1, N), dtype=dt, device=dev)
    Cb = C_hat[None]

    def allreduce(t, op="sum"):
        if process_group is not None:
            import torch.distributed as dist
            dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=process_group)
        return t

    c_hat_absmax = allreduce(C_hat.abs().amax().double().reshape(1), "max")

    def form(log_b):
        """(K, c, log v) for the scaling b: an exact log-domain row step first, α = ε log Pa − ε LSE_j((β_j − Ĉ_ij)/ε)
        with β = ε log b, so K's rows sum to Pa; then each column's lift (its max taken over every rank's rows).
        The exponents (α_i + β_j − Ĉ_ij)/ε are formed in C_hat's dtype while their rounding, at most
        ~2⁻²⁴·(|α| + |β| + |Ĉ|)/ε for float32, stays below EXPONENT_RTOL (the bench problems: ~1e-5), and
        in float64 otherwise (small ε, huge logits), so K keeps float32's relative precision at any scale."""
        beta = (eps * log_b).to(dt)
        alpha = sk.update_dense(Cb, beta[None], log_row, ones_n, e1, False)[0]
        finite_beta = beta[torch.isfinite(beta)]
        beta_absmax = finite_beta.abs().amax() if finite_beta.numel() else beta.new_zeros(())
        bound = torch.stack([alpha.abs().amax().double(), beta_absmax.double()])
        bound = allreduce(bound, "max")
        rounding = torch.finfo(dt).eps * float(bound.sum() + c_hat_absmax) / eps
        if rounding <= EXPONENT_RTOL:
            expo = (alpha[:, None] + beta[None, :] - C_hat) / eps
            c = beta.double() / eps
        else:
            expo = C_hat.double().div_(-eps).add_(log_b[None, :])
            expo = expo.add_((neg_log_n - torch.logsumexp(expo, 1))[:, None])
            c = log_b.clone()
        col_max = allreduce(expo.amax(0), "max")
        lift = torch.where(torch.isfinite(col_max) & (col_max < -LIFT_LOG), -col_max, torch.zeros_like(col_max))
        Kt = torch.exp(expo.add_(lift[None, :])).to(dt)
        c = c + lift.double()
        log_v = torch.where(torch.isneginf(log_b), log_b, log_b - c)  # a zero-mass column keeps b = 0
        return Kt, c, log_v

    def fail():
        raise FloatingPointError(
            f"regops.{op}: logits: the {_checks.dtype_name(dt)} scaling left {_checks.dtype_name(dt)}'s range (a row "
            f"or column sum of the stabilized kernel under- or overflowed, even after re-forming it from the exact "
            f"log-domain step) at eps={eps:g}: pass float64 logits or raise eps; impl=None (auto) solves such a "
            f"problem with the float64 reference instead of raising")

    Kt, c, log_v = form(log_b0)
    log_v_formed = log_v
    v = torch.exp(log_v).to(dt)
    good = log_b0.clone()
    err = torch.tensor(math.inf, dtype=torch.float64)
    n_iter, recoveries = max_iter, 0
    u = row_target
    relaxed = tau < 1
    zero_mass = torch.isneginf(log_col)
    for it in range(max_iter):
        u, col = scaling_pass(Kt, v, row_target)
        col = allreduce(col)
        # log b_new = τ(log Pb − log Kᵀu + c); (τ−1)c only where τ < 1 (a zero-mass column has c = −inf, τ = 1)
        shift = torch.where(relaxed, (tau - 1) * c, torch.zeros_like(c))
        log_v_new = tau * (log_col - torch.log(col.double())) + shift
        # a zero-mass column (the virtual one at ρ = 1) keeps b = 0 rather than −inf − (−inf)
        log_v_new = torch.where(zero_mass, torch.full_like(log_v_new, -math.inf), log_v_new)
        check = (it + 1) % CHECK_EVERY == 0 or it + 1 == max_iter
        if not check:
            log_v = log_v_new
            v = torch.exp(log_v).to(dt)
            continue
        log_b_prev = c + log_v  # b after the previous iteration
        log_b = c + log_v_new
        err_now = reference.b_change(log_b, log_b_prev)
        finite = not bool(torch.isnan(log_b).any() or (log_b == math.inf).any()) and bool(torch.isfinite(u).all())
        if not finite:  # a row or column sum left the range: restart from the last good scaling, exactly
            recoveries += 1
            if recoveries > MAX_RECOVERIES:
                fail()
            Kt, c, log_v = form(good)
            log_v_formed = log_v
            v = torch.exp(log_v).to(dt)
            continue
        good = log_b
        err = err_now
        log_v = log_v_new
        if float(err) <= tol:
            n_iter = it + 1
            break
        u_log = torch.log(u.double())  # u = Pa/(K v) stays near 1 once K is formed
        moved = (log_v - log_v_formed)[torch.isfinite(log_v)]
        drift = max(float(moved.abs().max()) if moved.numel() else 0.0, float(u_log.abs().max()))
        if it + 1 < max_iter and drift > ABSORB_LOG:
            Kt, c, log_v = form(log_b)
            log_v_formed = log_v
        v = torch.exp(log_v).to(dt)
    plan = u[:, None] * Kt * torch.exp(log_v).to(dt)[None, :]
    return plan, c + log_v, n_iter, err


def _solve(op, C_hat, n_global, rho, eps, gamma, init, *, max_iter, tol, on_nonconvergence, process_group, chosen,
           explicit):
    """`explicit`: the impl was asked for by name, so a kernel path that cannot represent the problem raises
    instead of handing it to the float64 reference."""
    K = C_hat.shape[1] - 1
    log_col, tau = _marginals(K, rho, eps, gamma, n_global, C_hat.device)
    log_b0 = _init_log_b(op, init, K + 1, C_hat.device)

    def solve_reference():
        log_row = _neg_log_count((C_hat.shape[0],), n_global, torch.float64, C_hat.device)
        log_a, log_b, n_iter, err = reference.semi_relaxed_sinkhorn(
            C_hat, log_row, log_col, tau, eps, log_b0, max_iter=max_iter, tol=tol, check_every=CHECK_EVERY,
            process_group=process_group)
        return reference.plan(C_hat, log_a, log_b, eps), log_b, n_iter, err

    with torch.no_grad():
        if chosen == "reference":
            plan, log_b, n_iter, err = solve_reference()
        else:
            # the Triton kernels take float32 only (its pass runs on a float32 K whatever the logits' dtype): float64
            # logits asked for impl="triton" by name are solved in float32, not refused by an inner Sinkhorn step
            C_work = C_hat.float() if chosen == "triton" else C_hat
            try:
                plan, log_b, n_iter, err = _solve_stabilized(op, C_work, n_global, log_col, tau, eps, log_b0,
                                                             max_iter=max_iter, tol=tol, chosen=chosen,
                                                             process_group=process_group)
            except FloatingPointError:
                if explicit:
                    raise
                plan, log_b, n_iter, err = solve_reference()
    converged = bool(err <= tol)
    if tol > 0 and not converged and on_nonconvergence != "ignore":
        msg = (f"regops.{op}: did not converge: ‖b − b_prev‖₂/max(1, ‖b‖₂) = {float(err):.3e} > tol {tol:g} after {n_iter} "
               f"iterations; raise max_iter or tol")
        if on_nonconvergence == "raise":
            raise SinkhornNotConverged(msg)
        _checks.warn(msg, NonConvergenceWarning)
    state = P2OTState(log_b.double(), n_iter=n_iter, converged=converged, error=float(err))
    return plan, state


def _cost(logits):
    dt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    C = -torch.log_softmax(logits.detach().to(dt), dim=1)
    return torch.cat([C, C.new_zeros(C.shape[0], 1)], 1)


def p2ot_plan(logits, rho, *, eps=0.1, gamma=1.0, max_iter=1000, tol=1e-6, init=None, on_nonconvergence="warn",
              process_group=None, impl=None):
    """P²OT pseudo-labels: (plan (N, K) float32, no gradient; state) for logits (N, K).

    plan = N·(transport plan)[:, :K]: rows sum to at most 1, total mass N·ρ. With process_group, the rows of all
    ranks form one problem (N counts them all) and each rank gets its rows of the plan."""
    op = "p2ot_plan"
    _check_logits(op, logits)
    rho, eps, gamma = _check_params(op, rho, eps, gamma, max_iter, tol, on_nonconvergence)
    chosen = _pick(op, impl, logits)
    n_global = logits.shape[0] * _world(process_group)
    C_hat = _cost(logits)
    plan, state = _solve(op, C_hat, n_global, rho, eps, gamma, init, max_iter=max_iter, tol=tol,
                         on_nonconvergence=on_nonconvergence, process_group=process_group, chosen=chosen,
                         explicit=_explicit(impl))
    return (n_global * plan[:, :-1]).float(), state


class P2OT:
    """P²OT with its state kept between calls (the official solver keeps b): warm-starts itself."""

    def __init__(self, *, eps=0.1, gamma=1.0, max_iter=1000, tol=1e-6, on_nonconvergence="warn", process_group=None,
                 impl=None):
        self.kw = dict(eps=eps, gamma=gamma, max_iter=max_iter, tol=tol, on_nonconvergence=on_nonconvergence,
                       process_group=process_group, impl=impl)
        self.state: Optional[P2OTState] = None

    def __call__(self, logits, rho):
        if self.state is not None and self.state.log_col_scaling.shape[0] != logits.shape[1] + 1:
            self.state = None  # the number of clusters changed
        plan, self.state = p2ot_plan(logits, rho, init=self.state, **self.kw)
        return plan

    def reset(self):
        self.state = None


# ---- SP²OT ----

def topk_gaussian_similarity(features, k: int = 20, sigma: float = 2.0, *, block_rows: int = 1024):
    """The official SP²OT similarity: S_ij = exp(−‖f_i − f_j‖²/(2σ²D)) for the k nearest j ≠ i of each row, zero
    elsewhere (not symmetrized), as a sparse (N, N) COO tensor. Rows are processed in blocks: never N×N."""
    op = "topk_gaussian_similarity"
    _checks.check_tensor(op, "features", features, ndims=(2,))
    if not features.is_floating_point():
        _checks.fail(op, "features", "a floating-point tensor", _checks.dtype_name(features.dtype), TypeError)
    N, D = features.shape
    if N < 2:
        _checks.fail(op, "features", "at least two rows", f"shape {tuple(features.shape)}")
    if D == 0:
        _checks.fail(op, "features", "at least one column", f"shape {tuple(features.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        _checks.fail(op, "k", "an int >= 1", repr(k))
    sigma = _checks.number(op, "sigma", sigma, low=0, low_open=True, what="a positive finite number")
    _checks.check_finite_eager(op, "features", features)
    k = min(k, N - 1)
    f = features.detach().float()
    sq = f.pow(2).sum(1)
    rows, cols, vals = [], [], []
    for i0 in range(0, N, block_rows):
        fb = f[i0:i0 + block_rows]
        d2 = (sq[i0:i0 + fb.shape[0], None] + sq[None, :] - 2 * fb @ f.T).clamp_min(0)
        d2[torch.arange(fb.shape[0]), torch.arange(i0, i0 + fb.shape[0])] = float("inf")  # not itself
        dist, idx = torch.topk(d2, k, dim=1, largest=False)
        rows.append(torch.arange(i0, i0 + fb.shape[0], device=f.device).repeat_interleave(k))
        cols.append(idx.reshape(-1))
        vals.append(torch.exp(-dist.reshape(-1) / (2 * sigma ** 2 * D)))
    ind = torch.stack([torch.cat(rows), torch.cat(cols)])
    return torch.sparse_coo_tensor(ind, torch.cat(vals), (N, N), check_invariants=True).coalesce()


def _sym_times(S, Q):
    """(S + Sᵀ) Q for a dense or sparse S."""
    if S.is_sparse:
        return torch.sparse.mm(S, Q) + torch.sparse.mm(S.t(), Q)
    return S @ Q + S.T @ Q


def sp2ot_plan(logits, rho, similarity, *, lam=None, eps=0.1, gamma=1.0, mm_iters=100, mm_tol=1e-6, max_iter=1000,
               tol=1e-6, on_nonconvergence="warn", impl=None):
    """SP²OT pseudo-labels: minimizes ⟨Q,C⟩ − λ⟨S, QQᵀ⟩ + ε·Σ Q log Q by majorize–minimize, each step a P²OT
    solve on C_t = C − λ(S + Sᵀ)Q_t from Q_0 = ρ/(NK), until the objective moves by less than mm_tol.
    Returns (plan = N·Q (N, K) float32, state). similarity: dense (N, N) or sparse (topk_gaussian_similarity)."""
    op = "sp2ot_plan"
    _check_logits(op, logits)
    rho, eps, gamma = _check_params(op, rho, eps, gamma, max_iter, tol, on_nonconvergence)
    N, K = logits.shape
    _checks.check_tensor(op, "similarity", similarity)
    if tuple(similarity.shape) != (N, N):
        _checks.fail(op, "similarity", f"shape ({N}, {N})", f"shape {tuple(similarity.shape)}")
    if isinstance(mm_iters, bool) or not isinstance(mm_iters, int) or mm_iters < 1:
        _checks.fail(op, "mm_iters", "an int >= 1", repr(mm_iters), TypeError if not isinstance(mm_iters, int) or
                     isinstance(mm_iters, bool) else ValueError)
    mm_tol = _checks.number(op, "mm_tol", mm_tol, low=0, what="a finite number >= 0")
    lam = 1000.0 * (1 - rho) if lam is None else _checks.number(op, "lam", lam)
    if not torch.compiler.is_compiling() and _checks.check_finite_enabled(similarity.device):
        values = similarity.coalesce().values() if similarity.is_sparse else similarity
        _checks.check_finite_eager(op, "similarity", values)
    chosen = _pick(op, impl, logits)
    C_hat = _cost(logits)
    C = C_hat[:, :-1]
    S = similarity.detach().to(device=C.device, dtype=C.dtype)
    Q = torch.full((N, K), rho / (N * K), dtype=C.dtype, device=C.device)
    state, prev = None, None
    for _ in range(mm_iters):
        Ct = torch.cat([C - lam * _sym_times(S, Q), C.new_zeros(N, 1)], 1)
        plan, state = _solve(op, Ct, N, rho, eps, gamma, state, max_iter=max_iter, tol=tol,
                             on_nonconvergence=on_nonconvergence, process_group=None, chosen=chosen,
                             explicit=_explicit(impl))
        Q = plan[:, :-1].to(C.dtype)
        SQ = torch.sparse.mm(S, Q) if S.is_sparse else S @ Q
        obj = float((Q * C).sum() - lam * (Q * SQ).sum() + eps * torch.special.xlogy(Q, Q).sum())
        if prev is not None and abs(obj - prev) < mm_tol:
            break
        prev = obj
    return (N * Q).float(), state
