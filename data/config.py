"""ssd.pytorch's ``data/config.py`` names, for code that imports them from here.

The configurations themselves live in :mod:`ssd.config`; nothing here touches the disk.
"""

import os

from ssd.config import MEANS, coco, voc

HOME = os.path.expanduser("~")

# Box colours (RGBA) of ssd.pytorch's demo drawing code.
COLORS = ((255, 0, 0, 128), (0, 255, 0, 128), (0, 0, 255, 128),
          (0, 255, 255, 128), (255, 0, 255, 128), (255, 255, 0, 128))

__all__ = ["COLORS", "HOME", "MEANS", "coco", "voc"]
