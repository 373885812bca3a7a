"""Endless, resumable batches: epoch after epoch, starting at any batch of any epoch.

Each epoch's order is a pure function of ``(seed, epoch)`` (torch's DistributedSampler rule,
which also shards the order across processes), and the loader's worker seeds of
``(seed, epoch, rank)``. So a run can restart at ``(epoch, batch)`` without reading the
batches it skips, and, with ``num_workers=0`` and the RNG states restored, see exactly the
batches the uninterrupted run saw.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterator

from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """:class:`DistributedSampler` (also for one process) whose epoch can start part-way."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select ``epoch``'s order and skip its first ``start`` samples (of this process)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} outside [0, {self.num_samples}]")
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 steps: nearby inputs give unrelated seeds)."""
    x = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    for p in parts:
        x = (x ^ (int(p) & mask)) & mask
        x = (x + 0x9E3779B97F4A7C15) & mask
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        x = z ^ (z >> 31)
    return x >> 1


class EpochLoader:
    """Wraps a DataLoader built on a :class:`ResumableSampler` into an endless batch stream.

    The loader must have been given a ``torch.Generator`` (``generator=``) so that creating
    an iterator never draws from the global torch RNG; it is reseeded every epoch.
    """

    def __init__(self, loader: DataLoader, seed: int, rank: int = 0) -> None:
        if not isinstance(loader.sampler, ResumableSampler):
            raise TypeError("EpochLoader needs a DataLoader whose sampler is a ResumableSampler")
        if loader.generator is None:
            raise TypeError("EpochLoader needs a DataLoader with its own generator=")
        if loader.batch_size is None:
            raise TypeError("EpochLoader needs a DataLoader with a batch_size")
        self.loader = loader
        self.sampler: ResumableSampler = loader.sampler
        self.seed = int(seed)
        self.rank = int(rank)

    @property
    def batch_size(self) -> int:
        return int(self.loader.batch_size)

    @property
    def batches_per_epoch(self) -> int:
        n = self.sampler.num_samples
        return n // self.batch_size if self.loader.drop_last else math.ceil(n / self.batch_size)

    def batches(self, epoch: int = 0, batch: int = 0) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(epoch, batch_index, batch)`` forever, from batch ``batch`` of ``epoch``.

        A generator: nothing (no worker start, no RNG draw) happens before the first ``next``.
        """
        if self.batches_per_epoch == 0:
            raise ValueError("the dataset has fewer samples than one batch (drop_last)")
        while True:
            if batch >= self.batches_per_epoch:
                epoch, batch = epoch + 1, 0
                continue
            self.sampler.set_epoch(epoch, start=batch * self.batch_size)
            self.loader.generator.manual_seed(mix_seed(self.seed, epoch, self.rank))
            for item in self.loader:
                yield epoch, batch, item
                batch += 1
            epoch, batch = epoch + 1, 0

    def rng_state(self) -> list[Any]:
        """The main-process random streams of the dataset's transforms (``num_workers=0``
        draws its augmentations from them), in a fixed order."""
        return [t.state_dict() for t in _stateful_transforms(self.loader.dataset)]

    def load_rng_state(self, states: list[Any]) -> None:
        transforms = _stateful_transforms(self.loader.dataset)
        if len(states) != len(transforms):
            raise ValueError(f"{len(states)} saved transform states for {len(transforms)} "
                             f"transforms with random state")
        for t, st in zip(transforms, states):
            t.load_state_dict(st)


def _stateful_transforms(dataset: Any, depth: int = 0) -> list[Any]:
    """Transforms with ``state_dict``/``load_state_dict`` of ``dataset`` and the datasets it
    wraps (Subset, ConcatDataset), depth-first."""
    if depth > 8:
        return []
    out = []
    t = getattr(dataset, "transform", None)
    if t is not None and callable(getattr(t, "state_dict", None)) \
            and callable(getattr(t, "load_state_dict", None)):
        out.append(t)
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        out += _stateful_transforms(inner, depth + 1)
    for d in getattr(dataset, "datasets", None) or ():
        out += _stateful_transforms(d, depth + 1)
    return out
