"""Write a trained SSD's predictions on a dataset (ssd.pytorch's test1.txt) and, with
``--save_images DIR``, annotated pictures.

    python test.py --trained_model weights/ssd300_mAP_77.43_v2.pth --save_images eval/pictures

See ``python test.py --help``; the logic lives in :mod:`ssd.evaluation.cli`.
"""

import sys

from ssd.evaluation.cli import test_main

if __name__ == "__main__":
    sys.exit(test_main())
