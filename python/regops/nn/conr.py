"""ConR as a module."""
from torch import nn

from ..ops.conr import conr_loss


class ConR(nn.Module):
    """regops.conr_loss with its hyper-parameters fixed: ConR(variant="agedb")(features, labels, preds, weights)."""

    def __init__(self, *, temperature=None, threshold=None, push=None, variant="agedb", label_norm=2,
                 process_group=None, impl=None):
        super().__init__()
        self.kwargs = dict(temperature=temperature, threshold=threshold, push=push, variant=variant,
                           label_norm=label_norm, process_group=process_group, impl=impl)

    def forward(self, features, labels, preds, weights=None):
        return conr_loss(features, labels, preds, weights, **self.kwargs)
