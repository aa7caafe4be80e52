"""Modules built on regops ops."""
from .conr import ConR
from .sorsa import SORSALinear, apply_sorsa

__all__ = ["ConR", "SORSALinear", "apply_sorsa"]
