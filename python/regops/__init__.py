"""regops: fast, exact regularizers from recent deep-learning papers, as PyTorch ops."""
from importlib.metadata import PackageNotFoundError, version as _version

from . import _loader  # loads the compiled ops (or notes their absence) before the ops register
from ._loader import BuildMismatchWarning, empty_cache
from .ops.conr import conr_loss
from .ops.supcon import focal_supcon_loss, supcon_loss
from .ops.hard_pair_mixup import HardPairMixup, hard_pair_mixup
from .ops.graddrop import graddrop_, graddrop_keep_prob
from .ops.monge_gap import monge_gap, monge_gap_map
from .ot.p2ot import P2OT, P2OTState, p2ot_plan, rho_schedule, sp2ot_plan, topk_gaussian_similarity
from .ops.orthonormal import orthonormal_penalty
from .ops.sorsa import sorsa_ortho_loss, sorsa_regularize_
from . import nn
from . import ot
from . import masktune
from .ops.kd import kd_loss
from .ops.decoupled_mixup import decoupled_mixup_loss
from .ops.elr import elr_loss
from .ops.preference import (cream_consistency, fused_linear_preference_loss, kl_to_reference, preference_loss,
                             rrpo_loss)
from .ops.repulsion import RepulsionAnchors, param_repulsion
from .ops.spectral import SpectralNormState, adversarial_state_noise, spectral_norm_penalty
# the seed regularizers of issue 16 (reference only)
from .ops.contractive import cae_encoder_penalty, contractive_penalty, sigmoid_ae_jacobian_penalty
from .ops.local_error import local_error_penalty, sample_regularization_time
from .ops.vgnn import gaussian_kl, reparameterize, select_present_nodes
from .ops.lsa import layer_relative_error
from . import lsa
from .ops.core_reg import context_attention_reg, context_embedding_reg
from .ops.dornet import contrast_ratio_loss, dornet_vgg19_slices
from .ops.romap import masked_l1_anchor
from .ops.snn import apply_hyperactive_mask, calibrate_hyperactive_threshold, hyperactive_neuron_mask
from .ops import _autograd

_autograd.register_all()

try:
    __version__ = _version("regops")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = [
    "conr_loss", "supcon_loss", "focal_supcon_loss", "hard_pair_mixup", "HardPairMixup", "empty_cache", "graddrop_",
    "graddrop_keep_prob", "masktune", "kd_loss", "decoupled_mixup_loss", "elr_loss", "preference_loss",
    "fused_linear_preference_loss", "rrpo_loss", "kl_to_reference", "cream_consistency", "monge_gap", "monge_gap_map",
    "p2ot_plan", "sp2ot_plan", "P2OT", "P2OTState", "rho_schedule", "topk_gaussian_similarity", "orthonormal_penalty",
    "sorsa_ortho_loss", "sorsa_regularize_", "param_repulsion", "RepulsionAnchors", "spectral_norm_penalty",
    "SpectralNormState", "adversarial_state_noise",
    # issue 16's seed regularizers
    "contractive_penalty", "sigmoid_ae_jacobian_penalty", "cae_encoder_penalty", "local_error_penalty",
    "sample_regularization_time", "gaussian_kl", "reparameterize", "select_present_nodes", "layer_relative_error",
    "context_embedding_reg", "context_attention_reg", "contrast_ratio_loss", "dornet_vgg19_slices", "masked_l1_anchor",
    "hyperactive_neuron_mask", "apply_hyperactive_mask", "calibrate_hyperactive_threshold",
    "nn", "ot", "lsa", "BuildMismatchWarning", "__version__",
]
