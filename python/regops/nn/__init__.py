"""Modules built on regops ops."""
from .conr import ConR
from .elr import ELRLoss
from .monge_gap import MongeGapLoss
from .sorsa import SORSALinear, apply_sorsa

__all__ = ["ConR", "ELRLoss", "MongeGapLoss", "SORSALinear", "apply_sorsa"]
