"""SSD: the Single Shot MultiBox Detector (Liu et al., 2016) in modern PyTorch."""

from .config import CONFIGS, MEANS, coco, coco512, get_config, voc, voc512

__all__ = ["CONFIGS", "MEANS", "coco", "coco512", "get_config", "voc", "voc512"]
