"""``train.py``: build everything from the flags and run :class:`~ssd.training.engine.Trainer`.

Exit status: 0 done, 1 training failed (non-finite loss, ...), 2 bad flags or input files (or
the save folder is in use by another run), 74 a checkpoint/weights file could not be written,
130 stopped by Ctrl-C/SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from ..config import MEANS, get_config
from .args import parse_args
from .checkpoint import (
    CheckpointError,
    CheckpointWriter,
    NonFiniteWeightsError,
    final_weights_path,
    find_latest_checkpoint,
    is_training_checkpoint,
    read_checkpoint_file,
    run_prefix,
)
from .curves import CurvesWriter, after_save
from .distributed import (
    DistInfo,
    all_gather_objects,
    cleanup_distributed,
    env_dist_info,
    init_distributed,
    wrap_ddp,
)
from .engine import NonFiniteLossError, StopSignal, Trainer
from .metrics import MetricsLog
from .ownership import FolderInUseError, claim_save_folder, run_id_of
from .pretrained import apply_pretrained, dataset_class_names, read_pretrained
from .resume import find_intact_checkpoint, prepare_resumed_folder
from .sampler import EpochLoader, ResumableSampler, mix_seed
from .saving import SaveFailedError
from .schedule import MultiStepWarmup

log = logging.getLogger("ssd.training")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_SAVE_FAILED = 74  # sysexits.h EX_IOERR


class SetupError(Exception):
    """A problem with the flags or input files, reported as ``train.py: error: ...``."""


# ----------------------------------------------------------------------------- logging

class _TqdmHandler(logging.StreamHandler):
    """Log lines that do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _setup_logging(dist: DistInfo) -> logging.Handler:
    handler = _TqdmHandler()
    prefix = f"[rank {dist.rank}] " if dist.distributed else ""
    handler.setFormatter(logging.Formatter(f"{prefix}%(asctime)s %(levelname)s %(message)s",
                                           "%H:%M:%S"))
    root = logging.getLogger("ssd")
    handler.previous_level = root.level  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO if dist.is_main else logging.WARNING)
    return handler


# ----------------------------------------------------------------------------- devices

def resolve_device(spec: str, dist: DistInfo) -> torch.device:
    """``auto``/``cpu``/``cuda``/``cuda:N`` -> a device; under torchrun ``cuda:LOCAL_RANK``."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(f"--device {spec} (or --cuda True) asks for CUDA, but CUDA is not "
                             f"available here (torch {torch.__version__}); use --device cpu")
        if dist.distributed:
            if device.index is not None and device.index != dist.local_rank:
                log.warning("--device %s ignored under torchrun: process uses cuda:%d",
                            spec, dist.local_rank)
            device = torch.device("cuda", dist.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise SetupError(f"{device} does not exist: {torch.cuda.device_count()} GPU(s) "
                             f"visible")
    return device


# ----------------------------------------------------------------------------- data

def resolve_voc_root(root: str, years: Sequence[str]) -> str:
    """Accept the VOCdevkit folder or its parent (``data/samples/voc_mini``)."""
    p = Path(root).expanduser()
    if not p.is_dir():
        raise SetupError(f"--dataset_root {root} does not exist (VOC: the VOCdevkit folder "
                         f"holding VOC2007/ VOC2012/, e.g. data/samples/voc_mini/VOCdevkit)")
    has_year = any((p / f"VOC{y}").is_dir() for y in years)
    if not has_year and (p / "VOCdevkit").is_dir():
        return os.fspath(p / "VOCdevkit")
    return os.fspath(p)


def build_dataset(args: argparse.Namespace, size: int, train: bool = True) -> Dataset:
    from ..data import BaseTransform, COCODetection, SSDAugmentation, VOCDetection
    from ..data.summary import report_datasets, voc_other_classes

    transform = (BaseTransform(size, MEANS) if (args.no_augment or not train)
                 else SSDAugmentation(size, MEANS))
    sets = args.train_sets_parsed if train else args.eval_sets_parsed
    try:
        if args.dataset == "VOC":
            root = resolve_voc_root(args.dataset_root, [y for y, _ in sets])
            ds = VOCDetection(root, image_sets=sets, transform=transform,
                              classes=args.classes, skip_bad=train,
                              **voc_other_classes(args.other_classes, train))
            report_datasets([ds], require_boxes=train)  # one line; no box at all: an error
            return ds
        root = os.path.expanduser(args.dataset_root)
        parts = [COCODetection(root, image_set=s, transform=transform, skip_bad=train)
                 for s in sets]
        report_datasets(parts, require_boxes=train)
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError) as e:
        raise SetupError(str(e)) from e
    if len(parts) == 1:
        return parts[0]
    joined = ConcatDataset(parts)
    joined.num_classes = parts[0].num_classes  # type: ignore[attr-defined]
    return joined


class _WorkerInit:
    """Workers ignore Ctrl-C/SIGTERM: the main process stops them after its checkpoint."""

    def __init__(self, base: Callable[[int], None] | None) -> None:
        self.base = base

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.base is not None:
            self.base(worker_id)


def build_loader(dataset: Dataset, args: argparse.Namespace, dist: DistInfo, seed: int,
                 device: torch.device) -> EpochLoader:
    from ..data import detection_collate, reseed_transforms, seed_worker

    sampler = ResumableSampler(dataset, num_replicas=dist.world_size, rank=dist.rank,
                               shuffle=True, seed=seed, drop_last=False)
    kwargs: dict[str, Any] = {}
    if args.num_workers > 0:
        kwargs["worker_init_fn"] = _WorkerInit(seed_worker)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                        num_workers=args.num_workers, collate_fn=detection_collate,
                        pin_memory=device.type == "cuda", drop_last=False,
                        generator=torch.Generator(), **kwargs)
    # num_workers=0 draws augmentations in this process: seed its streams per rank.
    reseed_transforms(dataset, mix_seed(seed, dist.rank, 1))
    return EpochLoader(loader, seed=seed, rank=dist.rank)


# ----------------------------------------------------------------------------- weights

def resolve_basenet(spec: str, save_folder: str) -> Path | str | None:
    """``none`` -> None, ``torchvision-vgg16`` -> that string, else an existing file path or
    a zoo name (fetched into the cache)."""
    if spec.strip().lower() in ("none", ""):
        return None
    if spec.strip().lower() in ("torchvision-vgg16", "torchvision"):
        return "torchvision-vgg16"
    tried = [Path(spec).expanduser()]
    if not tried[0].is_absolute():
        tried.append(Path(save_folder) / spec)  # ssd.pytorch: save_folder + basenet
    for p in tried:
        if p.is_file():
            return p
    from ..weights import BASENET_URL, TORCHVISION_VGG16_URL, DownloadError, fetch
    from ..weights.zoo import ZOO

    if spec in ZOO:  # a zoo name: downloaded once into $SSD_HOME
        try:
            return fetch(spec)
        except DownloadError as e:
            raise SetupError(f"--basenet {spec}: {e}") from e

    raise SetupError(
        f"--basenet: base network file not found (tried {', '.join(os.fspath(p) for p in tried)})."
        f" Download ssd.pytorch's {BASENET_URL} into {save_folder}, or convert torchvision's "
        f"VGG16 ({TORCHVISION_VGG16_URL}) with `python -m ssd.weights convert-vgg16 "
        f"vgg16-397923af.pth {Path(save_folder) / 'vgg16_reducedfc.pth'}`, or use --basenet "
        f"torchvision-vgg16 (downloads and converts it), or a zoo name ({', '.join(ZOO)}), "
        f"or --basenet none (from scratch)")


def _load_resume(spec: str | None, folder: str, prefix: str, dist: DistInfo
                 ) -> tuple[Path | None, Any]:
    if spec is None:
        return None, None
    if spec == "auto":
        # Rank 0 picks, so that every process resumes from the same file.
        path = find_intact_checkpoint(folder, prefix) if dist.is_main else None
        path = all_gather_objects(path)[0]
        if path is None:
            others = sorted(p.name for p in Path(folder).glob("*.ckpt")) \
                if Path(folder).is_dir() else []
            log.info("--resume auto: no %s_*.ckpt checkpoint in %s%s: starting fresh", prefix,
                     folder, f" (other runs' checkpoints: {', '.join(others)})" if others else "")
            return None, None
        log.info("--resume auto: newest checkpoint is %s", path)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise SetupError(f"--resume {spec}: no such file")
    try:
        return path, read_checkpoint_file(path)
    except CheckpointError as e:
        raise SetupError(str(e)) from e


# ----------------------------------------------------------------------------- evaluation hook

def build_eval_fn(args: argparse.Namespace, size: int, device: torch.device
                  ) -> Callable[[torch.nn.Module, int], Mapping[str, Any]] | None:
    """``--eval_every``: validation with :func:`ssd.evaluation.runner.run_validation`."""
    if not args.eval_every:
        return None
    try:
        from ..evaluation.runner import run_validation
    except ImportError as e:
        log.warning("--eval_every: ssd.evaluation is not available (%s); no evaluation", e)
        return None
    dataset = build_dataset(args, size, train=False)
    cachedir = Path(args.save_folder) / "eval_cache"

    def evaluate(model: torch.nn.Module, iteration: int) -> Mapping[str, Any]:
        return run_validation(model, dataset=dataset, device=device,
                              batch_size=args.batch_size, num_workers=args.num_workers,
                              amp=args.amp != "off", cachedir=cachedir)

    return evaluate


# ----------------------------------------------------------------------------- main

def _seed_everything(seed: int, rank: int) -> None:
    random.seed(mix_seed(seed, rank, 2))
    np.random.seed(mix_seed(seed, rank, 3) % 2**32)
    torch.manual_seed(seed)  # the same initial weights on every process


def _json_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}


def run(args: argparse.Namespace) -> int:
    """Train as the flags say; returns the exit status (see the module docstring)."""
    dist = env_dist_info()
    handler = _setup_logging(dist)
    try:
        with contextlib.ExitStack() as held:
            return _run(args, dist, held)
    except (SetupError, FolderInUseError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SaveFailedError as e:
        print(f"train.py: saving failed: {e}", file=sys.stderr)
        return EXIT_SAVE_FAILED
    except (NonFiniteLossError, NonFiniteWeightsError) as e:
        print(f"train.py: training stopped: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        logging.getLogger("ssd").removeHandler(handler)
        logging.getLogger("ssd").setLevel(handler.previous_level)  # type: ignore[attr-defined]
        cleanup_distributed()


def _run(args: argparse.Namespace, dist: DistInfo, held: contextlib.ExitStack) -> int:
    from ..loss import MultiBoxLoss
    from ..model import build_ssd
    from ..weights import (
        WeightsFileError,
        WeightsMismatchError,
        load_base_weights,
        load_ssd_weights,
        torchvision_vgg16_base,
    )

    device = resolve_device(args.device, dist)
    init_distributed(dist, device, args.dist_backend)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.amp == "fp16" and device.type != "cuda":
        raise SetupError("--amp fp16 needs CUDA; on the CPU use --amp bf16")

    pretrained = read_pretrained(args)  # may set args.config
    cfg = get_config(args.config)
    size = int(cfg["min_dim"])
    prefix = run_prefix(size, args.dataset)
    held.enter_context(claim_save_folder(
        args.save_folder, prefix, final_weights_path(args.save_folder, args.dataset, size).name,
        resume=args.resume, overwrite=args.overwrite, dist=dist))
    basenet = None if args.resume or pretrained else resolve_basenet(args.basenet,
                                                                     args.save_folder)
    resume_path, resume_obj = _load_resume(args.resume, args.save_folder, prefix, dist)
    ckpt = resume_obj if is_training_checkpoint(resume_obj) else None
    if args.resume == "auto" and resume_obj is None:
        basenet = None if pretrained else resolve_basenet(args.basenet, args.save_folder)

    seed = args.seed
    if seed is None:
        seed = int(ckpt["seed"]) if ckpt is not None else int.from_bytes(os.urandom(4), "little")
        seed = all_gather_objects(seed)[0]  # every process shuffles alike
    elif ckpt is not None and int(ckpt.get("seed", seed)) != seed:
        log.warning("--seed %d differs from the checkpoint's %s", seed, ckpt.get("seed"))
    _seed_everything(seed, dist.rank)

    dataset = build_dataset(args, size)
    num_classes = int(getattr(dataset, "num_classes", cfg["num_classes"]))
    cfg = get_config(args.config, num_classes=num_classes)
    if args.max_iter is not None:
        cfg["max_iter"] = args.max_iter
    if args.lr_steps is not None:
        cfg["lr_steps"] = tuple(args.lr_steps)
    if ckpt is not None and ckpt.get("config", {}).get("num_classes", num_classes) != num_classes:
        raise SetupError(f"{resume_path} was trained for {ckpt['config']['num_classes']} "
                         f"classes (background included), this dataset has {num_classes}")

    model = build_ssd("train", size, num_classes, cfg=cfg)
    try:
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            log.info("resuming from %s (iteration %d)", resume_path, ckpt["iteration"])
        elif resume_obj is not None:
            load_ssd_weights(model, resume_obj)
            log.info("loaded weights from %s (plain state dict); starting at iteration %d",
                     resume_path, args.start_iter)
        elif pretrained is not None:
            apply_pretrained(model, pretrained, args.pretrained, dataset_class_names(dataset))
        elif basenet == "torchvision-vgg16":
            try:
                load_base_weights(model, torchvision_vgg16_base())
            except (RuntimeError, FileNotFoundError) as e:
                raise SetupError(f"--basenet torchvision-vgg16: {e}") from e
            log.info("base network: torchvision's ImageNet VGG16 (converted)")
        elif basenet is not None:
            load_base_weights(model, basenet)
            log.info("base network: %s", basenet)
        else:
            log.info("no base network: training from scratch")
    except (WeightsFileError, WeightsMismatchError, RuntimeError) as e:
        raise SetupError(str(e)) from e

    # Channels-last convolutions are faster with cuDNN and with oneDNN on the CPU (a batch-4
    # SSD300 step: 4.84 s contiguous, 4.04 s channels-last on a 2-core EPYC).
    channels_last = device.type in ("cuda", "cpu")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = wrap_ddp(model, device) if dist.distributed else model

    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
    criterion = MultiBoxLoss(num_classes, 0.5, True, 0, True, 3, 0.5, False,
                             use_gpu=device.type == "cuda")
    schedule = MultiStepWarmup(args.lr, tuple(cfg["lr_steps"]), args.gamma, args.warmup_iters,
                               args.warmup_factor)
    data = build_loader(dataset, args, dist, seed, device)
    eval_fn = build_eval_fn(args, size, device) if dist.is_main else None

    metrics = visdom = writer = None
    if dist.is_main:
        Path(args.save_folder).mkdir(parents=True, exist_ok=True)
        writer = CheckpointWriter(args.save_folder, prefix, args.dataset, size,
                                  keep=args.keep_checkpoints,
                                  extra={"config": cfg, "args": _json_args(args),
                                         "class_names": dataset_class_names(dataset),
                                         "run_id": run_id_of(ckpt)})
        if resume_obj is not None:
            prepare_resumed_folder(writer, Path(args.save_folder) / f"{prefix}_metrics.jsonl",
                                   resume_path if ckpt is not None else None,
                                   int(ckpt["iteration"]) if ckpt is not None
                                   else (args.start_iter or None))
        metrics = MetricsLog(Path(args.save_folder) / f"{prefix}_metrics.jsonl")
        if args.visdom:
            from .visdom_logger import VisdomLogger

            visdom = VisdomLogger(args.visdom_server, args.visdom_port, args.visdom_env, prefix)
        if args.tensorboard is not None:
            from .tensorboard_logger import attach_tensorboard, default_log_dir

            metrics, eval_fn = attach_tensorboard(
                default_log_dir(args.tensorboard, args.save_folder), metrics, eval_fn,
                lambda: build_dataset(args, size, train=False))
    save_fn = None if writer is None else after_save(
        writer, CurvesWriter(Path(args.save_folder) / f"{prefix}_metrics.jsonl",
                             Path(args.save_folder) / f"{prefix}_curves.png", title=prefix))

    stop = StopSignal()
    trainer = Trainer(net, criterion, optimizer, data, schedule, max_iter=int(cfg["max_iter"]),
                      device=device, amp=args.amp, scaler=scaler, clip_grad=args.clip_grad,
                      max_nonfinite=args.max_nonfinite, dist=dist, log_every=args.log_every,
                      checkpoint_every=args.checkpoint_every, save_fn=save_fn,
                      eval_every=args.eval_every, eval_fn=eval_fn, metrics=metrics,
                      visdom=visdom, progress=not args.no_progress, stop=stop,
                      channels_last=channels_last)
    if ckpt is not None:
        trainer.load_state_dict(ckpt, load_model=False)
        if args.start_iter:
            log.warning("--start_iter ignored: %s is a training checkpoint (iteration %d)",
                        resume_path, trainer.iteration)
    elif args.start_iter:
        trainer.set_position(args.start_iter)
    del ckpt, resume_obj

    if metrics is not None:
        metrics.write({"type": "start", "iter": trainer.iteration, "max_iter": trainer.max_iter,
                       "world_size": dist.world_size, "batch_size": args.batch_size,
                       "device": str(device), "seed": seed, "amp": args.amp,
                       "resumed_from": os.fspath(resume_path) if resume_path else None,
                       "num_images": len(dataset), "num_classes": num_classes})
    log.info("training %s: %d images, %d classes, iterations %d -> %d, batch %d x %d "
             "process(es), device %s, seed %d", prefix, len(dataset), num_classes,
             trainer.iteration, trainer.max_iter, args.batch_size, dist.world_size, device, seed)
    try:
        with stop.installed():
            outcome = trainer.run()
    finally:
        if metrics is not None:
            metrics.close()

    if dist.is_main and writer is not None:
        last = writer.last_checkpoint or find_latest_checkpoint(args.save_folder, prefix)
        final = final_weights_path(args.save_folder, args.dataset, size)
        weights = writer.final_weights or writer.last_weights or (
            final if outcome == "finished" and final.exists() else None)
        if last is not None:
            print(f"checkpoint: {last}", file=sys.stderr)
        if weights is not None:
            print(f"weights (ssd.pytorch format): {weights}", file=sys.stderr)
    if outcome == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """``train.py``'s entry point: parse flags, train, exit with the status."""
    # Multi-threaded MKL BLAS calls (some CPU conv backward passes) may sum in a different
    # order from run to run; Conditional Numerical Reproducibility makes them repeatable, so
    # a resumed CPU run ends bit-identical to an uninterrupted one. It must be set before
    # MKL's first call; setting MKL_CBWR yourself overrides it.
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    args = parse_args(argv)
    try:
        code = run(args)
    except KeyboardInterrupt:
        print("train.py: aborted (no checkpoint written for the current iteration)",
              file=sys.stderr)
        code = EXIT_INTERRUPTED
    raise SystemExit(code)
