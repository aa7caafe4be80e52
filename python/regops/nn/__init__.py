"""Modules built on regops ops."""
from .sorsa import SORSALinear, apply_sorsa

__all__ = ["SORSALinear", "apply_sorsa"]
