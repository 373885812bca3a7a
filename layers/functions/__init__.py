"""ssd.pytorch's ``layers.functions``: ``Detect`` and ``PriorBox`` (re-exported from ssd)."""

from ssd.detection import Detect
from ssd.priors import PriorBox

__all__ = ["Detect", "PriorBox"]
