"""P²OT's official pseudo-label solver (rhfeiyang/PPOT, utils/sinkhorn_knopp.py, SemiCurrSinkhornKnopp.forward),
re-expressed in torch as written: float64, kernel domain, the b test every iteration."""
import torch


@torch.no_grad()
def p2ot_official(logits, rho, eps=0.1, gamma=1.0, max_iter=1000, tol=1e-6, b=None):
    n, k = logits.shape
    C = -torch.log_softmax(logits.double(), dim=1)
    Q = torch.exp(-torch.cat([C, torch.zeros(n, 1, dtype=torch.float64)], 1) / eps)
    Pa = torch.full((n, 1), 1.0 / n, dtype=torch.float64)
    Pb = torch.full((k + 1, 1), rho / k, dtype=torch.float64)
    Pb[-1] = 1 - rho
    b = torch.full((k + 1, 1), 1.0 / (k + 1), dtype=torch.float64) if b is None else b
    fi = gamma / (gamma + eps)
    it = 0
    for it in range(max_iter):
        a = Pa / (Q @ b)
        b_prev = b
        b = Pb / (Q.T @ a)
        b[:k] = b[:k] ** fi
        if torch.linalg.vector_norm(b - b_prev) <= tol:
            break
    plan = n * (a * Q * b.T)[:, :k]
    return plan.float(), b, it + 1
