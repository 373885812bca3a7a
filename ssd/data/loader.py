"""Batching: ``detection_collate``, worker seeding and the training DataLoader builder."""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def detection_collate(batch: Sequence[tuple[Any, Any]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Stack images, keep per-image targets apart (they have different numbers of boxes).

    Args:
        batch: ``(image [3, H, W], target [n_i, 5])`` pairs (tensors or arrays).

    Returns:
        images ``[B, 3, H, W]`` and a list of ``B`` float32 tensors ``[n_i, 5]`` (``n_i`` may
        be 0).
    """
    images = torch.stack([torch.as_tensor(sample[0]) for sample in batch], 0)
    targets = [torch.as_tensor(np.asarray(sample[1], dtype=np.float32)).reshape(-1, 5)
               for sample in batch]
    return images, targets


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed third-party randomness from the worker's torch seed.

    Our transforms seed themselves from the worker seed (see ``SSDAugmentation``); this
    seeds Python's ``random`` and NumPy's legacy global state, which user transforms may use.
    (It deliberately leaves OpenCV's thread count alone: ``cv2.setNumThreads`` in a forked
    worker can deadlock on the thread pool inherited from the parent.)
    """
    seed = torch.initial_seed()  # in a worker: the loader's base seed + worker_id
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _iter_datasets(dataset: Any, depth: int = 0) -> Iterator[Any]:
    """The dataset and those it wraps (Subset, ConcatDataset, ...), depth-first."""
    if depth > 8:
        return
    yield dataset
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        yield from _iter_datasets(inner, depth + 1)
    for d in getattr(dataset, "datasets", None) or ():
        yield from _iter_datasets(d, depth + 1)


def reseed_transforms(dataset: Dataset, seed: int | None) -> int:
    """Call ``reseed(seed)`` on the transforms of ``dataset`` (and wrapped datasets) that have
    one; returns how many were reseeded."""
    count = 0
    for d in _iter_datasets(dataset):
        t = getattr(d, "transform", None)
        if t is not None and callable(getattr(t, "reseed", None)):
            t.reseed(seed)
            count += 1
    return count


def _mix(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


def build_train_loader(dataset: Dataset, batch_size: int, num_workers: int = 0,
                       shuffle: bool = True, distributed: bool = False,
                       seed: int | None = None, pin_memory: bool | None = None,
                       drop_last: bool = True, persistent_workers: bool | None = None, *,
                       rank: int | None = None, world_size: int | None = None,
                       prefetch_factor: int | None = None,
                       collate_fn: Callable[..., Any] = detection_collate,
                       worker_init_fn: Callable[[int], None] | None = seed_worker
                       ) -> DataLoader:
    """A DataLoader for training on ``dataset`` with ``detection_collate``.

    Args:
        batch_size: images per batch *per process* (with ``distributed``, per rank).
        num_workers: worker processes (0 loads in the main process).
        shuffle: reshuffle every epoch.
        distributed: use a :class:`~torch.utils.data.DistributedSampler` (``rank`` and
            ``world_size`` default to the initialised process group's). Call
            ``loader.sampler.set_epoch(epoch)`` (or :func:`set_epoch`) at the start of every
            epoch, or every epoch repeats the first one's order.
        seed: makes the run reproducible: seeds the shuffling, the workers' base seed (mixed
            with the rank, so ranks draw different augmentations) and, for ``num_workers=0``,
            the dataset's transforms (:func:`reseed_transforms`). ``None``: torch's global
            RNG decides (``torch.manual_seed`` then also gives reproducible runs).
        pin_memory: default: whether CUDA is available.
        drop_last: drop the last incomplete batch.
        persistent_workers: keep workers between epochs (default: ``num_workers > 0``).
            Their augmentation streams then continue across epochs; without them each epoch's
            new workers get new seeds from the loader.
    """
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    sampler = None
    if distributed:
        if rank is None or world_size is None:
            if not torch.distributed.is_available() or not torch.distributed.is_initialized():
                raise RuntimeError("distributed=True needs rank and world_size, or an "
                                   "initialised torch.distributed process group")
            rank = torch.distributed.get_rank() if rank is None else rank
            if world_size is None:
                world_size = torch.distributed.get_world_size()
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                     shuffle=shuffle, seed=0 if seed is None else int(seed))
    generator = None
    if seed is not None:
        mixed = _mix(seed, rank or 0)
        generator = torch.Generator().manual_seed(mixed)
        if num_workers == 0:
            reseed_transforms(dataset, mixed)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
                      pin_memory=pin_memory, drop_last=drop_last,
                      worker_init_fn=worker_init_fn if num_workers > 0 else None,
                      generator=generator, **kwargs)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler which epoch starts (needed for DistributedSampler)."""
    sampler = getattr(loader, "sampler", None)
    if callable(getattr(sampler, "set_epoch", None)):
        sampler.set_epoch(epoch)
