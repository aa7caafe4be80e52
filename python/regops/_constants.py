"""Dtypes and integer codes shared by every layer (the op schemas take these codes; csrc/include/regops/*_math.h
defines the same numbers for the C++ and CUDA kernels)."""
from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Low-precision inputs accumulate in float32; float32 and float64 stay as they are."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


# Sinkhorn ground costs, OTT-JAX's: sqeuclidean ‖x−y‖² (no ½), euclidean ‖x−y‖, cosine 1 − ⟨x,y⟩/(‖x‖‖y‖ + ridge)
# (csrc/include/regops/sinkhorn_math.h).
SQEUCLIDEAN, EUCLIDEAN, COSINE = 0, 1, 2
COST_IDS = {"sqeuclidean": SQEUCLIDEAN, "euclidean": EUCLIDEAN, "cosine": COSINE}
COST_NAMES = {v: k for k, v in COST_IDS.items()}
COSINE_RIDGE = 1e-8

# The contrastive engine's loss kinds (csrc/include/regops/contrastive_math.h, enum Kind) and the per-anchor
# statistics its forward saves for the backward: [L, alpha, beta, |P|].
CONR_AGEDB, CONR_NYUD2, SUPCON, FOCAL = 0, 1, 2, 3
CONTRASTIVE_KINDS = {CONR_AGEDB: "ConR agedb", CONR_NYUD2: "ConR nyud2", SUPCON: "SupCon", FOCAL: "focal SupCon"}
ROW_STATS = 4
