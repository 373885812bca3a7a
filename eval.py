"""Evaluate a trained SSD: VOC mAP (official devkit rule) or COCO AP.

    python eval.py --trained_model weights/ssd300_mAP_77.43_v2.pth --voc_root ~/data/VOCdevkit

See ``python eval.py --help``; the logic lives in :mod:`ssd.evaluation`.
"""

import sys

from ssd.evaluation.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
