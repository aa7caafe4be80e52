"""torch.compile(dynamic=True) on every public op, on every impl that runs here: the same values as eager.
Ops without host syncs compile whole (fullgraph=True), Sinkhorn with a fixed iteration count (tol=0) too; P²OT
and SP²OT sync the host to stop, so they compile with graph breaks (as do Sinkhorn solves with a tolerance,
whose graph-broken loop takes minutes to compile: not run here)."""
import pytest
import torch

import regops

from conftest import cpu_impls


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def contrastive_cases():
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2])
    y = torch.linspace(0, 1, 9)[:, None].round(decimals=1)
    p = y.flip(0)
    return {
        "supcon_loss": lambda f, impl: regops.supcon_loss(f, labels[: f.shape[0]], impl=impl),
        "focal_supcon_loss": lambda f, impl: regops.focal_supcon_loss(f, labels[: f.shape[0]], impl=impl),
        "conr_loss": lambda f, impl: regops.conr_loss(f, y[: f.shape[0]], p[: f.shape[0]], impl=impl),
    }


FULLGRAPH = [
    ("orthonormal_penalty", lambda impl: (lambda x: regops.orthonormal_penalty(x, side="rows", impl=impl)),
     lambda n: torch.randn(3, n, 6, generator=gen())),
    ("sorsa_ortho_loss", lambda impl: (lambda x: regops.sorsa_ortho_loss(x, x.transpose(1, 2), impl=impl)),
     lambda n: torch.randn(2, n, 6, generator=gen())),
    ("graddrop_keep_prob",
     lambda impl: (lambda x: regops.graddrop_keep_prob(x, x.flip(0) - 0.3, impl=impl)),
     lambda n: torch.randn(n, 5, generator=gen())),
    ("ot.sinkhorn",
     lambda impl: (lambda x: regops.ot.sinkhorn(x, x.flip(0) + 1, eps=0.5, max_iter=6, tol=0, impl=impl).reg_ot_cost),
     lambda n: torch.randn(n, 2, generator=gen())),
] + [(name, (lambda fn: lambda impl: (lambda x: fn(x, impl)))(fn),
      lambda n: torch.randn(n, 4, generator=gen())) for name, fn in contrastive_cases().items()]


def impls(name):
    return ["reference"] + cpu_impls(name)


@pytest.mark.parametrize("name,make,inputs", FULLGRAPH, ids=[c[0] for c in FULLGRAPH])
def test_fullgraph_dynamic(name, make, inputs):
    for impl in impls(name):
        torch._dynamo.reset()
        fn = make(impl)
        compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend="aot_eager")
        for n in (7, 9):  # two sizes: one dynamic graph serves both
            x = inputs(n)
            xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
            want, got = fn(xe), compiled(xc)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            if want.requires_grad:
                want.sum().backward()
                got.sum().backward()
                torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-5, atol=1e-6)


def test_graddrop_dynamic():
    for impl in impls("graddrop_"):
        torch._dynamo.reset()

        def step(w, gt, gr):
            w.grad = None
            regops.graddrop_(w, gt, gr, lam=0.5, generator=torch.Generator().manual_seed(1), impl=impl)
            return w.grad

        for n in (7, 9):
            w = torch.nn.Parameter(torch.randn(n, 3, generator=gen()))
            gt, gr = torch.randn(n, 3, generator=gen(1)), torch.randn(n, 3, generator=gen(2))
            want = step(w, gt, gr).clone()
            got = torch.compile(step, dynamic=True, backend="aot_eager")(w, gt, gr)
            torch.testing.assert_close(got, want)


SOLVERS = [
    ("p2ot_plan", lambda impl: (lambda z: regops.p2ot_plan(z, 0.3, impl=impl)[0]),
     lambda n: 5 * torch.randn(n, 4, generator=gen())),
    ("sp2ot_plan",
     lambda impl: (lambda z: regops.sp2ot_plan(z, 0.3, torch.eye(z.shape[0]) * 0.1, lam=0.5, mm_iters=2, impl=impl)[0]),
     lambda n: 5 * torch.randn(n, 4, generator=gen())),
    ("monge_gap",
     lambda impl: (lambda x: regops.monge_gap(x, 2 * x + 1, eps=0.5, max_iter=6, tol=0, impl=impl)),
     lambda n: torch.randn(n, 2, generator=gen())),
]


@pytest.mark.parametrize("name,make,inputs", SOLVERS, ids=[c[0] for c in SOLVERS])
def test_solvers_dynamic(name, make, inputs):
    for impl in [i for i in impls(name) if i != "triton"]:  # the interpreted solves are slow
        torch._dynamo.reset()
        fn = make(impl)
        compiled = torch.compile(fn, dynamic=True, backend="aot_eager")
        for n in (7, 9):
            x = inputs(n)
            torch.testing.assert_close(compiled(x), fn(x), rtol=1e-5, atol=1e-6)
