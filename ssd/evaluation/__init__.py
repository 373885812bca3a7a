"""Evaluation: official VOC AP, COCO AP, batched inference, result files."""

from .voc import mean_ap, parse_rec, voc_ap, voc_eval

__all__ = ["mean_ap", "parse_rec", "voc_ap", "voc_eval"]
