"""Command-line flags of ``train.py``.

Every ssd.pytorch flag keeps its name, default and meaning (``--lr``/``--learning-rate``,
``--cuda True``, ``--visdom True`` ...); every underscored flag is also accepted with dashes
(``--batch-size``). Checks that need no file system live here; file and data checks are done
where the files are opened.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import torch

from ..config import CONFIGS

DEFAULT_TRAIN_SETS = {"VOC": "2007:trainval,2012:trainval", "COCO": "train2017"}
DEFAULT_EVAL_SETS = {"VOC": "2007:test", "COCO": "val2017"}
BASENET_CHOICES_HELP = ("a .pth file, a zoo name (vgg16_reducedfc, vgg16_imagenet: downloaded "
                        "once), 'torchvision-vgg16' or 'none'")
AMP_CHOICES = ("off", "bf16", "fp16")
EXIT_STATUS_HELP = (
    "exit status: 0 done; 1 stopped by non-finite losses; 2 bad flags or input files, or the "
    "save folder is in use by another run (or holds another run's files: see --overwrite); 74 "
    "a checkpoint or weights file could not be written (disk full, permission denied, ...; the "
    "message names the file, the reason and the last good checkpoint); 130 stopped by "
    "Ctrl-C/SIGTERM after saving a checkpoint")


def str2bool(value: str | bool) -> bool:
    """ssd.pytorch's ``str2bool``, but strict: unknown words are an error, not False."""
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("yes", "true", "t", "y", "1", "on"):
        return True
    if v in ("no", "false", "f", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0), got {value!r}")


def _positive_int(text: str) -> int:
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def _non_negative_int(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def _device(text: str) -> str:
    if text == "auto":
        return text
    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"not a device: {text!r} (use auto, cpu, cuda or cuda:N)") from None
    return text


def _lr_steps(text: str) -> tuple[int, ...]:
    from .schedule import parse_steps

    try:
        steps = parse_steps(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    assert steps is not None
    if any(s < 0 for s in steps) or list(steps) != sorted(steps):
        raise argparse.ArgumentTypeError(f"steps must be >= 0 and increasing, got {text!r}")
    return steps


def parse_train_sets(text: str, dataset: str) -> list[tuple[str, str]] | list[str]:
    """``'2007:trainval,2012:trainval'`` -> ``[('2007', 'trainval'), ('2012', 'trainval')]``.

    For COCO the entries are image-set names (``'train2017'``), returned as a list of str.
    """
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"--train_sets is empty: {text!r}")
    if dataset == "COCO":
        return items
    out = []
    for item in items:
        year, sep, name = item.partition(":")
        if not sep or not year or not name:
            raise ValueError(f"--train_sets entry {item!r} is not YEAR:LIST (e.g. 2007:trainval)")
        out.append((year, name))
    return out


def _add(parser: argparse.ArgumentParser, name: str, *aliases: str, **kw) -> None:
    """Add ``--foo_bar`` together with its dashed spelling ``--foo-bar``."""
    names = [name, *aliases]
    dashed = name.replace("_", "-")
    if dashed != name and dashed not in names:
        names.append(dashed)
    kw.setdefault("dest", name.lstrip("-"))
    parser.add_argument(*names, **kw)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones (None/False) whose meaning the help text gives."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action) or ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train SSD (Single Shot MultiBox Detector). Multi-GPU / multi-node: "
                    "torchrun --nproc_per_node=N train.py ... (batch size is per process).",
        epilog=EXIT_STATUS_HELP, formatter_class=_HelpFormatter)

    g = p.add_argument_group("data (ssd.pytorch flags)")
    _add(g, "--dataset", default="VOC", choices=["VOC", "COCO"], type=str.upper,
         help="dataset format")
    _add(g, "--dataset_root", default=None,
         help="dataset root (VOC: the VOCdevkit folder or its parent, default $SSD_VOC_ROOT "
              "or ~/data/VOCdevkit; COCO: default $SSD_COCO_ROOT or ~/data/coco)")
    _add(g, "--num_workers", default=4, type=_non_negative_int,
         help="data loading worker processes per training process")
    _add(g, "--batch_size", default=32, type=_positive_int,
         help="images per batch PER PROCESS (global batch = batch_size x processes)")

    g = p.add_argument_group("data (new)")
    _add(g, "--config", default=None, choices=sorted(CONFIGS),
         help="SSD geometry; default voc300 for VOC, coco300 for COCO")
    _add(g, "--classes", default=None, metavar="FILE",
         help="custom class list for VOC-format data: one class name per line")
    _add(g, "--other_classes", default=None, choices=["ignore", "drop", "error"],
         help="VOC: objects whose class is not in --classes: 'ignore' them (the way to train "
              "on a subset of the classes; images holding only such objects are left out), "
              "'drop' every image holding one (default), or 'error'")
    _add(g, "--train_sets", default=None,
         help="VOC: YEAR:LIST,... (default 2007:trainval,2012:trainval); COCO: image sets "
              "(default train2017)")
    _add(g, "--no_augment", action="store_true",
         help="resize and subtract the mean only (no SSDAugmentation); for debugging/overfitting")

    g = p.add_argument_group("model and weights (ssd.pytorch flags)")
    _add(g, "--basenet", default="vgg16_reducedfc.pth",
         help=f"VGG16 base net: {BASENET_CHOICES_HELP}; a bare file name is also looked for "
              "in --save_folder, as ssd.pytorch did")
    _add(g, "--pretrained", default=None, metavar="NAME|PATH",
         help="start from a trained SSD (a zoo name from `python -m ssd.weights list` or a "
              "file): every tensor that fits is loaded, the heads made for other classes or "
              "priors are re-initialised; replaces --basenet; its config is the default")
    _add(g, "--resume", default=None, metavar="PATH|auto",
         help="a training checkpoint (.ckpt: exact continuation), a plain SSD state dict "
              "(weights only; use --start_iter), or 'auto' = newest checkpoint in --save_folder "
              "(none: start fresh)")
    _add(g, "--start_iter", default=0, type=_non_negative_int,
         help="iteration to start at when --resume is a plain state dict")
    _add(g, "--save_folder", default="weights/", help="directory for checkpoints and logs")
    _add(g, "--overwrite", action="store_true",
         help="start a new run in a --save_folder that already holds another run's files of "
              "the same model and dataset (without it such a run refuses to start; "
              "--resume auto continues the other run instead)")

    g = p.add_argument_group("optimisation (ssd.pytorch flags)")
    _add(g, "--lr", "--learning-rate", "--learning_rate", default=1e-3, type=_positive_float,
         help="initial learning rate")
    _add(g, "--momentum", default=0.9, type=_non_negative_float, help="SGD momentum")
    _add(g, "--weight_decay", default=5e-4, type=_non_negative_float, help="SGD weight decay")
    _add(g, "--gamma", default=0.1, type=_positive_float, help="LR decay factor at each step")

    g = p.add_argument_group("optimisation (new)")
    _add(g, "--max_iter", default=None, type=_positive_int,
         help="total iterations (default: the config's, 120000 for VOC)")
    _add(g, "--lr_steps", default=None, type=_lr_steps,
         help="comma-separated iterations where the LR is multiplied by gamma "
              "(default: the config's, 80000,100000,120000 for VOC)")
    _add(g, "--warmup_iters", default=0, type=_non_negative_int,
         help="linear LR warm-up iterations (0: none, as ssd.pytorch)")
    _add(g, "--warmup_factor", default=0.001, type=_non_negative_float,
         help="warm-up starts at warmup_factor x lr")
    _add(g, "--clip_grad", default=None, type=_positive_float, metavar="MAX_NORM",
         help="clip the gradient's global L2 norm to this value")
    _add(g, "--amp", default="off", choices=AMP_CHOICES, type=str.lower,
         help="mixed precision: bf16 (CUDA or CPU) or fp16 (CUDA, with a GradScaler)")
    _add(g, "--max_nonfinite", default=10, type=_positive_int,
         help="stop after this many non-finite losses in a row (each one's step is skipped)")
    _add(g, "--seed", default=None, type=_non_negative_int,
         help="random seed (default: taken from the checkpoint when resuming, else random)")

    g = p.add_argument_group("device (ssd.pytorch flag --cuda, new --device)")
    _add(g, "--device", default="auto", type=_device,
         help="auto (CUDA if available), cpu, cuda or cuda:N; under torchrun each process "
              "takes cuda:LOCAL_RANK")
    _add(g, "--cuda", default=None, type=str2bool,
         help="legacy: --cuda True means --device cuda, --cuda False means --device cpu")
    _add(g, "--dist_backend", default="auto", choices=["auto", "nccl", "gloo"],
         help="torch.distributed backend under torchrun (auto: nccl on CUDA, gloo on CPU)")

    g = p.add_argument_group("checkpoints and feedback")
    _add(g, "--checkpoint_every", default=5000, type=_non_negative_int,
         help="save a training checkpoint and an ssd.pytorch-format state dict every N "
              "iterations (0: only at the end)")
    _add(g, "--keep_checkpoints", default=3, type=_non_negative_int,
         help="keep only the newest N training checkpoints (.ckpt; 0 keeps all); the plain "
              ".pth state dicts are all kept")
    _add(g, "--log_every", default=10, type=_positive_int,
         help="write a metrics line (and visdom point) every N iterations")
    _add(g, "--eval_every", default=0, type=_non_negative_int,
         help="run ssd.evaluation's validation hook every N iterations (0: never)")
    _add(g, "--eval_sets", default=None,
         help="validation sets for --eval_every (VOC default 2007:test, COCO val2017)")
    _add(g, "--no_progress", action="store_true", help="no tqdm progress bar")
    _add(g, "--visdom", default=False, type=str2bool, nargs="?", const=True,
         help="live loss plots on a visdom server (--visdom or --visdom True)")
    _add(g, "--visdom_server", default="http://localhost", help="visdom server address")
    _add(g, "--visdom_port", default=8097, type=_positive_int, help="visdom server port")
    _add(g, "--visdom_env", default="main", help="visdom environment")
    _add(g, "--tensorboard", default=None, nargs="?", const="", metavar="DIR",
         help="log losses, LR, images/s, mAP and (at each --eval_every) validation images "
              "with their detections for TensorBoard in DIR (bare flag: <save_folder>/tb)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the flags; a bad combination exits with a usage error (code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        finalize_args(args)
    except ValueError as e:
        parser.error(str(e))
    return args


def finalize_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill dataset-dependent defaults and check flag combinations (raises ValueError)."""
    if args.cuda is not None:
        legacy = "cuda" if args.cuda else "cpu"
        if args.device not in ("auto", legacy) and not args.device.startswith(legacy + ":"):
            raise ValueError(f"--cuda {args.cuda} contradicts --device {args.device}")
        if args.device == "auto":
            args.device = legacy
    if args.dataset_root is None:
        from ..data import COCO_ROOT, VOC_ROOT  # ssd.pytorch's roots (+ environment overrides)

        args.dataset_root = VOC_ROOT if args.dataset == "VOC" else COCO_ROOT
    if args.train_sets is None:
        args.train_sets = DEFAULT_TRAIN_SETS[args.dataset]
    args.train_sets_parsed = parse_train_sets(args.train_sets, args.dataset)
    if args.eval_sets is None:
        args.eval_sets = DEFAULT_EVAL_SETS[args.dataset]
    args.eval_sets_parsed = parse_train_sets(args.eval_sets, args.dataset)
    if args.classes is not None and args.dataset != "VOC":
        raise ValueError("--classes is for VOC-format data (--dataset VOC)")
    if args.other_classes is not None and args.dataset != "VOC":
        raise ValueError("--other_classes is for VOC-format data (--dataset VOC)")
    if args.config is None and args.pretrained is None:  # else the pretrained file's
        args.config = "voc300" if args.dataset == "VOC" else "coco300"
    if args.amp == "fp16" and args.device == "cpu":
        raise ValueError("--amp fp16 needs CUDA; on the CPU use --amp bf16")
    if args.resume is not None and args.resume.strip() == "":
        raise ValueError("--resume needs a path or 'auto'")
    return args
