"""regops.lsa: Layers Sustainability Analysis (khalooei/LSA) on a whole model: the most vulnerable layers of a
model under a perturbation, and the layer-wise regularizer on chosen layers. The per-layer measure is
``regops.layer_relative_error``; sources, the official behaviour and the departures: regops.ops.lsa."""
from .ops.lsa import layerwise_penalty, most_vulnerable_layers

__all__ = ["most_vulnerable_layers", "layerwise_penalty"]
