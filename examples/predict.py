"""Detect objects in pictures with a trained SSD, notebook style.

Run it as a script::

    python examples/predict.py --checkpoint weights/ssd300_mAP_77.43_v2.pth \
        --images data/samples/voc_mini/VOCdevkit/VOC2007/JPEGImages/2007_000068.jpg
    python examples/predict.py --checkpoint ssd300_coco     # a pretrained model by name

or open it in Jupyter / VS Code, where each ``# %%`` block is a cell. The weights come from
ssd.pytorch (see weights/README.md), from ``train.py`` (``weights/ssd300_VOC_<iter>.pth``), or
from the model zoo by name (``python -m ssd.weights list``; downloaded once, then cached).
Without ``--checkpoint`` the script takes ``weights/ssd300_mAP_77.43_v2.pth``, else a cached
zoo model, and never goes online by itself.
"""

# %% Settings
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data/samples/voc_mini/VOCdevkit/VOC2007/JPEGImages"

parser = argparse.ArgumentParser(description="Detect objects in pictures with a trained SSD.")
parser.add_argument("--checkpoint", default=None,
                    help="a .pth file or a zoo name (default: weights/ssd300_mAP_77.43_v2.pth, "
                         "else a zoo model already in the cache)")
parser.add_argument("--config", default=None,
                    help="voc300, voc512, coco300, coco512 (default: the file's own, else voc300)")
parser.add_argument("--classes", default=None, help="class-list file for custom datasets")
parser.add_argument("--images", nargs="+", default=[str(SAMPLE / "2007_000068.jpg"),
                                                   str(SAMPLE / "2007_000323.jpg")])
parser.add_argument("--threshold", type=float, default=0.5)
parser.add_argument("--device", default="auto")
parser.add_argument("--out", default="predictions", help="folder for the annotated pictures")
# In a notebook there are no command-line arguments: take the defaults.
args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" and "ipykernel" not in
                         sys.modules else [])

from ssd.weights.zoo import ZOO, cached_path  # noqa: E402

if args.checkpoint is None:
    local = REPO / "weights/ssd300_mAP_77.43_v2.pth"
    cached = [n for n, e in ZOO.items() if e.kind == "ssd" and cached_path(n)]
    args.checkpoint = str(local) if local.is_file() else (cached[0] if cached else None)
if args.checkpoint is None or not (Path(args.checkpoint).is_file() or args.checkpoint in ZOO):
    sys.exit(f"checkpoint {args.checkpoint or 'weights/ssd300_mAP_77.43_v2.pth'} not found: pass "
             f"--checkpoint with a file or a pretrained model name "
             f"({', '.join(n for n, e in ZOO.items() if e.kind == 'ssd')}; "
             f"downloaded once), or train one with train.py")

# %% Load the detector: the config gives the network size and the default class names
from ssd.detector import Detector  # noqa: E402

detector = Detector.from_checkpoint(args.checkpoint, config=args.config, classes=args.classes,
                                    device=args.device)
print(detector)

# %% Predict: paths are read from disk; numpy arrays must be RGB (plt.imread, PIL)
results = detector.predict(args.images, threshold=args.threshold)
for path, r in zip(args.images, results):
    print(f"{Path(path).name}: {len(r)} objects")
    for box, score, name in zip(r.boxes, r.scores, r.class_names):
        print(f"  {name:<12} {score:.2f}  x1={box[0]:.0f} y1={box[1]:.0f} "
              f"x2={box[2]:.0f} y2={box[3]:.0f}")

# %% Plain dicts (JSON-ready), e.g. to save or to send elsewhere
print(json.dumps(results[0].to_dict())[:200], "...")

# %% Draw: draw_detections returns an RGB uint8 array, ready for plt.imshow
import cv2  # noqa: E402

from ssd.visualize import draw_detections  # noqa: E402

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
for path, r in zip(args.images, results):
    picture = draw_detections(path, r)
    target = out / f"{Path(path).stem}.jpg"
    cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    print(f"wrote {target}")
# In a notebook:
#   import matplotlib.pyplot as plt
#   plt.figure(figsize=(10, 8)); plt.imshow(picture); plt.axis("off")
