"""regops.ot: entropic optimal transport, log-domain and streamed (O(N + M) memory), exact to OTT-JAX.

sinkhorn (point clouds), sinkhorn_from_cost (a given cost matrix), sinkhorn_divergence, and what to do with a
solution: transport_plan (materialized on request), apply_plan (P·v, streamed), barycentric_map."""
from ._solver import (CostPrecisionWarning, NonConvergenceWarning, SinkhornNotConverged, SinkhornOutput, apply_plan, barycentric_map,
                       sinkhorn, sinkhorn_divergence, sinkhorn_from_cost, transport_plan)

__all__ = ["sinkhorn", "sinkhorn_from_cost", "sinkhorn_divergence", "SinkhornOutput", "transport_plan", "apply_plan",
           "barycentric_map", "CostPrecisionWarning", "NonConvergenceWarning", "SinkhornNotConverged"]
