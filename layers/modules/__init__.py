"""ssd.pytorch's ``layers.modules``: ``L2Norm`` and ``MultiBoxLoss`` (re-exported from ssd)."""

from ssd.l2norm import L2Norm
from ssd.loss import MultiBoxLoss

__all__ = ["L2Norm", "MultiBoxLoss"]
