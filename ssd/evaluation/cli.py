"""Command lines of ``eval.py`` (mAP of a checkpoint) and ``test.py`` (predictions, pictures).

Flags keep ssd.pytorch's names and meanings (``--trained_model``, ``--save_folder``,
``--confidence_threshold``, ``--top_k``, ``--cuda``, ``--voc_root``, ``--visual_threshold``)
and add dataset, device and speed options.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import MEANS, get_config
from ..folders import check_output_folder

__all__ = ["build_eval_dataset", "eval_main", "parse_classes", "str2bool", "test_main",
           "write_test_file"]

DEFAULT_MODEL = os.path.join("weights", "ssd300_mAP_77.43_v2.pth")


def str2bool(v: str | bool) -> bool:
    """``true/false/yes/no/1/0`` (ssd.pytorch's boolean flags)."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "t", "yes", "y", "1", "on"):
        return True
    if s in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def _auto_bool(v: str) -> bool | None:
    return None if str(v).strip().lower() == "auto" else str2bool(v)


def _fraction(text: str) -> float:
    """A threshold flag: a number in [0, 1] (argparse reports the ValueError as a bad flag)."""
    from ..checks import check_fraction

    try:
        return check_fraction(float(text), "the value")
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def parse_classes(spec: str | None) -> Any:
    """``--classes``: a class-list file, or comma-separated names; ``None`` keeps the default."""
    if spec is None:
        return None
    if os.path.isfile(spec) or "," not in spec:
        return spec
    return [s.strip() for s in spec.split(",") if s.strip()]


def _dataset_kind(name: str) -> str:
    kind = name.strip().upper()
    if kind not in ("VOC", "COCO"):
        raise ValueError(f"--dataset must be VOC or COCO, got {name!r}")
    return kind


def _default_set(kind: str) -> str:
    return "2007:test" if kind == "VOC" else "val2017"


def _default_config(kind: str) -> str:
    return "voc300" if kind == "VOC" else "coco300"


def build_eval_dataset(kind: str, root: str | None, set_spec: str, size: int,
                       classes: Any = None, max_images: int | None = None) -> Any:
    """The evaluation dataset: VOC (``set_spec`` ``'2007:test'``, several joined with ``+``) or
    COCO (``set_spec`` ``'val2017'``), with the test-time transform for ``size``."""
    from ..data import COCO_ROOT, VOC_ROOT, BaseTransform, COCODetection, VOCDetection

    transform = BaseTransform(size, MEANS)
    if kind == "VOC":
        sets = [s if ":" in s else f"2007:{s}" for s in set_spec.split("+") if s]
        # A subset model is scored on every image; objects of other classes are background.
        ds = VOCDetection(root or VOC_ROOT, sets, transform, dataset_name="VOC",
                          classes=classes, keep_difficult=True,
                          other_classes="error" if classes is None else "ignore")
    else:
        if classes is not None:
            raise ValueError("--classes applies to VOC-format datasets; COCO-format datasets "
                             "take their classes from the annotation file's categories")
        ds = COCODetection(root or COCO_ROOT, set_spec, transform)
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"--max_images must be >= 1, got {max_images}")
        ds.ids = ds.ids[:max_images]
    return ds


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trained_model", default=DEFAULT_MODEL,
                   help="checkpoint to evaluate: an ssd.pytorch .pth state dict, a training "
                        "checkpoint, or a pretrained model name (`python -m ssd.weights list`; "
                        "downloaded once); files that carry their config and class names need "
                        "no --config/--classes (default: %(default)s)")
    p.add_argument("--save_folder", default="eval/", help="output folder (default: eval/)")
    p.add_argument("--dataset", default="VOC", type=_dataset_kind,
                   help="VOC (any VOC-format dataset) or COCO (any COCO-format dataset)")
    p.add_argument("--dataset_root", default=None,
                   help="VOCdevkit folder (VOC) or COCO root with annotations/ and images/ "
                        "(default: $SSD_VOC_ROOT or ~/data/VOCdevkit, $SSD_COCO_ROOT or "
                        "~/data/coco)")
    p.add_argument("--voc_root", default=None, help="ssd.pytorch's name for --dataset_root")
    p.add_argument("--set", default=None,
                   help="image set: VOC 'YEAR:NAME' (default 2007:test; join several with +), "
                        "COCO the split name (default val2017)")
    p.add_argument("--config", default=None,
                   help="model config: voc300, voc512, coco300, coco512 (default: voc300 for "
                        "VOC, coco300 for COCO); the class count comes from the dataset")
    p.add_argument("--classes", default=None,
                   help="custom VOC-format classes: a class-list file (one name per line) or "
                        "comma-separated names")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--cuda", type=str2bool, nargs="?", const=True, default=None,
                   help="legacy ssd.pytorch flag: --cuda true/false (overrides --device auto)")
    p.add_argument("--batch_size", type=int, default=8,
                   help="images per forward pass (default: 8)")
    p.add_argument("--num_workers", type=int, default=None,
                   help="data loading processes (default: 0 on CPU, where image loading is "
                        "under 1%% of the time and workers would take cores from the network; "
                        "up to 4 with CUDA)")
    p.add_argument("--channels_last", type=str2bool, nargs="?", const=True, default=True,
                   help="run the network in the channels-last memory format (faster "
                        "convolutions; default true)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="bf16 autocast where the CPU/GPU computes bf16 natively (auto), or "
                        "asked for (bf16: falls back to fp32 with a warning elsewhere); "
                        "default fp32")
    p.add_argument("--max_images", type=int, default=None,
                   help="only the first N images of the set (quick checks)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def _setup(args: argparse.Namespace) -> tuple[Any, dict[str, Any], str]:
    from .weights_meta import use_model_labels, weights_defaults

    root = args.dataset_root or args.voc_root
    set_spec = args.set or _default_set(args.dataset)
    config_spec, classes = weights_defaults(args)  # the file's own unless the flags say
    config = get_config(config_spec or _default_config(args.dataset))
    dataset = build_eval_dataset(args.dataset, root, set_spec, int(config["min_dim"]),
                                 classes, args.max_images)
    use_model_labels(dataset, args.model_class_names)  # COCO: the file's labels, by name
    return dataset, config, set_spec


def _num_workers(args: argparse.Namespace, device: Any) -> int:
    if args.num_workers is not None:
        return args.num_workers
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0


def _load(args: argparse.Namespace, config: dict[str, Any], num_classes: int, device: Any,
          **detect: Any) -> Any:
    from ..detector import load_model

    return load_model(args.weights_path, config, num_classes, device, hints="cli", **detect)


def _errors() -> tuple[type[BaseException], ...]:
    from ..weights import DownloadError, WeightsFileError, WeightsMismatchError

    return (FileNotFoundError, ValueError, WeightsFileError, WeightsMismatchError,
            DownloadError)


# ----------------------------------------------------------------------------- eval.py

def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval.py",
        description="Evaluate an SSD checkpoint: VOC mAP (official devkit rule) or COCO AP.")
    _common_args(p)
    p.add_argument("--confidence_threshold", type=_fraction, default=0.01,
                   help="detection confidence threshold (default: 0.01)")
    p.add_argument("--top_k", type=_positive, default=200,
                   help="detections kept per class and image before/after NMS (default 200; "
                        "ssd.pytorch's --top_k 5 was never used: its Detect kept 200)")
    p.add_argument("--nms_threshold", type=_fraction, default=0.45, help="NMS IoU (default 0.45)")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--use_07_metric", type=_auto_bool, default=None,
                   help="VOC: true = 11-point AP, false = area AP (default auto: true for "
                        "VOC2007 sets, false otherwise)")
    p.add_argument("--cleanup", type=str2bool, nargs="?", const=True, default=False,
                   help="delete the per-class det_*.txt files after scoring")
    p.add_argument("--from_results", default=None,
                   help="score existing results without a model: a folder of det_<set>_"
                        "<class>.txt files (VOC) or a COCO results json / its folder")
    return p


def _run(prog: str, parser: argparse.ArgumentParser,
         body: Callable[[argparse.Namespace], int], argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run ``body``; user errors print one line and give status 2."""
    args = parser.parse_args(argv)
    try:
        return body(args)
    except _errors() as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``python eval.py ...``; returns the exit status."""
    return _run("eval.py", eval_parser(), _eval, argv)


def _eval(args: argparse.Namespace) -> int:
    from .inference import resolve_device
    from .runner import evaluate, evaluate_results

    check_output_folder(args.save_folder, "--save_folder")  # before minutes of inference
    dataset, config, set_spec = _setup(args)
    settings = {"dataset_root": getattr(dataset, "root", None), "set": set_spec,
                "config": config.get("name")}
    set_name = None if args.dataset == "VOC" else set_spec
    if args.from_results:
        evaluate_results(dataset, args.from_results, save_folder=args.save_folder,
                         set_name=set_name, use_07_metric=args.use_07_metric,
                         settings=settings)
        print(f"results.json written to {Path(args.save_folder) / 'results.json'}")
        return 0
    device = resolve_device(args.device, args.cuda)
    num_classes = len(dataset.classes) + 1
    model = _load(args, config, num_classes, device, top_k=args.top_k,
                  conf_thresh=args.confidence_threshold, nms_thresh=args.nms_threshold)
    print(f"Loaded {args.trained_model} (SSD{model.size}, {num_classes - 1} classes) on "
          f"{device}; evaluating {len(dataset)} images of {args.dataset} {set_spec}")
    evaluate(model, dataset, save_folder=args.save_folder, set_name=set_name, device=device,
             batch_size=args.batch_size, num_workers=_num_workers(args, device), amp=args.amp,
             use_07_metric=args.use_07_metric, cleanup=args.cleanup,
             channels_last=args.channels_last, precision=args.precision,
             settings={"trained_model": os.path.abspath(args.weights_path), **settings},
             progress=not args.no_progress)
    print(f"results.json written to {Path(args.save_folder) / 'results.json'}")
    return 0


# ----------------------------------------------------------------------------- test.py

def test_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="test.py",
        description="Write an SSD checkpoint's predictions on a dataset (ssd.pytorch's "
                    "test1.txt format), optionally as annotated pictures.")
    _common_args(p)
    p.add_argument("--visual_threshold", type=_fraction, default=0.6,
                   help="keep predictions scoring at least this (default: 0.6)")
    p.add_argument("--save_images", default=None,
                   help="also write annotated JPEGs (class name and score on each box) here")
    return p


def _fmt_num(v: Any) -> str:
    return str(np.float32(v)) if isinstance(v, (float, np.floating)) else str(v)


def write_test_file(path: str | os.PathLike[str], dataset: Any,
                    all_boxes: Sequence[Sequence[np.ndarray]], threshold: float) -> int:
    """ssd.pytorch's ``test1.txt``: per image its ground truth and its predictions.

    For each image: ``GROUND TRUTH FOR: <id>``, one ``label: x1 || y1 || x2 || y2 || label``
    line per object (pixels minus 1, as ssd.pytorch's ``pull_anno``), then, if any prediction
    scores at least ``threshold``, ``PREDICTIONS: `` and numbered lines ``<n> label: <class>
    score: <score> x1 || y1 || x2 || y2`` (pixels, clipped to the image), classes in label
    order, best first within a class. Written atomically; returns the prediction count.
    """
    from ..io import atomic_write_text

    names = list(dataset.classes)
    lines: list[str] = []
    total = 0
    for i in range(len(dataset)):
        image_id, gt = _test_ground_truth(dataset, i)
        lines.append(f"\nGROUND TRUTH FOR: {image_id}\n")
        for box in gt:
            lines.append("label: " + " || ".join(_fmt_num(b) for b in box) + "\n")
        w, h = dataset.image_size(i)
        n = 0
        for c in range(1, len(all_boxes)):
            for x1, y1, x2, y2, score in np.asarray(all_boxes[c][i]).reshape(-1, 5):
                if score < threshold:
                    continue  # rows are sorted by score: the rest are lower
                if n == 0:
                    lines.append("PREDICTIONS: \n")
                n += 1
                coords = np.clip([x1, y1, x2, y2], 0, [w, h, w, h]).astype(np.float32)
                lines.append(f"{n} label: {names[c - 1]} score: {_fmt_num(np.float32(score))} "
                             + " || ".join(_fmt_num(v) for v in coords) + "\n")
        total += n
    atomic_write_text("".join(lines), path)
    return total


def _test_ground_truth(dataset: Any, i: int) -> tuple[str, list[list[Any]]]:
    anno = dataset.pull_anno(i)
    if isinstance(anno, (list, tuple)) and len(anno) == 2 and not isinstance(anno[0], dict):
        return str(anno[0]), list(anno[1])  # VOC: [id, rows in pixels minus 1]
    # COCO: raw annotation dicts -> the same [x1, y1, x2, y2, label] rows in pixels.
    rows = dataset.target_transform(anno, 1, 1) if dataset.target_transform else []
    return str(dataset.ids[i]), [list(r) for r in rows]


def test_main(argv: Sequence[str] | None = None) -> int:
    """``python test.py ...``; returns the exit status."""
    return _run("test.py", test_parser(), _test, argv)


def _test(args: argparse.Namespace) -> int:
    import cv2

    from ..detector import collect_detections
    from ..io import atomic_write
    from ..visualize import draw_detections
    from .inference import resolve_device, run_inference

    check_output_folder(args.save_folder, "--save_folder")  # before minutes of inference
    if args.save_images:
        check_output_folder(args.save_images, "--save_images")
    dataset, config, set_spec = _setup(args)
    device = resolve_device(args.device, args.cuda)
    num_classes = len(dataset.classes) + 1
    model = _load(args, config, num_classes, device)
    # Keep every row scoring >= the visual threshold (a lower conf_thresh changes nothing).
    inf = run_inference(model, dataset, device=device, batch_size=args.batch_size,
                        num_workers=_num_workers(args, device), progress=not args.no_progress,
                        conf_thresh=min(0.01, args.visual_threshold),
                        channels_last=args.channels_last, desc="test",
                        precision=args.precision)
    out = Path(args.save_folder) / "test1.txt"
    n = write_test_file(out, dataset, inf.all_boxes, args.visual_threshold)
    print(f"{n} predictions scoring >= {args.visual_threshold} on {len(dataset)} images of "
          f"{args.dataset} {set_spec} written to {out}")
    if args.save_images:
        folder = Path(args.save_images)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(len(dataset)):
            rgb = np.ascontiguousarray(dataset.pull_image(i)[:, :, ::-1])
            per_class = [inf.all_boxes[c][i] for c in range(num_classes)]
            result = collect_detections(per_class, rgb.shape[:2], args.visual_threshold,
                                        dataset.classes)
            drawn = draw_detections(rgb, result)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise ValueError(f"could not encode the picture of image {dataset.ids[i]}")
            image_id = dataset.ids[i][1] if isinstance(dataset.ids[i], tuple) else dataset.ids[i]
            with atomic_write(folder / f"{image_id}.jpg", "wb") as f:
                f.write(buf.tobytes())
        print(f"{len(dataset)} annotated pictures written to {folder}")
    return 0
