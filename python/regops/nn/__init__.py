"""Modules built on regops ops."""
from .conr import ConR
from .monge_gap import MongeGapLoss
from .sorsa import SORSALinear, apply_sorsa

__all__ = ["ConR", "MongeGapLoss", "SORSALinear", "apply_sorsa"]
