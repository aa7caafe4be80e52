"""regops.ot: entropic optimal transport, log-domain and streamed (O(N + M) memory), exact to OTT-JAX.

sinkhorn (point clouds), sinkhorn_from_cost (a given cost matrix), sinkhorn_divergence, and what to do with a
solution: transport_plan (materialized on request), apply_plan (P·v, streamed), barycentric_map. P²OT's
pseudo-labels (p2ot.py) run on the same kernels."""
from ._divergence import sinkhorn_divergence
from ._options import CostPrecisionWarning, NonConvergenceWarning, SinkhornNotConverged, SinkhornOutput
from ._plan import apply_plan, barycentric_map, transport_plan
from ._solver import sinkhorn, sinkhorn_from_cost

__all__ = ["sinkhorn", "sinkhorn_from_cost", "sinkhorn_divergence", "SinkhornOutput", "transport_plan", "apply_plan",
           "barycentric_map", "CostPrecisionWarning", "NonConvergenceWarning", "SinkhornNotConverged"]
